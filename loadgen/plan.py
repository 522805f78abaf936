"""Plans in TOML: several scenarios from one file, one report (``loadgen run --config plan.toml``).

A plan names the scenarios to run, each with its own load model, target,
flow parameters, thresholds and criteria. ``loadgen validate plan.toml``
checks one without running it: TOML syntax, keys, types and ranges, the
target (imported), the inputs file (read) and the criteria (parsed).

Schema
======

Top level: the plan's own settings, and defaults for every ``[[scenario]]``::

    name = "checkout"              # the report's kind is "plan checkout" (default: the file's name)
    out = "results/checkout"       # run directory
    sample_interval = "100ms"      # monitor sampling interval (10ms … 10s)
    stop_file = "/tmp/stop"        # stop gracefully when this file appears
    start_method = "fork"          # or "spawn"

    # defaults for every scenario (any scenario key below except name and label)
    target = "shop.client:checkout"   # or "path/to/file.py:callable"; absent: the embedded flow
    target_factory = false            # target is a per-worker factory returning the operation
    inputs = "orders.jsonl"           # .jsonl or .csv: each operation gets the next record
    inputs_mode = "cycle"             # or "once"
    seed = 42
    profile = "ci"                    # ci | standard | nightly
    criteria = ["success_rate > 0.95"]
    [target_args]                     # keyword arguments of the target (typed TOML values)
    timeout_s = 2.5
    [flow_params]                     # parameters of the embedded flow (`loadgen list`)
    failure_rate = 0.05
    [thresholds]                      # ResourceThresholds fields; durations take "5m" or seconds
    max_memory_mb = 2048
    max_cpu_percent = 100
    max_execution_time_seconds = "10m"

    [[scenario]]
    name = "concurrent_load"          # a scenario of `loadgen list` (required)
    label = "closed-32"               # the component's name in the report (default: name); must be
                                      # unique, so give one when a scenario appears twice
    concurrency = 32                  # closed model, or:
    # rate = 200                      # open model, arrivals per second
    # max_lateness = "1s"             # open model: drop an arrival not started within this
    # stages = "10s:5,20s:20"         # ramps, or [["10s", 5], ["20s", 20]] or
    #                                 # [{duration = "10s", target = 5}, …]
    duration = "30s"
    operations = 10000
    workers = 2
    slots = 16
    op_timeout = "5s"
    abort_on_fail = false             # true: every criterion that can be judged early aborts
    criteria = [
      "p99_ms < 500",
      { expr = "success_rate > 0.9", abort_on_fail = true },
    ]
    [scenario.thresholds]             # merged field by field over the top-level table
    max_memory_mb = 4096

Rules: a table given by a scenario (``thresholds``, ``flow_params``,
``target_args``) is merged key by key over the top level's. A scenario that
names its own ``target`` does not inherit the top level's ``target_args`` or
``target_factory`` (they belonged to another callable). A level that sets
``concurrency`` or ``rate`` replaces the whole load model below it
(``concurrency``, ``rate``, ``max_lateness``, ``stages``); one that sets
``stages`` without ``duration`` drops the lower ``duration`` (the stages set
it). Relative paths in a plan (``inputs``, a
``file.py:callable`` target, ``out``, ``stop_file``) are relative to the plan
file's folder; on the command line and in the environment, to the current
folder. Scenarios run in file order in one process tree and land in one
report; ``run --config plan.toml SCENARIO`` runs only the entries with that
label (or scenario name). A lost ``abort_on_fail`` criterion ends the plan
there, as k6 aborts the whole test (see :mod:`loadgen.abort`).

Precedence
==========

scenario default < file < ``LOADGEN_*`` environment variables < command-line
flags, with the merge rules of :mod:`loadgen.options` (which declares every
key, its check, flag and variable once). Every flag of ``run`` and ``suite``
has a variable, ``LOADGEN_`` plus the flag in capitals
(``--max-memory-mb`` → ``LOADGEN_MAX_MEMORY_MB``), except the repeatable ones:
``LOADGEN_CRITERIA`` (expressions separated by ``;``), ``LOADGEN_TARGET_ARGS``
and ``LOADGEN_FLOW_PARAMS`` (a JSON object, or ``KEY=VALUE`` pairs separated
by ``,``). Booleans take 1/0, true/false, yes/no, on/off; an empty variable
counts as unset. They apply to every ``run`` and ``suite``, with or without a
plan; a bad value is a usage error naming the variable.

Errors are :class:`UsageError` (exit 2) naming the file, the key as a dotted
path with 1-based indexes (``plan.toml: scenario[2].concurrency``) and what
was expected; an unknown key suggests the closest known one.
"""

from __future__ import annotations

import dataclasses
import os

from . import options as opts
from .config import check_text, did_you_mean, show
from .errors import ExitCode, UsageError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10: the tomli backport (setup.cfg)
    import tomli as tomllib

ENTRY_ONLY_KEYS = {"name": lambda v, w, strict: check_text(v, w), "label": lambda v, w, strict: check_text(v, w)}
TARGET_KEYS = ("target", "ops", "target_factory", "target_args", "flow_params", "inputs", "inputs_mode")
PATH_KEYS = ("inputs", "out", "stop_file")  # relative to the plan file's folder


# ====================================================================== the file


@dataclasses.dataclass
class Plan:
    """A plan file, checked and normalised (nothing imported yet)."""

    path: str
    name: str
    settings: opts.Layer  # plan-level keys (options.PLAN_KEYS)
    defaults: opts.Layer  # scenario keys given at the top level
    entries: list  # one Layer per [[scenario]], with "name" and "label"


def load(path):
    """Read and check ``path``; returns a :class:`Plan` or raises :class:`UsageError`."""
    from .streams import MAX_PLAN_BYTES, read_bounded

    def _one_line(e):  # errors are one line
        text = str(e).strip().splitlines()
        return text[0] if text else type(e).__name__

    shown = str(path)
    raw = read_bounded(path, MAX_PLAN_BYTES, "plan file")  # a regular file only, at most 64 MiB
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UsageError(f"{shown}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{shown}: TOML syntax error: {_one_line(e)}") from None
    except RecursionError:
        raise UsageError(f"{shown}: TOML syntax error: nested too deeply") from None
    except ValueError as e:  # an integer beyond Python's digit limit
        raise UsageError(f"{shown}: not a usable plan: {_one_line(e)}") from None
    try:
        return from_dict(data, shown, base_dir=os.path.dirname(os.path.abspath(path)))
    except RecursionError:
        raise UsageError(f"{shown}: not a usable plan: nested too deeply") from None
    except OverflowError as e:  # a number too large for its key's check
        raise UsageError(f"{shown}: not a usable plan: a number too large ({_one_line(e)})") from None


def from_dict(data, shown="plan", base_dir=None):
    """A :class:`Plan` from parsed TOML (``shown`` names it in errors)."""
    base_dir = base_dir or os.getcwd()
    opts.no_unknown(data, set(opts.PLAN_KEYS) | set(opts.SCENARIO_KEYS) | {"scenario"}, shown)
    settings, defaults = opts.Layer(), opts.Layer()
    for key, value in data.items():
        if key == "scenario":
            continue
        where = f"{shown}: {key}"
        layer, check = (settings, opts.PLAN_KEYS[key]) if key in opts.PLAN_KEYS else (defaults, opts.SCENARIO_KEYS[key])
        layer.put(key, _relative(key, check(value, where, True), base_dir), where)
    return Plan(shown, settings.get("name") or os.path.splitext(os.path.basename(shown))[0] or "plan", settings,
                opts.one_model(defaults), _entries(data.get("scenario"), shown, base_dir))


def _entries(scenarios, shown, base_dir):
    if scenarios is None:
        raise UsageError(f"{shown}: no [[scenario]] (a plan runs one or more; e.g. [[scenario]] "
                         f"name = \"concurrent_load\")")
    if not isinstance(scenarios, list) or not all(isinstance(s, dict) for s in scenarios):
        raise UsageError(f"{shown}: scenario: expected an array of tables ([[scenario]]), got {show(scenarios)}")
    if not scenarios:
        raise UsageError(f"{shown}: scenario: expected at least one [[scenario]]")
    entries, labels = [], {}
    for i, table in enumerate(scenarios, 1):
        at = f"{shown}: scenario[{i}]"
        opts.no_unknown(table, set(opts.SCENARIO_KEYS) | set(ENTRY_ONLY_KEYS), at)
        if "name" not in table:
            raise UsageError(f"{at}: expected a name = \"SCENARIO\" (see `loadgen list`)")
        entry = opts.Layer()
        for key, value in table.items():
            check = ENTRY_ONLY_KEYS.get(key) or opts.SCENARIO_KEYS[key]
            entry.put(key, _relative(key, check(value, f"{at}.{key}", True), base_dir), f"{at}.{key}")
        _check_scenario_name(entry["name"], f"{at}.name")
        label = entry.setdefault("label", entry["name"])
        if label in labels:
            raise UsageError(f"{at}.label: {label!r} is already scenario[{labels[label]}]: give each a "
                             f"distinct label = \"…\"")
        labels[label] = i
        entries.append(opts.one_model(entry))
    return entries


def _relative(key, value, base_dir):
    if key in PATH_KEYS:
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
    if key in ("target", "ops") and isinstance(value, tuple):  # a mix: each op's file
        return tuple(dataclasses.replace(op, ref=_relative("target", op.ref, base_dir)) for op in value)
    if key == "target":
        module, sep, attr = value.rpartition(":")
        if sep and (module.endswith(".py") or "/" in module):
            return os.path.normpath(os.path.join(base_dir, os.path.expanduser(module))) + ":" + attr
    return value


def _check_scenario_name(name, where):
    from . import scenarios

    known = scenarios.names() + [scenarios.LOAD]
    if name not in known:
        raise UsageError(f"{where}: unknown scenario {name!r}{did_you_mean(name, known)} (known: {', '.join(known)})")


# ====================================================================== resolving


@dataclasses.dataclass
class Entry:
    """One [[scenario]] ready to run: its scenario, label and checked settings."""

    label: str
    scenario: object
    settings: opts.Layer

    # -- what api.run_scenarios needs of a scenario

    @property
    def name(self):
        """The entry's label: the scenario event and the component are named by it, not by the scenario."""
        return self.label

    @property
    def key_metric(self):
        """The scenario's key metric (``success_rate`` when it names none), for the ``scenario`` event."""
        return getattr(self.scenario, "key_metric", "success_rate")

    def session_for(self, shared):
        """``shared`` (the plan's session: run directory, progress, stop file) with this entry's
        target, thresholds, profile and load settings."""
        return shared.derive(self.settings)

    def criteria_for(self, session):
        """The entry's criteria, as its scenario reads them from the entry's session."""
        return self.scenario.criteria_for(self.session_for(session))

    def run(self, shared):
        """Run the entry in the plan's session; its result carries the entry's label."""
        session = self.session_for(shared)
        result = self.scenario.run(session)
        # A signal or a lost abort criterion ends the whole plan (api.run_scenarios checks `stopped`).
        shared.interrupted = session.interrupted
        shared.aborted = session.aborted
        result.test_name = self.label
        return result


@dataclasses.dataclass
class Prepared:
    """A plan with its overrides applied and every entry checked: what `validate` approves."""

    plan: Plan
    settings: opts.Layer  # plan-level: name, out, sample_interval, stop_file, start_method + top-level defaults
    entries: list  # Entry


def prepare(plan, upper=None, only=None):
    """Apply ``upper`` (environment and command line, merged) to ``plan`` and check every entry:
    target imported, inputs read, criteria parsed, thresholds built. No process is started and
    nothing is written. ``only``: a label or scenario name to keep."""
    from . import api, scenarios

    upper = upper if upper is not None else opts.Layer()
    settings = opts.merge(opts.merge(plan.settings, plan.defaults), upper)
    chosen = [e for e in plan.entries if only is None or only in (e["label"], e["name"])]
    if not chosen:
        labels = ", ".join(e["label"] for e in plan.entries)
        raise UsageError(f"{plan.path}: no scenario {only!r} in this plan (it has: {labels})")
    entries = []
    for entry in chosen:
        sc = scenarios.get(entry["name"])
        s = opts.mark_abort(opts.merge(opts.merge(plan.defaults, entry.without("name", "label")), upper), sc.criteria)
        api.Session.configured(s)  # target, inputs and thresholds checked, errors naming their key
        entries.append(Entry(entry["label"], sc, s))
    return Prepared(plan, settings, entries)


# ====================================================================== entry points


def run_plan_file(path, upper=None, *, only=None, progress=None, command=None):
    """Run the plan at ``path`` with ``upper`` (a :class:`~loadgen.options.Layer` of overrides)
    over it; one report. Returns an ``api.Report``. Raises :class:`UsageError` before any process
    starts for a bad plan or override."""
    from . import api

    prepared = prepare(load(path), upper, only=only)
    if prepared.settings.get("parallel") and getattr(progress, "in_process_only", False):
        raise UsageError(f"{path}: --metrics-port with a parallel plan: not supported yet (each entry runs in a "
                         "process of its own); run it without --metrics-port, or with parallel = false")
    # The plan's own session: its run directory, thresholds and seed for the report; each entry
    # brings its own target (Entry.session_for), so none is checked here.
    from .engine.signals import SignalGate

    with SignalGate.around() as gate:
        shared = api.Session.open(prepared.settings.without(*TARGET_KEYS), name=prepared.plan.name,
                                  progress=progress, gate=gate)
        return api.run_scenarios(prepared.entries, shared, kind=f"plan {prepared.plan.name}", command=command)


def run_config(path, *, environ=None, only=None, progress=None, command=None, **overrides):
    """The Python API of plans: ``run_config("plan.toml", concurrency=5, thresholds={...})``.

    ``overrides`` use the plan's keys and sit above ``environ`` (``LOADGEN_*``;
    None: not read), which sits above the file.
    """
    upper = opts.Layer()
    for key, value in overrides.items():
        check = opts.SCENARIO_KEYS.get(key) or opts.PLAN_KEYS.get(key)
        if check is None:
            raise UsageError(f"run_config: unknown override {key!r}"
                             f"{did_you_mean(key, set(opts.SCENARIO_KEYS) | set(opts.PLAN_KEYS))}")
        upper.put(key, check(value, key, False), key)
    if environ is not None:
        upper = opts.merge(opts.from_env(environ), upper)
    return run_plan_file(path, upper, only=only, progress=progress, command=command)


def validate_command(path, environ=None):
    """``loadgen validate PLAN``: print ``PLAN: OK — N scenarios`` (exit 0) or raise UsageError."""
    environ = os.environ if environ is None else environ
    prepared = prepare(load(path), opts.from_env(environ))
    n = len(prepared.entries)
    print(f"{path}: OK — {n} scenario{'s' if n != 1 else ''} "
          f"({', '.join(e.label for e in prepared.entries)})")
    return ExitCode.OK

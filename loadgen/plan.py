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
(``concurrency``, ``rate``, ``max_lateness``, ``stages``); one that sets only
``stages`` replaces the stages. Relative paths in a plan (``inputs``, a
``file.py:callable`` target, ``out``, ``stop_file``) are relative to the plan
file's folder; on the command line and in the environment, to the current
folder. Scenarios run in file order in one process tree and land in one
report; ``run --config plan.toml SCENARIO`` runs only the entries with that
label (or scenario name). A lost ``abort_on_fail`` criterion ends the plan
there, as k6 aborts the whole test (see :mod:`loadgen.abort`).

Precedence
==========

file < ``LOADGEN_*`` environment variables < command-line flags. Every flag
of ``run`` and ``suite`` has a variable (:data:`ENV`), ``LOADGEN_`` plus the
flag in capitals (``--max-memory-mb`` → ``LOADGEN_MAX_MEMORY_MB``), except the
repeatable ones: ``LOADGEN_CRITERIA`` (expressions separated by ``;``),
``LOADGEN_TARGET_ARGS`` and ``LOADGEN_FLOW_PARAMS`` (a JSON object, or
``KEY=VALUE`` pairs separated by ``,``). Booleans take 1/0, true/false,
yes/no, on/off; an empty variable counts as unset. They apply to every
``run`` and ``suite``, with or without a plan; a bad value is a usage error
naming the variable.

Errors are :class:`UsageError` (exit 2) naming the file, the key as a dotted
path with 1-based indexes (``plan.toml: scenario[2].concurrency``) and what
was expected; an unknown key suggests the closest known one.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re

from .config import ResourceThresholds, Stage, parse_duration, parse_stages
from .errors import UsageError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10: the tomli backport (setup.cfg)
    import tomli as tomllib

PROFILES = ("ci", "standard", "nightly")
INPUTS_MODES = ("cycle", "once")
START_METHODS = ("fork", "spawn")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SAMPLE_INTERVAL_RANGE_S = (0.01, 10.0)  # as RunPlan.validated checks it
MAX_SECONDS = 1e12  # a duration past this is a typo, and float() of a huge integer overflows
MODEL_KEYS = ("concurrency", "rate", "max_lateness", "stages")  # one load model: replaced as a whole
TARGET_BOUND_KEYS = ("target_args", "target_factory")  # belong to the target they were given with
TABLE_KEYS = ("thresholds", "flow_params", "target_args")  # merged key by key across levels
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


# ====================================================================== values
#
# A converter takes (value, where, strict) and returns the value normalised
# (ints, floats in seconds, tuples of Stage, dicts, Criterion lists) or raises
# UsageError naming ``where``. ``strict``: the value came from TOML, so its
# type must be right; from the environment or the command line, strings are
# parsed.


def _show(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(minimum):
    def conv(value, where, strict):
        what = "a whole number" + (" > 0" if minimum == 1 else " ≥ 0")
        if isinstance(value, bool) or (strict and not isinstance(value, int)):
            raise UsageError(f"{where}: expected {what}, got {_show(value)}")
        try:
            n = int(value) if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise UsageError(f"{where}: expected {what}, got {_show(value)}") from None
        if n < minimum:
            raise UsageError(f"{where}: expected {what}, got {n}")
        return n

    return conv


def _float(low, high=math.inf, low_open=True):
    def conv(value, where, strict):
        rng = f"{'>' if low_open else '≥'} {low:g}" + (f" and ≤ {high:g}" if high != math.inf else "")
        what = f"a number {rng}"
        if isinstance(value, bool) or (strict and not _is_number(value)):
            raise UsageError(f"{where}: expected {what}, got {_show(value)}")
        try:
            x = float(value) if _is_number(value) else float(str(value).strip())
        except (ValueError, OverflowError):
            raise UsageError(f"{where}: expected {what}, got {_show(value)}") from None
        if not math.isfinite(x) or x < low or (low_open and x == low) or x > high:
            raise UsageError(f"{where}: expected {what}, got {value}")
        return x

    return conv


def _duration(value, where, strict):
    if isinstance(value, bool) or not (_is_number(value) or isinstance(value, str)):
        raise UsageError(f"{where}: expected a duration (seconds, or a string such as \"500ms\", \"10s\", "
                         f"\"5m\"), got {_show(value)}")
    if isinstance(value, int) and abs(value) > MAX_SECONDS:  # float() of a huge TOML integer overflows
        raise UsageError(f"{where}: expected a duration of at most {MAX_SECONDS:g} seconds, got {value}")
    return parse_duration(value, where)


def _sample_interval(value, where, strict):
    s = _duration(value, where, strict)
    low, high = SAMPLE_INTERVAL_RANGE_S
    if not low <= s <= high:
        raise UsageError(f"{where}: expected a duration between 10ms and 10s, got {_show(value)}")
    return s


def _bool(value, where, strict):
    if isinstance(value, bool):
        return value
    if not strict and isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise UsageError(f"{where}: expected true or false, got {_show(value)}")


def _text(value, where, strict):
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise UsageError(f"{where}: expected a non-empty string, got {_show(value)}")
    return value


def _choice(choices):
    def conv(value, where, strict):
        if not isinstance(value, str) or value not in choices:
            raise UsageError(f"{where}: expected one of {', '.join(choices)}, got {_show(value)}"
                             + _did_you_mean(value, choices))
        return value

    return conv


def _stages(value, where, strict):
    if isinstance(value, str):
        try:
            return tuple(parse_stages(value))
        except UsageError as e:
            raise UsageError(f"{where}: {_strip_flag(str(e))}") from None
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where}: expected \"DURATION:TARGET,…\" or an array of [duration, target], "
                         f"got {_show(value)}")
    stages = []
    for i, item in enumerate(value, 1):
        at = f"{where}[{i}]"
        if isinstance(item, dict):
            _no_unknown(item, ("duration", "target"), at)
            if "duration" not in item or "target" not in item:
                raise UsageError(f"{at}: expected both duration and target")
            dur, target = item["duration"], item["target"]
        elif isinstance(item, list) and len(item) == 2:
            dur, target = item
        else:
            raise UsageError(f"{at}: expected [duration, target], got {_show(item)}")
        stages.append(Stage(_duration(dur, f"{at}.duration", strict),
                            _float(0, low_open=False)(target, f"{at}.target", strict)))
    return tuple(stages)


def _criteria(value, where, strict):
    from .abort import check_abortable
    from .criteria import Criterion

    if isinstance(value, str) and not strict:
        value = [t for t in re.split(r"[;\n]", value) if t.strip()]
    if not isinstance(value, list):
        raise UsageError(f"{where}: expected an array of expressions such as \"p99_ms < 500\" or tables "
                         f"{{expr = \"…\", abort_on_fail = true}}, got {_show(value)}")
    out = []
    for i, item in enumerate(value, 1):
        at = f"{where}[{i}]"
        if isinstance(item, dict):
            _no_unknown(item, ("expr", "abort_on_fail"), at)
            if "expr" not in item:
                raise UsageError(f"{at}: expected an expr = \"METRIC OP NUMBER\"")
            expr = _text(item["expr"], f"{at}.expr", strict)
            abort = _bool(item.get("abort_on_fail", False), f"{at}.abort_on_fail", strict)
        elif isinstance(item, str):
            expr, abort = item, False
        else:
            raise UsageError(f"{at}: expected an expression string or a table, got {_show(item)}")
        try:
            c = Criterion.parse(expr, abort_on_fail=abort)
        except UsageError as e:
            raise UsageError(f"{at}: {e}") from None
        if abort:
            check_abortable(c, at)
        out.append(c)
    return out


def _params(typed):
    """A table of keyword arguments (TOML), or KEY=VALUE strings / a JSON object (CLI, environment)."""

    def conv(value, where, strict):
        if isinstance(value, dict):
            return dict(value)
        if strict:
            raise UsageError(f"{where}: expected a table of KEY = VALUE, got {_show(value)}")
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as e:
                    raise UsageError(f"{where}: not a JSON object ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise UsageError(f"{where}: expected a JSON object")
                return obj
            value = [p for p in text.split(",") if p.strip()]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where}: expected KEY=VALUE pairs, got {_show(value)}")
        out = {}
        for item in value:
            key, sep, v = str(item).partition("=")
            if not sep or not key.strip():
                raise UsageError(f"{where}: {item!r} is not KEY=VALUE")
            out[key.strip()] = _typed_value(v) if typed else v
        return out

    return conv


def _typed_value(text):
    """As ``--target-arg`` types a value: bool, int, float, JSON, else the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float, json.loads):
        try:
            return conv(text)
        except ValueError:
            continue
    return text


def _thresholds(value, where, strict):
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected a table of ResourceThresholds fields, got {_show(value)}")
    _no_unknown(value, THRESHOLD_FIELDS, where)
    return {k: THRESHOLD_FIELDS[k](v, f"{where}.{k}", strict) for k, v in value.items()}


THRESHOLD_FIELDS = {
    "max_memory_mb": _float(0),
    "max_cpu_percent": _float(0, 100),
    "max_execution_time_seconds": _duration,
    "max_concurrent_operations": _int(1),
    "memory_growth_rate_mb_per_sec": _float(0),
    "min_available_memory_mb": _float(0, low_open=False),
    "cpu_window_s": _duration,
    "growth_window_s": _duration,
}
for _f in dataclasses.fields(ResourceThresholds):  # a field added later is still accepted, as a number > 0
    THRESHOLD_FIELDS.setdefault(_f.name, _float(0))

# Keys of a [[scenario]] (and, as defaults, of the top level).
SCENARIO_KEYS = {
    "target": _text, "target_factory": _bool, "target_args": _params(True), "flow_params": _params(False),
    "inputs": _text, "inputs_mode": _choice(INPUTS_MODES), "seed": _int(0), "profile": _choice(PROFILES),
    "thresholds": _thresholds, "concurrency": _int(1), "rate": _float(0), "max_lateness": _duration,
    "stages": _stages, "duration": _duration, "operations": _int(1), "workers": _int(1), "slots": _int(1),
    "op_timeout": _duration, "criteria": _criteria, "abort_on_fail": _bool,
}
ENTRY_ONLY_KEYS = {"name": _text, "label": _text}
PLAN_KEYS = {"name": _text, "out": _text, "sample_interval": _sample_interval, "stop_file": _text,
             "start_method": _choice(START_METHODS)}
PATH_KEYS = ("inputs", "out", "stop_file")  # relative to the plan file's folder

# Flags of `run` and `suite`: argparse dest → (plan key or None for presentation-only flags, converter).
# ``thresholds.FIELD`` keys land in the thresholds table.
FLAGS = {
    "target": ("target", _text),
    "target_factory": ("target_factory", _bool),
    "inputs": ("inputs", _text),
    "inputs_mode": ("inputs_mode", _choice(INPUTS_MODES)),
    "target_arg": ("target_args", _params(True)),
    "flow_param": ("flow_params", _params(False)),
    "seed": ("seed", _int(0)),
    "out": ("out", _text),
    "quiet": (None, _bool),
    "log_level": (None, _choice(LOG_LEVELS)),
    "max_memory_mb": ("thresholds.max_memory_mb", THRESHOLD_FIELDS["max_memory_mb"]),
    "max_cpu_percent": ("thresholds.max_cpu_percent", THRESHOLD_FIELDS["max_cpu_percent"]),
    "max_execution_time": ("thresholds.max_execution_time_seconds", _duration),
    "max_concurrent_operations": ("thresholds.max_concurrent_operations", _int(1)),
    "memory_growth_rate": ("thresholds.memory_growth_rate_mb_per_sec", THRESHOLD_FIELDS["memory_growth_rate_mb_per_sec"]),
    "min_available_mb": ("thresholds.min_available_memory_mb", THRESHOLD_FIELDS["min_available_memory_mb"]),
    "sample_interval": ("sample_interval", _sample_interval),
    "stop_file": ("stop_file", _text),
    "start_method": ("start_method", _choice(START_METHODS)),
    "prom_textfile": (None, _text),
    "cluster": (None, _text),  # fleet runs (loadgen.fleet): not in plans yet
    "shards": (None, _int(1)),
    "cluster_timeout": (None, _duration),
    "start_lead": (None, _duration),
    "profile": ("profile", _choice(PROFILES)),
    "concurrency": ("concurrency", _int(1)),
    "rate": ("rate", _float(0)),
    "max_lateness": ("max_lateness", _duration),
    "stages": ("stages", _stages),
    "duration": ("duration", _duration),
    "operations": ("operations", _int(1)),
    "workers": ("workers", _int(1)),
    "slots": ("slots", _int(1)),
    "op_timeout": ("op_timeout", _duration),
    "criterion": ("criteria", _criteria),
    "abort_on_fail": ("abort_on_fail", _bool),
}
_ENV_NAMES = {"criterion": "LOADGEN_CRITERIA", "target_arg": "LOADGEN_TARGET_ARGS",
              "flow_param": "LOADGEN_FLOW_PARAMS"}
#: argparse dest → environment variable.
ENV = {dest: _ENV_NAMES.get(dest, "LOADGEN_" + dest.upper()) for dest in FLAGS}
_LIST_DESTS = ("criterion", "target_arg", "flow_param")  # repeatable flags: lists of strings in argparse


def _flag(dest):
    return "--" + dest.replace("_", "-")


def _strip_flag(message):
    """``--target 'x': cannot import`` → ``'x': cannot import`` (the caller names the key)."""
    return re.sub(r"^--[a-z][a-z-]* ?(?=[^:]*:)", "", message, count=1)


def _did_you_mean(word, known):
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _no_unknown(table, known, where):
    for key in table:
        if key not in known:
            hint = _did_you_mean(key, known) or f" (known: {', '.join(sorted(known))})"
            raise UsageError(f"{where}: unknown key {key!r}{hint}")


# ====================================================================== layers


class Layer(dict):
    """Normalised settings of one level (plan key → value), with where each came from."""

    def __init__(self, *args, where=None, **kw):
        super().__init__(*args, **kw)
        self.where = dict(where or {})

    def put(self, key, value, where):
        if key.startswith("thresholds."):  # a threshold flag: one field of the table
            self.setdefault("thresholds", {})[key.split(".", 1)[1]] = value
            self.where["thresholds"] = where
            return
        self[key] = value
        self.where[key] = where


def merge(lower, upper):
    """``upper`` over ``lower`` with the plan's rules (see the module docstring)."""
    out = Layer(lower, where=lower.where)
    if "concurrency" in upper or "rate" in upper:
        for k in MODEL_KEYS:
            out.pop(k, None)
    if "target" in upper:
        for k in TARGET_BOUND_KEYS:
            out.pop(k, None)
    for k, v in upper.items():
        if k in TABLE_KEYS and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
        out.where[k] = upper.where.get(k, k)
    return out


def layer_from_flags(values, where=_flag):
    """A layer from argparse-style values (dest → value; None or [] = not given)."""
    layer = Layer()
    for dest, (key, conv) in FLAGS.items():
        value = values.get(dest)
        if value is None or key is None or (dest in _LIST_DESTS and not value):
            continue
        if dest == "criterion":
            value = list(value) if not isinstance(value, str) else value
        layer.put(key, conv(value, where(dest), False), where(dest))
    return layer


def env_values(environ):
    """``LOADGEN_*`` variables as argparse values (dest → value), each checked, naming the variable."""
    out = {}
    for dest, var in ENV.items():
        raw = environ.get(var)
        if raw is None or not raw.strip():
            continue
        key, conv = FLAGS[dest]
        value = conv(raw.strip(), var, False)
        if dest == "flow_param" or dest == "target_arg":
            out[dest] = [f"{k}={_env_param(v, dest)}" for k, v in value.items()]
        elif dest == "criterion":
            out[dest] = [str(c) for c in value]
        elif conv is _bool:
            out[dest] = value
        else:
            out[dest] = raw.strip()
    return out


def _env_param(value, dest):
    """A typed value as the ``KEY=VALUE`` text its flag takes (``--target-arg`` types it back)."""
    if isinstance(value, str):
        return value if dest == "flow_param" else json.dumps(value)
    if isinstance(value, dict) and dest == "flow_param":
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return json.dumps(value)


def apply_env(args, environ=None):
    """Fill the flags of ``args`` (an argparse namespace) that were not given from ``LOADGEN_*``.

    Flags given on the command line win; repeatable key=value flags are
    merged (the command line's pairs last). The plan's rules hold between
    the two levels: ``--concurrency``/``--rate`` on the command line
    replace the environment's load model, ``--target`` its target
    arguments. Raises :class:`UsageError` naming the variable.
    """
    environ = os.environ if environ is None else environ
    env = env_values(environ)
    given = {d for d in FLAGS if getattr(args, d, None) not in (None, [])}
    blocked = set()
    if given & {"concurrency", "rate"}:
        blocked |= {"concurrency", "rate", "max_lateness", "stages"}
    if "target" in given:
        blocked |= {"target_arg", "target_factory"}
    for dest, value in env.items():
        if not hasattr(args, dest) or dest in blocked:
            continue
        if dest in ("flow_param", "target_arg"):
            setattr(args, dest, list(value) + list(getattr(args, dest) or []))
        elif dest not in given:
            setattr(args, dest, value)
    return args


# ====================================================================== the file


@dataclasses.dataclass
class Plan:
    """A plan file, checked and normalised (nothing imported yet)."""

    path: str
    name: str
    settings: Layer  # plan-level keys (PLAN_KEYS)
    defaults: Layer  # scenario keys given at the top level
    entries: list  # one Layer per [[scenario]], with "name" and "label"


def load(path):
    """Read and check ``path``; returns a :class:`Plan` or raises :class:`UsageError`."""
    shown = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except IsADirectoryError:
        raise UsageError(f"{shown}: is a directory, not a plan file") from None
    except OSError as e:
        raise UsageError(f"{shown}: cannot read: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UsageError(f"{shown}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{shown}: TOML syntax error: {e}") from None
    except RecursionError:
        raise UsageError(f"{shown}: TOML syntax error: nested too deeply") from None
    return from_dict(data, shown, base_dir=os.path.dirname(os.path.abspath(path)))


def from_dict(data, shown="plan", base_dir=None):
    """A :class:`Plan` from parsed TOML (``shown`` names it in errors)."""
    base_dir = base_dir or os.getcwd()
    known_top = set(PLAN_KEYS) | set(SCENARIO_KEYS) | {"scenario"}
    _no_unknown(data, known_top, shown)
    settings, defaults = Layer(), Layer()
    for key, value in data.items():
        if key == "scenario":
            continue
        where = f"{shown}: {key}"
        if key in PLAN_KEYS:
            settings.put(key, _relative(key, PLAN_KEYS[key](value, where, True), base_dir), where)
        else:
            defaults.put(key, _relative(key, SCENARIO_KEYS[key](value, where, True), base_dir), where)
    scenarios = data.get("scenario")
    if scenarios is None:
        raise UsageError(f"{shown}: no [[scenario]] (a plan runs one or more; e.g. [[scenario]] "
                         f"name = \"concurrent_load\")")
    if not isinstance(scenarios, list) or not all(isinstance(s, dict) for s in scenarios):
        raise UsageError(f"{shown}: scenario: expected an array of tables ([[scenario]]), got {_show(scenarios)}")
    if not scenarios:
        raise UsageError(f"{shown}: scenario: expected at least one [[scenario]]")
    entries, labels = [], {}
    for i, table in enumerate(scenarios, 1):
        at = f"{shown}: scenario[{i}]"
        _no_unknown(table, set(SCENARIO_KEYS) | set(ENTRY_ONLY_KEYS), at)
        if "name" not in table:
            raise UsageError(f"{at}: expected a name = \"SCENARIO\" (see `loadgen list`)")
        entry = Layer()
        for key, value in table.items():
            where = f"{at}.{key}"
            conv = ENTRY_ONLY_KEYS.get(key) or SCENARIO_KEYS[key]
            entry.put(key, _relative(key, conv(value, where, True), base_dir), where)
        _check_scenario_name(entry["name"], f"{at}.name")
        label = entry.setdefault("label", entry["name"])
        if label in labels:
            raise UsageError(f"{at}.label: {label!r} is already scenario[{labels[label]}]: give each a "
                             f"distinct label = \"…\"")
        labels[label] = i
        entries.append(entry)
    name = settings.get("name") or os.path.splitext(os.path.basename(shown))[0] or "plan"
    return Plan(shown, name, settings, defaults, entries)


def _relative(key, value, base_dir):
    if key in PATH_KEYS:
        return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
    if key == "target":
        module, sep, attr = value.rpartition(":")
        if sep and (module.endswith(".py") or "/" in module):
            return os.path.normpath(os.path.join(base_dir, os.path.expanduser(module))) + ":" + attr
    return value


def _check_scenario_name(name, where):
    from . import scenarios

    if name not in scenarios.names():
        raise UsageError(f"{where}: unknown scenario {name!r}{_did_you_mean(name, scenarios.names())} "
                         f"(known: {', '.join(scenarios.names())})")


# ====================================================================== resolving


@dataclasses.dataclass
class Entry:
    """One [[scenario]] ready to run: its scenario, label and session fields."""

    label: str
    scenario: object
    target: object  # TargetSpec
    thresholds: ResourceThresholds
    overrides: object  # scenarios._base.Overrides
    profile: str

    # -- what api._run_scenarios needs of a scenario

    @property
    def name(self):
        return self.label

    @property
    def key_metric(self):
        return getattr(self.scenario, "key_metric", "success_rate")

    def session_for(self, shared):
        """``shared`` (the plan's session: run directory, progress, stop file) with this entry's
        target, thresholds, overrides and profile. Baselines are not shared: targets differ."""
        return dataclasses.replace(shared, target=self.target, thresholds=self.thresholds,
                                   overrides=self.overrides, profile=self.profile, baselines={},
                                   interrupted=None, aborted=None)

    def criteria_for(self, session):
        return self.scenario.criteria_for(self.session_for(session))

    def run(self, shared):
        session = self.session_for(shared)
        result = self.scenario.run(session)
        # A signal or a lost abort criterion ends the whole plan (api._run_scenarios checks `stopped`).
        shared.interrupted = session.interrupted
        shared.aborted = session.aborted
        result.test_name = self.label
        return result


@dataclasses.dataclass
class Prepared:
    """A plan with its overrides applied and every entry checked: what `validate` approves."""

    plan: Plan
    settings: Layer  # plan-level: name, out, sample_interval, stop_file, start_method + top-level defaults
    entries: list  # Entry


def prepare(plan, upper=None, only=None):
    """Apply ``upper`` (environment and command line, merged) to ``plan`` and check every entry:
    target imported, inputs read, criteria parsed, thresholds built. No process is started and
    nothing is written. ``only``: a label or scenario name to keep."""
    from . import scenarios
    from .api import make_overrides
    from .criteria import parse_all
    from .workload.targets import TargetSpec, check_target

    upper = upper if upper is not None else Layer()
    settings = merge(merge(plan.settings, plan.defaults), upper)
    chosen = [e for e in plan.entries if only is None or only in (e["label"], e["name"])]
    if not chosen:
        labels = ", ".join(e["label"] for e in plan.entries)
        raise UsageError(f"{plan.path}: no scenario {only!r} in this plan (it has: {labels})")
    entries = []
    for entry in chosen:
        i = plan.entries.index(entry) + 1
        at = f"{plan.path}: scenario[{i}]"
        s = merge(merge(plan.defaults, entry), upper)
        sc = scenarios.get(entry["name"])
        spec = TargetSpec(ref=s.get("target"), flow_params=dict(s.get("flow_params") or {}),
                          kwargs=dict(s.get("target_args") or {}), seed=s.get("seed"),
                          factory=bool(s.get("target_factory")), inputs=s.get("inputs"),
                          inputs_mode=s.get("inputs_mode") or "cycle")
        if spec.factory and spec.ref is None:
            raise UsageError(f"{_where(s, 'target_factory', at)}: target_factory needs a target = \"MOD:FACTORY\"")
        if spec.inputs is not None:
            from .workload.inputs import load_records

            _checked(load_records, spec.inputs, where=_where(s, "inputs", at))
        key = "target" if spec.ref is not None else "flow_params"
        _checked(check_target, dataclasses.replace(spec, inputs=None), where=_where(s, key, at))
        try:
            thresholds = ResourceThresholds(**(s.get("thresholds") or {}))
        except UsageError as e:
            raise UsageError(f"{_where(s, 'thresholds', at)}: {e}") from None
        criteria = list(s.get("criteria") or ())
        if s.get("abort_on_fail"):
            from .abort import mark

            criteria = mark(criteria or parse_all(sc.criteria))
        overrides = _checked(make_overrides, where=at, concurrency=s.get("concurrency"), duration=s.get("duration"),
                             operations=s.get("operations"), stages=s.get("stages"), workers=s.get("workers"),
                             slots=s.get("slots"), op_timeout=s.get("op_timeout"), criteria=criteria,
                             rate=s.get("rate"), max_lateness=s.get("max_lateness"))
        entries.append(Entry(entry["label"], sc, spec, thresholds, overrides, s.get("profile") or "ci"))
    return Prepared(plan, settings, entries)


def _where(layer, key, default):
    return layer.where.get(key, default)


def _checked(fn, *args, where, **kw):
    try:
        return fn(*args, **kw)
    except UsageError as e:
        raise UsageError(f"{where}: {_strip_flag(str(e))}") from None


# ====================================================================== entry points


def run_plan_file(path, upper=None, *, only=None, progress=None, command=None):
    """Run the plan at ``path`` with ``upper`` (a :class:`Layer` of overrides) over it; one report.

    Returns an ``api.Report``. Raises :class:`UsageError` before any process
    starts for a bad plan or override.
    """
    from . import api
    from .scenarios._base import Overrides

    prepared = prepare(load(path), upper, only=only)
    s = prepared.settings
    shared = api._session(thresholds=ResourceThresholds(**(s.get("thresholds") or {})), target=None,
                          flow_params=None, target_args=None, seed=s.get("seed"), profile=s.get("profile") or "ci",
                          out=s.get("out"), name=prepared.plan.name, overrides=Overrides(),
                          sample_interval=s.get("sample_interval"), stop_file=s.get("stop_file"),
                          start_method=s.get("start_method"), progress=progress)
    return api._run_scenarios(prepared.entries, shared, kind=f"plan {prepared.plan.name}", command=command)


def run_config(path, *, environ=None, only=None, progress=None, command=None, **overrides):
    """The Python API of plans: ``run_config("plan.toml", concurrency=5, thresholds={...})``.

    ``overrides`` use the plan's keys and sit above ``environ`` (``LOADGEN_*``;
    None: not read), which sits above the file.
    """
    upper = Layer()
    for key, value in overrides.items():
        conv = SCENARIO_KEYS.get(key) or PLAN_KEYS.get(key)
        if conv is None:
            raise UsageError(f"run_config: unknown override {key!r}"
                             f"{_did_you_mean(key, set(SCENARIO_KEYS) | set(PLAN_KEYS))}")
        upper.put(key, conv(value, key, False), key)
    if environ is not None:
        upper = merge(layer_from_flags(env_values(environ), where=lambda d: ENV[d]), upper)
    return run_plan_file(path, upper, only=only, progress=progress, command=command)


def validate_command(path, environ=None):
    """``loadgen validate PLAN``: print ``PLAN: OK — N scenarios`` (exit 0) or raise UsageError."""
    environ = os.environ if environ is None else environ
    upper = layer_from_flags(env_values(environ), where=lambda d: ENV[d])
    prepared = prepare(load(path), upper)
    n = len(prepared.entries)
    print(f"{path}: OK — {n} scenario{'s' if n != 1 else ''} "
          f"({', '.join(e.label for e in prepared.entries)})")
    return 0

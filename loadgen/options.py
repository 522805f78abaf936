"""Every setting of ``run`` and ``suite``, declared once.

:data:`OPTIONS` is the one table: each :class:`Option` gives a setting's
key (the plan key and the Python API's keyword), its check, its default,
its flag, its ``LOADGEN_*`` variable, where it may stand in a plan, and its
help. From it come the argparse flags (:func:`add_arguments`), the layers
read from the command line (:func:`from_flags`), the environment
(:func:`from_env`), a plan's tables (:func:`from_table`) and the API's
keywords (:func:`from_api`), and the fields of a run's plan
(:func:`plan_fields`); ``cli.py`` builds the flags from it.

Layers and precedence
=====================

A :class:`Layer` holds checked values (key → value) and where each came
from (``--concurrency``, ``LOADGEN_CONCURRENCY``, ``plan.toml:
scenario[2].concurrency``), so that a later error names its source.
:func:`merge` puts one layer over another; the chain is

    scenario default < plan < ``LOADGEN_*`` environment < flag (or API keyword)

with these rules: tables (``thresholds``, ``flow_params``, ``target_args``)
merge key by key; a level that sets ``concurrency`` or ``rate`` replaces the
whole lower load model (``concurrency``, ``rate``, ``max_lateness``,
``stages``); one that sets ``stages`` without ``duration``
drops the lower ``duration`` (stages set how long a run lasts, so a
scenario's default duration never cuts them short); one that sets
``target`` drops the lower ``target_args`` and ``target_factory`` (they
belonged to another callable).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass

from .config import (DEFAULT_MAX_LATENESS_S, DEFAULT_MAX_OUTPUT_MB, DEFAULT_SAMPLE_INTERVAL_S, KILLABLE, THRESHOLD_CHECKS, TIMING, ResourceThresholds,
                     Stage, check_bool, check_choice, check_int, check_number, check_text, did_you_mean,
                     parse_duration, parse_stages, show)
from .errors import UsageError

PROFILES = ("ci", "standard", "nightly")
INPUTS_MODES = ("cycle", "once")
START_METHODS = ("fork", "spawn")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
SAMPLE_INTERVAL_RANGE_S = (0.01, 10.0)

MODEL_KEYS = ("concurrency", "rate", "max_lateness", "stages")  # one load model: replaced as a whole
TARGET_BOUND_KEYS = ("target_args", "target_factory")  # belong to the target they were given with
HTTP_KEYS = ("method", "headers", "body", "json", "expect_status", "http_checks", "insecure")  # belong to the --url given with
WHAT_RUNS_KEYS = ("target", "ops", "url")  # one level's choice of what runs replaces a lower level's
TABLE_KEYS = ("thresholds", "flow_params", "target_args")  # merged key by key across levels
RUN, SUITE = "run", "suite"
#: The groups of `run --help` (argparse groups; their titles are in cli.add_options), in the order shown.
LOAD, TARGET, HTTP, SAFETY, OUTPUT, FLEET = "load", "target", "http", "safety", "output", "fleet"
GROUPS = (LOAD, TARGET, HTTP, SAFETY, OUTPUT, FLEET)
BOTH = frozenset({RUN, SUITE})


# ====================================================================== checks of a setting
#
# A check takes (value, where, strict) and returns the value normalised (ints, floats in seconds,
# tuples of Stage, dicts, lists of Criterion) or raises UsageError naming ``where``.


def _whole(low):
    return lambda value, where, strict: check_int(value, where, low, strict=strict)


def _number(low, high=float("inf"), low_open=True):
    return lambda value, where, strict: check_number(value, where, low, high, low_open=low_open, strict=strict)


def _duration(value, where, strict):
    return parse_duration(value, where)


def _sample_interval(value, where, strict):
    seconds = parse_duration(value, where)
    low, high = SAMPLE_INTERVAL_RANGE_S
    if not low <= seconds <= high:
        raise UsageError(f"{where}: expected a duration between 10ms and 10s, got {show(value)}")
    return seconds


def _silence_limit(value, where, strict):
    seconds = parse_duration(value, where)
    low = 3 * TIMING.shard_heartbeat_s  # shorter: a busy scheduler's hiccup would lose a healthy shard
    if seconds < low:
        raise UsageError(f"{where}: expected at least {low:g}s (three shard heartbeats), got {show(value)}")
    return seconds


def _bool(value, where, strict):
    return check_bool(value, where, strict=strict)


def _text(value, where, strict):
    return check_text(value, where)


def _target(value, where, strict):
    """One target (``MOD:fn``, a string), or a weighted mix — a tuple of ``workload.mix.MixOp`` — when
    several are given (a repeated ``--target``, a list) or one carries a weight or a name
    (``MOD:fn@9``, ``read=MOD:fn``)."""
    from .workload.mix import is_mix_item, parse_mix

    items = [value] if isinstance(value, str) else value
    if isinstance(items, (list, tuple)) and len(items) == 1 and isinstance(items[0], str) \
            and not is_mix_item(items[0]):
        return check_text(items[0], where)
    if not isinstance(items, (list, tuple)):
        raise UsageError(f"{where}: expected \"MOD:fn\" or a list of \"MOD:fn@WEIGHT\", got {show(value)}")
    return parse_mix(list(items), where)


def _urls(value, where, strict):
    """``[(name, method, url, weight), …]`` (None where not given) of ``--url "[NAME=][METHOD ]URL[@WEIGHT]"``;
    the URLs themselves are checked when the ops are built (:func:`http_ops`), with their headers."""
    from .http.spec import split_item

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise UsageError(f"{where}: expected \"[METHOD ]URL[@WEIGHT]\" or a list of them, got {show(value)}")
    return tuple(split_item(item, where) for item in items)


def _headers(value, where, strict):
    from .http.spec import parse_header

    if isinstance(value, dict):
        value = [f"{k}: {v}" for k, v in value.items()]
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise UsageError(f"{where}: expected \"Name: value\" (repeatable), got {show(value)}")
    return tuple(parse_header(h, where) for h in items)


def _json_text(value, where, strict):
    return value if isinstance(value, (dict, list)) else check_text(value, where)


def _http_checks(value, where, strict):
    from .http.spec import parse_check

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise UsageError(f"{where}: expected checks such as \"status == 200\" (repeatable), got {show(value)}")
    return tuple(parse_check(c, where) for c in items)


def _expect(value, where, strict):
    from .http.spec import parse_expect

    return parse_expect(value, where)


def http_ops(layer):
    """The mix of HTTP ops that ``layer``'s ``url`` (one or more ``[METHOD ]URL[@WEIGHT]``) and its HTTP
    settings make, or None without a ``url``; :class:`UsageError` for HTTP settings with no URL."""
    from .workload.mix import http_op, parse_mix

    if "url" not in layer:
        given = [k for k in HTTP_KEYS if k in layer]
        if given and not any(getattr(op, "http", None) for op in layer.get("ops") or ()):
            raise UsageError(f"{layer.origin(given[0])}: an HTTP setting without --url (give the URL it is for)")
        return None
    where = layer.origin("url")
    ops = []
    for name, method, url, weight in layer["url"]:
        table = {"url": url, "name": name, "method": method or layer.get("method"), "headers": [f"{k}: {v}" for k, v in
                 layer.get("headers") or ()], "body": layer.get("body"), "json": layer.get("json"),
                 "expect_status": layer.get("expect_status"), "insecure": bool(layer.get("insecure")),
                 "checks": layer.get("http_checks")}
        if weight is not None:
            table["weight"] = weight
        ops.append(http_op({k: v for k, v in table.items() if v is not None}, where))
    return parse_mix(ops, where)


def _ops(value, where, strict):
    from .workload.mix import parse_mix

    if not isinstance(value, (list, tuple)):
        raise UsageError(f"{where}: expected an array of ops ([[scenario.ops]] tables: target, weight, name, args)")
    return parse_mix(list(value), where)


def _choice(choices):
    return lambda value, where, strict: check_choice(value, where, choices)


def _stages(value, where, strict):
    if isinstance(value, str):
        return tuple(parse_stages(value, where))
    if isinstance(value, tuple) and all(isinstance(s, Stage) for s in value) and value:
        return value
    if not isinstance(value, (list, tuple)) or not value:
        raise UsageError(f"{where}: expected \"DURATION:TARGET,…\" or an array of [duration, target], "
                         f"got {show(value)}")
    stages = []
    for i, item in enumerate(value, 1):
        at = f"{where}[{i}]"
        if isinstance(item, Stage):
            dur, target = item.duration_s, item.target
        elif isinstance(item, dict):
            no_unknown(item, ("duration", "target"), at)
            if "duration" not in item or "target" not in item:
                raise UsageError(f"{at}: expected both duration and target")
            dur, target = item["duration"], item["target"]
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            dur, target = item
        else:
            raise UsageError(f"{at}: expected [duration, target], got {show(item)}")
        stages.append(Stage(parse_duration(dur, f"{at}.duration"),
                            check_number(target, f"{at}.target", 0, low_open=False, strict=strict)))
    return tuple(stages)


def _criteria(value, where, strict):
    from .abort import check_abortable
    from .criteria import Criterion

    if isinstance(value, str) and not strict:
        value = [t for t in re.split(r"[;\n]", value) if t.strip()]
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise UsageError(f"{where}: expected an array of expressions such as \"p99_ms < 500\" or tables "
                         f"{{expr = \"…\", abort_on_fail = true}}, got {show(value)}")
    out = []
    for i, item in enumerate(value, 1):
        at = f"{where}[{i}]"
        if isinstance(item, Criterion):
            out.append(item)
            continue
        if isinstance(item, dict):
            no_unknown(item, ("expr", "abort_on_fail"), at)
            if "expr" not in item:
                raise UsageError(f"{at}: expected an expr = \"METRIC OP NUMBER\"")
            expr = check_text(item["expr"], f"{at}.expr")
            abort = check_bool(item.get("abort_on_fail", False), f"{at}.abort_on_fail", strict=strict)
        elif isinstance(item, str):
            expr, abort = item, False
        else:
            raise UsageError(f"{at}: expected an expression string or a table, got {show(item)}")
        try:
            c = Criterion.parse(expr, abort_on_fail=abort)
        except UsageError as e:
            raise UsageError(f"{at}: {e}") from None
        if abort:
            check_abortable(c, at)
        out.append(c)
    return out


def _params(typed):
    """A table of keyword arguments (TOML, the API), or KEY=VALUE strings / a JSON object (CLI, environment)."""

    def check(value, where, strict):
        if isinstance(value, dict):
            return dict(value)
        if strict:
            raise UsageError(f"{where}: expected a table of KEY = VALUE, got {show(value)}")
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
            raise UsageError(f"{where}: expected KEY=VALUE pairs, got {show(value)}")
        out = {}
        for item in value:
            key, sep, v = str(item).partition("=")
            if not sep or not key.strip():
                raise UsageError(f"{where}: {item!r} is not KEY=VALUE")
            out[key.strip()] = _typed_value(v) if typed else v
        return out

    return check


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
    if isinstance(value, ResourceThresholds):
        return value.to_dict()
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected a table of ResourceThresholds fields, got {show(value)}")
    no_unknown(value, THRESHOLD_CHECKS, where)
    out, kill_on = {}, set(value.get("kill_on") or ())
    for k, v in value.items():
        if isinstance(v, dict) and k != "kill_on":  # {limit = 90, action = "kill"}: the limit and its tier
            v = _limit_with_action(v, k, f"{where}.{k}", kill_on)
        out[k] = THRESHOLD_CHECKS[k](v, f"{where}.{k}")
    if kill_on or "kill_on" in value:
        out["kill_on"] = THRESHOLD_CHECKS["kill_on"](sorted(kill_on), f"{where}.kill_on")
    return out


def _limit_with_action(table, field, where, kill_on):
    """A threshold given as ``{limit = X, action = "kill" | "report"}``: returns X, and records in
    ``kill_on`` whether a report-only guard kills. The guards that protect the machine always act."""
    no_unknown(table, ("limit", "action"), where)
    if "limit" not in table:
        raise UsageError(f"{where}: expected limit = NUMBER (and action = \"kill\" or \"report\")")
    action = check_choice(table.get("action", "report"), f"{where}.action", ("kill", "report"))
    guard = next((g for g, f in KILLABLE.items() if f == field), None)
    if guard is None:
        if action == "report":
            raise UsageError(f"{where}.action: {field} always acts (it protects the machine or bounds the run); "
                             "only max_cpu_percent and memory_growth_rate_mb_per_sec can be report-only")
    elif action == "kill":
        kill_on.add(guard)
    else:
        kill_on.discard(guard)
    return table["limit"]


# ====================================================================== the table


@dataclass(frozen=True)
class Option:
    """One setting. ``key``: the plan key and API keyword (``thresholds.FIELD`` for a threshold
    field's flag). ``check(value, where, strict)``: see above. ``flag``: its command-line flag
    (None: none); ``env``: its variable (default ``LOADGEN_`` + the flag in capitals). ``level``:
    where a plan may set it — ``"scenario"`` (in a ``[[scenario]]`` or as a top-level default),
    ``"plan"`` (top level only) or None (not in plans). ``plan_field``: the ``RunPlan`` field a
    load-model setting fills. ``action``: argparse's (``"store_true"``, ``"append"``)."""

    key: str
    check: object
    help: str
    flag: str | None = None
    env: str | None = None
    default: object = None
    level: str | None = "scenario"
    commands: frozenset = BOTH
    group: str = "target"
    metavar: str | None = None
    choices: tuple | None = None
    action: str | None = None
    plan_field: str | None = None

    @property
    def dest(self):
        """The argparse destination of the flag (``--target-arg`` → ``target_arg``)."""
        return self.flag[2:].replace("-", "_") if self.flag else None

    @property
    def help_text(self):
        """The help, with the default when it has one worth showing."""
        if self.default is None or isinstance(self.default, bool):
            return self.help
        if self.check in (_duration, _sample_interval) or self.key.endswith(("_seconds", "_s")):
            shown = f"{self.default * 1000:g}ms" if self.default < 1 else f"{self.default:g}s"
        else:
            shown = f"{self.default:g}" if isinstance(self.default, (int, float)) else str(self.default)
        return f"{self.help} (default {shown})"

    @property
    def variable(self):
        """The ``LOADGEN_*`` environment variable (None without a flag)."""
        if self.env:
            return self.env
        return "LOADGEN_" + self.dest.upper() if self.flag else None


_THRESHOLD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ResourceThresholds)}


def _threshold(field, flag, help, metavar=None):
    check = THRESHOLD_CHECKS[field]
    return Option(f"thresholds.{field}", lambda v, w, strict: check(v, w), help, flag, metavar=metavar, level=None,
                  default=_THRESHOLD_DEFAULTS[field] or None, group=SAFETY)


O = Option
OPTIONS = (
    # -- the load model (run only)
    O("concurrency", _whole(1), "closed model: operations in flight", "--concurrency", metavar="N",
      commands={RUN}, group=LOAD, plan_field="concurrency"),
    O("rate", _number(0), "open model: operations started per second, on schedule; latency counts from the "
      "intended start", "--rate", metavar="R", commands={RUN}, group=LOAD, plan_field="rate"),
    O("max_lateness", _duration, "open model: drop an arrival no slot can start within this of its intended "
      "time", "--max-lateness", metavar="D", default=DEFAULT_MAX_LATENESS_S, commands={RUN}, group=LOAD,
      plan_field="max_lateness_s"),
    O("stages", _stages, "ramps of the target, e.g. 10s:5,30s:20,10s:0 (concurrency; with --rate, the rate); "
      "the run lasts their sum", "--stages", metavar="SPEC", commands={RUN}, group=LOAD, plan_field="stages"),
    O("duration", _duration, "how long the main phase runs", "--duration", metavar="D", commands={RUN}, group=LOAD,
      plan_field="duration_s"),
    O("operations", _whole(1), "stop after N operations", "--operations", metavar="N", commands={RUN}, group=LOAD,
      plan_field="operations"),
    O("workers", _whole(1), "worker processes (default: cores)", "--workers", metavar="N", commands={RUN},
      group=LOAD, plan_field="workers"),
    O("slots", _whole(1), "threads per worker (default: enough for the concurrency)", "--slots", metavar="N",
      commands={RUN}, group=LOAD, plan_field="slots"),
    O("op_timeout", _duration, "kill and replace a worker whose operation runs longer", "--op-timeout",
      metavar="D", commands={RUN}, group=LOAD, plan_field="op_timeout_s"),
    O("criteria", _criteria, "pass criterion replacing the scenario's, e.g. 'p99_ms < 500' (repeatable)",
      "--criterion", env="LOADGEN_CRITERIA", metavar="EXPR", action="append", commands={RUN}, group=LOAD),
    O("abort_on_fail", _bool, "stop the run as soon as a criterion is lost (those that can be judged while it "
      "goes: success/error rate, percentiles, counters; the scenario's own when no --criterion)",
      "--abort-on-fail", default=False, action="store_true", commands={RUN}, group=LOAD),
    O("profile", _choice(PROFILES), "scales the scenario's phases", "--profile", default="ci",
      choices=PROFILES, group=LOAD),
    # -- what runs
    O("target", _target, "operation to run instead of the embedded flow (module:callable or "
      "path/to/file.py:callable; sync or async); repeat with weights for a mix: --target a.py:login@1 "
      "--target a.py:browse@9. Each op is named after its function, or NAME= names it (as a plan's name =; "
      "needed with --target-factory): --target \"GET /drafts/{id}=a.py:make_draft@3\"; criteria select one "
      "with {op=NAME}", "--target", metavar="[NAME=]MOD:CALLABLE[@WEIGHT]", action="append"),
    O("ops", _ops, "a weighted mix of operations ([[scenario.ops]]: target, weight, name, args; or an HTTP op: "
      "url, method, headers, json or body, expect_status, name, weight)"),
    # -- HTTP ops (loadgen.http): no code needed
    O("url", _urls, "an HTTP op instead of a target: [NAME=][METHOD ]URL[@WEIGHT], repeatable for a weighted mix "
      "('GET http://127.0.0.1:8080/drafts/{id}@9'); {field} places are filled from --inputs records; named after "
      "its method and path template unless NAME= names it; a status >= 400 fails the op", "--url",
      metavar="[NAME=][METHOD ]URL[@W]", action="append", group=HTTP),
    O("method", _text, "the --url ops' method when the URL does not say (default GET; POST with a body)",
      "--method", metavar="METHOD", group=HTTP),
    O("headers", _headers, "request header of the --url ops (repeatable)", "--header", env="LOADGEN_HEADERS",
      metavar="'NAME: VALUE'", action="append", group=HTTP),
    O("body", _text, "request body of the --url ops (a template; @FILE reads a file)", "--body", metavar="TEXT",
      group=HTTP),
    O("json", _json_text, "JSON request body of the --url ops (a template; sets Content-Type)", "--json",
      metavar="JSON", group=HTTP),
    O("expect_status", _expect, "statuses that succeed, e.g. 200,201,300-399 (default: any below 400)",
      "--expect-status", metavar="LIST", group=HTTP),
    O("http_checks", _http_checks, "a check of every response, counted as loadgen.check (the op is not failed): "
      "'status == 200', 'header Content-Type contains json', 'json .state == \"finalized\"', 'body contains ok' "
      "(repeatable)", "--check", env="LOADGEN_CHECKS", metavar="CHECK", action="append", group=HTTP),
    O("insecure", _bool, "do not verify TLS certificates of https:// URLs", "--insecure", default=False,
      action="store_true", group=HTTP),
    O("target_factory", _bool, "--target names a factory called once per worker (with the --target-args) that "
      "returns the operation: clients and models load once, not per call", "--target-factory", default=False,
      action="store_true"),
    O("inputs", _text, "a .jsonl or .csv file: each operation gets the next record", "--inputs", metavar="FILE"),
    O("inputs_mode", _choice(INPUTS_MODES), "cycle through the records, or go through them once and end the run",
      "--inputs-mode", default="cycle", choices=INPUTS_MODES),
    O("target_args", _params(True), "keyword argument for the target (typed: int, float, bool, JSON, else "
      "string)", "--target-arg", env="LOADGEN_TARGET_ARGS", metavar="KEY=VALUE", action="append"),
    O("flow_params", _params(False), "parameter of the embedded flow (see `loadgen list`)", "--flow-param",
      env="LOADGEN_FLOW_PARAMS", metavar="KEY=VALUE", action="append"),
    O("seed", _whole(0), "seed for reproducible runs (integer ≥ 0)", "--seed"),
    O("thresholds", _thresholds, "ResourceThresholds fields (a table in plans)", level="scenario"),
    # -- the run directory and the command
    O("out", _text, "run directory (default: loadgen-results/<UTC time>-<name>)", "--out", metavar="DIR",
      level="plan", group=OUTPUT),
    O("quiet", _bool, "print only the failed components and the final summary line", "--quiet", default=False, action="store_true",
      level=None, group=OUTPUT),
    O("log_level", _choice(LOG_LEVELS), "how much loadgen logs", "--log-level", default="WARNING", choices=LOG_LEVELS,
      level=None, group=OUTPUT),
    O("metrics_port", lambda value, where, strict: check_int(value, where, 1, 65535, strict=strict),
      "serve live Prometheus metrics on 127.0.0.1:PORT during the run (needs prometheus_client: "
      "pip install 'loadgen[metrics]')", "--metrics-port", metavar="PORT", level=None, group=OUTPUT),
    O("progress_interval", _duration, "when stdout is not a terminal (CI, a pipe), print a plain progress line this "
      "often (--quiet: never)", "--progress-interval", metavar="D", default=10.0, level=None, group=OUTPUT),
    # -- safety (ResourceThresholds fields)
    _threshold("max_memory_mb", "--max-memory-mb", "pool memory limit, PSS (MB)"),
    _threshold("max_cpu_percent", "--max-cpu-percent", "machine CPU above it for 3 s is reported (kills with --kill-on cpu; 100 = off)"),
    _threshold("max_execution_time_seconds", "--max-execution-time", "hard bound of a run", "D"),
    _threshold("max_concurrent_operations", "--max-concurrent-operations", "never more in flight", "N"),
    _threshold("memory_growth_rate_mb_per_sec", "--memory-growth-rate", "memory growth above it is reported (kills with --kill-on growth)", "MB/S"),
    _threshold("min_available_memory_mb", "--min-available-mb", "system floor of available memory", "MB"),
    _threshold("kill_on", "--kill-on", "report-only guards that kill instead: cpu (machine CPU above "
               "--max-cpu-percent), growth (memory growing faster than --memory-growth-rate); by default they "
               "are watched and reported, and only memory, the system floor and the time limit act", "GUARDS"),
    O("sample_interval", _sample_interval, "monitor sampling interval", "--sample-interval",
      metavar="D", default=DEFAULT_SAMPLE_INTERVAL_S, level="plan", group=SAFETY),
    O("stop_file", _text, "stop gracefully when this file appears", "--stop-file", metavar="PATH", level="plan",
      group=SAFETY),
    O("max_output_mb", _number(0), "cap of workers.log (what targets print, MB): past it output is counted and "
      "dropped, and the report says how much", "--max-output-mb", metavar="MB", default=DEFAULT_MAX_OUTPUT_MB,
      level="plan", group=SAFETY),
    O("start_method", _choice(START_METHODS), "how worker processes start", "--start-method",
      default="fork", choices=START_METHODS, level="plan", group=SAFETY),
    O("prom_textfile", _text, "also write key gauges for node_exporter's textfile collector (atomically)",
      "--prom-textfile", metavar="PATH", level=None, group=OUTPUT),
    O("label", _text, "a name for this run recorded in report.json (metadata.label), e.g. a commit id; "
      "`loadgen history` shows it beside each night (not part of what makes nights comparable)", "--label",
      metavar="TEXT", level="plan", group=OUTPUT),
    O("name", _text, "the plan's name: the report's kind is \"plan NAME\" (default: the file's name)",
      level="plan"),
    O("parallel", _bool, "run the plan's scenarios at the same time, each with its own load model and processes "
      "(k6's scenarios); one report", default=False, level="plan"),
    # -- fleet runs (loadgen.fleet)
    O("cluster", _text, "run as a fleet on this Dask scheduler (tcp://HOST:8786): one shard per worker offering "
      "the loadgen resource, the load split", "--cluster", metavar="ADDRESS", level=None, group=FLEET),
    O("shards", _whole(1), "use exactly N shard workers (wait for them up to --cluster-timeout; default: every "
      "one there)", "--shards", metavar="N", level=None, group=FLEET),
    O("cluster_timeout", _duration, "reach the scheduler and find workers within this",
      "--cluster-timeout", metavar="D", default=TIMING.fleet_connect_s, level=None, group=FLEET),
    O("start_lead", _duration, "the longest wait for every shard's pool to be ready; the load begins together "
      "just after the last is (a shard not ready by then: nothing runs, exit 2)", "--start-lead", metavar="D",
      default=TIMING.fleet_start_lead_s, level=None, group=FLEET),
    O("silence_limit", _silence_limit, "a shard heard nothing from this long is lost; a shard that cannot reach the "
      "scheduler this long stops its load (at least 3s)", "--silence-limit", metavar="D",
      default=TIMING.fleet_silence_s,
      level=None, group=FLEET),
)
del O

BY_KEY = {o.key: o for o in OPTIONS}
BY_DEST = {o.dest: o for o in OPTIONS if o.flag}
#: argparse destination → environment variable, for every flag of ``run`` and ``suite``.
ENV = {o.dest: o.variable for o in OPTIONS if o.flag}
#: Keys a plan takes in a ``[[scenario]]`` (and as top-level defaults), and at its top level only.
SCENARIO_KEYS = {o.key: o.check for o in OPTIONS if o.level == "scenario"}
PLAN_KEYS = {o.key: o.check for o in OPTIONS if o.level == "plan"}
#: Settings that travel to every phase of a run as the load model (RunPlan fields).
LOAD_KEYS = tuple(o.key for o in OPTIONS if o.plan_field)
FLEET_KEYS = tuple(o.key for o in OPTIONS if o.group == FLEET)
PRESENTATION_KEYS = ("quiet", "log_level", "prom_textfile", "progress_interval", "metrics_port")


def value(layer, key):
    """``layer[key]``, or the setting's default."""
    return layer.get(key, BY_KEY[key].default)


# ====================================================================== layers


class Layer(dict):
    """Checked settings of one level (key → value), with where each came from (:attr:`where`)."""

    def __init__(self, *args, where=None, **kw):
        super().__init__(*args, **kw)
        self.where = dict(where or {})

    def put(self, key, value, where):
        """Set ``key``; a ``thresholds.FIELD`` key sets one field of the thresholds table."""
        if key.startswith("thresholds."):
            self.setdefault("thresholds", {})[key.split(".", 1)[1]] = value
            self.where.setdefault("thresholds", where)
            self.where[key] = where
            return
        self[key] = value
        self.where[key] = where

    def origin(self, key, default=None):
        """Where ``key`` came from (a flag, a variable, a plan path), or ``default``."""
        return self.where.get(key, default if default is not None else key)

    def without(self, *keys):
        """A copy without ``keys``."""
        out = Layer({k: v for k, v in self.items() if k not in keys}, where=self.where)
        return out


def merge(lower, upper):
    """``upper`` over ``lower`` with the precedence rules of the module docstring."""
    out = Layer(lower, where=lower.where)
    if "concurrency" in upper or "rate" in upper:
        for k in MODEL_KEYS:
            out.pop(k, None)
    if "stages" in upper and "duration" not in upper:
        out.pop("duration", None)
    if any(k in upper for k in WHAT_RUNS_KEYS):
        for k in TARGET_BOUND_KEYS + WHAT_RUNS_KEYS + HTTP_KEYS:
            out.pop(k, None)
    for k, v in upper.items():
        if k in TABLE_KEYS and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
        out.where[k] = upper.where.get(k, k)
    for k, w in upper.where.items():  # a threshold field's own origin
        if k.startswith("thresholds."):
            out.where[k] = w
    return out


def from_flags(values):
    """A layer from argparse values (dest → value; None or [] = not given), each named by its flag."""
    layer = Layer()
    for dest, option in BY_DEST.items():
        raw = values.get(dest)
        if raw is None or (option.action == "append" and not raw):
            continue
        layer.put(option.key, option.check(raw, _flag_where(option), False), _flag_where(option))
    return one_model(layer)


def _flag_where(option):
    if option.key.startswith("thresholds."):  # the flag, and the field a plan would name
        return f"{option.flag} ({option.key.split('.', 1)[1]})"
    return option.flag


def from_env(environ):
    """A layer from ``LOADGEN_*`` variables; an empty variable is unset; errors name the variable."""
    layer = Layer()
    for option in OPTIONS:
        var = option.variable
        raw = environ.get(var) if var else None
        if raw is None or not raw.strip():
            continue
        layer.put(option.key, option.check(raw.strip(), var, False), var)
    return one_model(layer)


def from_api(kwargs, command=RUN, what="run"):
    """A layer from Python keywords (``concurrency=5, duration="10s", thresholds=ResourceThresholds()``).

    Values are checked as the command line's are (strings parsed). An unknown
    keyword, or one ``command`` does not take, is a :class:`TypeError`, as
    Python's own would be; a bad value is a :class:`UsageError` naming it.
    """
    layer = Layer()
    for key, raw in kwargs.items():
        option = BY_KEY.get(key)
        if option is not None and option.key.startswith("thresholds."):
            field = option.key.split(".", 1)[1]
            raise TypeError(f"{what}() got an unexpected keyword argument {key!r}: a threshold is given as "
                            f"thresholds=ResourceThresholds({field}=...)")
        if option is None or (option.flag and command not in option.commands):
            known = {k: k for k in BY_KEY if not k.startswith("thresholds.")}
            known.update({k.split(".", 1)[1]: f"thresholds=ResourceThresholds({k.split('.', 1)[1]}=...)"
                          for k in BY_KEY if k.startswith("thresholds.")})
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6) if isinstance(key, str) else []
            hint = f" (did you mean {known[close[0]]}?)" if close else ""
            raise TypeError(f"{what}() got an unexpected keyword argument {key!r}" + hint)
        if raw is None or (option.action == "append" and not raw and not isinstance(raw, dict)):
            continue
        layer.put(key, option.check(raw, key, False), key)
    return one_model(layer)


def one_model(layer):
    """``layer`` itself, or :class:`UsageError` when it asks for both load models at once: a closed
    model's ``concurrency`` and an open model's ``rate`` given at the same level (one would be
    silently ignored). Across levels the higher one replaces the lower's model (:func:`merge`)."""
    if "url" in layer and ("target" in layer or "ops" in layer):
        other = "target" if "target" in layer else "ops"
        raise UsageError(f"{layer.origin('url')} and {layer.origin(other)}: give an op as a URL or as a target, "
                         "not both (for a mix of the two, use [[scenario.ops]] tables in a plan)")
    if "concurrency" in layer and "rate" in layer:
        raise UsageError(f"{layer.origin('concurrency')} and {layer.origin('rate')}: give one load model — "
                         "concurrency (closed: operations in flight) or rate (open: arrivals per second), not both")
    return layer


def check_in_flight(layer, thresholds):
    """:class:`UsageError` when ``layer`` asks for more operations in flight — its ``concurrency`` or
    its stages' peak, closed model — than ``thresholds.max_concurrent_operations``, the safety cap:
    the run would silently run fewer. The message names the flag that raises the cap."""
    if layer.get("rate") is not None:
        return
    asked = [(layer["concurrency"], "concurrency")] if "concurrency" in layer else []
    asked += [(math.ceil(s.target), "stages") for s in layer.get("stages") or ()]
    cap = thresholds.max_concurrent_operations
    for n, key in asked:
        if n > cap:
            raise UsageError(f"{layer.origin(key)}: {n} operations in flight is above the safety cap "
                             f"max_concurrent_operations = {cap}; raise it with --max-concurrent-operations "
                             f"(LOADGEN_MAX_CONCURRENT_OPERATIONS, or max_concurrent_operations in a plan's "
                             f"[thresholds]) to run more")


def check_room(layer, thresholds, threads=True):
    """:class:`UsageError` when the workers, slots or rate ``layer`` asks for do not fit this machine
    now (``engine.room``: the rule), before anything is written. Slots and workers not given are
    derived as a run derives them (``RunPlan.validated``). ``threads``: a sync target's slots."""
    from .engine import room
    from .engine.load import pool_shape

    rate = layer.get("rate")
    workers, slots = pool_shape(layer.get("concurrency"), layer.get("stages"), rate, layer.get("workers"),
                                layer.get("slots"), thresholds.max_concurrent_operations, threads=threads)
    room.check(workers, slots, rate, threads=threads)


def no_unknown(table, known, where):
    """:class:`UsageError` for the first key of ``table`` not in ``known``, suggesting the closest."""
    for key in table:
        if key not in known:
            hint = did_you_mean(key, known) or f" (known: {', '.join(sorted(known))})"
            raise UsageError(f"{where}: unknown key {key!r}{hint}")


# ====================================================================== what the settings make


def plan_fields(layer):
    """``RunPlan`` keyword arguments of the load-model settings in ``layer``."""
    return {BY_KEY[k].plan_field: layer[k] for k in LOAD_KEYS if k in layer}


def thresholds_of(layer):
    """The :class:`ResourceThresholds` of ``layer`` (its ``thresholds`` table over the defaults)."""
    try:
        return ResourceThresholds(**(layer.get("thresholds") or {}))
    except UsageError as e:
        raise UsageError(f"{layer.origin('thresholds')}: {e}") from None


def mark_abort(layer, scenario_criteria):
    """With ``abort_on_fail`` set, the layer's criteria (the scenario's own when none) marked to
    abort wherever they can be judged early (:func:`loadgen.abort.mark`)."""
    if not layer.get("abort_on_fail"):
        return layer
    from .abort import mark
    from .criteria import parse_all

    out = Layer(layer, where=layer.where)
    out["criteria"] = mark(parse_all(layer.get("criteria") or scenario_criteria))
    return out


__all__ = ["OPTIONS", "Option", "Layer", "merge", "from_flags", "from_env", "from_api", "plan_fields",
           "thresholds_of", "mark_abort", "value", "ENV", "SCENARIO_KEYS", "PLAN_KEYS"]


def _check_table():
    """Each key, flag and variable once (run at import: a duplicate is a bug in this file)."""
    for attr in ("key", "flag", "variable"):
        seen = [getattr(o, attr) for o in OPTIONS if getattr(o, attr)]
        assert len(seen) == len(set(seen)), f"duplicate option {attr}"


_check_table()

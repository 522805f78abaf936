"""Pass/fail criteria as k6-style expressions: ``"p99_ms < 500"``, ``"success_rate > 0.7"``.

A criterion names one metric of a run (see :data:`METRICS`), a comparison
and a number, with a unit if wished: ``p95_ms < 50ms``, ``p95_ms < 0.05s``,
``success_rate > 95%``. Unknown metrics, units that do not fit and malformed
expressions are usage errors raised before anything runs — never a silent pass.

A metric may select what it measures (see :data:`SELECTORS`): one op of a mix,
``p95_ms{op=browse} < 200``; a named measurement, ``p95_ms{measure=llm_call} < 800``;
or a check, ``checks{name=has_title} > 0.99`` (``checks`` alone: every check's passes ÷ all).
A name runs to the last ``}`` before the comparison, so Locust-style names work as they are
(``p95_ms{op=GET /drafts/{id}} < 50``), or quoted (``{op="GET /drafts/{id}"}``). An op the mix
does not have is a usage error before any load (:func:`check_ops`); a measure or check the run
never recorded fails the criterion, its report naming the names that were.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

from .errors import UsageError
from .analysis import STAT_ALIASES, STATISTICS

METRICS = {
    "success_rate": "succeeded ÷ completed operations (open model: ÷ completed + dropped arrivals; 0–1)",
    "error_rate": "failed + timed out + crashed (+ dropped, open model) ÷ the same (0–1)",
    "throughput": "completed operations per second",
    "operations": "operations completed",
    "p50_ms": "median latency (ms)",
    "p90_ms": "90th percentile latency (ms)",
    "p95_ms": "95th percentile latency (ms)",
    "p99_ms": "99th percentile latency (ms)",
    "p999_ms": "99.9th percentile latency (ms; also p99.9_ms)",
    "p9999_ms": "99.99th percentile latency (ms; also p99.99_ms)",
    "min_ms": "fastest operation (ms)",
    "max_ms": "slowest operation (ms)",
    "mean_ms": "mean latency (ms)",
    "peak_memory_mb": "the pool's peak memory, PSS (MB)",
    "peak_cpu_percent": "machine CPU, peak (0–100)",
    "memory_growth_mb": "pool memory at the end minus at the start (MB)",
    "leak_slope_mb_per_s": "least-squares slope of pool memory (MB/s)",
    "crashed": "operations lost to worker crashes",
    "timed_out": "operations past --op-timeout",
    "dropped": "operations dropped for want of a free slot (open model)",
    "dropped_rate": "dropped ÷ arrivals asked for (open model; 0–1)",
    "thresholds_exceeded": "report-only thresholds passed (machine CPU, memory growth)",
    "cpu_median_percent": "machine CPU while load was applied, median of the seconds (0–100)",
    "cpu_p90_percent": "machine CPU while load was applied, 90th percentile of the seconds (0–100)",
    "breaches": "safety breaches",
    "max_capacity": "capacity_limits: highest sustainable concurrency",
    "capacity_low": "capacity_limits: lower end of the capacity's 95 % interval",
    "capacity_high": "capacity_limits: upper end of the capacity's 95 % interval",
    "capacity_confident": "capacity_limits: 1 when the interval is narrow enough to quote (a measurement, not noise)",
    "recovery_time_seconds": "recovery: seconds until back within tolerance",
    "recovery_rate": "recovery: success rate after the overload",
    "memory_back_mb": "recovery: pool memory after recovery minus baseline (MB)",
    "breaker_opened": "circuit_breaker: 1 when the breaker opened",
    "breaker_closed": "circuit_breaker: 1 when the breaker closed again",
    "p99_drift": "sustained_load: last third p99 ÷ first third p99",
    "leak_detected": "1 when the leak verdict says leak",
}

# selector label → the metrics it can select (``METRIC{label=name}``)
SELECTORS = {
    "measure": tuple(f"{k}_ms" for k in STATISTICS) + ("count",),
    "name": ("checks",),
    "op": tuple(f"{k}_ms" for k in STATISTICS) + ("success_rate", "error_rate", "operations", "throughput"),
}
METRICS["checks"] = "loadgen.check passes ÷ all checks (0–1); checks{name=NAME}: one check's pass rate"
METRICS["count"] = "count{measure=NAME}: how many times a loadgen.measure block ran"

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
# METRIC [{LABEL=NAME}] OP NUMBER [UNIT]. The selector runs to the LAST "}" before the comparison, so a
# name may hold spaces, slashes and braces (Locust's "GET /drafts/{id}"); quoting it ("…" or '…') keeps
# it exactly as written, surrounding spaces included.
_EXPR = re.compile(r"^\s*([a-z_][a-z0-9_.]*)\s*(?:\{(.*)\})?\s*(<=|>=|==|!=|<|>)\s*"
                   r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Zµ%]*)\s*$")
_SELECTOR = re.compile(r"^\s*([a-z_]+)\s*=(.*)$", re.S)
# A limit's unit → the factor to the metric's own unit, by the metric's unit (its name's ending).
TIME_UNITS_S = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_UNIT_OF = (("_ms", 1e-3), ("_seconds", 1.0))  # metric name ending → seconds per unit of the metric
EXPECTED = ("expected METRIC OP NUMBER[UNIT], e.g. 'p99_ms < 500', 'p99_ms < 0.5s', 'success_rate > 95%', "
            "'p95_ms{op=\"GET /drafts/{id}\"} < 200' (units: % for rates; us, ms, s, m, h for times)")


def _unquote(name):
    """A selector's name: stripped, and unquoted when it is wholly in matching quotes."""
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
        return name[1:-1]
    return name


def split_metric(metric):
    """``(base, label, name)`` of a parsed metric: ``("p95_ms", "op", "GET /x/{id}")`` of
    ``"p95_ms{op=GET /x/{id}}"``; ``(metric, None, None)`` without a selector."""
    base, brace, rest = metric.partition("{")
    if not brace or not rest.endswith("}"):
        return metric, None, None
    label, _, name = rest[:-1].partition("=")
    return base, label, name


def _scale(metric, number, unit, text):
    """``number`` given in ``unit`` in the unit of ``metric`` (% → ÷ 100, a time → the metric's)."""
    if not unit:
        return number
    if unit == "%":
        return number / 100.0
    per = TIME_UNITS_S.get(unit)
    if per is None:
        raise UsageError(f"criterion {text!r}: unknown unit {unit!r}; {EXPECTED}")
    base = split_metric(metric)[0]
    for ending, seconds in _UNIT_OF:
        if base.endswith(ending):
            return number * (per / seconds)
    raise UsageError(f"criterion {text!r}: {base} is not a time, so its limit takes no unit {unit!r} "
                     f"(times: *_ms, *_seconds)")


@dataclass(frozen=True)
class Criterion:
    """One parsed criterion, ``metric op limit`` (a limit given in % is kept as a fraction, one given in
    a time unit in the metric's own: ``p95_ms < 0.05s`` is ``p95_ms < 50``).

    ``abort_on_fail``: judged every second of the run, which stops once it is
    lost (see :mod:`loadgen.abort`); otherwise judged at the end only.
    ``default``: the scenario's own criterion, judged because the user gave none
    (reports mark it so; any criterion the user gives replaces it).
    """

    metric: str
    op: str
    limit: float
    abort_on_fail: bool = False
    default: bool = False

    @classmethod
    def parse(cls, text, abort_on_fail=False):
        """A criterion from text such as ``"p99_ms < 500"``, ``"p99_ms < 0.5s"`` or
        ``"success_rate > 70%"`` (% → ÷ 100; us, ms, s, m, h → the metric's unit).

        Raises :class:`UsageError` (exit 2) for a malformed expression, a
        metric not in :data:`METRICS`, a unit that does not fit it or a limit that is not finite.
        """
        m = _EXPR.match(str(text))
        if not m:
            raise UsageError(f"criterion {text!r}: {EXPECTED}")
        metric, selector, op, number, unit = m.groups()
        stat = metric[:-3] if metric.endswith("_ms") else None
        if stat in STAT_ALIASES:  # p99.9_ms → p999_ms
            metric = STAT_ALIASES[stat] + "_ms"
        if selector is not None:
            sel = _SELECTOR.match(selector)
            if not sel:
                raise UsageError(f"criterion {text!r}: a selector is {{LABEL=NAME}} "
                                 f"(known: {', '.join(f'{{{k}=NAME}}' for k in SELECTORS)})")
            label, name = sel.group(1), _unquote(sel.group(2))
            if label not in SELECTORS:
                raise UsageError(f"criterion {text!r}: unknown selector {{{label}=…}} "
                                 f"(known: {', '.join(f'{{{k}=NAME}}' for k in SELECTORS)})")
            if metric not in SELECTORS[label]:
                raise UsageError(f"criterion {text!r}: {metric} cannot select {{{label}=…}} "
                                 f"(it selects {', '.join(SELECTORS[label])})")
            if not name:
                raise UsageError(f"criterion {text!r}: {{{label}=}} names nothing")
            metric = f"{metric}{{{label}={name}}}"
        elif metric == "count":
            raise UsageError(f"criterion {text!r}: count needs {{measure=NAME}}")
        elif metric not in METRICS:
            raise UsageError(f"criterion {text!r}: unknown metric {metric!r} (known: {', '.join(sorted(METRICS))})")
        limit = _scale(metric, float(number), unit, text)
        if not math.isfinite(limit):
            raise UsageError(f"criterion {text!r}: limit must be a finite number")
        return cls(metric, op, limit, abort_on_fail)

    @property
    def selector(self):
        """``(label, name)`` of a criterion that selects (``("op", "browse")``), else ``(None, None)``."""
        return split_metric(self.metric)[1:]

    def __str__(self):
        base, label, name = split_metric(self.metric)
        metric = self.metric
        if label is not None and (name != name.strip() or name[:1] in "\"'"):  # quoted, to parse back the same
            metric = f"{base}{{{label}=\"{name}\"}}"
        return f"{metric} {self.op} {self.limit:g}"

    def evaluate(self, metrics):
        """``(passed, value)``; a metric the run did not produce fails (value None)."""
        value = metrics.get(self.metric)
        if value is None:
            return False, None
        return bool(_OPS[self.op](value, self.limit)), value

    def to_dict(self, metrics=None):
        """``{criterion, metric, op, limit}`` (and ``default: True`` for a scenario's own), plus ``value`` and
        ``passed`` when judged on ``metrics``, and ``why`` when it measured no value: for a selector, the names
        the run did record."""
        d = {"criterion": str(self), "metric": self.metric, "op": self.op, "limit": self.limit}
        if self.default:
            d["default"] = True
        if metrics is not None:
            passed, value = self.evaluate(metrics)
            d.update(value=value, passed=passed)
            if value is None:
                d["why"] = self.why_no_value(metrics)
        return d

    def why_no_value(self, metrics):
        """Why ``metrics`` hold no value for this criterion, in a few words: for ``{measure=X}``,
        ``{name=X}`` or ``{op=X}``, that X was never recorded and which names were."""
        label, name = self.selector
        if label is None:
            return "the run did not produce this metric"
        recorded = sorted({n for n in (split_metric(k)[1:] for k in metrics) if n[0] == label} - {(label, name)})
        kind = {"measure": "measure", "name": "check", "op": "op"}.get(label, label)
        listed = ", ".join(repr(n) for _, n in recorded) if recorded else "none"
        if (label, name) in {split_metric(k)[1:] for k in metrics}:
            return f"{kind} {name!r} was recorded but has no {split_metric(self.metric)[0]} (nothing completed?)"
        return f"no {kind} {name!r} was recorded (recorded: {listed})"


def check_ops(criteria, op_names, where="--criterion"):
    """:class:`UsageError` (exit 2, before any load) for a criterion whose ``{op=NAME}`` names no op of
    the run: ``op_names`` are the mix's (empty: the run has no mix)."""
    for c in criteria:
        label, name = c.selector
        if label != "op" or name in op_names:
            continue
        if not op_names:
            raise UsageError(f"{where}: {c} selects op {name!r}, but this run has no mix of ops "
                             "({op=NAME} selects one op of a repeated --target or [[scenario.ops]])")
        raise UsageError(f"{where}: {c} selects op {name!r}, which this run does not have "
                         f"(its ops: {', '.join(map(repr, op_names))})")


def parse_all(texts):
    """Criteria from expressions (Criterion objects pass through); :class:`UsageError` on a bad one."""
    return [t if isinstance(t, Criterion) else Criterion.parse(t) for t in texts]

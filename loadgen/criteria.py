"""Pass/fail criteria as k6-style expressions: ``"p99_ms < 500"``, ``"success_rate > 0.7"``.

A criterion names one metric of a run (see :data:`METRICS`), a comparison
and a number. Unknown metrics and malformed expressions are usage errors
raised before anything runs — never a silent pass.

A metric may select what it measures (see :data:`SELECTORS`): one op of a mix,
``p95_ms{op=browse} < 200``; a named measurement, ``p95_ms{measure=llm_call} < 800``;
or a check, ``checks{name=has_title} > 0.99`` (``checks`` alone: every check's passes ÷ all). A name the run never recorded fails
the criterion, as any metric the run did not produce.
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
METRICS["checks"] = "loadgen.check passes ÷ all checks (0–1); checks{name=NAME}: one check's"
METRICS["count"] = "count{measure=NAME}: how many times a loadgen.measure block ran"

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
_EXPR = re.compile(r"^\s*([a-z_][a-z0-9_.]*)\s*(?:\{\s*([a-z_]+)\s*=\s*([^{}]*?)\s*\})?\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Criterion:
    """One parsed criterion, ``metric op limit`` (a limit given in % is kept as a fraction).

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
        """A criterion from text such as ``"p99_ms < 500"`` or ``"success_rate > 70%"`` (% → ÷ 100).

        Raises :class:`UsageError` (exit 2) for a malformed expression, a
        metric not in :data:`METRICS` or a limit that is not finite.
        """
        m = _EXPR.match(str(text))
        if not m:
            raise UsageError(f"criterion {text!r}: expected METRIC OP NUMBER, e.g. 'p99_ms < 500'")
        metric, label, name, op, number, pct = m.groups()
        stat = metric[:-3] if metric.endswith("_ms") else None
        if stat in STAT_ALIASES:  # p99.9_ms → p999_ms
            metric = STAT_ALIASES[stat] + "_ms"
        if label is not None:
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
        limit = float(number) / (100.0 if pct else 1.0)
        if not math.isfinite(limit):
            raise UsageError(f"criterion {text!r}: limit must be a finite number")
        return cls(metric, op, limit, abort_on_fail)

    def __str__(self):
        return f"{self.metric} {self.op} {self.limit:g}"

    def evaluate(self, metrics):
        """``(passed, value)``; a metric the run did not produce fails (value None)."""
        value = metrics.get(self.metric)
        if value is None:
            return False, None
        return bool(_OPS[self.op](value, self.limit)), value

    def to_dict(self, metrics=None):
        """``{criterion, metric, op, limit}`` (and ``default: True`` for a scenario's own), plus ``value`` and ``passed`` when judged on ``metrics``."""
        d = {"criterion": str(self), "metric": self.metric, "op": self.op, "limit": self.limit}
        if self.default:
            d["default"] = True
        if metrics is not None:
            passed, value = self.evaluate(metrics)
            d.update(value=value, passed=passed)
        return d


def parse_all(texts):
    """Criteria from expressions (Criterion objects pass through); :class:`UsageError` on a bad one."""
    return [t if isinstance(t, Criterion) else Criterion.parse(t) for t in texts]

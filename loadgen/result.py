"""Results: the seed's :class:`StressTestResult`, built from what a run measured.

A scenario turns one or more :class:`~loadgen.engine.outcome.RunOutcome` into one
``StressTestResult`` (a *component* of a report), evaluating its criteria
against :func:`metrics_of` the outcome plus anything scenario-specific.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import ExitCode
from .named import MEASURE_PREFIX, checks_summary, count_metrics, named_metrics
from .workload.mix import OP_PREFIX, OpTally, op_metrics
from .analysis import STATISTICS


#: Why a component in which no operation succeeded failed, whatever its criteria said (DESIGN §6b: a
#: run that did not do what was asked — nothing ran, every operation failed — never exits 0).
NOTHING_RAN = "nothing ran: no operation completed"
NONE_SUCCEEDED = "every operation failed: none succeeded"


@dataclass
class StressTestResult:
    """One component's result. The first fourteen fields are the seed's."""

    test_name: str
    success: bool
    duration_seconds: float
    max_concurrent_operations: int
    peak_memory_mb: float
    peak_cpu_percent: float
    total_operations: int
    successful_operations: int
    failed_operations: int
    throughput_ops_per_sec: float
    error_messages: list = field(default_factory=list)
    performance_metrics: dict = field(default_factory=dict)
    breaking_point_reached: bool = False
    recovery_time_seconds: float | None = None
    # loadgen's additions
    criteria: list = field(default_factory=list)  # Criterion.to_dict(metrics)
    accounting: dict = field(default_factory=dict)
    latency_ms: dict = field(default_factory=dict)  # response time in the open model, else service time
    service_time_ms: dict = field(default_factory=dict)  # start → end
    response_time_ms: dict | None = None  # open model: intended start → end
    start_lateness_ms: dict | None = None  # open model: intended start → actual start
    measures_ms: dict = field(default_factory=dict)  # loadgen.measure name → summary (the flow's stages)
    checks: dict = field(default_factory=dict)  # loadgen.check name → {passes, fails, rate}
    ops: dict = field(default_factory=dict)  # a mix's op name → workload.mix.OpTally.summary()
    # async slots: operations that blocked the event loop ≥ engine.aslots.STALL_MS ({count, max_ms, total_ms})
    loop_stalls: dict = field(default_factory=dict)
    breaches: list = field(default_factory=list)
    thresholds_exceeded: list = field(default_factory=list)  # report-only thresholds passed (threshold_exceeded)
    resource_exhaustion_detected: bool = False  # the seed's flag: a threshold was breached or exceeded
    stop_reason: str = ""
    exit_code: int = 0
    leak: dict = field(default_factory=dict)
    histograms: dict = field(default_factory=dict)  # name → HDR payload
    errors: dict = field(default_factory=dict)
    tracebacks: dict = field(default_factory=dict)
    key_metric: tuple = ("success_rate", None)  # (name, value) shown in COMPONENT RESULTS
    # What `loadgen compare` needs to judge each metric's noise (see noise_of); {} in older reports.
    noise: dict = field(default_factory=dict)
    # How the run's processes were contained and what it ended at its end (contain.Containment.to_dict)
    containment: dict = field(default_factory=dict)
    # accounting_anomaly events: a forked copy of a worker wrote its counters (the counts were clamped)
    accounting_anomalies: list = field(default_factory=list)

    @property
    def success_rate(self):
        """successful ÷ (successful + failed) operations (failed includes timeouts, crashes) — and, in the
        open model, ÷ the arrivals asked for: dropped ones count against it; 0.0 if none."""
        done = self.successful_operations + self.failed_operations
        if self.response_time_ms is not None:
            done += self.accounting.get("dropped", 0)
        return self.successful_operations / done if done else 0.0

    def to_dict(self):
        """Every field as plain data (``dataclasses.asdict``, a deep copy), as report.json's
        ``detailed_metrics`` holds it."""
        return asdict(self)


def core_metrics(acc, lat, *, throughput, peak_memory_mb, peak_cpu_percent, breaches, open_model=False):
    """The metrics every component has (``criteria.METRICS``): from its :class:`Accounting`, its latency
    summary ``lat`` (``Histogram.summary_ms()``), throughput, peaks and the number of breaches.

    In the open model (``open_model``) the verdict counts what was asked, as k6 counts
    ``dropped_iterations``: an arrival dropped for want of a free slot is a failure of the run, so
    ``success_rate`` and ``error_rate`` are over the arrivals (completed + dropped)."""
    done = acc.completed
    asked = done + (acc.dropped if open_model else 0)
    arrivals = acc.dispatched + acc.dropped
    return {
        "success_rate": acc.succeeded / asked if asked else None,
        "error_rate": (asked - acc.succeeded) / asked if asked else None,
        "dropped_rate": acc.dropped / arrivals if arrivals else 0.0,
        "throughput": throughput,
        "operations": done,
        **{f"{k}_ms": lat.get(k) for k in STATISTICS},
        "peak_memory_mb": peak_memory_mb,
        "peak_cpu_percent": peak_cpu_percent,
        "crashed": acc.crashed, "timed_out": acc.timed_out, "dropped": acc.dropped,
        "breaches": breaches,
    }


def metrics_of(outcome):
    """The criteria metrics of one run outcome (see ``criteria.METRICS``)."""
    series = outcome.memory_series
    m = core_metrics(outcome.accounting, outcome.latency_hist.summary_ms(), throughput=outcome.throughput,
                     peak_memory_mb=outcome.peak_memory_mb, peak_cpu_percent=outcome.peak_cpu_percent,
                     breaches=len(outcome.breaches), open_model=outcome.response is not None)
    m["memory_growth_mb"] = (series[-1][1] - series[0][1]) if len(series) >= 2 else 0.0
    m["thresholds_exceeded"] = len(outcome.exceeded)
    m.update(sustained_cpu(outcome))
    leak = outcome.leak or {}
    if leak.get("slope_mb_per_s") is not None:
        m["leak_slope_mb_per_s"] = leak["slope_mb_per_s"]
    if leak.get("leak") is not None:
        m["leak_detected"] = 1.0 if leak["leak"] else 0.0
    return m


def sustained_cpu(outcome):
    """Machine CPU over the seconds load was applied — ``cpu_median_percent`` and ``cpu_p90_percent``
    of the per-second means — or {} without such seconds. What a recommendation may call saturation:
    a peak is one second (often the start-up's), these are the load's."""
    start, end = outcome.load_started_at, outcome.load_ended_at or outcome.ended_at
    values = sorted(r["cpu_percent"] for r in outcome.seconds
                    if r.get("cpu_percent") is not None and start is not None and start <= r["t"] + 1 and r["t"] < end)
    if not values:
        return {}
    return {"cpu_median_percent": values[len(values) // 2], "cpu_p90_percent": values[min(len(values) - 1,
                                                                                       int(len(values) * 0.9))]}


def load_seconds(outcome):
    """The per-second records of the seconds load was applied, oldest first, without the first and
    the last (partial) ones — the seconds :func:`sustained_cpu` reads, trimmed."""
    start, end = outcome.load_started_at, outcome.load_ended_at or outcome.ended_at
    if start is None:
        return []
    rows = sorted((r for r in outcome.seconds if start <= r["t"] + 1 and r["t"] < end), key=lambda r: r["t"])
    return rows[1:-1]


def noise_of(outcome, recovery_time_seconds=None):
    """What a comparison needs to judge the noise of each metric of ``outcome`` (``StressTestResult.noise``):

    * ``throughput``: ``{n, mean, sd}`` of the per-second completed counts over :func:`load_seconds`;
    * ``p50_ms``, ``p90_ms``, ``p95_ms``, ``p99_ms``: ``{n, ci95: [lo, hi]}``, the percentile's 95 % interval from the
      latency histogram (order statistics, :func:`loadgen.analysis.noise.percentile_interval`);
    * ``success_rate``: ``{successes, trials}`` (trials: the arrivals in the open model, as ``core_metrics``);
    * ``peak_memory_mb``: ``{n, sd}`` of the per-second pool memory over the same seconds (its noise scale);
    * ``recovery_time_seconds``: ``{resolution_s: 1.0}`` (recovery is detected on whole seconds).

    A metric without enough data (fewer than two loaded seconds, no latency) is left out."""
    from .analysis.noise import percentile_noise, series_noise

    out = {}
    seconds = load_seconds(outcome)
    tp = series_noise([r.get("throughput") for r in seconds])
    if tp:
        out["throughput"] = tp
    out.update(percentile_noise(outcome.latency_hist))
    acc = outcome.accounting
    trials = acc.completed + (acc.dropped if outcome.response is not None else 0)
    if trials:
        out["success_rate"] = {"successes": acc.succeeded, "trials": trials}
    loaded = {r["t"] for r in seconds}
    mem = series_noise([v for t, v in outcome.memory_series if t in loaded])
    if mem:
        out["peak_memory_mb"] = {"n": mem["n"], "sd": mem["sd"]}
    if recovery_time_seconds is not None:
        out["recovery_time_seconds"] = {"resolution_s": 1.0}
    return out


def evaluate(criteria, metrics):
    """``(all_passed, [criterion dicts])``."""
    rows = [c.to_dict(metrics) for c in criteria]
    return all(r["passed"] for r in rows), rows


def result_from_outcome(name, outcome, criteria, extra_metrics=None, key_metric="success_rate",
                        breaking_point_reached=False, recovery_time_seconds=None):
    """Build the component result of a scenario whose main measurement is ``outcome``."""
    metrics = metrics_of(outcome)
    metrics.update(count_metrics(outcome.checks, outcome.load_duration_s))
    metrics.update(extra_metrics or {})
    measures_ms = {k: h.summary_ms() for k, h in sorted(outcome.measures.items())}
    ops = {op.name: outcome.ops.get(op.name, OpTally()).summary(op, outcome.load_duration_s)
           for op in outcome.plan.target.mix}
    passed, rows = evaluate(criteria, metrics | named_metrics(measures_ms, outcome.checks) | op_metrics(ops))
    acc = outcome.accounting
    if not acc.succeeded:  # a run that did not do what was asked never passes, whatever its criteria
        passed = False
    errors = outcome.errors.to_dict()
    messages = [f"{k} ×{n}" for k, n in list(errors.items())[:10]]
    if outcome.stop_reason and outcome.exit_code not in (0,):
        messages.insert(0, f"stopped: {outcome.stop_reason}")
    if not acc.succeeded:
        messages.insert(0, NONE_SUCCEEDED if acc.completed else NOTHING_RAN)
    for c in outcome.crashes[:5]:
        messages.append(f"worker {c['worker']} died with {c['exit']} ({c['hint']})")
    if outcome.loop_stalls:
        st = outcome.loop_stalls
        messages.append(f"loop stalls: {st['count']} (longest {st['max_ms']:g} ms): an operation blocked the event "
                        "loop (time.sleep, CPU or blocking I/O in an async def target); every operation in flight waited")
    for a in outcome.anomalies[:5]:
        messages.append(f"accounting: worker {a['worker']}'s counters show {a['excess']} more operations ended "
                        f"than started (a forked copy wrote them); counts clamped")
    return StressTestResult(
        test_name=name,
        success=passed and outcome.exit_code == ExitCode.OK,
        duration_seconds=round(outcome.duration_s, 3),
        max_concurrent_operations=outcome.peak_in_flight,
        peak_memory_mb=round(outcome.peak_memory_mb, 1),
        peak_cpu_percent=round(outcome.peak_cpu_percent, 1),
        total_operations=acc.dispatched,
        successful_operations=acc.succeeded,
        failed_operations=acc.failed + acc.timed_out + acc.crashed,
        throughput_ops_per_sec=round(outcome.throughput, 3),
        error_messages=messages,
        performance_metrics={k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()},
        breaking_point_reached=breaking_point_reached,
        recovery_time_seconds=recovery_time_seconds,
        criteria=rows,
        accounting=acc.to_dict(),
        latency_ms=outcome.latency_hist.summary_ms(),
        service_time_ms=outcome.latency.summary_ms(),
        response_time_ms=outcome.response.summary_ms() if outcome.response is not None else None,
        start_lateness_ms=outcome.lateness.summary_ms() if outcome.lateness is not None else None,
        measures_ms=measures_ms,
        checks=checks_summary(outcome.checks),
        ops=ops,
        loop_stalls=dict(outcome.loop_stalls),
        breaches=list(outcome.breaches),
        thresholds_exceeded=list(outcome.exceeded),
        resource_exhaustion_detected=bool(outcome.breaches or outcome.exceeded),
        stop_reason=outcome.stop_reason,
        exit_code=outcome.exit_code,
        leak=dict(outcome.leak or {}),
        histograms={"latency": outcome.latency_hist.to_payload(), "service": outcome.latency.to_payload(),
                    **{f"{MEASURE_PREFIX}{k}": h.to_payload() for k, h in outcome.measures.items()},
                    **{f"{OP_PREFIX}{k}": t.latency.to_payload() for k, t in outcome.ops.items()}},
        errors=errors,
        tracebacks=dict(list(outcome.tracebacks.items())[:20]),
        key_metric=(key_metric, metrics.get(key_metric)),
        noise=noise_of(outcome, recovery_time_seconds),
        containment=dict(outcome.containment),
        accounting_anomalies=list(outcome.anomalies),
    )

"""Open model: exact arrival counts, dropped counting, coordinated-omission correction."""

import json

import numpy as np
import pytest

from loadgen.config import ResourceThresholds, parse_stages
from loadgen.engine.load import RunPlan
from loadgen.engine.runner import Runner
from loadgen.workload.targets import TargetSpec

FREE = ResourceThresholds(max_cpu_percent=100, max_concurrent_operations=200)


def test_constant_rate_starts_exactly_the_scheduled_arrivals(tmp_path):
    p = RunPlan(rate=200, duration_s=2.0, workers=2, slots=2, target=TargetSpec(ref="_targets:noop"))
    out = Runner(p, FREE, run_dir=str(tmp_path)).run()
    acc = out.accounting
    assert acc.dispatched + acc.dropped == 400
    assert acc.adds_up() and acc.dropped == 0
    assert out.response.count == out.latency.count == 400
    lines = [json.loads(x) for x in open(tmp_path / "timeseries.jsonl")]
    assert any(r.get("target") == 200.0 for r in lines)
    assert all("response_ms" in r for r in lines if r["ops"])


def test_busy_slots_drop_arrivals_and_count_them():
    # 2 slots, each operation 200 ms, 50 arrivals/s: at most ~10/s can start; the rest are dropped.
    p = RunPlan(rate=50, duration_s=2.0, workers=2, slots=1, max_lateness_s=0.05,
                target=TargetSpec(ref="_targets:sleep_ms", kwargs={"ms": 200}))
    out = Runner(p, FREE).run()
    acc = out.accounting
    assert acc.dispatched + acc.dropped == 100
    assert acc.dropped >= 60
    assert acc.adds_up()


def test_stages_ramp_the_rate():
    p = RunPlan(rate=0.0, stages=tuple(parse_stages("1s:100,1s:100")), workers=2, slots=2,
                target=TargetSpec(ref="_targets:noop"))
    out = Runner(p, FREE).run()
    # Λ = 50 (ramp 0→100 over 1 s) + 100 (1 s at 100)
    assert out.accounting.dispatched + out.accounting.dropped == 150


def _true_latencies_ms(arrivals_s, period_s, stall_s, service_ms):
    """Latency each arrival would see if started on time: wait out a stall, then the service."""
    phase = np.mod(arrivals_s, period_s)
    wait = np.where(phase < stall_s, stall_s - phase, 0.0)
    return (wait * 1000) + service_ms


def test_response_time_shows_a_stall_that_service_time_hides():
    # Stalls of 0.3 s every 1 s. Enough slots that arrivals during a stall start on time.
    period, stall = 1.0, 0.3
    p = RunPlan(rate=100, duration_s=4.0, workers=2, slots=40,
                target=TargetSpec(ref="_targets:stall_every", kwargs={"period_s": period, "stall_s": stall, "ms": 1}))
    out = Runner(p, FREE).run()
    resp = out.response.summary_ms()
    # Truth from the schedule: 30% of arrivals fall in a stall, waiting uniformly 0–300 ms.
    arrivals = np.arange(0, 4.0, 0.01) + 0.37  # the phase offset of the run does not matter for quantiles
    true = _true_latencies_ms(arrivals, period, stall, 1.2)
    true_p90 = float(np.percentile(true, 90))
    assert resp["p90"] == pytest.approx(true_p90, rel=0.25)
    assert out.accounting.dropped == 0


def test_the_circuit_breaker_guards_open_model_arrivals_too():
    """An open breaker refuses arrivals at their due time (counted as rejected, never run), as it
    refuses the closed model's calls: a failing upstream is not hammered at the full rate."""
    from loadgen.workload.breaker import BreakerConfig

    p = RunPlan(rate=100, duration_s=2.0, workers=1, slots=2, target=TargetSpec(ref="_targets:fail_always"),
                breaker=BreakerConfig(failure_threshold=3, recovery_timeout_s=0.5))
    out = Runner(p, FREE).run()
    acc = out.accounting
    assert acc.dispatched + acc.dropped + acc.rejected == 200  # every arrival ended one way
    assert acc.rejected > 100 and acc.failed == acc.dispatched < 50  # refused while open; probes fail
    assert acc.adds_up()
    assert any(e["state"] == "open" for e in out.breaker_events)

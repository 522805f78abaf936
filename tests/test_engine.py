"""Integration tests with real processes: closed model, accounting, the crash table,
op timeout, restart limit. Run under fork and spawn."""

import json
import os

import pytest

from loadgen.config import ResourceThresholds
from loadgen.engine.load import RunPlan
from loadgen.engine.runner import Runner as _Runner
from loadgen.workload.targets import TargetSpec

START_METHODS = ["fork", "spawn"]
# The machine-wide CPU guard is off here: these tests are about the engine, and other
# load on a shared machine must not stop them (the monitor's own tests cover the guard).
NO_CPU_GUARD = ResourceThresholds(max_cpu_percent=100)


def Runner(plan, thresholds=NO_CPU_GUARD, **kw):
    return _Runner(plan, thresholds, **kw)


def plan(ref=None, start_method="fork", **kw):
    kw.setdefault("duration_s", 2.0)
    kwargs = kw.pop("kwargs", {})
    flow_params = kw.pop("flow_params", {})
    return RunPlan(target=TargetSpec(ref=ref, kwargs=kwargs, flow_params=flow_params, seed=1),
                   start_method=start_method, sample_interval_s=0.05, **kw)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_closed_model_keeps_exactly_concurrency_in_flight(tmp_path, start_method):
    out = Runner(plan("_targets:sleep_ms", start_method, concurrency=7, workers=2, duration_s=3.0,
                      kwargs={"ms": 20}), run_dir=str(tmp_path)).run()
    assert out.exit_code == 0, out.stop_reason
    assert out.accounting.adds_up()
    assert out.peak_in_flight == 7
    lines = [json.loads(x) for x in open(tmp_path / "timeseries.jsonl")]
    full = [r for r in lines if r["ops"] and r["in_flight"]]
    assert full and max(r["in_flight"] for r in full) == 7
    # 7 slots × 20 ms ≈ 350 ops/s; anything near proves concurrency, not serial execution.
    assert out.throughput > 200


def test_operations_bound_is_exact(tmp_path):
    out = Runner(plan("_targets:sleep_ms", concurrency=5, workers=2, duration_s=None, operations=137,
                      kwargs={"ms": 2}), run_dir=str(tmp_path)).run()
    assert out.stop_reason == "operations done"
    assert out.accounting.dispatched == 137 and out.accounting.succeeded == 137
    assert out.latency.count == 137


def test_embedded_flow_failures_are_counted_by_stage(tmp_path):
    out = Runner(plan(None, concurrency=10, duration_s=None, operations=60,
                      flow_params={"failure_rate": "0.5", "processing_time_base": "0.02"}),
                 run_dir=str(tmp_path)).run()
    acc = out.accounting
    assert acc.adds_up() and acc.dispatched == 60 and 10 < acc.failed < 50
    assert sum(out.errors.to_dict().values()) == acc.failed
    assert all(":" in k for k in out.errors.to_dict())  # "stage: reason"
    assert set(out.stages) >= {"input_validation", "research", "quality_check"}


CRASHES = [
    # how, crashed, timed_out, failed, exit words
    ("raise", 0, 0, 1, None),
    ("sys_exit", 1, 0, 0, "exit code 7"),
    ("os_exit", 1, 0, 0, "exit code 9"),
    ("sigkill", 1, 0, 0, "SIGKILL"),
    ("segfault", 1, 0, 0, "SIGSEGV"),
    ("hang", 0, 1, 0, "SIGKILL"),
]


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("how,crashed,timed_out,failed,words", CRASHES, ids=[c[0] for c in CRASHES])
def test_crash_table(tmp_path, start_method, how, crashed, timed_out, failed, words):
    marker = str(tmp_path / "marker")
    # One slot per worker: the faulting operation is the only one in flight in its worker.
    out = Runner(plan("_targets:fault_once", start_method, concurrency=2, workers=2, slots=1,
                      duration_s=2.5, op_timeout_s=0.8, kwargs={"how": how, "marker": marker, "ms": 5}),
                 run_dir=str(tmp_path)).run()
    acc = out.accounting
    assert acc.adds_up(), acc
    assert (acc.crashed, acc.timed_out, acc.failed) == (crashed, timed_out, failed)
    assert acc.succeeded > 50  # the run went on after the fault
    assert out.exit_code == 0
    events = [json.loads(x) for x in open(tmp_path / "events.jsonl")]
    crashes = [e for e in events if e["type"] == "worker_crash"]
    if words is None:
        assert not crashes
    else:
        assert len(crashes) == 1 and words in crashes[0]["exit"]
        assert crashes[0]["worker"] in (0, 1) and crashes[0]["pid"] > 0
    if how == "hang":
        assert any(e["type"] == "timeout" for e in events)


def test_restart_limit_stops_the_run(tmp_path):
    out = Runner(plan("_targets:crash_always", concurrency=2, workers=2, slots=1, duration_s=20,
                      max_restarts=3), run_dir=str(tmp_path)).run()
    assert out.exit_code == 1
    assert "restart limit (3)" in out.stop_reason
    assert out.accounting.adds_up() and out.accounting.crashed >= 4
    assert out.duration_s < 15


def test_factory_that_fails_in_every_worker_is_a_usage_stop(tmp_path):
    p = RunPlan(target=TargetSpec(ref="_broken_in_worker:make", factory=True), concurrency=2, workers=2,
                duration_s=5)
    out = Runner(p, run_dir=str(tmp_path)).run()
    assert out.exit_code == 2 and "no worker could start" in out.stop_reason
    assert "ConnectionRefusedError" in out.stop_reason
    events = [json.loads(x) for x in open(tmp_path / "events.jsonl")]
    assert len([e for e in events if e["type"] == "worker_error"]) == 2  # reported once per worker


def test_noisy_target_does_not_block_or_corrupt_streams(tmp_path):
    out = Runner(plan("_targets:noisy", concurrency=2, workers=2, duration_s=2.0, kwargs={"lines": 500}),
                 run_dir=str(tmp_path)).run()
    assert out.accounting.succeeded > 20
    for name in ("timeseries.jsonl", "events.jsonl"):
        for line in open(tmp_path / name):
            json.loads(line)
    assert os.path.getsize(tmp_path / "workers.log") > 100_000

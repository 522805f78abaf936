"""Integration tests with real processes: closed model, accounting, the embedded flow's failures, a
factory that fails in every worker, noisy targets. Run under fork and spawn. (The crash table and the
restart limit: ``tests/faults/test_crash_table.py``.)"""

import json
import os

import pytest

from _helpers import START_METHODS, Runner, plan
from loadgen.engine.load import RunPlan
from loadgen.workload.targets import TargetSpec


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
    assert set(out.measures) >= {"input_validation", "research", "quality_check"}


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

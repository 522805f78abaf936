"""User targets in real runs: per-worker factories, input records (cycle and once), async targets."""

import json

import pytest

from loadgen.config import ResourceThresholds
from loadgen.engine.load import RunPlan
from loadgen.engine.runner import Runner
from loadgen.workload.targets import TargetSpec


FREE = ResourceThresholds(max_cpu_percent=100)


def _records(tmp_path, n):
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))
    return str(p)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_once_mode_uses_every_record_exactly_once_and_ends_the_run(tmp_path, start_method):
    seen = tmp_path / "seen.txt"
    spec = TargetSpec(ref="_targets:echo_record", kwargs={"path": str(seen)}, inputs=_records(tmp_path, 157),
                      inputs_mode="once")
    out = Runner(RunPlan(concurrency=4, workers=2, duration_s=30, target=spec, start_method=start_method),
                 FREE).run()
    got = sorted(json.loads(x)["i"] for x in seen.read_text().splitlines())
    assert got == list(range(157))
    assert out.stop_reason == "inputs exhausted"
    assert out.accounting.dispatched == 157 and out.duration_s < 20


def test_cycle_mode_goes_round(tmp_path):
    seen = tmp_path / "seen.txt"
    spec = TargetSpec(ref="_targets:echo_record", kwargs={"path": str(seen)}, inputs=_records(tmp_path, 5))
    Runner(RunPlan(concurrency=2, workers=2, duration_s=None, operations=40, target=spec), FREE).run()
    got = [json.loads(x)["i"] for x in seen.read_text().splitlines()]
    assert len(got) == 40 and set(got) == set(range(5))


def test_factory_builds_once_per_worker(tmp_path):
    builds = tmp_path / "builds.txt"
    spec = TargetSpec(ref="_targets:make_client", factory=True, kwargs={"path": str(builds)})
    out = Runner(RunPlan(concurrency=6, workers=2, duration_s=1.5, target=spec), FREE).run()
    assert out.accounting.succeeded > 100
    assert len(builds.read_text().split()) == 2  # once per worker, not per call


def test_async_target_and_exceptions_classified_with_tracebacks(tmp_path):
    spec = TargetSpec(ref="_targets:async_sleep", kwargs={"ms": 2, "fail_every": 4},
                      inputs=_records(tmp_path, 40), inputs_mode="once")
    out = Runner(RunPlan(concurrency=4, workers=2, duration_s=20, target=spec), FREE).run()
    acc = out.accounting
    assert acc.dispatched == 40 and acc.failed == 10 and acc.succeeded == 30  # i = 0, 4, …, 36 fail
    assert out.errors.to_dict() == {"KeyError": 10}
    tbs = out.tracebacks["KeyError"]
    assert 1 <= len(tbs) <= 3 and all("async_sleep" in tb and "KeyError" in tb for tb in tbs)

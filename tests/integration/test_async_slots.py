"""Async slots: an ``async def`` target runs as coroutines on one event loop per worker — thousands in
flight, exact accounting, timeouts by cancellation, loop stalls named, the open model, the async flow."""

import json

import pytest

FREE = ["--max-cpu-percent", "100", "--quiet"]


def _component(tmp_path, out="r"):
    report = json.loads((tmp_path / out / "report.json").read_text())
    (d,) = report["detailed_metrics"]
    return d, [json.loads(x) for x in (tmp_path / out / "events.jsonl").read_text().splitlines()]


def test_five_thousand_in_flight_with_exact_accounting(cli, tmp_path):
    code, out, err = cli.run("run", "--target", "_targets:asleep", "--target-arg", "ms=500", "--concurrency", "5000",
                             "--max-concurrent-operations", "5000", "--workers", "2", "--duration", "3s",
                             "--out", "r", *FREE)
    assert code == 0, err
    d, events = _component(tmp_path)
    acc = d["accounting"]
    assert acc["dispatched"] == acc["succeeded"] > 5000 * 2 and acc["failed"] == acc["crashed"] == 0
    assert d["max_concurrent_operations"] >= 4900  # sampled
    assert 500 <= d["latency_ms"]["p50"] < 700
    start = next(e for e in events if e.get("name") == "pool_start")
    assert (start["workers"], start["slots"]) == (2, 2500)  # coroutines, not threads
    assert not d["loop_stalls"]


@pytest.mark.parametrize("target, args, expect", [
    ("afail", [], "failed"),
    ("ahang", ["--op-timeout", "0.4s"], "cancelled"),
    ("ahang", ["--op-timeout", "0.4s", "--target-arg", "ignore_cancel=true"], "replaced"),
    ("ablock", ["--target-arg", "ms=250"], "stall"),
])
def test_async_crash_table(cli, tmp_path, target, args, expect):
    code, out, err = cli.run("run", "--target", f"_targets:{target}", "--concurrency", "4", "--workers", "1",
                             "--duration", "1.5s", *args, "--out", "r", *FREE)
    d, events = _component(tmp_path)
    acc = d["accounting"]
    assert acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"] > 0
    kills = [e for e in events if e.get("type") == "timeout"]
    if expect == "failed":
        assert acc["failed"] == acc["dispatched"] and set(d["errors"]) == {"ValueError"}
        assert "async failure" in d["tracebacks"]["ValueError"][0]
        # The storm's loop thread never starves the worker's main thread: it stops within the drain
        # grace, not killed with an operation lost in flight.
        assert not [e for e in events if e.get("type") == "worker_killed"]
    elif expect == "cancelled":  # cancelled at its timeout by the worker itself: no worker replaced
        assert acc["timed_out"] == acc["dispatched"] >= 4 and acc["crashed"] == 0 and not kills
        assert list(d["errors"]) == ["OpTimeout: cancelled after 0.4 s"]
    elif expect == "replaced":  # swallows the cancellation: the master replaces the worker
        assert kills and kills[0]["action"] == "worker killed and replaced"
        assert acc["timed_out"] >= 4 and acc["succeeded"] == 0
    else:
        assert acc["succeeded"] == acc["dispatched"] > 0
        assert d["loop_stalls"]["count"] >= 1 and d["loop_stalls"]["total_ms"] >= 500  # 2 s of blocked loop
        assert "Loop stalls in load:" in (tmp_path / "r" / "summary.txt").read_text()
    assert not cli.survivors()


def test_the_open_model_starts_each_arrival_as_a_task(cli, tmp_path):
    code, out, err = cli.run("run", "--target", "_targets:asleep", "--target-arg", "ms=200", "--rate", "1000",
                             "--max-concurrent-operations", "2000", "--duration", "3s", "--out", "r", *FREE)
    assert code == 0, err
    d, _ = _component(tmp_path)
    acc = d["accounting"]
    assert acc["dropped"] == 0 and acc["succeeded"] == acc["dispatched"] >= 2700
    assert 200 <= d["response_time_ms"]["p50"] < 260 and d["start_lateness_ms"]["p99"] < 100


def test_the_flow_runs_async_with_many_sessions_waiting(cli, tmp_path):
    code, out, err = cli.run("run", "load", "--flow-param", "async_io=true", "--concurrency", "400",
                             "--max-concurrent-operations", "400", "--duration", "3s", "--out", "r", *FREE)
    assert code == 0, err
    d, events = _component(tmp_path)
    acc = d["accounting"]
    assert acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"] > 400
    assert d["max_concurrent_operations"] >= 360  # sampled: between two of its operations a session is not in flight
    assert {"research", "draft_generation"} <= set(d["measures_ms"])
    start = next(e for e in events if e.get("name") == "pool_start")
    assert start["slots"] == 200


def test_sync_targets_keep_threads_within_a_bound(cli, tmp_path):
    code, out, err = cli.run("run", "--target", "_targets:sleep_ms", "--slots", "1500", "--duration", "1s",
                             "--max-concurrent-operations", "5000", "--out", "r")
    assert code == 2 and "at most 1000 a worker" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_inputs_and_the_breaker_work_on_async_slots(tmp_path):
    """Each record reaches exactly one operation (once mode), and an open breaker refuses calls fast —
    closed and open model — as on thread slots."""
    from _helpers import Runner
    from loadgen.config import ResourceThresholds
    from loadgen.engine.load import RunPlan
    from loadgen.workload.breaker import BreakerConfig
    from loadgen.workload.targets import TargetSpec

    free = ResourceThresholds(max_cpu_percent=100, max_concurrent_operations=1000)
    recs = tmp_path / "recs.jsonl"
    recs.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(3000)))
    seen = tmp_path / "seen.jsonl"
    out = Runner(RunPlan(concurrency=200, workers=2, duration_s=20.0, target=TargetSpec(
        ref="_targets:aecho_record", kwargs={"path": str(seen)}, inputs=str(recs), inputs_mode="once")), free).run()
    assert out.stop_reason == "inputs exhausted" and out.accounting.succeeded == 3000
    assert sorted(json.loads(x)["i"] for x in seen.read_text().splitlines()) == list(range(3000))
    for model in ({"concurrency": 4}, {"rate": 100}):
        out = Runner(RunPlan(**model, workers=1, slots=4, duration_s=2.0, target=TargetSpec(ref="_targets:afail"),
                             breaker=BreakerConfig(failure_threshold=3, recovery_timeout_s=0.5)), free).run()
        acc = out.accounting
        assert acc.adds_up() and acc.rejected > 50 and acc.failed == acc.dispatched < 50, (model, acc)
        assert any(e["state"] == "open" for e in out.breaker_events)

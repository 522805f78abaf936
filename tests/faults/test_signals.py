"""The master's life and death, through the real CLI: no orphans, interrupted runs keep their reports."""

import json
import signal
import time

import pytest

from _helpers import wait_for

RUN = ["run", "concurrent_load", "--duration", "60s", "--seed", "3", "--max-cpu-percent", "100", "--out", "out"]


def _wait_for_load(cli, tmp_path, workers=2, timeout=30):
    """Until the load phase has written a second of timeseries (workers running)."""
    def loaded():
        ts = tmp_path / "out" / "timeseries.jsonl"
        if not ts.exists():
            return False
        return any(json.loads(x).get("phase") == "concurrent_load" for x in ts.read_text().splitlines()
                   if x.strip())
    assert wait_for(loaded, timeout), "load phase never started"
    procs = cli.survivors()
    titles = {" ".join(p.cmdline()) for p in procs}
    assert any("loadgen: worker" in t for t in titles), titles
    assert any("loadgen: monitor" in t for t in titles), titles


def _valid_jsonl(path):
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    assert lines
    return lines


def test_sigkill_of_master_leaves_no_orphans(cli, tmp_path):
    p = cli.start(*RUN)
    _wait_for_load(cli, tmp_path)
    p.kill()
    p.wait(5)
    gone = wait_for(lambda: not cli.survivors(), timeout=2.0, step=0.05)
    assert gone, [(x.pid, x.cmdline()) for x in cli.survivors()]
    # Everything flushed before the kill is still there, parseable.
    lines = _valid_jsonl(tmp_path / "out" / "timeseries.jsonl")
    assert all("t" in r and "ops" in r for r in lines)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_gracefully_with_a_complete_report(cli, tmp_path, sig, code):
    p = cli.start(*RUN)
    _wait_for_load(cli, tmp_path)
    sent = time.monotonic()
    p.send_signal(sig)
    out, err = p.communicate(timeout=30)
    assert p.returncode == code, err
    assert time.monotonic() - sent < 10
    assert "Traceback" not in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["exit_code"] == code
    acc = report["accounting"]
    assert acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"]
    assert acc["succeeded"] > 0
    events = _valid_jsonl(tmp_path / "out" / "events.jsonl")
    assert any(e["type"] == "phase" and e.get("name") == "stop" and "interrupted" in e["reason"] for e in events)
    assert (tmp_path / "out" / "summary.txt").exists()
    assert wait_for(lambda: not cli.survivors(), timeout=2.0)


def test_second_sigint_kills_at_once_and_streams_stay_valid(cli, tmp_path):
    # Operations that ignore the drain: each sleeps 60 s, so only the second SIGINT can end the run fast.
    p = cli.start("run", "concurrent_load", "--duration", "60s", "--target", "_targets:sleep_ms",
                  "--target-arg", "ms=60000", "--max-cpu-percent", "100", "--out", "out", "--concurrency", "4")
    assert wait_for(lambda: any("loadgen: worker" in " ".join(x.cmdline()) for x in cli.survivors()), 20)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert p.poll() is None  # draining: the operations are still running
    sent = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=15)
    assert time.monotonic() - sent < 3.0
    assert p.returncode == 130, err
    assert "Traceback" not in err
    _valid_jsonl(tmp_path / "out" / "events.jsonl")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    acc = report["accounting"]
    assert acc["crashed"] >= 1  # killed in flight, counted, not lost
    assert acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"]
    assert wait_for(lambda: not cli.survivors(), timeout=2.0)


def test_sigterm_during_a_large_pools_start_is_acted_on_within_a_second(cli, tmp_path, monkeypatch):
    # 300 spawned workers take many seconds to start on two cores: the signal lands mid-start.
    monkeypatch.setenv("LOADGEN_START_METHOD", "spawn")
    p = cli.start("run", "sustained_load", "--workers", "300", "--concurrency", "300", "--max-concurrent-operations",
                  "300", "--duration", "60s", "--max-cpu-percent", "100", "--quiet", "--out", "out")
    events = tmp_path / "out" / "events.jsonl"
    assert wait_for(lambda: events.exists() and '"start"' in events.read_text(), timeout=30)
    time.sleep(0.5)
    sent = time.time()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    ev = _valid_jsonl(events)
    pool = next(e for e in ev if e.get("name") == "pool_start")
    stop = next(e for e in ev if e.get("name") == "stop")
    assert pool["started"] < 300  # no more workers were started after the signal
    assert stop["t"] - sent < 1.0
    assert (tmp_path / "out" / "report.json").exists()

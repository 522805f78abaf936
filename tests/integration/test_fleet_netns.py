"""Fleets on separate network stacks (tests/_netns.py): a Dask scheduler on the host and one Dask
worker in each of three network namespaces on a private bridge, like three load-test machines behind
their own NICs. Real fleet runs across them, and faults on the wire: a partitioned shard, a killed
shard worker, a killed scheduler, a slow link. Root on Linux only (skipped, with the reason, elsewhere);
everything the module made is torn down by its fixture whatever happens.
"""

import json
import os
import signal
import threading
import time

import pytest

from _helpers import TESTS
from _helpers import run_main as _main
from _reaping import check_and_reap, cmdline
from loadgen.errors import ExitCode
from loadgen.streams import read_jsonl

pytestmark = pytest.mark.slow

SLEEP = os.path.join(TESTS, "_targets.py") + ":sleep_ms"
STACKS = 3
SILENCE = 3.0  # --silence-limit of these runs: a partition is found (and a cut-off shard stops) this fast


@pytest.fixture(scope="module")
def net():
    pytest.importorskip("distributed", reason="fleet mode needs Dask distributed (pip install '.[distributed]')")
    from _netns import NetFleet, netns_or_skip

    netns_or_skip()
    with NetFleet(STACKS) as fleet:
        fleet.start_scheduler()
        fleet.start_workers()
        fleet.wait_for_workers(STACKS)
        yield fleet


def _harness_pids(net):
    pids = {p.pid for ps in net.workers.values() for p in ps}
    if net.scheduler_proc is not None:
        pids.add(net.scheduler_proc.pid)
    return pids


@pytest.fixture(autouse=True)
def reap_children(net):
    """conftest's strict reaper, minus the harness's scheduler and Dask workers (they live for the module);
    a shard's pool and monitor get 8 s to end with their run, else the test fails."""
    yield
    keep = _harness_pids(net)
    found = check_and_reap(exclude=lambda c: c.pid in keep or "distributed.cli.dask" in cmdline(c), settle_s=8.0)
    if found:
        pytest.fail("left behind (killed now):\n  " + "\n  ".join(found), pytrace=False)


def _left_in_stacks(net, timeout=10.0):
    """Processes in the namespaces other than the Dask workers, after up to ``timeout`` s for them to end."""
    import re

    deadline = time.monotonic() + timeout
    while True:
        keep = _harness_pids(net)
        left = [d for d in net.processes_left() if int(re.search(r"pid (\d+):", d).group(1)) not in keep]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.25)


def _run(net, out, *flags, duration="2s", concurrency=6):
    return _main(["run", "load", "--target", SLEEP, "--target-arg", "ms=5", "--concurrency", str(concurrency),
                  "--duration", duration, "--workers", "1", "--max-cpu-percent", "100", "--shards", str(STACKS),
                  "--silence-limit", f"{SILENCE:g}s", "--cluster", net.scheduler_address, "--out", str(out),
                  "--quiet", *flags])


def _run_with_fault(net, out, shard, fault, duration):
    """A fleet run (``_run``) during which ``fault()`` is called once shard ``shard``'s own timeseries
    has two seconds with load; returns (exit code, stderr, time.time() of the fault or None)."""
    series = out / "shards" / str(shard) / "timeseries.jsonl"
    done = {}

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if series.exists():
                busy = [ln for ln in series.read_text().splitlines() if ln and json.loads(ln).get("throughput")]
                if len(busy) >= 2:
                    done["at"] = time.time()
                    fault()
                    return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        code, _, err = _run(net, out, duration=duration)
    finally:
        t.join(1)
    return code, err, done.get("at")


def _adds_up(acc):
    return acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"] + acc["lost"]


def test_cold_workers_start_together_and_nothing_crosses_runs(net, tmp_path):
    """The first run meets cold workers (loadgen, numpy not yet imported): the start waits for every
    pool, so no shard starts late. A second run on the same long-lived workers, other settings: nothing
    of the first (warnings, figures, shares, events) appears in it."""
    code, _, err = _run(net, tmp_path / "one", "--seed", "1", duration="1s")
    assert code == 0, err
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    fleet = one["fleet"]
    assert [s["status"] for s in fleet["shards"]] == ["finished"] * STACKS
    assert sorted(s["host"] for s in fleet["shards"]) and len({s["worker"] for s in fleet["shards"]}) == STACKS
    assert not [w for w in fleet["warnings"] if "after the agreed instant" in w]
    events = read_jsonl(str(tmp_path / "one" / "events.jsonl"))
    start = next(e for e in events if e["type"] == "fleet" and e["name"] == "start")
    assert len(start["ready"]) == STACKS and all(v < 0 for v in start["ready"].values())  # all ready before it
    for s in fleet["shards"]:  # every pool began its load at the instant, none before it
        assert s["late_ms"] is not None and s["late_ms"] >= 0

    code, _, err = _run(net, tmp_path / "two", "--seed", "2", "--target-arg", "ms=2", duration="1s", concurrency=3)
    assert code == 0, err
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert two["fleet"]["run_id"] != fleet["run_id"]
    assert [s["share"]["mine"] for s in two["fleet"]["shards"]] == [1, 1, 1]
    assert not [w for w in two["fleet"]["warnings"] if "after the agreed instant" in w]
    assert {e.get("run_id") for e in read_jsonl(str(tmp_path / "two" / "events.jsonl"))
            if e["type"] == "fleet" and e.get("run_id")} == {two["fleet"]["run_id"]}
    shard_reports = [json.loads((tmp_path / "two" / "shards" / str(i) / "report.json").read_text())
                     for i in range(STACKS)]
    assert two["accounting"]["dispatched"] == sum(r["accounting"]["dispatched"] for r in shard_reports)
    assert two["latency_ms"]["p50"] < one["latency_ms"]["p50"]  # 2 ms operations, not the first run's 5 ms
    assert _left_in_stacks(net) == []


def test_partitioned_shard_is_lost_within_the_silence_limit_and_nothing_is_unaccounted(net, tmp_path):
    """Stack 2's link goes down mid-run: the master loses its shard within --silence-limit + 2 s, the
    others finish, its streamed operations count as lost (the totals add up), exit 4; the cut-off
    shard stops its own load; `loadgen report` afterwards merges its own whole record: 0 unaccounted."""
    out = tmp_path / "fleet"
    try:
        code, err, cut = _run_with_fault(net, out, 2, lambda: net.link_down(2), "7s")
    finally:
        net.link_up(2)
    assert code == ExitCode.DEGRADED, err
    report = json.loads((out / "report.json").read_text())
    shards = report["fleet"]["shards"]
    assert [s["status"] for s in shards] == ["finished", "finished", "lost"]
    assert "silent for" in shards[2]["reason"]
    lost_at = next(e["t"] for e in read_jsonl(str(out / "events.jsonl")) if e.get("name") == "shard_lost")
    assert cut is not None and SILENCE - 1.0 <= lost_at - cut <= SILENCE + 2.0
    acc = report["accounting"]
    assert acc["lost"] == shards[2]["lost_operations"] > 0 and _adds_up(acc)
    own = [json.loads((out / "shards" / str(i) / "report.json").read_text()) for i in (0, 1)]
    assert acc["dispatched"] == sum(r["accounting"]["dispatched"] for r in own) + acc["lost"]
    assert sum(1 for ln in read_jsonl(str(out / "timeseries.jsonl")) if "2" in ln["per_shard"]) >= 2
    # The cut-off shard stopped on its own (it could not reach the scheduler) and wrote its report.
    assert _left_in_stacks(net, timeout=SILENCE + 10) == []
    mine = json.loads((out / "shards" / "2" / "report.json").read_text())
    assert "could not reach the Dask scheduler" in mine["detailed_metrics"][0]["stop_reason"]
    code, stdout, err = _main(["report", str(out)])
    assert code == 0, err
    rebuilt = json.loads((out / "report.json").read_text())
    racc = rebuilt["accounting"]
    assert racc["lost"] == 0 and _adds_up(racc)
    assert racc["dispatched"] == sum(r["accounting"]["dispatched"] for r in own + [mine])
    assert racc["dispatched"] >= acc["dispatched"]


def test_killed_shard_worker_is_lost_and_leaves_nothing(net, tmp_path):
    from _netns import _ns_pids

    out = tmp_path / "fleet"
    victim = net.workers[1][-1]
    try:
        code, err, _ = _run_with_fault(net, out, 1, lambda: os.kill(victim.pid, signal.SIGKILL), "4s")
    finally:
        victim.wait(10)
    try:
        assert code == ExitCode.DEGRADED, err
        report = json.loads((out / "report.json").read_text())
        shards = report["fleet"]["shards"]
        assert [s["status"] for s in shards] == ["finished", "lost", "finished"]
        assert "left the cluster" in shards[1]["reason"] or "silent" in shards[1]["reason"]
        assert report["accounting"]["lost"] == shards[1]["lost_operations"] > 0 and _adds_up(report["accounting"])
        deadline = time.monotonic() + 10
        while _ns_pids(net.names[1]) and time.monotonic() < deadline:  # its pool dies with it (PDEATHSIG)
            time.sleep(0.2)
        assert _ns_pids(net.names[1]) == []
    finally:
        net.start_worker(1)
        net.wait_for_workers(STACKS)


def test_slow_link_keeps_every_result(net, tmp_path):
    if not net.netem(0, delay_ms=40, loss_pct=1):
        pytest.skip("tc netem is not available on this kernel (sch_netem): no slow link to test")
    try:
        code, _, err = _run(net, tmp_path / "fleet", duration="3s")
    finally:
        net.clear_netem(0)
    assert code == 0, err
    report = json.loads((tmp_path / "fleet" / "report.json").read_text())
    assert [s["status"] for s in report["fleet"]["shards"]] == ["finished"] * STACKS
    assert report["fleet"]["shards"][0]["max_transport_delay_s"] >= 0.04
    assert _adds_up(report["accounting"])


def test_killed_scheduler_ends_the_run_with_every_shard_lost_and_no_process_left(net, tmp_path):
    """Last in the module: it takes the scheduler down. The master ends at once (every shard lost, their
    streamed seconds and operations kept, exit 4); each shard, cut off, stops its own load."""
    out = tmp_path / "fleet"
    sched = net.scheduler_proc
    t0 = time.time()
    try:
        code, err, cut = _run_with_fault(net, out, 0, lambda: os.kill(sched.pid, signal.SIGKILL), "30s")
    finally:
        sched.wait(10)
    assert code == ExitCode.DEGRADED, err
    assert time.time() - t0 < 25  # it did not run its 30 s
    ended = next(e["t"] for e in read_jsonl(str(out / "events.jsonl")) if e.get("name") == "end")
    assert cut is not None and ended - cut <= SILENCE + 2.0
    report = json.loads((out / "report.json").read_text())
    shards = report["fleet"]["shards"]
    assert [s["status"] for s in shards] == ["lost"] * STACKS
    assert all("scheduler" in s["reason"] for s in shards)
    assert all(s["seconds_streamed"] >= 1 for s in shards)
    assert report["accounting"]["lost"] == sum(s["lost_operations"] for s in shards) > 0
    assert _adds_up(report["accounting"])
    assert report["detailed_metrics"] and "lost" in (out / "summary.txt").read_text()
    # Every shard stops on its own; their Dask workers close when the scheduler is gone.
    deadline = time.monotonic() + SILENCE + 15
    while time.monotonic() < deadline and any(p.poll() is None for ps in net.workers.values() for p in ps[-1:]):
        left = _left_in_stacks(net, timeout=0)
        if not left:
            break
        time.sleep(0.5)
    assert _left_in_stacks(net, timeout=5) == []

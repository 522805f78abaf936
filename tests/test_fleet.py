"""Fleet runs on Dask distributed (fleet.py, _fleet_shard.py, _fleet_data.py).

Unit tests of the splitting, merging and rendering need no cluster. The
integration tests run a LocalCluster of two worker processes on 127.0.0.1
(never any other address) and skip when Dask distributed is not installed.
"""

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

from loadgen import cli
from loadgen.errors import ExitCode
from loadgen.fleet.merge import SecondMerger, Share, merge_component
from loadgen.config import ResourceThresholds, Stage
from loadgen.report import build_report, render_summary
from loadgen.report.fleet import fleet_junit_suite, render_fleet_text
from loadgen.result import StressTestResult
from loadgen.engine.load import RunPlan
from loadgen.measure.stats import Histogram

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
SLEEP = os.path.join(TESTS, "_targets.py") + ":sleep_ms"
XSD = os.path.join(TESTS, "data", "junit.xsd")


def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------- no cluster


def test_share_splits_every_kind_of_load():
    closed = RunPlan(concurrency=7, duration_s=1.0, operations=10,
                     stages=(Stage(1.0, 5.0), Stage(1.0, 0.0)))
    parts = [Share(i, 3).apply(closed) for i in range(3)]
    assert [p.concurrency for p in parts] == [3, 2, 2]
    assert [p.operations for p in parts] == [4, 3, 3]
    assert [[s.target for s in p.stages] for p in parts] == [[2, 0], [2, 0], [1, 0]]
    assert Share(0, 3).describe(closed) == {"model": "closed", "mine": 3, "total": 7, "fraction": round(3 / 7, 6)}
    opened = RunPlan(rate=10.0, duration_s=1.0, stages=(Stage(1.0, 30.0),))
    assert [Share(i, 4).apply(opened).rate for i in range(4)] == [2.5] * 4
    assert Share(1, 4).apply(opened).stages[0].target == 7.5
    assert Share(0, 1).apply(closed) is closed
    # fewer in flight than shards: each still runs one
    assert Share(2, 3).apply(RunPlan(concurrency=1, duration_s=1.0)).concurrency == 1


def _rec(t, ok, p99, phase="main", mem=10.0):
    return {"t": t, "phase": phase, "ops": ok, "succeeded": ok, "failed": 0, "dropped": 0, "rejected": 0,
            "throughput": ok, "in_flight": 2, "target": 2, "errors": 1,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99, "p999": p99, "max": p99},
            "cpu_percent": 40.0, "pool_memory_mb": mem}


def test_second_merger_waits_for_every_running_shard_then_for_grace():
    m = SecondMerger(grace_s=3.0)
    assert m.add(0, _rec(100, 10, 5.0), 0.1)
    assert m.ready(101.5, [0, 1]) == []  # shard 1 has not reported second 100
    assert m.add(1, _rec(100, 20, 9.0, mem=30.0), 0.2)
    assert not m.add(1, _rec(100, 20, 9.0))  # a backfilled duplicate
    [line] = m.ready(101.5, [0, 1])
    assert (line["t"], line["shards"], line["succeeded"], line["throughput"]) == (100, 2, 30, 30)
    assert line["errors"] == 2
    assert line["latency_ms"]["p99"] == 9.0  # the worst shard's: an upper bound
    assert line["pool_memory_mb"] == 30.0 and line["fleet_pool_memory_mb"] == 40.0
    assert set(line["per_shard"]) == {"0", "1"}
    assert not m.add(0, _rec(100, 1, 1.0))  # that second is written already
    m.add(0, _rec(101, 10, 5.0))
    assert m.ready(104.9, [0, 1]) == []
    assert [x["t"] for x in m.ready(105.1, [0, 1])] == [101]  # a silent shard holds nothing back for long


def _result(name, values_us, acc, criteria=(), breaches=(), code=0, peak_mb=50.0):
    h = Histogram()
    h.record_many(values_us)
    return StressTestResult(
        test_name=name, success=code == 0, duration_seconds=2.0, max_concurrent_operations=5,
        peak_memory_mb=peak_mb, peak_cpu_percent=30.0, total_operations=acc["dispatched"],
        successful_operations=acc["succeeded"], failed_operations=acc["failed"], throughput_ops_per_sec=100.0,
        performance_metrics={"max_capacity": 40.0 if peak_mb < 60 else 30.0},
        criteria=[dict(c) for c in criteria], accounting=dict(acc), latency_ms=h.summary_ms(),
        histograms={"latency": h.to_payload(), "service": h.to_payload(), "stage:draft": h.to_payload()},
        breaches=list(breaches), exit_code=code, key_metric=("success_rate", 1.0))


def test_merged_component_is_the_union_of_the_shards():
    rng = np.random.default_rng(7)
    a_vals = rng.lognormal(9, 0.5, 5000).astype(np.int64)
    b_vals = rng.lognormal(10, 0.8, 3000).astype(np.int64)
    acc_a = {"dispatched": 5000, "succeeded": 4990, "failed": 10, "timed_out": 0, "crashed": 0, "dropped": 0}
    acc_b = {"dispatched": 3000, "succeeded": 2900, "failed": 100, "timed_out": 0, "crashed": 0, "dropped": 3}
    crit = [{"criterion": "p99_ms < 100000", "metric": "p99_ms", "op": "<", "limit": 100000.0,
             "value": 1, "passed": True}]
    breach = {"metric": "cpu_percent", "value": 95.0, "limit": 90.0}
    merged = merge_component([("s0", _result("c", a_vals, acc_a, crit)),
                              ("s1", _result("c", b_vals, acc_b, crit, [breach], code=3, peak_mb=70.0))])
    union = Histogram()
    union.record_many(np.concatenate([a_vals, b_vals]))
    assert merged.latency_ms == union.summary_ms()
    assert Histogram.from_payload(merged.histograms["latency"]).count == 8000
    assert merged.stage_latency_ms["draft"] == union.summary_ms()
    assert merged.accounting["dispatched"] == 8000 and merged.accounting["dropped"] == 3
    assert (merged.successful_operations, merged.failed_operations) == (7890, 110)
    assert merged.throughput_ops_per_sec == 200.0
    assert merged.peak_memory_mb == 70.0  # the worst machine
    assert merged.performance_metrics["max_capacity"] == 30.0  # the worst shard
    assert merged.breaches == [dict(breach, shard="s1")]
    assert merged.criteria[0]["passed"] and merged.criteria[0]["value"] == union.summary_ms()["p99"]
    assert merged.exit_code == 3 and not merged.success


def _fleet_report(lost=True):
    acc = {"dispatched": 10, "succeeded": 10, "failed": 0, "timed_out": 0, "crashed": 0, "dropped": 0}
    r = _result("concurrent_load", [1000] * 10, acc)
    report = build_report([r], kind="concurrent_load", started_at=1.0e9, ended_at=1.0e9 + 5,
                          thresholds=ResourceThresholds())
    shards = [{"index": 0, "host": "a", "worker": "tcp://127.0.0.1:1", "status": "finished", "exit_code": 0,
               "share": {"model": "closed", "mine": 5, "total": 10, "fraction": 0.5}, "operations": 10,
               "throughput": 5.0, "p99_ms": 1.0, "p99_basis": "histogram", "peak_memory_mb": 40.0, "breaches": 0,
               "start_offset_ms": 0.0, "max_delivery_delay_s": 0.1, "duration_s": 2.0}]
    if lost:
        shards.append({"index": 1, "host": "b", "worker": "tcp://127.0.0.1:2", "status": "lost",
                       "reason": "its Dask worker left the cluster mid-run", "operations": 4, "throughput": 2.0,
                       "p99_ms": 3.0, "p99_basis": "worst streamed second", "peak_memory_mb": 41.0, "breaches": 0,
                       "start_offset_ms": 12.0, "max_delivery_delay_s": 0.2})
    report["fleet"] = {"scheduler": "tcp://127.0.0.1:8786", "shard_count": len(shards),
                       "shards_finished": 1, "shards_lost": len(shards) - 1, "start_skew_ms": 12.0,
                       "max_delivery_delay_s": 0.2, "warnings": ["clocks differ"], "shards": shards}
    return report


def test_fleet_section_in_text_html_and_junit():
    from loadgen.report.junit import render_junit
    from loadgen.report.html import render_html

    report = _fleet_report()
    text = render_summary(report)
    assert "FLEET" in text and "its Dask worker left the cluster mid-run" in text
    assert "3.0*" in text  # a lost shard's p99 is marked as the worst streamed second
    assert "\n".join(render_fleet_text(report)) in text
    page = render_html(report)
    assert "<section id='fleet'>" in page and "tcp://127.0.0.1:2" in page
    xml = render_junit(report)
    assert 'name="loadgen.fleet"' in xml and 'type="ShardLost"' in xml
    xmlschema = pytest.importorskip("xmlschema")
    xmlschema.XMLSchema(XSD).validate(xml)
    suite = fleet_junit_suite(_fleet_report(lost=False), "2020-01-01T00:00:00", "h", 1)
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "0", "0")


def test_cluster_flag_without_dask_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    code, _, err = _main(["run", "concurrent_load", "--duration", "1s", "--cluster", "tcp://127.0.0.1:9"])
    assert code == 2
    assert "pip install 'loadgen[distributed]'" in err and "Traceback" not in err


@pytest.mark.parametrize("address", ["nonsense", "tcp://127.0.0.1:notaport", "tcp://:8786"])
def test_bad_scheduler_address_is_a_usage_error(address):
    pytest.importorskip("distributed", reason="fleet mode needs Dask distributed (pip install '.[distributed]')")
    code, _, err = _main(["run", "concurrent_load", "--duration", "1s", "--cluster", address])
    assert code == 2 and "--cluster" in err


# ---------------------------------------------------------------------- on a loopback cluster


_KEEP = set()  # pids of the cluster's Dask worker processes (and restarted ones): they live for the module


@pytest.fixture(autouse=True)
def reap_children():
    """conftest's reaper, minus the module's Dask workers; and it checks that nothing else is left
    (a shard's pool and monitor end with its run, or with its killed Dask worker)."""
    yield
    me = psutil.Process()
    deadline = time.monotonic() + 5.0
    while True:
        left = [c for c in me.children(recursive=True) if c.pid not in _KEEP and _alive(c)
                and "resource_tracker" not in _cmdline(c) and not _cmdline(c).startswith("dask worker")]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for c in left:
        with contextlib.suppress(psutil.Error):
            c.kill()
    assert not left, f"left behind: {[(c.pid, _cmdline(c)) for c in left]}"


def _alive(p):
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(p):
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed", reason="fleet mode needs Dask distributed (pip install '.[distributed]')")
    from distributed import Client

    from loadgen.fleet import start_local_cluster

    lc = start_local_cluster(2)
    client = Client(lc.scheduler_address, set_as_default=False)

    def refresh_keep():
        client.wait_for_workers(2, timeout=30)
        _KEEP.clear()
        _KEEP.update(client.run(os.getpid).values())
        return client.run(os.getpid)

    lc.refresh_keep = refresh_keep
    refresh_keep()
    yield lc
    client.close()
    lc.close()
    _KEEP.clear()


FAST = ["--duration", "2s", "--workers", "1", "--target", SLEEP, "--target-arg", "ms=5", "--max-cpu-percent", "100",
        "--quiet"]


def test_fleet_run_merges_histograms_exactly_and_compares(cluster, tmp_path):
    from loadgen.report.compare import compare_command
    from loadgen.streams import read_jsonl

    out = tmp_path / "fleet"
    code, stdout, err = _main(["run", "sustained_load", "--concurrency", "6", "--seed", "3", "--out", str(out),
                               "--cluster", cluster.scheduler_address] + FAST)
    assert code in (0, 1), err  # 1: a criterion (p99 drift) failed on a busy machine
    report = json.loads((out / "report.json").read_text())
    fleet = report["fleet"]
    assert [s["status"] for s in fleet["shards"]] == ["finished", "finished"]
    assert [s["share"]["mine"] for s in fleet["shards"]] == [3, 3]
    shard_reports = [json.loads((out / "shards" / str(i) / "report.json").read_text()) for i in (0, 1)]
    union = Histogram()
    for r in shard_reports:
        union.merge(Histogram.from_payload(r["detailed_metrics"][0]["histograms"]["latency"]))
    merged = Histogram.from_payload(report["detailed_metrics"][0]["histograms"]["latency"])
    assert merged.count == union.count > 0
    assert np.array_equal(merged._counts, union._counts)
    assert report["detailed_metrics"][0]["latency_ms"] == union.summary_ms()
    for key in ("dispatched", "succeeded", "failed", "crashed", "dropped"):
        assert report["accounting"][key] == sum(r["accounting"][key] for r in shard_reports)
    assert fleet["start_skew_ms"] is not None and fleet["max_delivery_delay_s"] is not None
    # workers neither daemonic nor memory-limited (start_local_cluster); a late start may be named
    assert not [w for w in fleet["warnings"] if "daemonic" in w or "memory_limit" in w]
    lines = read_jsonl(str(out / "timeseries.jsonl"))
    assert lines and all("per_shard" in line for line in lines)
    assert any(set(line["per_shard"]) == {"0", "1"} for line in lines)
    events = read_jsonl(str(out / "events.jsonl"))
    assert {e.get("shard") for e in events if e["type"] == "phase"} == {0, 1}
    assert [e["name"] for e in events if e["type"] == "fleet"][0] == "start"
    assert "FLEET" in (out / "summary.txt").read_text()
    assert "<section id='fleet'>" in (out / "report.html").read_text()
    xmlschema = pytest.importorskip("xmlschema")
    xmlschema.XMLSchema(XSD).validate(str(out / "junit.xml"))
    with contextlib.redirect_stdout(io.StringIO()):
        assert compare_command(str(out), str(out / "shards" / "0"), "1000") == 0


def test_unreachable_scheduler_is_a_usage_error_within_the_timeout():
    pytest.importorskip("distributed", reason="fleet mode needs Dask distributed (pip install '.[distributed]')")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    code, _, err = _main(["run", "concurrent_load", "--duration", "1s", "--cluster", f"tcp://127.0.0.1:{port}",
                          "--cluster-timeout", "1s"])
    assert code == 2 and "cannot reach the Dask scheduler" in err
    assert time.monotonic() - t0 < 10


def test_scheduler_without_enough_workers_is_a_usage_error(cluster, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}) as empty:
        code, _, err = _main(["run", "concurrent_load", "--duration", "1s", "--out", str(tmp_path / "a"),
                              "--cluster", empty.scheduler_address, "--cluster-timeout", "1s"])
    assert code == 2 and "needs a shard worker but the scheduler has 0" in err
    code, _, err = _main(["run", "concurrent_load", "--duration", "1s", "--out", str(tmp_path / "b"),
                          "--cluster", cluster.scheduler_address, "--shards", "3", "--cluster-timeout", "1s"])
    assert code == 2 and "needs 3 shard worker(s) but the scheduler has 2" in err


def test_killed_dask_worker_degrades_the_fleet(cluster, tmp_path):
    from loadgen import fleet
    from loadgen.streams import read_jsonl

    pids = cluster.refresh_keep()
    victim = sorted(pids)[1]  # shards take the workers in address order: this one is shard 1
    out = tmp_path / "fleet"
    victim_series = out / "shards" / "1" / "timeseries.jsonl"

    def killer():  # once the victim has streamed two seconds with load (not just its held start)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if victim_series.exists():
                busy = [ln for ln in victim_series.read_text().splitlines() if json.loads(ln).get("throughput")]
                if len(busy) >= 2:
                    os.kill(pids[victim], signal.SIGKILL)
                    return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        rep = fleet.run("sustained_load", cluster=cluster.scheduler_address, concurrency=4, duration="4s",
                        workers=1, target=SLEEP, target_args={"ms": 5},
                        thresholds=ResourceThresholds(max_cpu_percent=100), out=str(out))
    finally:
        t.join(1)
        cluster.refresh_keep()  # the nanny restarts the killed worker
    assert rep.exit_code == ExitCode.DEGRADED
    ok, lost = rep.report["fleet"]["shards"]
    assert (ok["status"], lost["status"]) == ("finished", "lost")
    assert "left the cluster" in lost["reason"] and victim in lost["reason"]
    assert lost["seconds_streamed"] >= 2 and lost["operations"] > 0
    survivor = json.loads((out / "shards" / "0" / "report.json").read_text())
    assert ok["operations"] > 0
    assert rep.report["accounting"]["dispatched"] == survivor["accounting"]["dispatched"]
    lines = read_jsonl(str(out / "timeseries.jsonl"))
    assert sum(1 for line in lines if "1" in line["per_shard"]) >= 2  # the lost shard's streamed seconds
    assert any(e["type"] == "fleet" and e.get("name") == "shard_lost" for e in read_jsonl(str(out / "events.jsonl")))
    assert "lost" in (out / "summary.txt").read_text()


def test_cluster_local_command_serves_until_ctrl_c():
    """`loadgen cluster local`: loopback, the loadgen resource, one thread, no Dask memory limit and
    non-daemonic workers (a daemonic one refuses a target's multiprocessing children)."""
    pytest.importorskip("distributed", reason="fleet mode needs Dask distributed (pip install '.[distributed]')")
    from distributed import Client

    def worker_setup(dask_worker):  # nested: pickled by value, so the worker needs no test module
        import multiprocessing

        w = dask_worker
        return {"daemon": multiprocessing.current_process().daemon, "memory_limit": w.memory_manager.memory_limit,
                "resources": dict(w.state.total_resources), "nthreads": w.state.nthreads}

    proc = subprocess.Popen([sys.executable, "-m", "loadgen", "cluster", "local", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert "local Dask cluster at tcp://127.0.0.1:" in line, proc.stderr.read() if proc.poll() else line
        address = re.search(r"tcp://127\.0\.0\.1:\d+", line).group(0)
        with Client(address, set_as_default=False, timeout=10) as client:
            [setup] = client.run(worker_setup).values()
            assert [w.split(":")[1] for w in client.scheduler_info()["workers"]] == ["//127.0.0.1"]
        assert setup == {"daemon": False, "memory_limit": None, "resources": {"loadgen": 1}, "nthreads": 1}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

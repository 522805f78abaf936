"""Fleet runs on Dask distributed (fleet/master.py, fleet/shard.py, fleet/cluster.py) on a LocalCluster
of two worker processes on 127.0.0.1 (never any other address); skipped when Dask distributed is not
installed. The splitting, merging and rendering without a cluster: ``tests/unit/test_fleet_merge.py``.
"""

import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from _helpers import ROOT, TESTS, XSD
from _helpers import run_main as _main
from _reaping import check_and_reap, cmdline
from loadgen.errors import ExitCode, UsageError
from loadgen.streams import read_jsonl
from loadgen.analysis.stats import Histogram

SLEEP = os.path.join(TESTS, "_targets.py") + ":sleep_ms"


_KEEP = set()  # pids of the cluster's Dask worker processes (and restarted ones): they live for the module


@pytest.fixture(autouse=True)
def reap_children():
    """conftest's strict reaper (tests/_reaping.py), minus the module's Dask workers; it gives a shard's
    pool and monitor 5 s to end with its run, or with its killed Dask worker, then fails the test if
    anything else is left."""
    yield
    found = check_and_reap(exclude=lambda c: c.pid in _KEEP or cmdline(c).startswith("dask worker"), settle_s=5.0)
    if found:
        pytest.fail("left behind (killed now):\n  " + "\n  ".join(found), pytrace=False)


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


@pytest.mark.slow
def test_fleet_run_merges_histograms_exactly_and_compares(cluster, tmp_path):
    from loadgen.report.compare import compare_command

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
    names = [e["name"] for e in events if e["type"] == "fleet"]
    assert names[0] == "submit"  # then every shard ready, then the start instant, picked from them
    assert names.index("start") > max(i for i, n in enumerate(names) if n == "shard_ready")
    assert names.count("shard_ready") == 2
    assert "FLEET" in (out / "summary.txt").read_text()
    assert "<section id='fleet'>" in (out / "report.html").read_text()
    xmlschema = pytest.importorskip("xmlschema")
    xmlschema.XMLSchema(XSD).validate(str(out / "junit.xml"))
    with contextlib.redirect_stdout(io.StringIO()):
        assert compare_command(str(out), str(out / "shards" / "0"), "1000", force=True) == 0
    with pytest.raises(UsageError, match="the runs differ, shards"):  # a shard ran half the load
        compare_command(str(out), str(out / "shards" / "0"), "1000")


@pytest.mark.slow
def test_fleet_runs_http_ops_and_sums_their_counts(cluster, tmp_path, cli):
    from _helpers import start_serve

    srv = start_serve(cli)
    out = tmp_path / "fleet"
    code, stdout, err = _main(["run", "--url", f"{srv.url}/ping@3", "--url", f"{srv.url}/drafts/7@1", "--check",
                               "status == 200", "--concurrency", "4", "--duration", "2s", "--workers", "1",
                               "--max-cpu-percent", "100", "--out", str(out), "--cluster", cluster.scheduler_address,
                               "--quiet"])
    assert code == 0, err
    (d,) = json.loads((out / "report.json").read_text())["detailed_metrics"]
    shards = [json.loads((out / "shards" / str(i) / "report.json").read_text())["detailed_metrics"][0] for i in (0, 1)]
    for op in ("GET /ping", "GET /drafts/7"):
        assert d["ops"][op]["operations"] == sum(s["ops"][op]["operations"] for s in shards) > 0
    for key in ("http_bytes_received", "http_connections_opened", "http_connections_reused"):
        assert d["performance_metrics"][key] == sum(s["performance_metrics"][key] for s in shards) > 0
    assert d["checks"]["status == 200"]["passes"] == d["accounting"]["succeeded"]
    assert d["measures_ms"]["ttfb"]["count"] == d["accounting"]["dispatched"]


@pytest.mark.slow
def test_fleet_merges_a_mix_named_measurements_and_checks_exactly(cluster, tmp_path):
    out = tmp_path / "fleet"
    targets = os.path.join(TESTS, "_targets.py")
    code, stdout, err = _main(["run", "--target", f"{targets}:measured@1", "--target", f"{targets}:login@3",
                               "--concurrency", "4", "--duration", "2s", "--workers", "1", "--max-cpu-percent", "100",
                               "--criterion", "checks{name=always} == 1", "--criterion", "p50_ms{op=login} >= 4",
                               "--out", str(out), "--cluster", cluster.scheduler_address, "--quiet"])
    assert code == 0, err
    (d,) = json.loads((out / "report.json").read_text())["detailed_metrics"]
    shards = [json.loads((out / "shards" / str(i) / "report.json").read_text())["detailed_metrics"][0] for i in (0, 1)]
    for name in ("always", "never"):
        for key in ("passes", "fails"):
            assert d["checks"][name][key] == sum(s["checks"][name][key] for s in shards)
    assert d["checks"]["always"]["passes"] == d["checks"]["never"]["fails"] == d["ops"]["measured"]["operations"]
    for op in ("measured", "login"):
        assert d["ops"][op]["operations"] == sum(s["ops"][op]["operations"] for s in shards) > 0
        union = Histogram()
        for s in shards:
            union.merge(Histogram.from_payload(s["histograms"][f"op:{op}"]))
        assert d["ops"][op]["latency_ms"] == union.summary_ms()
    assert d["measures_ms"]["nap"]["count"] == sum(s["measures_ms"]["nap"]["count"] for s in shards)
    assert all(c["passed"] for c in d["criteria"])


def test_a_shard_not_ready_within_the_start_lead_stops_the_fleet_before_any_load(cluster, tmp_path):
    slow = os.path.join(TESTS, "_targets.py") + ":slow_factory"
    out = tmp_path / "fleet"
    code, _, err = _main(["run", "load", "--target", slow, "--target-factory", "--target-arg", "build_s=1.5",
                          "--concurrency", "2", "--duration", "2s", "--workers", "1", "--max-cpu-percent", "100",
                          "--start-lead", "0.3s", "--cluster", cluster.scheduler_address, "--out", str(out), "--quiet"])
    assert code == 2 and "not every shard was ready within --start-lead 0.3s" in err and "no load was applied" in err
    assert len(err.strip().splitlines()) == 1
    for i in (0, 1):  # each shard stopped while held: its pool never began
        events = read_jsonl(str(out / "shards" / str(i) / "events.jsonl"))
        assert not [e for e in events if e["type"] == "phase" and e.get("name") == "pool_ready"]
    fleet_events = [e["name"] for e in read_jsonl(str(out / "events.jsonl")) if e["type"] == "fleet"]
    assert "start" not in fleet_events and "stop" in fleet_events


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


@pytest.mark.slow
def test_a_plan_runs_on_a_fleet_and_report_rebuilds_the_fleet_dir(cluster, tmp_path):
    """`run --config plan.toml --cluster`: every shard runs the plan's entries in order, each entry's load
    split; one merged component per entry. `loadgen report` on the fleet's directory merges the shards'
    own run directories to the same figures; without one of them, that shard counts as lost (exit 4)."""
    plan = tmp_path / "plan.toml"
    plan.write_text(f"""name = "two"
duration = "1s"
workers = 1
target = "{SLEEP}"
target_args = {{ ms = 5 }}
thresholds = {{ max_cpu_percent = 100 }}

[[scenario]]
name = "load"
label = "first"
concurrency = 4

[[scenario]]
name = "load"
label = "second"
concurrency = 2
target_args = {{ ms = 2 }}
""")
    out = tmp_path / "fleet"
    code, _, err = _main(["run", "--config", str(plan), "--cluster", cluster.scheduler_address, "--out", str(out),
                          "--quiet"])
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["metadata"]["kind"] == "plan two"
    comps = report["detailed_metrics"]
    assert [c["test_name"] for c in comps] == ["first", "second"]
    shards = [json.loads((out / "shards" / str(i) / "report.json").read_text())["detailed_metrics"] for i in (0, 1)]
    for k, c in enumerate(comps):
        assert c["accounting"]["dispatched"] == sum(s[k]["accounting"]["dispatched"] for s in shards) > 0
        assert c["max_concurrent_operations"] <= (4, 2)[k]
    assert comps[1]["latency_ms"]["p50"] < comps[0]["latency_ms"]["p50"]  # the entry's own target_args

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    code, stdout, err = _main(["report", str(copy)])
    assert code == 0 and "shards' run directories" in stdout, err
    rebuilt = json.loads((copy / "report.json").read_text())
    assert rebuilt["exit_code"] == 0 and rebuilt["metadata"]["kind"] == "plan two"
    for a, b in zip(comps, rebuilt["detailed_metrics"]):
        assert (a["test_name"], a["accounting"], a["latency_ms"]) == (b["test_name"], b["accounting"], b["latency_ms"])
    shutil.rmtree(copy / "shards" / "1")
    shutil.rmtree(out / "shards" / "1")  # where the shard said it wrote: looked for too
    code, _, err = _main(["report", str(copy)])
    assert code == 0, err
    partial = json.loads((copy / "report.json").read_text())
    assert partial["exit_code"] == ExitCode.DEGRADED
    assert [s["status"] for s in partial["fleet"]["shards"]][1] == "lost"
    assert partial["accounting"]["lost"] > 0  # shard 1's operations, from the fleet's timeseries
    assert partial["accounting"]["dispatched"] == report["accounting"]["dispatched"] - sum(
        s["accounting"]["dispatched"] for s in shards[1]) + partial["accounting"]["lost"]

    (plan.parent / "par.toml").write_text(plan.read_text().replace('name = "two"', 'name = "two"\nparallel = true'))
    code, _, err = _main(["run", "--config", str(plan.parent / "par.toml"), "--cluster", cluster.scheduler_address,
                          "--out", str(tmp_path / "par"), "--quiet"])
    assert code == 2 and "parallel = true with --cluster" in err


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

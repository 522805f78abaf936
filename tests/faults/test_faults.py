"""The fault matrix: kill anything, anytime; signals at every phase; operations that
misbehave; hygiene of back-to-back runs; disk trouble; the system memory floor.

Every case uses real processes. After each: no process of the run is left, every
flushed second is still in ``timeseries.jsonl``, and ``loadgen report`` rebuilds a
valid report from what is left, with accounting that adds up (nothing lost).
"""

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from _helpers import ROOT, TESTS, wait_for
from loadgen.config import ResourceThresholds
from loadgen.engine.load import RunPlan
from loadgen.engine.runner import Runner
from loadgen.streams import read_jsonl
from loadgen.workload.targets import TargetSpec

FREE = ResourceThresholds(max_cpu_percent=100)


def run_args(ms=50, duration="20s"):
    return ["run", "sustained_load", "--target", "_targets:sleep_ms", "--target-arg", f"ms={ms}",
            "--concurrency", "4", "--duration", duration, "--max-cpu-percent", "100", "--out", "out"]


def processes(cli, title):
    return [p for p in cli.survivors() if title in " ".join(p.cmdline())]


def wait_lines(path, n, timeout=20):
    def ok():
        try:
            return len(read_jsonl(path)) >= n
        except (OSError, ValueError):
            return False
    assert wait_for(ok, timeout), f"{path} never had {n} lines"


def rebuild_and_check(tmp_path, expect_lost=False):
    """`loadgen report` rebuilds a valid report whose accounting adds up."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, ROOT]))
    out = subprocess.run([sys.executable, "-m", "loadgen", "report", str(tmp_path / "out")], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    acc = report["accounting"]
    assert acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"], acc
    return report


def kill(procs, sig=signal.SIGKILL):
    assert procs, "nothing to kill"
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


VICTIMS = {
    "master": None,
    "monitor": "loadgen: monitor",
    "one_worker": "loadgen: worker 0",
    "all_workers": "loadgen: worker",
}
MOMENTS = ["startup", "mid_run", "drain"]
CASES = [(v, m) for v in VICTIMS for m in MOMENTS] + [("master", "report_writing")]


@pytest.mark.parametrize("victim,moment", CASES, ids=[f"{v}-{m}" for v, m in CASES])
def test_kill_anything_anytime(cli, tmp_path, victim, moment):
    slow = moment == "drain"
    p = cli.start(*run_args(ms=1500 if slow else 50, duration="3s" if moment == "report_writing" else "20s"))
    events = tmp_path / "out" / "events.jsonl"
    title = VICTIMS[victim]
    if moment == "startup":
        wait_for(lambda: processes(cli, title or "loadgen: worker"), 20, step=0.005)
    elif moment in ("mid_run", "drain"):
        wait_lines(tmp_path / "out" / "timeseries.jsonl", 2)
        if slow:
            victims = processes(cli, title) if title else None
            p.send_signal(signal.SIGINT)
            time.sleep(0.3)
            assert p.poll() is None  # still draining
    elif moment == "report_writing":
        assert wait_for(lambda: (tmp_path / "out" / "report.json").exists(), 30, step=0.002)
    if victim == "master":
        p.kill()
    else:
        kill(victims if slow else wait_for(lambda: processes(cli, title), 5))
    if victim != "master":
        if moment != "drain" and victim != "monitor":  # a lost monitor ends the run by itself
            time.sleep(1.0)  # the run goes on …
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # … and ends with a complete report
        p.communicate(timeout=60)
        assert "Traceback" not in p.stderr.read() if p.stderr and not p.stderr.closed else True
    else:
        p.wait(10)
    assert wait_for(lambda: not cli.survivors(), timeout=2.0), [(x.pid, x.cmdline()) for x in cli.survivors()]
    if events.exists():
        read_jsonl(events)  # parseable (a torn last line is tolerated only there)
    if not (tmp_path / "out" / "timeseries.jsonl").exists():
        assert moment == "startup"  # killed before the first second was written
        return
    before = read_jsonl(tmp_path / "out" / "timeseries.jsonl")
    report = rebuild_and_check(tmp_path)
    assert len(read_jsonl(tmp_path / "out" / "timeseries.jsonl")) == len(before)  # nothing flushed was lost
    if victim == "monitor" and moment != "drain":
        assert p.returncode == 3
        assert any(e["type"] == "monitor_lost" for e in read_jsonl(events))
    if victim in ("one_worker", "all_workers") and moment == "mid_run":
        assert p.returncode == 130
        kinds = [e["type"] for e in read_jsonl(events)]
        assert "worker_crash" in kinds
        assert report["accounting"]["succeeded"] > 0
    if moment == "report_writing":
        html = tmp_path / "out" / "report.html"
        assert not html.exists() or html.read_text().rstrip().endswith("</html>")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("moment", ["startup", "drain"])
def test_signal_at_each_phase_gives_its_exit_code_and_a_report(cli, tmp_path, sig, code, moment):
    p = cli.start(*run_args(ms=800 if moment == "drain" else 50))
    if moment == "startup":
        wait_for(lambda: (tmp_path / "out" / "events.jsonl").exists(), 20, step=0.005)
    else:
        wait_lines(tmp_path / "out" / "timeseries.jsonl", 1)
        p.send_signal(sig)
        time.sleep(0.2)
    p.send_signal(sig) if moment == "startup" else None
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["exit_code"] == code
    acc = report["accounting"]
    assert acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"]
    assert wait_for(lambda: not cli.survivors(), timeout=2.0)


# ----------------------------------------------------------------- operations that misbehave


def test_memory_exhausting_operation_is_stopped_by_the_monitor(tmp_path):
    marker = str(tmp_path / "m")
    out = Runner(RunPlan(concurrency=2, workers=2, slots=1, duration_s=20,
                         target=TargetSpec(ref="_targets:fault_once", kwargs={"how": "memory", "marker": marker})),
                 ResourceThresholds(max_cpu_percent=100, max_memory_mb=400)).run()
    assert out.exit_code == 3 and out.breaches and out.breaches[0]["metric"] == "memory_mb"
    assert out.accounting.adds_up() and out.accounting.crashed >= 1
    assert out.duration_s < 10


def test_children_spawned_by_operations_die_with_the_pool(tmp_path):
    pidfile = tmp_path / "kids"
    out = Runner(RunPlan(concurrency=2, workers=2, slots=1, duration_s=1.5, stop_grace_s=0.5,
                         target=TargetSpec(ref="_targets:spawn_child", kwargs={"pidfile": str(pidfile)})), FREE).run()
    kids = [int(x) for x in pidfile.read_text().split()]
    assert len(kids) == 2
    assert out.accounting.adds_up()

    def gone():
        return all(not psutil.pid_exists(k) or psutil.Process(k).status() == psutil.STATUS_ZOMBIE for k in kids)
    assert wait_for(gone, 2.0)


def test_unpicklable_return_values_are_fine():
    out = Runner(RunPlan(concurrency=2, workers=2, duration_s=None, operations=50,
                         target=TargetSpec(ref="_targets:unpicklable")), FREE).run()
    assert out.accounting.succeeded == 50


# ----------------------------------------------------------------- hygiene


@pytest.mark.slow
def test_back_to_back_runs_leak_nothing():
    me = psutil.Process()

    def one():
        out = Runner(RunPlan(concurrency=1, workers=1, slots=1, duration_s=None, operations=3,
                             target=TargetSpec(ref="_targets:noop")), FREE).run()
        assert out.accounting.dispatched == 3

    for _ in range(5):  # warm-up: imports, caches
        one()
    gc.collect()
    fds, threads, rss = me.num_fds(), threading.active_count(), me.memory_info().rss
    for _ in range(100):  # a leaked fd, thread or child per run shows exactly; RSS growth would be ≥ 100 × it
        one()
    gc.collect()
    assert me.num_fds() == fds
    assert threading.active_count() == threads
    zombies = [c for c in me.children(recursive=True) if c.status() == psutil.STATUS_ZOMBIE]
    assert not zombies
    live = [c for c in me.children(recursive=True) if "resource_tracker" not in " ".join(c.cmdline())]
    assert not live
    assert (me.memory_info().rss - rss) / 2**20 < 8  # noise, not a leak per run


# ----------------------------------------------------------------- disk trouble


@pytest.fixture
def small_fs(tmp_path):
    """A 64 KiB tmpfs mounted by the test (needs root); skipped where mounting is not allowed."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_out_is_a_clear_error_at_start(cli, small_fs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    code, out, err = cli.run("run", "concurrent_load", "--duration", "1s", "--out", str(small_fs / "run"))
    assert code == 2
    assert err.count("\n") == 1 and "Read-only file system" in err and "Traceback" not in err
    assert not cli.survivors()


@pytest.mark.slow
def test_full_disk_stops_the_run_cleanly(cli, small_fs):
    filler = small_fs / "filler"
    filler.write_bytes(b"x" * (64 * 1024 - 8 * 1024))  # room for the write test, not for a run
    code, out, err = cli.run(*run_args(duration="30s")[:-1], str(small_fs / "run"), timeout=60)
    assert code == 2, err
    assert "Traceback" not in err
    assert "No space left on device" in err
    assert err.strip().count("\n") == 0 or all(l.startswith("loadgen") for l in err.strip().splitlines())


# ----------------------------------------------------------------- memory safety


def test_system_floor_stops_memory_exhaustion_before_the_oom_killer(tmp_path):
    available_mb = psutil.virtual_memory().available / 2**20
    floor = available_mb - 1500  # 1.5 GB from now the floor trips, well before the machine runs out
    marker = str(tmp_path / "m")
    out = Runner(RunPlan(concurrency=2, workers=2, slots=1, duration_s=60,
                         target=TargetSpec(ref="_targets:fault_once", kwargs={"how": "memory", "marker": marker})),
                 ResourceThresholds(max_cpu_percent=100, max_memory_mb=10**6, memory_growth_rate_mb_per_sec=10**6,
                                    min_available_memory_mb=floor)).run()
    assert out.exit_code == 3
    b = out.breaches[0]
    assert b["metric"] == "available_memory_mb" and b["pool_dead_at"] >= b["detected_at"]
    assert out.accounting.crashed >= 1
    assert psutil.virtual_memory().available / 2**20 > floor  # the memory came back

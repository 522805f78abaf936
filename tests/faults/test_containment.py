"""Containment: whatever an operation detaches — a new session, a new process group, a double fork,
a cleared PDEATHSIG, a fork without exec — is ended with the run, under fork and spawn, however the
run ends (normally, by a breach, by SIGTERM, by SIGKILL of the master), with the cgroup where this
machine allows one and with the subreaper alone. And a target that forks in every operation neither
hangs the run nor breaks its accounting.

Each escapee records itself (pid + start ticks) in a file: survival is judged by identity.
"""

import json
import os
import signal
import time

import pytest

import _escapes
from _helpers import wait_for
from loadgen.engine import cgroup, contain

CASES = len(_escapes.CASES)
ENDINGS = ["normal", "breach", "sigterm", "sigkill"]
MECHANISMS = ["auto", "subreaper"]


def _args(tmp_path, ending):
    duration = "3s" if ending in ("normal", "breach") else "60s"
    args = ["run", "sustained_load", "--target", "_escapes:escape", "--target-arg", "how=all",
            "--target-arg", f"pidfile={tmp_path / 'pids'}", "--target-arg", f"marker={tmp_path / 'marker'}",
            "--target-arg", "ms=20", "--workers", "2", "--concurrency", "2", "--duration", duration,
            "--max-cpu-percent", "100", "--quiet", "--out", "out"]
    if ending == "breach":
        args += ["--target-arg", "hold_mb=2", "--max-memory-mb", "400"]
    return args


def _recorded(tmp_path):
    try:
        return len((tmp_path / "pids").read_text().split()) // 2
    except FileNotFoundError:
        return 0


def _none_alive_2_s_after_the_master(p, pidfile):
    """Wait for the master ``p`` to exit, then for every escapee in ``pidfile`` to be gone: within 2 s."""
    out, err = p.communicate(timeout=60)
    exited = time.monotonic()
    gone = wait_for(lambda: not _escapes.survivors(pidfile), timeout=2.0, step=0.05)
    assert gone, f"alive 2 s after the master exited: {_escapes.survivors(pidfile)}; {err[-2000:]}"
    assert time.monotonic() - exited < 2.5


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("ending", ENDINGS)
def test_no_escapee_survives_the_run(cli, tmp_path, monkeypatch, ending, start_method, mechanism):
    if mechanism == "auto" and start_method == "spawn" and ending in ("normal", "breach"):
        pytest.skip("covered by fork (the join is the same code); keeps the suite short")
    monkeypatch.setenv("LOADGEN_CONTAINMENT", mechanism)
    monkeypatch.setenv("LOADGEN_START_METHOD", start_method)
    pidfile = str(tmp_path / "pids")
    p = cli.start(*_args(tmp_path, ending))
    try:
        assert wait_for(lambda: _recorded(tmp_path) >= CASES, timeout=30), "the escapes did not happen"
        if ending == "sigterm":
            p.send_signal(signal.SIGTERM)
        elif ending == "sigkill":
            time.sleep(contain.SCAN_S * 2)  # the monitor has seen them (subreaper: its scan)
            p.kill()
        _none_alive_2_s_after_the_master(p, pidfile)
    finally:
        _escapes.kill_survivors(pidfile)
    code = p.returncode
    assert code == {"normal": 0, "breach": 3, "sigterm": 143, "sigkill": -9}[ending], code
    if ending != "sigkill":
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        used = report["containment"]["mechanism"]
        assert used == "subreaper" if mechanism == "subreaper" else used in ("subreaper", "cgroup2",
                                                                               "cgroup2-freeze", "cgroup1-freezer")
        if used.startswith("cgroup") and os.path.isdir("/sys/fs/cgroup/memory"):
            # The kernel's own figure for everything in the run's cgroup, escapees included.
            assert report["containment"]["cgroup_peak_memory_mb"] > 0
            seconds = [json.loads(x) for x in open(tmp_path / "out" / "timeseries.jsonl")]
            assert any((r.get("cgroup_memory_mb") or 0) > 0 for r in seconds)
        escapees = {int(x) for x in (tmp_path / "pids").read_text().split()[::2]}
        killed = {pid for b in report["breaches"] for pid in b["killed_pids"]}
        # Ended at the end, or — a breach — with the pool: the monitor watches what the pool started.
        assert report["containment"]["strays_ended"] >= 1 or escapees & killed
        acc = report["accounting"]
        assert acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"]
    # No run cgroup is left behind.
    for parent in cgroup.own_cgroup_dirs():
        if parent and os.path.isdir(parent):
            assert not [n for n in os.listdir(parent) if n.startswith(f"loadgen-{p.pid}-")]


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_a_fork_in_every_operation_neither_hangs_nor_breaks_the_accounting(cli, tmp_path, monkeypatch, start_method):
    monkeypatch.setenv("LOADGEN_START_METHOD", start_method)
    started = time.monotonic()
    code, out, err = cli.run("run", "sustained_load", "--target", "_escapes:fork_every_op", "--workers", "2",
                             "--concurrency", "4", "--duration", "3s", "--max-cpu-percent", "100", "--quiet",
                             "--out", "out", timeout=60)
    took = time.monotonic() - started
    assert code == 0, err
    assert "Traceback" not in err
    assert took < 3 + 5 + 5 + 5  # duration + drain grace + 5 s (+ start-up)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    acc = report["accounting"]
    assert acc["succeeded"] > 100
    assert acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"]
    assert min(acc.values()) >= 0
    assert report["containment"]["accounting_anomalies"] == 0  # the copies never reached the counters


def test_a_fork_without_exec_that_holds_the_workers_fds_does_not_hang_the_run(cli, tmp_path):
    started = time.monotonic()
    args = ["how=fork_no_exec" if a == "how=all" else a for a in _args(tmp_path, "normal")]
    code, out, err = cli.run(*args, timeout=60)
    assert code == 0, err
    assert time.monotonic() - started < 3 + 5 + 5 + 5
    assert not _escapes.survivors(str(tmp_path / "pids"))
    assert (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_escapees_born_just_before_the_masters_sigkill_do_not_survive(cli, tmp_path, monkeypatch, mechanism):
    """A detached process every 20 ms: when the master is SIGKILLed, the youngest were born after the
    monitor's last look (subreaper mode scans every 0.5 s). They carry the run's mark in their
    environment, which the monitor's sweep reads."""
    monkeypatch.setenv("LOADGEN_CONTAINMENT", mechanism)
    pidfile = str(tmp_path / "pids")
    p = cli.start("run", "sustained_load", "--target", "_escapes:keep_escaping", "--target-arg", f"pidfile={pidfile}",
                  "--workers", "1", "--concurrency", "1", "--duration", "60s", "--max-cpu-percent", "100",
                  "--quiet", "--out", "out")
    try:
        assert wait_for(lambda: _recorded(tmp_path) >= 30, timeout=30), "the escapes did not happen"
        p.kill()
        _none_alive_2_s_after_the_master(p, pidfile)
    finally:
        _escapes.kill_survivors(pidfile)

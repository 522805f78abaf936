"""Containment and bounds, without processes: the descendant walk, the monitor's sweep set, the clamp
of impossible accounting, the machine's room, an interrupted pool start, the report's summary."""

import re
import signal

import pytest

from loadgen.engine import contain, room
from loadgen.engine._procfs import StatInfo
from loadgen.engine.counters import FAILED, SLOT_FIELDS, STARTED, SUCCEEDED
from loadgen.engine.pool import Pool, WorkerHandle
from loadgen.errors import UsageError
from loadgen.report.build import containment_summary


def st(ppid, ticks=100, state="S"):
    return StatInfo(state=state, cpu_ticks=0, rss_pages=0, start_ticks=ticks, num_threads=1, pgid=1, ppid=ppid)


# master 10 → monitor 11, worker 12 → 13 → 14 (zombie); adopted orphan 15 (ppid 10); a stranger 20 (ppid 1);
# 16 is a child the master had before the run (excluded with its child 17).
TABLE = {10: st(1), 11: st(10), 12: st(10), 13: st(12), 14: st(13, state="Z"), 15: st(10), 16: st(10),
         17: st(16), 20: st(1)}


def test_descendants_walk_the_tree_and_skip_excluded_subtrees():
    found = contain.descendants(10, exclude={11, 16}, table=TABLE)
    assert set(found) == {12, 13, 14, 15}
    assert found[14].state == "Z"  # zombies are listed (the caller reaps or skips them)
    assert set(contain.descendants(12, table=TABLE)) == {13, 14}
    assert contain.descendants(20, table=TABLE) == {}


def test_the_monitors_sweep_takes_what_it_saw_and_their_new_children_but_not_a_reused_pid():
    seen = {13: 100, 15: 100}
    table = {13: st(1, ticks=100), 15: st(1, ticks=999), 30: st(13, ticks=200), 31: st(1), 32: st(13, state="Z")}
    found = contain._orphans_of(seen, table)
    assert set(found) == {13, 30}  # 15's pid now names another process; 31 is a stranger; 32 is dead
    assert seen[30] == 200  # new children join the seen set (their own children are found next round)


def _handle(started, succ, fail, slots=1):
    counters = memoryview(bytearray(8 * SLOT_FIELDS * slots)).cast("q")
    counters[STARTED], counters[SUCCEEDED], counters[FAILED] = started, succ, fail
    return WorkerHandle(index=0, process=None, conn=None, shm=None, counters=counters, pid=42)


def test_counters_a_forked_copy_wrote_are_clamped_and_reported():
    acc, anomaly = _handle(10, 9, 3).final_accounting(1)
    assert anomaly == {"worker": 0, "pid": 42, "started": 10, "ended": 12, "excess": 2, "forked_copies": 0}
    assert acc.adds_up() and acc.dispatched == 12 and acc.crashed == 0
    assert min(acc.to_dict().values()) >= 0
    acc, anomaly = _handle(10, 7, 1).final_accounting(1)
    assert anomaly is None and acc.crashed == 2 and acc.adds_up()


ROOM = {"processes": (100, "the rule"), "threads": (1000, "the thread rule")}


@pytest.mark.parametrize("workers,slots,rate,words", [
    (101, 1, None, "--workers 101: this machine has room for 100 worker processes now (the rule)"),
    (10, 101, None, "--slots 101 × --workers 10 = 1010 threads"),
    (2, 1, 1e12, "--rate 1e+12"),
])
def test_plans_beyond_the_machines_room_are_refused_naming_the_flag(workers, slots, rate, words):
    with pytest.raises(UsageError, match=re.escape(words)):
        room.check(workers, slots, rate, room=ROOM)
    room.check(100, 10, 1000.0, room=ROOM)  # at the bounds: fine


def test_the_machines_room_is_read_and_positive():
    r = room.limits()
    assert r["processes"][0] > 0 and r["threads"][0] >= r["processes"][0] // 100
    assert "MB" in r["processes"][1] or "pid" in r["processes"][1]


def test_an_interrupted_pool_start_starts_no_more_workers():
    started = []

    class CountingPool(Pool):
        def start_worker(self, index):
            started.append(index)

    class Spec:
        workers, slots = 50, 1

    pool = CountingPool(None, None, Spec())
    pool.start(interrupted=lambda: len(started) >= 3)
    assert started == [0, 1, 2]


def test_containment_mode_from_the_environment(monkeypatch):
    monkeypatch.setenv(contain.ENV, "subreaper")
    assert contain.Containment().cgroups is False
    monkeypatch.setenv(contain.ENV, "auto")
    assert contain.Containment().cgroups is True
    monkeypatch.setenv(contain.ENV, "cgroup-please")
    with pytest.raises(UsageError, match="LOADGEN_CONTAINMENT"):
        contain.Containment()


def test_the_reports_containment_adds_up_the_phases():
    s = containment_summary([{"mechanism": "cgroup2", "strays_ended": 2, "accounting_anomalies": 0,
                              "output_dropped_bytes": 5},
                             {"mechanism": "cgroup2", "strays_ended": 1, "accounting_anomalies": 1, "forked_copies": 2}])
    assert s == {"mechanism": "cgroup2", "strays_ended": 3, "accounting_anomalies": 1, "forked_copies": 2,
                 "output_dropped_bytes": 5}
    mixed = containment_summary([{"mechanism": "cgroup2"}, {"mechanism": "subreaper"}])
    assert mixed["mechanism"] == ["cgroup2", "subreaper"]


def test_pdeath_signal_of_the_monitor_is_not_sigkill():
    from loadgen.engine import monitor

    assert monitor._PDEATH_SIGNAL != signal.SIGKILL  # it must live long enough to sweep


def test_a_process_we_may_not_signal_does_not_stop_the_sweep_of_the_others(monkeypatch):
    """An operation that ran ``sudo`` leaves a process the sweep may not signal: it is left alone and
    logged, and every other one is still ended."""
    import subprocess
    import sys

    from loadgen.engine import _proc

    refused, killable = (subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2))
    real = _proc._signal_ticks

    def signal_ticks(pid, ticks, sig):
        if pid == refused.pid:
            raise PermissionError(1, "Operation not permitted")
        return real(pid, ticks, sig)

    monkeypatch.setattr(_proc, "_signal_ticks", signal_ticks)
    try:
        ours = (refused.pid, killable.pid)
        found = contain.kill_rounds(lambda table: {p: table[p] for p in ours if p in table}, 3.0,
                                    reap=lambda: [p.poll() for p in (refused, killable)])
        assert set(found) == {killable.pid}
        assert killable.wait(2) == -signal.SIGKILL
        assert refused.poll() is None  # left alone, not signalled
    finally:
        refused.kill()
        refused.wait()


def test_the_orphans_of_a_reused_parent_pid_are_not_taken():
    """A child counts by its parent only if the parent is the very process seen: pid 30 was seen
    with start ticks 100, and now a stranger with ticks 999 holds pid 30 — its child 31 is not ours."""
    seen = {30: 100}
    table = {30: st(1, ticks=999), 31: st(30, ticks=1000)}
    assert contain._orphans_of(seen, table) == {}
    table = {30: st(1, ticks=100), 31: st(30, ticks=1000)}
    assert set(contain._orphans_of(dict(seen), table)) == {30, 31}


def test_a_run_marks_what_it_starts_in_their_environment_and_the_mark_is_found(monkeypatch):
    """While a run lasts the master's environment holds the run's mark (inherited by everything the run
    starts); a child carrying it is found by :func:`contain.marked`, one without it is not; the mark
    goes with the run."""
    import os
    import subprocess
    import sys

    from loadgen.engine import _procfs

    monkeypatch.delenv(contain.MARK_ENV, raising=False)
    c = contain.Containment(cgroups=False).start()
    try:
        assert os.environ[contain.MARK_ENV] == c.mark == contain.run_mark()
        assert c.spec().mark == c.mark
        code = "import time; time.sleep(30)"
        marked_child = subprocess.Popen([sys.executable, "-c", code])
        clean_env = {k: v for k, v in os.environ.items() if k != contain.MARK_ENV}
        scrubbed = subprocess.Popen([sys.executable, "-c", code], env=clean_env)
        try:
            found = contain.marked(_procfs.process_table(), c.mark)
            assert marked_child.pid in found and scrubbed.pid not in found
        finally:
            for p in (marked_child, scrubbed):
                p.kill()
                p.wait()
    finally:
        c.close()
    assert contain.MARK_ENV not in os.environ

"""Stressors: real child processes under "fork" and "spawn", reaped whatever happens.

Behaviour only (load held, ballast resident, files and round trips done,
children gone); speed and accuracy figures live in ``benchmarks/stressors.py``.
The machine is shared, so the CPU bound is deliberately loose.
"""

import os
import signal
import stat
import time

import multiprocess
import psutil
import pytest

from loadgen.errors import UsageError
from loadgen.stressors import (
    MB,
    CpuStressor,
    IoStressor,
    MemoryStressor,
    StressorState,
)

START_METHODS = ["fork", "spawn"]
CPU_TOLERANCE_POINTS = 8.0  # shared 2-core machine: other people's tests land on our core too
CPU_WINDOWS, CPU_WINDOW_S = 6, 0.5  # per-core readings of the CPU test
CPU_CLEAN_OTHER_PERCENT = 25.0  # a window is "clean" when no other core was busier than this


def _resource_tracker_pid():
    from multiprocess import resource_tracker

    return getattr(resource_tracker._resource_tracker, "_pid", None)


def _our_children():
    """Live descendants of this test process, multiprocess's resource tracker excepted."""
    skip = _resource_tracker_pid()
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            # multiprocessing's tracker too (started by other libraries, e.g. dask, in this process)
            if p.pid != skip and p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline()):
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _gone(pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_until(predicate, timeout_s, step_s=0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def _make_spawn(method, started, daemon=True):
    ctx = multiprocess.get_context(method)

    def spawn(target, args, name):
        p = ctx.Process(target=target, args=args, name=name, daemon=daemon)
        p.start()
        started.append(p)
        return p

    return spawn


@pytest.fixture(params=START_METHODS)
def spawn(request):
    """A registering spawn like loadgen's; every child it started is killed at teardown."""
    started = []
    try:
        yield _make_spawn(request.param, started)
    finally:
        for p in started:
            if p.is_alive():
                p.kill()
            p.join(2.0)


@pytest.fixture
def fork_spawn():
    started = []
    try:
        yield _make_spawn("fork", started)
    finally:
        for p in started:
            if p.is_alive():
                p.kill()
            p.join(2.0)


# ---------------------------------------------------------------- CPU


def test_cpu_holds_half_of_one_core(spawn):
    """The pinned burner's core is ~50 % busy (psutil per-cpu), and the burner's own share is ~50 %.

    Other processes can only add busy time to the core, so every window
    must clear the lower bound, and the least busy window must clear the
    upper one.  The machine is shared: when everyone else's tests saturate
    it (the other cores busy in every window), neither the core's reading
    nor the burner's share (CFS splits the core) means anything, and the
    test says so by skipping; with a window where the other cores were
    nearly idle, a miss fails.
    """
    cores = sorted(os.sched_getaffinity(0))
    core = cores[-1]
    s = CpuStressor(50, cores=[core])
    try:
        s.start(spawn)
        assert s.wait_started(15.0), "the burner never reported that it was burning"
        (pid,) = s.pids
        burner = psutil.Process(pid)
        assert burner.cpu_affinity() == [core]
        time.sleep(0.3)  # let the feedback settle
        psutil.cpu_percent(percpu=True)
        t0, cpu0 = time.monotonic(), sum(burner.cpu_times()[:2])
        windows = []  # (this core %, busiest other core %)
        for _ in range(CPU_WINDOWS):
            time.sleep(CPU_WINDOW_S)
            per_cpu = psutil.cpu_percent(percpu=True)
            windows.append((per_cpu[core], max((per_cpu[c] for c in cores if c != core), default=0.0)))
        own = 100.0 * (sum(burner.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    finally:
        s.stop()
    assert s.stats()["exitcodes"] == [0]  # SIGTERM is a burner's clean stop
    why = f"core {core}: (core %, busiest other core %) per window {windows}; burner's own share {own:.1f}%"
    best = min(busy for busy, _ in windows)
    assert best >= 50.0 - CPU_TOLERANCE_POINTS, why
    if abs(own - 50.0) <= CPU_TOLERANCE_POINTS and best <= 50.0 + CPU_TOLERANCE_POINTS:
        return  # its own share is right, and at least one window shows the core at 50 ± tolerance
    clean = [busy for busy, other in windows if other <= CPU_CLEAN_OTHER_PERCENT]
    if not clean:  # saturated by others: neither the core's reading nor the burner's share can be judged
        pytest.skip(f"machine too busy to judge the load: {why}")
    assert abs(own - 50.0) <= CPU_TOLERANCE_POINTS, why
    assert min(clean) <= 50.0 + CPU_TOLERANCE_POINTS, why


def test_cpu_children_ignore_sigint(fork_spawn):
    s = CpuStressor(5, cores=1)
    try:
        s.start(fork_spawn)
        assert s.wait_started(5.0)
        (pid,) = s.pids
        os.kill(pid, signal.SIGINT)
        time.sleep(0.2)
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    finally:
        s.stop()
    assert _gone(pid)


def _orphan_maker(conn, base_dir):
    """Start one stressor of each kind, report their pids, then die without stopping them."""
    spawn = _make_spawn("fork", [], daemon=False)
    cpu = CpuStressor(10, cores=1).start(spawn)
    mem = MemoryStressor(16).start(spawn)
    io = IoStressor(file_bytes=256 * 1024, max_total_bytes=MB, dir=base_dir).start(spawn)
    cpu.wait_started(5.0)
    mem.wait_resident(5.0)
    conn.send((cpu.pids + mem.pids + io.pids, io.temp_dir))
    os._exit(0)


def test_children_die_with_their_parent_and_clean_up(tmp_path):
    ctx = multiprocess.get_context("fork")
    here, there = ctx.Pipe()
    maker = ctx.Process(target=_orphan_maker, args=(there, str(tmp_path)))
    pids = []
    try:
        maker.start()
        assert here.poll(10.0), "the intermediate process never reported its stressors"
        pids, temp_dir = here.recv()
        assert len(pids) == 3 and os.path.isdir(temp_dir)
        maker.join(5.0)
        assert _wait_until(lambda: all(_gone(p) for p in pids), 3.0), "a stressor child outlived its parent"
        assert _wait_until(lambda: not os.path.exists(temp_dir), 2.0), "the orphaned I/O worker left its dir"
    finally:
        if maker.is_alive():
            maker.kill()
        maker.join(2.0)
        for p in pids:
            if not _gone(p):
                os.kill(p, signal.SIGKILL)


# ---------------------------------------------------------------- memory


def test_memory_ballast_is_resident_then_freed(spawn):
    s = MemoryStressor(200)
    pid = None
    try:
        s.start(spawn)
        (pid,) = s.pids
        t0 = time.monotonic()
        assert _wait_until(lambda: psutil.Process(pid).memory_info().rss >= 196 * MB, 2.0), (
            f"RSS {psutil.Process(pid).memory_info().rss / MB:.0f} MB after 2 s"
        )
        assert s.wait_resident(max(0.1, 2.0 - (time.monotonic() - t0)))
        st = s.stats()
        assert st["ready"] and st["resident_mb"] >= 196
        assert abs(st["size_error_percent"]) <= 2.0
    finally:
        s.stop()
    assert _gone(pid)
    assert s.stats()["exitcodes"] == [0]


def test_memory_ballast_grows_in_steps(fork_spawn):
    s = MemoryStressor(90, steps=3, step_interval_s=0.4)
    try:
        s.start(fork_spawn)
        assert _wait_until(lambda: s.stats()["steps_done"] >= 1, 5.0)
        first = s.stats()
        assert s.wait_resident(5.0)
        last = s.stats()
    finally:
        s.stop()
    assert first["steps_done"] < 3 and first["resident_mb"] < 60
    assert last["steps_done"] == 3 and last["resident_mb"] >= 88


def test_memory_ballast_with_huge_pages(fork_spawn):
    s = MemoryStressor(64, huge_pages=True)
    try:
        s.start(fork_spawn)
        assert s.wait_resident(5.0)
        st = s.stats()
    finally:
        s.stop()
    assert abs(st["resident_mb"] - 64) <= 64 * 0.02


# ---------------------------------------------------------------- I/O


def test_io_writes_reads_and_round_trips_in_a_private_dir(spawn, tmp_path):
    s = IoStressor(file_bytes=1 * MB, max_total_bytes=4 * MB, tcp=True, workers=1, dir=str(tmp_path))
    try:
        s.start(spawn)
        (pid,) = s.pids
        assert stat.S_IMODE(os.stat(s.temp_dir).st_mode) == 0o700
        time.sleep(2.0)
        conns = psutil.Process(pid).net_connections(kind="inet")
        assert conns, "no TCP socket in the I/O child"
        assert {c.laddr.ip for c in conns} == {"127.0.0.1"}
    finally:
        s.stop()
    st = s.stats()
    assert st["bytes_written"] > 0 and st["bytes_read"] == st["bytes_written"]
    assert st["verify_errors"] == 0 and st["errors"] == {}
    assert st["tcp_round_trips"] > 0 and st["tcp_rtt_p50_ms"] is not None
    assert st["fsync_write_p50_ms"] is not None
    assert st["final_reports"] == 1 and st["exitcodes"] == [0]
    assert not os.path.exists(s.temp_dir)
    assert list(tmp_path.iterdir()) == []


def test_io_without_tcp_does_no_round_trips(fork_spawn, tmp_path):
    s = IoStressor(file_bytes=256 * 1024, max_total_bytes=MB, tcp=False, dir=str(tmp_path))
    try:
        s.start(fork_spawn)
        assert _wait_until(lambda: s.stats()["files"] > 0, 5.0)
    finally:
        s.stop()
    st = s.stats()
    assert st["files"] > 0 and st["tcp_round_trips"] == 0 and st["tcp_rtt_p50_ms"] is None


# ---------------------------------------------------------------- life cycle


def test_stop_leaves_no_child_alive(spawn, tmp_path):
    stressors = [
        CpuStressor(20, cores=1),
        MemoryStressor(32),
        IoStressor(file_bytes=256 * 1024, max_total_bytes=MB, workers=2, dir=str(tmp_path)),
    ]
    try:
        for s in stressors:
            s.start(spawn)
        assert stressors[0].wait_started(15.0) and stressors[1].wait_resident(15.0)
        assert len(_our_children()) == 4
    finally:
        for s in stressors:
            s.stop()
    assert _our_children() == []
    assert all(s.state is StressorState.STOPPED for s in stressors)
    for s in stressors:
        s.stop()  # idempotent


def test_context_manager_stops(fork_spawn):
    with CpuStressor(10, cores=1).start(fork_spawn) as s:
        (pid,) = s.pids
        assert s.state is StressorState.RUNNING
    assert s.state is StressorState.STOPPED and _gone(pid)


def test_lifecycle_misuse_is_a_usage_error(fork_spawn):
    s = CpuStressor(10, cores=1)
    with pytest.raises(UsageError):
        with s:  # never started
            pass
    try:
        s.start(fork_spawn)
        with pytest.raises(UsageError):
            s.start(fork_spawn)
    finally:
        s.stop()

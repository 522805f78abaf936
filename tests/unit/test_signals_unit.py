"""Issue #23 rows 7–9 without a process: the exit codes of signals, the gate, the master's loop on fake
pipes (the monitor's kills are never crashes, a silent monitor is lost in a second, a master that
stopped serving its pool ends the run, a paused run's deadlines move) and the monitor's side of a
stopped master."""

import os
import signal
import time

import psutil
import pytest

from loadgen.config import TIMING, ResourceThresholds
from loadgen.engine import _procfs
from loadgen.engine.load import RunPlan
from loadgen.engine.messages import Breach, Killing, Sample, Watch
from loadgen.engine.monitor import METRIC_MASTER_STOPPED, Monitor
from loadgen.engine.pool import Pool, get_context
from loadgen.engine.signals import Pausable, SignalGate
from loadgen.errors import PRIORITY, STOP_SIGNALS, ExitCode

from test_runner_loop import FakeMonitor, FakePool, run, wait_until

# ---------------------------------------------------------------- exit codes (row 9)


@pytest.mark.parametrize("sig,code", [(signal.SIGHUP, 129), (signal.SIGINT, 130), (signal.SIGUSR1, 138),
                                      (signal.SIGUSR2, 140), (signal.SIGALRM, 142), (signal.SIGTERM, 143)])
def test_a_stopping_signal_is_128_plus_its_number(sig, code):
    assert ExitCode.of_signal(sig) == code and ExitCode.is_signal(code)
    assert sig in STOP_SIGNALS and sig in SignalGate.SIGNALS
    gate = SignalGate()
    gate.deliver(sig)
    assert gate.exit_code == code


def test_other_codes_are_not_signals_and_an_unknown_signal_counts_as_sigterm():
    assert not any(ExitCode.is_signal(c) for c in (0, 1, 2, 3, 4, 141, None))
    assert ExitCode.of_signal(signal.SIGQUIT) == ExitCode.SIGTERM


def test_signals_rank_with_sigterm_below_usage_above_the_verdicts():
    order = [int(c) for c in PRIORITY]
    assert order == [2, 143, 129, 138, 140, 142, 130, 4, 3, 1, 0]
    assert ExitCode.worst([ExitCode.SIGHUP, ExitCode.BREACH, ExitCode.SIGINT]) == ExitCode.SIGHUP
    assert ExitCode.worst([ExitCode.SIGTERM, ExitCode.SIGALRM]) == ExitCode.SIGTERM


def test_the_gate_pauses_what_is_registered_stops_itself_and_resumes_in_reverse(monkeypatch):
    calls = []

    class P(Pausable):
        def __init__(self, name):
            self.name = name

        def pause(self):
            calls.append(("pause", self.name))

        def resume(self):
            calls.append(("resume", self.name))

    def fake_kill(pid, sig):
        calls.append(("kill", pid, sig))

    gate = SignalGate()
    gate.pausables += [P("pool"), P("monitor")]
    monkeypatch.setattr(os, "kill", fake_kill)
    gate.pause_here()
    assert calls == [("pause", "pool"), ("pause", "monitor"), ("kill", os.getpid(), signal.SIGSTOP),
                     ("resume", "monitor"), ("resume", "pool")]
    assert gate.pauses == 1 and gate.received == []  # a pause is not a stop


# ---------------------------------------------------------------- the master's loop (rows 7 and 8)


def _kill_all(pool, sig=signal.SIGTERM):
    for f in pool.fakes:
        f.process.die(-sig)


def test_the_monitors_kills_announced_before_the_deaths_are_never_crashes():
    """24 workers killed by the monitor with SIGTERM, their deaths read before the Breach: exit 3, the
    breach the reason, no crash, no restart (it was exit 1, "worker restart limit (10) reached")."""
    def during(runner, pool):
        wait_until(lambda: runner.out.load_started_at is not None)
        mon = FakeMonitor.instances[-1]
        mon.far.send(Killing(metric="memory_mb", value=1230.0, limit=1024.0, detected_at=time.time()))
        _kill_all(pool)
        time.sleep(0.3)  # every death seen before the Breach
        mon.far.send(Breach(metric="memory_mb", value=1230.0, limit=1024.0, detected_at=time.time(),
                            pool_dead_at=time.time(), killed_pids=tuple(f.pid for f in pool.fakes)))

    runner, pool, out = run(RunPlan(concurrency=24, workers=24, duration_s=30), during=during)
    assert out.exit_code == ExitCode.BREACH
    assert out.stop_reason == "threshold breached: memory_mb = 1230.0 > 1024.0"
    assert not out.crashes and pool.restarts == 0
    assert [b["metric"] for b in out.breaches] == ["memory_mb"]  # the run waited for the Breach


def test_a_breach_after_the_restart_limit_still_ends_the_run_with_exit_3():
    """Deaths taken for crashes (the monitor's notice was held up in its full pipe) reach the restart
    limit; the notice and the Breach that follow raise the verdict to 3, the breach named."""
    def during(runner, pool):
        wait_until(lambda: runner.out.load_started_at is not None)
        _kill_all(pool)
        wait_until(lambda: runner.stopping is not None)
        assert runner.out.exit_code == ExitCode.FAILED  # "worker restart limit (1) reached"
        mon = FakeMonitor.instances[-1]
        mon.far.send(Killing(metric="memory_mb", value=1500.0, limit=1024.0, detected_at=time.time()))
        mon.far.send(Breach(metric="memory_mb", value=1500.0, limit=1024.0, detected_at=time.time(),
                            pool_dead_at=time.time()))

    # The replacement ignores its Stop: the run is still draining when the notice comes.
    runner, pool, out = run(RunPlan(concurrency=4, workers=4, duration_s=30, max_restarts=1),
                            lambda i, g: {"hang_on_stop": True}, during=during)
    assert out.exit_code == ExitCode.BREACH
    assert out.stop_reason == "threshold breached: memory_mb = 1500.0 > 1024.0"


def _silence(mon):
    mon._stop.set()  # no more samples: a stopped monitor


def test_a_silent_monitor_is_lost_within_a_second_and_the_pool_killed():
    t = {}

    def during(runner, pool):
        wait_until(lambda: runner.out.load_started_at is not None)
        t["silent"] = time.monotonic()
        _silence(FakeMonitor.instances[-1])
        wait_until(lambda: runner.out.monitor_lost, timeout_s=5)
        t["lost"] = time.monotonic()

    runner, pool, out = run(RunPlan(concurrency=2, workers=2, duration_s=30), during=during)
    assert out.exit_code == ExitCode.BREACH and out.monitor_lost
    assert out.stop_reason.startswith("monitor lost: no sample for")
    wait_until(lambda: "lost" in t)
    # from the last sample (up to a fake tick before the silence began), within a tick or two of the loop
    assert TIMING.monitor_silent_s - 0.1 <= t["lost"] - t["silent"] < TIMING.monitor_silent_s + 0.5
    assert not out.crashes and all(not f.process.is_alive() for f in pool.fakes)
    assert not FakeMonitor.instances[-1].process.is_alive()  # killed: a stopped monitor never resumes stale


def test_a_silent_monitor_that_is_not_stopped_gets_the_starved_grace():
    """Silent but runnable or asleep (a loaded machine leaves it unscheduled): not lost after
    monitor_silent_s, only after monitor_starved_s more. (The fake's pid is made this test's own, whose
    state is R or S: never T.)"""
    t = {}

    def during(runner, pool):
        wait_until(lambda: runner.out.load_started_at is not None)
        mon = FakeMonitor.instances[-1]
        mon.process.pid = os.getpid()
        t["silent"] = time.monotonic()
        _silence(mon)
        time.sleep(TIMING.monitor_silent_s + 0.5)
        t["lost_early"] = runner.out.monitor_lost
        wait_until(lambda: runner.out.monitor_lost, timeout_s=TIMING.monitor_starved_s + 5)
        t["lost"] = time.monotonic()

    runner, pool, out = run(RunPlan(concurrency=2, workers=2, duration_s=30), during=during)
    wait_until(lambda: "lost" in t)
    assert t["lost_early"] is False
    assert out.exit_code == ExitCode.BREACH and out.stop_reason.endswith("(stopped or hung)")
    assert t["lost"] - t["silent"] >= TIMING.monitor_silent_s + TIMING.monitor_starved_s - 0.1


def test_a_monitor_lost_during_the_drain_is_still_exit_3():
    """It was exit 0 "PASS": the run was already stopping (duration reached) when the monitor went."""
    def during(runner, pool):
        wait_until(lambda: runner.stopping is not None)
        _silence(FakeMonitor.instances[-1])

    runner, pool, out = run(RunPlan(concurrency=2, workers=2, duration_s=0.3),
                            lambda i, g: {"hang_on_stop": True}, during=during)
    assert out.exit_code == ExitCode.BREACH and out.monitor_lost
    assert out.stop_reason.startswith("monitor lost")


def test_a_master_that_did_not_serve_its_pool_past_the_bound_ends_the_run_without_crashes():
    """The master finds its own heartbeat older than TIMING.master_silent_s (it was stopped): the
    workers have ended the pool themselves; their deaths are not crashes, the run ends with exit 3."""
    def during(runner, pool):
        wait_until(lambda: runner.out.load_started_at is not None)
        _kill_all(pool, signal.SIGKILL)  # what the workers' watchdog does…
        pool.heartbeat._at[0] -= int((TIMING.master_silent_s + 1) * 1e9)  # …when the master was stopped

    runner, pool, out = run(RunPlan(concurrency=2, workers=2, duration_s=30), during=during)
    assert out.exit_code == ExitCode.BREACH
    assert out.stop_reason.startswith("the master was stopped for") and "ended itself" in out.stop_reason
    assert not out.crashes and pool.restarts == 0


def test_a_stopped_master_breach_from_the_monitor_is_exit_3_even_when_breaches_are_expected():
    def during(runner, pool):
        wait_until(lambda: runner.out.load_started_at is not None)
        FakeMonitor.instances[-1].far.send(Breach(metric=METRIC_MASTER_STOPPED, value=2.0, limit=2.0,
                                                  detected_at=time.time(), pool_dead_at=time.time()))

    runner, pool, out = run(RunPlan(concurrency=2, workers=2, duration_s=30, expect_breach=True), during=during)
    assert out.exit_code == ExitCode.BREACH
    assert out.stop_reason.startswith("the master was stopped (SIGSTOP) for 2.0 s: the monitor killed the pool")


class _SignalledPool(FakePool):
    """A fake pool that records the group signals that do not kill (SIGSTOP, SIGCONT)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.group_signals = []

    def kill_group(self, sig=signal.SIGKILL):
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            self.group_signals.append(sig)
            return
        super().kill_group(sig)


def test_a_pause_stops_the_pool_first_and_moves_the_deadlines_by_its_length():
    made = {}

    def pool_factory(ctx, registry, template):
        made["pool"] = _SignalledPool(ctx, registry, template, lambda i, g: {})
        return made["pool"]

    from loadgen.engine.contain import NoContainment
    from loadgen.engine.runner import Runner

    runner = Runner(RunPlan(concurrency=2, workers=2, duration_s=0.5), ResourceThresholds(max_cpu_percent=100),
                    pool_factory=pool_factory, monitor_factory=FakeMonitor, containment_factory=NoContainment)
    signalled = []
    runner._signal_helpers = signalled.append  # no real monitor process to stop here
    seen = {}

    def drive():
        wait_until(lambda: "pool" in made and runner.load is not None and runner.load.end_at is not None)
        pool = made["pool"]
        seen["end_at"] = runner.load.end_at
        runner.pause()
        assert pool.group_signals == [signal.SIGSTOP] and signalled == [signal.SIGSTOP]  # the pool first
        time.sleep(0.4)  # (the loop runs on here; a real pause stops it: tests/faults covers a long one)
        runner.resume()
        seen["moved_s"] = runner.load.end_at - seen["end_at"]
        assert pool.group_signals == [signal.SIGSTOP, signal.SIGCONT] and signalled[-1] == signal.SIGCONT

    import threading

    th = threading.Thread(target=drive, daemon=True)
    th.start()
    out = runner.run()
    th.join(5)
    assert seen["moved_s"] == pytest.approx(0.4, abs=0.1)
    assert out.exit_code == ExitCode.OK and out.stop_reason == "duration reached"  # not "the master was stopped"
    assert not out.crashes


def test_an_operations_age_leaves_out_the_pauses():
    pool = Pool(get_context("fork"), None, type("T", (), {"workers": 1, "slots": 1})())
    pool.pauses_ns = [(100, 400), (600, 700)]
    assert pool.paused_ns(0, 1000) == 400
    assert pool.paused_ns(300, 650) == 150  # 300–400 and 600–650
    assert pool.paused_ns(800, 1000) == 0


# ---------------------------------------------------------------- the monitor's side (row 7, row 8)


class FakeConn:
    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(msg)


class FakeStat:
    """The master's /proc/PID/stat, in the state the test sets (``state``)."""

    def __init__(self, state):
        self.state = state
        self.real = _procfs.read_stat(os.getpid())

    def read(self):
        return self.real._replace(state=self.state)

    def close(self):
        pass


def _monitor(state):
    """A monitor of this process as its master, whose stat reads ``state`` (``m._master[2].state``); this
    process watched as a worker, and a kill that records instead of killing."""
    m = Monitor(FakeConn(), ResourceThresholds(max_cpu_percent=100), 0.1, master_pid=os.getpid(),
                master_create_time=psutil.Process().create_time())
    m._master[2].close()
    m._master = (m._master[0], m._master[1], FakeStat(state))
    m.handle(Watch(os.getpid(), psutil.Process().create_time(), pgid=None, role="worker"))
    m.sampler.sample_system = lambda now: (10.0, (10.0,), 8000.0, 0.0, {})
    kills = []

    def kill_pool():
        kills.append([type(x).__name__ for x in m.conn.sent if not isinstance(x, Sample)])
        return time.time(), (os.getpid(),)

    m.kill_pool = kill_pool
    return m, kills


def test_a_master_stopped_for_master_stopped_s_has_its_pool_killed_named_and_announced_first():
    ticks = round(TIMING.master_stopped_s / 0.1)
    m, kills = _monitor("T")
    try:
        for _ in range(ticks - 1):
            m.tick()
        assert not kills
        m.tick()
        assert kills == [["Killing"]]  # the master was told before the kill
        breach = [x for x in m.conn.sent if isinstance(x, Breach)]
        assert [b.metric for b in breach] == [METRIC_MASTER_STOPPED]
        assert breach[0].value == pytest.approx(TIMING.master_stopped_s)
        m.tick()
        assert len(kills) == 1  # once
    finally:
        m.close()


@pytest.mark.parametrize("states", [["T"] * 15 + ["S"] + ["T"] * 15, ["t"] * 31])
def test_a_master_that_runs_between_stops_or_is_traced_is_not_a_stopped_master(states):
    m, kills = _monitor(states[0])
    try:
        for state in states:
            m._master[2].state = state
            m.tick()
        assert not kills
    finally:
        m.close()


def test_a_breach_is_announced_before_the_pool_is_killed():
    m, kills = _monitor("S")
    try:
        m.thresholds = ResourceThresholds(max_cpu_percent=100, max_memory_mb=1)
        from loadgen.engine.thresholds import ThresholdEvaluator

        m.evaluator = ThresholdEvaluator(m.thresholds)
        m.tick()
        assert kills == [["Killing"]]
        assert [type(x).__name__ for x in m.conn.sent if not isinstance(x, Sample)] == ["Killing", "Breach"]
    finally:
        m.close()

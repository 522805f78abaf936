"""The master's loop without a process: the Runner drives fake workers and a fake monitor.

The fakes are the Runner's pool and monitor factories. A fake worker is a
thread on the far end of a real pipe that behaves as a worker's main
thread does (Ready, a ResultBatch per tick, WorkerExit on Stop) and writes
the same shared counters — in a bytearray instead of shared memory; its
"process" is a pipe whose write end closes when it dies, which is what a
sentinel is. Nothing is forked, so each case asserts the accounting and
the exit code of one fault in a fraction of a second.
"""

import os
import signal
import threading
import time

import multiprocess
import pytest

from loadgen.config import ResourceThresholds
from loadgen.engine.load import RunPlan
from loadgen.engine.messages import Breach, Ready, ResultBatch, Sample, Stop, WorkerExit, WorkOrder
from loadgen.engine.pool import Pool, WorkerHandle
from loadgen.engine.runner import Runner
from loadgen.engine.contain import NoContainment
from loadgen.engine.counters import SLOT_FIELDS, STARTED, SUCCEEDED
from loadgen.errors import ExitCode
from loadgen.analysis.stats import Sparse

TICK_S = 0.02
FREE = ResourceThresholds(max_cpu_percent=100)


class FakeProcess:
    """A process as the Runner sees one: pid, sentinel, is_alive, exitcode, join/terminate/kill/close."""

    def __init__(self, pid):
        self.pid = pid
        self.sentinel, self._w = os.pipe()  # readable (EOF) once the "process" has died
        self.exitcode = None

    def is_alive(self):
        return self.exitcode is None

    def die(self, exitcode):
        if self.exitcode is None:
            self.exitcode = exitcode
            os.close(self._w)

    def join(self, timeout=None):
        pass

    def terminate(self):
        self.die(-signal.SIGTERM)

    def kill(self):
        self.die(-signal.SIGKILL)

    def close(self):
        pass


class FakeWorker(threading.Thread):
    """The far end of one worker's pipe; ``ops_per_tick`` operations complete each tick while active.

    ``hang_on_stop``: ignore Stop (a drain that never ends). ``die_after``: after that many ticks,
    start two operations and die with SIGKILL without finishing them.
    """

    def __init__(self, index, pid, conn, counters, process, *, ops_per_tick=3, hang_on_stop=False, die_after=None):
        super().__init__(daemon=True, name=f"fake-worker-{index}")
        self.index, self.pid, self.conn, self.counters, self.process = index, pid, conn, counters, process
        self.ops_per_tick, self.hang_on_stop, self.die_after = ops_per_tick, hang_on_stop, die_after
        self.active = 0
        self.orders = []
        self.latencies_sent = 0

    def run(self):
        try:
            self.conn.send(Ready(self.index, self.pid, 1.0))
            ticks = 0
            while self.process.is_alive():
                if self.conn.poll(TICK_S):
                    msg = self.conn.recv()
                    self.orders.append(msg)
                    if isinstance(msg, WorkOrder) and msg.active_slots is not None:
                        self.active = msg.active_slots
                    elif isinstance(msg, Stop) and not self.hang_on_stop:
                        self.conn.send(WorkerExit(self.index, "stopped"))
                        self.process.die(0)
                        return
                    continue
                ticks += 1
                if self.die_after is not None and ticks >= self.die_after:
                    self.counters[STARTED] += 2  # two operations in flight when it dies
                    self.process.die(-signal.SIGKILL)
                    return
                if self.active:
                    self._complete(self.ops_per_tick)
        except (EOFError, OSError):
            return  # the master closed its end: the worker is retired

    def _complete(self, n):
        self.counters[STARTED] += n
        self.counters[SUCCEEDED] += n
        self.latencies_sent += n
        self.conn.send(ResultBatch(index=self.index, second=int(time.time()), started=n, succeeded=n, failed=0,
                                   dropped=0, in_flight=0, latency=Sparse.of([1000] * n)))


class FakePool(Pool):
    """A Pool whose workers are :class:`FakeWorker` threads (``behaviour(index, generation)`` → kwargs)."""

    def __init__(self, ctx, registry, template, behaviour):
        super().__init__(ctx, registry, template)
        self.behaviour = behaviour
        self.fakes = []
        self.started = {}

    def start_worker(self, index):
        generation = self.started[index] = self.started.get(index, 0) + 1
        pid = 4_000_000 + 10 * index + generation  # beyond pid_max: no real process has it
        counters = memoryview(bytearray(8 * self.slots * SLOT_FIELDS)).cast("q")
        here, there = multiprocess.Pipe(duplex=True)
        process = FakeProcess(pid)
        self.handles[index] = WorkerHandle(index, process, here, None, counters, pid=pid)
        fake = FakeWorker(index, pid, there, counters, process, **self.behaviour(index, generation))
        self.fakes.append(fake)
        fake.start()
        return self.handles[index]

    def kill(self, handle, sig=signal.SIGKILL):
        handle.process.die(-sig)

    def kill_group(self, sig=signal.SIGKILL):
        for h in self.handles.values():
            h.process.die(-sig)


class FakeMonitor:
    """The monitor handle: a pipe the test writes Samples and Breaches into; watches recorded."""

    instances = []

    def __init__(self, thresholds, interval_s):
        self.conn, self.far = multiprocess.Pipe(duplex=True)
        self.process = FakeProcess(3_999_999)
        self.watched = {}
        self._stop = threading.Event()
        FakeMonitor.instances.append(self)

    def start(self, ctx):
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):  # a sample per tick, as the real one sends
        while not self._stop.wait(TICK_S):
            try:
                self.far.send(Sample(t=time.time(), pool_memory_mb=10.0, pool_rss_mb=20.0, pool_cpu_percent=5.0,
                                     cpu_percent=7.0, per_cpu=(7.0,), available_mb=8000.0, swap_used_mb=0.0))
            except (OSError, ValueError):
                return

    def watch(self, pid, create_time=None, pgid=None, role="worker"):
        self.watched[pid] = role

    def unwatch(self, pid):
        self.watched.pop(pid, None)

    def contain(self, spec):
        self.contained = spec

    def stop(self, timeout_s=2.0):
        self._stop.set()
        self.process.die(0)
        return 0


def run(plan, behaviour=lambda index, generation: {}, during=None, thresholds=FREE):
    """Run ``plan`` on fakes; ``during(runner, pool)`` runs in a thread once the pool is up."""
    made = {}

    def pool_factory(ctx, registry, template):
        made["pool"] = FakePool(ctx, registry, template, behaviour)
        return made["pool"]

    runner = Runner(plan, thresholds, pool_factory=pool_factory, monitor_factory=FakeMonitor,
                    containment_factory=NoContainment)
    if during is not None:
        def drive():
            while "pool" not in made:
                time.sleep(0.005)
            during(runner, made["pool"])

        threading.Thread(target=drive, daemon=True).start()
    out = runner.run()
    return runner, made["pool"], out


def wait_until(pred, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_batches_are_accounted_exactly_and_the_duration_ends_the_run():
    runner, pool, out = run(RunPlan(concurrency=4, workers=2, duration_s=0.6))
    assert out.exit_code == ExitCode.OK and out.stop_reason == "duration reached"
    sent = sum(f.latencies_sent for f in pool.fakes)
    assert sent > 0
    acc = out.accounting
    assert (acc.dispatched, acc.succeeded, acc.failed, acc.crashed, acc.timed_out) == (sent, sent, 0, 0, 0)
    assert out.latency.count == sent  # every latency of every batch, merged
    assert sum(r["succeeded"] for r in out.seconds) == sent  # and every one in a per-second record
    orders = [m.active_slots for f in pool.fakes for m in f.orders if isinstance(m, WorkOrder)]
    assert sorted(orders) == [2, 2]  # the target in flight split over the two ready workers
    assert set(FakeMonitor.instances[-1].watched) == set()  # watched while alive, unwatched when gone


def test_a_worker_that_dies_mid_operation_has_its_in_flight_counted_crashed_and_is_replaced():
    def behaviour(index, generation):
        return {"die_after": 5} if (index, generation) == (0, 1) else {}

    runner, pool, out = run(RunPlan(concurrency=4, workers=2, duration_s=0.8), behaviour)
    assert out.exit_code == ExitCode.OK
    assert pool.restarts == 1 and pool.started == {0: 2, 1: 1}
    (crash,) = out.crashes
    assert crash["worker"] == 0 and crash["crashed"] == 2 and "SIGKILL" in crash["exit"]
    acc = out.accounting
    assert acc.crashed == 2 and acc.timed_out == 0
    assert acc.dispatched == acc.succeeded + acc.failed + acc.crashed + acc.timed_out


def test_a_breach_from_the_monitor_stops_the_run_with_exit_3_and_loses_no_operation():
    def during(runner, pool):
        wait_until(lambda: runner.out.load_started_at is not None and sum(f.latencies_sent for f in pool.fakes) > 5)
        for f in pool.fakes:  # one operation each in flight when the pool is killed
            f.counters[STARTED] += 1
        FakeMonitor.instances[-1].far.send(Breach(metric="memory_mb", value=2048.0, limit=1024.0,
                                                  detected_at=time.time(), pool_dead_at=time.time()))

    runner, pool, out = run(RunPlan(concurrency=2, workers=2, duration_s=30), during=during)
    assert out.exit_code == ExitCode.BREACH
    assert out.stop_reason == "threshold breached: memory_mb = 2048.0 > 1024.0"
    assert [b["metric"] for b in out.breaches] == ["memory_mb"]
    assert not out.crashes and pool.restarts == 0  # killed by the breach: not crashes, not replaced
    acc = out.accounting
    assert acc.crashed == 2 and acc.dispatched == acc.succeeded + acc.failed + acc.crashed + acc.timed_out
    assert out.duration_s < 10


def test_a_signal_during_the_drain_leaves_the_drain_alone_and_a_second_one_kills_the_pool():
    def during(runner, pool):
        wait_until(lambda: runner.stopping is not None)  # the drain began (duration reached)
        for f in pool.fakes:
            f.counters[STARTED] += 1  # still running an operation each
        runner.gate.deliver(signal.SIGINT)
        time.sleep(0.2)
        assert all(f.process.is_alive() for f in pool.fakes)  # one signal: the drain goes on
        runner.gate.deliver(signal.SIGINT)

    runner, pool, out = run(RunPlan(concurrency=2, workers=2, duration_s=0.3),
                            lambda i, g: {"hang_on_stop": True}, during=during)
    assert out.stop_reason == "duration reached" and out.exit_code == ExitCode.OK
    assert runner.gate.exit_code == ExitCode.SIGINT  # what the command ends with (api.Session reads it)
    acc = out.accounting
    assert acc.crashed == 2 and acc.dispatched == acc.succeeded + acc.crashed
    assert out.duration_s < runner.plan.stop_grace_s  # killed at the second signal, not after the grace


def test_a_lost_monitor_stops_the_run_with_exit_3():
    def during(runner, pool):
        wait_until(lambda: runner.out.load_started_at is not None)
        FakeMonitor.instances[-1].process.die(-signal.SIGKILL)

    runner, pool, out = run(RunPlan(concurrency=2, workers=1, duration_s=30), during=during)
    assert out.exit_code == ExitCode.BREACH and out.monitor_lost
    assert out.stop_reason.startswith("monitor lost: monitor process died")


@pytest.mark.parametrize("operations", [7, 40])
def test_an_operations_bound_run_hands_out_exactly_its_quota(operations):
    runner, pool, out = run(RunPlan(concurrency=2, workers=2, operations=operations),
                            lambda i, g: {"ops_per_tick": 1})
    # the fakes complete whatever is active; the master's quota is what it handed out
    given = sum(m.add_quota for f in pool.fakes for m in f.orders if isinstance(m, WorkOrder) and m.add_quota)
    assert given == operations
    assert out.stop_reason in ("operations done", "duration reached")

"""The master: runs one load plan through a worker pool under a monitor.

::

      ┌────────────────────────── master (Runner.run) ───────────────────────────┐
      │ load model → WorkOrders · per-second aggregator · accounting · events     │
      │ blocks in ONE place: connection.wait(worker conns + sentinels,            │
      │                      monitor conn + sentinel, signal wake-up pipe)        │
      └──┬─────────────────▲──────────────────┬────────────────────────▲─────────┘
         │ WorkOrder/Stop  │ Ready/ResultBatch│ Watch/Unwatch/Stop     │ Sample/Breach
         │ (worker end of  │ WorkerExit/Error │ (monitor end of        │
         ▼  its own pipe)  │                  ▼  its pipe)             │
      ┌───────────┐ ┌───────────┐       ┌─────────────────────────────┴───┐
      │ worker 0  │ │ worker 1  │ …     │ monitor: psutil every 100 ms;    │
      │ slots 0…S │ │ slots 0…S │       │ on a breach kills the pool's     │
      └─────┬─────┘ └─────┬─────┘       │ process group itself             │
            └── shared int64 counters ──┘ (read by the master: accounting  │
                                          that survives a dead worker)     │
                                        └──────────────────────────────────┘

Who writes what: workers write only their own shared counters and their
pipe; the monitor writes only its pipe (and signals the pool); the master
owns every file in the run directory. Workers ship a batch once a second,
aligned on wall-clock seconds; the master writes second S of
``timeseries.jsonl`` once every worker has reported past it (or
``TIMING.second_grace_s`` later).

Roles beside this loop: ``load.py`` decides the work orders (the load
model), ``outcome.py`` aggregates what comes back, ``signals.py`` turns
SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2/SIGALRM into a graceful stop and SIGTSTP
into a pause of the whole run (the Runner is its :class:`~.signals.Pausable`),
``heartbeat.py`` lets the pool end itself under a stopped master, ``pool.py`` and ``monitor.py`` start
the processes (a Runner takes factories for both, so its loop is
unit-tested with fakes).
"""

from __future__ import annotations

import logging
import os
import signal
import time

from ..config import TIMING, ResourceThresholds
from ..errors import ExitCode, ThresholdBreached, describe_exitcode
from ..analysis.stats import Accounting, Histogram
from ..streams import EVENTS, TIMESERIES, EventLog, JsonLines
from . import _proc
from .contain import Containment
from .faults import FaultHandling
from .load import LoadModel
from .messages import (Breach, Exceeded, Killing, MonitorError, Ready, ResultBatch, Sample, Stop, TargetMisused,
                       WorkerError, WorkerExit)
from .monitor import METRIC_MASTER_STOPPED
from .monitor_handle import SystemResourceMonitor
from .outcome import RunOutcome, Seconds
from .pool import Pool, ProcessRegistry, get_context
from .signals import Pausable, SignalGate
from .worker import WorkerSpec

log = logging.getLogger("loadgen.runner")

WORKER_LOG = "workers.log"  # what targets print goes here


class Runner(FaultHandling, Pausable):
    """Runs one :class:`~loadgen.engine.load.RunPlan`. Use :meth:`run`; it always returns a
    :class:`~loadgen.engine.outcome.RunOutcome` (or raises ``UsageError`` before any load).

    ``pool_factory(ctx, registry, template)`` and ``monitor_factory(thresholds, interval_s)`` make
    the pool and the monitor handle (default: the real ones); ``stressors`` run beside the pool;
    ``on_second(runner, record)`` sees every per-second record (scenarios watch the run with it);
    ``gate``: the command's :class:`SignalGate` (None: the Runner installs its own);
    ``containment_factory()``: the run's :class:`~loadgen.engine.contain.Containment`.
    """

    def __init__(self, plan, thresholds=None, run_dir=None, progress=None, registry=None, phase=None,
                 stressors=(), on_second=None, gate=None, pool_factory=Pool, monitor_factory=SystemResourceMonitor,
                 containment_factory=Containment):
        self.thresholds = thresholds or ResourceThresholds()
        self.plan = plan.validated(self.thresholds)
        self.phase = phase or plan.name
        self.run_dir = run_dir
        self.progress = progress  # callable(runner, second_record) or None
        self.on_second = on_second
        self.stressors = _Stressors(stressors)
        self.out = RunOutcome(self.plan, self.thresholds, run_dir=run_dir)
        self.seconds = Seconds(self.out, self.phase, open_model=self.plan.rate is not None)
        self.ctx = get_context(self.plan.start_method)
        self.registry = registry or ProcessRegistry(self.ctx)
        self.pool_factory, self.monitor_factory = pool_factory, monitor_factory
        self.contain = containment_factory()
        self.pool = self.monitor = self.load = self.events = self.timeseries = None
        self.retired = Accounting()  # what the workers that left did: the run's accounting
        self.stopping = None  # (reason, exit_code) once a stop began
        self.stop_deadline = None
        self._kill_deadline = None  # once the pool was killed during a stop: when to stop waiting for it
        self._stop_request = None
        self._own_gate = gate is None
        self.gate = gate or SignalGate()
        self._wake = None
        self._last_sample_at = None
        self._hard_end = None  # CLOCK_MONOTONIC: max_execution_time_seconds from the loop's start
        self._monitor_killing = None  # the monitor's Killing, until its Breach says the pool is dead
        self._paused_at_ns = None  # CLOCK_MONOTONIC ns the run paused (SIGTSTP), until it resumes
        self._pauses_done = []  # seconds of each pause, for the loop to write as events

    def run(self):
        """Start the monitor, the stressors and the pool; apply the load until a stop; tear down.
        Blocks for the run. Always ends with every process of the run gone and the streams closed."""
        from ..workload.targets import check_target

        check_target(self.plan.target)
        installed = self.gate.install() if self._own_gate else False
        self._wake = self.gate.open_wakeup()
        self._open_streams()
        self.gate.pausables.append(self)
        try:
            self.out.started_at = time.time()
            self.events.emit("phase", name="start", plan=self.plan.to_dict(), thresholds=self.thresholds.to_dict())
            self.contain.start()
            self.registry.cgroup = self.contain.cgroup
            self._start_monitor()
            self.stressors.start(self.registry, self.monitor, self.events.emit)
            self._start_pool()
            self._loop()
        finally:
            self._teardown()
            self.gate.pausables.remove(self)
            self.gate.close_wakeup()
            if installed:
                self.gate.restore()
            self.out.ended_at = self.out.ended_at or time.time()
            self._finish()
        return self.out

    def request_stop(self, reason, exit_code=ExitCode.OK):
        """Ask the loop to stop gracefully at its next turn (safe from ``on_second``)."""
        self._stop_request = (reason, exit_code)

    # ================================================================== start

    def _open_streams(self):
        folder = self.run_dir
        self.events = EventLog(os.path.join(folder, EVENTS) if folder else os.devnull, phase=self.phase)
        self.timeseries = JsonLines(os.path.join(folder, TIMESERIES) if folder else os.devnull)

    def _start_monitor(self):
        self.monitor = self.monitor_factory(self.thresholds, interval_s=self.plan.sample_interval_s)
        self.monitor.start(self.ctx)
        self.registry.adopt(self.monitor.process, "monitor")
        self.monitor.contain(self.contain.spec(self.monitor.process.pid))
        self._last_sample_at = time.monotonic()
        self._await_monitor()

    def _await_monitor(self):
        """Wait (up to ``TIMING.monitor_start_s``) until the monitor answers — its first Sample — or dies,
        or a signal comes: the pool never runs before its guard, and the monitor's silence (1 s) counts
        from its first answer, not from a spawned interpreter's imports. The loop reads what came."""
        from multiprocess.connection import wait

        mon = self.monitor
        if mon.conn is None or mon.process is None:
            return
        deadline = time.monotonic() + TIMING.monitor_start_s
        while not self.gate.received and time.monotonic() < deadline:
            ready = wait([mon.conn, mon.process.sentinel, self._wake], deadline - time.monotonic())
            if mon.conn in ready:
                self._last_sample_at = time.monotonic()
                return
            if mon.process.sentinel in ready:
                return  # dead: the loop's first turn finds it so
            if self._wake in ready:
                self.gate.drain()

    def _start_pool(self):
        p = self.plan
        if p.rate is not None:
            self.out.response, self.out.lateness = Histogram(), Histogram()
        self.load = LoadModel(p, self.thresholds.max_concurrent_operations, self.out, self.events.emit)
        self.pool = self.pool_factory(self.ctx, self.registry, WorkerSpec(
            index=0, slots=p.slots, target=p.target, nice=p.nice, blas_threads=p.blas_threads,
            log_path=os.path.join(self.run_dir, WORKER_LOG) if self.run_dir else None,
            log_cap_bytes=None if p.max_output_mb is None else int(p.max_output_mb * 2**20),
            bounded=p.operations is not None, schedule=self.load.schedule, stride=p.workers, workers=p.workers,
            max_lateness_s=p.max_lateness_s, breaker=p.breaker, op_timeout_s=p.op_timeout_s))
        self.load.attach(self.pool)
        self.pool.start(interrupted=lambda: bool(self.gate.received))
        self.events.emit("phase", name="pool_start", workers=p.workers, slots=p.slots, pgid=self.pool.pgid,
                         started=len(self.pool.handles), containment=self.contain.mechanism)

    # ================================================================== the loop

    def _loop(self):
        from multiprocess.connection import wait

        self._hard_end = time.monotonic() + self.thresholds.max_execution_time_seconds
        while True:
            timeout = TIMING.tick_s
            held = self.load.held
            at = self.plan.start_gate.at if held else None
            left = at - time.time() if at is not None else 0.0
            if 0 < left < timeout:
                timeout = left  # wake on the instant, not up to a tick after it
            ready = wait(self._wait_objects(), timeout)
            self._served(time.monotonic())
            for obj in sorted(ready, key=self._reading_order):
                self._ready(obj)
            if held and self.stopping is None:
                self.load.maybe_start()
            self._retire_dead()
            self.contain.reap()
            now = time.monotonic()
            while self._pauses_done:
                self.events.emit("paused", seconds=round(self._pauses_done.pop(0), 3),
                                 reason="SIGTSTP: the pool, the monitor and the master stopped until SIGCONT")
            if self.stopping is None:
                self._check_stop(now, self._hard_end)
            elif len(self.gate.received) > 1:
                self._kill_pool("second signal: killing the pool now", now)
            elif now >= self._hard_end:
                self._kill_pool("max_execution_time_seconds reached while stopping: killing the pool", now)
            self._check_timeouts()
            self._check_monitor(now)
            self._write_seconds(final=False)
            if self.stopping is not None:
                if not self.pool.handles and self._monitor_killing is None:
                    self.out.load_ended_at = time.time()
                    return
                if self.stop_deadline is not None and now >= self.stop_deadline:
                    self._kill_pool("drain grace exceeded: killing the pool", now, grace_s=self.plan.stop_grace_s)
                if self._kill_deadline is not None and now >= self._kill_deadline:
                    self._force_retire("alive after SIGKILL")

    def _served(self, now):
        """Every turn of the loop: the pool feels its master (``engine.heartbeat``). A master that finds
        it has not served the pool past ``TIMING.master_silent_s`` (it was stopped: SIGSTOP, not a
        Ctrl-Z pause) knows the workers ended the pool themselves: the run ends, exit 3."""
        late_s = self.pool.heartbeat.age_s()
        if late_s > TIMING.master_silent_s and self.pool.handles:
            self._read_monitor()  # the monitor may have killed the pool first: its Breach says why
            self.load.broken = True  # the workers' deaths are the watchdog's, not crashes
            self._escalate(f"the master was stopped for {late_s:.1f} s: its pool ended itself (a pool never "
                           f"runs more than {TIMING.master_silent_s:g} s without its master)", ExitCode.BREACH)
            self.pool.kill_group()
        self.pool.beat()
        if late_s > self._monitor_silence_limit():
            self._last_sample_at = now  # the master could not read: the monitor's silence is not its own

    def _reading_order(self, obj):
        """Ready objects in the order they are read: the monitor's messages first (a Killing explains
        the worker deaths of the same round), then the workers' pipes, then their sentinels."""
        mon = self.monitor
        if mon is not None and mon.conn is not None and obj is mon.conn:
            return 0
        if obj == self._wake:
            return 1
        if self.pool.by_conn(obj) is not None:
            return 2
        return 3

    # ================================================================== pause (SIGTSTP)

    def pause(self):
        """SIGTSTP (the gate, in the master's signal handler): stop the pool, the stressors and the
        monitor, in that order, before the master stops itself — the pool never runs unguarded."""
        self._paused_at_ns = time.monotonic_ns()
        if self.pool is not None:
            self.pool.kill_group(signal.SIGSTOP)
        self._signal_helpers(signal.SIGSTOP)

    def resume(self):
        """SIGCONT after :meth:`pause`: the deadlines move by the pause (a paused run's duration,
        operation timeouts and time limit count running time), the heartbeat and the monitor's
        silence start afresh, then the monitor, the stressors and the pool continue."""
        if self._paused_at_ns is None:
            return
        start_ns, end_ns = self._paused_at_ns, time.monotonic_ns()
        self._paused_at_ns = None
        paused_s = (end_ns - start_ns) / 1e9
        self._last_sample_at = time.monotonic()
        for name in ("_hard_end", "stop_deadline", "_kill_deadline"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name) + paused_s)
        if self.load is not None:
            for name in ("end_at", "started_mono"):
                if getattr(self.load, name) is not None:
                    setattr(self.load, name, getattr(self.load, name) + paused_s)
        self._pauses_done.append(paused_s)
        if self.pool is not None:
            self.pool.pauses_ns.append((start_ns, end_ns))
            self.pool.beat()  # before the pool continues: its watchdog must not take the pause for a stop
        self._signal_helpers(signal.SIGCONT)
        if self.pool is not None:
            self.pool.kill_group(signal.SIGCONT)

    def _signal_helpers(self, sig):
        """Signal the monitor and the stressors (our unreaped children: their pids are theirs)."""
        procs = [p for role, p in self.registry.procs if role in ("stressor", "monitor")]
        if self.monitor is not None and self.monitor.process is not None and self.monitor.process not in procs:
            procs.append(self.monitor.process)
        for p in procs:
            try:
                if p.is_alive():
                    os.kill(p.pid, sig)
            except (OSError, ValueError, AssertionError):
                pass

    def _kill_pool(self, reason, now, **fields):
        """SIGKILL the pool (again, on every call); the first call logs ``reason`` and starts the
        ``TIMING.kill_wait_s`` after which the workers still there are retired as they are."""
        if self._kill_deadline is None:
            self.events.emit("stop", reason=reason, **fields)
            self._kill_deadline = now + TIMING.kill_wait_s
        self.stop_deadline = None
        self.pool.kill_group()

    def _check_stop(self, now, hard_end):
        """Begin a stop if anything asks for one (in this order), else apply the load."""
        p, received = self.plan, self.gate.received
        if received:
            self._begin_stop("interrupted by " + signal.Signals(received[0]).name, ExitCode.of_signal(received[0]))
        elif self.load.duration_up(now):
            self._begin_stop("duration reached", ExitCode.OK)
        elif now >= hard_end:
            self.events.emit("timeout", limit_s=self.thresholds.max_execution_time_seconds)
            self._begin_stop("max_execution_time_seconds reached", ExitCode.OK)
        elif p.stop_file and os.path.exists(p.stop_file):
            self.events.emit("stop", reason="stop file", path=p.stop_file)
            self._begin_stop(f"stop file {p.stop_file} appeared", ExitCode.OK)
        elif self.load.operations_done():
            self._begin_stop("operations done", ExitCode.OK)
        elif self._stop_request is not None:
            self._begin_stop(*self._stop_request)
        elif self.timeseries.error or self.events.error:
            err = self.timeseries.error or self.events.error
            self._begin_stop(f"cannot write the run directory: {err.strerror or err}", ExitCode.USAGE)
        else:
            self.load.apply(now)

    def _wait_objects(self):
        objs = [self._wake]
        for h in self.pool.handles.values():
            if not h.conn.closed:
                objs.append(h.conn)
            objs.append(h.process.sentinel)
        if self.monitor is not None and self.monitor.conn is not None:
            objs.append(self.monitor.conn)
            objs.append(self.monitor.process.sentinel)
        return objs

    def _ready(self, obj):
        if obj == self._wake:
            self.gate.drain()
            return
        mon = self.monitor
        if mon is not None and mon.conn is not None and obj is mon.conn:
            self._read_monitor()
            return
        if mon is not None and mon.process is not None and obj == mon.process.sentinel:
            mon.process.join(0.5)
            self._monitor_lost(f"monitor process died ({describe_exitcode(mon.process.exitcode)})")
            return
        h = self.pool.by_conn(obj)
        if h is not None:
            try:
                while h.conn.poll():
                    self._dispatch(h.conn.recv(), h)
            except (EOFError, OSError):
                h.conn.close()
            return
        h = self.pool.by_sentinel(obj)
        if h is not None:
            self._worker_gone(h)

    # ================================================================== messages

    def _dispatch(self, msg, handle):
        if isinstance(msg, ResultBatch):
            for t, old, new, reason in msg.breaker:
                record = self.events.emit("breaker", t=t, worker=msg.index, state=new, previous=old, reason=reason)
                self.out.breaker_events.append(record)
            self.seconds.add_batch(msg)
        elif isinstance(msg, Sample):
            self._last_sample_at = time.monotonic()
            self.seconds.add_sample(msg)
        elif isinstance(msg, Ready):
            self._on_ready(msg, handle)
        elif isinstance(msg, WorkerExit):
            handle.said_goodbye = True
            handle.exit_reason = msg.reason
        elif isinstance(msg, Killing):
            self._on_killing(msg)
        elif isinstance(msg, Breach):
            self._on_breach(msg)
        elif isinstance(msg, Exceeded):
            self.out.exceeded.append(self.events.emit("threshold_exceeded", t=msg.t, metric=msg.metric,
                                                      value=msg.value, limit=msg.limit, action="reported"))
        elif isinstance(msg, WorkerError):
            self.events.emit("worker_error", worker=msg.index, error=msg.type_name, message=msg.message)
            handle.said_goodbye = True
            handle.error = msg
            if msg.type_name == "TargetError" and not self.out.target_error:
                # loadgen's own word on the target (a factory that returned no callable, a module that
                # exits when a worker imports it): the session raises it as the usage error it is.
                self.out.target_error = msg.message
        elif isinstance(msg, TargetMisused):
            self._on_target_misused(msg)
        elif isinstance(msg, MonitorError):
            self.events.emit("monitor_error", error=msg.type_name, message=msg.message)
            log.error("monitor error: %s: %s", msg.type_name, msg.message)
        else:
            log.warning("unknown message %r from %s", msg, handle or "monitor")

    def _on_target_misused(self, msg):
        """A worker's operation returned no result (a function, a coroutine, a generator): the target is
        used wrongly, so the run ends now as a usage error; the session raises it (one line, exit 2)."""
        self.events.emit("target_misused", worker=msg.index, message=msg.message)
        if not self.out.target_error:
            self.out.target_error = msg.message
        self._begin_stop(msg.message, ExitCode.USAGE)

    def _on_ready(self, msg, h):
        h.ready = True
        h.pid, h.create_time, h.cancels = msg.pid, msg.create_time, msg.asynchronous
        self.monitor.watch(msg.pid, msg.create_time, pgid=self.pool.pgid, role="worker")
        if self.stopping is not None:
            self.pool.send(h, Stop(drain=True))
            return
        self.load.on_ready(h)

    def _read_monitor(self):
        """Every message waiting from the monitor (non-blocking)."""
        mon = self.monitor
        try:
            while mon is not None and mon.conn is not None and mon.conn.poll():
                self._dispatch(mon.conn.recv(), None)
        except (EOFError, OSError):
            self._monitor_lost("monitor pipe closed")

    def _breach_verdict(self, metric, value, limit):
        """(reason, exit code) of a breach: 0 when the scenario expects one, but never for a stopped master."""
        if metric == METRIC_MASTER_STOPPED:
            return (f"the master was stopped (SIGSTOP) for {value:.1f} s: the monitor killed the pool (a pool "
                    f"never runs unserved past {limit:g} s)", ExitCode.BREACH)
        code = ExitCode.OK if self.plan.expect_breach else ExitCode.BREACH
        return str(ThresholdBreached(metric, value, limit)), code

    def _on_killing(self, k):
        """The monitor is about to kill the pool: from now on a worker's death is its kill, not a crash.
        The run waits for its Breach (the report's breach, with when the pool was dead) — or, if none
        comes, the monitor is lost (its silence limit is the kill's wait then)."""
        self.load.broken = True
        self._monitor_killing = k
        self._escalate(*self._breach_verdict(k.metric, k.value, k.limit))

    def _on_breach(self, b):
        self.load.broken = True
        self._monitor_killing = None
        record = self.events.emit("breach", metric=b.metric, value=b.value, limit=b.limit,
                                  detected_at=b.detected_at, pool_dead_at=b.pool_dead_at,
                                  killed_pids=list(b.killed_pids))
        self.out.breaches.append(record)
        self._escalate(*self._breach_verdict(b.metric, b.value, b.limit))
        # The monitor has killed the pool; make sure nothing of it is left.
        self.pool.kill_group()

    # ================================================================== stopping

    def _escalate(self, reason, code):
        """A stop for ``reason`` with ``code``: begun now, or, during a stop already under way, its exit
        code raised to ``code`` when that outranks it (``ExitCode.worst``): a breach or a lost monitor
        during the drain, or after a restart limit the monitor's own kills reached, is still exit 3."""
        if self.stopping is None:
            self._begin_stop(reason, code)
            return
        worst = ExitCode.worst([self.out.exit_code, code])
        if worst != self.out.exit_code:
            self.stopping = (reason, worst)
            self.out.stop_reason, self.out.exit_code = reason, worst
            self.events.emit("stop", reason=reason, exit_code=int(worst))

    def _begin_stop(self, reason, code):
        if self.stopping is not None:
            return
        self.stopping = (reason, code)
        self.out.stop_reason = reason
        self.out.exit_code = code
        self.events.emit("phase", name="stop", reason=reason)
        self.pool.broadcast(Stop(drain=True))
        self.stop_deadline = time.monotonic() + self.plan.stop_grace_s

    def _teardown(self):
        try:
            self.out.stressors.extend(self.stressors.stop(self.monitor))
            if self.pool is not None:
                self.pool.kill_group()
                deadline = time.monotonic() + TIMING.teardown_s
                while self.pool.handles and time.monotonic() < deadline:
                    for h in list(self.pool.handles.values()):
                        h.process.join(0.05)
                        if not h.process.is_alive():
                            self._worker_gone(h)
                if self.pool.handles:  # unkillable (uninterruptible sleep): accounted, not waited for
                    self._force_retire("still alive at teardown", waited_s=TIMING.teardown_s)
        finally:
            if self.monitor is not None:
                self.monitor.stop(timeout_s=TIMING.monitor_stop_s)
            self.registry.stop_all(TIMING.kill_grace_s)
            self._sweep()

    def _sweep(self):
        """End whatever the run's processes left behind (see ``contain``); the outcome says how."""
        try:
            found = self.contain.sweep()
            if found:
                self.events.emit("strays_ended", mechanism=self.contain.mechanism, count=len(found),
                                 pids=sorted(found)[:50])
        finally:
            self.contain.close()
            self.registry.cgroup = None
            self.out.containment = self.contain.to_dict()
            # What targets printed past workers.log's cap: counted, dropped, said (report.json, summary.txt).
            self.out.containment["output_dropped_bytes"] = self.out.output_dropped_bytes
            self.out.containment["forked_copies"] = self.out.forked_copies
            if self.out.peak_cgroup_memory_mb is not None:
                self.out.containment["cgroup_peak_memory_mb"] = round(self.out.peak_cgroup_memory_mb, 1)

    def _finish(self):
        out = self.out
        out.close(self.retired)
        self._write_seconds(final=True)
        self.events.emit("phase", name="end", reason=out.stop_reason, exit_code=out.exit_code,
                         accounting=out.accounting.to_dict())
        self.events.close()
        self.timeseries.close()

    def _write_seconds(self, final):
        live = {h.index for h in self.pool.handles.values()} if self.pool else set()
        target = self.load.current_target if self.load is not None else None
        written = False
        for record in self.seconds.due(time.time(), live, target, final=final):
            written = True
            self.timeseries.write(record)
            if self.progress is not None:
                self.progress(self, record)
            if self.on_second is not None and not final:
                self.on_second(self, record)
        if written:  # a second's batches are garbage now: give their pages back (≈ 0.5 ms a second)
            _proc.trim_heap()


class _Stressors:
    """The stressors of a run: started through the run's registry and watched by its monitor as
    part of the pool; stopped at teardown, each leaving what it achieved."""

    def __init__(self, stressors):
        self.items = list(stressors)

    def start(self, registry, monitor, emit):
        """Start every stressor, then wait (bounded) until each is under way."""
        def spawn(target, args, name):
            from . import _proc

            proc = registry.start(target, args, name, "stressor")
            try:
                monitor.watch(proc.pid, _proc.create_time(proc.pid), pgid=None, role="stressor")
            except Exception:  # noqa: BLE001 - it died at once; its own stop() reports that
                pass
            return proc

        for st in self.items:
            st.start(spawn)
            emit("phase", name="stressor_start", stressor=st.describe())
        for st in self.items:
            if hasattr(st, "wait_started"):
                st.wait_started(timeout_s=TIMING.stressor_start_s)

    def stop(self, monitor):
        """Stop every stressor; returns ``[{describe, **stats}]``, one per stressor."""
        achieved = []
        for st in self.items:
            try:
                st.stop(timeout_s=TIMING.stressor_stop_s)
                stats = st.stats()
            except Exception as e:  # noqa: BLE001 - the run's data matters more
                stats = {"error": f"{type(e).__name__}: {e}"}
            achieved.append({"describe": st.describe(), **stats})
            for pid in getattr(st, "pids", []):
                if monitor is not None:
                    monitor.unwatch(pid)
        return achieved

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
"""

from __future__ import annotations

import collections
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field, replace

from ..config import TIMING, ResourceThresholds, default_workers, positive_int
from ..errors import ExitCode, ThresholdBreached, UsageError, WorkerCrashed, describe_exitcode
from .messages import (Breach, MonitorError, Ready, ResultBatch, Sample, Stop, WorkerError,
                       WorkerExit, WorkOrder)
from .pool import Pool, ProcessRegistry, get_context
from ..measure.leak import leak_verdict
from ..measure.stats import Accounting, CappedCounter, Histogram, SecondHistogram
from ..streams import EVENTS, TIMESERIES, EventLog, JsonLines
from ..workload.targets import TargetSpec
from .worker import TRACEBACKS_PER_KEY, WorkerSpec

log = logging.getLogger("loadgen.runner")

WORKER_LOG = "workers.log"  # what targets print goes here
SECONDS_KEPT = 600  # per-second records an outcome keeps in memory; timeseries.jsonl keeps all
SERIES_KEPT = 7_200  # seconds of pool memory kept for the leak verdict (two hours)
BREAKER_EVENTS_KEPT = 1_000
MAX_ERROR_KEYS = 100
MAX_RESTARTS = 10


@dataclass(frozen=True)
class RunPlan:
    """One run of one load model. Validated by :meth:`validated`.

    ``concurrency``: closed model, operations in flight. ``stages``: ramps of
    the target (see ``config.parse_stages``); the run lasts their sum unless
    ``duration_s`` says otherwise. Bound by ``duration_s`` and/or
    ``operations`` (the first reached ends the run).
    """

    name: str = "run"
    concurrency: int = 20
    rate: float | None = None  # open model: arrivals per second (stages then ramp the rate)
    max_lateness_s: float = 1.0  # open model: drop an arrival no slot can start within this
    stages: tuple = ()
    duration_s: float | None = None
    operations: int | None = None
    workers: int | None = None
    slots: int | None = None
    op_timeout_s: float | None = None
    target: TargetSpec = field(default_factory=TargetSpec)
    max_restarts: int = MAX_RESTARTS
    start_method: str | None = None
    sample_interval_s: float = 0.1
    stop_file: str | None = None
    expect_breach: bool = False
    nice: int = 10
    blas_threads: int | None = 1
    stop_grace_s: float = TIMING.drain_grace_s
    segment_s: float | None = None  # also keep one latency histogram per this many seconds of load
    breaker: object = None  # breaker.BreakerConfig: a circuit breaker in each worker's dispatcher
    start_at: float | None = None  # UNIX time: a ready pool holds its load until then (fleet shards start together)

    def validated(self, thresholds):
        positive_int(self.concurrency, "--concurrency")
        if self.rate is not None:
            from ..config import positive_float

            positive_float(self.rate, "--rate", allow_zero=bool(self.stages))
            positive_float(self.max_lateness_s, "--max-lateness")
        if self.operations is not None:
            positive_int(self.operations, "--operations")
        if self.workers is not None:
            positive_int(self.workers, "--workers")
        if self.slots is not None:
            positive_int(self.slots, "--slots")
        if not (0.01 <= self.sample_interval_s <= 10):
            raise UsageError(f"--sample-interval: must be between 10ms and 10s, got {self.sample_interval_s}s")
        duration = self.duration_s
        if duration is None and self.stages:
            duration = sum(s.duration_s for s in self.stages)
        if duration is None and self.operations is None:
            raise UsageError("a run needs --duration, --operations or --stages to end")
        if self.rate is not None:  # open model: in flight is bounded by the slots
            peak = thresholds.max_concurrent_operations
            workers = self.workers or default_workers()
            slots = self.slots or max(1, peak // workers)
            return replace(self, duration_s=duration, workers=workers, slots=slots)
        peak = max([self.concurrency] + [math.ceil(s.target) for s in self.stages])
        if peak > thresholds.max_concurrent_operations:
            log.warning("concurrency %d capped at max_concurrent_operations=%d", peak,
                        thresholds.max_concurrent_operations)
        peak = min(peak, thresholds.max_concurrent_operations)
        workers = self.workers or min(default_workers(), peak)
        slots = self.slots or max(1, math.ceil(peak / workers))
        return replace(self, duration_s=duration, workers=workers, slots=slots)


@dataclass
class RunOutcome:
    """What a run measured. Plain data; ``report`` renders it."""

    plan: RunPlan
    thresholds: ResourceThresholds
    started_at: float = 0.0
    ended_at: float = 0.0
    accounting: Accounting = field(default_factory=Accounting)
    latency: Histogram = field(default_factory=Histogram)  # service time: start → end
    response: Histogram | None = None  # open model: intended start → end (coordinated omission corrected)
    lateness: Histogram | None = None  # open model: intended start → actual start
    stages: dict = field(default_factory=dict)  # flow stage → Histogram
    errors: CappedCounter = field(default_factory=lambda: CappedCounter(MAX_ERROR_KEYS))
    tracebacks: dict = field(default_factory=dict)
    breaches: list = field(default_factory=list)
    crashes: list = field(default_factory=list)
    stop_reason: str = ""
    exit_code: int = ExitCode.OK
    peak_in_flight: int = 0
    peak_memory_mb: float = 0.0
    peak_rss_mb: float = 0.0
    peak_cpu_percent: float = 0.0
    # Everything kept per second is bounded: the streams on disk keep it all.
    memory_series: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SERIES_KEPT))
    rss_series: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SERIES_KEPT))
    seconds: collections.deque = field(default_factory=lambda: collections.deque(maxlen=SECONDS_KEPT))
    segments: dict = field(default_factory=dict)  # segment index → Histogram (plan.segment_s)
    stressors: list = field(default_factory=list)  # what each stressor achieved
    breaker_events: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=BREAKER_EVENTS_KEPT))  # as written to events.jsonl
    leak: dict = field(default_factory=dict)
    pool_ready_s: float | None = None
    load_started_at: float | None = None  # every worker ready: load applied from here
    load_ended_at: float | None = None  # the last worker gone
    monitor_lost: bool = False
    run_dir: str | None = None

    @property
    def duration_s(self):
        return max(0.0, self.ended_at - self.started_at)

    @property
    def latency_hist(self):
        """The latency users should read: response time in the open model, else service time."""
        return self.response if self.response is not None else self.latency

    @property
    def load_duration_s(self):
        """Seconds load was applied: from the pool being ready until its last worker left."""
        if self.load_started_at is None:
            return 0.0
        return max(0.0, (self.load_ended_at or self.ended_at) - self.load_started_at)

    @property
    def throughput(self):
        """Completed operations per second of applied load."""
        d = self.load_duration_s
        return self.accounting.completed / d if d > 0 else 0.0


class _Second:
    __slots__ = ("started", "succeeded", "failed", "dropped", "rejected", "latency", "response", "errors", "reported",
                 "cpu", "memory_mb", "rss_mb", "available_mb", "target", "in_flight")

    def __init__(self):
        self.started = self.succeeded = self.failed = self.dropped = self.rejected = self.errors = self.in_flight = 0
        self.latency = SecondHistogram()
        self.response = SecondHistogram()
        self.reported = set()
        self.cpu = []
        self.memory_mb = self.rss_mb = 0.0
        self.available_mb = None
        self.target = None


class Runner:
    """Runs one :class:`RunPlan`. Use :meth:`run`; it always returns an outcome
    (or raises :class:`UsageError` before any load was applied)."""

    def __init__(self, plan, thresholds=None, run_dir=None, progress=None, registry=None, phase=None,
                 stressors=(), on_second=None, gate=None):
        self.thresholds = thresholds or ResourceThresholds()
        self.stressors = list(stressors)
        self.on_second = on_second  # callable(runner, record): scenarios watch the run (e.g. recovery)
        self._stop_request = None
        self.phase = phase or plan.name
        self.plan = plan.validated(self.thresholds)
        self.run_dir = run_dir
        self.progress = progress  # callable(outcome, second_record) or None
        self.out = RunOutcome(self.plan, self.thresholds, run_dir=run_dir)
        self.ctx = get_context(self.plan.start_method)
        self.registry = registry or ProcessRegistry(self.ctx)
        self.pool = None
        self.monitor = None
        self.events = None
        self.timeseries = None
        self.seconds = {}
        self.retired = Accounting()
        self.retired_started = 0
        self.quota_left = None  # operations not yet handed to any worker
        self.stopping = None  # (reason, exit_code) once a stop began
        self.stop_deadline = None
        self.broken = False
        self._own_gate = gate is None
        self.gate = gate or SignalGate()
        self._signals = self.gate.received
        self._wake_r = self._wake_w = None
        self._last_sample_at = None
        self._last_target = None
        self._assigned = {}
        self._end_at = None  # CLOCK_MONOTONIC when the duration is up (set once load starts)
        self._load_t0 = None

    # ================================================================== public

    def run(self):
        from ..workload.targets import check_target

        check_target(self.plan.target)
        out = self.out
        installed = self._install_signals()
        self._open_streams()
        try:
            out.started_at = time.time()
            self.events.emit("phase", name="start", plan=_plan_dict(self.plan), thresholds=self.thresholds.to_dict())
            self._start_monitor()
            self._start_stressors()
            self._start_pool()
            self._loop()
        finally:
            self._teardown()
            self._restore_signals(installed)
            out.ended_at = out.ended_at or time.time()
            self._finish()
        return out

    # ================================================================== start

    def _open_streams(self):
        if self.run_dir:
            self.events = EventLog(os.path.join(self.run_dir, EVENTS), phase=self.phase)
            self.timeseries = JsonLines(os.path.join(self.run_dir, TIMESERIES))
        else:
            self.events = EventLog(os.devnull, phase=self.phase)
            self.timeseries = JsonLines(os.devnull)

    def _start_monitor(self):
        from .monitor import SystemResourceMonitor

        self.monitor = SystemResourceMonitor(self.thresholds, interval_s=self.plan.sample_interval_s)
        self.monitor.start(self.ctx)
        self.registry.adopt(self.monitor.process, "monitor")
        self._last_sample_at = time.monotonic()

    def _start_stressors(self):
        for st in self.stressors:
            st.start(self._spawn_stressor)
            self.events.emit("phase", name="stressor_start", stressor=st.describe())
        for st in self.stressors:
            if hasattr(st, "wait_started"):
                st.wait_started(timeout_s=TIMING.stressor_start_s)

    def _spawn_stressor(self, target, args, name):
        """The stressors' ``spawn``: registered, and watched by the monitor as part of the pool."""
        from . import _proc

        proc = self.registry.start(target, args, name, "stressor")
        try:
            self.monitor.watch(proc.pid, _proc.create_time(proc.pid), pgid=None, role="stressor")
        except Exception:  # noqa: BLE001 - it died at once; its own stop() reports that
            pass
        return proc

    def _stop_stressors(self):
        for st in self.stressors:
            try:
                st.stop(timeout_s=TIMING.stressor_stop_s)
                stats = st.stats()
            except Exception as e:  # noqa: BLE001 - the run's data matters more
                stats = {"error": f"{type(e).__name__}: {e}"}
            self.out.stressors.append({"describe": st.describe(), **stats})
            for pid in getattr(st, "pids", []):
                if self.monitor is not None:
                    self.monitor.unwatch(pid)

    def request_stop(self, reason, exit_code=ExitCode.OK):
        """Ask the loop to stop gracefully at its next turn (safe from ``on_second``)."""
        self._stop_request = (reason, exit_code)

    def _start_pool(self):
        p = self.plan
        schedule = None
        if p.rate is not None:
            from .schedule import Schedule

            schedule = Schedule(p.rate, tuple((st.duration_s, st.target) for st in p.stages))
            self.out.response, self.out.lateness = Histogram(), Histogram()
        self.schedule = schedule
        self.schedule_start = None
        template = WorkerSpec(
            index=0, slots=p.slots, target=p.target, nice=p.nice, blas_threads=p.blas_threads,
            log_path=os.path.join(self.run_dir, WORKER_LOG) if self.run_dir else None,
            bounded=p.operations is not None, schedule=schedule, stride=p.workers, workers=p.workers,
            max_lateness_s=p.max_lateness_s, breaker=p.breaker)
        self.pool = Pool(self.ctx, self.registry, template)
        if p.operations is not None:
            self.quota_left = p.operations
        self._pool_started = time.monotonic()
        self.pool.start()
        self.events.emit("phase", name="pool_start", workers=p.workers, slots=p.slots, pgid=self.pool.pgid)

    # ================================================================== loop

    def _loop(self):
        from multiprocess.connection import wait

        p = self.plan
        t0 = time.monotonic()
        self._t0 = t0
        hard_end = t0 + self.thresholds.max_execution_time_seconds
        while True:
            objs = self._wait_objects()
            timeout = TIMING.tick_s
            held = self._load_t0 is None and p.start_at is not None
            left = p.start_at - time.time() if held else 0.0
            if 0 < left < timeout:
                timeout = left  # wake on the instant, not up to a tick after it
            for obj in wait(objs, timeout):
                self._ready(obj)
            if held and self.stopping is None:
                self._maybe_pool_ready()
            now = time.monotonic()
            if self.stopping is None:
                if self._signals:
                    sig = self._signals[0]
                    self._begin_stop("interrupted by " + signal.Signals(sig).name, ExitCode.of_signal(sig))
                elif self._end_at is not None and now >= self._end_at:
                    self._begin_stop("duration reached", ExitCode.OK)
                elif now >= hard_end:
                    self.events.emit("timeout", limit_s=self.thresholds.max_execution_time_seconds)
                    self._begin_stop("max_execution_time_seconds reached", ExitCode.OK)
                elif p.stop_file and os.path.exists(p.stop_file):
                    self.events.emit("stop", reason="stop file", path=p.stop_file)
                    self._begin_stop(f"stop file {p.stop_file} appeared", ExitCode.OK)
                elif self._operations_done():
                    self._begin_stop("operations done", ExitCode.OK)
                elif self._stop_request is not None:
                    self._begin_stop(*self._stop_request)
                elif self.timeseries.error or self.events.error:
                    err = self.timeseries.error or self.events.error
                    self._begin_stop(f"cannot write the run directory: {err.strerror or err}", ExitCode.USAGE)
                else:
                    self._apply_load(now - (self._load_t0 or now))
            elif len(self._signals) > 1:
                self.events.emit("stop", reason="second signal: killing the pool now")
                self.pool.kill_group()
            self._check_timeouts()
            self._check_monitor(now)
            self._write_seconds(final=False)
            if self.stopping is not None:
                if not self.pool.handles:
                    self.out.load_ended_at = time.time()
                    return
                if self.stop_deadline is not None and now >= self.stop_deadline:
                    self.events.emit("stop", reason="drain grace exceeded: killing the pool",
                                     grace_s=p.stop_grace_s)
                    self.pool.kill_group()
                    self.stop_deadline = None

    def _wait_objects(self):
        objs = [self._wake_r]
        for h in self.pool.handles.values():
            if not h.conn.closed:
                objs.append(h.conn)
            objs.append(h.process.sentinel)
        if self.monitor is not None and self.monitor.conn is not None:
            objs.append(self.monitor.conn)
            objs.append(self.monitor.process.sentinel)
        return objs

    def _ready(self, obj):
        if obj == self._wake_r:
            try:
                os.read(self._wake_r, 512)
            except OSError:
                pass
            return
        mon = self.monitor
        if mon is not None and mon.conn is not None and obj is mon.conn:
            try:
                while mon.conn.poll():
                    self._dispatch(mon.conn.recv(), None)
            except (EOFError, OSError):
                self._monitor_lost("monitor pipe closed")
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
            self._on_batch(msg)
        elif isinstance(msg, Sample):
            self._on_sample(msg)
        elif isinstance(msg, Ready):
            self._on_ready(msg, handle)
        elif isinstance(msg, WorkerExit):
            handle.said_goodbye = True
            handle.exit_reason = msg.reason
        elif isinstance(msg, Breach):
            self._on_breach(msg)
        elif isinstance(msg, WorkerError):
            self._on_worker_error(msg, handle)
        elif isinstance(msg, MonitorError):
            self.events.emit("monitor_error", error=msg.type_name, message=msg.message)
            log.error("monitor error: %s: %s", msg.type_name, msg.message)
        else:
            log.warning("unknown message %r from %s", msg, handle or "monitor")

    def _on_ready(self, msg, h):
        h.ready = True
        h.pid, h.create_time = msg.pid, msg.create_time
        self.monitor.watch(msg.pid, msg.create_time, pgid=self.pool.pgid, role="worker")
        if self.stopping is not None:
            self.pool.send(h, Stop(drain=True))
            return
        self._maybe_pool_ready()
        if self.schedule is not None:
            if self.schedule_start is not None:
                self._start_schedule(h)  # a replacement joins the running schedule
            return
        if self._load_t0 is None:
            return  # load starts when the whole pool is ready, never on a part of it
        self._last_target = None  # redistribute
        self._apply_load(time.monotonic() - self._load_t0)

    def _maybe_pool_ready(self):
        """Once every worker of the pool is ready, the load starts (on all of them at once)."""
        handles = self.pool.handles.values()
        if self.out.pool_ready_s is not None or not handles or not all(x.ready for x in handles):
            return
        if self.plan.start_at is not None and time.time() < self.plan.start_at:
            return  # ready, and held until the agreed instant: the loop calls again on time
        self.out.pool_ready_s = time.monotonic() - self._pool_started
        self.out.load_started_at = time.time()
        self.events.emit("phase", name="pool_ready", seconds=round(self.out.pool_ready_s, 4))
        if self.schedule is not None:
            self._start_schedule(None)
        else:
            self._load_started(time.monotonic())
            self._apply_load(0.0)

    def _load_started(self, at_mono):
        """Load is applied from ``at_mono``: the run's duration counts from here."""
        self._load_t0 = at_mono
        if self.plan.duration_s:
            self._end_at = at_mono + self.plan.duration_s

    def _start_schedule(self, h):
        """Open model: arrivals start together once every worker is ready; a replacement joins the
        running schedule."""
        if self.schedule_start is None:
            self.schedule_start = time.monotonic() + TIMING.schedule_lead_s
            self._schedule_wall = time.time() + TIMING.schedule_lead_s
            self.out.load_started_at = self._schedule_wall
            self._load_started(self.schedule_start)
            self.events.emit("phase", name="schedule_start", rate=self.plan.rate, at=self._schedule_wall)
            targets = [x for x in self.pool.handles.values() if x.ready]
        else:
            targets = [h]
        if self.quota_left is not None:
            self._top_up_quota(targets, open_model=True)
        for x in targets:
            self.pool.send(x, WorkOrder(schedule_start=self.schedule_start, schedule_horizon_s=self.plan.duration_s))

    def _on_batch(self, b):
        sec = self.seconds.get(b.second)
        if sec is None:
            sec = self.seconds[b.second] = _Second()
        sec.started += b.started
        sec.succeeded += b.succeeded
        sec.failed += b.failed
        sec.dropped += b.dropped
        sec.rejected += b.rejected
        for t, old, new, reason in b.breaker:
            record = self.events.emit("breaker", t=t, worker=b.index, state=new, previous=old, reason=reason)
            self.out.breaker_events.append(record)
        sec.in_flight += b.in_flight
        sec.reported.add(b.index)
        # Sparse parts are added into histograms kept for the run: no full histogram is
        # built per batch (that fragmented the master's heap, see stats.Sparse).
        if b.latency is not None:
            sec.latency.add(b.latency)
            self.out.latency.add_sparse(b.latency)
        if self.plan.segment_s and b.latency is not None and self.out.load_started_at:
            seg = int(max(0.0, b.second + 0.5 - self.out.load_started_at) // self.plan.segment_s)
            self.out.segments.setdefault(seg, Histogram()).add_sparse(b.response or b.latency)
        if b.response is not None:
            sec.response.add(b.response)
            self.out.response.add_sparse(b.response)
        if b.lateness is not None:
            self.out.lateness.add_sparse(b.lateness)
        for name, sparse in b.stages.items():
            self.out.stages.setdefault(name, Histogram()).add_sparse(sparse)
        if b.errors:
            sec.errors += sum(b.errors.values())
            self.out.errors.update(b.errors)
        for k, tbs in b.tracebacks.items():
            if k in self.out.tracebacks or len(self.out.tracebacks) < MAX_ERROR_KEYS:
                kept = self.out.tracebacks.setdefault(k, [])
                kept.extend(tbs[:TRACEBACKS_PER_KEY - len(kept)])

    def _on_sample(self, s):
        self._last_sample_at = time.monotonic()
        out = self.out
        out.peak_memory_mb = max(out.peak_memory_mb, s.pool_memory_mb)
        out.peak_rss_mb = max(out.peak_rss_mb, s.pool_rss_mb)
        out.peak_cpu_percent = max(out.peak_cpu_percent, s.cpu_percent)
        second = int(s.t)
        sec = self.seconds.get(second)
        if sec is None:
            sec = self.seconds[second] = _Second()
        sec.cpu.append(s.cpu_percent)
        sec.memory_mb = max(sec.memory_mb, s.pool_memory_mb)
        sec.rss_mb = max(sec.rss_mb, s.pool_rss_mb)
        sec.available_mb = s.available_mb
        for series, value in ((out.memory_series, s.pool_memory_mb), (out.rss_series, s.pool_rss_mb)):
            if not series or series[-1][0] != second:
                series.append((second, value))
            else:
                series[-1] = (second, max(series[-1][1], value))

    def _on_breach(self, b):
        self.broken = True
        record = self.events.emit("breach", metric=b.metric, value=b.value, limit=b.limit,
                                  detected_at=b.detected_at, pool_dead_at=b.pool_dead_at,
                                  killed_pids=list(b.killed_pids))
        self.out.breaches.append(record)
        code = ExitCode.OK if self.plan.expect_breach else ExitCode.BREACH
        if self.stopping is None:
            self._begin_stop(str(ThresholdBreached(b.metric, b.value, b.limit)), code)
        # The monitor has killed the pool; make sure nothing of it is left.
        self.pool.kill_group()

    def _on_worker_error(self, msg, h):
        self.events.emit("worker_error", worker=msg.index, error=msg.type_name, message=msg.message)
        h.said_goodbye = True
        h.error = msg
        self._start_error = msg

    # ================================================================== load model

    def _target_at(self, elapsed):
        p = self.plan
        if self.schedule is not None:
            if self.schedule_start is None:
                return 0.0
            return self.schedule.rate_at(max(0.0, time.monotonic() - self.schedule_start))
        if not p.stages:
            return p.concurrency
        return stage_target(p.stages, elapsed, start=0.0)

    def _apply_load(self, elapsed):
        if self.broken:
            return
        if self.schedule is not None:
            self._current_target = round(self._target_at(elapsed), 3)
            if self.quota_left is not None and self.schedule_start is not None:
                self._top_up_quota([h for h in self.pool.handles.values() if h.ready], open_model=True)
            return
        if self._load_t0 is None:
            return  # the pool is not all ready yet
        target = min(int(round(self._target_at(elapsed))), self.thresholds.max_concurrent_operations)
        ready = sorted((h for h in self.pool.handles.values() if h.ready and h.process.is_alive()),
                       key=lambda h: h.index)
        key = (target, tuple(h.index for h in ready))
        self._current_target = target
        if key == self._last_target or not ready:
            self._top_up_quota(ready)
            return
        self._last_target = key
        shares = split(target, len(ready), cap=self.plan.slots)
        for h, n in zip(ready, shares):
            if self._assigned.get(h.index) != (h.pid, n):
                self._assigned[h.index] = (h.pid, n)
                self.pool.send(h, WorkOrder(active_slots=n))
        self._top_up_quota(ready)

    def _top_up_quota(self, ready, open_model=False):
        if self.quota_left is None:
            return
        for h in ready:
            started = h.totals(self.plan.slots)[0]
            active = self.plan.slots if open_model else self._assigned.get(h.index, (0, 0))[1]
            if not active:
                continue
            chunk = max(2 * active, self.plan.operations // (4 * self.plan.workers))
            if h.quota_given - started < chunk // 2 + active and self.quota_left > 0:
                give = min(chunk, self.quota_left)
                self.quota_left -= give
                h.quota_given += give
                self.pool.send(h, WorkOrder(add_quota=give))

    def _operations_done(self):
        if self.plan.operations is None or self.quota_left:
            return False
        for h in self.pool.handles.values():
            started, succ, fail = h.totals(self.plan.slots)[:3]
            if started < h.quota_given or started - succ - fail > 0:
                return False
        return True

    # ================================================================== faults

    def _check_timeouts(self):
        slots = self.plan.slots
        now_ns = time.monotonic_ns()
        in_flight = 0
        for h in list(self.pool.handles.values()):
            started, succ, fail = h.totals(slots)[:3]
            in_flight += started - succ - fail
            if self.plan.op_timeout_s is None or not h.process.is_alive():
                continue
            limit_ns = int(self.plan.op_timeout_s * 1e9)
            late = [i for i, t in h.running_since_ns(slots).items() if now_ns - t > limit_ns]
            if late and not h.timed_out_slots:
                h.timed_out_slots.update(late)
                self.events.emit("timeout", worker=h.index, pid=h.pid, slots=late,
                                 op_timeout_s=self.plan.op_timeout_s,
                                 action="worker killed and replaced")
                self.pool.kill(h)
        self.out.peak_in_flight = max(self.out.peak_in_flight, in_flight)

    def _worker_gone(self, h):
        h.process.join(1.0)
        exitcode = h.process.exitcode
        try:  # batches it sent before dying are still in the pipe
            while not h.conn.closed and h.conn.poll():
                self._dispatch(h.conn.recv(), h)
        except (EOFError, OSError):
            pass
        started, succ, fail, dropped, rejected = h.totals(self.plan.slots)
        in_flight = started - succ - fail
        timed_out = min(len(h.timed_out_slots), in_flight)
        crashed = in_flight - timed_out
        acc = Accounting(dispatched=started, succeeded=succ, failed=fail, timed_out=timed_out, crashed=crashed,
                         dropped=dropped, rejected=rejected)
        self.retired.merge(acc)
        unstarted = max(0, h.quota_given - started)
        self.pool.inputs_used[h.index] = self.pool.inputs_used.get(h.index, 0) + started
        self.monitor.unwatch(h.pid) if self.monitor is not None else None
        self.pool.retire(h)
        self._assigned.pop(h.index, None)
        self._last_target = None
        if self.stopping is None:
            self._maybe_pool_ready()  # the one it waited for may be the one that died
        clean = h.said_goodbye and exitcode == 0
        if clean:
            if not self.pool.handles and self.stopping is None:
                self._begin_stop(getattr(h, "exit_reason", None) or "workers finished", ExitCode.OK)
            return
        error = getattr(h, "error", None)
        if error is not None:  # could not build the target
            if self.quota_left is not None:
                self.quota_left += unstarted
            if not self.pool.handles and self.stopping is None:
                self._begin_stop(f"no worker could start: {error.type_name}: {error.message}", ExitCode.USAGE)
            return
        if self.broken or self.stopping is not None:
            if crashed or timed_out:
                self.events.emit("worker_killed", worker=h.index, pid=h.pid, exitcode=exitcode,
                                 operations_lost_in_flight=crashed, reason=self.stopping[0] if self.stopping else "breach")
            return
        crash = WorkerCrashed(h.index, h.pid, exitcode, in_flight)
        record = self.events.emit("worker_crash", worker=h.index, pid=h.pid, exitcode=exitcode,
                                  exit=describe_exitcode(exitcode),
                                  hint="operation timed out" if timed_out else crash.hint,
                                  in_flight=in_flight, timed_out=timed_out, crashed=crashed)
        self.out.crashes.append(record)
        if self.pool.restarts >= self.plan.max_restarts:
            self._begin_stop(f"worker restart limit ({self.plan.max_restarts}) reached; last: {crash}", ExitCode.FAILED)
            return
        self.pool.restarts += 1
        if self.quota_left is not None:
            self.quota_left += unstarted
        self.pool.start_worker(h.index)

    def _check_monitor(self, now):
        if self.monitor is None or self.out.monitor_lost:
            return
        if now - self._last_sample_at > max(TIMING.monitor_silent_s, 20 * self.plan.sample_interval_s):
            self._monitor_lost(f"no sample for {now - self._last_sample_at:.1f}s")

    def _monitor_lost(self, why):
        if self.out.monitor_lost:
            return
        self.out.monitor_lost = True
        self.events.emit("monitor_lost", reason=why)
        log.error("monitor lost (%s): stopping the run — never unmonitored", why)
        if self.stopping is None:
            self._begin_stop(f"monitor lost: {why}", ExitCode.BREACH)
        self.pool.kill_group()
        try:
            self.monitor.conn.close()
        except (OSError, AttributeError):
            pass
        self.monitor.conn = None

    # ================================================================== stopping

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
        self._stop_stressors()
        try:
            if self.pool is not None:
                self.pool.kill_group()
                deadline = time.monotonic() + TIMING.teardown_s
                while self.pool.handles and time.monotonic() < deadline:
                    for h in list(self.pool.handles.values()):
                        h.process.join(0.05)
                        if not h.process.is_alive():
                            self._worker_gone(h)
        finally:
            if self.monitor is not None:
                self.monitor.stop(timeout_s=TIMING.monitor_stop_s)
            self.registry.stop_all(TIMING.kill_grace_s)

    def _finish(self):
        out = self.out
        if out.load_started_at is None:  # the pool never became fully ready
            out.load_started_at = out.started_at
        acc = Accounting().merge(self.retired)
        out.accounting = acc
        self._write_seconds(final=True)
        try:
            out.leak = leak_verdict(out.memory_series, out.rss_series, self.thresholds.growth_window_s)
        except Exception as e:  # noqa: BLE001 - a verdict failure must not lose the run
            out.leak = {"leak": None, "reason": f"no verdict: {e}"}
        if not out.stop_reason:
            out.stop_reason = "finished"
        self.events.emit("phase", name="end", reason=out.stop_reason, exit_code=out.exit_code,
                         accounting=acc.to_dict())
        self.events.close()
        self.timeseries.close()

    # ================================================================== per second

    def _write_seconds(self, final):
        if not self.seconds:
            return
        now = time.time()
        live = {h.index for h in self.pool.handles.values()} if self.pool else set()
        for second in sorted(self.seconds):
            sec = self.seconds[second]
            complete = live <= sec.reported
            if not final and not (complete and second < int(now)) and second > now - 1 - TIMING.second_grace_s:
                break
            del self.seconds[second]
            if not sec.reported and not sec.cpu:
                continue
            record = self._second_record(second, sec)
            self.timeseries.write(record)
            self.out.seconds.append(record)
            if self.progress is not None:
                self.progress(self, record)
            if self.on_second is not None and not final:
                self.on_second(self, record)

    def _second_record(self, second, sec):
        lat = sec.latency.summary_ms()
        done = sec.succeeded + sec.failed
        extra = {}
        if self.schedule is not None:
            resp = sec.response.summary_ms()
            extra["response_ms"] = {k: resp[k] for k in ("p50", "p90", "p99", "p999", "max")}
        return {
            "t": second,
            "phase": self.phase,
            "ops": sec.started,
            "succeeded": sec.succeeded,
            "failed": sec.failed,
            "dropped": sec.dropped,
            "rejected": sec.rejected,
            "errors": sec.errors,
            "throughput": done,
            "success_rate": round(sec.succeeded / done, 4) if done else None,
            "in_flight": sec.in_flight,
            "target": getattr(self, "_current_target", None),
            "latency_ms": {k: lat[k] for k in ("p50", "p90", "p99", "p999", "max")},
            "cpu_percent": round(sum(sec.cpu) / len(sec.cpu), 1) if sec.cpu else None,
            "pool_memory_mb": round(sec.memory_mb, 1),
            "pool_rss_mb": round(sec.rss_mb, 1),
            "available_mb": None if sec.available_mb is None else round(sec.available_mb),
        } | extra

    # ================================================================== signals

    def _install_signals(self):
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.gate.wake_fd = self._wake_w
        return self.gate.install() if self._own_gate else False

    def _restore_signals(self, installed):
        self.gate.wake_fd = None
        if installed:
            self.gate.restore()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class SignalGate:
    """SIGINT/SIGTERM for a whole command: recorded, and the running phase woken.

    Installed once around everything a command does (phases, the gaps between
    them, report writing), so a signal at any moment stops the run gracefully
    and still leaves a report; a Runner without a gate of its command makes
    its own.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = []
        self.wake_fd = None
        self._old = None

    def install(self):
        """Install the handlers (main thread only); True if installed."""
        import threading

        if threading.current_thread() is not threading.main_thread() or self._old is not None:
            return False
        self._old = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return True

    def restore(self):
        if self._old:
            for s, h in self._old.items():
                signal.signal(s, h)
        self._old = None

    def _handler(self, signum, frame):
        self.received.append(signum)
        if self.wake_fd is not None:
            try:
                os.write(self.wake_fd, b"!")
            except OSError:
                pass

    @property
    def exit_code(self):
        """130 or 143 for the first signal received, None if none."""
        if not self.received:
            return None
        return ExitCode.of_signal(self.received[0])


# ====================================================================== helpers


def split(total, n, cap=None):
    """Split ``total`` into ``n`` near-equal whole shares (remainder to the first ones)."""
    if n <= 0:
        return []
    base, extra = divmod(int(total), n)
    shares = [base + (1 if i < extra else 0) for i in range(n)]
    if cap is not None:
        shares = [min(s, cap) for s in shares]
    return shares


def stage_target(stages, elapsed, start=0.0):
    """The target at ``elapsed`` seconds: linear within each stage from the previous target."""
    prev = start
    t = 0.0
    for s in stages:
        if elapsed < t + s.duration_s:
            frac = (elapsed - t) / s.duration_s
            return prev + (s.target - prev) * frac
        t += s.duration_s
        prev = s.target
    return prev


def _plan_dict(plan):
    return {
        "name": plan.name, "concurrency": plan.concurrency, "rate": plan.rate,
        "stages": [[s.duration_s, s.target] for s in plan.stages],
        "duration_s": plan.duration_s, "operations": plan.operations, "workers": plan.workers,
        "slots": plan.slots, "op_timeout_s": plan.op_timeout_s, "target": plan.target.label,
        "flow_params": dict(plan.target.flow_params), "seed": plan.target.seed,
    }

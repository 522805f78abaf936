"""The load model: what one run applies, and the work orders that apply it.

:class:`RunPlan` is one run's plan (closed model: ``concurrency``; open
model: ``rate``; ``stages`` ramp either), checked by :meth:`RunPlan.validated`.
:class:`LoadModel` turns it into :class:`~loadgen.engine.messages.WorkOrder`
messages for the pool as time goes: the closed model's target in flight
split over the ready workers (:func:`split`, :func:`stage_target`), the open
model's schedule started on every worker at once, and the operation quota
of an operations-bound run handed out in chunks.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace

from ..config import DEFAULT_MAX_LATENESS_S, DEFAULT_MAX_OUTPUT_MB, DEFAULT_SAMPLE_INTERVAL_S, TIMING, check_int, check_number, default_workers
from ..errors import UsageError
from ..workload.targets import TargetSpec
from . import room
from .messages import WorkOrder
from .room import MAX_THREAD_SLOTS

log = logging.getLogger("loadgen.runner")

MAX_RESTARTS = 10  # workers a run replaces before it gives up (exit 1)


def pool_shape(concurrency, stages, rate, workers, slots, cap, threads=True):
    """``(workers, slots)`` of a run: those given, else derived. Closed model: enough slots for the
    peak concurrency (its stages included, at most ``cap``) over at most :func:`default_workers`
    workers. Open model: in flight is bounded by the slots, ``cap`` of them over the workers.
    ``threads``: slots are threads (a sync target): derived workers then hold at most
    :data:`~loadgen.engine.room.MAX_THREAD_SLOTS` each (more workers instead)."""
    if rate is not None:
        peak = cap
        workers = workers or default_workers()
    else:
        peak = min(max([concurrency or 1] + [math.ceil(s.target) for s in stages or ()]), cap)
        workers = workers or min(default_workers(), peak)
    if threads and not slots:
        workers = max(workers, math.ceil(peak / MAX_THREAD_SLOTS))
    return workers, slots or max(1, math.ceil(peak / workers) if rate is None else peak // workers)


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
    max_lateness_s: float = DEFAULT_MAX_LATENESS_S  # open model: drop an arrival no slot can start within this
    stages: tuple = ()
    duration_s: float | None = None
    operations: int | None = None
    workers: int | None = None
    slots: int | None = None
    op_timeout_s: float | None = None
    target: TargetSpec = field(default_factory=TargetSpec)
    max_restarts: int = MAX_RESTARTS
    start_method: str | None = None
    sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S
    stop_file: str | None = None
    max_output_mb: float | None = DEFAULT_MAX_OUTPUT_MB  # workers.log's cap (None: none)
    expect_breach: bool = False
    nice: int = 10
    blas_threads: int | None = 1
    stop_grace_s: float = TIMING.drain_grace_s
    segment_s: float | None = None  # also keep one latency histogram per this many seconds of load
    breaker: object = None  # breaker.BreakerConfig: a circuit breaker in each worker's dispatcher
    start_gate: object = None  # StartGate: a ready pool says so and holds its load until the gate opens (fleets)

    def validated(self, thresholds):
        """This plan with its bounds checked and ``duration_s``, ``workers`` and ``slots`` resolved
        (stages' sum; one worker per core; enough slots for the peak, capped at
        ``thresholds.max_concurrent_operations``). Raises :class:`UsageError`."""
        check_int(self.concurrency, "--concurrency", 1)
        if self.rate is not None:
            check_number(self.rate, "--rate", 0, low_open=not self.stages)
            check_number(self.max_lateness_s, "--max-lateness", 0)
        for value, flag in ((self.operations, "--operations"), (self.workers, "--workers"), (self.slots, "--slots")):
            if value is not None:
                check_int(value, flag, 1)
        if not (0.01 <= self.sample_interval_s <= 10):
            raise UsageError(f"--sample-interval: must be between 10ms and 10s, got {self.sample_interval_s}s")
        duration = self.duration_s
        if duration is None and self.stages:
            duration = sum(s.duration_s for s in self.stages)
        if duration is None and self.operations is None:
            raise UsageError("a run needs --duration, --operations or --stages to end")
        if self.rate is None:
            peak = max([self.concurrency] + [math.ceil(s.target) for s in self.stages])
            if peak > thresholds.max_concurrent_operations:
                log.warning("concurrency %d capped at max_concurrent_operations=%d", peak,
                            thresholds.max_concurrent_operations)
        threads = not self.target.asynchronous
        workers, slots = pool_shape(self.concurrency, self.stages, self.rate, self.workers, self.slots,
                                    thresholds.max_concurrent_operations, threads=threads)
        room.check(workers, slots, self.rate, threads=threads)
        return replace(self, duration_s=duration, workers=workers, slots=slots)

    def to_dict(self):
        """The plan as the ``start`` phase event carries it (``events.jsonl``)."""
        return {
            "name": self.name, "concurrency": self.concurrency, "rate": self.rate,
            "stages": [[s.duration_s, s.target] for s in self.stages],
            "duration_s": self.duration_s, "operations": self.operations, "workers": self.workers,
            "slots": self.slots, "op_timeout_s": self.op_timeout_s, "target": self.target.label,
            "flow_params": dict(self.target.flow_params), "seed": self.target.seed,
        }


def split(total, n, cap=None):
    """Split ``total`` into ``n`` near-equal whole shares (remainder to the first ones), each ≤ ``cap``."""
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


class StartGate:
    """A held start (a fleet shard's first phase): once the whole pool is ready it says so through
    ``on_ready(ready_at)`` (once; UNIX time), and the load begins at :attr:`at` (UNIX time, this
    machine's clock) once another thread :meth:`open` s the gate. Until then the pool waits, ready."""

    def __init__(self, on_ready=None):
        self.on_ready = on_ready
        self.ready_at = None
        self.at = None

    def pool_ready(self):
        """Called by the load model on every check while the ready pool is held; reports once."""
        if self.ready_at is None:
            self.ready_at = time.time()
            if self.on_ready is not None:
                self.on_ready(self.ready_at)

    def open(self, at):
        """Let the load begin at ``at`` (UNIX time; a float's assignment is atomic across threads)."""
        self.at = float(at)


class LoadModel:
    """Applies a validated :class:`RunPlan` to a pool: decides, turn by turn, what each worker runs.

    The load starts when the whole pool is ready (never on a part of it) and,
    with ``plan.start_gate``, not before the gate's instant. From then the closed
    model sends each ready worker its share of the target in flight; the open
    model sends every worker the schedule's start (a replacement joins the
    running schedule); an operations-bound run hands each worker quota in
    chunks. The pool (:meth:`attach`) sends the orders; ``out`` (the
    RunOutcome) gets the pool's ready time and the load's start; ``emit``
    writes phase events. Non-blocking throughout.
    """

    def __init__(self, plan, max_in_flight, out, emit):
        from .schedule import Schedule

        self.plan, self.cap, self.out, self.emit = plan, max_in_flight, out, emit
        self.pool = None
        self.schedule = (Schedule(plan.rate, tuple((s.duration_s, s.target) for s in plan.stages))
                         if plan.rate is not None else None)
        self.schedule_start = None  # open model: CLOCK_MONOTONIC of arrival 0
        self.quota_left = plan.operations  # operations not yet handed to any worker (None: unbounded)
        self.started_mono = None  # CLOCK_MONOTONIC the load began: the run's duration counts from here
        self.end_at = None  # CLOCK_MONOTONIC when the duration is up
        self.current_target = None  # what the load asks now (in flight, or arrivals per second)
        self.pool_started = None
        self.broken = False  # set after a breach: a broken pool is sent no more load
        self._assigned = {}  # worker index → (pid, active slots) last sent
        self._last_key = None

    def attach(self, pool):
        """The pool this load is applied to, about to start (its ready time counts from now)."""
        self.pool, self.pool_started = pool, time.monotonic()

    @property
    def held(self):
        """True while the pool (ready or not) waits for ``plan.start_gate`` to open."""
        return self.started_mono is None and self.plan.start_gate is not None

    def maybe_start(self):
        """Start the load once every worker of the pool is ready (and the start gate's instant has come)."""
        handles = self.pool.handles.values()
        if self.out.pool_ready_s is not None or not handles or not all(x.ready for x in handles):
            return
        gate = self.plan.start_gate
        if gate is not None:
            gate.pool_ready()
            if gate.at is None or time.time() < gate.at:
                return  # ready, and held until the agreed instant: the loop calls again on time
        self.out.pool_ready_s = time.monotonic() - self.pool_started
        self.out.load_started_at = time.time()
        self.emit("phase", name="pool_ready", seconds=round(self.out.pool_ready_s, 4))
        if self.schedule is not None:
            self._start_schedule(None)
        else:
            self._begin(time.monotonic())
            self.apply(time.monotonic())

    def on_ready(self, h):
        """A worker (a replacement, or one of the first) is ready."""
        self.maybe_start()
        if self.schedule is not None:
            if self.schedule_start is not None:
                self._start_schedule(h)  # a replacement joins the running schedule
            return
        if self.started_mono is None:
            return  # load starts when the whole pool is ready, never on a part of it
        self._last_key = None  # redistribute
        self.apply(time.monotonic())

    def on_gone(self, h):
        """Worker ``h`` left: the load is split again over the workers that remain."""
        self._assigned.pop(h.index, None)
        self._last_key = None

    def refund(self, unstarted):
        """``unstarted`` operations of a dead worker's quota go back to the run's."""
        if self.quota_left is not None:
            self.quota_left += unstarted

    def duration_up(self, now):
        """True once the run's duration has passed (``now``: CLOCK_MONOTONIC)."""
        return self.end_at is not None and now >= self.end_at

    def operations_done(self):
        """True when an operations-bound run has handed out and finished every operation."""
        if self.plan.operations is None or self.quota_left:
            return False
        for h in self.pool.handles.values():
            started, succ, fail = h.totals(self.plan.slots)[:3]
            if started < h.quota_given or started - succ - fail > 0:
                return False
        return True

    def apply(self, now):
        """Send what the load asks at ``now`` (CLOCK_MONOTONIC) to the workers that need a change."""
        if self.broken:
            return
        if self.schedule is not None:
            rate = 0.0 if self.schedule_start is None else self.schedule.rate_at(max(0.0, now - self.schedule_start))
            self.current_target = round(rate, 3)
            if self.quota_left is not None and self.schedule_start is not None:
                self._top_up([h for h in self.pool.handles.values() if h.ready], open_model=True)
            return
        if self.started_mono is None:
            return  # the pool is not all ready yet
        p = self.plan
        target = p.concurrency if not p.stages else stage_target(p.stages, now - self.started_mono)
        target = min(int(round(target)), self.cap)
        ready = sorted((h for h in self.pool.handles.values() if h.ready and h.process.is_alive()),
                       key=lambda h: h.index)
        key = (target, tuple(h.index for h in ready))
        self.current_target = target
        if key == self._last_key or not ready:
            self._top_up(ready)
            return
        self._last_key = key
        for h, n in zip(ready, split(target, len(ready), cap=p.slots)):
            if self._assigned.get(h.index) != (h.pid, n):
                self._assigned[h.index] = (h.pid, n)
                self.pool.send(h, WorkOrder(active_slots=n))
        self._top_up(ready)

    def _begin(self, at_mono):
        self.started_mono = at_mono
        if self.plan.duration_s:
            self.end_at = at_mono + self.plan.duration_s

    def _start_schedule(self, h):
        """Open model: arrivals start together once every worker is ready; ``h``: a replacement
        that joins the running schedule."""
        if self.schedule_start is None:
            self.schedule_start = time.monotonic() + TIMING.schedule_lead_s
            wall = time.time() + TIMING.schedule_lead_s
            self.out.load_started_at = wall
            self._begin(self.schedule_start)
            self.emit("phase", name="schedule_start", rate=self.plan.rate, at=wall)
            targets = [x for x in self.pool.handles.values() if x.ready]
        else:
            targets = [h]
        if self.quota_left is not None:
            self._top_up(targets, open_model=True)
        for x in targets:
            self.pool.send(x, WorkOrder(schedule_start=self.schedule_start, schedule_horizon_s=self.plan.duration_s))

    def _top_up(self, ready, open_model=False):
        if self.quota_left is None:
            return
        p = self.plan
        for h in ready:
            started = h.totals(p.slots)[0]
            active = p.slots if open_model else self._assigned.get(h.index, (0, 0))[1]
            if not active:
                continue
            chunk = max(2 * active, p.operations // (4 * p.workers))
            if h.quota_given - started < chunk // 2 + active and self.quota_left > 0:
                give = min(chunk, self.quota_left)
                self.quota_left -= give
                h.quota_given += give
                self.pool.send(h, WorkOrder(add_quota=give))

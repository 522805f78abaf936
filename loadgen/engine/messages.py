"""Every message that crosses a pipe: small frozen dataclasses.

Master ⇄ worker: :class:`WorkOrder`, :class:`Stop` down; :class:`Ready`,
:class:`ResultBatch`, :class:`WorkerExit`, :class:`WorkerError` up.
Master ⇄ monitor: :class:`Watch`, :class:`Unwatch`, :class:`Contain`, :class:`Stop` down;
:class:`Sample`, :class:`Breach`, :class:`Exceeded`, :class:`MonitorError` up.

Receivers dispatch on the type with one handler each and log anything
they do not know (see ``runner.Runner._dispatch``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


# ---------------------------------------------------------------- master → worker


@dataclass(frozen=True)
class WorkOrder:
    """Set a worker's load.

    ``active_slots``: closed model, how many of the worker's slots run
    operations back to back (None: unchanged).
    ``add_quota``: operations the worker may still start on top of what it
    was given (None: unbounded, a duration-bound run).
    ``schedule_start``: open model, CLOCK_MONOTONIC seconds of arrival 0 of
    the run's schedule; ``schedule_horizon_s``: arrivals due this long after
    it or later are not started (None: no horizon).
    """

    active_slots: Optional[int] = None
    add_quota: Optional[int] = None
    schedule_start: Optional[float] = None
    schedule_horizon_s: Optional[float] = None


@dataclass(frozen=True)
class Stop:
    """Stop starting operations; ``drain``: let running ones finish, then exit."""

    drain: bool = True


# ---------------------------------------------------------------- worker → master


@dataclass(frozen=True)
class Ready:
    """Worker → master, its target built: pid and create time (UNIX s), so the monitor can watch it."""

    index: int
    pid: int
    create_time: float
    asynchronous: bool = False  # async slots: the worker cancels operations at their timeout itself


@dataclass(frozen=True)
class ResultBatch:
    """What one worker measured since its previous batch.

    ``second``: UNIX second the batch covers (operations completed in it).
    ``started`` / ``succeeded`` / ``failed`` / ``dropped``: counts in this batch.
    ``latency``: the non-empty buckets of the service-time HDR histogram,
    microseconds (``stats.Sparse``, None when nothing completed); ``response``
    likewise for response time (open model), else None. ``measures``: name of a
    ``loadgen.measure`` → Sparse; ``checks``: name of a ``loadgen.check`` → [passes, fails].
    ``errors``: error key → count. ``tracebacks``: error key → tracebacks first
    seen in this batch (the first few of each key, over the worker's life).
    ``in_flight``: operations running at the end of the batch.
    """

    index: int
    second: int
    started: int
    succeeded: int
    failed: int
    dropped: int
    in_flight: int
    latency: object
    response: object = None
    measures: dict = field(default_factory=dict)
    checks: dict = field(default_factory=dict)
    ops: dict = field(default_factory=dict)  # a mix's op name → (Sparse latency, succeeded, failed, {error: n})
    errors: dict = field(default_factory=dict)
    tracebacks: dict = field(default_factory=dict)
    lateness: object = None  # open model: start-time lateness (µs), stats.Sparse
    rejected: int = 0  # refused by the circuit breaker (never dispatched)
    breaker: tuple = ()  # breaker transitions: (UNIX time, from, to, reason)
    stalls: tuple = ()  # async slots: each loop stall of the batch, ms late (engine.aslots)


@dataclass(frozen=True)
class WorkerExit:
    """A clean goodbye: the worker is about to exit with code 0."""

    index: int
    reason: str


@dataclass(frozen=True)
class WorkerError:
    """An exception the worker could not handle (target import or setup)."""

    index: int
    type_name: str
    message: str
    traceback: str


@dataclass(frozen=True)
class TargetMisused:
    """An operation returned what cannot be a result (a function: ``--target-factory`` forgotten; a
    coroutine never awaited; a generator): the worker has stopped its slots; the run is a usage error.
    ``message``: the one line that names the target and what it returned."""

    index: int
    message: str


# ---------------------------------------------------------------- master → monitor


@dataclass(frozen=True)
class Watch:
    """Watch (and on a breach, kill) this process, identified by pid and create time."""

    pid: int
    create_time: float
    pgid: Optional[int] = None
    role: str = "worker"


@dataclass(frozen=True)
class Unwatch:
    """Master → monitor, when it retires a worker or stops a stressor: stop watching ``pid``."""

    pid: int


@dataclass(frozen=True)
class Contain:
    """Master → monitor, once: how the run's processes are contained (``contain.ContainSpec``), so
    that the monitor can end them all if the master dies."""

    spec: object


# ---------------------------------------------------------------- monitor → master


@dataclass(frozen=True)
class Sample:
    """One psutil reading.

    ``t``: UNIX seconds. ``pool_memory_mb``: the pool's PSS in MB (shared pages
    once). ``pool_rss_mb``: plain RSS sum, for reference. ``pool_cpu_percent``:
    the pool's CPU (100 = one core). ``cpu_percent``: machine-wide 0–100;
    ``per_cpu``: per core. ``available_mb``, ``swap_used_mb``: system memory.
    ``processes``: pid → (rss_mb, cpu_percent). ``io``: disk and network
    counters and load average. ``cgroup_memory_mb``, ``cgroup_cpu_percent``:
    the run cgroup's own figures (everything in it, page cache included; CPU
    on cgroup v2 only), None without one.
    """

    t: float
    pool_memory_mb: float
    pool_rss_mb: float
    pool_cpu_percent: float
    cpu_percent: float
    per_cpu: tuple
    available_mb: float
    swap_used_mb: float
    processes: dict = field(default_factory=dict)
    io: dict = field(default_factory=dict)
    growth_mb_per_s: Optional[float] = None
    cgroup_memory_mb: Optional[float] = None
    cgroup_cpu_percent: Optional[float] = None


@dataclass(frozen=True)
class Breach:
    """The monitor killed the pool because ``metric`` passed ``limit``."""

    metric: str
    value: float
    limit: float
    detected_at: float
    pool_dead_at: Optional[float]
    killed_pids: tuple = ()


@dataclass(frozen=True)
class Killing:
    """Monitor → master, just before it kills the pool for ``metric`` (its :class:`Breach` follows once
    the pool is dead): the workers about to die are the monitor's kills, never crashes."""

    metric: str
    value: float
    limit: float
    detected_at: float


@dataclass(frozen=True)
class Exceeded:
    """Monitor → master: ``metric`` passed a report-only ``limit`` (machine CPU, memory growth) at ``t``
    (UNIX s); the pool was left running. Sent once per episode: again only after it fell back under."""

    metric: str
    value: float
    limit: float
    t: float


@dataclass(frozen=True)
class MonitorError:
    """Monitor → master, just before the monitor exits 1: the exception it could not handle."""

    type_name: str
    message: str
    traceback: str

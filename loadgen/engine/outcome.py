"""What a run measured (:class:`RunOutcome`) and its per-second aggregation (:class:`Seconds`).

Workers ship one :class:`~loadgen.engine.messages.ResultBatch` per second,
the monitor one :class:`~loadgen.engine.messages.Sample` per tick;
:class:`Seconds` adds both into the run's histograms and counters and into
one record per second, and hands a second's record out once every live
worker has reported past it (or ``TIMING.second_grace_s`` later). Everything
kept in memory is bounded; ``timeseries.jsonl`` keeps it all.
"""

from __future__ import annotations

import collections
import math
from array import array
from dataclasses import dataclass, field

from .. import named
from ..config import TIMING, ResourceThresholds
from ..errors import ExitCode
from ..analysis.leak import leak_verdict
from ..analysis.stats import Accounting, CappedCounter, Histogram, SecondHistogram
from ..workload.mix import add_ops
from .load import RunPlan
from .worker import TRACEBACKS_PER_KEY

SECONDS_KEPT = 600  # per-second records an outcome keeps in memory; timeseries.jsonl keeps all
SERIES_KEPT = 7_200  # seconds of pool memory kept for the leak verdict (two hours)
BREAKER_EVENTS_KEPT = 1_000
MAX_ERROR_KEYS = 100
PERCENTILE_KEYS = ("p50", "p90", "p99", "p999", "max")
OP_SECOND_KEYS = ("p50", "p99")  # per op of a mix, per second (timeseries.jsonl ``ops_ms``)


class Series:
    """``(second, MB)`` pairs, the last ``maxlen`` of them: a deque of tuples in 16 bytes a pair
    (two float arrays, trimmed in halves) instead of ~120 — two hours of two series are 0.2 MB, not
    1.8 MB that a soak would see creep. Appends, ``len``, iteration, ``series[i]`` and
    ``series[-1] = pair``."""

    __slots__ = ("maxlen", "_t", "_v")

    def __init__(self, maxlen):
        self.maxlen = maxlen
        self._t, self._v = array("d"), array("d")

    def append(self, pair):
        """Add ``(second, value)``; past ``2 × maxlen`` the oldest are dropped down to ``maxlen``."""
        self._t.append(pair[0])
        self._v.append(pair[1])
        if len(self._t) > 2 * self.maxlen:
            del self._t[:-self.maxlen], self._v[:-self.maxlen]

    def _first(self):
        return max(0, len(self._t) - self.maxlen)

    def __len__(self):
        return len(self._t) - self._first()

    def __iter__(self):
        first = self._first()
        return zip(self._t[first:], self._v[first:])

    def _index(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError("series index out of range")
        return self._first() + (i % n)

    def __getitem__(self, i):
        k = self._index(i)
        return self._t[k], self._v[k]

    def __setitem__(self, i, pair):
        k = self._index(i)
        self._t[k], self._v[k] = pair


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
    measures: dict = field(default_factory=dict)  # loadgen.measure name → Histogram (the flow's stages among them)
    checks: dict = field(default_factory=dict)  # loadgen.check name → [passes, fails]
    ops: dict = field(default_factory=dict)  # a mix's op name → workload.mix.OpTally
    loop_stalls: dict = field(default_factory=dict)  # async slots: {count, max_ms, total_ms} (engine.aslots)
    errors: CappedCounter = field(default_factory=lambda: CappedCounter(MAX_ERROR_KEYS))
    tracebacks: dict = field(default_factory=dict)
    breaches: list = field(default_factory=list)
    exceeded: list = field(default_factory=list)  # report-only thresholds passed (threshold_exceeded events)
    crashes: list = field(default_factory=list)
    output_dropped_bytes: int = 0  # what the workers printed past workers.log's cap (counters.OUTPUT_DROPPED)
    forked_copies: int = 0  # copies of workers an operation forked without os.fork, stopped (counters.COPIES)
    anomalies: list = field(default_factory=list)  # accounting_anomaly events: counters a forked copy wrote
    containment: dict = field(default_factory=dict)  # contain.Containment.to_dict(): mechanism, strays ended
    stop_reason: str = ""
    exit_code: int = ExitCode.OK
    target_error: str = ""  # the target cannot work as given (found by a worker): the session raises it, exit 2
    peak_in_flight: int = 0
    peak_memory_mb: float = 0.0
    peak_rss_mb: float = 0.0
    peak_cpu_percent: float = 0.0
    peak_cgroup_memory_mb: float | None = None  # the run cgroup's memory (page cache included), when there is one
    # Everything kept per second is bounded: the streams on disk keep it all.
    memory_series: Series = field(default_factory=lambda: Series(SERIES_KEPT))
    rss_series: Series = field(default_factory=lambda: Series(SERIES_KEPT))
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
        """Seconds from the run's start to its end, set-up and teardown included."""
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

    def close(self, accounting):
        """At the end of the run: the final ``accounting``, the leak verdict, the stop reason."""
        if self.load_started_at is None:  # the pool never became fully ready
            self.load_started_at = self.started_at
        self.accounting = Accounting().merge(accounting)
        try:
            self.leak = leak_verdict(self.memory_series, self.rss_series, self.thresholds.growth_window_s)
        except Exception as e:  # noqa: BLE001 - a verdict failure must not lose the run
            self.leak = {"leak": None, "reason": f"no verdict: {e}"}
        if not self.stop_reason:
            self.stop_reason = "finished"


def _fold_histogram(histograms, pushed):
    """A measurement name pushed out of the kept ones (``named.kept_name``): its histogram joins OTHER's."""
    _kept(histograms, named.OTHER).merge(histograms.pop(pushed))


def _kept(histograms, key):
    """The histogram kept under ``key``, made on first use. Not ``setdefault(key, Histogram())``: that
    builds a full histogram (184 KiB of counters, freed only by the cyclic GC: the package's encoder
    refers back to it) for every batch and every named measurement — megabytes of garbage a second, whose
    heap churn crept the master's RSS in flow-shaped soaks."""
    h = histograms.get(key)
    if h is None:
        h = histograms[key] = Histogram()
    return h


class Second:
    """What one wall-clock second gathered from the batches and samples that fell in it."""

    __slots__ = ("started", "succeeded", "failed", "dropped", "rejected", "latency", "response", "errors", "reported",
                 "cpu", "memory_mb", "rss_mb", "available_mb", "in_flight", "cgroup_memory_mb", "checks", "ops")

    def __init__(self):
        self.started = self.succeeded = self.failed = self.dropped = self.rejected = self.errors = self.in_flight = 0
        self.latency = SecondHistogram()
        self.response = SecondHistogram()
        self.reported = set()  # indices of the workers whose batch for this second arrived
        self.cpu = []
        self.memory_mb = self.rss_mb = 0.0
        self.available_mb = None
        self.cgroup_memory_mb = None
        self.checks = {}  # loadgen.check name → [passes, fails] (a killed run's report rebuilds them)
        self.ops = {}  # a mix's op name → SecondHistogram (report.html draws each op's latency over time)


class Seconds:
    """Adds batches and samples into ``out`` (a :class:`RunOutcome`) and into per-second records.

    ``phase`` names the records; ``open_model`` adds the response time to
    them. Not thread-safe: the master's loop is the only caller.
    """

    def __init__(self, out, phase, open_model=False):
        self.out, self.phase, self.open_model = out, phase, open_model
        self.pending = {}  # UNIX second → Second
        self.written = -math.inf  # the latest second whose line is written
        self.latest = {}  # worker index → the latest second it reported (a worker's batches come in order)
        plan = out.plan
        if plan.segment_s and plan.duration_s:
            # Every segment's histogram (184 KiB each) made now, not as its time comes: the master's
            # memory does not step up a third of the way into a run (soaks read such steps as creep).
            for seg in range(math.ceil(plan.duration_s / plan.segment_s)):
                _kept(out.segments, seg)

    def _second(self, t):
        sec = self.pending.get(t)
        if sec is None:
            sec = self.pending[t] = Second()
        return sec

    def add_batch(self, b):
        """Add one worker's :class:`~loadgen.engine.messages.ResultBatch`."""
        out = self.out
        sec = self._second(b.second)
        sec.started += b.started
        sec.succeeded += b.succeeded
        sec.failed += b.failed
        sec.dropped += b.dropped
        sec.rejected += b.rejected
        sec.in_flight += b.in_flight
        sec.reported.add(b.index)
        if b.second > self.latest.get(b.index, -math.inf):
            self.latest[b.index] = b.second
        # Sparse parts are added into histograms kept for the run: no full histogram is
        # built per batch (that fragmented the master's heap, see stats.Sparse).
        if b.latency is not None:
            sec.latency.add(b.latency)
            out.latency.add_sparse(b.latency)
        if out.plan.segment_s and b.latency is not None and out.load_started_at:
            seg = int(max(0.0, b.second + 0.5 - out.load_started_at) // out.plan.segment_s)
            _kept(out.segments, seg).add_sparse(b.response or b.latency)
        if b.response is not None:
            sec.response.add(b.response)
            out.response.add_sparse(b.response)
        if b.lateness is not None:
            out.lateness.add_sparse(b.lateness)
        for name, sparse in b.measures.items():
            _kept(out.measures, named.kept_name(out.measures, name, _fold_histogram)).add_sparse(sparse)
        if b.checks:
            named.add_checks(out.checks, b.checks)
            named.add_checks(sec.checks, b.checks)
        if b.ops:
            add_ops(out.ops, b.ops)
            for name, (sparse, *_) in b.ops.items():
                if sparse is not None:
                    sec.ops.setdefault(name, SecondHistogram()).add(sparse)
        if b.stalls:
            st = out.loop_stalls or {"count": 0, "max_ms": 0.0, "total_ms": 0.0}
            st["count"] += len(b.stalls)
            st["max_ms"] = round(max(st["max_ms"], *b.stalls), 1)
            st["total_ms"] = round(st["total_ms"] + sum(b.stalls), 1)
            out.loop_stalls = st
        if b.errors:
            sec.errors += sum(b.errors.values())
            out.errors.update(b.errors)
        for k, tbs in b.tracebacks.items():
            if k in out.tracebacks or len(out.tracebacks) < MAX_ERROR_KEYS:
                kept = out.tracebacks.setdefault(k, [])
                kept.extend(tbs[:TRACEBACKS_PER_KEY - len(kept)])

    def add_sample(self, s):
        """Add one monitor :class:`~loadgen.engine.messages.Sample`: peaks, the second's CPU and
        memory, and the memory series of the leak verdict."""
        out = self.out
        out.peak_memory_mb = max(out.peak_memory_mb, s.pool_memory_mb)
        out.peak_rss_mb = max(out.peak_rss_mb, s.pool_rss_mb)
        out.peak_cpu_percent = max(out.peak_cpu_percent, s.cpu_percent)
        second = int(s.t)
        if second <= self.written:
            # A sample that came after its second's line was written: the peaks only. (It made a
            # second line for that second, with no operations, which then held every later second
            # back for the grace: a fleet shard's last second reached its master 0.6 s late.)
            return
        sec = self._second(second)
        sec.cpu.append(s.cpu_percent)
        sec.memory_mb = max(sec.memory_mb, s.pool_memory_mb)
        sec.rss_mb = max(sec.rss_mb, s.pool_rss_mb)
        sec.available_mb = s.available_mb
        if s.cgroup_memory_mb is not None:
            sec.cgroup_memory_mb = max(sec.cgroup_memory_mb or 0.0, s.cgroup_memory_mb)
            out.peak_cgroup_memory_mb = max(out.peak_cgroup_memory_mb or 0.0, s.cgroup_memory_mb)
        for series, value in ((out.memory_series, s.pool_memory_mb), (out.rss_series, s.pool_rss_mb)):
            if not series or series[-1][0] != second:
                series.append((second, value))
            else:
                series[-1] = (second, max(series[-1][1], value))

    def due(self, now, live, target=None, final=False):
        """The records of the seconds that are complete — every worker in ``live`` (indices) has
        reported them or a later second (a worker ships its seconds in order, so nothing more comes
        for them: a second before the pool began, with monitor samples only, does not wait) — or
        ``TIMING.second_grace_s`` old, oldest first; all of them when ``final``. Each is also kept in
        ``out.seconds``. ``target``: the load's current target."""
        records = []
        for second in sorted(self.pending):
            sec = self.pending[second]
            complete = all(self.latest.get(i, -math.inf) >= second for i in live)
            late = second <= self.written  # a worker's batch that came after its second's line: at once
            if not (final or late) and not (complete and second < int(now)) and second > now - 1 - TIMING.second_grace_s:
                break
            del self.pending[second]
            self.written = max(self.written, second)
            if not sec.reported and not sec.cpu:
                continue
            record = self.record(second, sec, target)
            self.out.seconds.append(record)
            records.append(record)
        return records

    def record(self, second, sec, target=None):
        """The ``timeseries.jsonl`` line of ``second``."""
        lat = sec.latency.summary_ms()
        done = sec.succeeded + sec.failed
        extra = {}
        if sec.cgroup_memory_mb is not None:
            extra["cgroup_memory_mb"] = round(sec.cgroup_memory_mb, 1)
        if sec.checks:
            extra["checks"] = sec.checks
        if sec.ops:  # a mix: each op's second, as the run's (the ops are the mix's few, not per call)
            extra["ops_ms"] = {name: {k: v for k, v in h.summary_ms().items() if k in OP_SECOND_KEYS}
                               for name, h in sec.ops.items()}
        if self.open_model:
            resp = sec.response.summary_ms()
            extra["response_ms"] = {k: resp[k] for k in PERCENTILE_KEYS}
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
            "target": target,
            "latency_ms": {k: lat[k] for k in PERCENTILE_KEYS},
            "cpu_percent": round(sum(sec.cpu) / len(sec.cpu), 1) if sec.cpu else None,
            "pool_memory_mb": round(sec.memory_mb, 1),
            "pool_rss_mb": round(sec.rss_mb, 1),
            "available_mb": None if sec.available_mb is None else round(sec.available_mb),
        } | extra

"""The monitor: a separate process that samples the pool and the machine,
enforces the thresholds, and kills the pool itself when one is breached.

::

      master ── SystemResourceMonitor.conn ─────────────┐ (one duplex pipe)
        │   Watch / Unwatch / Stop  ──▶                 │
        │   ◀── Sample (every tick), Breach, MonitorError
        │                                               ▼
        │ fork                           ┌─────────── monitor ───────────┐
        └──────────────────────────────▶ │ tick every interval_s:        │
                                         │  /proc/PID/stat per watched   │
                                         │  PSS, oldest first, CPU-paced │
                                         │  /proc/stat, /proc/meminfo    │
                                         │  ThresholdEvaluator.check     │
                                         │  breach → kill_ticks(pool)    │
                                         │  master alive? else kill+exit │
                                         └───────────────────────────────┘

The master starts the monitor (``SystemResourceMonitor.start``) before the
pool, sends ``Watch(pid, create_time, pgid, role)`` for every worker and
stressor it starts and ``Unwatch(pid)`` when one ends cleanly, and reads
``Sample`` / ``Breach`` / ``MonitorError`` from the same pipe. On a breach
the pool is already dead when ``Breach`` arrives: the monitor does not ask.

The master's death is noticed two ways: PR_SET_PDEATHSIG delivers
SIGUSR1, whose wake-up fd ends the monitor's wait at once, and every tick
re-reads the master's /proc entry (pid + start time). Either way the
monitor kills the pool and exits. A closed pipe is not relied on: forked
children inherit the master's end of it. A master found *stopped* (state
T) for ``TIMING.master_stopped_s`` of ticks in a row has its pool killed as
a breach (``METRIC_MASTER_STOPPED``): the master reads why if it is ever
continued. Before every kill the monitor sends ``Killing``, so that the
master never takes the deaths that follow for crashes.

Roles ``worker``, ``stressor`` and ``descendant`` (``thresholds.POOL_ROLES``) are
the pool: their memory is the pool's memory and they are killed on a breach.
Descendants — what the pool's operations started, however detached — are
found by the monitor itself (the run's cgroup, or a ``/proc`` scan: see
``contain``), and, if the master dies, ended by it. Any other role is
sampled and reported, never counted nor signalled.

This module is the process (:class:`Monitor`, :func:`monitor_main`); the
master's handle on it (:class:`~.monitor_handle.SystemResourceMonitor`) is
``engine.monitor_handle``. The rest lives in:

* ``engine.sampler`` — what a tick reads: the watched processes (PSS paced
  by :data:`~.sampler.PSS_CPU_BUDGET`) and the machine;
* ``engine.thresholds`` — ``ThresholdEvaluator``, ``METRIC_*``, the roles;
* ``analysis.trend`` — the fits (``linear_fit``, ``SlopeEstimator``);
* ``analysis.leak`` — the report's leak verdict (``LeakDetector``, ``leak_verdict``);
* ``engine._procfs`` — the /proc readers (``read_stat``, ``StatReader``,
  ``read_pss_mb``, ``SystemReader``, ``read_io``);
* ``engine._proc`` — process identity and the verified kill (``kill_ticks``).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import pickle
import select
import signal
import time
import traceback

from . import _proc, _procfs
from ..config import TIMING, ResourceThresholds
from .cgroup import SWEEP_S
from .contain import SCAN_S, Tracker, kill_rounds, marked
from .messages import Breach, Contain, Exceeded, Killing, MonitorError, Sample, Stop, Unwatch, Watch
from .sampler import Sampler
from .signals import child_signals
from .thresholds import GROWTH_ROLES, ThresholdEvaluator, kills

log = logging.getLogger("loadgen.monitor")

# Samples kept while the master does not read its pipe; older ones are dropped (a Breach never
# is) so the monitor never blocks on a send.
MAX_PENDING_SAMPLES = 50

# The memory alarm (a run cgroup with a v1 memory controller): the kernel signals the monitor when the
# cgroup's memory passes this share of max_memory_mb; from then on, until it drops below, the monitor
# looks at the pool's memory (one RSS read per process) every ALARM_LOOK_MS and samples at once when
# it is past the limit — detection within milliseconds, not up to an interval.
ALARM_FRACTION = 0.5
ALARM_LOOK_MS = 2
ALARM_LOOK_COST = 20  # a look at most every this many times its own duration: ≤ 5 % of a core

# Descendants of the pool (processes its operations started) watched at once: each costs a reader
# (an fd) and PSS reads; the rest are still ended at the end of the run (``contain``).
MAX_DESCENDANTS = 200

# After the master's pipe closed without Stop, how long the monitor looks for its death (a killed
# master's fds close a moment before it is gone) before it takes the close as a plain goodbye.
MASTER_EXIT_WAIT_S = 1.0

# A stopped master (state T) is not a breach of a threshold the user set: the Breach names it thus.
METRIC_MASTER_STOPPED = "master_stopped_s"

# The kernel sends this to the monitor when the master dies (PR_SET_PDEATHSIG).
# Not SIGKILL: the monitor must outlive the master long enough to kill the pool.
_PDEATH_SIGNAL = signal.SIGUSR1


# ---------------------------------------------------------------- the monitor process


class _MasterGone(Exception):
    """Raised inside the monitor once the master is found dead (the pool already killed)."""


class Monitor:
    """The monitor's state and handlers, driven by :func:`monitor_main`.

    Usable without a process: tests call :meth:`handle` and :meth:`tick`
    with a fake connection (anything with ``send``; ``fileno`` optional).
    """

    def __init__(self, conn, thresholds=None, interval_s=0.1, master_pid=None, master_create_time=None,
                 *, wake_fd=None):
        self.conn = conn
        self.thresholds = thresholds or ResourceThresholds()
        self.interval_s = float(interval_s)
        self.evaluator = ThresholdEvaluator(self.thresholds)
        self.sampler = Sampler(self.interval_s, self._drop)
        self.stopping = False
        self.breaches = 0
        self.samples_dropped = 0
        self.ticks_skipped = 0
        self._armed = False  # a pool process was watched since the last breach
        self._exceeding = set()  # report-only metrics over their limit now (reported once per episode)
        self._wake_fd = wake_fd
        self._outbox = collections.deque()
        self._handlers = {Watch: self._on_watch, Unwatch: self._on_unwatch, Stop: self._on_stop,
                          Contain: self._on_contain}
        self.contain = None  # contain.ContainSpec once the master sent it
        self.tracker = None  # contain.Tracker: descendants seen (no cgroup)
        self._next_discover = 0.0
        self._poller = None
        self._alarm_fd = None  # eventfd the kernel signals when the cgroup's memory crosses the alarm
        self._alarm_threshold_mb = None
        self._cgroup_cpu = None  # (monotonic s, CPU s) of the run cgroup at the last tick
        self._alarmed = False  # the cgroup's memory is above the alarm threshold: look often
        self._look_every_s = ALARM_LOOK_MS / 1e3  # how often the quick look runs while alarmed
        self._next_look = 0.0
        self._master = None  # (pid, start ticks or None if already gone, StatReader)
        self._master_is_parent = False
        # Ticks in a row that found the master stopped: ticks, not seconds, so that the time the monitor
        # was stopped itself (a paused run) never counts as the master's.
        self._master_stopped_ticks = 0
        if master_pid is not None:
            self._master = self._identify_master(master_pid, master_create_time)
            self._master_is_parent = self._master[1] is not None and os.getppid() == master_pid

    @property
    def watched(self):
        """pid → what the monitor last read of each watched process (the sampler's table)."""
        return self.sampler.watched

    @staticmethod
    def _identify_master(pid, create_time):
        if create_time is not None:
            ticks = _proc.identify(pid, create_time)
        else:
            st = _procfs.read_stat(pid)
            ticks = None if _procfs.is_dead_stat(st) else st.start_ticks
        reader = None
        if ticks is not None:
            try:
                reader = _procfs.StatReader(pid)
            except FileNotFoundError:
                ticks = None
        return pid, ticks, reader

    # -- messages

    def handle(self, msg):
        """Dispatch one message from the master; unknown types are logged."""
        handler = self._handlers.get(type(msg))
        if handler is None:
            log.warning("monitor: ignoring unknown message %r", msg)
            return
        handler(msg)

    def _on_watch(self, msg):
        old = self.watched.get(msg.pid)
        if old is not None:
            self._drop(old, "re-watched")
        w = self.sampler.watch(msg)
        if w is None:
            return
        if w.role in GROWTH_ROLES:
            self.evaluator.rebase(w.memory_mb)
            self._armed = True
        log.debug("monitor: watching pid %d (%s, pgid %s)", w.pid, w.role, w.pgid)

    def _on_unwatch(self, msg):
        w = self.watched.get(msg.pid)
        if w is not None:
            self._drop(w, "unwatched")

    def _on_stop(self, msg):
        self.stopping = True

    def _on_contain(self, msg):
        self.contain = msg.spec
        # In every mode, the cgroup's too: a member may leave the cgroup (for its parent cgroup, which a
        # process of the same user may write to) and the cgroup's kill misses it; the scan has seen it.
        if self._master is not None:
            self.tracker = Tracker(self._master[0], msg.spec.exclude)
        self._arm_alarm()

    def _drop(self, w, why):
        self.sampler.remove(w)
        if w.role in GROWTH_ROLES:
            self.evaluator.rebase(-w.memory_mb)
        log.debug("monitor: pid %d %s", w.pid, why)

    # -- the tick

    def tick(self):
        """Take one sample, evaluate it, act on a breach, send it. Returns the Sample.

        Blocks only while killing the pool on a breach (≤ kill grace + a few ms
        when the pool dies on SIGTERM). Raises :class:`_MasterGone` (after
        killing the pool) if the master has died.
        """
        self.check_master()
        master_stopped_s = self._master_stopped_for()
        now_mono = time.monotonic()
        self._discover(now_mono)
        t = time.time()
        pool_mem, pool_rss, pool_cpu, procs = self.sampler.sample_processes(now_mono)
        cpu, per_cpu, avail, swap, io = self.sampler.sample_system(now_mono)
        # The growth guard follows the workers only: a stressor's ballast grows on purpose.
        growth = self.evaluator.observe_memory(
            t, sum(w.memory_mb for w in self.watched.values() if w.role in GROWTH_ROLES and w.memory_mb))
        sample = Sample(
            t=t, pool_memory_mb=pool_mem, pool_rss_mb=pool_rss, pool_cpu_percent=pool_cpu,
            cpu_percent=cpu, per_cpu=per_cpu, available_mb=avail, swap_used_mb=swap,
            processes=procs, io=io, growth_mb_per_s=growth, **self._cgroup_usage(now_mono),
        )
        crossings = self.evaluator.crossings(sample)
        self.send(sample)
        pool = self._armed and any(w.in_pool for w in self.watched.values())
        breach = next((c for c in crossings if kills(self.thresholds, c[0])), None)
        if breach is None and master_stopped_s >= TIMING.master_stopped_s:
            # The master stopped serving the pool (SIGSTOP, a target that stopped its parent): the pool
            # would run on unguarded by its master's loop, past its duration. It ends; the master, if it
            # is ever continued, reads why.
            breach = (METRIC_MASTER_STOPPED, master_stopped_s, TIMING.master_stopped_s)
        if breach is not None and pool:
            self._breach(*breach)
        elif breach is not None:
            log.debug("monitor: %s = %.6g past %.6g, but no pool to kill", *breach)
        reported = [c for c in crossings if not kills(self.thresholds, c[0])]
        for metric, value, limit in reported if pool else ():
            if metric not in self._exceeding:
                log.info("monitor: %s = %.6g past %.6g: reported (the pool keeps running)", metric, value, limit)
                self.send(Exceeded(metric=metric, value=value, limit=limit, t=t))
        self._exceeding = {c[0] for c in reported}
        return sample

    def _cgroup_usage(self, now_mono):
        """The run cgroup's memory (MB) and CPU (% of one core since the last tick), as Sample fields."""
        cgroup = self.contain.cgroup if self.contain is not None else None
        if cgroup is None:
            return {}
        mem, cpu_s = cgroup.usage()
        last, self._cgroup_cpu = self._cgroup_cpu, (now_mono, cpu_s)
        pct = None
        if cpu_s is not None and last is not None and last[1] is not None and now_mono > last[0]:
            pct = round(max(0.0, cpu_s - last[1]) / (now_mono - last[0]) * 100, 1)
        return {"cgroup_memory_mb": None if mem is None else round(mem, 1), "cgroup_cpu_percent": pct}

    def _discover(self, now_mono):
        """Watch the processes the pool started — the cgroup's members, or the master's descendants
        (:class:`~.contain.Tracker`) — as role ``descendant``: their memory and CPU count in the
        pool's, and a breach kills them with it. Every :data:`~.contain.SCAN_S`; only those older
        than that (a fork that ends at once is not worth a reader), at most :data:`MAX_DESCENDANTS`."""
        spec = self.contain
        if spec is None:
            return
        if spec.cgroup is not None:
            if self.tracker is not None:
                self.tracker.scan(now_mono)  # what left the cgroup is still the run's (see _on_contain)
            if now_mono < self._next_discover:
                return
            self._next_discover = now_mono + SCAN_S
            found = {pid: _procfs.read_stat(pid) for pid in spec.cgroup.pids()}
        else:
            found = self.tracker.scan(now_mono) if self.tracker is not None else None
            if found is None:
                return
        skip = set(spec.exclude) | {os.getpid(), self._master[0] if self._master else 0}
        room = MAX_DESCENDANTS - sum(1 for w in self.watched.values() if w.role == "descendant")
        now_ticks = time.clock_gettime(time.CLOCK_BOOTTIME) * _procfs.CLOCK_TICKS
        bt = None
        for pid, st in found.items():
            if room <= 0:
                break
            if pid in self.watched or pid in skip or _procfs.is_dead_stat(st):
                continue
            if now_ticks - st.start_ticks < SCAN_S * _procfs.CLOCK_TICKS:
                continue  # younger than a scan: next time, if it lives
            bt = bt if bt is not None else _proc.boot_time()
            w = self.sampler.watch(Watch(pid=pid, create_time=_proc.start_ticks_to_create_time(st.start_ticks, bt),
                                         pgid=None, role="descendant"))
            if w is not None:
                room -= 1
                log.debug("monitor: watching pid %d, started by the pool", pid)

    def kill_pool(self):
        """Kill every pool process (and its group): TERM, grace, KILL. Blocks until dead.

        Returns ``(pool_dead_at, killed_pids)``: UNIX seconds, sorted tuple.
        """
        # Never the master nor the monitor itself, whatever role a Watch claimed.
        spared = {os.getpid(), self._master[0] if self._master else None}
        pool = [w for w in self.sampler.pool() if w.pid not in spared]
        alive = {w.pid: w.start_ticks for w in pool}
        pgids = [w.pgid for w in pool if w.pgid is not None]
        dead_at = _proc.kill_ticks(pgids, alive, TIMING.kill_grace_s)
        return dead_at, tuple(sorted(alive))

    def _breach(self, metric, value, limit):
        detected_at = time.time()
        log.warning("monitor: %s = %.6g past the limit %.6g: killing the pool", metric, value, limit)
        # The master hears of the kill before the first worker dies: their deaths are never crashes.
        self.send(Killing(metric=metric, value=value, limit=limit, detected_at=detected_at))
        self.flush(wait_s=TIMING.breach_notice_s)
        dead_at, killed = self.kill_pool()
        self.breaches += 1
        self._armed = False
        for pid in killed:
            w = self.watched.get(pid)
            if w is not None:
                self._drop(w, "killed")
        self.evaluator.reset()
        self.send(Breach(metric=metric, value=value, limit=limit, detected_at=detected_at,
                         pool_dead_at=dead_at, killed_pids=killed))
        log.warning("monitor: pool %s dead %.0f ms after detection", list(killed), (dead_at - detected_at) * 1e3)

    # -- the master

    def master_alive(self):
        """True while the master runs. Non-blocking: ≈0.4 µs when the master is
        our parent (getppid), else one /proc read (≈5–90 µs: the kernel sums
        the CPU time of every thread of the master)."""
        if self._master is None:
            return True
        pid, ticks, reader = self._master
        if ticks is None or reader is None:
            return False
        if self._master_is_parent:
            # A dead parent's children are re-parented at its exit, before it
            # is even a zombie, and the new parent is never this pid.
            return os.getppid() == pid
        st = reader.read()
        return not _procfs.is_dead_stat(st) and st.start_ticks == ticks

    def _master_stopped_for(self):
        """Seconds the master has been seen stopped (state ``T``) in a row, counted in ticks; 0.0 while
        it runs. A traced stop (``t``: a debugger) is not counted."""
        if self._master is None or self._master[2] is None:
            return 0.0
        st = self._master[2].read()
        if st is not None and st.state == "T":
            self._master_stopped_ticks += 1
        else:
            self._master_stopped_ticks = 0
        return self._master_stopped_ticks * self.interval_s

    def check_master(self):
        """Raise :class:`_MasterGone` after killing the pool, and everything the run started, if the
        master is dead."""
        if not self.master_alive():
            log.warning("monitor: the master (pid %s) is gone: killing the pool and exiting",
                        self._master[0] if self._master else "?")
            if self.sampler.pool():
                self.kill_pool()
            self.sweep()
            raise _MasterGone()

    def sweep(self):
        """End every process the run started (the master is gone, nobody else will): the cgroup's
        members, or every descendant the monitor has seen. Bounded (``cgroup.SWEEP_S``)."""
        spec = self.contain
        if spec is None:
            return
        if spec.cgroup is not None:
            spec.cgroup.kill()
        # In every mode: with a cgroup too, since a member can leave it keeping the run's mark, or
        # be a descendant the scan saw; the cgroup is removed once that is done (nested ones too).
        if self.tracker is not None:
            self.tracker.sweep(mark=spec.mark)
        elif spec.mark:
            kill_rounds(lambda table: marked(table, spec.mark, set(spec.exclude) | {os.getpid()}), SWEEP_S)
        if spec.cgroup is not None:
            spec.cgroup.remove()

    # -- sending

    def _wait_writable(self, deadline):
        """Wait until the pipe takes a message or ``deadline`` (CLOCK_MONOTONIC) passes: True if it does."""
        fileno = getattr(self.conn, "fileno", None)
        while fileno is not None and time.monotonic() < deadline:
            try:
                if select.select([], [fileno()], [], max(0.0, deadline - time.monotonic()))[1]:
                    return True
            except (OSError, ValueError):
                return True  # closed: let send raise
        return False

    def _writable(self):
        fileno = getattr(self.conn, "fileno", None)
        if fileno is None:
            return True
        try:
            # A socketpair end is writable while at least half its buffer is
            # free, far more than one message: the send below cannot block.
            return bool(select.select([], [fileno()], [], 0)[1])
        except (OSError, ValueError):
            return True  # closed: let send raise

    def send(self, msg):
        """Queue ``msg`` for the master and send what the pipe takes without blocking.

        A master that stops reading costs old samples (counted in
        :attr:`samples_dropped`), never a Breach, and never stalls the monitor.
        """
        self._outbox.append(msg)
        self.flush()

    def flush(self, wait_s=0.0):
        """Send what the pipe takes now, oldest first; past :data:`MAX_PENDING_SAMPLES`
        queued Samples the oldest are dropped (never a Breach). Waits up to ``wait_s`` for the pipe
        to take everything (a master that reads), else non-blocking."""
        deadline = time.monotonic() + wait_s
        while self._outbox:
            if not self._writable() and not self._wait_writable(deadline):
                excess = sum(isinstance(m, Sample) for m in self._outbox) - MAX_PENDING_SAMPLES
                if excess > 0:
                    kept = collections.deque()
                    for m in self._outbox:
                        if excess > 0 and isinstance(m, Sample):
                            excess -= 1
                            self.samples_dropped += 1
                            continue
                        kept.append(m)
                    self._outbox = kept
                    if self.samples_dropped % 100 == 1:
                        log.warning("monitor: the master is not reading; %d samples dropped", self.samples_dropped)
                return
            msg = self._outbox.popleft()
            send_bytes = getattr(self.conn, "send_bytes", None)
            if send_bytes is not None:
                # multiprocess pickles with dill's pure-Python pickler: 0.13 ms
                # for a 50-process Sample, most of the monitor's CPU budget.
                # Messages are plain dataclasses, so the C pickler does (3 µs),
                # and the master's conn.recv() reads its output unchanged.
                send_bytes(pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))
            else:
                self.conn.send(msg)

    # -- the loop

    def _drain_wake_fd(self):
        try:
            while os.read(self._wake_fd, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _receive(self):
        # Bounded so that a flood of messages cannot starve the schedule.
        for _ in range(1000):
            if not self.conn.poll(0):
                return
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                # A killed master's fds close before the kernel reparents its children, so the
                # end of the pipe may come first: give its death a moment to show.
                deadline = time.monotonic() + MASTER_EXIT_WAIT_S
                while time.monotonic() < deadline:
                    self.check_master()
                    time.sleep(0.005)
                log.warning("monitor: the master closed the pipe without Stop; exiting")
                self.stopping = True
                return
            self.handle(msg)
            if self.stopping:
                return

    def run(self):
        """Sample every ``interval_s`` until Stop, EOF or the master's death.

        Ticks are scheduled on absolute deadlines (start + k·interval), so
        the rate does not drift with the work a tick does; ticks missed
        while the monitor was starved are skipped, not bunched.
        """
        # One poll object for the whole run: connection.wait() would build
        # and tear down a selector on every pass.
        poller = self._poller = select.poll()
        conn_fd = self.conn.fileno()
        poller.register(conn_fd, select.POLLIN)
        if self._wake_fd is not None:
            poller.register(self._wake_fd, select.POLLIN)
        next_tick = time.monotonic()
        try:
            while not self.stopping:
                now = time.monotonic()
                if self._alarmed and self._armed and now < next_tick and now >= self._next_look and self._look():
                    next_tick = now  # the alarm is on and the pool is past the limit: sample (and breach) now
                if now >= next_tick:
                    self.tick()
                    next_tick += self.interval_s
                    now = time.monotonic()
                    if next_tick <= now:
                        missed = int((now - next_tick) / self.interval_s) + 1
                        next_tick += missed * self.interval_s
                        self.ticks_skipped += missed
                elif self._outbox:
                    self.flush()
                # poll() takes whole ms: round up, or the loop would spin
                # through the last fraction of a millisecond before a tick.
                timeout_ms = max(0, math.ceil((next_tick - time.monotonic()) * 1e3))
                if self._alarmed:
                    timeout_ms = min(timeout_ms, math.ceil(self._look_every_s * 1e3))
                for fd, _ in poller.poll(timeout_ms):
                    if fd == conn_fd:
                        self._receive()  # POLLHUP too: recv() then reports EOF
                    elif fd == self._alarm_fd:
                        self._on_alarm()
                    else:
                        self._drain_wake_fd()
                        self.check_master()
        except _MasterGone:
            return

    def _arm_alarm(self):
        """Ask the kernel to tell the monitor when the run cgroup's memory passes
        :data:`ALARM_FRACTION` of the limit (``RunCgroup.memory_alarm``; cgroup v1 only)."""
        cgroup = self.contain.cgroup if self.contain is not None else None
        if cgroup is None or self._alarm_fd is not None:
            return
        self._alarm_threshold_mb = ALARM_FRACTION * self.thresholds.max_memory_mb
        self._alarm_fd = cgroup.memory_alarm(self._alarm_threshold_mb)
        if self._alarm_fd is not None:
            if self._poller is not None:
                self._poller.register(self._alarm_fd, select.POLLIN)
            self._on_alarm()  # the usage may be past the threshold already
            log.debug("monitor: memory alarm at %.0f MB of the run's cgroup", self._alarm_threshold_mb)

    def _look(self):
        """One quick look at the pool's memory while the alarm is on: True if it is past the limit.
        Paced so that looking costs at most 1/:data:`ALARM_LOOK_COST` of a core whatever the pool's size
        (every ALARM_LOOK_MS for a few workers; less often for hundreds of descendants)."""
        start = time.monotonic()
        over = self.sampler.pool_memory_now() > self.thresholds.max_memory_mb
        now = time.monotonic()
        self._look_every_s = max(ALARM_LOOK_MS / 1e3, ALARM_LOOK_COST * (now - start))
        self._next_look = now + self._look_every_s
        return over

    def _on_alarm(self):
        """The cgroup's memory crossed the alarm threshold (either way): look at the pool every
        :data:`ALARM_LOOK_MS` while it is above, at the interval again once it is below."""
        try:
            os.read(self._alarm_fd, 8)
        except (BlockingIOError, OSError):
            pass
        used = self.contain.cgroup.memory_mb()
        self._alarmed = used is not None and used >= self._alarm_threshold_mb

    def close(self):
        """Close every /proc file the monitor holds (watched processes, machine, master) and the alarm."""
        self.sampler.close()
        if self._alarm_fd is not None:
            os.close(self._alarm_fd)
            self._alarm_fd = None
        if self._master is not None and self._master[2] is not None:
            self._master[2].close()


def monitor_main(conn, thresholds, interval_s, master_pid, master_create_time):
    """Body of the monitor process (the target of ``Process``). Returns when done.

    Runs until ``Stop``, until the master closes its pipe end, or until the
    master dies (then it kills the pool first). An unexpected error is sent
    as :class:`~loadgen.messages.MonitorError` and ends the process with
    exit code 1. Blocks for the whole run.
    """
    _proc.set_title("loadgen: monitor")
    # A forked child inherits the master's handlers (e.g. a SIGTERM handler that writes a report):
    # the monitor wants the plain default for SIGTERM, and ignores what only the master acts on (a
    # terminal's Ctrl-C or hangup reaches the monitor too: the run's guard must outlive it), Ctrl-Z
    # included: the master stops the monitor itself, after the pool (engine.signals).
    child_signals(ignore_pause=True)
    wake_r = None
    try:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        # The handler does nothing; the wake-up fd makes the wait return at once.
        # Installing it also replaces any wake-up fd inherited from the master,
        # which would otherwise receive the monitor's signals.
        signal.signal(_PDEATH_SIGNAL, lambda signum, frame: None)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    except ValueError:  # not the main thread (tests): the per-tick check remains
        wake_r = None
    _proc.set_pdeathsig(_PDEATH_SIGNAL)
    mon = None
    try:
        mon = Monitor(conn, thresholds, interval_s, master_pid, master_create_time, wake_fd=wake_r)
        mon.run()
    except Exception as exc:
        log.exception("monitor: crashed")
        try:
            conn.send(MonitorError(type(exc).__name__, str(exc), traceback.format_exc()))
        except Exception:  # noqa: BLE001 - the master may be gone too
            pass
        raise SystemExit(1) from exc
    finally:
        if mon is not None:
            mon.close()

"""The monitor's measurements: what it reads, each tick, of the processes it watches and of the machine.

Runs inside the monitor process (``engine.monitor``), which decides and acts
on what is read here; this module only reads:

* per watched process: ``/proc/PID/stat`` through a :class:`~._procfs.StatReader`
  kept open (RSS, and CPU % from tick-to-tick deltas);
* its PSS (``smaps_rollup``, costly), re-read oldest first within a share of
  one core (:data:`PSS_CPU_BUDGET`); between reads its memory is estimated as
  PSS + (RSS now − RSS at that read);
* the machine's CPU and memory every tick, disk and network counters every
  ``TIMING.io_refresh_s``.

Non-blocking throughout (one read is microseconds, a PSS read about a ms).
"""

from __future__ import annotations

import collections
import logging
import time

from . import _proc, _procfs
from ..config import TIMING
from .thresholds import POOL_ROLES

log = logging.getLogger("loadgen.monitor")

_MB = 1024.0 * 1024.0

# PSS re-reads are paced by CPU: smaps_rollup walks the page tables (≈0.4–1 ms for an idle
# numpy worker on this VM, more for a big one), so reading 50 of them every tick would cost a
# core by itself. The reads, oldest first, may use this share of one core (0.3 %: 50 idle
# workers are each re-read about every 15–25 s), and no process is re-read sooner than
# TIMING.pss_refresh_min_s. Between reads a process's memory is estimated as PSS + (RSS now −
# RSS at that read), exact for private growth; only changes in sharing (copy-on-write
# breaking) wait for the next read.
PSS_CPU_BUDGET = 0.003


class _Watched:
    """One watched process and what the monitor last read of it."""

    __slots__ = ("pid", "create_time", "start_ticks", "pgid", "role", "reader",
                 "last_ticks", "last_mono", "rss_mb", "cpu_percent",
                 "pss_mb", "pss_rss_mb", "pss_mono", "memory_mb")

    @property
    def in_pool(self):
        """True for a pool role (counted in the pool's memory, killed on a breach)."""
        return self.role in POOL_ROLES

    def memory_at(self, rss_mb):
        """The monitor's measure of this process's memory at ``rss_mb`` of RSS: its last PSS plus the
        RSS growth since that PSS was read (MB, never below 0)."""
        return max(0.0, self.pss_mb + (rss_mb - self.pss_rss_mb))


class Sampler:
    """The watched processes and the machine, read once per tick.

    ``interval_s``: the tick period, seconds (paces the PSS budget).
    ``drop(w, why)``: the owner's removal of a watched process, called for
    one found dead while sampling (the owner also un-counts its memory).
    :attr:`watched` maps pid → entry (``pid``, ``start_ticks``, ``pgid``,
    ``role``, ``memory_mb`` …). Call :meth:`close`.
    """

    def __init__(self, interval_s, drop):
        self.interval_s = float(interval_s)
        self.watched = {}  # pid → _Watched
        self._drop = drop
        self._pss_queue = collections.deque()  # pids in round-robin order
        self._pss_credit_s = 0.0
        self._io = {}
        self._io_next = 0.0
        self._system = _procfs.SystemReader()

    def watch(self, msg):
        """Start reading the process a ``Watch`` names; returns its entry, or None.

        None (logged) if no live process has that pid and create time. The
        stat file is opened and re-checked first: it stays bound to that one
        process, so no later read can describe a stranger. Reads its PSS now.
        """
        ticks = _proc.identify(msg.pid, msg.create_time)
        if ticks is None:
            (log.debug if msg.role == "descendant" else log.warning)(
                "monitor: not watching pid %d (%s): no live process with create time %.3f — "
                "it exited, or the pid belongs to another process now", msg.pid, msg.role, msg.create_time)
            return None
        try:
            reader = _procfs.StatReader(msg.pid)
        except FileNotFoundError:
            return None
        # Re-check through the open file: it is bound to one process for good,
        # so from here on no read can describe a stranger.
        st = reader.read()
        if _procfs.is_dead_stat(st) or st.start_ticks != ticks:
            reader.close()
            return None
        w = _Watched()
        w.pid, w.create_time, w.start_ticks = msg.pid, msg.create_time, ticks
        w.pgid, w.role, w.reader = msg.pgid, msg.role, reader
        w.last_ticks, w.last_mono = st.cpu_ticks, time.monotonic()
        w.rss_mb = st.rss_pages * _procfs.PAGE_SIZE / _MB
        w.cpu_percent = 0.0
        self._read_pss(w, w.last_mono)
        w.memory_mb = w.pss_mb
        self.watched[w.pid] = w
        self._pss_queue.append(w.pid)
        return w

    def remove(self, w):
        """Stop reading ``w`` and close its stat file."""
        self.watched.pop(w.pid, None)
        w.reader.close()

    def pool(self):
        """The watched processes in a pool role, as a list."""
        return [w for w in self.watched.values() if w.in_pool]

    def _read_pss(self, w, now_mono):
        """Re-read ``w``'s PSS; returns the seconds it took (the cost paced by the budget)."""
        t0 = time.perf_counter()
        pss = _procfs.read_pss_mb(w.pid)
        # Without smaps_rollup (old kernel) RSS is the best we have.
        w.pss_mb = w.rss_mb if pss is None else pss
        w.pss_rss_mb = w.rss_mb
        w.pss_mono = now_mono
        return time.perf_counter() - t0

    def _refresh_pss(self, now_mono):
        # Credit accrues at the budget rate and is capped at one second's
        # worth, so idle periods do not bank a burst of reads.
        self._pss_credit_s = min(self._pss_credit_s + PSS_CPU_BUDGET * self.interval_s, PSS_CPU_BUDGET)
        while self._pss_credit_s > 0.0 and self._pss_queue:
            w = self.watched.get(self._pss_queue[0])
            if w is None:
                self._pss_queue.popleft()  # dropped since: its slot costs nothing
                continue
            if now_mono - w.pss_mono < TIMING.pss_refresh_min_s:
                break  # the queue is oldest first: nobody else is due either
            self._pss_queue.rotate(-1)
            self._pss_credit_s -= self._read_pss(w, now_mono)

    def sample_processes(self, now_mono):
        """Read every watched process (dropping the dead), refresh PSS within the budget.

        ``now_mono``: ``time.monotonic()`` of this tick. Returns ``(pool_memory_mb,
        pool_rss_mb, pool_cpu_percent, processes)`` with ``processes``: pid →
        ``(rss_mb, cpu_percent)`` for every watched process, pool or not.
        """
        page_mb = _procfs.PAGE_SIZE / _MB
        for w in list(self.watched.values()):
            st = w.reader.read()
            if _procfs.is_dead_stat(st):
                self._drop(w, "exited")
                continue
            dt = now_mono - w.last_mono
            if dt > 0:
                w.cpu_percent = 100.0 * (st.cpu_ticks - w.last_ticks) / _procfs.CLOCK_TICKS / dt
            w.last_ticks, w.last_mono = st.cpu_ticks, now_mono
            w.rss_mb = st.rss_pages * page_mb
        self._refresh_pss(now_mono)
        pool_mem = pool_rss = pool_cpu = 0.0
        procs = {}
        for w in self.watched.values():
            mem = w.memory_at(w.rss_mb)
            if w.in_pool:
                # Keep the growth series continuous: what a member gains is growth.
                pool_mem += mem
                pool_rss += w.rss_mb
                pool_cpu += w.cpu_percent
            w.memory_mb = mem
            procs[w.pid] = (w.rss_mb, w.cpu_percent)
        return pool_mem, pool_rss, pool_cpu, procs

    def pool_memory_now(self):
        """The pool's memory as :meth:`sample_processes` would count it, from one RSS read of each pool
        process (≈ 4 µs each) and nothing else: the monitor's quick look while the memory alarm is on.
        Changes no state."""
        page_mb = _procfs.PAGE_SIZE / _MB
        total = 0.0
        for w in self.watched.values():
            if not w.in_pool:
                continue
            st = w.reader.read()
            if not _procfs.is_dead_stat(st):
                total += w.memory_at(st.rss_pages * page_mb)
        return total

    def sample_system(self, now_mono):
        """The machine: ``(cpu_percent, per_cpu, available_mb, swap_used_mb, io)``.

        CPU since the previous call; ``io`` (:func:`~._procfs.read_io`) is
        re-read only every ``TIMING.io_refresh_s`` and repeated in between.
        """
        cpu, per_cpu = self._system.cpu_percent()
        avail, swap = self._system.memory_mb()
        if now_mono >= self._io_next:
            self._io = _procfs.read_io()
            self._io_next = now_mono + TIMING.io_refresh_s
        return cpu, per_cpu, avail, swap, self._io

    def close(self):
        """Close every open /proc file and forget the watched processes."""
        for w in list(self.watched.values()):
            w.reader.close()
        self.watched.clear()
        self._system.close()

"""What the master does when something fails under it: a worker dies, an operation hangs, the
monitor goes silent or away.

:class:`FaultHandling` is the part of :class:`~loadgen.engine.runner.Runner`
that handles them (a mixin: it works on the Runner's pool, load model,
events and outcome). Every operation a dead worker started ends as exactly
one of succeeded, failed, timed out or crashed — read from the worker's
shared counters, which outlive it — and a crash is named (exit code or
signal, a hint) and the worker replaced, up to ``plan.max_restarts``.
"""

from __future__ import annotations

import logging
import os
import time

from ..config import TIMING
from ._procfs import read_stat
from .counters import copies, output_dropped
from ..errors import ExitCode, WorkerCrashed, describe_exitcode

log = logging.getLogger("loadgen.runner")

# A monitor is lost when no sample came for TIMING.monitor_silent_s, or for this many sampling intervals
# when the interval is slow (--sample-interval 1s: 3 s).
MONITOR_SILENT_INTERVALS = 3
STARVED_STATES = ("R", "S", "D")  # a silent monitor in one of these is waiting for a core, not stopped


class FaultHandling:
    """Worker deaths, operation timeouts and a lost monitor, for the Runner (see the module docstring)."""

    def _check_timeouts(self):
        timeout_s = self.plan.op_timeout_s
        for h, late in self.pool.overdue(timeout_s):
            h.timed_out_slots.update(late)
            self.events.emit("timeout", worker=h.index, pid=h.pid, slots=late, op_timeout_s=timeout_s,
                             action="worker killed and replaced")
            self.pool.kill(h)
        self.out.peak_in_flight = max(self.out.peak_in_flight, self.pool.in_flight())

    def _worker_gone(self, h, join_s=1.0):
        """Worker ``h`` died or exited: its operations accounted, then a clean exit, a start-up error,
        a kill during a stop or a crash (named, and the worker replaced up to ``max_restarts``).
        Blocks at most ``join_s`` for its exit status (0 for a worker that will not die: it is
        retired as it is, see :meth:`_force_retire`)."""
        h.process.join(join_s)
        exitcode = h.process.exitcode
        try:  # batches it sent before dying are still in the pipe
            # Non-blocking: a worker killed mid-send leaves half a message, and a copy of it may hold the
            # write end open for good — recv() must not wait for the rest.
            os.set_blocking(h.conn.fileno(), False)
            while not h.conn.closed and h.conn.poll():
                self._dispatch(h.conn.recv(), h)
        except (EOFError, OSError):
            pass
        acc, anomaly = h.final_accounting(self.plan.slots)
        self.out.output_dropped_bytes += output_dropped(h.counters, self.plan.slots)
        self.out.forked_copies += copies(h.counters, self.plan.slots)
        if anomaly is not None:
            record = self.events.emit("accounting_anomaly", **anomaly,
                                      reason="impossible counters (more operations ended than started, or "
                                             "below zero): a forked copy of the worker wrote them; counts clamped")
            self.out.anomalies.append(record)
        self.retired.merge(acc)
        unstarted = max(0, h.quota_given - acc.dispatched)
        self.pool.inputs_used[h.index] = self.pool.inputs_used.get(h.index, 0) + acc.dispatched
        if self.monitor is not None:
            self.monitor.unwatch(h.pid)
        self.pool.retire(h)
        self.load.on_gone(h)
        if self.stopping is None:
            self.load.maybe_start()  # the one it waited for may be the one that died
        if h.said_goodbye and exitcode == 0:
            if not self.pool.handles and self.stopping is None:
                self._begin_stop(h.exit_reason or "workers finished", ExitCode.OK)
        elif h.error is not None:  # could not build the target
            self.load.refund(unstarted)
            if not self.pool.handles and self.stopping is None:
                self._begin_stop(f"no worker could start: {h.error.type_name}: {h.error.message}", ExitCode.USAGE)
        elif self._killed_by_us(exitcode):
            if acc.crashed or acc.timed_out:
                self.events.emit("worker_killed", worker=h.index, pid=h.pid, exitcode=exitcode,
                                 operations_lost_in_flight=acc.crashed,
                                 reason=self.stopping[0] if self.stopping else "breach")
        else:
            self._crashed(h, exitcode, acc, unstarted)

    def _killed_by_us(self, exitcode):
        """True when a worker's death is loadgen's own doing — the monitor's kill on a breach, a stop's
        kill, the pool ending itself for a stopped master — never a crash. A worker killed by a signal
        may have died of the monitor's kill whose notice (``Killing``) is still in the pipe: read it first."""
        if exitcode is not None and exitcode < 0 and not (self.load.broken or self.stopping is not None):
            self._read_monitor()
        return self.load.broken or self.stopping is not None

    def _retire_dead(self):
        """Retire every worker found dead by its exit status, whatever its sentinel says (a copy it
        forked may hold the sentinel and pipe open for good)."""
        for h in self.pool.dead():
            self._worker_gone(h)

    def _force_retire(self, why, waited_s=TIMING.kill_wait_s):
        """Retire the workers still there ``waited_s`` after SIGKILL (uninterruptible sleep): their
        operations count as crashed and the run ends without waiting for them."""
        for h in list(self.pool.handles.values()):
            self.events.emit("worker_unkillable", worker=h.index, pid=h.pid, reason=why, waited_s=waited_s)
            log.error("worker %d (pid %d) still alive %.1f s after SIGKILL: retired as it is", h.index, h.pid,
                      waited_s)
            self._worker_gone(h, join_s=0)

    def _crashed(self, h, exitcode, acc, unstarted):
        crash = WorkerCrashed(h.index, h.pid, exitcode, acc.crashed + acc.timed_out)
        record = self.events.emit("worker_crash", worker=h.index, pid=h.pid, exitcode=exitcode,
                                  exit=describe_exitcode(exitcode),
                                  hint="operation timed out" if acc.timed_out else crash.hint,
                                  in_flight=crash.in_flight, timed_out=acc.timed_out, crashed=acc.crashed)
        self.out.crashes.append(record)
        if self.pool.restarts >= self.plan.max_restarts:
            self._begin_stop(f"worker restart limit ({self.plan.max_restarts}) reached; last: {crash}", ExitCode.FAILED)
            return
        self.pool.restarts += 1
        self.load.refund(unstarted)
        self.pool.start_worker(h.index)

    def _monitor_silence_limit(self):
        """Seconds without a sample after which the monitor is lost (longer while it kills the pool: a
        kill waits for the pool's death, up to the kill grace and the wait after SIGKILL)."""
        limit = max(TIMING.monitor_silent_s, MONITOR_SILENT_INTERVALS * self.plan.sample_interval_s)
        if self._monitor_killing is not None:
            limit += TIMING.kill_grace_s + TIMING.kill_wait_s
        return limit

    def _check_monitor(self, now):
        if self.monitor is None or self.out.monitor_lost:
            return
        if now - self._last_sample_at > self._monitor_silence_limit():
            # A turn of the master's own that took long (a replacement started, a dead worker joined) is
            # not the monitor's silence: what it sent meanwhile is still in the pipe.
            self._read_monitor()
            now = time.monotonic()
        silent_s = now - self._last_sample_at
        if self.out.monitor_lost or silent_s <= self._monitor_silence_limit():
            return
        state = self._monitor_state()
        if state in STARVED_STATES and silent_s <= self._monitor_silence_limit() + TIMING.monitor_starved_s:
            # Alive and runnable or asleep, not stopped: a loaded machine can leave a process unscheduled
            # for a second (seen under a load average of 4 on 2 cores: a false loss ended a nightly suite
            # with 3). A stopped one (T, t) or one gone is lost at once; a hung one after the longer wait.
            return
        self._monitor_lost(f"no sample for {silent_s:.1f}s ({'stopped' if state in ('T', 't') else 'stopped or hung'})")

    def _monitor_state(self):
        """The monitor process's state letter (``R``, ``S``, ``D``, ``T`` …), or None if unknown."""
        process = getattr(self.monitor, "process", None)
        pid = getattr(process, "pid", None)
        if not isinstance(pid, int):
            return None
        try:
            info = read_stat(pid)
        except (OSError, ValueError):
            return None
        return info.state if info is not None else None

    def _monitor_lost(self, why):
        """The monitor died, closed its pipe or went silent: the pool is never left unguarded — it is
        killed, the monitor too (a silent one may be stopped), and the run ends with exit 3 (or a
        signal's code), also when it was already stopping."""
        if self.out.monitor_lost:
            return
        self.out.monitor_lost = True
        self._monitor_killing = None  # no Breach will come
        self.load.broken = True  # the pool's deaths from here on are this kill, not crashes
        self.events.emit("monitor_lost", reason=why)
        log.error("monitor lost (%s): stopping the run — never unmonitored", why)
        self._escalate(f"monitor lost: {why}", ExitCode.BREACH)
        self.pool.kill_group()
        try:
            self.monitor.conn.close()
        except (OSError, AttributeError):
            pass
        self.monitor.conn = None
        try:
            if self.monitor.process.is_alive():
                self.monitor.process.kill()  # SIGKILL ends a stopped process too
        except (OSError, ValueError, AttributeError, AssertionError):
            pass

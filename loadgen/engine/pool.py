"""Child processes: one registering start function, one ``stop_all``, the worker pool.

Every process loadgen starts — monitor, workers, stressors — goes through
:meth:`ProcessRegistry.start`, so :meth:`ProcessRegistry.stop_all` can end
them all (terminate → join → kill → join) from a ``finally``.

Workers live in their own process group (the first worker leads it, the
rest join), so one ``killpg`` ends the pool together with any children an
operation spawned.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from dataclasses import dataclass, field

from . import _proc
from ..config import TIMING
from ..errors import UsageError
from ..analysis.stats import Accounting
from .counters import copies, counters_size, late_slots, slot_totals
from .heartbeat import Heartbeat
from .worker import worker_main

log = logging.getLogger("loadgen.pool")

CANCEL_GRACE_S = 2.0  # an async worker's operation may ignore its cancellation this long before the worker is replaced


def get_context(start_method=None):
    """The ``multiprocess`` context: fork by default on Linux; spawn must also work."""
    import multiprocess as mp

    method = start_method or os.environ.get("LOADGEN_START_METHOD") or "fork"
    try:
        return mp.get_context(method)
    except ValueError:
        raise UsageError(f"start method {method!r} is not available here (use fork or spawn)") from None


class ProcessRegistry:
    """Starts and remembers children; ends them all on :meth:`stop_all`."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.procs = []  # (role, process)
        self.cgroup = None  # cgroup.RunCgroup the children join first (None: none)

    def start(self, target, args, name, role="worker"):
        """Start ``target(*args)`` in a daemon child called ``name`` and register it under ``role``
        (``worker``, ``stressor``); returns the started process at once, without waiting for it.
        With a :attr:`cgroup`, the child joins it before it runs anything."""
        if self.cgroup is not None:
            target, args = _joined, (self.cgroup, target, args)
        proc = self.ctx.Process(target=target, args=args, name=name, daemon=True)
        proc.start()
        self.procs.append((role, proc))
        return proc

    def adopt(self, proc, role):
        """Register a child started elsewhere (the monitor starts its own process)."""
        self.procs.append((role, proc))
        return proc

    def forget(self, proc):
        """Stop tracking ``proc`` (a retired worker): :meth:`stop_all` will not touch it."""
        self.procs = [(r, p) for r, p in self.procs if p is not proc]

    def stop_all(self, grace_s=TIMING.kill_grace_s, roles=None):
        """Terminate, wait up to ``grace_s``, kill, reap (:func:`_proc.end_processes`): the pool's
        workers and stressors first, then the monitor, so the pool is never left unwatched."""
        procs = [rp for rp in self.procs if roles is None or rp[0] in roles]
        _proc.end_processes([p for r, p in procs if r != "monitor"], grace_s)
        _proc.end_processes([p for r, p in procs if r == "monitor"], grace_s)
        for rp in procs:
            try:
                rp[1].close()
            except (ValueError, AttributeError):
                pass
        self.procs = [rp for rp in self.procs if rp not in procs]


def _joined(cgroup, target, args):
    """A child's body in a contained run: join the run's cgroup, then run ``target(*args)``. A child
    that could not join (said in workers.log) is still ended by the master's sweep, not by the
    monitor's if the master is killed."""
    if not cgroup.join():
        log.warning("pid %d could not join the run's cgroup %s", os.getpid(), cgroup.kill_dir)
    return target(*args)


@dataclass
class WorkerHandle:
    """The master's side of one worker: its process, pipe end and shared counters (``counters``, an int64
    view of ``shm``), and what the master learned of it: pid and create time from its ``Ready``, quota
    given, slots timed out, why it exited."""

    index: int
    process: object
    conn: object
    shm: object
    counters: memoryview
    pid: int = 0
    create_time: float = 0.0
    ready: bool = False
    said_goodbye: bool = False
    quota_given: int = 0
    timed_out_slots: set = field(default_factory=set)
    cancels: bool = False  # an async worker: it cancels operations at their timeout itself (Ready.asynchronous)
    exit_reason: str | None = None
    error: object = None

    def totals(self, slots):
        """[started, succeeded, failed, dropped, rejected] from shared memory — valid after the process died."""
        return slot_totals(self.counters, slots)

    def final_accounting(self, slots):
        """What became of every operation this worker started (its shared counters outlive it): those
        still in flight count as timed out (as many as its timed-out slots) or crashed.

        Returns ``(accounting, anomaly)``. ``anomaly`` is None, or a dict when more operations ended
        than started: only a copy of the worker forked by an operation outside Python's ``os.fork``
        (whose copies loadgen cuts off from the counters) can write that. The accounting is then
        clamped (nothing in flight, dispatched = ended) so that no count is impossible, and the
        anomaly says by how much the counters were written to."""
        started, succ, fail, dropped, rejected, cancelled = self.totals(slots)
        anomaly = None
        stray = copies(self.counters, slots)
        if succ + fail > started or cancelled > fail or min(started, succ, fail, dropped, rejected, cancelled) < 0:
            anomaly = {"worker": self.index, "pid": self.pid, "started": started, "ended": succ + fail,
                       "excess": succ + fail - started, "forked_copies": stray}
            succ, fail, dropped, rejected, cancelled = (max(0, x) for x in (succ, fail, dropped, rejected, cancelled))
            cancelled = min(cancelled, fail)
            started = max(started, succ + fail)
        elif stray:
            # Copies stopped before they counted anything: the accounting is exact, and the report says so.
            anomaly = {"worker": self.index, "pid": self.pid, "started": started, "ended": succ + fail,
                       "excess": 0, "forked_copies": stray}
        in_flight = started - succ - fail
        timed_out = min(len(self.timed_out_slots), in_flight)
        return Accounting(dispatched=started, succeeded=succ, failed=fail - cancelled, timed_out=timed_out + cancelled,
                          crashed=in_flight - timed_out, dropped=dropped, rejected=rejected), anomaly


class Pool:
    """The worker processes, their pipes and their shared counters."""

    def __init__(self, ctx, registry, template):
        """``template``: the :class:`WorkerSpec` every worker gets, but for its index, group and
        input offset; ``template.workers`` is the pool's size."""
        self.ctx = ctx
        self.registry = registry
        self.template = template
        self.size = template.workers
        self.slots = template.slots
        self.pgid = None
        self.handles = {}  # index → WorkerHandle
        self.inputs_used = {}  # index → records of that worker's share used by its dead predecessors
        self.restarts = 0
        self.heartbeat = Heartbeat(ctx)  # the master's pulse: a worker that stops feeling it ends the pool
        self.pauses_ns = []  # (start, end) CLOCK_MONOTONIC ns of each pause of the whole run (Ctrl-Z)

    def beat(self):
        """The master serves the pool now (its loop's every turn): see ``engine.heartbeat``."""
        self.heartbeat.beat()

    def start_worker(self, index):
        """Start worker ``index`` (first start or replacement) in the pool's process group, with fresh
        shared counters and a duplex pipe; a replacement skips the input records its predecessors used.
        Returns its :class:`WorkerHandle` at once; the worker is ready when its ``Ready`` arrives."""
        self.beat()  # starting a large pool takes seconds: the first workers must not take it for a stop
        shm = self.ctx.RawArray("q", counters_size(self.slots))
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        spec = dataclasses.replace(self.template, index=index, pgid=self._live_pgid(), master_pid=os.getpid(),
                                   inputs_skip=self.inputs_used.get(index, 0))
        proc = self.registry.start(worker_main, (spec, child_conn, shm, self.heartbeat), f"loadgen: worker {index}",
                                   "worker")
        child_conn.close()
        # Both sides call setpgid so the group exists before either one relies on it.
        try:
            os.setpgid(proc.pid, spec.pgid or proc.pid)
        except OSError:
            pass
        if self.pgid is None or not _group_exists(self.pgid):
            try:
                self.pgid = os.getpgid(proc.pid)
            except OSError:
                pass
        handle = WorkerHandle(index, proc, parent_conn, shm, memoryview(shm).cast("B").cast("q"), pid=proc.pid)
        self.handles[index] = handle
        return handle

    def _live_pgid(self):
        return self.pgid if self.pgid is not None and _group_exists(self.pgid) else None

    def start(self, interrupted=None):
        """Start all ``size`` workers (:meth:`start_worker`); returns at once, before any is ready.
        ``interrupted()`` (optional) is asked before each start: once it is true no more are started
        (a signal during a large pool's start is acted on at once)."""
        for i in range(self.size):
            if interrupted is not None and interrupted():
                log.info("pool start interrupted after %d of %d workers", i, self.size)
                return
            self.start_worker(i)

    def by_conn(self, conn):
        """The handle whose pipe end is ``conn``, or None."""
        for h in self.handles.values():
            if h.conn is conn:
                return h
        return None

    def by_sentinel(self, sentinel):
        """The handle whose process sentinel is ``sentinel``, or None."""
        for h in self.handles.values():
            if h.process.sentinel == sentinel:
                return h
        return None

    def send(self, handle, msg):
        """Send ``msg`` to one worker; True if sent, False when its pipe is closed or broken (it died)."""
        try:
            handle.conn.send(msg)
            return True
        except (OSError, ValueError, BrokenPipeError):
            return False

    def broadcast(self, msg):
        """Send ``msg`` to every live worker; failures are ignored (a dead worker's sentinel reports it)."""
        for h in list(self.handles.values()):
            if h.process.is_alive():
                self.send(h, msg)

    def kill(self, handle, sig=signal.SIGKILL):
        """Send ``sig`` (default SIGKILL) to one worker, if it is not reaped yet. Non-blocking: the
        death shows on its sentinel (or to :meth:`Runner._retire_dead`).

        No identity check is needed: the worker is our child, and a child's pid cannot be handed to
        another process before its parent reaps it — which ``is_alive()`` does when it finds it dead,
        so the signal goes to the worker or nowhere."""
        if not handle.process.is_alive():
            return
        try:
            os.kill(handle.pid, sig)
        except ProcessLookupError:
            pass

    def kill_group(self, sig=signal.SIGKILL):
        """Signal the whole pool, and whatever its operations started in its process group.

        The group is signalled only while one of our unreaped workers is in it: that keeps its id
        from being reused (pid_max may be 32768, and a forking target goes through pids fast)."""
        pgid = self.pgid
        if pgid is not None and pgid != os.getpgid(0) and any(
                h.process.is_alive() and _pgid_of(h.pid) == pgid for h in self.handles.values()):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        for h in self.handles.values():
            self.kill(h, sig)

    def retire(self, handle):
        """Forget a dead worker (after its accounting has been read)."""
        self.handles.pop(handle.index, None)
        handle.process.join(0.1)
        self.registry.forget(handle.process)
        try:
            handle.conn.close()
        except OSError:
            pass
        try:
            handle.process.close()
        except ValueError:  # still alive (unkillable: force-retired): the exit handler must not join it
            from multiprocess import process as mp_process

            mp_process._children.discard(handle.process)

    def in_flight(self):
        """Operations running now, over every worker (from the shared counters; never below 0)."""
        total = 0
        for h in self.handles.values():
            started, succ, fail = h.totals(self.slots)[:3]
            total += max(0, started - succ - fail)
        return total

    def dead(self):
        """Handles whose process has ended (reaped by this call), whether or not its sentinel said
        so: a stray copy of a worker may hold the sentinel open long after the worker died."""
        return [h for h in list(self.handles.values()) if not h.process.is_alive()]

    def overdue(self, timeout_s):
        """``(handle, slots)`` of the live workers with an operation running longer than ``timeout_s``
        (None: no timeout) that were not timed out already."""
        if timeout_s is None:
            return []
        now_ns = time.monotonic_ns()  # before any start is read (see counters.late_slots)
        out = []
        for h in list(self.handles.values()):
            if h.timed_out_slots or not h.process.is_alive():
                continue
            # An async worker cancels an operation at its timeout itself: it is replaced only when the
            # operation ignores the cancellation for CANCEL_GRACE_S more.
            limit_ns = (timeout_s + (CANCEL_GRACE_S if h.cancels else 0.0)) * 1e9
            late = late_slots(h.counters, self.slots, now_ns, limit_ns, self.paused_ns if self.pauses_ns else None)
            if late:
                out.append((h, late))
        return out


    def paused_ns(self, since_ns, now_ns):
        """How much of ``since_ns`` → ``now_ns`` (CLOCK_MONOTONIC ns) the whole run spent paused: an
        operation's age leaves it out (a paused pool runs nothing; it did not time out)."""
        return sum(max(0, min(end, now_ns) - max(start, since_ns)) for start, end in self.pauses_ns)


def _pgid_of(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _group_exists(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

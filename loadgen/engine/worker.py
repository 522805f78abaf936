"""A worker process: its main thread, and N slots (threads) running operations back to back.

The hot loop stays in the worker (``slots.py``): each slot times its own
operations and appends the latency to a list; the worker's main thread
(:class:`Worker`) takes work orders from the master, drains the lists once a
second (aligned on wall-clock seconds), folds them into HDR histograms and
ships one :class:`~loadgen.engine.messages.ResultBatch`. No operation costs a
pipe round trip. Accounting lives in shared memory (``counters.py``) so that
it survives the worker.

Lists are drained with ``chunk = L[:n]; del L[:n]``: both are atomic under
the GIL and concurrent appends only ever land past ``n``, so no sample is
lost to a swap race.
"""

from __future__ import annotations

import collections
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

from . import _proc
from .counters import COPIES, DROPPED, OUTPUT_DROPPED, SLOT_FIELDS, slot_totals
from .messages import Ready, ResultBatch, Stop, TargetMisused, WorkerError, WorkerExit, WorkOrder
from .slots import GIVE_WAY_S, closed_slot, open_slot
from .. import named
from ..config import TIMING
from ..errors import SLOT_DIED_EXITCODE
from ..workload import results
from ..workload.targets import TargetSpec, build_operation

MAX_ERROR_KEYS = 50  # distinct error keys a worker reports; the rest go to "other"
TRACEBACKS_PER_KEY = 3  # the first tracebacks of each error type are kept
INPUTS_EXHAUSTED = "inputs exhausted"
SMALL_STACK_FROM = 64  # from this many thread slots on, each thread gets a SLOT_STACK_BYTES stack
# A slot thread's stack: 1 MiB, not the default 8 MiB (ulimit -s): 1 GiB of address space for a thousand
# threads, not 8, and below the 2 MiB of a transparent huge page where THP is "always" (a stack backed by
# huge pages would read as a leak). With THP "madvise" the pool's memory is the same either way.
SLOT_STACK_BYTES = 1 << 20


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, picklable (spawn start method)."""

    index: int
    slots: int
    target: TargetSpec = field(default_factory=TargetSpec)
    pgid: int | None = None  # process group to join (None: lead a new one)
    master_pid: int = 0
    nice: int = 10
    blas_threads: int | None = 1  # None: leave numpy's BLAS thread count alone
    log_path: str | None = None  # the worker's stdout/stderr go here (None: /dev/null)
    log_cap_bytes: int | None = None  # past this size of the log, output is counted and dropped (None: no cap)
    bounded: bool = False  # an operations-bound run: start nothing before quota arrives
    schedule: object = None  # open model: schedule.Schedule of the whole run (None: closed model)
    stride: int = 1  # open model: this worker takes arrivals index, index + stride, …
    workers: int = 1  # the pool's size
    max_lateness_s: float = 1.0  # open model: an arrival no slot can start within this is dropped
    breaker: object = None  # breaker.BreakerConfig: a circuit breaker in front of the slots (None: none)
    inputs_skip: int = 0  # records of this worker's share already used by workers it replaces
    op_timeout_s: float | None = None  # async slots cancel an operation past it (thread slots cannot)


def worker_main(spec, conn, shm, heartbeat=None):
    """Process body. Exits 0 after a clean stop, 3 when the target cannot be built. ``heartbeat``: the
    master's (``engine.heartbeat``): the worker ends the pool when the master stops serving it."""
    import gc

    from .heartbeat import start_watchdog
    from .signals import child_signals

    # What the master had when it forked us stays shared: the cyclic GC would write to every
    # inherited object's header and unshare those pages (the pool's memory would climb with
    # the master's heap, not with the workload). Freezing only relinks the GC's list heads.
    gc.freeze()
    _proc.join_group(spec.pgid)
    _proc.set_pdeathsig(signal.SIGKILL)
    # Only the master acts on Ctrl-C, SIGHUP…; TERM from the monitor or the master ends the worker
    # at once, without Python cleanup that could hang on a stuck slot thread.
    child_signals()
    _proc.set_title(f"loadgen: worker {spec.index}")
    counters = memoryview(shm).cast("B").cast("q")
    pump = _redirect_output(spec.log_path, spec.log_cap_bytes, counters, spec.slots * SLOT_FIELDS + OUTPUT_DROPPED)
    if spec.master_pid and os.getppid() != spec.master_pid:
        os._exit(1)  # the master died while we were starting
    start_watchdog(heartbeat, spec.master_pid)
    if spec.nice:
        try:
            os.nice(spec.nice)
        except OSError:
            pass
    if spec.blas_threads is not None:
        _proc.limit_blas(spec.blas_threads)
    _proc.limit_arenas()
    inherited = {fd: ident for fd, ident in _proc.open_fds().items() if fd > 2}
    worker = Worker(spec, conn, shm)
    os.register_at_fork(after_in_child=lambda: worker.forked_copy(inherited))
    code = worker.run()
    try:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
        _end_output(pump)
    except (OSError, ValueError):
        pass
    finally:
        os._exit(code)


MADV_WIPEONFORK = 18  # <asm-generic/mman-common.h>, Linux ≥ 4.14 (Python 3.11's mmap does not name it)


def _ownership_mark():
    """An int64 view holding this process's pid, in a page that reads 0 in any forked child (see
    ``Worker.own``); where the kernel cannot wipe on fork, a plain list that always reads the pid
    (copies go undetected there, as before)."""
    import mmap

    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        page.madvise(getattr(mmap, "MADV_WIPEONFORK", MADV_WIPEONFORK))
    except (OSError, ValueError, AttributeError):
        return [os.getpid()]
    mark = memoryview(page).cast("q")
    mark[0] = os.getpid()
    return mark


PUMP_CHUNK = 1 << 16  # bytes the output pump moves at a time
PUMP_JOIN_S = 0.5  # how long a worker's exit waits for the pump to write out what is in the pipe


def _redirect_output(path, cap_bytes=None, counters=None, dropped_at=None):
    """Send the target's prints to a log file, never to the master's terminal or pipe:
    a reader that stops reading must not block a worker, and the streams stay clean.
    The log is opened as the run's streams are (``streams.open_stream``): no symlink
    followed, a regular file only, 0644 at most; else the prints go to /dev/null.

    With ``cap_bytes``, fds 1 and 2 are a pipe and a thread of the worker (the pump) moves what comes
    through into the log while the log (shared by every worker, appended to) is below the cap, and
    counts the rest in ``counters[dropped_at]`` (the master reports it): a target printing 330 MB/s
    made a 1.68 GB log in 5 s. Returns the pump thread (None without a cap)."""
    from ..streams import open_stream

    try:
        fd = open_stream(path or os.devnull)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):  # None when the master's were closed (``>&-``)
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    pump = None
    if cap_bytes is not None and path:
        r, w = os.pipe()
        pump = threading.Thread(target=_pump, args=(r, fd, cap_bytes, counters, dropped_at), name="output-pump",
                                daemon=True)
        pump.start()
        os.dup2(w, 1)
        os.dup2(w, 2)
        os.close(w)
        log = os.fdopen(os.dup(fd), "w", encoding="utf-8", errors="replace")
    else:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        log = None
    # The inherited sys.stdout may not write to fd 1 at all (pytest's capture, a
    # redirected master); give the target plain files on the new fds.
    sys.stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="replace", closefd=False)
    # A segfaulting target leaves its Python traceback in the log, not on an inherited fd (nor in the
    # pipe: the pump dies with the worker).
    import faulthandler

    faulthandler.enable(log or sys.stderr)
    global _direct_log
    _direct_log = log
    return pump


_direct_log = None  # the log itself, past the pump (for what is written as the worker dies)


def _pump(r, log_fd, cap_bytes, counters, dropped_at):
    """The output pump (see :func:`_redirect_output`): until the pipe's writers are all gone."""
    dropped = 0
    while True:
        try:
            data = os.read(r, PUMP_CHUNK)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        try:
            room = cap_bytes - os.fstat(log_fd).st_size
        except OSError:
            room = 0
        if room > 0:
            keep = memoryview(data)[:room]
            try:
                while keep:
                    keep = keep[os.write(log_fd, keep):]
            except OSError:
                pass
            data = data[room:]
        if data:
            if not dropped:
                _write_all(log_fd, f"loadgen: workers.log reached its cap ({cap_bytes / 2**20:g} MB, --max-output-mb): "
                                   f"worker pid {os.getpid()}'s output from here on is counted and dropped\n".encode())
            dropped += len(data)
            if counters is not None:
                counters[dropped_at] = dropped


def _write_all(fd, data):
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def _end_output(pump):
    """Before the worker exits: close its ends of the pipe and let the pump write out what is in it
    (bounded: a child of the target may hold the pipe open for good)."""
    if pump is None:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    pump.join(PUMP_JOIN_S)


class Worker:
    """A worker process's state: its main thread (:meth:`run`) and the slot threads share it.

    The load the master set (``active`` slots, ``quota``, the open model's
    schedule start) is guarded by ``wake``; the slots (threads, or coroutines:
    ``engine.aslots``) append latencies (ns) and errors to lists the main thread
    drains once a second (``loadgen.named`` keeps measurements and checks
    likewise), and bump the shared ``counters``.
    """

    def __init__(self, spec, conn, shm):
        self.spec = spec
        self.conn = conn
        self.counters = memoryview(shm).cast("B").cast("q")
        self.active = 0
        self.quota = 0 if spec.bounded else None  # None: unbounded
        self._claimed = 0  # operations started against the quota (under ``wake``)
        self.stopping = False
        self.wake = threading.Condition()
        self.latencies = []  # ns, appended by slots
        self.errors = []  # (key, traceback or None)
        self.tracebacks = {}  # error key → how many of its tracebacks were shipped
        self._tracebacks_asked = {}  # error key → tracebacks the slots formatted (wants_traceback)
        self._last = [0, 0, 0, 0, 0, 0]  # started, succeeded, failed, dropped, rejected, timed out at the previous batch
        self.breaker = None
        if spec.breaker is not None:
            from ..workload.breaker import CircuitBreaker

            self.breaker = CircuitBreaker(spec.breaker)
        self.responses = []  # open model: ns from intended start to end
        self.lateness = []  # open model: ns from intended start to actual start
        self.schedule_start_ns = None  # open model: CLOCK_MONOTONIC ns of arrival 0
        self.schedule_horizon_s = None
        self.op = None
        self.feed = None  # iterator of input records (None: operations get None)
        self.threads = []
        # When the main thread's wait ends (CLOCK_MONOTONIC ns): from then on it wants the GIL, and
        # the slots give way to it (see give_way).
        self.main_wakes_ns = 0
        self.forked = False  # True in a copy an operation forked (see forked_copy)
        # The worker's ownership mark: its pid in a private page the kernel zeroes in every child
        # (MADV_WIPEONFORK), so a copy made by any fork — ``libc.fork()``, a raw clone, which run no
        # ``os.register_at_fork`` handler — reads 0 where the worker reads its pid. The slot loops read
        # it after each operation (a memory read, no syscall): a copy stops there, uncounted.
        self.own = _ownership_mark()
        # Copies that came back into a slot loop write their pid here and exit; the main thread
        # reaps them (else every operation that forks would leave a zombie holding a pid).
        self._copies_r, self._copies_w = os.pipe()
        os.set_blocking(self._copies_r, False)
        os.set_blocking(self._copies_w, False)
        self._copies = set()
        self._arrival_lock = threading.Lock()
        self._next_arrival = None  # open model: this worker's next arrival k (arrival n = k·stride + index)
        self._loop = self._changed = None  # async slots: their event loop, and the event an order sets
        self.stalls = []  # async slots: how late (ms) the loop woke its watchdog, each stall

    # ------------------------------------------------------------------ main thread

    def run(self):
        """Build the operation (and input feed), send ``Ready``, start the slots, then obey the master's
        orders and ship one ``ResultBatch`` per wall-clock second.

        Blocks for the worker's life: until a ``Stop`` (after the running
        operations finish, unless ``drain`` is False) or until every slot has
        ended (inputs exhausted); then a last batch and ``WorkerExit``. Returns
        the exit code: 0 after that clean end, 1 when the master's pipe is
        gone, 3 when the target or its inputs cannot be built (``WorkerError``
        sent).
        """
        spec = self.spec
        try:
            self.op = build_operation(spec.target, spec.index)
            if spec.target.inputs is not None:
                from ..workload.inputs import feed

                stride = spec.stride if spec.schedule is not None else spec.workers
                self.feed = feed(spec.target.inputs, spec.target.inputs_mode, spec.index, stride, spec.inputs_skip)
        except BaseException as e:  # noqa: BLE001 - reported to the master, not lost
            self.conn.send(WorkerError(spec.index, type(e).__name__, str(e), traceback.format_exc()))
            return 3
        named.collect()
        # An operation that returns a function (a factory without --target-factory), a coroutine or a
        # generator stops the slots at its first call, not after millions of calls of the factory.
        results.on_misuse(lambda: self._stop(None))
        misuse_told = False
        asynchronous = bool(getattr(self.op, "is_async", False))
        self.conn.send(Ready(spec.index, os.getpid(), _proc.own_create_time(), asynchronous=asynchronous))
        if asynchronous:  # every slot a coroutine on one event loop (engine.aslots)
            from . import aslots

            t = threading.Thread(target=self._slot, args=(lambda w, _i: aslots.run(w), 0), name="async-slots",
                                 daemon=True)
            t.start()
            self.threads.append(t)
        else:
            if spec.slots > SMALL_STACK_FROM:
                threading.stack_size(SLOT_STACK_BYTES)
            for i in range(spec.slots):
                body = closed_slot if spec.schedule is None else open_slot
                t = threading.Thread(target=self._slot, args=(body, i), name=f"slot-{i}", daemon=True)
                t.start()
                self.threads.append(t)
        next_flush = int(time.time()) + 1
        while True:
            timeout = max(0.0, next_flush - time.time())
            if self.stopping:
                timeout = min(timeout, TIMING.drain_poll_s)  # draining: look at the slots often
            timeout = min(timeout, TIMING.worker_poll_s)
            self.main_wakes_ns = time.monotonic_ns() + int(timeout * 1e9)
            try:
                if self.conn.poll(timeout):
                    msg = self.conn.recv()
                    if isinstance(msg, Stop):
                        self._stop(msg)
                        if not msg.drain:
                            break
                    elif isinstance(msg, WorkOrder):
                        self._order(msg)
                    else:
                        sys.stderr.write(f"loadgen worker {spec.index}: unknown message {msg!r}\n")
            except (EOFError, OSError):
                return 1  # the master is gone; nothing to report to
            self._reap_copies()
            if results.misused is not None and not misuse_told:
                misuse_told = True
                kind, ref = results.misused
                self.conn.send(TargetMisused(spec.index, results.misuse_message(spec.target, kind, ref)))
            now = time.time()
            if now >= next_flush:
                self._flush(next_flush - 1)
                next_flush = int(now) + 1
            if not any(t.is_alive() for t in self.threads):
                break  # stopped, or every slot ran out of input records
        self._count_unclaimed_arrivals()
        self._flush(int(time.time()))
        self.conn.send(WorkerExit(spec.index, "stopped" if self.stopping else INPUTS_EXHAUSTED))
        return 0

    def _slot(self, body, i):
        try:
            body(self, i)
        except BaseException:  # noqa: BLE001 - the slot's own machinery raised: a crash, never a quiet end
            if not self.forked:
                self.slot_died(f"slot {i}" if body is closed_slot or body is open_slot else "the async slots' loop")
        finally:
            if self.forked:
                # A copy an operation forked came back into the slot loop, which left at once
                # (``stopping``), or raised out of it: the copy ends here, it runs nothing of loadgen's.
                try:
                    os.write(self._copies_w, os.getpid().to_bytes(4, "little"))
                except OSError:
                    pass  # pipe full: the master reaps it after the worker is gone
                os._exit(0)

    def give_way(self):
        """Called by the async loop thread between operations (thread slots do the same inline, in
        ``slots.closed_slot``): while the main thread is awake (its wait ended, its work of the second not
        done), sleep :data:`GIVE_WAY_S` so it takes the GIL.

        Without it the main thread starved in a storm of fast operations. The async loop releases the GIL
        at every turn of the loop (the poll of its selector) and retakes it before the waiting thread wakes,
        and CPython's waiter restarts its 5 ms wait for a forced switch at each such handover: one write to
        a file took the main thread 0.25–1.4 s, its flush of the second never ended, and the master killed
        the worker at the drain grace, an operation lost. Thread slots leave it a share of 1 in slots + 1:
        a second's flush of 660,000 failures took 1.9 s (0.1 s of CPU), and a lost ``--abort-on-fail``
        criterion stopped the run only seconds later."""
        if time.monotonic_ns() >= self.main_wakes_ns:
            time.sleep(GIVE_WAY_S)

    def wants_traceback(self, key):
        """Should a slot format the traceback of a failure of ``key``? Only while fewer than
        :data:`TRACEBACKS_PER_KEY` were asked for this key, and for at most :data:`MAX_ERROR_KEYS` keys:
        the rest would be dropped at the flush, and formatting each (a copy of its message: 10 MB for a
        target raising 10 MB messages) grew the worker by gigabytes a second in a failure storm — a
        "memory breach" of loadgen's own making. Unlocked: two threads may both get a yes, a few more
        than the bound, never a number that grows with the failures."""
        asked = self._tracebacks_asked
        n = asked.get(key, 0)
        if n >= TRACEBACKS_PER_KEY or (not n and len(asked) >= MAX_ERROR_KEYS):
            return False
        asked[key] = n + 1
        return True

    def copy_detected(self):
        """Called by a slot loop that finds itself in a copy of the worker (:attr:`own` reads 0): the copy
        counts itself in the worker's shared :data:`~.counters.COPIES` (the master reports it), announces its
        pid for reaping and exits at once, having counted nothing of the operation. A copy made by
        ``os.fork`` has its counters remapped private already (:meth:`forked_copy`): it is not reported."""
        try:
            self.counters[self.spec.slots * SLOT_FIELDS + COPIES] += 1
            os.write(self._copies_w, os.getpid().to_bytes(4, "little"))
        except (OSError, IndexError):
            pass
        os._exit(0)

    def slot_died(self, what):
        """A slot (thread, or the async slots' loop) died of an error of its own, not of an operation's
        (those are failures; see ``slots.raised_key``). Its ops would silently stop, the worker would say
        "inputs exhausted" and the run end early as if it were done; instead the worker ends at once
        with :data:`~loadgen.errors.SLOT_DIED_EXITCODE`, the traceback in its log: the master counts a
        crash (the operations in flight crashed, a ``worker_crash`` event) and replaces the worker."""
        try:
            out = _direct_log or sys.stderr  # the pump would not outlive the exit below
            out.write(f"loadgen worker {self.spec.index}: {what} died:\n{traceback.format_exc()}")
            out.flush()
        finally:
            os._exit(SLOT_DIED_EXITCODE)

    def _reap_copies(self):
        """Reap the copies that announced their exit (:meth:`_slot`). Non-blocking."""
        try:
            data = os.read(self._copies_r, 4096)
        except (BlockingIOError, OSError):
            data = b""
        for k in range(0, len(data) - 3, 4):
            self._copies.add(int.from_bytes(data[k:k + 4], "little"))
        for pid in list(self._copies):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue  # announced, not exited yet
            except ChildProcessError:
                pass
            self._copies.discard(pid)

    def forked_copy(self, inherited_fds):
        """Run in the child of every ``os.fork()`` an operation makes (``os.register_at_fork``).

        The copy must not pass for the worker: it would hold the worker's pipe and sentinel open (the
        master could not see the worker die) and bump the worker's shared counters (more operations
        ending than started). So the fds the worker inherited are released (pointed at /dev/null), the
        counters' pages are remapped private to the copy (what it writes stays its own), and the slot loop is told to
        stop: a copy that returns into it exits. The target's own code in the copy runs on."""
        self.forked = True
        self.stopping = True
        _proc.release_fds(inherited_fds)
        _proc.privatize(self.counters)

    def _count_unclaimed_arrivals(self):
        """Open model, at stop: arrivals that fell due but no slot ever took are dropped, not lost."""
        spec = self.spec
        if spec.schedule is None or self.schedule_start_ns is None or self._next_arrival is None:
            return
        elapsed = (time.monotonic_ns() - self.schedule_start_ns) / 1e9
        if self.schedule_horizon_s is not None:
            elapsed = min(elapsed, self.schedule_horizon_s)
        due = math.ceil((spec.schedule.arrivals_before(elapsed) - spec.index) / spec.stride)
        claimed = self._next_arrival
        if due > claimed:
            self.counters[DROPPED] += due - claimed

    def _order(self, order):
        with self.wake:
            if order.add_quota is not None:
                self.quota = (self.quota or 0) + order.add_quota
            if order.active_slots is not None:
                self.active = min(order.active_slots, self.spec.slots)
            if order.schedule_start is not None:
                self.schedule_start_ns = int(order.schedule_start * 1e9)
                self.schedule_horizon_s = order.schedule_horizon_s
                self.active = self.spec.slots
            self.wake.notify_all()
        self._kick_loop()

    def _stop(self, msg):
        with self.wake:
            self.stopping = True
            self.wake.notify_all()
        self._kick_loop()

    # ------------------------------------------------------------------ async slots (engine.aslots)

    def attach_loop(self, loop):
        """The loop thread's event loop: the master's orders wake its coroutines (:meth:`changed`)."""
        import asyncio

        self._changed = asyncio.Event()
        self._loop = loop

    async def changed(self):
        """Wait (on the loop) for the master's next order or a stop."""
        await self._changed.wait()

    def _kick_loop(self):
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._kick)
            except RuntimeError:  # the loop has ended
                pass

    def _kick(self):
        import asyncio

        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def try_start(self, i):
        """:meth:`may_start` without blocking, for a coroutine: True (start one), False (stopping),
        None (not now: wait for an order)."""
        with self.wake:
            return self._start_now(i)

    def _start_now(self, i):
        """Under ``wake``: may slot ``i`` start one more operation now (see :meth:`try_start`)?"""
        if self.stopping:
            return False
        if i < self.active:
            if self.quota is None:
                return True
            if self._claimed < self.quota:  # else the quota is spent: wait for more, or for a stop
                self._claimed += 1
                return True
        return None

    def begin_schedule(self):
        """Open model: the schedule has started; set this worker's first arrival (the first slot to
        get here does; see :meth:`first_arrival`)."""
        with self.wake:
            if self._next_arrival is None:
                self._next_arrival = self.first_arrival()

    def _flush(self, second):
        import numpy as np

        from ..analysis.stats import CappedCounter, Sparse

        def drain_hist(values):
            n = len(values)
            chunk = values[:n]
            del values[:n]
            return Sparse.of(np.asarray(chunk, dtype=np.int64) // 1000) if chunk else None

        latency = drain_hist(self.latencies)
        response = drain_hist(self.responses) if self.spec.schedule is not None else None
        lateness = drain_hist(self.lateness) if self.spec.schedule is not None else None
        timings, checks = named.drain()
        measures = {name: Sparse.of(values) for name, values in timings.items()}
        ops = {}
        if self.spec.target.mix:
            from ..workload import mix

            ops = {name: (Sparse.of(values), ok, bad, errors)
                   for name, (values, ok, bad, errors) in mix.drain([op.name for op in self.spec.target.mix]).items()}
        n = len(self.errors)
        errs = self.errors[:n]
        del self.errors[:n]
        counts = CappedCounter(MAX_ERROR_KEYS)
        # A failure storm is a million entries a second: counted in C (Counter), and only the few that
        # carry a traceback looked at in Python — a loop over all of them held the final flush (and so
        # a stop) for seconds.
        counts.update(collections.Counter([key for key, _ in errs]))
        new_tracebacks = {}  # key → tracebacks first seen in this batch
        for key, tb in [e for e in errs if e[1] is not None]:
            kept = self.tracebacks.get(key, 0)
            if tb and kept < TRACEBACKS_PER_KEY and (kept or len(self.tracebacks) < MAX_ERROR_KEYS):
                self.tracebacks[key] = kept + 1
                new_tracebacks.setdefault(key, []).append(tb)
        _proc.trim_heap()
        totals = slot_totals(self.counters, self.spec.slots)
        delta = [a - b for a, b in zip(totals, self._last)]
        self._last = totals
        self.conn.send(ResultBatch(
            index=self.spec.index, second=second, started=delta[0], succeeded=delta[1], failed=delta[2],
            dropped=delta[3], rejected=delta[4], breaker=self._drain_breaker(),
            in_flight=totals[0] - totals[1] - totals[2], latency=latency, response=response, lateness=lateness,
            measures=measures, checks=checks, ops=ops, errors=counts.to_dict(), tracebacks=new_tracebacks,
            stalls=self._drain(self.stalls),
        ))

    # ------------------------------------------------------------------ slots

    @staticmethod
    def _drain(values):
        n = len(values)
        out = tuple(values[:n])
        del values[:n]
        return out

    def _drain_breaker(self):
        if self.breaker is None:
            return ()
        t = self.breaker.transitions
        n = len(t)
        out = tuple(t[:n])
        del t[:n]
        return out

    def may_start(self, i):
        """Block until slot ``i`` may start one more operation; False when stopping."""
        with self.wake:
            while (go := self._start_now(i)) is None:
                self.wake.wait(TIMING.worker_poll_s)
            return go

    def await_schedule(self):
        """Open model: block until the schedule's start arrives; False when stopping first. Then
        :meth:`begin_schedule`."""
        with self.wake:
            while self.schedule_start_ns is None and not self.stopping:
                self.wake.wait(TIMING.worker_poll_s)
            if self.stopping:
                return False
            self.begin_schedule()
        return True

    def claim_arrival(self):
        """Open model: the next arrival k of this worker, claimed by the calling slot alone."""
        with self._arrival_lock:
            k = self._next_arrival
            self._next_arrival = k + 1
        return k

    def first_arrival(self):
        """This worker's first arrival index k (arrival n = k·stride + index) not yet in the past:
        a replacement worker picks the schedule up where it stands."""
        spec = self.spec
        elapsed = (time.monotonic_ns() - self.schedule_start_ns) / 1e9
        if elapsed <= 0:
            return 0
        n = spec.schedule.arrivals_before(elapsed)
        return max(0, math.ceil((n - spec.index) / spec.stride))

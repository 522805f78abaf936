"""Async slots: a worker's operations as coroutines on one event loop, for an ``async def`` target.

A thread slot costs a thread (a pid, a stack); a coroutine costs a few KB, so a worker can hold
thousands of operations in flight — what an LLM-bound service sees. The worker runs :func:`run` on
one thread (``uvloop`` when installed, else asyncio's loop):

* closed model: ``slots`` coroutines, each running operations back to back exactly as a thread slot
  does (``slots.closed_slot``): active slots and quota from the master, the breaker, inputs;
* open model: one dispatcher takes each arrival of the schedule at its intended time and starts it
  as a task on a free slot; an arrival that finds no free slot within ``max_lateness_s`` is dropped.

Each operation is counted in its slot's shared counters (``counters``) and its latency and error
go to the worker's lists, which the main thread drains once a second, as for thread slots. With
``op_timeout_s``, an operation still running at its timeout is cancelled and counted timed out; one
that ignores the cancellation keeps its slot busy in the shared counters, so the master replaces
the worker after ``pool.CANCEL_GRACE_S`` more, as it does for a hung thread. A ``CancelledError`` the
target raises itself (not a cancellation of the slot's task) is that operation's failure, as any
exception; a slot coroutine that dies of an error of loadgen's own ends the worker as a crash
(``Worker.slot_died``), never the loop quietly. A watchdog coroutine
measures how late the loop wakes it: a *loop stall* (an operation that blocks the loop, with
``time.sleep`` or CPU work) of :data:`STALL_MS` or more is counted and reported.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

from ..config import TIMING
from ..workload.results import outcome
from .counters import DROPPED, FAILED, REJECTED, SLOT_FIELDS, START_NS, STARTED, SUCCEEDED, TIMED_OUT
from .slots import OWNED, capped_traceback, raised_key, traceback_of

WATCH_TICK_S = 0.01  # the stall watchdog's period
STALL_MS = 100.0  # the loop woke the watchdog this late: a stall
GC_ALLOCATIONS_PER_SLOT = 10  # an async worker's young-generation GC threshold, per slot (see _tune_gc)
YIELD_EVERY = 64  # a closed slot hands the loop back at least once every this many operations,
YIELD_NS = 5_000_000  # and after an operation when this long passed since it last did


def run(w):
    """The loop thread's body: every slot of worker ``w`` as a coroutine, until they end."""
    _tune_gc(w.spec.slots)
    if loop_kind() == "uvloop":
        import uvloop

        uvloop.run(_main(w))
    else:
        asyncio.run(_main(w))


def _tune_gc(slots):
    """Thousands of operations in flight are hundreds of thousands of live objects, and the cyclic
    GC's collections walk them: at 50,000 in flight a full one blocks the loop ≈ 150 ms — a stall of
    loadgen's own. So an async worker collects its young objects in proportion to its slots
    (:data:`GC_ALLOCATIONS_PER_SLOT` each, 700 at least) and rarely looks at the old ones."""
    import gc

    gc.set_threshold(max(700, GC_ALLOCATIONS_PER_SLOT * slots), 20, 100)


def loop_kind():
    """``uvloop`` or ``asyncio``: the event loop :func:`run` uses here — uvloop when installed, unless
    ``LOADGEN_EVENT_LOOP=asyncio`` says otherwise."""
    if os.environ.get("LOADGEN_EVENT_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return "uvloop" if hasattr(uvloop, "run") else "asyncio"


async def _main(w):
    w.attach_loop(asyncio.get_running_loop())
    watchdog = asyncio.ensure_future(_watch(w))
    try:
        if w.spec.schedule is None:
            await asyncio.gather(*(_closed(w, i) for i in range(w.spec.slots)))
        else:
            await _open(w)
    except BaseException:  # noqa: BLE001 - a slot died of the machinery's error, not an operation's
        # At once, from here: asyncio.run would otherwise cancel the other slots and wait for them.
        w.slot_died("the async slots' loop")
    finally:
        watchdog.cancel()


async def _watch(w):
    """Count the loop's stalls: how late the loop wakes this coroutine past its tick."""
    tick_ns = int(WATCH_TICK_S * 1e9)
    while True:
        t = time.monotonic_ns()
        await asyncio.sleep(WATCH_TICK_S)
        late_ms = (time.monotonic_ns() - t - tick_ns) / 1e6
        if late_ms >= STALL_MS:
            w.stalls.append(late_ms)
        w.give_way()


async def _call(op, record, timeout_s, wants=None):
    """``(key, traceback, cancelled)`` of one operation: key None on success; ``cancelled`` when the
    operation was cancelled at ``timeout_s`` (a TimeoutError of the target's own is its failure)."""
    deadline = None
    try:
        if timeout_s is None:
            result = await op(record)
        elif _timeout is not None:  # Python ≥ 3.11: the deadline knows whether it fired
            deadline = _timeout(timeout_s)
            async with deadline:
                result = await op(record)
        else:
            t0 = time.monotonic()
            try:
                result = await asyncio.wait_for(op(record), timeout_s)
            except asyncio.TimeoutError:
                if time.monotonic() - t0 >= timeout_s - 0.005:  # the loop's timers may fire a few ms early
                    return _cancelled(timeout_s)
                raise
    except asyncio.TimeoutError:
        if deadline is not None and deadline.expired():
            return _cancelled(timeout_s)
        return "TimeoutError", capped_traceback(), False
    except asyncio.CancelledError:
        if _cancel_pending():
            raise  # this slot's task is being cancelled: not the operation's doing
        return "CancelledError", capped_traceback(), False  # raised by the target's own code
    except BaseException as e:  # noqa: BLE001 - an exception is the operation's failure, as in a thread slot
        key = raised_key(e)
        return key, traceback_of(e) if wants is None or wants(key) else None, False
    return outcome(result), None, False


def _cancel_pending():
    """True when the running task has a cancellation request pending (``Task.cancelling``, Python ≥ 3.11):
    a ``CancelledError`` is then the task's own cancellation, else the target raised it (an inner task
    of its own that was cancelled, a ``raise CancelledError``). Our timeout's cancellation never gets
    here: the deadline turns it into a TimeoutError. Before 3.11 nothing of loadgen cancels a slot's task
    while its loop runs (the loop ends only after every slot did), so it is the target's."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return cancelling is not None and cancelling() > 0


_timeout = getattr(asyncio, "timeout", None)


def _cancelled(timeout_s):
    return f"OpTimeout: cancelled after {timeout_s:g} s", None, True


def _ended(w, c, base, key, tb, cancelled):
    if not getattr(w, "own", OWNED)[0]:  # a copy of the worker forked by the operation (see Worker.own): ends, uncounted
        w.copy_detected()
    c[base + START_NS] = 0
    if key is None:
        c[base + SUCCEEDED] += 1
    else:
        w.errors.append((key, tb))
        c[base + FAILED] += 1
        if cancelled:
            c[base + TIMED_OUT] += 1
    if w.breaker is not None:
        w.breaker.record(key is None)


async def _closed(w, i):
    """Closed model: slot ``i`` runs operations back to back while it is active (see the module)."""
    c = w.counters
    base = i * SLOT_FIELDS
    op, feed, breaker, timeout_s = w.op, w.feed, w.breaker, w.spec.op_timeout_s
    latencies = w.latencies
    clock, mono = time.perf_counter_ns, time.monotonic_ns
    record = None
    n = 0
    yielded = clock()
    while True:
        if w.stopping:
            return
        if not (i < w.active and w.quota is None):
            go = w.try_start(i)
            if go is None:
                await w.changed()
                continue
            if not go:
                return
        if breaker is not None and not breaker.allow():
            c[base + REJECTED] += 1
            await asyncio.sleep(min(max(breaker.remaining_open_s(), 0.001), TIMING.reject_pause_s))
            continue
        if feed is not None:
            try:
                record = next(feed)
            except StopIteration:
                return
        c[base + STARTED] += 1
        c[base + START_NS] = mono()
        t0 = clock()
        key, tb, cancelled = await _call(op, record, timeout_s, getattr(w, "wants_traceback", None))
        t1 = clock()
        latencies.append(t1 - t0)
        _ended(w, c, base, key, tb, cancelled)
        n += 1
        if not n % YIELD_EVERY or t1 - yielded >= YIELD_NS:
            # An operation that never suspends (or blocks) would hold the loop: let the others run,
            # and the worker's main thread (see Worker.give_way).
            w.give_way()
            await asyncio.sleep(0)
            yielded = clock()


async def _open(w):
    """Open model: start each arrival as a task on a free slot at its intended time (see the module)."""
    spec = w.spec
    while w.schedule_start_ns is None and not w.stopping:
        await w.changed()
    if w.stopping:
        return
    w.begin_schedule()
    c = w.counters
    op, feed, breaker, timeout_s = w.op, w.feed, w.breaker, spec.op_timeout_s
    time_of, stride, index = spec.schedule.time_of, spec.stride, spec.index
    start_ns = w.schedule_start_ns
    max_late_ns = int(spec.max_lateness_s * 1e9)
    horizon_s = w.schedule_horizon_s if w.schedule_horizon_s is not None else math.inf
    free = list(range(spec.slots - 1, -1, -1))
    freed = asyncio.Event()
    running = set()
    mono = time.monotonic_ns
    record = None

    async def one(i, record, due):
        try:
            base = i * SLOT_FIELDS
            t0 = mono()
            key, tb, cancelled = await _call(op, record, timeout_s, getattr(w, "wants_traceback", None))
            t1 = mono()
            w.latencies.append(t1 - t0)
            w.responses.append(t1 - min(t0, due))
            w.lateness.append(max(0, t0 - due))
            _ended(w, c, base, key, tb, cancelled)
            free.append(i)
            freed.set()
        except BaseException:  # noqa: BLE001 - a task's exception would be lost, and its slot with it
            if not _cancel_pending():
                w.slot_died(f"async slot {i}")
            raise

    while not w.stopping:
        due_s = time_of(w.claim_arrival() * stride + index)
        if due_s >= horizon_s or due_s == math.inf:  # the schedule ends, or the rate fell to zero for good
            while not w.stopping:
                await w.changed()
            break
        due = start_ns + int(due_s * 1e9)
        wait = due - mono()
        if wait > 0:
            await asyncio.sleep(wait / 1e9)
            if w.stopping:
                break
        while not free and mono() - due <= max_late_ns and not w.stopping:
            freed.clear()
            try:
                await asyncio.wait_for(freed.wait(), max(0.0, (due + max_late_ns - mono()) / 1e9))
            except asyncio.TimeoutError:
                pass
        if w.stopping:
            break
        i = free[-1] if free else 0
        if not free or mono() - due > max_late_ns:
            c[i * SLOT_FIELDS + DROPPED] += 1
            continue
        base = i * SLOT_FIELDS
        if breaker is not None and not breaker.allow():
            c[base + REJECTED] += 1
            continue
        if w.quota is not None:
            go = w.try_start(i)
            while go is None:  # quota spent: wait for more, or for the stop
                await w.changed()
                go = w.try_start(i)
            if not go:
                break
        if feed is not None:
            try:
                record = next(feed)
            except StopIteration:
                break
        free.pop()
        c[base + STARTED] += 1
        c[base + START_NS] = mono()
        task = asyncio.ensure_future(one(i, record, due))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:  # a graceful stop: the operations under way finish (a hard stop ends the process)
        await asyncio.gather(*running, return_exceptions=True)

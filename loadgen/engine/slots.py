"""The slots: the hot loops that run a worker's operations, one thread each.

:func:`closed_slot` runs operations back to back (the closed model);
:func:`open_slot` takes the next arrival of the schedule, waits until it is
due and runs it (the open model). Both time each operation themselves,
bump the worker's shared counters before and after it (so the master can
account for it even if the worker dies), append the latency to a list the
worker's main thread drains once a second, and feed the circuit breaker.
Nothing here takes a lock on the fast path of a duration-bound run.
"""

from __future__ import annotations

import math
import os
import time
import traceback

from ..config import TIMING
from ..workload.results import error_key, outcome
from .counters import DROPPED, FAILED, REJECTED, SLOT_FIELDS, START_NS, STARTED, SUCCEEDED

SPIN_NS = int(TIMING.spin_s * 1e9)
GIVE_WAY_S = 0.0005  # how long a slot sleeps so the worker's woken main thread takes the GIL (Worker.give_way)
# Thread slots give way only once the main thread has been awake this long: they leave it a share of the GIL
# (1 in slots + 1), enough for a second's usual work, not for a storm's (a flush of 660,000 failures took 1.9 s).
MAIN_BEHIND_NS = 50_000_000
GIVE_WAY_EVERY = 64  # operations between two looks (a look at every operation cost a no-op run ≈ 10 %)
OWNED = (1,)  # the ownership mark of a slot's worker where none is kept (the unit tests' fake workers)


def closed_slot(w, i):
    """Closed model: slot ``i`` of worker ``w`` runs operations back to back while it is active (and,
    in an operations-bound run, while the worker has quota); returns at a stop or when the inputs
    run out. Each operation is timed, counted in the shared counters and fed to the breaker.

    The loop is written out in full, with its bookkeeping inline, on purpose: it is the hottest
    code of loadgen (the no-op benchmark runs millions of operations a second through it), so it
    makes no call per operation but the target's."""
    c = w.counters
    base = i * SLOT_FIELDS
    op = w.op
    latencies, errors = w.latencies, w.errors
    breaker = w.breaker
    feed = w.feed
    record = None
    clock, mono = time.perf_counter_ns, time.monotonic_ns
    classify = outcome
    own = getattr(w, "own", OWNED)  # 0 in a copy forked by any means (MADV_WIPEONFORK): see Worker.own
    wants = getattr(w, "wants_traceback", _always)  # a traceback is formatted only when it will be kept
    countdown = GIVE_WAY_EVERY
    while True:
        # Fast path: an active slot of a duration-bound run never takes the lock.
        # ``active`` is read before ``quota``: _order sets quota first, so a slot
        # that sees its new ``active`` also sees the quota that came with it.
        if w.stopping:
            return
        if not (i < w.active and w.quota is None) and not w.may_start(i):
            return
        if breaker is not None and not breaker.allow():
            # Rejected fast, counted; wait out (part of) the open period instead of spinning.
            c[base + REJECTED] += 1
            time.sleep(min(max(breaker.remaining_open_s(), 0.001), TIMING.reject_pause_s))
            continue
        if feed is not None:
            try:
                record = next(feed)
            except StopIteration:
                return
        countdown -= 1
        if not countdown:  # every GIVE_WAY_EVERY operations: is the main thread behind? (Worker.give_way)
            countdown = GIVE_WAY_EVERY
            if mono() >= w.main_wakes_ns + MAIN_BEHIND_NS:
                time.sleep(GIVE_WAY_S)
        c[base + STARTED] += 1
        c[base + START_NS] = mono()
        t0 = clock()
        try:
            result = op(record)
        except BaseException as e:  # noqa: BLE001 - an exception is the operation's failure (see raised_key)
            t1 = clock()
            if not own[0]:
                return w.copy_detected()
            latencies.append(t1 - t0)
            key = raised_key(e)
            errors.append((key, traceback_of(e) if wants(key) else None))
            c[base + START_NS] = 0
            c[base + FAILED] += 1
            if breaker is not None:
                breaker.record(False)
            continue
        t1 = clock()
        if not own[0]:  # a copy of the worker (libc fork, clone): it must not count, nor run on
            return w.copy_detected()
        latencies.append(t1 - t0)
        key = classify(result)  # never raises: an odd result is the user's, a success
        c[base + START_NS] = 0
        if key is None:
            c[base + SUCCEEDED] += 1
        else:
            errors.append((key, None))
            c[base + FAILED] += 1
        if breaker is not None:
            breaker.record(key is None)


def open_slot(w, i):
    """Open model: take the next arrival of the schedule, wait until it is due, run it.

    Latency is kept twice: service time (start → end) and response time
    (intended start → end), so a stall shows in the percentiles. An arrival
    that no slot could start within ``max_lateness_s`` is dropped: counted,
    never silently skipped.
    """
    spec = w.spec
    if not w.await_schedule():
        return
    claim = w.claim_arrival
    c = w.counters
    base = i * SLOT_FIELDS
    op = w.op
    latencies, responses, lateness = w.latencies, w.responses, w.lateness
    errors = w.errors
    mono = time.monotonic_ns
    time_of = spec.schedule.time_of
    start_ns, stride, index = w.schedule_start_ns, spec.stride, spec.index
    max_late_ns = int(spec.max_lateness_s * 1e9)
    horizon_s = w.schedule_horizon_s if w.schedule_horizon_s is not None else math.inf
    feed, breaker = w.feed, w.breaker
    record = None
    own = getattr(w, "own", OWNED)
    wants = getattr(w, "wants_traceback", _always)
    while not w.stopping:
        due_s = time_of(claim() * stride + index)
        if due_s >= horizon_s:  # the schedule ends before this arrival: idle until the stop
            due_s = math.inf
        if due_s == math.inf:  # the rate fell to zero for good
            with w.wake:
                w.wake.wait(TIMING.worker_poll_s)
            continue
        due = start_ns + int(due_s * 1e9)
        wait = _sleep_until(w, due)
        if w.stopping:
            return
        if -wait > max_late_ns:
            c[base + DROPPED] += 1
            continue
        if breaker is not None and not breaker.allow():
            c[base + REJECTED] += 1  # refused at its due time, as the closed model refuses a call
            continue
        if w.quota is not None and not w.may_start(i):
            return
        if feed is not None:
            try:
                record = next(feed)
            except StopIteration:
                return
        c[base + STARTED] += 1
        t0 = mono()
        c[base + START_NS] = t0
        result, key, tb = _call(op, record, wants)
        t1 = mono()
        if not own[0]:
            return w.copy_detected()
        latencies.append(t1 - t0)
        responses.append(t1 - min(t0, due))
        lateness.append(max(0, t0 - due))
        c[base + START_NS] = 0
        if key is None:
            c[base + SUCCEEDED] += 1
        else:
            errors.append((key, tb))
            c[base + FAILED] += 1
        if breaker is not None:
            breaker.record(key is None)


def _sleep_until(w, due_ns):
    """Sleep short of ``due_ns`` (CLOCK_MONOTONIC; the OS oversleeps) in bounded steps, so that a stop
    is seen; returns the nanoseconds still to go (negative: that late)."""
    wait = due_ns - time.monotonic_ns()
    while wait > SPIN_NS and not w.stopping:
        time.sleep(min(wait - SPIN_NS, TIMING.worker_poll_s * 1e9) / 1e9)
        wait = due_ns - time.monotonic_ns()
    return wait


def _call(op, record, wants=None):
    """``(result, error key or None, traceback or None)`` of one operation: see :func:`raised_key`; the
    traceback only if ``wants(key)`` (default: always)."""
    try:
        result = op(record)
    except BaseException as e:  # noqa: BLE001 - an exception is the operation's failure
        key = raised_key(e)
        return None, key, traceback_of(e) if wants is None or wants(key) else None
    return result, outcome(result), None


def _always(key):
    return True


def raised_key(e):
    """The error key of an operation that raised ``e``: any exception is the operation's failure —
    a ``CancelledError`` or ``GeneratorExit`` of the target's own too (a slot never dies of what an
    operation does) — but SystemExit and KeyboardInterrupt, which end the worker as the target asked
    (the master counts the operation as crashed)."""
    if isinstance(e, (SystemExit, KeyboardInterrupt)):
        os._exit(e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1)
    return error_key(e)


def traceback_of(e):
    """The formatted traceback of the exception being handled, or None for a failure that names itself
    (an ``error_key`` such as ``HTTP 404 GET /drafts/{id}``: its traceback says nothing more, and
    formatting one costs ~20 µs a failure — most of the budget of a request in a failure storm). Cut to
    :data:`MAX_TRACEBACK_CHARS` (:func:`capped`): a target's 10 MB exception message is not loadgen's to
    keep."""
    return None if getattr(e, "error_key", None) is not None else capped_traceback()


MAX_TRACEBACK_PART_CHARS = 8 * 1024  # of each part of a kept traceback (a frame; the exception and its message)
MAX_TRACEBACK_PARTS = 64  # parts kept of a long traceback: the first and the last half (the exception is last)


def capped_traceback():
    """The traceback of the exception being handled, formatted with each part (a frame, the exception's
    line and message) cut to :data:`MAX_TRACEBACK_PART_CHARS` and at most :data:`MAX_TRACEBACK_PARTS`
    parts, each cut said: a target's 10 MB message is not loadgen's to keep, and the exception's own
    line stays last."""
    parts = [_cut(part, MAX_TRACEBACK_PART_CHARS) for part in traceback.format_exc().splitlines(keepends=True)]
    if len(parts) > MAX_TRACEBACK_PARTS:
        half = MAX_TRACEBACK_PARTS // 2
        parts = parts[:half] + [f"  … [{len(parts) - 2 * half:,} lines cut by loadgen]\n"] + parts[-half:]
    return "".join(parts)


def capped(text, limit=MAX_TRACEBACK_PART_CHARS * MAX_TRACEBACK_PARTS):
    """``text`` (a formatted traceback) cut to its first ``limit`` characters, saying how many were cut."""
    return text if text is None or len(text) <= limit else _cut(text, limit)


def _cut(text, limit):
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters cut by loadgen]\n"

"""The shared counters of a worker: the contract between a worker's slots and the master.

One ``RawArray`` of int64 per worker, :data:`SLOT_FIELDS` per slot. A slot
bumps ``STARTED`` before an operation and ``SUCCEEDED``/``FAILED`` after it,
so ``started - succeeded - failed`` is exactly what was running when a
worker died; ``START_NS`` (CLOCK_MONOTONIC, shared by all processes) lets
the master see an operation that hangs past its timeout; ``DROPPED`` and
``REJECTED`` count open-model arrivals no slot could start in time and
calls the circuit breaker refused. ``TIMED_OUT`` counts the failures that were
an async slot cancelling an operation at its timeout (a subset of ``FAILED``, so
``started - succeeded - failed`` stays what is running). The master reads them
after the worker is gone: the accounting survives any death.
"""

SLOT_FIELDS = 7
STARTED, SUCCEEDED, FAILED, START_NS, DROPPED, REJECTED, TIMED_OUT = range(SLOT_FIELDS)
# After the slots, the worker's own fields: COPIES counts the copies of the worker an operation forked
# without Python's ``os.fork`` (``libc.fork()``, a raw clone) that came back into a slot loop: each is
# stopped there, before it counts anything (``Worker.own``), and counts itself here.
# OUTPUT_DROPPED: bytes of the worker's stdout/stderr dropped past the cap of workers.log (the worker's
# output pump writes it; ``worker._redirect_output``).
WORKER_FIELDS = 2
COPIES, OUTPUT_DROPPED = range(WORKER_FIELDS)


def counters_size(slots):
    """int64 fields of a worker's shared counters: :data:`SLOT_FIELDS` per slot, then :data:`WORKER_FIELDS`."""
    return slots * SLOT_FIELDS + WORKER_FIELDS


def copies(counters, slots):
    """The forked copies a worker's slot loops stopped (:data:`COPIES`; 0 for counters without the field)."""
    at = slots * SLOT_FIELDS + COPIES
    return counters[at] if len(counters) > at else 0


VECTOR_SLOTS = 64  # from this many slots on, sums and scans are numpy's (async workers hold thousands)


def slot_totals(counters, slots):
    """[started, succeeded, failed, dropped, rejected, timed out] summed over a worker's slots (shared
    memory); failed includes the timed out."""
    if slots >= VECTOR_SLOTS:
        t = _table(counters, slots).sum(axis=0)
        return [int(t[STARTED]), int(t[SUCCEEDED]), int(t[FAILED]), int(t[DROPPED]), int(t[REJECTED]),
                int(t[TIMED_OUT])]
    s = [0, 0, 0, 0, 0, 0]
    for base in range(0, slots * SLOT_FIELDS, SLOT_FIELDS):
        s[0] += counters[base + STARTED]
        s[1] += counters[base + SUCCEEDED]
        s[2] += counters[base + FAILED]
        s[3] += counters[base + DROPPED]
        s[4] += counters[base + REJECTED]
        s[5] += counters[base + TIMED_OUT]
    return s


def running_since(counters, slots):
    """slot → monotonic start time (ns) of the operation each busy slot is running.

    Each slot's ``START_NS`` is read exactly once: a slot writes it at every start and end of an
    operation (0: idle), so a second read may see the operation's end — a test on one read and a
    value from another made an idle slot's "start" 0, its age the clock's uptime, and the master
    killed a worker whose operation took microseconds. A value read once is either 0 or the start
    of an operation still running at that read."""
    if slots >= VECTOR_SLOTS:
        import numpy as np

        starts = _table(counters, slots)[:, START_NS].copy()  # one snapshot: a view would be read again below
        busy = np.flatnonzero(starts)
        return dict(zip(busy.tolist(), starts[busy].tolist()))
    out = {}
    for i, base in enumerate(range(START_NS, slots * SLOT_FIELDS, SLOT_FIELDS)):
        t = counters[base]
        if t:
            out[i] = t
    return out


def late_slots(counters, slots, now_ns, limit_ns, paused_ns=None):
    """The slots whose operation has been running longer than ``limit_ns`` at ``now_ns``.

    ``now_ns`` must be taken *before* this call: each start is then read (once, see
    :func:`running_since`) after it, so a start that was read belongs to an operation still running
    at a moment later than ``now_ns``, and ``now_ns - start`` is never more than that operation's
    true age — only an operation really older than the limit is late. ``paused_ns(start, now_ns)``:
    how much of that age the whole run spent paused (Ctrl-Z), left out of it."""
    late = []
    for i, t in running_since(counters, slots).items():
        age = now_ns - t
        if age > limit_ns and (paused_ns is None or age - paused_ns(t, now_ns) > limit_ns):
            late.append(i)
    return late


def _table(counters, slots):
    import numpy as np

    return np.frombuffer(counters, dtype=np.int64, count=slots * SLOT_FIELDS).reshape(slots, SLOT_FIELDS)


def output_dropped(counters, slots):
    """Bytes of a worker's output dropped past the cap of ``workers.log`` (:data:`OUTPUT_DROPPED`)."""
    at = slots * SLOT_FIELDS + OUTPUT_DROPPED
    return counters[at] if len(counters) > at else 0

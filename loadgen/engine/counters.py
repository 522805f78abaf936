"""The shared counters of a worker: the contract between a worker's slots and the master.

One ``RawArray`` of int64 per worker, :data:`SLOT_FIELDS` per slot. A slot
bumps ``STARTED`` before an operation and ``SUCCEEDED``/``FAILED`` after it,
so ``started - succeeded - failed`` is exactly what was running when a
worker died; ``START_NS`` (CLOCK_MONOTONIC, shared by all processes) lets
the master see an operation that hangs past its timeout; ``DROPPED`` and
``REJECTED`` count open-model arrivals no slot could start in time and
calls the circuit breaker refused. The master reads them after the worker
is gone: the accounting survives any death.
"""

SLOT_FIELDS = 6
STARTED, SUCCEEDED, FAILED, START_NS, DROPPED, REJECTED = range(SLOT_FIELDS)


def slot_totals(counters, slots):
    """[started, succeeded, failed, dropped, rejected] summed over a worker's slots (shared memory)."""
    s = [0, 0, 0, 0, 0]
    for base in range(0, slots * SLOT_FIELDS, SLOT_FIELDS):
        s[0] += counters[base + STARTED]
        s[1] += counters[base + SUCCEEDED]
        s[2] += counters[base + FAILED]
        s[3] += counters[base + DROPPED]
        s[4] += counters[base + REJECTED]
    return s

"""The pool's shape and the machine's room for thread and async slots; the shared counters' sums."""

import array

import pytest

from loadgen.engine import room
from loadgen.engine.counters import (FAILED, SLOT_FIELDS, START_NS, STARTED, SUCCEEDED, TIMED_OUT, running_since,
                                     slot_totals)
from loadgen.engine.load import pool_shape
from loadgen.errors import UsageError


def test_thread_slots_are_bounded_per_worker_and_derived_shapes_add_workers():
    assert pool_shape(3000, (), None, None, None, 10_000, threads=True) == (3, 1000)
    assert pool_shape(3000, (), None, None, None, 10_000, threads=False) == (2, 1500)
    assert pool_shape(50, (), None, None, None, 50) == (2, 25)  # the usual shapes are unchanged
    with pytest.raises(UsageError, match="at most 1000 a worker"):
        room.check(2, 1500, threads=True, room={})
    room.check(2, 1500, threads=False, room={"threads": (10, "tiny")})  # coroutines: memory only


def test_async_slots_are_bounded_by_memory(monkeypatch):
    monkeypatch.setattr(room, "_available_mb", lambda: 100)
    with pytest.raises(UsageError, match="async slots: this machine has room for 1600"):
        room.check(2, 1000, threads=False, room={})


@pytest.mark.parametrize("slots", [3, 64, 500])
def test_sums_and_scans_agree_whether_numpy_does_them_or_not(slots):
    c = array.array("q", [0] * (slots * SLOT_FIELDS))
    for i in range(slots):
        c[i * SLOT_FIELDS + STARTED] = i + 2
        c[i * SLOT_FIELDS + FAILED] = 1
        c[i * SLOT_FIELDS + TIMED_OUT] = i % 2
        c[i * SLOT_FIELDS + START_NS] = 1000 + i if i % 3 == 0 else 0
    view = memoryview(c)
    totals = slot_totals(view, slots)
    assert totals == [sum(i + 2 for i in range(slots)), 0, slots, 0, 0, sum(i % 2 for i in range(slots))]
    assert running_since(view, slots) == {i: 1000 + i for i in range(slots) if i % 3 == 0}


def test_cancelled_operations_are_timed_out_in_the_final_accounting():
    from loadgen.engine.pool import WorkerHandle

    slots = 2
    c = array.array("q", [0] * (slots * SLOT_FIELDS))
    c[STARTED], c[SUCCEEDED], c[FAILED], c[TIMED_OUT] = 10, 4, 6, 4  # slot 0: 6 failed, 4 of them cancelled
    c[SLOT_FIELDS + STARTED], c[SLOT_FIELDS + SUCCEEDED] = 3, 2  # slot 1: 1 running when the worker died
    h = WorkerHandle(0, None, None, None, memoryview(c))
    h.timed_out_slots.add(1)
    acc, anomaly = h.final_accounting(slots)
    assert anomaly is None
    assert (acc.dispatched, acc.succeeded, acc.failed, acc.timed_out, acc.crashed) == (13, 6, 2, 4 + 1, 0)
    assert acc.adds_up()

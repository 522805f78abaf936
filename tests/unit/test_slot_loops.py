"""The slot loops and the op-timeout check without a process (issue #23, rows 5 and 6).

Row 5: the master's age check read a slot's start time twice; a slot that ended its operation between
the two reads gave a start of 0, an age of the clock's uptime, and a false timeout. Here a counters
array whose start reads *tear* (a start, then 0) stands for that slot.

Row 6: a result whose ``state`` raises or is a numpy array, or an op that raises a CancelledError of its
own, killed the slot (thread) or the async slots' loop outside its try. Here each slot loop — thread
closed and open, async closed and open — runs such ops on a fake worker to the end of its inputs: every
call is counted, as a success (the value is the user's) or as a failure with its exception, and the
loop lives on. A slot that dies of its own error ends the worker as a crash (exit 70), never quietly.
"""

import array
import asyncio
import itertools
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

import _slot_targets as targets
from loadgen.engine import aslots, slots
from loadgen.engine.counters import FAILED, SLOT_FIELDS, START_NS, STARTED, SUCCEEDED, TIMED_OUT, late_slots, running_since
from loadgen.errors import SLOT_DIED_EXITCODE, crash_hint
from loadgen.workload.results import outcome

S = 1_000_000_000  # ns in a second
CALLS = 2 * targets.CANCEL_EVERY  # each loop runs this many operations, then its inputs run out


# ---------------------------------------------------------------- row 5: the age check


class TornCounters:
    """A worker's counters as the master sees them while slot ``busy`` ends its operation: the first read
    of its start time gives the start, every later read 0 (the slot wrote "idle" in between)."""

    def __init__(self, slots, busy, start_ns):
        self.values = [0] * (slots * SLOT_FIELDS)
        self.values[busy * SLOT_FIELDS + START_NS] = start_ns
        self.torn = busy * SLOT_FIELDS + START_NS
        self.reads = 0

    def __getitem__(self, k):
        v = self.values[k]
        if k == self.torn:
            self.reads += 1
            self.values[k] = 0
        return v


def test_a_start_time_is_read_once_so_a_slot_that_ends_meanwhile_is_never_late():
    now_ns = time.monotonic_ns()
    c = TornCounters(slots=4, busy=2, start_ns=now_ns - 10_000)  # an operation 10 µs old
    assert running_since(c, 4) == {2: now_ns - 10_000}
    assert c.reads == 1
    c = TornCounters(slots=4, busy=2, start_ns=now_ns - 10_000)
    assert late_slots(c, 4, now_ns, 5 * S) == []  # not "late by the clock's uptime"


def test_the_vector_scan_reads_its_start_times_once(monkeypatch):
    """From VECTOR_SLOTS on numpy scans the starts: a view of shared memory read twice (the nonzero test,
    then the values) tore the same way. The slot ends its operation right after the nonzero test."""
    slots = 100
    c = array.array("q", [0] * (slots * SLOT_FIELDS))
    now_ns = time.monotonic_ns()
    c[7 * SLOT_FIELDS + START_NS] = now_ns - 10_000
    flatnonzero = np.flatnonzero

    def then_the_slot_ends(a):
        found = flatnonzero(a)
        c[7 * SLOT_FIELDS + START_NS] = 0
        return found

    monkeypatch.setattr(np, "flatnonzero", then_the_slot_ends)
    assert running_since(memoryview(c), slots) == {7: now_ns - 10_000}
    c[7 * SLOT_FIELDS + START_NS] = now_ns - 10_000
    assert late_slots(memoryview(c), slots, now_ns, 5 * S) == []


@pytest.mark.parametrize("slots", [3, 100])
def test_only_an_operation_older_than_the_limit_is_late(slots):
    c = array.array("q", [0] * (slots * SLOT_FIELDS))
    now_ns = time.monotonic_ns()
    c[0 * SLOT_FIELDS + START_NS] = now_ns - 6 * S  # running 6 s
    c[1 * SLOT_FIELDS + START_NS] = now_ns - 4 * S  # running 4 s
    c[2 * SLOT_FIELDS + START_NS] = now_ns + 1000  # started after now_ns was taken: age below 0
    assert late_slots(memoryview(c), slots, now_ns, 5 * S) == [0]


def test_late_slots_under_a_slot_that_flips_as_fast_as_it_can():
    """A thread plays a µs-operation slot (start, end, start, …) while the master's check runs: 0 timeouts."""
    import threading

    slots = 4
    c = memoryview(array.array("q", [0] * (slots * SLOT_FIELDS)))
    done = threading.Event()

    def slot():
        mono = time.monotonic_ns
        while not done.is_set():
            c[START_NS] = mono()
            c[START_NS] = 0

    t = threading.Thread(target=slot)
    t.start()
    try:
        late = []
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            late += late_slots(c, slots, time.monotonic_ns(), S)
    finally:
        done.set()
        t.join()
    assert late == []


# ---------------------------------------------------------------- row 6: what a result means


class EqRaises(str):
    def __eq__(self, other):
        raise RuntimeError("no comparing me")

    __hash__ = str.__hash__


class NotAString:
    def __eq__(self, other):
        return True  # "equal" to anything, "failed" included: not a string state

    def __str__(self):
        return "odd"


@pytest.mark.parametrize("result,key", [
    (None, None),
    (42, None),
    (targets.FlowLike("finalized"), None),
    (targets.FlowLike("failed", "research", "LLM timeout"), "research: LLM timeout"),
    (targets.FlowLike("failed"), "flow: failed"),
    (targets.FlowLike(EqRaises("failed"), "draft", "bad"), "draft: bad"),  # compared as the string it holds
    (targets.FlowLike("failed", EqRaises("x"), NotAString()), "x: odd"),
    (targets.RaisingState(), None),
    (targets.RECORDS, None),  # an array state: ambiguous truth, not a failure
    (targets.FlowLike(np.array(["failed"])), None),
    (targets.FlowLike(NotAString()), None),
    (targets.FlowLike(b"failed"), None),
], ids=["none", "int", "finalized", "failed", "failed-bare", "str-subclass", "odd-fields", "raising-property",
        "record-array", "array", "eq-anything", "bytes"])
def test_only_a_string_state_failed_is_a_returned_failure(result, key):
    assert outcome(result) == key


def test_a_state_that_lies_about_its_class_is_not_a_failure():
    class Liar:
        @property
        def __class__(self):
            raise RuntimeError("no class for you")

    assert outcome(targets.FlowLike(Liar())) is None


def test_an_error_key_comes_out_of_a_failed_result_whose_fields_cannot_be_printed():
    class Unprintable:
        def __str__(self):
            raise ValueError("no")

    class Stage:
        state = "failed"

        @property
        def failed_stage(self):
            raise RuntimeError("no stage")

        reason = Unprintable()

    assert outcome(Stage()) == "flow: failed"


# ---------------------------------------------------------------- row 6: the slot loops


class FakeWorker:
    """What a slot loop uses of its :class:`~loadgen.engine.worker.Worker`: counters in a plain array,
    the lists, the load (every slot active, no quota), and inputs that run out after ``calls`` records.
    ``rate``: the open model (every arrival due at once)."""

    def __init__(self, op, calls=CALLS, slots=1, op_timeout_s=None, rate=False):
        self.counters = memoryview(array.array("q", [0] * (slots * SLOT_FIELDS)))
        self.op = op
        self.feed = iter(range(calls))
        self.latencies, self.errors, self.responses, self.lateness, self.stalls = [], [], [], [], []
        self.breaker = None
        self.stopping = False
        self.active, self.quota = slots, None
        schedule = SimpleNamespace(time_of=lambda n: 0.0) if rate else None
        self.spec = SimpleNamespace(slots=slots, schedule=schedule, op_timeout_s=op_timeout_s, stride=1, index=0,
                                    max_lateness_s=3600.0)
        self.schedule_start_ns = time.monotonic_ns() if rate else None
        self.schedule_horizon_s = None
        self.claim_arrival = itertools.count().__next__
        self.died = []
        self.main_wakes_ns = 1 << 62  # no main thread to give way to

    def give_way(self):
        pass

    def may_start(self, i):
        return not self.stopping

    def try_start(self, i):
        return not self.stopping

    def await_schedule(self):
        return True

    def begin_schedule(self):
        pass

    def attach_loop(self, loop):
        pass

    async def changed(self):
        await asyncio.sleep(0.01)

    def slot_died(self, what):
        """Recorded, then the error goes on (the real one never returns: it ends the process)."""
        self.died.append((what, sys.exc_info()[0]))
        raise

    def totals(self):
        n = len(self.counters) // SLOT_FIELDS
        return [sum(self.counters[i * SLOT_FIELDS + f] for i in range(n)) for f in (STARTED, SUCCEEDED, FAILED)]


def run_thread_slot(w):
    (slots.closed_slot if w.spec.schedule is None else slots.open_slot)(w, 0)


LOOP_TIMEOUT_S = 20.0  # far above a loop's run here (ms); a loop that lost a slot waits for it for good


def run_async_slots(w):
    asyncio.run(asyncio.wait_for(aslots._main(w), LOOP_TIMEOUT_S))


LOOPS = {
    "thread-closed": (run_thread_slot, {}),
    "thread-open": (run_thread_slot, {"rate": True}),
    "async-closed": (run_async_slots, {"slots": 4}),
    "async-closed-timeout": (run_async_slots, {"slots": 4, "op_timeout_s": 5.0}),
    "async-open": (run_async_slots, {"slots": 4, "rate": True}),
    "async-open-timeout": (run_async_slots, {"slots": 4, "rate": True, "op_timeout_s": 5.0}),
}


def ops_for(loop):
    """The row's three hostile ops, in the flavour (sync, async) the loop runs."""
    if loop.startswith("async"):
        return {"raising_state": targets.araising_state, "record_array": targets.arecord_array,
                "cancel": targets.acancel_sometimes}
    return {"raising_state": targets.raising_state, "record_array": targets.record_array,
            "cancel": targets.cancel_sometimes}


def cancels(n):
    """How many of the next ``n`` calls of a ``cancel_sometimes`` op raise, from where its count stands."""
    start = next(targets._calls) + 1  # this probe is a call too
    return sum(1 for k in range(start, start + n) if k % targets.CANCEL_EVERY == 0)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("what", ["raising_state", "record_array", "cancel"])
def test_a_slot_loop_counts_every_call_of_a_hostile_op_and_lives_on(no_exit, loop, what):
    run, kw = LOOPS[loop]
    w = FakeWorker(ops_for(loop)[what], **kw)
    expected_failed = cancels(CALLS) if what == "cancel" else 0
    run(w)
    started, succeeded, failed = w.totals()
    assert w.died == []
    assert started == CALLS  # the loop ran until its inputs ran out, not until a result killed it
    assert (succeeded, failed) == (CALLS - expected_failed, expected_failed)
    assert expected_failed == (2 if what == "cancel" else 0)
    assert [k for k, _ in w.errors] == ["CancelledError"] * expected_failed
    assert all("the target's own cancellation" in tb for _, tb in w.errors)
    assert len(w.latencies) == CALLS
    assert all(w.counters[i * SLOT_FIELDS + START_NS] == 0 for i in range(w.spec.slots))  # no slot left "busy"
    assert sum(w.counters[i * SLOT_FIELDS + TIMED_OUT] for i in range(w.spec.slots)) == 0


def test_an_async_slot_still_obeys_a_real_cancellation():
    """A CancelledError is the op's failure only when the target raised it: a cancellation of the slot's
    own task still ends it (else asyncio.run could never cancel what is left)."""

    async def main():
        task = asyncio.ensure_future(aslots._call(lambda _: asyncio.sleep(3600), None, None))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(main())


def test_an_async_timeout_is_still_a_timeout_not_the_targets_cancellation():
    async def main():
        return await aslots._call(lambda _: asyncio.sleep(3600), None, 0.05)

    key, tb, cancelled = asyncio.run(main())
    assert cancelled and key.startswith("OpTimeout")


class Exited(BaseException):
    def __init__(self, code):
        super().__init__(code)
        self.code = code


@pytest.fixture
def no_exit(monkeypatch):
    """``os._exit`` raises :class:`Exited` instead of ending pytest."""

    def fake_exit(code):
        raise Exited(code)

    monkeypatch.setattr(os, "_exit", fake_exit)


@pytest.mark.parametrize("loop", ["thread-closed", "thread-open", "async-closed"])
def test_system_exit_from_the_target_still_ends_the_worker(no_exit, loop):
    def leave(_):
        raise SystemExit(7)

    async def aleave(_):
        raise SystemExit(7)

    run, kw = LOOPS[loop]
    w = FakeWorker(aleave if loop.startswith("async") else leave, **kw)
    with pytest.raises(Exited) as e:
        run(w)
    assert e.value.code == 7


class BrokenFeed:
    """Inputs whose reading raises: an error of the slot's own machinery, outside any operation."""

    def __iter__(self):
        return self

    def __next__(self):
        raise OSError("the inputs file went away")


@pytest.mark.parametrize("loop", ["async-closed", "async-open"])
def test_an_async_slot_that_dies_of_its_own_error_is_a_crash_of_the_worker(loop):
    run, kw = LOOPS[loop]
    w = FakeWorker(targets.araising_state, **kw)
    w.feed = BrokenFeed()
    with pytest.raises(OSError):
        run(w)
    assert w.died == [("the async slots' loop", OSError)]


def test_a_thread_slot_that_dies_of_its_own_error_ends_the_worker_as_a_crash(no_exit):
    """Worker._slot, the thread's body: the slot loop raised (its inputs broke) → exit 70, not a quiet end
    that the worker would report as "inputs exhausted"."""
    from loadgen.engine.worker import Worker, WorkerSpec

    w = Worker(WorkerSpec(index=0, slots=1), conn=None, shm=bytearray(SLOT_FIELDS * 8))
    w.op, w.feed, w.active = targets.raising_state, BrokenFeed(), 1
    try:
        with pytest.raises(Exited) as e:
            w._slot(slots.closed_slot, 0)
    finally:
        os.close(w._copies_r)
        os.close(w._copies_w)
    assert e.value.code == SLOT_DIED_EXITCODE
    assert "slot" in crash_hint(SLOT_DIED_EXITCODE)

"""Operations whose *results* are hostile to the slot loops (issue #23, rows 5 and 6), for the slot
verdict table and the slot loops' unit tests. Importable as ``_slot_targets`` (``tests/`` is on the
path of the tests and of the CLI runs they start)."""

import asyncio
import itertools

import numpy as np

CANCEL_EVERY = 200  # one call in this many raises CancelledError of its own


class RaisingState:
    """A result whose ``state`` property raises: reading it is the user's bug, not a failed call."""

    @property
    def state(self):
        raise RuntimeError("state exploded")


class FlowLike:
    """What the embedded flow returns: a ``state``, and on failure the stage and the reason."""

    def __init__(self, state, failed_stage=None, reason=None):
        self.state, self.failed_stage, self.reason = state, failed_stage, reason


# A numpy record array with a ``state`` field: ``.state == "failed"`` is an array, its truth ambiguous.
RECORDS = np.rec.fromrecords([("failed", 1), ("finalized", 2)], names="state,n")

_calls = itertools.count(1)


def raising_state(inputs=None):
    return RaisingState()


def record_array(inputs=None):
    return RECORDS


def cancel_sometimes(inputs=None):
    """A sync op that raises a CancelledError of its own once every CANCEL_EVERY calls."""
    if next(_calls) % CANCEL_EVERY == 0:
        raise asyncio.CancelledError("the target's own cancellation")


async def araising_state(inputs=None):
    return RaisingState()


async def arecord_array(inputs=None):
    return RECORDS


async def acancel_sometimes(inputs=None):
    """An async op that, once every CANCEL_EVERY calls, raises a CancelledError of its own (as code does
    that awaits an inner task somebody cancelled)."""
    await asyncio.sleep(0)
    if next(_calls) % CANCEL_EVERY == 0:
        raise asyncio.CancelledError("the target's own cancellation")

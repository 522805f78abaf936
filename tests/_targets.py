"""Operations that misbehave on purpose, for the crash table and fault tests.

Each takes the operation's input and keyword arguments from ``TargetSpec.kwargs``.
``marker``: a file created with O_EXCL, so the fault happens exactly once per run.
"""

import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time


def noop(inputs=None):
    return None


def sleep_ms(inputs=None, ms=10):
    time.sleep(ms / 1000)


GATE_PLACES, GATE_MS = 4, 30
_gate = threading.BoundedSemaphore(GATE_PLACES)


def gated(inputs=None):
    """A server with exactly ``GATE_PLACES`` places (per process): an operation holds one for ``GATE_MS``
    ms, and past that many in flight operations queue for a place. In one worker its throughput levels
    off at GATE_PLACES / GATE_MS by construction."""
    with _gate:
        time.sleep(GATE_MS / 1000)


def fail_always(inputs=None):
    raise ValueError("this operation always fails")


def _first(marker):
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def fault_once(inputs=None, how="raise", marker="", ms=5):
    """Do ``how`` on the first call of the run (across workers), then behave (sleep ``ms``)."""
    if marker and _first(marker):
        if how == "raise":
            raise RuntimeError("injected failure")
        if how == "sys_exit":
            sys.exit(7)
        if how == "os_exit":
            os._exit(9)
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "segfault":
            ctypes.string_at(0)
        if how == "hang":
            time.sleep(3600)
        if how == "memory":
            blocks = []
            while True:  # until the monitor kills the pool
                blocks.append(bytearray(50 * 2**20))
                time.sleep(0.02)
    time.sleep(ms / 1000)


def crash_always(inputs=None):
    os._exit(5)


def spawn_child(inputs=None, pidfile=""):
    """Start a long-lived grandchild (must die with the pool) and record its pid."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if pidfile:
        with open(pidfile, "a") as f:
            f.write(f"{p.pid}\n")
    time.sleep(60)


def noisy(inputs=None, lines=200):
    for i in range(lines):
        print("x" * 200, file=sys.stdout if i % 2 else sys.stderr)


def unpicklable(inputs=None):
    import threading

    return threading.Lock()  # not a function (a function is no result: issue #23 row 3), and unpicklable


def stall_every(inputs=None, period_s=2.0, stall_s=0.5, ms=1):
    """A system that stalls: during the first ``stall_s`` of every ``period_s`` (wall clock),
    every call waits until the stall is over; otherwise it takes ``ms``."""
    now = time.time()
    phase = now % period_s
    if phase < stall_s:
        time.sleep(stall_s - phase)
    time.sleep(ms / 1000)


def echo_record(inputs=None, path=""):
    """Append the record it was given to ``path`` (one line each), to check who got what."""
    with open(path, "a") as f:
        f.write(json.dumps(inputs, sort_keys=True) + "\n")


class Client:
    """A per-worker client: built once, called per operation, counts its builds."""

    def __init__(self, path):
        with open(path, "a") as f:
            f.write(f"{os.getpid()}\n")

    def __call__(self, inputs=None):
        time.sleep(0.001)


def slow_factory(build_s=0.0, ms=5):
    """A factory (--target-factory) that takes ``build_s`` to build: a pool that is slow to be ready."""
    time.sleep(build_s)
    return functools.partial(sleep_ms, ms=ms)


def make_client(path=""):
    return Client(path)


async def async_sleep(inputs=None, ms=5, fail_every=0):
    import asyncio

    await asyncio.sleep(ms / 1000)
    if fail_every and inputs is not None and inputs.get("i", 1) % fail_every == 0:
        raise KeyError("missing")


def spin_ms(inputs=None, ms=20):
    """Pure-Python CPU for ``ms`` milliseconds of this thread's CPU time (holds the GIL: one core)."""
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


def pay(user, amount, path=""):
    """Takes a record's fields as keywords; appends them to ``path``."""
    with open(path, "a") as f:
        f.write(json.dumps({"user": user, "amount": amount}) + "\n")


def measured(inputs=None, ms=2):
    """A named measurement around a ``ms`` sleep, a check that always passes and one that never does."""
    import loadgen

    with loadgen.measure("nap"):
        time.sleep(ms / 1000)
    loadgen.check(True, "always")
    loadgen.check(False, "never")


def login(inputs=None):
    time.sleep(0.004)


def browse(inputs=None, fail_every=0):
    """Fails one call in ``fail_every`` (per process; 0: never)."""
    global _browsed
    _browsed += 1
    if fail_every and _browsed % fail_every == 0:
        raise LookupError("page not found")


_browsed = 0


async def asleep(inputs=None, ms=1000.0):
    import asyncio

    await asyncio.sleep(ms / 1000)


async def ahang(inputs=None, ignore_cancel=False):
    """Never returns; with ``ignore_cancel`` it swallows its cancellation and sleeps on (a hung client)."""
    import asyncio

    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if not ignore_cancel:
                raise


async def ablock(inputs=None, ms=300.0):
    """Blocks the event loop (a sync sleep in an async def): a loop stall."""
    time.sleep(ms / 1000)


async def afail(inputs=None):
    raise ValueError("async failure")


async def anoop(inputs=None):
    return None


async def afault_once(inputs=None, how="raise", marker="", ms=5):
    """:func:`fault_once` from inside an ``async def`` (a hang awaits forever; the rest as there)."""
    import asyncio

    if marker and how == "hang" and _first(marker):
        await asyncio.sleep(3600)
    elif how != "hang":
        fault_once(inputs, how, marker, 0)
    await asyncio.sleep(ms / 1000)


async def aecho_record(inputs=None, path=""):
    import asyncio

    await asyncio.sleep(0.001)
    echo_record(inputs, path)

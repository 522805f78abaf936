"""Operations for the benchmarks (referenced by path, so they work under spawn too)."""


def noop(inputs=None):
    return None


def burn_10ms(inputs=None):
    from loadgen.workload.flow import burn_cpu

    burn_cpu(10.0)


def idle(inputs=None):
    import time

    time.sleep(0.05)


def stall_every(inputs=None, period_s=10.0, stall_s=1.0, ms=1.0):
    """Stalls during the first ``stall_s`` of every ``period_s`` of wall-clock time: a call made then
    waits until the stall ends. Otherwise it takes ``ms``."""
    import time

    phase = time.time() % period_s
    if phase < stall_s:
        time.sleep(stall_s - phase)
    time.sleep(ms / 1000)


async def asleep(inputs=None, ms=1000.0):
    import asyncio

    await asyncio.sleep(ms / 1000)


async def anoop(inputs=None):
    return None


def many_checks(inputs=None, n=100_000):
    """``loadgen.check`` ``n`` times in one operation (benchmarks/hostile.py)."""
    import loadgen

    check = loadgen.check
    for _ in range(int(n)):
        check(True, "hot")


def same_loop(inputs=None, n=100_000):
    """The loop of :func:`many_checks`, a plain call in place of the check (its baseline)."""
    def check(ok, name):
        return ok

    for _ in range(int(n)):
        check(True, "hot")


def huge_failure(inputs=None, mb=10):
    """Fail with an ``mb`` MB message (benchmarks/hostile.py)."""
    raise RuntimeError("x" * int(float(mb) * 2**20))

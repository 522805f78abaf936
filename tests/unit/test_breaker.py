import pytest

from loadgen.workload.breaker import BreakerConfig, BreakerState, CircuitBreaker
from loadgen.errors import UsageError


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_opens_after_threshold_rejects_then_half_opens_and_closes():
    clock = Clock()
    b = CircuitBreaker(BreakerConfig(failure_threshold=3, recovery_timeout_s=1.0), clock=clock, wall=clock)
    for _ in range(2):
        assert b.allow()
        b.record(False)
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    b.record(False)
    assert b.state is BreakerState.OPEN
    assert not b.allow() and not b.allow()  # rejected fast while open
    clock.t = 1.01
    assert b.allow()  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.allow()  # only one probe out
    b.record(True)
    assert b.state is BreakerState.CLOSED
    assert [t[2] for t in b.transitions] == ["open", "half_open", "closed"]


def test_failed_probe_reopens_and_success_resets_count():
    clock = Clock()
    b = CircuitBreaker(BreakerConfig(failure_threshold=2, recovery_timeout_s=0.5), clock=clock, wall=clock)
    b.allow(); b.record(False)
    b.allow(); b.record(True)  # resets the consecutive count
    b.allow(); b.record(False)
    assert b.state is BreakerState.CLOSED
    b.allow(); b.record(False)
    assert b.state is BreakerState.OPEN
    clock.t = 0.6
    assert b.allow()
    b.record(False)
    assert b.state is BreakerState.OPEN and b.remaining_open_s() == pytest.approx(0.5)


def test_config_validation():
    with pytest.raises(UsageError):
        BreakerConfig(failure_threshold=0)
    with pytest.raises(UsageError):
        BreakerConfig(recovery_timeout_s=-1)

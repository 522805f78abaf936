import math

import pytest
from hypothesis import given, settings, strategies as st

from loadgen.engine.schedule import Schedule


def test_constant_rate():
    s = Schedule(100.0)
    assert s.time_of(0) == 0.0
    assert s.time_of(100) == pytest.approx(1.0)
    assert s.arrivals_before(2.5) == pytest.approx(250)
    assert s.rate_at(50) == 100


def test_ramp_from_zero_to_200_over_10s():
    s = Schedule(0.0, ((10.0, 200.0),))
    # Λ(10) = 1000 arrivals; half the arrivals come in the last ~2.93 s
    assert s.arrivals_before(10.0) == pytest.approx(1000)
    assert s.time_of(1000) == pytest.approx(10.0)
    assert s.time_of(500) == pytest.approx(10 / math.sqrt(2))
    assert s.rate_at(5.0) == pytest.approx(100)
    # after the last stage the rate holds
    assert s.time_of(1200) == pytest.approx(11.0)


def test_zero_rate_tail_never_arrives():
    s = Schedule(10.0, ((1.0, 0.0),))
    assert s.arrivals_before(5.0) == pytest.approx(5.0)
    assert s.time_of(6) == math.inf


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.just(0.0), st.floats(0.001, 1000)),
       st.lists(st.tuples(st.floats(0.1, 30), st.one_of(st.just(0.0), st.floats(0.001, 1000))), max_size=4),
       st.floats(0, 60))
def test_time_of_inverts_arrivals_before(start, stages, t):
    s = Schedule(start, tuple(stages))
    n = s.arrivals_before(t)
    if n > 1e-6 and s.rate_at(t) > 1e-3:
        assert s.time_of(n) == pytest.approx(t, rel=1e-6, abs=1e-6)
    # monotone
    assert s.time_of(n) <= s.time_of(n + 1)

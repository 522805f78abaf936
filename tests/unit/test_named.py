"""``loadgen.named``: what a worker keeps of ``measure`` and ``check``, and its bounds."""

import threading

import pytest

import loadgen
from loadgen import named


@pytest.fixture
def collecting(monkeypatch):
    monkeypatch.setattr(named, "_collecting", True)
    named.drain()
    yield
    named.drain()


def test_outside_a_worker_nothing_is_kept_but_the_block_is_timed():
    assert not named._collecting
    with loadgen.measure("x") as m:
        pass
    assert loadgen.check(0, "c") is False and loadgen.check("yes", "c") is True
    assert m.ms is not None and m.ms >= 0
    assert named.drain() == ({}, {})


def test_measure_keeps_a_block_that_raises_and_check_does_not_fail_anything(collecting):
    with pytest.raises(ValueError):
        with loadgen.measure("boom"):
            raise ValueError
    for ok in (1, 0, 1, None):
        loadgen.check(ok, "c")
    timings, checks = named.drain()
    assert list(timings) == ["boom"] and len(timings["boom"]) == 1
    assert checks == {"c": [2, 2]}
    assert named.drain() == ({}, {})  # drained once


def test_threads_lose_nothing(collecting):
    def work():
        for _ in range(5000):
            with loadgen.measure("t"):
                pass
            loadgen.check(True, "t")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    timings, checks = named.drain()
    assert len(timings["t"]) == 40000 and checks == {"t": [40000, 0]}


def test_names_are_cleaned_and_capped(collecting):
    for i in range(named.MAX_NAMES + 50):
        loadgen.check(True, f"n{i}")
    loadgen.check(False, "bad\x00name\n" + "x" * 500)
    loadgen.check(True, 42)
    _, checks = named.drain()
    assert len(checks) == named.MAX_NAMES + 1  # the rest fold into OTHER
    assert checks[named.OTHER] == [51, 1] and "n0" in checks
    assert named.label("bad\x00name\n") == "bad?name?" and named.label(42) == "42"
    assert len(named.label("y" * 500)) == named.MAX_NAME_CHARS
    into = {}
    named.add_checks(into, checks)
    named.add_checks(into, {"brand_new": [1, 0]})
    assert len(into) == named.MAX_NAMES + 1 and into[named.OTHER] == [52, 1]


def test_named_metrics_are_what_criteria_select():
    m = named.named_metrics({"llm": {"p95": 12.5, "count": 3}}, {"a": [3, 1], "b": [0, 0]})
    assert m == {"p95_ms{measure=llm}": 12.5, "count{measure=llm}": 3, "checks{name=a}": 0.75,
                 "checks{name=b}": None, "checks": 0.75}

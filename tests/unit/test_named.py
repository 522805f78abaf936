"""``loadgen.named``: what a worker keeps of ``measure`` and ``check``, and its bounds."""

import threading

import pytest

import loadgen
from loadgen import named


@pytest.fixture
def collecting(monkeypatch):
    monkeypatch.setattr(named, "_collecting", True)
    # A fresh process's state: the names a worker keeps are kept for its life.
    monkeypatch.setattr(named, "_checks", {})
    monkeypatch.setattr(named, "_worker_checks", named.NameCap())
    monkeypatch.setattr(named, "_worker_measures", named.NameCap())
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
    every = [f"n{i}" for i in range(named.MAX_NAMES + 50)] + [named.label("bad\x00name\n" + "x" * 500), "42"]
    kept = sorted(every, key=named.rank)[:named.MAX_NAMES]  # the lowest-ranked, whatever came first
    assert set(checks) - {named.OTHER} == set(kept)
    assert sum(p + f for p, f in checks.values()) == len(every) and sum(checks[named.OTHER]) == len(every) - len(kept)
    assert named.label("bad\x00name\n") == "bad?name?" and named.label(42) == "42"
    assert len(named.label("y" * 500)) == named.MAX_NAME_CHARS
    into = {}
    named.add_checks(into, checks)
    named.add_checks(into, {"brand_new": [1, 0]})
    assert len(into) == named.MAX_NAMES + 1 and sum(map(sum, into.values())) == len(every) + 1


def test_kept_names_are_exact_whatever_order_each_worker_and_second_sees_them(collecting):
    """Issue #26: 150 names, each worker and each second seeing them in another order: the names the
    run keeps have every one of their counts (first come, first kept lost 20,346 of 163,756)."""
    import random

    names = [f"name-{i}" for i in range(150)]
    truth, into = {}, {}
    rng = random.Random(7)
    for worker in range(3):
        cap = named.NameCap()
        for second in range(5):
            order = names[:]
            rng.shuffle(order)
            batch = {}
            for n in order[:rng.randint(60, 150)]:
                k = n if cap.admit(n) is not False else named.OTHER
                batch.setdefault(k, [0, 0])[0] += 1
                truth[n] = truth.get(n, 0) + 1
            # a name pushed out later counts under OTHER from then on
            shipped = {}
            for k, (p, f) in batch.items():
                pair = shipped.setdefault(k if k in cap.kept else named.OTHER, [0, 0])
                pair[0] += p
                pair[1] += f
            named.add_checks(into, shipped)
    assert len(into) == named.MAX_NAMES + 1
    for name, (passes, _) in into.items():
        if name != named.OTHER:
            assert passes == truth[name], name
    assert sum(p for p, _ in into.values()) == sum(truth.values())


def test_named_metrics_are_what_criteria_select():
    m = named.named_metrics({"llm": {"p95": 12.5, "count": 3}}, {"a": [3, 1], "b": [0, 0]})
    assert m == {"p95_ms{measure=llm}": 12.5, "count{measure=llm}": 3, "checks{name=a}": 0.75,
                 "checks{name=b}": None, "checks": 0.75}

import random

import pytest

from hypothesis import given, settings, strategies as st

from loadgen.analysis.stats import Accounting, CappedCounter, Histogram


def test_bulk_record_matches_record_value():
    rng = random.Random(7)
    values = [rng.choice([0, 1, 2, 999, 1000, 1024, 2047, 2048, 65535, 10**6, 3_600_000_000])
              for _ in range(300)] + [rng.randint(0, 10**7) for _ in range(3000)]
    bulk, one = Histogram(), Histogram()
    bulk.record_many(values)
    for v in values:
        one.record(v)
    assert bulk.count == one.count == len(values)
    assert list(bulk._counts) == list(one._counts)
    for p in (0, 50, 90, 99, 99.9, 100):
        assert bulk.value_at(p) == one._h.get_value_at_percentile(p)


def test_large_batch_uses_bincount_path_and_agrees():
    values = list(range(0, 50_000, 3))
    a, b = Histogram(), Histogram()
    a.record_many(values)  # > 4096 values
    for chunk in range(0, len(values), 1000):
        b.record_many(values[chunk:chunk + 1000])
    assert list(a._counts) == list(b._counts)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=10**9), max_size=200), min_size=1, max_size=6))
def test_merge_equals_histogram_of_union(parts):
    merged = Histogram()
    for part in parts:
        h = Histogram()
        h.record_many(part)
        merged.merge(Histogram.from_payload(h.to_payload()))
    union = Histogram()
    union.record_many([v for part in parts for v in part])
    assert merged.count == union.count
    assert list(merged._counts) == list(union._counts)
    assert merged.summary_ms() == union.summary_ms()


def test_percentiles_within_three_digits():
    h = Histogram()
    h.record_many(range(1, 100_001))
    s = h.summary_ms()
    assert abs(s["p50"] - 50.0) / 50.0 < 1e-3
    assert abs(s["p99"] - 99.0) / 99.0 < 1e-3
    assert s["max"] >= 100.0 and s["count"] == 100_000


def test_mean_matches_the_package():
    h = Histogram()
    h.record_many([1, 5, 5, 900, 12_345, 10**6, 3 * 10**6])
    assert h.mean_us() == pytest.approx(h._h.get_mean_value(), rel=1e-12)


def test_empty_histogram_summary_and_payload():
    h = Histogram()
    assert h.summary_ms()["p99"] is None and h.to_payload() == ""
    assert Histogram.from_payload("").count == 0


def test_accounting_adds_up_and_merges():
    a = Accounting(dispatched=10, succeeded=7, failed=2, crashed=1)
    b = Accounting(dispatched=5, succeeded=4, timed_out=1, dropped=3)
    a.merge(b)
    assert a.adds_up() and a.dispatched == 15 and a.dropped == 3
    assert abs(a.success_rate - 11 / 15) < 1e-12
    assert not Accounting(dispatched=3, succeeded=1).adds_up()


def test_capped_counter_keeps_counts_in_other():
    c = CappedCounter(cap=3)
    for i in range(10):
        c.add(f"k{i}", 2)
    d = c.to_dict()
    assert len(d) == 3 and sum(d.values()) == 20 and d["other"] == 16


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=10**8), min_size=1, max_size=300), min_size=1,
                max_size=5))
def test_sparse_parts_equal_the_full_histogram(parts):
    from loadgen.analysis.stats import SecondHistogram, Sparse

    full, added, second = Histogram(), Histogram(), SecondHistogram()
    for part in parts:
        full.record_many(part)
        sp = Sparse.of(part)
        added.add_sparse(sp)
        second.add(sp)
    assert list(added._counts) == list(full._counts) and added.count == full.count
    expected = full.summary_ms()
    got = second.summary_ms()
    assert {k: got[k] for k in ("p50", "p90", "p99", "p999", "max")} == \
        {k: expected[k] for k in ("p50", "p90", "p99", "p999", "max")}


def test_batches_add_into_kept_histograms_without_building_one_per_batch(monkeypatch):
    """The master adds each batch's stage and segment parts into histograms it keeps; building a
    full histogram per batch (184 KiB, freed only by the cyclic GC) churned its heap and crept its RSS."""
    import time

    from loadgen.config import ResourceThresholds
    from loadgen.engine import outcome as outcome_mod
    from loadgen.engine.load import RunPlan
    from loadgen.engine.messages import ResultBatch
    from loadgen.analysis.stats import Sparse

    built = []

    class Counting(Histogram):
        __slots__ = ()

        def __init__(self, *a, **k):
            built.append(1)
            super().__init__(*a, **k)

    monkeypatch.setattr(outcome_mod, "Histogram", Counting)
    out = outcome_mod.RunOutcome(plan=RunPlan(concurrency=2, duration_s=60, segment_s=20.0),
                                 thresholds=ResourceThresholds())
    out.load_started_at = time.time()
    seconds = outcome_mod.Seconds(out, "main")
    stages = ("research", "draft_generation", "quality_check")
    for i in range(200):
        part = Sparse.of([1000 + i, 2000])
        seconds.add_batch(ResultBatch(index=i % 2, second=int(out.load_started_at) + i // 10, started=2,
                                      succeeded=2, failed=0, dropped=0, in_flight=0, latency=part,
                                      measures={s: part for s in stages}))
    assert len(built) == len(out.measures) + len(out.segments) == len(stages) + 3  # the 3 segments made up front
    assert out.measures["research"].count == 400


@given(st.lists(st.one_of(st.tuples(st.just("add"), st.integers(0, 10**6), st.floats(-1e6, 1e6)),
                          st.tuples(st.just("max"), st.integers(0, 10**6), st.floats(-1e6, 1e6))), max_size=200),
       st.integers(1, 9))
@settings(max_examples=100, deadline=None)
def test_series_keeps_what_a_bounded_deque_of_pairs_keeps(ops, maxlen):
    """The outcome's memory series (two float arrays) answers as ``deque(maxlen)`` of pairs does."""
    import collections

    from loadgen.engine.outcome import Series

    s, d = Series(maxlen), collections.deque(maxlen=maxlen)
    for op, t, v in ops:
        if op == "max" and d:
            d[-1] = (d[-1][0], max(d[-1][1], v))
            s[-1] = (s[-1][0], max(s[-1][1], v))
        else:
            d.append((float(t), v))
            s.append((t, v))
        assert len(s) == len(d) and bool(s) == bool(d)
    assert list(s) == list(d)
    if d:
        assert s[0] == d[0] and s[-1] == d[-1]
    with pytest.raises(IndexError):
        s[len(d)]


def test_a_sample_that_comes_after_its_seconds_line_neither_repeats_it_nor_holds_later_seconds():
    """A monitor sample for a second whose line is written already updates the peaks only: it made a
    second line for that second (no operations) that held every later line back for the grace."""
    from loadgen.config import ResourceThresholds
    from loadgen.engine import outcome as outcome_mod
    from loadgen.engine.load import RunPlan
    from loadgen.engine.messages import ResultBatch, Sample

    out = outcome_mod.RunOutcome(plan=RunPlan(concurrency=1, duration_s=60), thresholds=ResourceThresholds())
    seconds = outcome_mod.Seconds(out, "main")
    t = 1_000_000

    def batch(sec):
        return ResultBatch(index=0, second=sec, started=5, succeeded=5, failed=0, dropped=0, in_flight=1,
                           latency=None)

    def sample(at, cpu):
        return Sample(t=at, pool_memory_mb=10.0, pool_rss_mb=10.0, pool_cpu_percent=cpu, cpu_percent=cpu,
                      per_cpu=[cpu], available_mb=1000.0, swap_used_mb=0.0, processes={}, io={})

    seconds.add_batch(batch(t))
    assert [r["t"] for r in seconds.due(t + 1.01, {0})] == [t]
    seconds.add_sample(sample(t + 0.9, 99.0))  # late: its second is written
    seconds.add_batch(batch(t + 1))
    assert [r["t"] for r in seconds.due(t + 2.01, {0})] == [t + 1]  # not held back by a line for t
    assert out.peak_cpu_percent == 99.0
    assert [r["t"] for r in out.seconds] == [t, t + 1]
    seconds.add_batch(batch(t))  # a worker's batch that came after its second's line: written at once
    assert [(r["t"], r["ops"]) for r in seconds.due(t + 2.02, {0, 1})] == [(t, 5)]


def test_a_second_before_the_pool_began_does_not_hold_the_first_loaded_one():
    """The monitor samples a second in which no worker ran yet; once every live worker has reported a
    later second (a worker ships its seconds in order), that second is final and written at once."""
    from loadgen.config import ResourceThresholds
    from loadgen.engine import outcome as outcome_mod
    from loadgen.engine.load import RunPlan
    from loadgen.engine.messages import ResultBatch, Sample

    out = outcome_mod.RunOutcome(plan=RunPlan(concurrency=2, duration_s=60), thresholds=ResourceThresholds())
    seconds = outcome_mod.Seconds(out, "main")
    t = 1_000_000
    seconds.add_sample(Sample(t=t + 0.98, pool_memory_mb=1.0, pool_rss_mb=1.0, pool_cpu_percent=5.0, cpu_percent=5.0,
                              per_cpu=[5.0], available_mb=1000.0, swap_used_mb=0.0))
    for w in (0, 1):
        seconds.add_batch(ResultBatch(index=w, second=t + 1, started=3, succeeded=3, failed=0, dropped=0, in_flight=1,
                                      latency=None))
    assert [r["t"] for r in seconds.due(t + 2.01, {0, 1})] == [t, t + 1]
    seconds.add_batch(ResultBatch(index=0, second=t + 2, started=3, succeeded=3, failed=0, dropped=0, in_flight=1,
                                  latency=None))
    assert seconds.due(t + 3.01, {0, 1}) == []  # worker 1 has not reported second t + 2: it waits

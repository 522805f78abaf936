import re

import pytest

from loadgen.criteria import Criterion, parse_all
from loadgen.errors import UsageError


@pytest.mark.parametrize("text,metrics,passed", [
    ("p99_ms < 500", {"p99_ms": 499.9}, True),
    ("p99_ms < 500", {"p99_ms": 500}, False),
    ("success_rate > 0.7", {"success_rate": 0.71}, True),
    ("success_rate > 70%", {"success_rate": 0.69}, False),
    ("throughput >= 100", {"throughput": 100}, True),
    ("breaches == 0", {"breaches": 1}, False),
    ("max_capacity >= 1", {}, False),  # a metric the run did not produce fails
])
def test_evaluate(text, metrics, passed):
    assert Criterion.parse(text).evaluate(metrics)[0] is passed


@pytest.mark.parametrize("bad", ["p98_ms < 1", "p99_ms <", "< 5", "p99_ms ~ 5", "p99_ms < abc", "", "success_rate > 1e999"])
def test_malformed_or_unknown_is_usage_error(bad):
    with pytest.raises(UsageError):
        Criterion.parse(bad)


def test_parse_all_keeps_parsed_and_str():
    cs = parse_all(["p99_ms<5", Criterion("throughput", ">", 1.0)])
    assert [str(c) for c in cs] == ["p99_ms < 5", "throughput > 1"]


def test_every_scenarios_default_criteria_parse():
    from loadgen import scenarios

    for name in scenarios.names():
        assert parse_all(scenarios.get(name).criteria), name


def test_every_latency_statistic_is_a_criterion_on_a_real_histogram():
    """p50 p90 p95 p99 p99.9 p99.99 min max mean: criteria name them (``p99.9_ms`` is ``p999_ms``), and
    the metrics of a run carry each, from its HDR histogram."""
    import random

    from loadgen.analysis import STATISTICS
    from loadgen.analysis.stats import Accounting, Histogram
    from loadgen.result import core_metrics

    rng = random.Random(3)
    values = [rng.randint(1_000, 100_000) for _ in range(20_000)]  # 1–100 ms, in µs
    h = Histogram()
    h.record_many(values)
    m = core_metrics(Accounting(dispatched=20_000, succeeded=20_000), h.summary_ms(), throughput=1.0,
                     peak_memory_mb=1.0, peak_cpu_percent=1.0, breaches=0)
    ordered = sorted(values)
    assert m["min_ms"] == pytest.approx(ordered[0] / 1000, rel=1e-3)
    assert m["p95_ms"] == pytest.approx(ordered[int(0.95 * len(ordered)) - 1] / 1000, rel=2e-3)
    assert m["mean_ms"] == pytest.approx(sum(values) / len(values) / 1000, rel=2e-3)
    assert m["min_ms"] < m["p50_ms"] < m["p90_ms"] < m["p95_ms"] < m["p99_ms"] <= m["p999_ms"] <= m["p9999_ms"] \
        <= m["max_ms"]
    for stat in STATISTICS:
        c = Criterion.parse(f"{stat}_ms <= {m[f'{stat}_ms']}")
        assert c.evaluate(m) == (True, m[f"{stat}_ms"])
    assert Criterion.parse("p99.9_ms < 1").metric == "p999_ms"
    assert Criterion.parse("p99.99_ms < 1").metric == "p9999_ms"
    with pytest.raises(UsageError, match="unknown metric 'p97_ms'"):
        Criterion.parse("p97_ms < 1")


@pytest.mark.parametrize("text, metric", [
    ("p95_ms{measure=llm_call} < 800", "p95_ms{measure=llm_call}"),
    ("p99.9_ms{ measure = a b } < 3", "p999_ms{measure=a b}"),
    ("count{measure=x} >= 10", "count{measure=x}"),
    ("checks{name=has_title} > 99%", "checks{name=has_title}"),
    ("checks > 0.9", "checks"),
])
def test_selectors_name_a_measurement_or_a_check(text, metric):
    c = Criterion.parse(text)
    assert c.metric == metric
    assert c.evaluate({metric: 1e9 if c.op in (">", ">=") else 0})[0]
    assert c.evaluate({})[0] is False  # a name the run never recorded fails


@pytest.mark.parametrize("text, says", [
    ("success_rate{measure=x} > 1", "success_rate cannot select {measure=…}"),
    ("p95_ms{zone=x} < 3", "unknown selector {zone=…}"),
    ("count > 3", "count needs {measure=NAME}"),
    ("p95_ms{measure=} < 3", "{measure=} names nothing"),
    ("checks{measure=x} > 3", "checks cannot select {measure=…}"),
])
def test_bad_selectors_are_usage_errors(text, says):
    with pytest.raises(UsageError, match=re.escape(says)):
        Criterion.parse(text)

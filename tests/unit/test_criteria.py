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


# ---------------------------------------------------------------- units, selectors with any name (issue #23)

@pytest.mark.parametrize("text, metric, limit", [
    ("p95_ms < 50ms", "p95_ms", 50.0),
    ("p95_ms < 0.05s", "p95_ms", 50.0),
    ("p95_ms<250us", "p95_ms", 0.25),
    ("p99_ms <= 1.5 s", "p99_ms", 1500.0),
    ("max_ms < 2m", "max_ms", 120_000.0),
    ("recovery_time_seconds < 500ms", "recovery_time_seconds", 0.5),
    ("success_rate > 95%", "success_rate", 0.95),
    ("p95_ms{op=browse} < 0.2s", "p95_ms{op=browse}", 200.0),
])
def test_limits_take_units(text, metric, limit):
    c = Criterion.parse(text)
    assert (c.metric, c.limit) == (metric, pytest.approx(limit))


@pytest.mark.parametrize("text, says", [
    ("success_rate > 5ms", "success_rate is not a time, so its limit takes no unit 'ms'"),
    ("peak_memory_mb < 5GB", "unknown unit 'GB'"),
    ("p95_ms < 5 parsecs", "unknown unit 'parsecs'"),
    ("p95_ms < fast", "expected METRIC OP NUMBER[UNIT]"),
])
def test_a_unit_that_does_not_fit_is_a_usage_error_that_names_the_units(text, says):
    with pytest.raises(UsageError) as e:
        Criterion.parse(text)
    assert says in str(e.value)
    if "unit" in says and "not a time" not in says:
        assert "us, ms, s, m, h" in str(e.value)


@pytest.mark.parametrize("text, name", [
    ("p95_ms{op=GET /drafts/{id}} < 50", "GET /drafts/{id}"),
    ('p95_ms{op="GET /drafts/{id}"} < 50', "GET /drafts/{id}"),
    ("p95_ms{op='POST /a b/{x}/{y}'} < 50ms", "POST /a b/{x}/{y}"),
    ('p95_ms{op=" padded "} < 50', " padded "),  # quoted: kept exactly
    ("success_rate{op=a=b} > 0.9", "a=b"),
    ("checks{name=has {title}} > 99%", "has {title}"),
])
def test_selector_names_may_hold_spaces_slashes_braces(text, name):
    c = Criterion.parse(text)
    label = c.metric[:c.metric.index("{")]
    assert c.selector[1] == name
    key = f"{label}{{{c.selector[0]}={name}}}"
    assert c.metric == key
    assert Criterion.parse(str(c)).metric == key  # the report's text parses back to the same criterion
    assert c.evaluate({key: 1e9 if c.op in (">", ">=") else 0.0})[0]


def test_an_op_the_mix_lacks_names_the_ops_it_has():
    from loadgen.criteria import check_ops

    cs = parse_all(["p95_ms{op=GET /x/{id}} < 5", "p99_ms < 5", "p95_ms{measure=zzz} < 1"])
    check_ops(cs, ["GET /x/{id}", "b"])  # every {op=} is an op of the mix; measures are not checked here
    with pytest.raises(UsageError, match=r"selects op 'read', which this run does not have \(its ops: "
                                         r"'make_read', 'make_write'\)"):
        check_ops(parse_all(["p95_ms{op=read} < 50"]), ["make_read", "make_write"], "--criterion")
    with pytest.raises(UsageError, match="this run has no mix of ops"):
        check_ops(parse_all(["p95_ms{op=read} < 50"]), [])


def test_a_name_never_recorded_says_which_names_were():
    metrics = {"p95_ms{measure=db}": 3.0, "count{measure=cache}": 9, "checks{name=ok}": 1.0, "p95_ms": 2.0}
    d = Criterion.parse("p95_ms{measure=dbb} < 5").to_dict(metrics)
    assert (d["passed"], d["value"]) == (False, None)
    assert d["why"] == "no measure 'dbb' was recorded (recorded: 'cache', 'db')"
    assert Criterion.parse("checks{name=nope} > 0.5").to_dict(metrics)["why"] == \
        "no check 'nope' was recorded (recorded: 'ok')"
    assert Criterion.parse("max_capacity > 1").to_dict(metrics)["why"] == "the run did not produce this metric"
    assert "why" not in Criterion.parse("p95_ms < 5").to_dict(metrics)

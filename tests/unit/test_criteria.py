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

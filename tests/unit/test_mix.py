"""``workload.mix``: parsing a mix, the weighted sequence, what a mix logs, and merging shards' ops."""

import collections

import pytest

from loadgen.analysis.stats import Histogram
from loadgen.errors import UsageError
from loadgen.workload import mix
from loadgen.workload.results import outcome


@pytest.mark.parametrize("weights", [[1, 9], [3, 2, 5], [1], [7, 7], [1, 1, 1, 97], [10000, 1]])
def test_sequence_holds_the_weights_exactly_and_spreads_them(weights):
    seq = mix.sequence(weights)
    assert len(seq) == sum(weights)
    assert collections.Counter(seq) == {i: w for i, w in enumerate(weights)}
    # Spread: in any window of the sequence, an op's count is within 1 of its share of the window.
    for n in (min(10, len(seq)), len(seq) // 3 or 1):
        got = collections.Counter(seq[:n])
        for i, w in enumerate(weights):
            assert abs(got[i] - n * w / sum(weights)) <= 1.0 + 1e-9


def test_a_nine_to_one_mix_over_100000_operations_of_two_workers_is_within_one_percent():
    names = ["login", "browse"]
    for worker in range(2):
        m = mix.Mix([lambda _: None, lambda _: None], [1, 9], worker, outcome)
        for _ in range(50_000):
            m(None)
    got = mix.drain(names)
    share = len(got["login"][0]) / 100_000
    assert abs(share - 0.1) / 0.1 < 0.01 and got["browse"][1] == 90_000


def test_a_mix_logs_each_ops_time_outcome_and_error_and_reraises():
    def boom(_):
        raise KeyError("x")

    class Failed:
        state, failed_stage, reason = "failed", "draft", "rate-limited"

    m = mix.Mix([lambda _: None, boom, lambda _: Failed()], [1, 1, 1], 0, outcome)
    raised = 0
    for _ in range(30):
        try:
            m(None)
        except KeyError:
            raised += 1
    got = mix.drain(["ok", "boom", "flowish"])
    assert raised == 10
    assert got["ok"][1:] == (10, 0, {})
    assert got["boom"][1:] == (0, 10, {"KeyError": 10})
    assert got["flowish"][1:] == (0, 10, {"draft: rate-limited": 10})
    assert mix.drain(["ok"]) == {}


@pytest.mark.parametrize("items, says", [
    (["a:f@0"], "weight must be a whole number from 1"),
    ([{"target": "a:f", "weight": 0}], "weight must be a whole number from 1"),
    ([{"target": "a:f", "weight": 1.5}], "weight must be a whole number"),
    ([{"target": "a:f", "wieght": 2}], "unknown key 'wieght'"),
    ([{"target": "a:f", "name": "tab\there"}], "op name 'tab"),
    ([{"target": "a:f", "name": " padded"}], "op name ' padded'"),
    (["a:f@1", "b:f@2"], "op name 'f' is already op 0's"),
    (["nocolon@3"], "expected target"),
    ([], "no op given"),
    ([{"target": "a:f", "args": [1]}], "expected a table of keyword arguments"),
    ([3], "expected \"MOD:fn@WEIGHT\""),
])
def test_bad_mixes_are_usage_errors(items, says):
    with pytest.raises(UsageError, match=says.replace("(", r"\(").replace(")", r"\)")):
        mix.parse_mix(items, "--target")


def test_ops_are_named_after_their_function_unless_named():
    ops = mix.parse_mix(["shop.py:login@1", {"target": "shop:Cart.add", "weight": 3, "name": "cart-add",
                                            "args": {"n": 2}}, "shop:browse"], "ops")
    assert [(o.name, o.ref, o.weight, o.args) for o in ops] == [
        ("login", "shop.py:login", 1, {}), ("cart-add", "shop:Cart.add", 3, {"n": 2}), ("browse", "shop:browse", 1, {})]


def test_merged_summaries_add_counts_and_take_the_union_histogram():
    a = {"browse": {"target": "t:browse", "weight": 9, "operations": 90, "succeeded": 80, "failed": 10,
                    "throughput": 9.0, "errors": {"KeyError": 10}}}
    b = {"browse": {"target": "t:browse", "weight": 9, "operations": 10, "succeeded": 10, "failed": 0,
                    "throughput": 1.0, "errors": {}}}
    h = Histogram()
    h.record_many([1000, 2000])
    merged = mix.merge_summaries([a, b], lambda name: h)
    assert merged["browse"]["operations"] == 100 and merged["browse"]["success_rate"] == 0.9
    assert merged["browse"]["throughput"] == 10.0 and merged["browse"]["errors"] == {"KeyError": 10}
    assert merged["browse"]["latency_ms"] == h.summary_ms()
    metrics = mix.op_metrics(merged)
    assert metrics["success_rate{op=browse}"] == 0.9 and abs(metrics["error_rate{op=browse}"] - 0.1) < 1e-12
    assert metrics["p50_ms{op=browse}"] == h.summary_ms()["p50"]


@pytest.mark.parametrize("text, name, ref, weight", [
    ("read=lg.py:make_read@9", "read", "lg.py:make_read", 9),
    ("GET /drafts/{id}=shop.py:draft", "GET /drafts/{id}", "shop.py:draft", 1),
    ("user@home=shop:f@2", "user@home", "shop:f", 2),
    ("shop.py:browse@3", "browse", "shop.py:browse", 3),
])
def test_an_op_is_named_on_the_command_line_as_in_a_plan(text, name, ref, weight):
    (op,) = mix.parse_mix([text], "--target")
    assert (op.name, op.ref, op.weight, op.named) == (name, ref, weight, name != "browse")
    assert mix.is_mix_item(text) is (weight != 1 or op.named)


def test_a_factory_mix_must_name_its_ops_never_after_the_factory():
    ops = mix.parse_mix(["lg.py:make_read@1", "write=lg.py:make_write@1"], "--target")
    with pytest.raises(UsageError, match=r"--target\[0\]: lg.py:make_read is a factory .*"
                                         r"e.g. --target \"read=lg.py:make_read@1\""):
        mix.check_factory_names(ops, "--target")
    mix.check_factory_names(mix.parse_mix([{"target": "lg.py:make_read", "name": "read"}], "ops"), "ops")


def test_the_op_that_returned_no_result_is_the_one_named():
    from loadgen.workload import results

    results.on_misuse(None)
    m = mix.Mix([lambda _: 1, lambda _: (lambda: 1)], [1, 1], 0, results.outcome, refs=["a.py:ok", "a.py:make"])
    for _ in range(2):
        m(None)
    mix.drain(["ok", "make"])
    assert results.misused == ["a function", "a.py:make"]
    results.on_misuse(None)

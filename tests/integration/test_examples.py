"""The examples in examples/ run as a user would run them: `loadgen run --config examples/X.toml`."""

import json
import os

import pytest

from _helpers import ROOT

EXAMPLES = os.path.join(ROOT, "examples")


def _plan(name):
    return os.path.join(EXAMPLES, name)


def _report(out):
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name,labels", [
    ("text_pipeline.toml", "text-search"),
    ("async_service.toml", "closed-32, open-200"),
    ("leaky_cache.toml", "sustained_load"),
    ("shop.toml", "shoppers, buyers"),
    ("http_service.toml", "drafts, kickoff-stream"),
])
def test_every_example_plan_validates(cli, name, labels):
    code, out, err = cli.run("validate", _plan(name), timeout=60)
    assert (code, err) == (0, "")
    assert out.strip().endswith(f"OK — {len(labels.split(', '))} scenario{'s' if ',' in labels else ''} ({labels})")


@pytest.mark.slow
def test_text_pipeline_cpu_bound_with_rapidfuzz(cli, tmp_path):
    pytest.importorskip("rapidfuzz")
    out = str(tmp_path / "run")
    code, stdout, err = cli.run("run", "--config", _plan("text_pipeline.toml"), "--out", out, "--quiet", timeout=90)
    assert code == 0, stdout + err
    r = _report(out)
    assert r["metadata"]["kind"] == "plan text-pipeline"
    d = r["detailed_metrics"][0]
    assert d["test_name"] == "text-search" and d["success"]
    acc = d["accounting"]
    assert acc["succeeded"] > 20 and acc["dispatched"] == acc["succeeded"] + acc["failed"]
    # the junk queries of data/queries.jsonl fail, classified by exception type
    assert acc["failed"] > 0 and set(d["errors"]) == {"LookupError"}
    assert any("LookupError" in tb for tb in d["tracebacks"]["LookupError"])


@pytest.mark.slow
def test_async_service_closed_then_open_in_one_report(cli, tmp_path):
    out = str(tmp_path / "run")
    code, stdout, err = cli.run("run", "--config", _plan("async_service.toml"), "--out", out, "--quiet", timeout=90)
    assert code == 0, stdout + err
    r = _report(out)
    closed, open_ = r["detailed_metrics"]
    assert (closed["test_name"], open_["test_name"]) == ("closed-32", "open-200")
    assert closed["success"] and open_["success"]
    # I/O-bound: 32 in flight from 2 processes (one connection per slot), well past what 2 cores
    # would do one at a time at ~20 ms each
    assert closed["max_concurrent_operations"] >= 16
    assert closed["throughput_ops_per_sec"] > 200
    assert open_["response_time_ms"] is not None  # open model: latency from the intended start
    assert set(closed["errors"]) <= {"ServiceUnavailable"}
    assert r["accounting"]["dispatched"] == closed["accounting"]["dispatched"] + open_["accounting"]["dispatched"]


@pytest.mark.slow
def test_leaky_flow_is_caught_by_sustained_load(cli, tmp_path):
    out = str(tmp_path / "run")
    code, stdout, err = cli.run("run", "--config", _plan("leaky_cache.toml"), "--out", out, "--quiet", timeout=90)
    assert code == 1, stdout + err
    r = _report(out)
    d = r["detailed_metrics"][0]
    assert d["leak"]["leak"] is True, d["leak"]
    assert d["leak"]["slope_mb_per_s"] > 1 and d["leak"]["rss_slope_mb_per_s"] > 1
    failed = [c["criterion"] for c in d["criteria"] if not c["passed"]]
    assert failed == ["leak_detected == 0"]
    assert not r["breaches"]  # the verdict caught it, not the growth-rate kill switch


def test_shop_mix_and_checkouts_in_parallel(cli, tmp_path):
    out = str(tmp_path / "run")
    code, stdout, err = cli.run("run", "--config", _plan("shop.toml"), "--out", out, "--quiet", timeout=90)
    assert code == 0, stdout + err
    shoppers, buyers = _report(out)["detailed_metrics"]
    ops = shoppers["ops"]
    assert abs(ops["login"]["operations"] * 9 - ops["browse"]["operations"]) <= 9  # 1:9, within a sequence
    assert set(ops["browse"]["errors"]) <= {"LookupError"} and not ops["login"]["errors"]
    assert set(buyers["measures_ms"]) == {"cart", "payment"}
    receipts = buyers["checks"]["has_receipt"]
    assert receipts["passes"] + receipts["fails"] == buyers["accounting"]["succeeded"]

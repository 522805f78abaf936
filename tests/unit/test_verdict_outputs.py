"""Issue #23, outputs' rows, without processes: default criteria, the atomic claim of a run
directory, compare's ranges and the failed components' lines."""

import copy
import json
import os
from types import SimpleNamespace

import pytest

from _helpers import TESTS
from loadgen import streams
from loadgen.criteria import Criterion
from loadgen.errors import OutputError
from loadgen.report.compare import figure_out_of_range
from loadgen.report.text import failed_components, failure_lines, render_summary
from loadgen.streams import EVENTS, RunDirTaken
from loadgen.workload.targets import TargetSpec

SAMPLE = os.path.join(TESTS, "data", "sample_run", "report.json")


# ---------------------------------------------------------------- default criteria


def test_a_default_criterion_says_so_in_its_row_and_a_parsed_one_does_not():
    c = Criterion.parse("error_rate == 0")
    assert not c.default and "default" not in c.to_dict({"error_rate": 0.0})
    row = Criterion("error_rate", "==", 0.0, default=True).to_dict({"error_rate": 0.5})
    assert row["default"] is True and row["passed"] is False and row["value"] == 0.5


def _session(target, criteria=None):
    return SimpleNamespace(target=target, criteria=criteria)


@pytest.mark.parametrize("scenario, target, given, expect", [
    ("load", TargetSpec(ref="t.py:op"), None, [("error_rate == 0", True)]),
    ("load", TargetSpec(mix=("x",)), None, [("error_rate == 0", True)]),
    ("load", TargetSpec(), None, []),  # the embedded flow injects failures on purpose: no default
    ("load", TargetSpec(ref="t.py:op"), ["p99_ms < 5"], [("p99_ms < 5", False)]),
    ("concurrent_load", TargetSpec(), None, [("success_rate > 0.7", True)]),
    ("concurrent_load", TargetSpec(ref="t.py:op"), ["crashed == 0"], [("crashed == 0", False)]),
])
def test_the_users_criteria_replace_the_scenarios_marked_default_ones(scenario, target, given, expect):
    from loadgen import scenarios

    got = scenarios.get(scenario).criteria_for(_session(target, given))
    assert [(str(c), c.default) for c in got] == expect


def test_abort_marking_keeps_the_default_mark():
    from loadgen import options as opts
    from loadgen import scenarios

    defaults = scenarios.get("load").criteria_for(_session(TargetSpec(ref="t.py:op")))
    layer = opts.mark_abort(opts.Layer({"abort_on_fail": True}), defaults)
    (c,) = layer["criteria"]
    assert c.abort_on_fail and c.default


# ---------------------------------------------------------------- the run directory's claim


def test_the_claim_is_the_runs_events_stream_and_a_second_claim_is_refused(tmp_path):
    d = str(tmp_path / "out")
    os.mkdir(d)  # an existing empty directory (--out /tmp) is taken
    assert streams.prepare_run_dir(d) == d
    assert os.listdir(d) == [EVENTS] and os.path.getsize(os.path.join(d, EVENTS)) == 0
    with pytest.raises(RunDirTaken, match="already holds a run"):
        streams.prepare_run_dir(d)


def test_the_claim_is_atomic_not_check_then_create(tmp_path, monkeypatch):
    """Another command claims the directory between this one's check and its claim: refused, its
    events.jsonl untouched (a check-then-create would have taken the directory too)."""
    d = str(tmp_path / "out")
    real = streams.tempfile.mkstemp

    def other_command_claims_meanwhile(*a, **kw):
        with open(os.path.join(d, EVENTS), "x") as f:
            f.write('{"t":1,"type":"phase"}\n')
        return real(*a, **kw)

    monkeypatch.setattr(streams.tempfile, "mkstemp", other_command_claims_meanwhile)
    with pytest.raises(RunDirTaken, match="just claimed by another run"):
        streams.prepare_run_dir(d)
    with open(os.path.join(d, EVENTS)) as f:
        assert f.read() == '{"t":1,"type":"phase"}\n'


def test_default_run_dirs_of_one_second_get_a_suffix(tmp_path, monkeypatch):
    monkeypatch.setattr(streams, "default_run_dir", lambda name, root: os.path.join(root, f"STAMP-{name}"))
    root = str(tmp_path / "res")
    got = [streams.new_run_dir("load", root) for _ in range(3)]
    assert got == [os.path.join(root, n) for n in ("STAMP-load", "STAMP-load-2", "STAMP-load-3")]


def test_an_unwritable_out_is_still_an_output_error_not_a_claim(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot write there") as e:
        streams.prepare_run_dir(str(tmp_path / "file"))
    assert not isinstance(e.value, RunDirTaken)


# ---------------------------------------------------------------- compare's ranges


def _detail():
    with open(SAMPLE) as f:
        return json.load(f)["detailed_metrics"][0]


def test_a_real_report_is_in_range():
    assert figure_out_of_range(_detail()) is None


@pytest.mark.parametrize("path, value, says", [
    (("performance_metrics", "success_rate"), 1e308, "performance_metrics.success_rate = 1e+308, not a rate in 0–1"),
    (("performance_metrics", "error_rate"), -0.1, "not a rate in 0–1"),
    (("success_rate",), 1.5, "success_rate = 1.5, not a rate in 0–1"),
    (("latency_ms", "p99"), -1e308, "latency_ms.p99 = -1e+308, not a finite number ≥ 0"),
    (("latency_ms", "p50"), "12", 'latency_ms.p50 = 12, not a finite number ≥ 0'),
    (("performance_metrics", "p95_ms"), -1, "performance_metrics.p95_ms = -1, not a finite number ≥ 0"),
    (("throughput_ops_per_sec",), -3.0, "throughput_ops_per_sec = -3.0, not a finite number ≥ 0"),
    (("total_operations",), 2.5, "total_operations = 2.5, not a whole number ≥ 0"),
    (("accounting", "succeeded"), True, "accounting.succeeded = true, not a whole number ≥ 0"),
    (("latency_ms",), [1], "latency_ms is not an object"),
    (("noise", "p99_ms", "ci95"), [5, 1], "noise.p99_ms.ci95 = [5,1], not an interval"),
    (("noise", "success_rate"), {"successes": 9, "trials": 3}, "successes 9 > trials 3"),
    (("noise", "throughput", "sd"), -1.0, "noise.throughput.sd = -1.0, not a finite number ≥ 0"),
])
def test_a_figure_out_of_range_is_named(path, value, says):
    d = _detail()
    d.setdefault("noise", {}).setdefault("throughput", {"n": 3, "mean": 1.0, "sd": 0.5})
    target = d
    for k in path[:-1]:
        target = target.setdefault(k, {})
    target[path[-1]] = value
    assert says in (figure_out_of_range(d) or ""), figure_out_of_range(d)


# ---------------------------------------------------------------- failed components, named


def _report(**detail):
    with open(SAMPLE) as f:
        report = json.load(f)
    d = report["detailed_metrics"][0]
    d.update(detail)
    report["component_results"][0]["status"] = "PASSED" if d["success"] else "FAILED"
    return report


def test_each_failed_criterion_with_its_value_the_default_marked():
    r = _report(success=False, stop_reason="", exit_code=1, error_messages=[], criteria=[
        {"criterion": "success_rate > 0.7", "default": True, "value": 0.5, "passed": False},
        {"criterion": "p99_ms < 5", "value": None, "passed": False},
        {"criterion": "crashed == 0", "value": 0, "passed": True}])
    assert failure_lines(r) == ["concurrent_load — success_rate > 0.7 (default) failed (measured 0.5); "
                                "p99_ms < 5 failed (measured no value)"]
    text = render_summary(r)
    assert "FAILED COMPONENTS" in text and "FAIL " + failure_lines(r)[0] in text
    assert "success_rate > 0.7 (default)" in text.split("FAILED COMPONENTS")[1]


def test_a_stop_or_nothing_succeeded_is_a_reason_and_a_pass_is_none():
    from loadgen.result import NONE_SUCCEEDED

    r = _report(success=False, stop_reason="worker restart limit (10) reached", exit_code=1,
                error_messages=[NONE_SUCCEEDED], criteria=[])
    assert failed_components(r) == [("concurrent_load", ["stopped: worker restart limit (10) reached",
                                                         NONE_SUCCEEDED])]
    ok = _report(success=True, criteria=[{"criterion": "x > 0", "value": 1, "passed": True}])
    assert failed_components(ok) == [] and "FAILED COMPONENTS" not in render_summary(ok)


def test_the_console_names_the_failed_ones_even_quiet(capsys):
    from loadgen import api, cli

    r = _report(success=False, stop_reason="", exit_code=1, error_messages=[], criteria=[
        {"criterion": "success_rate > 0.7", "default": True, "value": 0.5, "passed": False}])
    r["executive_summary"].update(passed_components=0, total_components=1)
    rep = api.Report(r, [], 1, "RUN")
    cli._print_outcome(rep, quiet=True)
    assert capsys.readouterr().out.splitlines() == [
        "FAIL concurrent_load — success_rate > 0.7 (default) failed (measured 0.5)",
        "loadgen: 0/1 passed (failed: concurrent_load), exit 1; reports in RUN"]
    cli._print_outcome(api.Report(copy.deepcopy(r), [], 1, "RUN"), quiet=False)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FAIL concurrent_load — ") and out[1].startswith("operations ")


# ---------------------------------------------------------------- the APIs refuse what they cannot honour


@pytest.mark.parametrize("kw, says", [
    ({"metrics_port": 9999}, "--metrics-port with --cluster: not supported yet"),
    ({"log_level": "DEBUG"}, "fleet.run(log_level=...): not taken by the API"),
    ({"parallel": True}, "fleet.run(parallel=...): not taken by the API"),
])
def test_the_fleet_api_refuses_before_contacting_a_cluster(kw, says):
    from loadgen import fleet
    from loadgen.errors import UsageError

    with pytest.raises(UsageError, match=None) as e:
        fleet.run("load", target="_targets:noop", cluster="tcp://127.0.0.1:1", **kw)
    assert says in str(e.value)

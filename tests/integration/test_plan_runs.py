"""TOML plans run for real through the CLI: two scenarios into one report, a lost abort criterion."""

import json
import time

import pytest

from _helpers import write


@pytest.mark.slow
def test_two_scenario_plan_runs_end_to_end_into_one_report(cli, tmp_path):
    plan = write(tmp_path, """
        name = "e2e"
        target = "_targets:sleep_ms"
        seed = 5
        [target_args]
        ms = 2
        [thresholds]
        max_cpu_percent = 100

        [[scenario]]
        name = "concurrent_load"
        concurrency = 4
        duration = "1s"
        criteria = ["success_rate > 0.99", "operations > 50"]

        [[scenario]]
        name = "sustained_load"
        label = "open"
        rate = 40
        duration = "1s"
        criteria = ["success_rate > 0.99", "operations > 10"]
    """)
    out = tmp_path / "run"
    t0 = time.monotonic()
    code, stdout, err = cli.run("run", "--config", plan, "--out", str(out), timeout=60)
    assert code == 0, stdout + err
    assert time.monotonic() - t0 < 15
    assert "PASS concurrent_load" in stdout and "PASS open" in stdout
    r = json.loads((out / "report.json").read_text())
    assert r["metadata"]["kind"] == "plan e2e" and r["metadata"]["seed"] == 5 and r["exit_code"] == 0
    assert [c["component_name"] for c in r["component_results"]] == ["concurrent_load", "open"]
    assert r["accounting"]["dispatched"] == sum(d["accounting"]["dispatched"] for d in r["detailed_metrics"])
    acc = r["detailed_metrics"][1]["accounting"]  # open model, 40/s for 1 s: every arrival started or dropped
    assert acc["dispatched"] + acc["dropped"] == pytest.approx(40, abs=1)
    # the streams rebuild into the same components
    assert cli.run("report", str(out), timeout=60)[0] == 0
    assert [c["component_name"] for c in json.loads((out / "report.json").read_text())["component_results"]] == \
        ["concurrent_load", "open"]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "plan"])
def test_a_lost_abort_criterion_stops_a_30s_run_within_3s(cli, tmp_path, how):
    out = tmp_path / "run"
    if how == "flag":
        argv = ["run", "sustained_load", "--duration", "30s", "--target", "_targets:fail_always",
                "--criterion", "success_rate > 0.9", "--abort-on-fail", "--max-cpu-percent", "100"]
    else:
        plan = write(tmp_path, """
            target = "_targets:fail_always"
            [thresholds]
            max_cpu_percent = 100
            [[scenario]]
            name = "sustained_load"
            duration = "30s"
            criteria = [{expr = "success_rate > 0.9", abort_on_fail = true}, "p99_ms < 1000"]
            [[scenario]]
            name = "concurrent_load"
            duration = "30s"
        """)
        argv = ["run", "--config", plan]
    code, stdout, err = cli.run(*argv, "--out", str(out), timeout=60)
    assert code == 1, stdout + err
    r = json.loads((out / "report.json").read_text())
    assert r["exit_code"] == 1 and len(r["detailed_metrics"]) == 1  # the plan's second scenario never ran
    d = r["detailed_metrics"][0]
    assert d["stop_reason"].startswith("criterion success_rate > 0.9 lost early")
    assert d["duration_seconds"] <= 3.0 and r["metadata"]["duration_seconds"] <= 3.5
    assert "lost early" in err

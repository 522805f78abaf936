"""``parallel = true`` plans: the scenarios run at the same time, each with its own load model and
processes, into one run directory and one report; signals and a lost entry leave a report and no process."""

import json
import signal
import time

import psutil

from _helpers import wait_for, write

PLAN = """
name = "shop"
parallel = true
[[scenario]]
name = "load"
label = "browsers"
target = "{tests}/_targets.py:sleep_ms"
concurrency = 3
duration = "{d1}"
criteria = ["p95_ms < 1000"]
[[scenario]]
name = "load"
label = "buyers"
target = "{tests}/_targets.py:login"
rate = 40
duration = "{d2}"
criteria = ["success_rate > 0.9"]
"""


def _plan(tmp_path, d1="3s", d2="2s"):
    import os

    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write(tmp_path, PLAN.format(tests=tests, d1=d1, d2=d2))


def _events(tmp_path):
    return [json.loads(x) for x in (tmp_path / "r" / "events.jsonl").read_text().splitlines()]


def test_the_scenarios_run_at_the_same_time_into_one_report(cli, tmp_path):
    _plan(tmp_path)
    t0 = time.monotonic()
    code, out, err = cli.run("run", "--config", "plan.toml", "--out", "r", "--quiet")
    wall = time.monotonic() - t0
    assert code == 0, err + out
    starts = {e["phase"]: e["t"] for e in _events(tmp_path) if e.get("type") == "phase" and e.get("name") == "pool_ready"}
    ends = {e["phase"]: e["t"] for e in _events(tmp_path) if e.get("type") == "phase" and e.get("name") == "end"}
    assert set(starts) == {"browsers: load", "buyers: load"}  # each entry's phases carry its label
    assert starts["buyers: load"] < ends["browsers: load"] and starts["browsers: load"] < ends["buyers: load"]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [d["test_name"] for d in report["detailed_metrics"]] == ["browsers", "buyers"]  # the plan's order
    browsers, buyers = report["detailed_metrics"]
    assert browsers["response_time_ms"] is None and buyers["response_time_ms"] is not None  # own load models
    assert report["accounting"]["succeeded"] == browsers["accounting"]["succeeded"] + buyers["accounting"]["succeeded"]
    phases = {json.loads(x)["phase"] for x in (tmp_path / "r" / "timeseries.jsonl").read_text().splitlines()}
    assert phases == {"browsers: load", "buyers: load"}
    assert wall < 3 + 2 + 2.5  # sequential would take both durations plus two pool starts
    assert not cli.survivors()


def test_a_sigint_stops_every_entry_and_leaves_the_report(cli, tmp_path):
    _plan(tmp_path, d1="60s", d2="60s")
    p = cli.start("run", "--config", "plan.toml", "--out", "r", "--quiet")
    ts = tmp_path / "r" / "timeseries.jsonl"
    assert wait_for(lambda: ts.exists() and {"browsers: load", "buyers: load"} <= {
        json.loads(x)["phase"] for x in ts.read_text().splitlines()}, timeout=30)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [d["exit_code"] for d in report["detailed_metrics"]] == [130, 130]
    assert all(d["total_operations"] > 0 for d in report["detailed_metrics"])
    assert not cli.survivors()


def test_an_entry_killed_outright_is_a_failed_component_and_the_other_finishes(cli, tmp_path):
    _plan(tmp_path, d1="4s", d2="60s")
    p = cli.start("run", "--config", "plan.toml", "--out", "r", "--quiet")
    ts = tmp_path / "r" / "timeseries.jsonl"
    assert wait_for(lambda: ts.exists() and "buyers: load" in ts.read_text(), timeout=30)
    (victim,) = [c for c in psutil.Process(p.pid).children() if c.cmdline()[:1] == ["loadgen: entry buyers"]]
    victim.send_signal(signal.SIGKILL)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1, err
    browsers, buyers_d = json.loads((tmp_path / "r" / "report.json").read_text())["detailed_metrics"]
    assert browsers["success"] and browsers["exit_code"] == 0
    assert not buyers_d["success"] and "ended without a result (killed by signal 9)" in buyers_d["stop_reason"]
    assert not cli.survivors()

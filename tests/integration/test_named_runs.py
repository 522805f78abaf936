"""``loadgen.measure`` and ``loadgen.check`` from inside operations: exact counts across workers, every
report format, criteria that name them, and a killed run's report that keeps its checks."""

import json
import signal
import time

from _helpers import parse_prom, wait_for


def test_measures_and_checks_merge_across_workers_into_every_report_and_criteria(cli, tmp_path):
    n = 240
    code, out, err = cli.run(
        "run", "--target", "_targets:measured", "--operations", str(n), "--concurrency", "4", "--workers", "2",
        "--criterion", f"count{{measure=nap}} == {n}", "--criterion", "p50_ms{measure=nap} >= 2",
        "--criterion", "checks{name=always} > 0.99", "--criterion", "checks{name=never} > 0.5",
        "--criterion", "checks == 0.5", "--out", "r", "--prom-textfile", str(tmp_path / "m.prom"), "--quiet")
    assert code == 1, err  # checks{name=never} fails; the others pass
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (d,) = report["detailed_metrics"]
    assert d["accounting"]["succeeded"] == n  # a failed check does not fail its operation
    assert d["checks"] == {"always": {"passes": n, "fails": 0, "rate": 1.0},
                           "never": {"passes": 0, "fails": n, "rate": 0.0}}
    assert d["measures_ms"]["nap"]["count"] == n and d["measures_ms"]["nap"]["p50"] >= 2
    assert "measure:nap" in d["histograms"]
    verdicts = {c["criterion"]: c["passed"] for c in d["criteria"]}
    assert verdicts == {f"count{{measure=nap}} == {n}": True, "p50_ms{measure=nap} >= 2": True,
                        "checks{name=always} > 0.99": True, "checks{name=never} > 0.5": False, "checks == 0.5": True}
    text = (tmp_path / "r" / "summary.txt").read_text()
    assert "NAMED MEASUREMENTS" in text and "CHECKS (loadgen.check)" in text
    assert any(line.split()[:4] == ["load", "never", "0", str(n)] for line in text.splitlines())
    page = (tmp_path / "r" / "report.html").read_text()
    assert "id='checks'" in page and "id='measures'" in page
    junit = (tmp_path / "r" / "junit.xml").read_text()
    assert f'name="check.always" value="{n} passed, 0 failed"' in junit and 'name="measure.nap.count"' in junit
    fams = parse_prom((tmp_path / "m.prom").read_text())
    fails = {s.labels["name"]: s.value for s in fams["loadgen_check_fails"].samples}
    assert fails == {"always": 0, "never": n}
    counts = {s.labels["name"]: s.value for s in fams["loadgen_measure_seconds"].samples if s.labels["stat"] == "count"}
    assert counts == {"nap": n}


def test_the_flows_stages_are_named_measurements(cli, tmp_path):
    code, out, err = cli.run("run", "load", "--duration", "2s", "--concurrency", "4", "--criterion",
                             "p99_ms{measure=research} < 10000", "--out", "r", "--quiet")
    assert code == 0, err
    (d,) = json.loads((tmp_path / "r" / "report.json").read_text())["detailed_metrics"]
    assert list(d["measures_ms"]) == sorted(["input_validation", "research", "audience_align", "draft_generation",
                                             "style_validation", "quality_check"])
    assert d["measures_ms"]["input_validation"]["count"] >= d["measures_ms"]["research"]["count"] > 0


def test_a_killed_runs_report_keeps_the_checks_it_streamed(cli, tmp_path):
    p = cli.start("run", "--target", "_targets:measured", "--concurrency", "2", "--duration", "60s",
                  "--out", "r", "--quiet")
    ts = tmp_path / "r" / "timeseries.jsonl"
    assert wait_for(lambda: ts.exists() and ts.read_text().count('"checks"') >= 2, timeout=30)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    time.sleep(0.5)
    streamed = sum(json.loads(x).get("checks", {}).get("always", [0, 0])[0] for x in ts.read_text().splitlines())
    code, out, err = cli.run("report", str(tmp_path / "r"))
    assert code in (0, 1), err
    (d,) = json.loads((tmp_path / "r" / "report.json").read_text())["detailed_metrics"]
    assert d["checks"]["always"]["passes"] == streamed > 0 and d["checks"]["never"]["passes"] == 0

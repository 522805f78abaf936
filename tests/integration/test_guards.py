"""Guards in tiers and verdicts that count what was asked, on real runs."""

import json

from loadgen.config import ResourceThresholds
from loadgen.criteria import parse_all
from loadgen.engine.load import RunPlan
from loadgen.engine.runner import Runner
from loadgen.result import metrics_of, result_from_outcome
from loadgen.streams import read_jsonl
from loadgen.workload.targets import TargetSpec


def test_a_cpu_bound_run_at_full_concurrency_passes_and_reports_the_cpu(cli, tmp_path):
    """Saturating the CPU is what a CPU-bound load test does: exit 0, with the threshold event, the
    seed's resource_exhaustion_detected flag, a summary line and a recommendation that says the
    generator itself was saturated."""
    out = tmp_path / "run"
    code, stdout, err = cli.run("run", "concurrent_load", "--target", "_targets:spin_ms", "--concurrency", "2",
                                "--duration", "6s", "--max-cpu-percent", "60", "--out", str(out), "--quiet",
                                "--criterion", "success_rate > 0.9", timeout=60)
    assert code == 0, stdout + err
    events = read_jsonl(str(out / "events.jsonl"))
    exceeded = [e for e in events if e["type"] == "threshold_exceeded"]
    assert exceeded and exceeded[0]["metric"] == "cpu_percent" and exceeded[0]["action"] == "reported"
    assert not [e for e in events if e["type"] == "breach"]
    report = json.loads((out / "report.json").read_text())
    assert report["resource_exhaustion_detected"] is True
    assert report["detailed_metrics"][-1]["thresholds_exceeded"]
    assert "generator itself was saturated" in " ".join(report["recommendations"])
    assert "Threshold exceeded (reported, the run went on): cpu_percent" in (out / "summary.txt").read_text()


def test_kill_on_cpu_stops_the_same_run_with_exit_3(cli, tmp_path):
    code, stdout, err = cli.run("run", "concurrent_load", "--target", "_targets:spin_ms", "--concurrency", "2",
                                "--duration", "8s", "--max-cpu-percent", "60", "--kill-on", "cpu",
                                "--out", str(tmp_path / "run"), "--quiet", timeout=60)
    assert code == 3, stdout + err
    events = read_jsonl(str(tmp_path / "run" / "events.jsonl"))
    assert [e["metric"] for e in events if e["type"] == "breach"] == ["cpu_percent"]


def test_an_open_model_verdict_counts_the_dropped_arrivals():
    """2 slots of a 200 ms operation cannot start 50 arrivals a second: the success rate is over the
    arrivals asked for, so the default criterion fails, and the result says the rate was not reached."""
    p = RunPlan(rate=50, duration_s=2.0, workers=2, slots=1, max_lateness_s=0.05,
                target=TargetSpec(ref="_targets:sleep_ms", kwargs={"ms": 200}))
    out = Runner(p, ResourceThresholds(max_cpu_percent=100)).run()
    acc = out.accounting
    assert acc.dropped >= 60 and acc.failed == 0
    m = metrics_of(out)
    assert m["success_rate"] == acc.succeeded / (acc.completed + acc.dropped) < 0.5
    assert m["dropped_rate"] == acc.dropped / (acc.dispatched + acc.dropped)
    result = result_from_outcome("concurrent_load", out, parse_all(["success_rate > 0.7"]))
    assert not result.success and result.success_rate == m["success_rate"]
    from loadgen.report import build_report

    report = build_report([result], kind="concurrent_load", started_at=0.0, ended_at=1.0, thresholds={})
    assert report["exit_code"] == 1
    assert any("the target rate was not reached" in r for r in report["recommendations"])

"""Report formats without a run: junit.xml (schema), Prometheus textfile, report.html charts, compare
rows, atomic writes, the GitHub Actions example. Report dicts are built from ``StressTestResult``s;
no process is started (reports of a real run: ``tests/integration/test_reports.py``).
"""

import os

import pytest

from _helpers import ROOT, parse_prom, temp_leftovers
from loadgen.report import compare, junit, prom
from loadgen.report import html as report_html
from loadgen.errors import UsageError
from loadgen.report import build_report, write_reports
from loadgen.result import StressTestResult


def result(name="concurrent_load", success=True, exit_code=0, criteria=None, breaches=(), stop_reason="finished",
           performance_metrics=None, p99=250.0, throughput=100.0, stages=None):
    """A StressTestResult as a scenario would build it (no processes)."""
    criteria = criteria if criteria is not None else [
        {"criterion": "success_rate > 0.7", "metric": "success_rate", "op": ">", "limit": 0.7, "value": 0.95,
         "passed": True}]
    return StressTestResult(
        test_name=name, success=success, duration_seconds=6.0, max_concurrent_operations=20, peak_memory_mb=120.0,
        peak_cpu_percent=80.0, total_operations=600, successful_operations=570, failed_operations=30,
        throughput_ops_per_sec=throughput, performance_metrics=dict(performance_metrics or {"success_rate": 0.95}),
        criteria=criteria, accounting={"dispatched": 600, "succeeded": 570, "failed": 30, "timed_out": 0,
                                       "crashed": 0, "dropped": 0, "rejected": 0},
        latency_ms={"p50": 120.0, "p90": 200.0, "p99": p99, "p999": 300.0, "max": 320.0, "mean": 130.0, "count": 600},
        measures_ms=stages or {}, breaches=list(breaches), stop_reason=stop_reason, exit_code=exit_code)


def make_report(results, kind="concurrent_load", thresholds=None):
    return build_report(results, kind=kind, started_at=1_700_000_000.0, ended_at=1_700_000_010.0,
                        thresholds=thresholds or {"max_memory_mb": 1024.0, "max_cpu_percent": 90.0})


# ====================================================================== junit.xml


def test_junit_failures_carry_value_and_limit_and_breaches_are_errors(schema):
    failing = result("memory_pressure", success=False, exit_code=3, stop_reason="threshold breached: memory_mb",
                     criteria=[{"criterion": "p99_ms < 100", "metric": "p99_ms", "op": "<", "limit": 100.0,
                                "value": 250.0, "passed": False},
                               {"criterion": "max_capacity >= 10", "metric": "max_capacity", "op": ">=",
                                "limit": 10.0, "value": None, "passed": False}],
                     breaches=[{"metric": "memory_mb", "value": 1500.0, "limit": 1024.0, "detected_at": 1.0,
                                "pool_dead_at": 1.1}])
    killed = result("cpu_saturation", success=False, exit_code=1, stop_reason="master killed (rebuilt from streams)",
                    criteria=[])
    text = junit.render_junit(make_report([result(), failing, killed], kind="suite"))
    schema.validate(text)
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text)
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("6", "3", "1")
    by_suite = {s.get("name"): s for s in root.findall("testsuite")}
    mem = by_suite["loadgen.memory_pressure"]
    p99 = mem.find("testcase[@name='p99_ms < 100']/failure")
    assert "measured 250" in p99.get("message") and "limit p99_ms < 100" in p99.get("message")
    assert "no value" in mem.find("testcase[@name='max_capacity >= 10']/failure").get("message")
    error = mem.find("testcase[@name='run']/error")
    assert error.get("type") == "ThresholdBreached" and "memory_mb = 1500 > limit 1024" in error.get("message")
    stopped = by_suite["loadgen.cpu_saturation"].find("testcase[@name='run']/failure")
    assert "master killed" in stopped.get("message")


def test_junit_of_a_run_without_components_and_odd_text_is_valid(schema):
    rep = make_report([])
    rep["exit_code"] = 143
    schema.validate(junit.render_junit(rep))
    weird = result("a <b> & \"c\"", stop_reason="bad\x00byte\x1b[0m", exit_code=1, success=False)
    weird.error_messages = ["ctl \x07 char", "ünïcödé ✓"]
    schema.validate(junit.render_junit(make_report([weird])))


def test_the_schema_rejects_what_jenkins_would_not_read(schema):
    text = junit.render_junit(make_report([result()]))
    assert schema.is_valid(text)
    assert not schema.is_valid(text.replace(' hostname="', ' host="'))  # a required attribute gone
    assert not schema.is_valid(text.replace('<testcase name="run"', '<testcase'))  # a nameless case


# ====================================================================== Prometheus textfile


def test_prom_capacity_labels_and_escaping(tmp_path):
    r = result('odd "name"\\x', performance_metrics={"success_rate": 0.9, "max_capacity": 24})
    rep = make_report([r, result("empty", performance_metrics={})])
    rep["detailed_metrics"][1]["latency_ms"] = {"p50": None, "p99": None}
    text = prom.render(rep)
    families = parse_prom(text)
    (cap,) = families["loadgen_capacity_concurrency"].samples
    assert cap.value == 24 and cap.labels["component"] == 'odd "name"\\x'
    assert len(families["loadgen_latency_p50_seconds"].samples) == 1  # None is left out, never 0
    assert text.count("# TYPE loadgen_success_rate gauge") == 1


def test_prom_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "loadgen.prom")
    prom.write_textfile(path, make_report([result()]))
    before = open(path).read()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        prom.write_textfile(path, make_report([result(throughput=1.0)]))
    assert open(path).read() == before  # the old file, whole
    assert temp_leftovers(str(tmp_path)) == []
    with pytest.raises(UsageError, match="does not exist"):
        prom.write_textfile(str(tmp_path / "nope" / "x.prom"), make_report([result()]))


# ====================================================================== report.html


def test_html_charts_survive_empty_and_missing_data(tmp_path):
    rep = make_report([])
    rep["thresholds"] = {}
    page = report_html.render_html(rep, [], [])
    assert page.count("<img class='chart'") == 4  # the four timelines, each saying there is no data
    # A run killed in its first second: a start event, one torn-off phase, no samples with numbers.
    events = [{"t": 1.0, "type": "phase", "name": "start", "phase": "load"},
              {"t": 1.2, "type": "breach", "metric": "memory_mb", "value": 2000.0, "limit": 1024.0,
               "detected_at": 1.2, "pool_dead_at": None, "phase": "load"}]
    rows = [{"t": 1, "phase": "load", "latency_ms": {}, "cpu_percent": None, "pool_memory_mb": None}]
    page = report_html.render_html(make_report([result(stages={"a": {"p50": None}})]), rows, events)
    assert page.count("<img class='chart'") == 4


def test_html_draws_capacity_breaker_and_stage_charts(tmp_path):
    steps = [{"concurrency": n, "throughput": 10 * n / (1 + 0.05 * (n - 1)), "p99_ms": 100 + 5 * n,
              "success_rate": 1.0} for n in (1, 2, 4, 8, 16)]
    pm = {"success_rate": 1.0, "max_capacity": 16, "capacity_steps": steps,
          "usl": {"sigma": 0.05, "kappa": 0.001, "lambda": 10.0, "peak_concurrency": 31.0}}
    stages = {"research": {"p50": 30.0, "p90": 50.0, "p99": 90.0}, "draft": {"p50": 40.0, "p90": 80.0, "p99": 150.0}}
    rep = make_report([result("capacity_limits", performance_metrics=pm, stages=stages)], kind="capacity_limits")
    events = [{"t": 100.0, "type": "phase", "name": "start", "phase": "step 1"},
              {"t": 101.0, "type": "breaker", "breaker": "research", "state": "OPEN", "phase": "step 1"},
              {"t": 103.0, "type": "breaker", "breaker": "research", "state": "half_open", "phase": "step 1"},
              {"t": 104.0, "type": "breaker", "breaker": "research", "state": "closed", "phase": "step 1"},
              {"t": 106.0, "type": "phase", "name": "end", "phase": "step 1", "exit_code": 0}]
    rows = [{"t": 100 + i, "phase": "step 1", "throughput": 10, "failed": 1, "latency_ms": {"p50": 10, "p99": 20},
             "cpu_percent": 50.0, "pool_memory_mb": 100.0, "pool_rss_mb": 150.0} for i in range(6)]
    charts = report_html.build_charts(rep, rows, events)
    titles = [c[0] for c in charts]
    assert "Capacity curve of capacity_limits" in titles
    assert "Breaker state over time" in titles
    assert "Named measurements of capacity_limits" in titles
    for _, _, png in charts:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")


# ====================================================================== compare


def test_compare_rows_status_and_missing_components():
    old = make_report([result("a"), result("b")], kind="suite")
    new = make_report([result("a", success=False, exit_code=1)], kind="suite")
    rows = compare.compare_reports(old, new, 10)
    verdicts = {(r["component"], r["metric"]): r["verdict"] for r in rows}
    assert verdicts[("a", "status")] == "REGRESSION"
    assert verdicts[("b", "component")] == "REGRESSION"
    assert verdicts[("a", "p99 ms")] == "ok"


# ====================================================================== writing


def test_write_reports_leaves_no_temp_files(tmp_path):
    d = str(tmp_path)
    paths = write_reports(d, make_report([result()]))
    assert set(paths) == {"json", "txt", "html", "junit"}
    assert temp_leftovers(d) == []


# ====================================================================== CI example


def test_github_actions_example_runs_the_suite_weekly_and_on_demand():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(open(os.path.join(ROOT, "examples", "github-actions-stress.yml")))
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "workflow_dispatch" in triggers and triggers["schedule"][0]["cron"]
    steps = doc["jobs"]["stress"]["steps"]
    assert any("loadgen suite" in s.get("run", "") for s in steps)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload.get("if") == "always()"


def test_prom_carries_every_latency_statistic_with_a_stat_label():
    from prometheus_client.parser import text_string_to_metric_families

    from loadgen.analysis import STATISTICS
    from loadgen.report.prom import render

    lat = {k: float(i + 1) for i, k in enumerate(STATISTICS)}
    text = render({"metadata": {"kind": "run"}, "detailed_metrics": [{"test_name": "c", "latency_ms": lat}]})
    fam = {f.name: f for f in text_string_to_metric_families(text)}["loadgen_latency_seconds"]
    got = {s.labels["stat"]: s.value for s in fam.samples}
    assert got == {k: v / 1000 for k, v in lat.items()}


def test_summary_lists_the_top_errors_with_their_first_message_and_the_operations_rate():
    from loadgen.report.text import error_lines, top_errors

    tb = 'Traceback (most recent call last):\n  File "t.py", line 5, in op\nValueError: bad amount -3\n'
    detail = {"test_name": "load", "errors": {"KeyError": 5, "ValueError": 40, "OSError": 5},
              "tracebacks": {"ValueError": [tb]}}
    assert top_errors(detail) == [("ValueError", 40, "ValueError: bad amount -3"), ("KeyError", 5, "KeyError"),
                                  ("OSError", 5, "OSError")]
    assert top_errors(detail, n=1) == [("ValueError", 40, "ValueError: bad amount -3")]
    long = {"test_name": "x", "errors": {"E": 1}, "tracebacks": {"E": ["E: " + "y" * 500]}}
    assert len(error_lines({"detailed_metrics": [long]}, width=100)[0]) == 100


def test_list_fits_100_columns(capsys):
    from loadgen.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "load" in out and max(len(line) for line in out.splitlines()) <= 100
    # Wrapped between words, never inside one and never cut: every word of every text is there whole.
    from loadgen import scenarios
    from loadgen.criteria import METRICS
    from loadgen.workload.flow import FLOW_PARAMS

    words = set(out.split())
    texts = list(METRICS.values()) + [h for _, _, h in FLOW_PARAMS.values()] + \
        [scenarios.get(n).summary for n in scenarios.names() + [scenarios.LOAD]]
    for text in texts:
        missing = [w for w in text.split() if w not in words]
        assert not missing, (text, missing)
    assert "one check's pass rate" in " ".join(out.split())


def test_charts_and_events_read_right():
    """A phase's last, partial second is not drawn as a collapse; a memory limit far above the use is
    named, not drawn; the CPU chart says machine CPU; the events table is in time order, in words."""
    from loadgen.report.charts import _Timeline

    events = [{"t": 100.0, "type": "phase", "name": "start", "phase": "load"},
              {"t": 105.4, "type": "phase", "name": "end", "phase": "load", "exit_code": 0},
              {"t": 103.0, "type": "worker_crash", "worker": 1, "exit": "SIGKILL", "phase": "load"},
              {"t": 101.0, "type": "breaker", "state": "open", "reason": "3 failures", "phase": "load"}]
    rows = [{"t": 100 + i, "phase": "load", "throughput": 100 if i < 5 else 30, "failed": 0, "rejected": 2000,
             "latency_ms": {"p99": 5}, "cpu_percent": 50.0, "pool_memory_mb": 30.0, "pool_rss_mb": 60.0}
            for i in range(6)]
    tl = _Timeline(make_report([]), rows, events)
    assert [r.get("partial", False) for r in tl.rows] == [False] * 5 + [True]
    rep = make_report([])
    rep["thresholds"] = {"max_memory_mb": 1024, "max_cpu_percent": 90}
    titles = [c[0] for c in report_html.build_charts(rep, rows, events)]
    assert "Machine CPU over time" in titles and "Pool CPU over time" not in titles
    page = report_html.render_html(rep, rows, events)
    section = page[page.index("id='events'"):]
    order = [section.index(f"<td>{t}</td>") for t in ("breaker", "worker_crash", "phase")]
    assert order == sorted(order)  # 101 s, 103 s, 105.4 s: not the streams' order
    assert "state open · reason 3 failures" in section and '{"' not in section


def test_html_has_a_latency_distribution_from_the_hdr_histograms():
    from loadgen.analysis.stats import Histogram

    h = Histogram()
    h.record_many(list(range(1_000, 101_000, 10)))
    rep = make_report([result()])
    rep["detailed_metrics"][0]["histograms"] = {"latency": h.to_payload()}
    charts = report_html.build_charts(rep, [], [])
    assert "Latency distribution" in [c[0] for c in charts]
    rep["detailed_metrics"][0]["histograms"] = {"latency": "not a payload"}  # damaged: no chart, no crash
    assert "Latency distribution" not in [c[0] for c in report_html.build_charts(rep, [], [])]


def test_open_model_seconds_carry_the_response_time_and_the_target_rate():
    from loadgen.report.charts import _Timeline

    rows = [{"t": 100 + i, "phase": "a", "throughput": 140, "failed": 0, "target": 150.0,
             "latency_ms": {"p50": 5.0, "p99": 6.0}, "response_ms": {"p50": 5.5, "p99": 30.0}} for i in range(3)]
    rows.append({"t": 101, "phase": "b", "throughput": 10, "failed": 0, "target": 4, "latency_ms": {"p50": 1.0}})
    tl = _Timeline(make_report([]), rows, [])
    assert [r["target_rate"] for r in tl.rows] == [150.0, 150.0, 150.0]  # a closed phase's target is not a rate
    assert tl.rows[0]["response"]["p99"] == 30.0 and tl.rows[1]["latency"]["p50"] == 5.0


def test_summary_leads_with_operations_succeeded_and_components_passed_as_two_labelled_figures():
    from loadgen.report.text import render_summary

    text = render_summary(make_report([result(), result("memory_pressure", success=False, exit_code=1)], kind="suite"))
    lines = text.splitlines()
    head = lines.index("EXECUTIVE SUMMARY")
    assert lines[head + 2] == "Operations succeeded: 95.0% (1,140 of 1,200 completed)"
    assert lines[head + 3].startswith("Components passed: 1/2 (50.0%")


@pytest.mark.parametrize("value, text", [(23660, "23,660"), (2.366e4, "23,660"), (1_234_567.8, "1,234,568"),
                                         (999.96, "1,000"), (123.45, "123.5"), (0.8125, "0.8125"), (12.5, "12.5"),
                                         (3.0, "3"), (-45.678, "-45.68"), (0.00012345, "0.0001234"),
                                         (1e-9, "< 0.0001"), (0, "0"), (None, "—")])
def test_numbers_print_in_plain_notation_with_thousands_separators(value, text):
    from loadgen.report.fmt import fmt_number

    assert fmt_number(value) == text


def _busy_run():
    """A report and streams with everything a chart can show: two shards logging the same phases, a CPU
    threshold exceeded, a memory breach, an open model's drops and rejections, a mix's ops, a capacity
    search."""
    events = []
    for shard in (0, 1):
        events += [{"t": 100.0 + shard * 0.01, "type": "phase", "name": "start", "phase": "baseline c=1", "shard": shard},
                   {"t": 104.0, "type": "phase", "name": "end", "phase": "baseline c=1", "shard": shard},
                   {"t": 104.0, "type": "phase", "name": "start", "phase": "concurrent_load", "shard": shard},
                   {"t": 120.0, "type": "phase", "name": "end", "phase": "concurrent_load", "shard": shard}]
        events += [{"t": 110.0 + shard, "type": "breaker", "worker": 0, "state": "open", "shard": shard},
                   {"t": 112.0 + shard, "type": "breaker", "worker": 0, "state": "closed", "shard": shard}]
    events += [{"t": 108.0, "type": "threshold_exceeded", "metric": "cpu_percent", "value": 97.0, "limit": 90.0},
               {"t": 115.0, "type": "breach", "metric": "memory_mb", "value": 1100.0, "limit": 1024.0,
                "detected_at": 115.0, "pool_dead_at": 115.05}]
    rows = [{"t": 100 + i, "phase": "concurrent_load", "throughput": 23_000 + 50 * i, "failed": 3, "dropped": 40,
             "rejected": 1500, "target": 25_000.0, "latency_ms": {"p50": 4.0, "p90": 9.0, "p99": 20.0, "max": 80.0},
             "response_ms": {"p50": 5.0, "p99": 40.0}, "cpu_percent": 80.0 + i, "pool_memory_mb": 900.0 + 10 * i,
             "pool_rss_mb": 1000.0 + 10 * i,
             "ops_ms": {"GET /drafts/{id}": {"p50": 3.0, "p99": 15.0}, "POST /drafts": {"p50": 8.0, "p99": 30.0}}}
            for i in range(20)]
    steps = [{"concurrency": c, "throughput": 10.0 * c / (1 + 0.1 * (c - 1)), "latency_ratio": 1 + 0.05 * c * c / 4,
              "ratio_se": 0.03, "ok": c <= 8, "p99_ms": 100.0 + c} for c in (1, 2, 4, 8, 12, 16)]
    pm = {"success_rate": 1.0, "max_capacity": 9, "capacity_low": 8, "capacity_high": 11,
          "capacity_interval": "9 [8–11]", "reference_mean_ms": 100.0, "slo_mean_ms": 150.0, "capacity_steps": steps,
          "usl": {"sigma": 0.1, "kappa": 0.001, "lambda": 10.0, "peak_concurrency": 31.0}}
    cap = result("capacity_limits", performance_metrics=pm)
    mix = result("concurrent_load")
    mix.ops = {"GET /drafts/{id}": {"operations": 9000, "latency_ms": {"p99": 15.0}},
               "POST /drafts": {"operations": 1000, "latency_ms": {"p99": 30.0}}}
    rep = make_report([mix, cap], kind="suite", thresholds={"max_memory_mb": 1024.0, "max_cpu_percent": 90.0})
    return rep, rows, events


def test_every_legend_fits_its_figure_and_each_mark_stays_on_its_own_chart(monkeypatch):
    from loadgen.report import charts

    seen = []
    fit = charts._fit_legends

    def record(fig):
        fit(fig)
        title = fig.texts[0].get_text() if fig.texts else fig.axes[0].get_title(loc="left")
        labels = [t.get_text().replace("\n", " ") for ax in fig.axes if ax.get_legend()
                  for t in ax.get_legend().get_texts()]
        ticks = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
        tops = [t.get_text() for ax in fig.axes for child in ax.child_axes for t in child.get_xticklabels()]
        seen.append((title, charts.legend_overflow(fig), labels, ticks, tops))

    monkeypatch.setattr(charts, "_fit_legends", record)
    rep, rows, events = _busy_run()
    report_html.build_charts(rep, rows, events)
    by_title = {title: (over, labels, ticks, tops) for title, over, labels, ticks, tops in seen}
    for title, (over, _, _, _) in by_title.items():
        assert over == [], (title, over)  # no legend cut: every one inside the figure's box
    assert any("threshold exceeded (reported)" in lb for lb in by_title["Machine CPU"][1])
    assert not any("threshold exceeded" in lb for lb in by_title["Pool memory"][1])  # a CPU mark, not memory's
    assert any(lb == "breach" for lb in by_title["Pool memory"][1])
    assert not any(lb == "breach" for lb in by_title["Machine CPU"][1])
    # plain numbers: 23,000 not 2.3e+04
    assert any("," in t for t in by_title["Throughput and errors"][2]) and not any("e+" in t for t in
                                                                                 by_title["Throughput and errors"][2])
    # a fleet's shards log the same phases: each named once along the top
    tops = by_title["Throughput and errors"][3]
    assert sorted(tops) == sorted(set(tops)) and "concurrent_load" in tops
    # a mix: latency per op over time
    assert any(lb.startswith("GET /drafts/{id} p99") for lb in by_title["Latency per op of the mix"][1])
    # the capacity chart shows what the verdict judges: the mean ratio, its interval and the SLO line
    cap = by_title["Capacity — capacity_limits"][1]
    assert any(lb.startswith("mean latency ÷ mean at 1") for lb in cap)
    assert any(lb.startswith("SLO: mean ≤ 1.5") for lb in cap)
    assert "capacity 9" in cap and any(lb.startswith("capacity interval 8–11") for lb in cap)
    assert not any(lb.startswith("p99") for lb in cap)
    # every shard has a worker 0: each breaker line is named with its shard
    assert by_title["Circuit breakers"][1] == ["shard 0 worker 0", "shard 1 worker 0"]

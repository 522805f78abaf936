"""report.html in a real browser: headless Chromium loads the page and every chart image decodes.

The page's own closing script writes ``data-charts-ok="N/M"`` on ``<body>``
(images that decoded / chart images); ``--dump-dom`` prints the DOM after
the load event, so the test reads the browser's verdict back. Skipped only
when no Chromium binary is installed (CI installs Debian's ``chromium``).
"""

import os
import re
import shutil
import subprocess

import pytest

from loadgen.analysis.stats import Histogram
from loadgen.report import html as report_html
from loadgen.report import build_report
from loadgen.result import StressTestResult

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
DUMP_TIMEOUT_S = 60


def chromium():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium binary on PATH (apt-get install chromium); the browser check needs one")


def charts_ok(page_path, tmp_path):
    """The page's ``data-charts-ok`` as (decoded, total), as headless Chromium saw it; fails the test if
    the page wrote anything to its console (an error, an uncaught exception, a log line)."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--enable-logging=stderr", "--v=0",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--disable-extensions", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--virtual-time-budget=5000", "--dump-dom", "file://" + os.path.abspath(page_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S, stdin=subprocess.DEVNULL)
    m = re.search(r'data-charts-ok="(\d+)/(\d+)"', p.stdout)
    assert m, f"no data-charts-ok in the DOM (exit {p.returncode}); stderr tail: {p.stderr[-800:]}"
    console = [line for line in p.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, f"the page logged to its console: {console[:5]}"
    return int(m.group(1)), int(m.group(2))


def component(name, **kw):
    fields = dict(test_name=name, success=True, duration_seconds=6.0, max_concurrent_operations=20,
                  peak_memory_mb=300.0, peak_cpu_percent=85.0, total_operations=600, successful_operations=570,
                  failed_operations=30, throughput_ops_per_sec=95.0,
                  criteria=[{"criterion": "success_rate > 0.7", "metric": "success_rate", "op": ">", "limit": 0.7,
                             "value": 0.95, "passed": True}],
                  accounting={"dispatched": 600, "succeeded": 570, "failed": 30, "timed_out": 0, "crashed": 0,
                              "dropped": 0, "rejected": 0},
                  latency_ms={"p50": 120.0, "p90": 200.0, "p99": 260.0, "p999": 300.0, "max": 320.0})
    fields.update(kw)
    return StressTestResult(**fields)


def rich_run():
    """A report and streams that exercise every chart: timelines, breach, capacity + USL, breakers, stages."""
    t0 = 1_700_000_000
    steps = [{"concurrency": n, "throughput": 10 * n / (1 + 0.04 * (n - 1) + 0.002 * n * (n - 1)),
              "p99_ms": 100 + 8 * n, "success_rate": 1.0} for n in (1, 2, 4, 8, 12, 16, 24)]
    latency = Histogram()
    latency.record_many([100_000 + 37 * i % 90_000 for i in range(600)])
    capacity = component("capacity_limits", performance_metrics={
        "success_rate": 0.97, "max_capacity": 16, "capacity_steps": steps,
        "usl": {"sigma": 0.04, "kappa": 0.002, "lambda": 10.0, "peak_concurrency": 21.9}},
        histograms={"latency": latency.to_payload()})
    stages = {s: {"p50": 10.0 * (i + 1), "p90": 18.0 * (i + 1), "p99": 30.0 * (i + 1)}
              for i, s in enumerate(("input_validation", "research", "audience_align", "draft_generation",
                                     "style_validation", "quality_check"))}
    breach = {"t": t0 + 17.2, "metric": "memory_mb", "value": 1100.0, "limit": 1024.0, "detected_at": t0 + 17.2,
              "pool_dead_at": t0 + 17.3}
    memory = component("memory_pressure", success=False, exit_code=3, stop_reason="threshold breached",
                       breaches=[breach], measures_ms=stages)
    report = build_report([capacity, memory], kind="suite", started_at=t0, ended_at=t0 + 20,
                          thresholds={"max_memory_mb": 1024.0, "max_cpu_percent": 90.0})
    rows, events = [], []
    for phase, start, end in (("capacity step", 0, 10), ("memory", 10, 18)):
        events.append({"t": t0 + start + 0.2, "type": "phase", "name": "start", "phase": phase})
        for s in range(start, end):
            rows.append({"t": t0 + s, "phase": phase, "ops": 100, "succeeded": 95, "failed": 5, "dropped": 0,
                         "throughput": 100, "in_flight": 20,
                         "latency_ms": {"p50": 100 + s, "p90": 150 + s, "p99": 200 + 3 * s, "p999": 250, "max": 260},
                         "cpu_percent": 40 + 3 * s, "pool_memory_mb": 200 + 50 * s, "pool_rss_mb": 300 + 50 * s})
        events.append({"t": t0 + end, "type": "phase", "name": "end", "phase": phase, "exit_code": 0})
    events.append({"type": "breach", "phase": "memory", **breach})
    for dt, state in ((2, "open"), (4, "half_open"), (5, "closed")):
        events.append({"t": t0 + dt, "type": "breaker", "breaker": "research", "state": state,
                       "phase": "capacity step"})
    events.append({"t": t0 + 6, "type": "worker_crash", "worker": 1, "exit": "SIGKILL (signal 9)",
                   "phase": "capacity step"})
    return report, rows, sorted(events, key=lambda e: e["t"])


def test_every_chart_decodes_in_chromium(tmp_path):
    report, rows, events = rich_run()
    page = tmp_path / "report.html"
    page.write_text(report_html.render_html(report, rows, events), encoding="utf-8")
    decoded, total = charts_ok(page, tmp_path)
    # 4 timelines + the latency distribution + capacity + breakers + the stages of memory_pressure
    assert total == 8
    assert decoded == total
    html = page.read_text(encoding="utf-8")
    for title in ("Latency distribution", "Machine CPU over time", "Breaker state over time"):
        assert title in html, title


def test_a_killed_run_page_still_decodes(tmp_path):
    report = build_report([], kind="concurrent_load", started_at=1_700_000_000, ended_at=1_700_000_001,
                          thresholds={})
    page = tmp_path / "report.html"
    page.write_text(report_html.render_html(report, [], []), encoding="utf-8")
    decoded, total = charts_ok(page, tmp_path)
    assert total >= 4 and decoded == total


def dom(page_path, tmp_path):
    """The DOM headless Chromium built from the page (after its load event)."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--disable-extensions", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--virtual-time-budget=5000", "--dump-dom", "file://" + os.path.abspath(page_path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=DUMP_TIMEOUT_S, stdin=subprocess.DEVNULL).stdout


def test_the_page_answers_at_a_glance_and_no_chart_is_cut(tmp_path):
    """Verdict, what failed (measured vs limit), top errors, then charts, then the long tables folded; and
    every chart's outer frame is background: nothing drawn (a legend, a label) runs off its edge."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    report, rows, events = rich_run()
    report["detailed_metrics"][1]["errors"] = {"TimeoutError": 7}
    # the cut legend: "threshold exceeded (repor" beside the CPU chart
    events.append({"t": rows[5]["t"] + 0.5, "type": "threshold_exceeded", "metric": "cpu_percent", "value": 95.0,
                   "limit": 90.0, "phase": "capacity step"})
    page = tmp_path / "report.html"
    page.write_text(report_html.render_html(report, rows, events), encoding="utf-8")
    html = dom(page, tmp_path)
    order = [html.find(f"id=\"{ident}\"") for ident in ("verdict", "failed", "errors", "charts", "details")]
    assert -1 not in order and order == sorted(order), order
    failed = html[order[1]:order[2]]
    assert "memory_pressure" in failed and "stopped" in failed  # why it failed, before any chart
    assert "Operations succeeded" in html[:order[1]] and "Components passed" in html[:order[1]]
    details = html[order[4]:]
    assert "<details id=\"components\"" in details and "<details id=\"events\"" in details
    titles = re.findall(r"<img class=\"chart\" alt=\"([^\"]+)\" src=\"data:image/png;base64,([^\"]+)\"", html)
    assert len(titles) == 8
    for title, data in titles:
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"))
        frame = np.concatenate([img[:2].ravel(), img[-2:].ravel(), img[:, :2].ravel(), img[:, -2:].ravel()])
        assert frame.min() >= 250, f"{title}: something is drawn on the figure's edge (a cut legend?)"

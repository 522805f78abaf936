"""Reports: ``report.json`` (the seed's keys and loadgen's) and ``summary.txt``.

``build_report`` turns component results into one plain dict; the
``render_*`` functions are pure; ``write_reports`` writes each file
atomically. Suite runs use the seed's file names
(``ai_writing_flow_v2_heavy_load_stress_report.json``/``.txt``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform

from .. import __version__
from ..errors import ExitCode
from ..measure.stats import Accounting, Histogram
from ..streams import atomic_write, json_safe

SCHEMA_VERSION = 1
SUITE_NAME = "AI Writing Flow V2 Heavy Load Stress Testing Suite"
SUITE_BASENAME = "ai_writing_flow_v2_heavy_load_stress_report"


def system_info():
    import psutil

    return {
        "cpu_count": psutil.cpu_count(),
        "total_memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def build_report(results, *, kind, started_at, ended_at, thresholds, run_dir=None, command=None, seed=None):
    """The full report dict. ``results``: list of ``StressTestResult``; ``kind``: 'suite' or a scenario name."""
    acc = Accounting()
    latency = Histogram()
    breaches = []
    for r in results:
        acc.merge(Accounting(**r.accounting))
        latency.merge(Histogram.from_payload(r.histograms.get("latency", "")))
        breaches.extend(r.breaches)
    passed = [r for r in results if r.success]
    codes = [r.exit_code for r in results] + [0 if r.success else 1 for r in results]
    exit_code = ExitCode.worst(codes)
    components = []
    for r in results:
        key, value = r.key_metric
        row = {"component_name": r.test_name, "status": "PASSED" if r.success else "FAILED",
               key: value, "operations_executed": r.total_operations,
               "error": None if r.success else _first_failure(r)}
        components.append(row)
    return {
        "schema_version": SCHEMA_VERSION,
        "metadata": {
            "test_suite": SUITE_NAME if kind == "suite" else f"loadgen {kind}",
            "kind": kind,
            "version": __version__,
            "timestamp": _dt.datetime.fromtimestamp(ended_at, _dt.timezone.utc).isoformat(),
            "started_at": started_at,
            "ended_at": ended_at,
            "duration_seconds": round(ended_at - started_at, 3),
            "system_info": system_info(),
            "run_dir": run_dir,
            "command": command,
            "seed": seed,
        },
        "executive_summary": {
            "total_components": len(results),
            "passed_components": len(passed),
            "failed_components": len(results) - len(passed),
            "overall_success_rate": round(len(passed) / len(results), 4) if results else 0.0,
            "total_operations_executed": acc.dispatched,
        },
        "component_results": components,
        "detailed_metrics": [r.to_dict() for r in results],
        "recommendations": recommendations(results),
        "thresholds": thresholds.to_dict() if hasattr(thresholds, "to_dict") else dict(thresholds),
        "accounting": acc.to_dict(),
        "latency_ms": {k: v for k, v in latency.summary_ms().items() if k != "count"},
        "breaches": breaches,
        "exit_code": exit_code,
    }


def _first_failure(r):
    for c in r.criteria:
        if not c["passed"]:
            value = "no value" if c["value"] is None else f"{c['value']:.4g}"
            return f"{c['criterion']} failed (measured {value})"
    if r.stop_reason and r.exit_code:
        return f"stopped: {r.stop_reason}"
    return "failed"


def recommendations(results):
    """Advice computed from what was measured (never canned)."""
    out = []
    for r in results:
        m = r.performance_metrics
        if r.breaches:
            b = r.breaches[0]
            out.append(f"{r.test_name}: the monitor stopped the run on {b['metric']} "
                       f"({b['value']:.1f} > {b['limit']:.1f}); size the workload or raise the threshold")
        if r.accounting.get("crashed"):
            out.append(f"{r.test_name}: {r.accounting['crashed']} operations were lost to worker crashes; "
                       "see events.jsonl (worker_crash) for exit codes")
        if r.accounting.get("timed_out"):
            out.append(f"{r.test_name}: {r.accounting['timed_out']} operations exceeded the operation timeout")
        if r.leak.get("leak"):
            out.append(f"{r.test_name}: memory grows {r.leak['slope_mb_per_s']:.2f} MB/s "
                       f"(R² {r.leak.get('r2', 0):.2f}) — likely a leak")
        sr = m.get("success_rate")
        if sr is not None and sr < 0.95 and not r.breaches:
            top = next(iter(r.errors), None)
            out.append(f"{r.test_name}: success rate {sr:.1%}" + (f"; most frequent error: {top}" if top else ""))
        if m.get("max_capacity"):
            out.append(f"{r.test_name}: plan for at most {m['max_capacity']:.0f} concurrent operations per machine "
                       "like this one")
        if m.get("peak_cpu_percent", 0) >= 85 and r.test_name not in ("cpu_saturation",):
            out.append(f"{r.test_name}: machine CPU peaked at {m['peak_cpu_percent']:.0f}% — CPU is the bottleneck")
    if not out and results and all(r.success for r in results):
        worst = max(results, key=lambda r: r.latency_ms.get("p99") or 0)
        out.append(f"System demonstrates excellent stress resilience: every criterion passed; "
                   f"highest p99 {worst.latency_ms.get('p99')} ms in {worst.test_name}")
    return out


# ---------------------------------------------------------------------- text


def render_summary(report):
    """The seed's human summary, with tabulate tables."""
    from tabulate import tabulate

    md, ex = report["metadata"], report["executive_summary"]
    si = md["system_info"]
    title = "AI Writing Flow V2 - Heavy Load Stress Test Summary" if md.get("kind") == "suite" \
        else f"loadgen - {md.get('kind')} - Stress Test Summary"
    lines = [title, "=" * len(title), "",
             f"Generated: {md['timestamp']}",
             f"Duration: {md['duration_seconds']:.2f} seconds",
             f"System: {si['cpu_count']} CPUs, {si['total_memory_gb']:.1f}GB RAM", "",
             "EXECUTIVE SUMMARY", "================",
             f"Overall Success Rate: {ex['overall_success_rate'] * 100:.1f}%",
             f"Components Passed: {ex['passed_components']}/{ex['total_components']}",
             f"Total Operations: {ex['total_operations_executed']}", "",
             "COMPONENT RESULTS", "================"]
    for c in report["component_results"]:
        mark = "✅" if c["status"] == "PASSED" else "❌"
        lines.append(f"{mark} {c['component_name']}: {c['status']} ({_key_text(c)})")
    lines += ["", "PERFORMANCE HIGHLIGHTS", "======================"]
    rows = []
    for d in report["detailed_metrics"]:
        lat = d["latency_ms"]
        rows.append([d["test_name"], d["total_operations"], f"{d['success_rate'] if 'success_rate' in d else _rate(d):.1%}",
                     f"{d['throughput_ops_per_sec']:.1f}", _ms(lat.get("p50")), _ms(lat.get("p99")),
                     d["max_concurrent_operations"], f"{d['peak_memory_mb']:.0f}", f"{d['peak_cpu_percent']:.0f}"])
    lines.append(tabulate(rows, headers=["component", "ops", "success", "ops/s", "p50 ms", "p99 ms",
                                         "peak in flight", "peak MB", "peak CPU %"]))
    crit = []
    for d in report["detailed_metrics"]:
        for c in d["criteria"]:
            v = c.get("value")
            crit.append([d["test_name"], c["criterion"], "—" if v is None else f"{v:.4g}", "pass" if c["passed"] else "FAIL"])
    if crit:
        lines += ["", tabulate(crit, headers=["component", "criterion", "measured", "result"])]
    acc = report["accounting"]
    lines += ["", "Accounting: " + ", ".join(f"{k} {v}" for k, v in acc.items())]
    for b in report["breaches"]:
        lines.append(f"Breach: {b['metric']} = {b['value']:.1f} > {b['limit']:.1f}")
    if report.get("fleet"):  # a fleet run (fleet.py): the per-machine table
        from ..fleet.merge import render_fleet_text

        lines += [""] + render_fleet_text(report)
    lines += ["", "RECOMMENDATIONS", "==============="]
    lines += [f"• {r}" for r in report["recommendations"]] or ["• none"]
    lines += ["", "---", f"Generated by loadgen {md['version']} (exit code {report['exit_code']})", ""]
    return "\n".join(lines)


def _rate(d):
    ok, bad = d["successful_operations"], d["failed_operations"]
    return ok / (ok + bad) if ok + bad else 0.0


def _ms(v):
    return "—" if v is None else f"{v:.1f}"


def _key_text(c):
    if "max_capacity" in c:
        v = c["max_capacity"]
        return f"Max Capacity: {'—' if v is None else f'{v:.0f}'} concurrent operations"
    if "recovery_rate" in c:
        v = c["recovery_rate"]
        return f"Recovery Rate: {'—' if v is None else f'{v * 100:.1f}%'}"
    for k, v in c.items():
        if k not in ("component_name", "status", "operations_executed", "error"):
            label = k.replace("_", " ").title()
            if v is None:
                return f"{label}: —"
            return f"{label}: {v * 100:.1f}%" if k.endswith("rate") else f"{label}: {v:.4g}"
    return ""


# ---------------------------------------------------------------------- files


def report_paths(run_dir, kind):
    base = SUITE_BASENAME if kind == "suite" else "report"
    return {"json": os.path.join(run_dir, base + ".json"), "txt": os.path.join(run_dir, base + ".txt"
                                                                               if kind == "suite" else "summary.txt")}


def write_reports(run_dir, report):
    """Write every report of a run directory atomically; returns {format: path}.

    report.json and summary.txt (suite: the seed's names), then report.html and
    junit.xml. A failure in the optional formats is logged, never loses the JSON.
    """
    paths = report_paths(run_dir, report["metadata"]["kind"])
    report = json_safe(json.loads(json.dumps(report, default=_default)))
    atomic_write(paths["json"], json.dumps(report, indent=2, allow_nan=False) + "\n")
    atomic_write(paths["txt"], render_summary(report))
    for fmt, module, func in _EXTRA_FORMATS:
        try:
            mod = __import__(f"loadgen.{module}", fromlist=[func])
        except ImportError:
            continue  # that format is not built yet
        try:
            paths[fmt] = getattr(mod, func)(run_dir, report)
        except Exception as e:  # noqa: BLE001 - the JSON report is already safe
            import logging

            logging.getLogger("loadgen.report").error("could not write %s: %s: %s", fmt, type(e).__name__, e)
    return paths


# (format, module, function(run_dir, report) -> path); imported only when writing.
_EXTRA_FORMATS = (("html", "report.html", "write_html"), ("junit", "report.junit", "write_junit"))


def _default(o):
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, (set, tuple)):
        return list(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(type(o).__name__)

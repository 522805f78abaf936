"""Building ``report.json``'s dict: metadata, executive summary, components, recommendations.

Pure data: :func:`build_report` turns component results into one plain
dict that every renderer (text, HTML, JUnit, Prometheus) reads; nothing
here writes a file.
"""

from __future__ import annotations

import datetime as _dt
import platform

from .. import __version__
from ..errors import ExitCode
from ..measure.stats import Accounting, Histogram

SCHEMA_VERSION = 1
SUITE_NAME = "AI Writing Flow V2 Heavy Load Stress Testing Suite"
SUITE_BASENAME = "ai_writing_flow_v2_heavy_load_stress_report"


def system_info():
    """This machine: ``{cpu_count, total_memory_gb (GiB, 1 decimal), platform, python}``."""
    import psutil

    return {
        "cpu_count": psutil.cpu_count(),
        "total_memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def build_report(results, *, kind, started_at, ended_at, thresholds, run_dir=None, command=None, seed=None):
    """The full report dict (plain data, JSON-ready after ``write_reports``' clean-up).

    ``results``: list of ``StressTestResult``; ``kind``: 'suite' or a scenario
    name; ``started_at``/``ended_at``: UNIX seconds; ``thresholds``: a
    ``ResourceThresholds`` or a dict.
    """
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
    """The component's error text: its first failed criterion, else its stop reason."""
    for c in r.criteria:
        if not c["passed"]:
            value = "no value" if c["value"] is None else f"{c['value']:.4g}"
            return f"{c['criterion']} failed (measured {value})"
    if r.stop_reason and r.exit_code:
        return f"stopped: {r.stop_reason}"
    return "failed"


def recommendations(results):
    """Advice computed from what was measured (never canned): a list of str, one per finding."""
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

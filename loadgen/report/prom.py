"""``--prom-textfile PATH``: a run's key gauges for node_exporter's textfile collector.

The file is in the Prometheus text exposition format (``# HELP`` and
``# TYPE`` once per metric, then its samples). Every sample carries
``kind`` (``suite`` or the scenario's name); per-component gauges also
carry ``component``. Figures the run did not produce (no latency, no
capacity search) are left out rather than written as 0.

The collector reads ``*.prom`` files while cron may be rewriting them, so
the file is written to a hidden temp file in the same folder (not matched
by ``*.prom``) and renamed over the old one; it is made world-readable
because node_exporter usually runs as its own user.
"""

from __future__ import annotations

import math
import os

from ..errors import UsageError
from ..analysis import STATISTICS
from ..streams import atomic_write

_MB = 1024 * 1024

# name → help text; the order is the file's order. Every metric is a gauge:
# each describes the last run, none counts across runs.
METRICS = {
    "loadgen_success_rate": "Succeeded / completed operations of the component's run (0-1).",
    "loadgen_throughput_ops_per_second": "Completed operations per second of applied load.",
    "loadgen_latency_p50_seconds": "Median operation latency.",
    "loadgen_latency_p99_seconds": "99th percentile operation latency.",
    "loadgen_latency_seconds": "Operation latency statistic (label stat: p50 p90 p95 p99 p999 p9999 min max mean).",
    "loadgen_measure_seconds": "A loadgen.measure block's latency statistic (labels name, stat; stat count: how many).",
    "loadgen_check_passes": "Passes of a loadgen.check (label name) in the component's run.",
    "loadgen_check_fails": "Fails of a loadgen.check (label name) in the component's run.",
    "loadgen_op_operations": "Completed operations of one op of a mix (label op).",
    "loadgen_op_success_rate": "Succeeded / completed operations of one op of a mix (label op; 0-1).",
    "loadgen_op_latency_seconds": "Latency statistic of one op of a mix (labels op, stat).",
    "loadgen_capacity_concurrency": "Highest sustainable concurrency found by a capacity search.",
    "loadgen_peak_memory_bytes": "Peak memory of the worker pool (PSS) during the component's run.",
    "loadgen_breaches_total": "Safety-threshold breaches during the component's run.",
    "loadgen_component_passed": "1 when every criterion of the component passed, else 0.",
    "loadgen_exit_code": "Exit code of the run (0 passed, 1 failed, 2 usage, 3 breach, 128+N signal N: 129 SIGHUP, 130 SIGINT, 143 SIGTERM …).",
    "loadgen_last_run_timestamp_seconds": "UNIX time the run ended.",
}


def write_textfile(path, report):
    """Write ``report``'s gauges to ``path`` atomically (0644); returns ``path``.

    Raises :class:`UsageError` when the folder does not exist or cannot be written.
    """
    text = render(report)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--prom-textfile {path!r}: folder {folder!r} does not exist")
    atomic_write(path, text, mode=0o644)  # node_exporter usually runs as its own user
    return path


def render(report):
    """The exposition text (str) of a report dict."""
    md = report.get("metadata") or {}
    kind = str(md.get("kind") or "run")
    samples = {name: [] for name in METRICS}
    for d in report.get("detailed_metrics") or []:
        labels = {"kind": kind, "component": str(d.get("test_name", ""))}
        pm = d.get("performance_metrics") or {}
        lat = d.get("latency_ms") or {}
        rate = pm.get("success_rate")
        if rate is None:
            done = (d.get("successful_operations") or 0) + (d.get("failed_operations") or 0)
            rate = d.get("successful_operations", 0) / done if done else None
        samples["loadgen_success_rate"].append((labels, rate))
        samples["loadgen_throughput_ops_per_second"].append((labels, d.get("throughput_ops_per_sec")))
        samples["loadgen_latency_p50_seconds"].append((labels, _seconds(lat.get("p50"))))
        samples["loadgen_latency_p99_seconds"].append((labels, _seconds(lat.get("p99"))))
        for stat in STATISTICS:
            if lat.get(stat) is not None:
                samples["loadgen_latency_seconds"].append(({**labels, "stat": stat}, _seconds(lat[stat])))
        for name, summary in _dict(d.get("measures_ms")).items():
            for stat, value in _dict(summary).items():
                if stat in STATISTICS or stat == "count":
                    samples["loadgen_measure_seconds"].append(
                        ({**labels, "name": str(name), "stat": stat}, value if stat == "count" else _seconds(value)))
        for name, o in _dict(d.get("ops")).items():
            o, op = _dict(o), {**labels, "op": str(name)}
            samples["loadgen_op_operations"].append((op, o.get("operations")))
            samples["loadgen_op_success_rate"].append((op, o.get("success_rate")))
            for stat, value in _dict(o.get("latency_ms")).items():
                if stat in STATISTICS:
                    samples["loadgen_op_latency_seconds"].append(({**op, "stat": stat}, _seconds(value)))
        for name, counts in _dict(d.get("checks")).items():
            for key in ("passes", "fails"):
                samples[f"loadgen_check_{key}"].append(({**labels, "name": str(name)}, _dict(counts).get(key)))
        samples["loadgen_capacity_concurrency"].append((labels, pm.get("max_capacity")))
        peak = d.get("peak_memory_mb")
        samples["loadgen_peak_memory_bytes"].append((labels, None if peak is None else float(peak) * _MB))
        samples["loadgen_breaches_total"].append((labels, len(d.get("breaches") or [])))
        samples["loadgen_component_passed"].append((labels, 1 if d.get("success") else 0))
    run = {"kind": kind}
    samples["loadgen_exit_code"].append((run, report.get("exit_code")))
    samples["loadgen_last_run_timestamp_seconds"].append((run, md.get("ended_at")))
    lines = []
    for name, help_text in METRICS.items():
        rows = [(labels, v) for labels, v in samples[name] if _finite(v)]
        if not rows:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        for labels, value in rows:
            lines.append(f"{name}{{{_labels(labels)}}} {_value(value)}")
    return "\n".join(lines) + "\n"


def _dict(v):
    return v if isinstance(v, dict) else {}


def _seconds(ms):
    return None if ms is None else float(ms) / 1000.0


def _finite(v):
    if v is None or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _value(v):
    if isinstance(v, int):
        return str(v)
    return format(float(v), ".12g")


def _labels(labels):
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())


def _escape(value):
    """Label value escaping of the text format: backslash, double quote, line feed."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ``loadgen history ROOT --prom-textfile PATH``: the trend's latest verdict. Gauges of the newest night's series.
HISTORY_METRICS = {
    "loadgen_history_regressed": "1 when the newest night lies in a regressed segment of its series (or failed), else 0.",
    "loadgen_history_exit_code": "Exit code of `loadgen history` (0 fine, 1 regressed or failed).",
    "loadgen_history_nights": "Nights in the newest night's series.",
    "loadgen_history_new_series": "1 when the newest night began a new series (its settings changed), else 0.",
    "loadgen_history_change_percent": "Size of the change the newest night is regressed by (labels component, metric).",
    "loadgen_history_change_began_timestamp_seconds": "UNIX time of the night that change began (labels component, metric).",
    "loadgen_history_last_night_timestamp_seconds": "UNIX time the newest night ended.",
}


def write_history_textfile(path, summary):
    """Write the gauges of a ``loadgen history`` verdict (``history.command.summarise``'s dict) to ``path``,
    atomically and world-readable as :func:`write_textfile`; returns ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"--prom-textfile {path!r}: folder {folder!r} does not exist")
    cur = next(s for s in summary["series"] if s["current"])
    top = {"series": cur["key"]}
    samples = {name: [] for name in HISTORY_METRICS}
    samples["loadgen_history_regressed"].append((top, int(summary["verdict"] in ("regressed", "failed"))))
    samples["loadgen_history_exit_code"].append((top, summary["exit_code"]))
    samples["loadgen_history_nights"].append((top, len(cur["nights"])))
    samples["loadgen_history_new_series"].append((top, int(summary["verdict"] == "new_series")))
    for r in cur["regressions"]:
        labels = {**top, "component": r["component"], "metric": r["metric"]}
        samples["loadgen_history_change_percent"].append((labels, r["change_pct"]))
        samples["loadgen_history_change_began_timestamp_seconds"].append((labels, r["ended_at"]))
    samples["loadgen_history_last_night_timestamp_seconds"].append((top, summary["newest"]["ended_at"]))
    lines = []
    for name, help_text in HISTORY_METRICS.items():
        rows = [(labels, v) for labels, v in samples[name] if _finite(v)]
        if rows:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [f"{name}{{{_labels(labels)}}} {_value(value)}" for labels, value in rows]
    atomic_write(path, "\n".join(lines) + "\n", mode=0o644)
    return path

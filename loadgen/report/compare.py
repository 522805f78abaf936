"""``loadgen compare BASELINE CURRENT [--tolerance PCT]``: regressions between two runs.

Each side is a ``report.json``, the suite's
``ai_writing_flow_v2_heavy_load_stress_report.json``, or a run directory
holding one. Components are matched by name; for each, every metric both
runs measured is listed with its old and new value and the relative change.
A change in the *worse* direction (lower success rate, throughput or
capacity; higher latency, memory or recovery time) beyond the tolerance is
a regression, and so is a component that passed before and fails now, or
that is missing from the current run.

Exit codes: 0 no regression, 1 at least one, 2 unusable input (unreadable
or truncated JSON, another schema version, a suite against a scenario).
"""

from __future__ import annotations

import json
import math
import os

from ..config import check_number
from ..errors import ExitCode, UsageError
from .build import SCHEMA_VERSION, SUITE_BASENAME

REPORT_NAMES = ("report.json", SUITE_BASENAME + ".json")

# (label, how to read it from a detailed_metrics entry, +1 higher is better / -1 lower is better)
METRICS = (
    ("success rate", lambda d: _pm(d, "success_rate", _success_rate(d)), +1),
    ("throughput ops/s", lambda d: d.get("throughput_ops_per_sec"), +1),
    ("p50 ms", lambda d: (d.get("latency_ms") or {}).get("p50"), -1),
    ("p99 ms", lambda d: (d.get("latency_ms") or {}).get("p99"), -1),
    ("peak memory MB", lambda d: d.get("peak_memory_mb"), -1),
    ("capacity", lambda d: _pm(d, "max_capacity"), +1),
    ("recovery time s", lambda d: d.get("recovery_time_seconds"), -1),
    ("recovery rate", lambda d: _pm(d, "recovery_rate"), +1),
)


def compare_command(baseline, current, tolerance="10"):
    """Print the comparison table; returns the exit code (0, 1). Raises :class:`UsageError`."""
    from tabulate import tabulate

    tol = parse_tolerance(tolerance)
    old_path, old = load_report(baseline)
    new_path, new = load_report(current)
    check_comparable(old, new, old_path, new_path)
    rows = compare_reports(old, new, tol)
    print(f"baseline: {old_path} ({_when(old)})")
    print(f"current:  {new_path} ({_when(new)})")
    print(tabulate([[r["component"], r["metric"], _fmt(r["old"]), _fmt(r["new"]), _change(r["change_pct"]),
                     r["verdict"]] for r in rows],
                   headers=["component", "metric", "baseline", "current", "change", "verdict"]))
    regressions = [r for r in rows if r["verdict"] == "REGRESSION"]
    if regressions:
        print(f"compare: {len(regressions)} regression(s) beyond {tol:g}%: "
              + "; ".join(f"{r['component']} {r['metric']}" for r in regressions))
        return ExitCode.FAILED
    print(f"compare: no regression beyond {tol:g}%")
    return ExitCode.OK


def parse_tolerance(text):
    """``"10"``, ``"10%"``, ``"2.5"`` → percent as float ≥ 0; :class:`UsageError` otherwise."""
    return check_number(str(text).strip().rstrip("%"), "--tolerance", 0, low_open=False,
                        expected="a percentage ≥ 0 like 10 or 10%")


def find_report(path):
    """The report file of ``path`` (a report file or a run directory); :class:`UsageError` if none."""
    if os.path.isdir(path):
        found = [os.path.join(path, n) for n in REPORT_NAMES if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise UsageError(f"{path}: no report.json or {SUITE_BASENAME}.json in this run directory "
                             "(rebuild it with `loadgen report`)")
        return max(found, key=os.path.getmtime)
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    return path


def load_report(path):
    """``(file, report dict)``; one-line :class:`UsageError` for anything unusable."""
    file = find_report(path)
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{file}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if not text.strip():
        raise UsageError(f"{file}: empty file, not a loadgen report")
    try:
        report = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{file}: not valid JSON (truncated?): {e.msg} at line {e.lineno}") from None
    if not isinstance(report, dict) or "schema_version" not in report or not isinstance(report.get("metadata"), dict):
        raise UsageError(f"{file}: not a loadgen report (no schema_version/metadata)")
    if not isinstance(report.get("detailed_metrics"), list):
        raise UsageError(f"{file}: not a loadgen report (no detailed_metrics list)")
    return file, report


def check_comparable(old, new, old_path="baseline", new_path="current"):
    """:class:`UsageError` unless both reports share the schema version and kind."""
    vo, vn = old.get("schema_version"), new.get("schema_version")
    if vo != vn:
        raise UsageError(f"schema versions differ: {old_path} has {vo}, {new_path} has {vn}; "
                         "compare reports of the same loadgen schema")
    if vn != SCHEMA_VERSION:
        raise UsageError(f"{new_path}: schema version {vn} is not the one this loadgen reads ({SCHEMA_VERSION})")
    ko, kn = old["metadata"].get("kind"), new["metadata"].get("kind")
    if ko != kn:
        what = "a suite against a single scenario" if "suite" in (ko, kn) else "two different scenarios"
        raise UsageError(f"cannot compare {what}: baseline is {ko!r}, current is {kn!r}")


def compare_reports(old, new, tolerance_pct):
    """Rows ``{component, metric, old, new, change_pct, verdict}``; verdict '', 'ok', 'better', 'REGRESSION'."""
    old_c = {d.get("test_name"): d for d in old["detailed_metrics"]}
    new_c = {d.get("test_name"): d for d in new["detailed_metrics"]}
    rows = []
    for name in list(old_c) + [n for n in new_c if n not in old_c]:
        a, b = old_c.get(name), new_c.get(name)
        if b is None:
            rows.append(_row(name, "component", "present", "missing", None, "REGRESSION"))
            continue
        if a is None:
            rows.append(_row(name, "component", "missing", "present", None, "new"))
            continue
        sa, sb = _status(a), _status(b)
        if sa == sb:
            verdict = "ok"
        else:
            verdict = "better" if sb == "PASSED" else "REGRESSION"
        rows.append(_row(name, "status", sa, sb, None, verdict))
        for label, read, direction in METRICS:
            va, vb = _number(read(a)), _number(read(b))
            if va is None and vb is None:
                continue
            change = _change_pct(va, vb)
            rows.append(_row(name, label, va, vb, change, _verdict(va, vb, change, direction, tolerance_pct)))
    return rows


def _verdict(old, new, change, direction, tol):
    if old is None or new is None:
        # A figure that vanished is a regression when it used to be there; a new one is news.
        return "REGRESSION" if new is None else "new"
    if change is None:
        return "ok"
    worse = -direction * change  # positive: the worse direction
    if worse > tol:
        return "REGRESSION"
    if -worse > tol:
        return "better"
    return "ok"


def _change_pct(old, new):
    if old is None or new is None:
        return None
    if old == new:
        return 0.0
    if old == 0:
        return math.copysign(math.inf, new)
    return (new - old) / abs(old) * 100.0


def _row(component, metric, old, new, change, verdict):
    return {"component": component, "metric": metric, "old": old, "new": new, "change_pct": change,
            "verdict": verdict}


def _status(d):
    return "PASSED" if d.get("success") else "FAILED"


def _pm(d, key, default=None):
    v = (d.get("performance_metrics") or {}).get(key)
    return default if v is None else v


def _success_rate(d):
    ok, bad = d.get("successful_operations") or 0, d.get("failed_operations") or 0
    return ok / (ok + bad) if ok + bad else None


def _number(v):
    if v is None or isinstance(v, bool):
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    return f"{v:.4g}"


def _change(c):
    if c is None:
        return ""
    if math.isinf(c):
        return "+∞" if c > 0 else "-∞"
    return f"{c:+.1f}%"


def _when(report):
    md = report.get("metadata") or {}
    bits = [str(md.get("kind")), str(md.get("timestamp") or "no timestamp")]
    if md.get("rebuilt_from_streams"):
        bits.append("rebuilt from streams")
    return ", ".join(bits)

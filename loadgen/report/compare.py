"""``loadgen compare BASELINE CURRENT [--tolerance PCT] [--alpha A] [--force]``: regressions between two runs.

Each side is a ``report.json``, the suite's
``ai_writing_flow_v2_heavy_load_stress_report.json``, or a run directory
holding one. Components are matched by name; for each, every metric both
runs measured is listed with its old and new value, the relative change,
the noise and a verdict.

A change is a regression only when it is both beyond the tolerance in the
*worse* direction (lower success rate, throughput or capacity; higher
latency, memory or recovery time) and beyond what the two runs' own noise
explains. Each metric row gets a two-sided p-value from the noise its report
keeps (``detailed_metrics[].noise``, see :func:`loadgen.result.noise_of`):

* throughput: Welch's t-test, from the per-second completed counts' sd and n;
* success rate: the two-proportion z-test on its successes and trials;
* p50, p95, p99: a z-test, standard errors from the 95 % intervals' half-widths ÷ 1.96;
* peak memory: a z-test, the per-second pool memory's sd as each peak's error;
* capacity: a z-test, from ``capacity_low``/``capacity_high`` (a 95 % interval) when
  the report has them, else from the search's bracket (the highest concurrency that
  passed and the lowest above it that failed) as its resolution;
* recovery time: a z-test, its 1 s resolution as the error.

Holm–Bonferroni over all the rows with a p-value keeps the chance of any
false alarm in one comparison at most ``alpha`` (default 0.01). A change
beyond the tolerance that is not significant reads "within noise"; a metric
without noise data (an older report) is judged by the tolerance alone and
says so. ``capacity_limits``' latency, throughput, memory and success rate
are those of the step its search ended on: shown, never judged. A component
that passed and now fails, or that is missing from the current run, is a
regression whatever the noise.

Like with like: runs whose load settings, target, profile (``metadata.run``)
or machine (``metadata.system_info``: cpu_count, total_memory_gb, machine)
differ are refused (exit 2) unless ``--force``, which compares them with a
warning; a report without ``metadata.run`` (an older loadgen) is compared
with a warning.

Exit codes: 0 no regression, 1 at least one, 2 unusable input (unreadable
or truncated JSON, a figure out of its range, another schema version, a suite against a scenario, runs
that differ without ``--force``).
"""

from __future__ import annotations

import json
import math
import os

from ..config import check_number
from ..errors import ExitCode, UsageError
from ..analysis import noise as stats
from ..streams import MAX_REPORT_BYTES, load_json
from .build import SCHEMA_VERSION, SUITE_BASENAME

REPORT_NAMES = ("report.json", SUITE_BASENAME + ".json")
DEFAULT_ALPHA = 0.01
MACHINE_KEYS = ("cpu_count", "total_memory_gb", "machine")
NOT_COMPARABLE = "not comparable: depends on where the search ended"
WITHIN_NOISE = "within noise"
TOLERANCE_ONLY = "no noise data: tolerance only"

# (label, how to read it from a detailed_metrics entry, +1 higher is better / -1 lower is better,
#  its key in the entry's noise dict)
METRICS = (
    ("success rate", lambda d: _pm(d, "success_rate", _success_rate(d)), +1, "success_rate"),
    ("throughput ops/s", lambda d: d.get("throughput_ops_per_sec"), +1, "throughput"),
    ("p50 ms", lambda d: (d.get("latency_ms") or {}).get("p50"), -1, "p50_ms"),
    ("p95 ms", lambda d: (d.get("latency_ms") or {}).get("p95"), -1, "p95_ms"),
    ("p99 ms", lambda d: (d.get("latency_ms") or {}).get("p99"), -1, "p99_ms"),
    ("peak memory MB", lambda d: d.get("peak_memory_mb"), -1, "peak_memory_mb"),
    ("capacity", lambda d: _pm(d, "max_capacity"), +1, "capacity"),
    ("recovery time s", lambda d: d.get("recovery_time_seconds"), -1, "recovery_time_seconds"),
    ("recovery rate", lambda d: _pm(d, "recovery_rate"), +1, None),
)
# A capacity search's figures of the step it ended on: shown, never judged.
SEARCH_STEP_METRICS = ("success rate", "throughput ops/s", "p50 ms", "p95 ms", "p99 ms", "peak memory MB")


def compare_command(baseline, current, tolerance="10", alpha=None, force=False):
    """Print the comparison table; returns the exit code (0, 1). Raises :class:`UsageError`."""
    from tabulate import tabulate

    tol = parse_tolerance(tolerance)
    a = parse_alpha(DEFAULT_ALPHA if alpha is None else alpha)
    old_path, old = load_report(baseline)
    new_path, new = load_report(current)
    check_comparable(old, new, old_path, new_path)
    warnings = check_like(old, new, force=force)
    rows = compare_reports(old, new, tol, alpha=a)
    print(f"baseline: {old_path} ({_when(old)})")
    print(f"current:  {new_path} ({_when(new)})")
    for w in warnings:
        print(f"warning: {w}")
    print(tabulate([[r["component"], r["metric"], _fmt(r["old"]), _fmt(r["new"]), _change(r["change_pct"]),
                     r["noise"], r["verdict"]] for r in rows],
                   headers=["component", "metric", "baseline", "current", "change", "noise", "verdict"]))
    for line in summary_lines(rows, tol, a):
        print(line)
    return ExitCode.FAILED if any(r["verdict"] == "REGRESSION" for r in rows) else ExitCode.OK


def summary_lines(rows, tol, alpha):
    """The lines after the table: regressions, changes within noise and rows not judged, each under its
    own name and each row with the threshold it was held to, then the verdict line (last)."""
    tested = sum(1 for r in rows if r["p"] is not None)
    how = f"beyond {tol:g}% and the noise (α {alpha:g}, Holm–Bonferroni over {tested} tests)"
    groups = (("regressions", [r for r in rows if r["verdict"] == "REGRESSION"]),
              (f"within noise (beyond {tol:g}% but not beyond the noise)",
               [r for r in rows if r["verdict"] == WITHIN_NOISE]),
              ("not judged", [r for r in rows if r["verdict"].startswith("not comparable")]))
    out = []
    for title, members in groups:
        if members:
            out.append(f"{title} ({len(members)}): " + "; ".join(f"{r['component']} {r['metric']}"
                                                                 + (f" ({_held(r)})" if _held(r) else "")
                                                                 for r in members))
    regressions, noisy = len(groups[0][1]), len(groups[1][1])
    counts = f"; {noisy} within noise" if noisy else ""
    out.append(f"compare: {regressions or 'no'} regression{'s' if regressions > 1 else ''} {how}{counts}")
    return out


def _held(r):
    """``p 0.00045 > 0.00029`` — a row's p-value against the threshold Holm held it to (its rank's)."""
    if r.get("p") is None or r.get("held_to") is None:
        return ""
    sign = "≤" if r["p"] <= r["held_to"] else ">"
    return f"p {r['p']:.2g} {sign} {r['held_to']:.2g}"


def parse_tolerance(text):
    """``"10"``, ``"10%"``, ``"2.5"`` → percent as float ≥ 0; :class:`UsageError` otherwise."""
    return check_number(str(text).strip().rstrip("%"), "--tolerance", 0, low_open=False,
                        expected="a percentage ≥ 0 like 10 or 10%")


def parse_alpha(text):
    """``"0.01"`` → the family-wise false-alarm rate, 0 < α < 1; :class:`UsageError` otherwise."""
    a = check_number(str(text).strip(), "--alpha", 0, 1, expected="a probability between 0 and 1 like 0.01")
    if a >= 1:
        raise UsageError(f"--alpha: expected a probability between 0 and 1 like 0.01, got {text}")
    return a


def find_report(path):
    """The report file of ``path`` (a report file or a run directory); :class:`UsageError` if none."""
    if os.path.isdir(path):
        found = [os.path.join(path, n) for n in REPORT_NAMES if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise UsageError(f"{path}: no report.json or {SUITE_BASENAME}.json in this run directory "
                             "(rebuild it with `loadgen report`)")
        return max(found, key=os.path.getmtime)
    if not os.path.lexists(path):
        raise UsageError(f"{path}: no such file or directory")
    return path


def load_report(path):
    """``(file, report dict)``; one-line :class:`UsageError` for anything unusable.

    The file is read with :func:`~loadgen.streams.load_json`: a regular file of at most
    :data:`~loadgen.streams.MAX_REPORT_BYTES` (a FIFO or ``/dev/zero`` is refused unread), JSON
    without NaN/Infinity, overlong integers or deep nesting. Its shape is checked where
    the comparison reads it: ``metadata`` an object, ``detailed_metrics`` a list of objects
    whose ``test_name`` is text and whose ``performance_metrics``, ``latency_ms`` and
    ``noise`` are objects when present.
    """
    file = find_report(path)
    report = load_json(file, MAX_REPORT_BYTES, "loadgen report")
    if not isinstance(report, dict) or "schema_version" not in report or not isinstance(report.get("metadata"), dict):
        raise UsageError(f"{file}: not a loadgen report (no schema_version/metadata)")
    if not isinstance(report.get("detailed_metrics"), list):
        raise UsageError(f"{file}: not a loadgen report (no detailed_metrics list)")
    for i, d in enumerate(report["detailed_metrics"]):
        where = f"{file}: not a loadgen report (detailed_metrics[{i}]"
        if not isinstance(d, dict):
            raise UsageError(f"{where} is not an object)")
        if not isinstance(d.get("test_name"), str):
            raise UsageError(f"{where}.test_name is not text)")
        for key in ("performance_metrics", "latency_ms", "noise"):
            if d.get(key) is not None and not isinstance(d[key], dict):
                raise UsageError(f"{where}.{key} is not an object)")
        bad = figure_out_of_range(d)
        if bad:
            raise UsageError(f"{where}.{bad})")
    md = report["metadata"]
    for key in ("system_info", "run"):
        if md.get(key) is not None and not isinstance(md[key], dict):
            raise UsageError(f"{file}: not a loadgen report (metadata.{key} is not an object)")
    return file, report


# The ranges of the figures a comparison reads or shows (a detailed_metrics entry's): what loadgen
# can write. A figure outside its range (a success rate of 1e308, a p99 of -1e308) is no measurement
# of a run: the file is refused, never judged "better". None (no value) is always allowed.
RATE = "a rate in 0–1"
NON_NEGATIVE = "a finite number ≥ 0"
COUNT = "a whole number ≥ 0"
_RATE_KEYS = ("success_rate", "error_rate", "dropped_rate", "recovery_rate", "baseline_success_rate")
_NON_NEGATIVE_KEYS = ("throughput", "peak_memory_mb", "peak_cpu_percent", "max_capacity", "capacity_low",
                      "capacity_high", "recovery_time_seconds", "cpu_median_percent", "cpu_p90_percent")
_COUNT_KEYS = ("operations", "crashed", "timed_out", "dropped", "breaches")
_ENTRY_FIGURES = (("throughput_ops_per_sec", NON_NEGATIVE), ("peak_memory_mb", NON_NEGATIVE),
                  ("peak_cpu_percent", NON_NEGATIVE), ("duration_seconds", NON_NEGATIVE),
                  ("recovery_time_seconds", NON_NEGATIVE), ("success_rate", RATE),
                  ("total_operations", COUNT), ("successful_operations", COUNT), ("failed_operations", COUNT),
                  ("max_concurrent_operations", COUNT))


def _in_range(v, kind):
    """True when ``v`` (None: no value) is a JSON number of ``kind`` (:data:`RATE`, :data:`NON_NEGATIVE`,
    :data:`COUNT`)."""
    if v is None:
        return True
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    if kind == COUNT:
        return isinstance(v, int) and v >= 0
    if not math.isfinite(v) or v < 0:
        return False
    return kind != RATE or v <= 1


def figure_out_of_range(d):
    """The first figure of ``d`` (a ``detailed_metrics`` entry) outside what loadgen writes, as
    ``"path = value, not KIND"``; None when all are in range. Checked: the entry's counts, rates and
    peaks, its ``performance_metrics``' rates, non-negative figures and counts, every latency summary
    (``latency_ms``, ``service_time_ms``, ``response_time_ms``: finite, ≥ 0), ``accounting``'s counts, and
    the ``noise`` the tests read (counts, sd ≥ 0, intervals lo ≤ hi, successes ≤ trials)."""
    checks = [(k, d.get(k), kind) for k, kind in _ENTRY_FIGURES]
    pm = d.get("performance_metrics") or {}
    checks += [(f"performance_metrics.{k}", pm.get(k), RATE) for k in _RATE_KEYS]
    checks += [(f"performance_metrics.{k}", pm.get(k), NON_NEGATIVE) for k in _NON_NEGATIVE_KEYS]
    checks += [(f"performance_metrics.{k}", pm.get(k), COUNT) for k in _COUNT_KEYS]
    checks += [(f"performance_metrics.{k}", v, NON_NEGATIVE) for k, v in pm.items() if k.endswith("_ms")]
    for key in ("latency_ms", "service_time_ms", "response_time_ms", "start_lateness_ms"):
        summary = d.get(key)
        if summary is not None and not isinstance(summary, dict):
            return f"{key} is not an object"
        checks += [(f"{key}.{k}", v, COUNT if k == "count" else NON_NEGATIVE) for k, v in (summary or {}).items()]
    acc = d.get("accounting")
    if acc is not None and not isinstance(acc, dict):
        return "accounting is not an object"
    checks += [(f"accounting.{k}", v, COUNT) for k, v in (acc or {}).items()]
    for key, n in (d.get("noise") or {}).items():
        if not isinstance(n, dict):
            return f"noise.{key} is not an object"
        checks += [(f"noise.{key}.{k}", n.get(k), COUNT) for k in ("n", "successes", "trials")]
        checks += [(f"noise.{key}.{k}", n.get(k), NON_NEGATIVE) for k in ("sd", "mean", "resolution_s")]
        ci = n.get("ci95")
        if ci is not None and not (isinstance(ci, list) and len(ci) == 2 and all(_in_range(x, NON_NEGATIVE)
                                                                                   and x is not None for x in ci)
                                   and ci[0] <= ci[1]):
            return f"noise.{key}.ci95 = {_show(ci)}, not an interval [lo, hi] with 0 ≤ lo ≤ hi"
        if isinstance(n.get("successes"), int) and isinstance(n.get("trials"), int) and n["successes"] > n["trials"]:
            return f"noise.{key}: successes {n['successes']} > trials {n['trials']}"
    for path, v, kind in checks:
        if not _in_range(v, kind):
            return f"{path} = {_show(v)}, not {kind}"
    return None


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


def run_differences(old, new):
    """What differs between the two runs' ``metadata.run`` (profile, target, load settings) and machines
    (``system_info``: cpu_count, total_memory_gb, machine): ``["profile: ci ≠ nightly", …]``; ``None``
    for the runs when a side has no ``metadata.run``."""
    mo, mn = old.get("metadata") or {}, new.get("metadata") or {}
    diffs = []
    ro, rn = mo.get("run"), mn.get("run")
    if isinstance(ro, dict) and isinstance(rn, dict):
        diffs.extend(_dict_diff(ro, rn, ""))
    so, sn = mo.get("system_info") or {}, mn.get("system_info") or {}
    for k in MACHINE_KEYS:
        if k in so and k in sn and so[k] != sn[k]:
            diffs.append(f"machine {k}: {_show(so[k])} ≠ {_show(sn[k])}")
    return diffs


def _dict_diff(a, b, prefix):
    out = []
    for k in list(a) + [k for k in b if k not in a]:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "flow_params" and k != "target_args":
            out.extend(_dict_diff(va, vb, f"{prefix}{k}."))
        elif va != vb:
            out.append(f"{prefix}{k}: {_show(va)} ≠ {_show(vb)}")
    return out


def _show(v):
    if v is None:
        return "unset"
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))


def check_like(old, new, force=False):
    """Warnings (a list of str) for two reports that may be compared; :class:`UsageError` (exit 2, one
    line naming what differs) for runs of another load, target, profile or machine unless ``force``.
    A report without ``metadata.run`` (an older loadgen) is compared with a warning, as ``force`` does."""
    diffs = run_differences(old, new)
    missing = [side for side, rep in (("baseline", old), ("current", new))
               if not isinstance((rep.get("metadata") or {}).get("run"), dict)]
    warnings = []
    if missing:
        warnings.append(f"{' and '.join(missing)} {'has' if len(missing) == 1 else 'have'} no metadata.run (an "
                        "older loadgen or a rebuilt report): the load, target and profile of the runs were not checked")
    if diffs:
        what = "; ".join(diffs)
        if not (force or missing):
            raise UsageError(f"the runs differ, {what}: compare runs of the same load, target, profile and "
                             "machine (--force compares them anyway)")
        warnings.append(f"the runs differ, {what}: compared anyway" + (" (--force)" if force else ""))
    return warnings


def compare_reports(old, new, tolerance_pct, alpha=DEFAULT_ALPHA):
    """Rows ``{component, metric, old, new, change_pct, p, noise, verdict}``; verdict '', 'ok', 'better',
    'REGRESSION', 'within noise', 'new' or 'not comparable: …'. ``p``: the row's two-sided p-value (None
    without one); significance by Holm–Bonferroni at ``alpha`` over every row with a p-value."""
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
        search = _is_search(a) or _is_search(b)
        for label, read, direction, key in METRICS:
            va, vb = _number(read(a)), _number(read(b))
            if va is None and vb is None:
                continue
            row = _row(name, label, va, vb, _change_pct(va, vb), None)
            row["direction"] = direction
            if search and label in SEARCH_STEP_METRICS:
                row["verdict"], row["noise"] = NOT_COMPARABLE, "—"
            elif va is not None and vb is not None:
                row["p"], row["se"], row["basis"] = metric_test(key, va, vb, a, b)
            rows.append(row)
    significant = stats.holm([r["p"] for r in rows], alpha)
    for r, held in zip(rows, stats.holm_thresholds([r["p"] for r in rows], alpha)):
        r["held_to"] = held
    for r, sig in zip(rows, significant):
        if r["verdict"] is None:
            r["verdict"] = _verdict(r, tolerance_pct, sig)
        r.pop("direction", None)
    return rows


def metric_test(key, va, vb, a, b):
    """``(p, se, basis)`` of one metric: the two-sided p-value of the change ``va`` → ``vb`` (None
    when a side has no noise data), the standard error of the difference (None when the test has
    none to show) and a word on the method."""
    na, nb = (a.get("noise") or {}).get(key), (b.get("noise") or {}).get(key)
    if key != "capacity" and (not isinstance(na, dict) or not isinstance(nb, dict)):
        return None, None, None
    try:
        if key == "capacity":
            return _capacity_test(va, vb, a, b)
        if key == "throughput":
            p = stats.welch_p(va, na["sd"], na["n"], vb, nb["sd"], nb["n"])
            se = stats.combined_se(na["sd"] / math.sqrt(na["n"]), nb["sd"] / math.sqrt(nb["n"]))
            return p, se, "Welch"
        if key == "success_rate":
            ta, tb = na["trials"], nb["trials"]
            return stats.proportions_p(va * ta, ta, vb * tb, tb), None, "2 proportions"
        if key in ("p50_ms", "p90_ms", "p95_ms", "p99_ms"):
            se = stats.combined_se(stats.interval_se(*na["ci95"]), stats.interval_se(*nb["ci95"]))
            return stats.z_p(vb - va, se), se, "interval"
        if key == "peak_memory_mb":
            se = stats.combined_se(na["sd"], nb["sd"])
            return stats.z_p(vb - va, se), se, "sd"
        if key == "recovery_time_seconds":
            se = stats.combined_se(stats.resolution_se(na["resolution_s"]), stats.resolution_se(nb["resolution_s"]))
            return stats.z_p(vb - va, se), se, "resolution"
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None, None, None  # noise data of another shape: judged by the tolerance alone
    return None, None, None


def _capacity_test(va, vb, a, b):
    sa, sb = _capacity_se(a), _capacity_se(b)
    if sa is None or sb is None:
        return None, None, None
    se = stats.combined_se(sa[0], sb[0])
    return stats.z_p(vb - va, se), se, "interval" if sa[1] == sb[1] == "interval" else "search bracket"


def _capacity_se(d):
    """``(se, basis)`` of a component's capacity: its 95 % interval (``capacity_low``/``capacity_high``)
    when the report has one, else the search's bracket — from the highest concurrency that passed to the
    lowest above it that failed — read as a resolution; None without either."""
    pm = d.get("performance_metrics") or {}
    lo, hi = _number(pm.get("capacity_low")), _number(pm.get("capacity_high"))
    if lo is not None and hi is not None and hi >= lo:
        return stats.interval_se(lo, hi), "interval"
    good = _number(pm.get("max_capacity"))
    steps = pm.get("capacity_steps")
    if good is None or not isinstance(steps, list):
        return None
    failed = [s.get("concurrency") for s in steps if isinstance(s, dict) and not s.get("ok")
              and isinstance(s.get("concurrency"), (int, float)) and s["concurrency"] > good]
    bad = min(failed) if failed else good  # none failed above it: the search stopped at the cap
    return stats.resolution_se(bad - good), "bracket"


def _is_search(d):
    """True for a capacity search's component (its figures are those of the step it ended on)."""
    return d.get("test_name") == "capacity_limits" or "capacity_steps" in (d.get("performance_metrics") or {})


def _verdict(r, tol, significant):
    old, new, change = r["old"], r["new"], r["change_pct"]
    if old is None or new is None:
        # A figure that vanished is a regression when it used to be there; a new one is news.
        r["noise"] = "—"
        return "REGRESSION" if new is None else "new"
    r["noise"] = _noise_text(r)
    if change is None:
        return "ok"
    worse = -r["direction"] * change  # positive: the worse direction
    if abs(worse) <= tol:
        return "ok"
    if r["p"] is not None and not significant:
        return WITHIN_NOISE
    return "REGRESSION" if worse > 0 else "better"


def _noise_text(r):
    if r["p"] is None:
        return TOLERANCE_ONLY
    bits = []
    if r.get("se") is not None and r["old"]:
        bits.append(f"±{stats.Z95 * r['se'] / abs(r['old']) * 100:.1f}%")
    bits.append(_held(r) or f"p {r['p']:.2g}")  # with its Holm threshold: "p 0.00045 > 0.00029"
    return " ".join(bits)


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
            "p": None, "se": None, "basis": None, "held_to": None, "noise": "", "verdict": verdict}


def _status(d):
    return "PASSED" if d.get("success") else "FAILED"


def _pm(d, key, default=None):
    v = (d.get("performance_metrics") or {}).get(key)
    return default if v is None else v


def _success_rate(d):
    ok, bad = _number(d.get("successful_operations")) or 0, _number(d.get("failed_operations")) or 0
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

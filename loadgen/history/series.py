"""What makes nights comparable (the series key) and the figures a history keeps of each night.

A *series* is the nights that did the same thing on the same machine with the
same loadgen: :func:`series_key` hashes the report's kind, its ``metadata.run``
(profile, target with its flow parameters and arguments, load settings), the
command with its output-only flags dropped (``--out`` differs every night),
the machine (``system_info``: cpu_count, total_memory_gb, machine) and
loadgen's version. Any change of these starts a new series, named by what
changed (:func:`describe_change`).

The ``--label`` (``metadata.label``, e.g. a commit id) is recorded per night
and shown beside it, but is *not* part of the key: a commit id changes every
night, and the point of a history is to tell at which label a figure moved.

:func:`figures` reads a report's per-component figures as rows
``(component, metric, value, low, high)``; :data:`DIRECTIONS` says which
way each metric is worse.
"""

from __future__ import annotations

import hashlib
import json
import math

from .. import options as opts
from ..report.fmt import measures_of

MACHINE_KEYS = ("cpu_count", "total_memory_gb", "machine")

# Flags that change where or how a run is written or shown, not what it measures: dropped from the
# command before it enters the key (a nightly job's --out is new every night).
OUTPUT_FLAGS = ("--out", "--quiet", "--log-level", "--prom-textfile", "--metrics-port", "--progress-interval",
                "--stop-file", "--label")

# +1: higher is better (a drop is a regression); -1: lower is better. Named per-component metrics
# (measure.NAME.p99_ms, check.NAME.pass_rate, op.NAME.…) take the direction of their last part.
DIRECTIONS = {
    "throughput_ops_per_s": +1,
    "success_rate": +1,
    "p50_ms": -1,
    "p90_ms": -1,
    "p99_ms": -1,
    "peak_memory_mb": -1,
    "capacity": +1,
    "leak_slope_mb_per_s": -1,
    "recovery_time_s": -1,
    "pass_rate": +1,
}
# The order charts and tables show a component's metrics in.
CORE_METRICS = tuple(DIRECTIONS)[:-1]


def direction(metric):
    """+1 when a higher ``metric`` is better, -1 when lower is better (``measure.x.p99_ms`` → -1)."""
    return DIRECTIONS.get(metric.rsplit(".", 1)[-1], -1)


def _flags_with_values():
    """Flags of run/suite that take a value (the next word), from the one options table."""
    return {o.flag for o in opts.OPTIONS if o.flag and o.action != "store_true"}


def normalised_command(command):
    """``command`` (``"loadgen suite --profile ci --out /x --quiet"``) without its output-only flags and
    their values: ``"loadgen suite --profile ci"``. The command is stored space-joined, so it is split
    on spaces (a value with a space splits alike on every night, so the key is still stable)."""
    if not isinstance(command, str):
        return None
    takes_value = _flags_with_values()
    words, out, skip = command.split(), [], False
    for w in words:
        if skip:
            skip = False
            continue
        flag = w.partition("=")[0]
        if flag in OUTPUT_FLAGS:
            skip = "=" not in w and flag in takes_value
            continue
        out.append(w)
    return " ".join(out)


def series_fields(report):
    """The fields that make nights comparable, as a plain dict (what :func:`series_key` hashes)."""
    md = report.get("metadata") or {}
    si = md.get("system_info") if isinstance(md.get("system_info"), dict) else {}
    return {
        "kind": md.get("kind"),
        "run": md.get("run"),
        "command": normalised_command(md.get("command")),
        "machine": {k: si.get(k) for k in MACHINE_KEYS},
        "loadgen": md.get("version"),
    }


def series_key(fields):
    """A short stable id (12 hex digits) of :func:`series_fields`."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def describe_change(old, new):
    """What differs between two nights' series fields, as text: ``"run.target.flow_params.
    processing_time_base: (none) → 0.125; loadgen: 0.1.0 → 0.2.0"`` (at most 4 differences named)."""
    diffs = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        elif a != b:
            diffs.append(f"{path}: {_show(a)} → {_show(b)}")

    walk(old or {}, new or {}, "")
    more = f" (+{len(diffs) - 4} more)" if len(diffs) > 4 else ""
    return "; ".join(diffs[:4]) + more if diffs else "nothing recorded differs"


def _show(v):
    if v is None:
        return "(none)"
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _num(v):
    """A finite float, or None (a missing, textual, boolean or infinite value is no figure)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _dict(v):
    return v if isinstance(v, dict) else {}


def component_failed(d):
    """True when a ``detailed_metrics`` entry failed (its criteria, or it ended with a non-zero code)."""
    return d.get("success") is False or bool(d.get("exit_code"))


def figures(report):
    """``[(component, metric, value, low, high)]`` of every component of ``report`` (``low``/``high``: an
    interval when the report has one — a capacity's, a percentile's 95 % — else None). Figures a
    component did not produce are left out."""
    rows = []
    for d in report.get("detailed_metrics") or []:
        if not isinstance(d, dict) or not isinstance(d.get("test_name"), str):
            continue
        name = d["test_name"]
        pm, lat, noise = _dict(d.get("performance_metrics")), _dict(d.get("latency_ms")), _dict(d.get("noise"))

        def add(metric, value, low=None, high=None):
            value = _num(value)
            if value is not None:
                rows.append((name, metric, value, _num(low), _num(high)))

        if "noise" not in d or "throughput" in noise:
            # Not over fewer than two whole loaded seconds (no per-second noise: result.noise_of): such a
            # throughput is mostly the pool's start and the tail — the ci profile's capacity_limits,
            # 120 operations in 0.6 s, read 222 or 202 ops/s by how fast its pool started, and a history
            # announced that as a change.
            add("throughput_ops_per_s", d.get("throughput_ops_per_sec"))
        rate = pm.get("success_rate")
        if rate is None and isinstance(d.get("successful_operations"), int) and d.get("total_operations"):
            rate = d["successful_operations"] / d["total_operations"]
        add("success_rate", rate)
        for p in ("p50", "p90", "p99"):
            ci = _dict(noise.get(f"{p}_ms")).get("ci95") or (None, None)
            add(f"{p}_ms", lat.get(p), *(list(ci)[:2] if isinstance(ci, (list, tuple)) else (None, None)))
        add("peak_memory_mb", d.get("peak_memory_mb"))
        add("capacity", pm.get("max_capacity"), pm.get("capacity_low"), pm.get("capacity_high"))
        add("leak_slope_mb_per_s", _dict(d.get("leak")).get("slope_mb_per_s"))
        add("recovery_time_s", d.get("recovery_time_seconds"))
        for m, s in measures_of(d).items():  # the median only: a stage's p99 moved 14 % night to night (A/A), its p50 5 %
            add(f"measure.{m}.p50_ms", _dict(s).get("p50"))
        for c, s in _dict(d.get("checks")).items():
            s = _dict(s)
            rate = s.get("rate")
            if rate is None and isinstance(s.get("passes"), int) and isinstance(s.get("fails"), int) \
                    and s["passes"] + s["fails"]:
                rate = s["passes"] / (s["passes"] + s["fails"])
            add(f"check.{c}.pass_rate", rate)
        for op, o in _dict(d.get("ops")).items():
            o = _dict(o)
            add(f"op.{op}.success_rate", o.get("success_rate"))
            add(f"op.{op}.p99_ms", _dict(o.get("latency_ms")).get("p99"))
    return rows

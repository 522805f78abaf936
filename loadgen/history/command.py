"""``loadgen history ROOT [--rebuild] [--format text|json] [--label GLOB] [--prom-textfile PATH] [--no-page]``.

Brings the root's store up to date (``store.py``), cuts its nights into
series (``series.py``), finds each series' change points (``detect.py``),
writes ``ROOT/history.html`` (``page.py``) and prints the verdict on the
newest night. Exit codes (DESIGN §10): 0 the newest night is fine (or its
series is too young to judge, or it began a new series); 1 it lies in a
regressed segment, or it failed (kept, marked, never a baseline); 2 nothing
can be judged (a root without runs, a store from a newer loadgen, a bad
flag): one line, no traceback.

Text output, for people and for ``scripts/nightly.sh`` (which mails the
lines that start with ``NEW`` and the new-series line)::

    history: ROOT: 40 nights, 2 series; newest 20260210T010000Z; page ROOT/history.html
    series a1b2c3d4e5f6: 12 nights (20260130… → 20260210…), 1 failed; began with 20260130…: run.target…: 0.1 → 0.125
    NEW regression concurrent_load throughput_ops_per_s -10.2% from 20260208T010000Z (148.1 → 133.0; p 3e-05)
      change io_stress p99_ms +6.0% from 20260201T010000Z (improvement…)
    history: REGRESSED (1 figure): concurrent_load throughput_ops_per_s -10.2% since 20260208T010000Z
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import time

from ..errors import ExitCode, UsageError
from . import detect, store

PAGE_FILE = "history.html"


def history_command(root, rebuild=False, fmt="text", label=None, prom_textfile=None, page=True):
    """Judge the history under ``root``; prints the verdict (``fmt`` text or json), writes the page and the
    textfile; returns the exit code. :class:`UsageError` for what cannot be judged."""
    if fmt not in ("text", "json"):
        raise UsageError(f"--format: expected text or json, got {fmt!r}")
    if prom_textfile:
        folder = os.path.dirname(os.path.abspath(prom_textfile))
        if not os.path.isdir(folder):  # before anything is read or written
            raise UsageError(f"--prom-textfile {prom_textfile!r}: folder {folder!r} does not exist")
    loaded = store.open_store(root, rebuild=rebuild)
    for w in loaded.warnings:
        print(f"loadgen: warning: {w}", file=sys.stderr)
    nights = loaded.nights
    if label:
        nights = [n for n in nights if n.label is not None and fnmatch.fnmatchcase(n.label, label)]
        if not nights:
            raise UsageError(f"{root}: no night with a label matching {label!r}")
    verdicts = [detect.judge_series(k, ns, why) for k, ns, why in detect.split_series(nights)]
    newest = nights[-1]
    current = next(v for v in verdicts if v.key == newest.series)
    summary = summarise(root, nights, verdicts, current, newest, loaded)
    if page:
        from .page import write_page

        summary["page"] = write_page(os.path.join(root, PAGE_FILE), summary, verdicts)
    if prom_textfile:
        from ..report.prom import write_history_textfile

        write_history_textfile(prom_textfile, summary)
    if fmt == "json":
        print(json.dumps(summary, indent=1, sort_keys=True, default=str))
    else:
        print_text(summary)
    return summary["exit_code"]


def _night(n):
    return {"night": n.name, "ended_at": n.ended_at, "label": n.label, "exit_code": n.exit_code, "failed": n.failed,
            "failed_components": n.failed_components, "rebuilt_from_streams": n.rebuilt, "dir_present": n.present,
            "report": os.path.join(n.name, n.report) if n.report and n.present else None}


def _found(f):
    c = f.change
    return {"component": f.component, "metric": f.metric, "night": f.night.name, "label": f.night.label,
            "ended_at": f.night.ended_at, "before": c.before, "after": c.after, "change_pct": round(c.change_pct, 3),
            "p": c.p, "direction": "regression" if c.worse else "improvement", "current": f.current, "new": f.new}


def summarise(root, nights, verdicts, current, newest, loaded):
    """The verdict as plain data (what ``--format json`` prints and the page and textfile read)."""
    judged = sum(1 for used, _ in current.segments.values())
    regressions = current.regressions
    earlier = [n for n in nights if n.series != newest.series]
    if newest.failed:
        verdict, code = "failed", ExitCode.FAILED
    elif regressions:
        verdict, code = "regressed", ExitCode.FAILED
    elif len(current.nights) == 1 and earlier:
        verdict, code = "new_series", ExitCode.OK
    elif not judged:
        verdict, code = "baseline", ExitCode.OK
    else:
        verdict, code = "ok", ExitCode.OK
    return {
        "root": os.path.abspath(root),
        "store": store.store_path(root),
        "generated_at": time.time(),
        "nights": len(nights),
        "added": loaded.added,
        "skipped": [{"night": n, "why": w} for n, w in loaded.skipped],
        "warnings": loaded.warnings,
        "newest": _night(newest),
        "verdict": verdict,
        "exit_code": int(code),
        "min_nights": detect.MIN_NIGHTS,
        "series": [{
            "key": v.key,
            "current": v is current,
            "nights": [_night(n) for n in v.nights],
            "started_by": v.started_by,
            "figures_judged": len(v.segments),
            "changes": [_found(f) for f in v.found],
            "regressions": [_found(f) for f in v.regressions],
        } for v in verdicts],
    }


def print_text(s):
    cur = next(x for x in s["series"] if x["current"])
    print(f"history: {s['root']}: {s['nights']} nights, {len(s['series'])} series; newest {s['newest']['night']}"
          + (f"; page {s['page']}" if s.get("page") else ""))
    for x in s["series"]:
        ns = x["nights"]
        failed = sum(1 for n in ns if n["failed"])
        began = f"; began with {ns[0]['night']}: {x['started_by']}" if x["started_by"] else ""
        print(f"series {x['key']}{' (newest)' if x['current'] else ''}: {len(ns)} nights ({ns[0]['night']} → "
              f"{ns[-1]['night']}){f', {failed} failed' if failed else ''}{began}")
        if not x["current"]:
            continue
        for c in x["changes"]:
            what = (f"{c['direction']} {c['component']} {c['metric']} {c['change_pct']:+.1f}% from {c['night']}"
                    f"{' (label ' + c['label'] + ')' if c['label'] else ''} ({c['before']:.4g} → {c['after']:.4g}; "
                    f"p {c['p']:.1g})")
            print(f"NEW {what}" if c["new"] else f"  change {what}")
    n = s["newest"]
    if s["verdict"] == "failed":
        comps = f"; failed: {', '.join(n['failed_components'])}" if n["failed_components"] else ""
        print(f"history: FAILED: the newest night {n['night']} failed (exit {n['exit_code']}{comps}): kept and marked, "
              "never a baseline")
    elif s["verdict"] == "regressed":
        regs = cur["regressions"]
        print(f"history: REGRESSED ({len(regs)} figure(s)): " + "; ".join(
            f"{r['component']} {r['metric']} {r['change_pct']:+.1f}% since {r['night']}" for r in regs))
    elif s["verdict"] == "new_series":
        print(f"history: new series: {n['night']} began series {cur['key']} ({cur['started_by']})")
    elif s["verdict"] == "baseline":
        usable = sum(1 for x in cur["nights"] if not x["failed"])
        print(f"history: no verdict yet: the series has {usable} usable night(s); change points need "
              f"{s['min_nights']}")
    else:
        print(f"history: ok: {cur['figures_judged']} figures judged, the newest night lies in no regressed segment")

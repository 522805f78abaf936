"""``loadgen report FLEET_RUN_DIR``: a fleet's report again, from its shards' run directories.

A fleet run directory holds the master's streams (``events.jsonl`` with the
``fleet`` events, ``timeseries.jsonl`` with one merged line per second and
each shard's part of it) and, under ``shards/N``, each shard's own run
directory when the shards could write there (one machine, a shared file
system, or copied in afterwards). The rebuild merges what the shards' own
directories hold — a ``report.json``, else the report rebuilt from that
shard's streams (``report/rebuild.py``) — exactly as the master merges
returned results. A shard whose directory is not here counts as lost: its
operations in the fleet's timeseries count as ``lost`` (exit 4). So a shard
the master lost mid-run, which went on and wrote its own report, is whole
again in the rebuilt report: nothing it measured is missing.
"""

from __future__ import annotations

import os

from ..errors import ExitCode
from ..streams import EVENTS, TIMESERIES, load_json, read_jsonl
from .merge import (add_lost, lost_accounting, merge_components, result_from_dict, shard_row_from_results,
                    streamed_ops)

REPORT_JSON = "report.json"


def is_fleet_dir(run_dir):
    """True when ``run_dir``'s events name a fleet (the master's ``submit`` or ``start`` event)."""
    path = os.path.join(run_dir, EVENTS)
    if not os.path.isfile(path):
        return False
    return any(e.get("type") == "fleet" for e in read_jsonl(path))


def rebuild_fleet(run_dir):
    """The fleet report dict of ``run_dir`` from its shards' directories (see the module)."""
    from ..report import build_report
    from ..report.rebuild import rebuild

    events = read_jsonl(os.path.join(run_dir, EVENTS))
    fleet_events = [e for e in events if e.get("type") == "fleet"]
    submit = next((e for e in fleet_events if e.get("name") in ("submit", "start") and e.get("shards")), {})
    ends = {e.get("shard"): e for e in fleet_events if e.get("name") == "shard_end"}
    kind = submit.get("kind") or "fleet"
    names = submit.get("scenarios") or [kind]
    shards = submit.get("shards") or []
    lines = read_jsonl(os.path.join(run_dir, TIMESERIES)) if os.path.isfile(os.path.join(run_dir, TIMESERIES)) else []
    per_shard, rows, missing = [], [], []
    for sh in shards:
        i = sh.get("shard")
        label = f"shard {i}@{sh.get('host')}"
        where = _shard_dir(run_dir, submit.get("run_id"), i, (ends.get(i) or {}).get("run_dir"))
        row = {"index": i, "host": sh.get("host"), "worker": sh.get("worker"), "run_dir": where}
        if where and os.path.isfile(os.path.join(where, REPORT_JSON)):
            data, row["status"] = load_json(os.path.join(where, REPORT_JSON)), "report"
        elif where and os.path.isfile(os.path.join(where, EVENTS)):
            data, row["status"] = rebuild(where), "rebuilt from its streams"
        else:
            data = None
        if data is None:
            seconds = [dict(p, scenario=None) for ln in lines for k, p in (ln.get("per_shard") or {}).items()
                       if k == str(i)]
            row.update(status="lost", reason="its run directory is not here (copy it to shards/N to merge it)",
                       lost_operations=streamed_ops(seconds), seconds_streamed=len(seconds))
            missing.append((label, seconds))
        else:
            results = [result_from_dict(d) for d in data.get("detailed_metrics") or []]
            per_shard.append((label, results))
            row.update(shard_row_from_results(results), exit_code=data.get("exit_code"))
        rows.append(row)
    merged = merge_components(per_shard)
    for label, seconds in missing:
        add_lost(merged, lost_accounting(seconds, names[0]), label)
    times = [e["t"] for e in events if isinstance(e.get("t"), (int, float))]
    report = build_report(merged, kind=kind, started_at=min(times, default=0.0), ended_at=max(times, default=0.0),
                          thresholds={}, run_dir=os.path.abspath(run_dir), command=None)
    lost = sum(1 for r in rows if r["status"] == "lost")
    report["fleet"] = {"scheduler": submit.get("scheduler"), "run_id": submit.get("run_id"), "mode": submit.get("mode"),
                       "shard_count": len(shards), "shards_finished": len(shards) - lost, "shards_lost": lost,
                       "rebuilt": True, "shards": rows, "warnings": [],
                       "notes": ["rebuilt from the shards' own run directories: each shard's whole record, "
                                 "merged exactly (HDR histograms, counts)"]}
    md = report["metadata"]
    md["rebuilt_from_streams"] = True
    md["rebuild_note"] = (f"fleet of {len(shards)} shard(s) rebuilt from their run directories"
                          + (f"; {lost} not here, their streamed operations counted as lost" if lost else ""))
    report["recommendations"].append(md["rebuild_note"])
    if lost:
        report["exit_code"] = ExitCode.worst([report["exit_code"], ExitCode.DEGRADED])
    return report


def _shard_dir(run_dir, run_id, index, recorded):
    """The first of: ``shards/N`` under the fleet's directory, the directory the shard said it wrote
    (when it exists here), this machine's temp fallback (``shard._shard_dir``); None if none exists."""
    import tempfile

    candidates = [os.path.join(run_dir, "shards", str(index)), recorded]
    if run_id:
        candidates.append(os.path.join(tempfile.gettempdir(), "loadgen-fleet", str(run_id), str(index)))
    return next((c for c in candidates if c and os.path.isdir(c)), None)

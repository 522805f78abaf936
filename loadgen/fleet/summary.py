"""The fleet's report: the shards' results merged, the per-machine table, the exit code.

Built by the master (``master.py``) once its shards ended, from what it kept
of each (:class:`~loadgen.fleet.state.ShardState`): a finished shard's
results are merged exactly (``merge.py``); a lost one is shown from the
seconds it streamed, and its loss makes the exit code 4.
"""

from __future__ import annotations

import os

from ..config import TIMING
from ..errors import ExitCode, UsageError
from .merge import (add_lost, lost_accounting, merge_components, result_from_dict, shard_row_from_results,
                    shard_row_from_seconds, streamed_ops)

LATE_WARNING_S = 0.05  # a shard whose load began this long after the instant is named in the warnings


def fleet_report(master, run_dir, started, ended):
    """The fleet's report from ``master`` (a :class:`~loadgen.fleet.master.FleetMaster` after its
    shards ended): components merged, the ``fleet`` key, the exit code (a lost shard: 4); written to
    ``run_dir``. Returns an ``api.Report``; :class:`UsageError` when every shard refused the plan."""
    from .. import api
    from ..report import build_report, write_reports
    from ..report.build import run_info

    finished = [s for s in master.shards if s.status == "finished"]
    errors = [s for s in master.shards if s.usage_error]
    if errors and len(errors) == len(master.shards):
        master.close_streams()
        s = errors[0]
        raise UsageError(f"shard {s.index} on {s.host}: {s.reason}")
    per_shard = [(s.label, [result_from_dict(d) for d in s.result.get("results") or []]) for s in finished]
    merged = merge_components(per_shard)
    for s in master.shards:
        if s.status != "finished":
            add_lost(merged, lost_accounting(s.seconds, master.names[0]), s.label)
    report = build_report(merged, kind=master.report_kind, started_at=started, ended_at=ended,
                          thresholds=master.thresholds, run_dir=run_dir, command=master.command,
                          seed=master.settings.get("seed"), label=master.settings.get("label"),
                          run=run_info(master.settings, shards=len(master.shards)))
    fleet = fleet_summary(master, per_shard)
    report["fleet"] = fleet
    codes = [report["exit_code"]]
    codes += [s.result.get("exit_code", 0) for s in finished
              if ExitCode.is_signal(s.result.get("exit_code"))]
    if master.stop_code is not None:
        codes.append(master.stop_code)
    if fleet["shards_lost"]:
        codes.append(ExitCode.DEGRADED)
    report["exit_code"] = ExitCode.worst(codes)
    advice = [f"fleet: shard {s.index} on {s.host} {s.status}: {s.reason}; the {streamed_ops(s.seconds)} "
              f"operations it started in its {len(s.seconds)} streamed seconds (in timeseries.jsonl) count as lost "
              f"in the accounting; its own run directory ({_shard_dir(master, s)}) has what it measured after"
              for s in master.shards if s.status != "finished"]
    advice += [f"fleet: {w}" for w in fleet["warnings"]]
    report["recommendations"][:0] = advice  # first: they qualify everything after them
    master.events.emit("fleet", name="end", exit_code=report["exit_code"], shards_lost=fleet["shards_lost"])
    master.close_streams()
    paths = write_reports(run_dir, report)
    return api.Report(report, merged, report["exit_code"], run_dir, paths)


def _shard_dir(master, s):
    return (s.result or {}).get("run_dir") or os.path.join(master.run_dir, "shards", str(s.index))


def fleet_summary(master, per_shard):
    """The report's ``fleet`` key: the scheduler, the start skew, the delivery delays, warnings, and one
    row per shard (``per_shard``: ``[(label, [StressTestResult])]`` of the shards that finished)."""
    rows = dict(per_shard)
    starts = [s.load_started_at for s in master.shards if s.load_started_at]
    first = min(starts) if starts else None
    shards = []
    for s in master.shards:
        res = s.result or {}
        if s.status == "finished":
            figures = shard_row_from_results(rows[s.label])
        else:
            figures = shard_row_from_seconds(s.seconds, s.breach_events)
        shares = main_shares(res.get("shares") or s.shares, master.names)
        shards.append({
            "index": s.index, "host": s.host, "worker": s.worker, "status": s.status, "reason": s.reason,
            "exit_code": res.get("exit_code"), "share": shares[0] if shares else None, **figures,
            "duration_s": round(sum(r.duration_seconds for r in rows.get(s.label, [])), 3),
            "run_dir": _shard_dir(master, s),
            "seconds_streamed": len(s.seconds),
            "clock_offset_ms": round(s.offset_s * 1000, 3),
            "lost_operations": 0 if s.status == "finished" else streamed_ops(s.seconds),
            "late_ms": None if s.load_started_at is None or master.start_at is None else
            round((s.load_started_at - master.start_at) * 1000, 3),
            "load_started_at": s.load_started_at,
            "start_offset_ms": None if s.load_started_at is None else round((s.load_started_at - first) * 1000, 3),
            "max_delivery_delay_s": round(max(s.delays), 3) if s.delays else None,
            "median_delivery_delay_s": round(sorted(s.delays)[len(s.delays) // 2], 3) if s.delays else None,
            "max_transport_delay_s": round(max(s.hops), 3) if s.hops else None,
            "components": [{"test_name": r.test_name, "throughput": r.throughput_ops_per_sec,
                            "p99_ms": r.latency_ms.get("p99"), "peak_memory_mb": r.peak_memory_mb,
                            "breaches": len(r.breaches), "exit_code": r.exit_code, "success": r.success}
                           for r in rows.get(s.label, [])],
        })
    warnings = list(master.warnings)
    for s in master.shards:
        warnings.extend(w for w in s.warnings if w not in warnings)
        late_s = None if s.load_started_at is None or master.start_at is None else s.load_started_at - master.start_at
        # The open model's arrivals begin TIMING.schedule_lead_s after the (released) pool on every
        # shard alike: late means late against the first shard, or late beyond that lead.
        if late_s is not None and (s.load_started_at - first > LATE_WARNING_S
                                   or late_s > TIMING.schedule_lead_s + LATE_WARNING_S):
            warnings.append(f"shard {s.index} on {s.host} began its load {late_s * 1000:.0f} ms after the agreed "
                            "instant (the instant reached it late, or its clock moved since the offset was measured)")
    delays = [d for s in master.shards for d in s.delays]
    import distributed

    return {
        "scheduler": master.address,
        "run_id": master.run_id,
        "mode": master.mode,
        "dask_version": distributed.__version__,
        "shard_count": len(master.shards),
        "shards_finished": sum(1 for s in master.shards if s.status == "finished"),
        "shards_lost": sum(1 for s in master.shards if s.status != "finished"),
        "start_at": master.start_at,
        "start_skew_ms": round((max(starts) - min(starts)) * 1000, 3) if len(starts) > 1 else
        (0.0 if starts else None),
        "max_delivery_delay_s": round(max(delays), 3) if delays else None,
        "p99_delivery_delay_s": round(sorted(delays)[min(len(delays) - 1, int(0.99 * len(delays)))], 3)
        if delays else None,
        "exit_code_degraded": ExitCode.DEGRADED,
        "notes": ["latency percentiles and accounting merge the HDR histograms and counts of the shards "
                  "that finished; peak memory and CPU are the worst machine's",
                  "per-second lines in timeseries.jsonl: counts add up, percentiles are the worst shard's"],
        "warnings": warnings,
        "shards": shards,
    }


def main_shares(shares, names):
    """A shard's shares, the scenarios' main phases first (a baseline at concurrency 1 says little)."""
    return sorted(shares, key=lambda sh: (sh.get("phase") not in names, -(sh.get("total") or 0)))

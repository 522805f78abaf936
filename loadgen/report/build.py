"""Building ``report.json``'s dict: metadata, executive summary, components, recommendations.

Pure data: :func:`build_report` turns component results into one plain
dict that every renderer (text, HTML, JUnit, Prometheus) reads; nothing
here writes a file.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform

from .. import __version__
from ..errors import ExitCode
from ..analysis.stats import Accounting, Histogram

SCHEMA_VERSION = 1
SUITE_NAME = "AI Writing Flow V2 Heavy Load Stress Testing Suite"
SUITE_BASENAME = "ai_writing_flow_v2_heavy_load_stress_report"


def system_info():
    """This machine: ``{cpu_count, total_memory_gb (GiB, 1 decimal), machine (the architecture,
    ``platform.machine()``), platform, python}``. ``loadgen compare`` requires the same cpu_count,
    total_memory_gb and machine on both sides."""
    import psutil

    return {
        "cpu_count": psutil.cpu_count(),
        "total_memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def run_info(settings, *, profile=None, target=None, shards=None, entries=()):
    """``metadata.run``: what two runs must share for ``loadgen compare`` to compare them.

    ``{profile, target: {ref, flow_params, target_args}, load: {…}}`` from ``settings`` (a
    :class:`~loadgen.options.Layer` or dict of the user's settings): the profile, the target (its
    ``ref``, or ``"MockAIWritingFlowV2"`` for the embedded flow; ``target``, a ``TargetSpec``, when the
    session built one) and the user's load settings (``options.LOAD_KEYS``: concurrency, rate, stages,
    duration, operations, workers, …; only those set). A fleet run adds ``shards``; a plan adds
    ``entries``: ``{label: run_info of the entry}`` (``entries``: ``[(label, settings)]``)."""
    from .. import options as opts

    def plain(v):
        if isinstance(v, (list, tuple)) and v and all(hasattr(s, "duration_s") for s in v):  # stages
            return [[s.duration_s, s.target] for s in v]
        return json.loads(json.dumps(v, default=lambda o: list(o) if isinstance(o, (set, tuple)) else repr(o)))

    if target is not None:
        ref, flow, args, mix = target.ref, target.flow_params, target.kwargs, target.mix
    else:
        ref, flow, args = settings.get("target"), settings.get("flow_params"), settings.get("target_args")
        mix = settings.get("ops") or ()
        if isinstance(ref, tuple):
            ref, mix = None, ref
    info = {
        "profile": profile or opts.value(settings, "profile"),
        "target": {"ref": ref or ("mix" if mix else "MockAIWritingFlowV2"), "flow_params": plain(dict(flow or {})),
                   "target_args": plain(dict(args or {}))}
        | ({"ops": [{"name": op.name, "target": op.ref, "weight": op.weight, "args": plain(op.args)} for op in mix]}
           if mix else {}),
        "load": {k: plain(settings[k]) for k in opts.LOAD_KEYS if settings.get(k) is not None},
    }
    if shards is not None:
        info["shards"] = shards
    if entries:
        info["entries"] = {label: run_info(s) for label, s in entries}
    return info


def build_report(results, *, kind, started_at, ended_at, thresholds, run_dir=None, command=None, seed=None,
                 run=None, label=None):
    """The full report dict (plain data, JSON-ready after ``write_reports``' clean-up).

    ``results``: list of ``StressTestResult``; ``kind``: 'suite' or a scenario
    name; ``started_at``/``ended_at``: UNIX seconds; ``thresholds``: a
    ``ResourceThresholds`` or a dict; ``run``: :func:`run_info` of the
    settings (``metadata.run``; None when unknown, e.g. a rebuilt report); ``label``: the run's
    ``--label`` (``metadata.label``, e.g. a commit id; None when not given).
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
            "run": run,
            "label": label,
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
        "containment": containment_summary(results),
        "resource_exhaustion_detected": any(r.resource_exhaustion_detected for r in results),
        "exit_code": exit_code,
    }


def containment_summary(phases):
    """The report's ``containment``: the mechanism the runs used (a list if they differed), the
    strays their ends had to end, the accounting anomalies (counters a forked copy wrote), and — with a
    run cgroup that has memory — the most the kernel charged it (``cgroup_peak_memory_mb``).
    ``phases``: dicts with ``mechanism``, ``strays_ended``, ``accounting_anomalies`` (a count), or
    component results (their main phase's)."""
    rows = [p if isinstance(p, dict) else {**p.containment, "accounting_anomalies": len(p.accounting_anomalies)}
            for p in phases]
    mechanisms = sorted({r["mechanism"] for r in rows if r.get("mechanism")})
    out = {"mechanism": mechanisms[0] if len(mechanisms) == 1 else mechanisms,
           "strays_ended": sum(r.get("strays_ended", 0) for r in rows),
           "accounting_anomalies": sum(r.get("accounting_anomalies", 0) for r in rows),
           # copies of workers forked outside os.fork (libc.fork), stopped before they counted anything
           "forked_copies": sum(r.get("forked_copies", 0) for r in rows),
           # what targets printed past workers.log's cap (--max-output-mb): counted, then dropped
           "output_dropped_bytes": sum(r.get("output_dropped_bytes", 0) for r in rows)}
    peaks = [r["cgroup_peak_memory_mb"] for r in rows if r.get("cgroup_peak_memory_mb") is not None]
    if peaks:  # what the kernel charged the run's cgroup (page cache included): beside the pool's PSS
        out["cgroup_peak_memory_mb"] = max(peaks)
    return out


def _first_failure(r):
    """The component's error text: its first failed criterion, else its stop reason, else that no
    operation succeeded."""
    from ..result import NONE_SUCCEEDED, NOTHING_RAN

    for c in r.criteria:
        if not c["passed"]:
            value = f"no value: {c.get('why') or 'the run did not produce it'}" if c["value"] is None \
                else f"{c['value']:.4g}"
            return f"{c['criterion']} failed (measured {value})"
    if r.stop_reason and r.exit_code:
        return f"stopped: {r.stop_reason}"
    for why in (NOTHING_RAN, NONE_SUCCEEDED):
        if why in r.error_messages:
            return why
    return "failed"


SATURATED_CPU_PERCENT = 85.0  # machine CPU (median of the loaded seconds) at which the CPU is saturated
SLOWDOWN_RATIO = 1.5  # p99 over the unstressed baseline's from which a pressure scenario's slowdown is news
PLATEAU_GAIN = 1.1  # a concurrency ramp whose last step gained less than this over the best before: a plateau


def _cpu_findings(r):
    """What the machine's CPU says about one component, from sustained figures only (the median and
    p90 of the seconds load was applied, never a peak): saturation, the bottleneck, or that latency
    grew without it. Each sentence is chosen by the very figures it quotes, so none can say the
    opposite of its numbers: "saturated" only at a median ≥ :data:`SATURATED_CPU_PERCENT`, "had room"
    only when the p90 too stayed below it, "stopped growing" only on a measured plateau."""
    m, name = r.performance_metrics, r.test_name
    med, p90 = m.get("cpu_median_percent"), m.get("cpu_p90_percent")
    out = []
    cpu_over = [e for e in r.thresholds_exceeded if e.get("metric") == "cpu_percent"]
    if cpu_over:
        e = cpu_over[0]
        out.append(f"{name}: machine CPU stayed above {e['limit']:.0f}% ({e['value']:.1f}% over the whole CPU "
                   "window): the generator itself was saturated, so its latencies include its own queueing "
                   "for the CPU (reported, not stopped; --kill-on cpu stops such a run)")
    if med is None:
        return out
    shown = f"CPU {med:.0f}% median, {(med if p90 is None else p90):.0f}% p90 while load was applied"
    saturated = med >= SATURATED_CPU_PERCENT
    room = not saturated and (p90 is None or p90 < SATURATED_CPU_PERCENT)
    rise = m.get("p99_vs_baseline") or 0
    steps = m.get("capacity_steps") or []
    plateau = len(steps) >= 2 and _plateau(steps)
    if saturated and name == "cpu_saturation":  # the burners saturate it on purpose
        if rise >= SLOWDOWN_RATIO:
            out.append(f"{name}: p99 rose {rise:.1f}× over the unstressed baseline while the burners held the CPU "
                       f"saturated, as this scenario intends ({shown}): the slowdown is queueing for the CPU")
    elif saturated and plateau:
        out.append(f"{name}: CPU is the bottleneck: throughput stopped growing with concurrency "
                   f"({steps[-1]['throughput']:.0f} ops/s at {steps[-1]['concurrency']}) while the machine was "
                   f"saturated ({shown})")
    elif saturated:
        out.append(f"{name}: the machine's CPU was saturated ({shown}): latencies include queueing for the CPU")
    elif room and plateau:
        out.append(f"{name}: throughput stopped growing with concurrency ({steps[-1]['throughput']:.0f} ops/s at "
                   f"{steps[-1]['concurrency']}) while the CPU had room ({shown}): the limit is not the CPU but "
                   "the workload's own waits, locks or I/O")
    elif room and rise >= SLOWDOWN_RATIO:
        out.append(f"{name}: p99 rose {rise:.1f}× over the unstressed baseline while the CPU had "
                   f"room ({shown}): the slowdown is the workload's own waits or memory / I/O pressure, not the CPU")
    elif rise >= SLOWDOWN_RATIO:  # busy part of the time: neither saturated nor idle, so no cause is claimed
        out.append(f"{name}: p99 rose {rise:.1f}× over the unstressed baseline; the CPU was busy part of the "
                   f"time ({shown})")
    return out


def _plateau(steps):
    """True when the last step of a concurrency ramp gained under 10 % throughput over the best before."""
    rows = sorted(steps, key=lambda s: s["concurrency"])
    best_before = max(s["throughput"] for s in rows[:-1])
    return rows[-1]["throughput"] < PLATEAU_GAIN * best_before


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
        if r.accounting.get("dropped") and r.response_time_ms is not None:
            asked = r.accounting.get("dispatched", 0) + r.accounting["dropped"]
            out.append(f"{r.test_name}: the target rate was not reached: {r.accounting['dropped']} of {asked} "
                       f"arrivals ({r.accounting['dropped'] / asked:.0%}) were dropped, no slot free to start them "
                       "in time; they count against the success rate")
        sr = m.get("success_rate")
        if sr is not None and sr < 0.95 and not r.breaches:
            top = next(iter(r.errors), None)
            out.append(f"{r.test_name}: success rate {sr:.1%}" + (f"; most frequent error: {top}" if top else ""))
        if m.get("max_capacity"):
            out.append(f"{r.test_name}: plan for at most {m['max_capacity']:.0f} concurrent operations per machine "
                       "like this one")
        out.extend(_cpu_findings(r))
    if not out and results and all(r.success for r in results):
        worst = max(results, key=lambda r: r.latency_ms.get("p99") or 0)
        out.append(f"System demonstrates excellent stress resilience: every criterion passed; "
                   f"highest p99 {worst.latency_ms.get('p99')} ms in {worst.test_name}")
    return out

"""Fleet runs as plain data: load shares, merged seconds, merged results, each shard's row.

No Dask here (see ``master.py`` for the master, ``shard.py`` for a
shard): these functions only split plans and combine what shards measured,
so they are tested without a cluster. ``report/fleet.py`` renders a fleet
report's ``fleet`` key (the per-machine table).

What merges exactly and what does not:

* a component's latency, service and named-measurement histograms are HDR
  histograms: merged exactly (counts added), so the fleet's p99 is the p99
  of every operation of every shard;
* accounting, error counts, throughput (shards run side by side) add up;
* peak memory, CPU and leak slope are per machine (thresholds are per
  machine): the fleet shows the worst machine;
* the noise each metric's comparison needs (``StressTestResult.noise``):
  throughputs add (means add, variances add, over the seconds every shard
  measured), percentile intervals are recomputed from the merged histogram,
  the success rate's trials add up, peak memory's is the worst machine's;
* a live per-second line carries percentiles only, so the fleet's
  per-second latency is the worst shard's (an upper bound); the report's
  percentiles come from the histograms.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..criteria import Criterion
from ..errors import ExitCode
from ..named import MEASURE_PREFIX, add_checks, checks_summary, named_metrics
from ..result import NONE_SUCCEEDED, NOTHING_RAN, StressTestResult, core_metrics, evaluate
from ..workload.mix import OP_PREFIX, merge_summaries, op_metrics
from ..analysis.stats import Accounting, Histogram


# Scenario-specific metrics of a component, combined across shards (criteria.METRICS).
# Every shard ran the same scenario logic on its share, in the fleet's units (a shard's
# capacity ramp counts fleet-wide concurrency), so the fleet takes the worst shard.
# Throughputs (e.g. ``baseline_throughput``) add up, as the shards ran side by side.
_WORST_LOW = {"max_capacity", "recovery_rate", "breaker_opened", "breaker_closed", "baseline_success_rate"}


# ---------------------------------------------------------------------- shares


def split_whole(total, count, index, minimum=1):
    """Shard ``index``'s share of ``total`` whole units over ``count`` shards: near-equal, the
    remainder to the first shards, never below ``minimum``."""
    base, extra = divmod(int(total), int(count))
    return max(minimum, base + (1 if index < extra else 0))


@dataclass(frozen=True)
class Share:
    """One shard's part of every phase's load: ``index`` of ``count`` shards."""

    index: int
    count: int

    def apply(self, plan):
        """The plan this shard runs: concurrency (closed), rate (open), stage targets and
        operations divided; everything per machine (workers, slots, thresholds) unchanged."""
        n, i = self.count, self.index
        if n == 1:
            return plan
        changes = {}
        if plan.rate is not None:
            changes["rate"] = plan.rate / n
        else:
            changes["concurrency"] = split_whole(plan.concurrency, n, i)
        if plan.stages:
            if plan.rate is not None:
                changes["stages"] = tuple(dataclasses.replace(s, target=s.target / n) for s in plan.stages)
            else:
                changes["stages"] = tuple(dataclasses.replace(s, target=split_whole(round(s.target), n, i, 0))
                                          for s in plan.stages)
        if plan.operations is not None:
            changes["operations"] = split_whole(plan.operations, n, i)
        return dataclasses.replace(plan, **changes)

    def describe(self, plan):
        """``{model, mine, total, fraction}`` of ``plan`` (the fleet's plan) for this shard."""
        mine = self.apply(plan)
        if plan.rate is not None:
            return {"model": "open", "mine": round(mine.rate, 6), "total": plan.rate,
                    "fraction": round(mine.rate / plan.rate, 6) if plan.rate else 0.0}
        return {"model": "closed", "mine": mine.concurrency, "total": plan.concurrency,
                "fraction": round(mine.concurrency / plan.concurrency, 6)}


# ---------------------------------------------------------------------- seconds


class SecondMerger:
    """Per-second records of every shard → one fleet line per (phase, second).

    ``add`` a shard's record as it arrives; ``ready(now, waiting_for)`` returns
    the lines every shard in ``waiting_for`` has reported, or that are older
    than ``grace_s`` (a silent or lost shard does not hold the stream back).
    """

    def __init__(self, grace_s=3.0):
        self.grace_s = grace_s
        self.pending = {}  # (t, phase) → {shard: (record, delay_s)}
        self.seen = set()  # (shard, phase, t): a backfilled duplicate is dropped
        self.flushed = set()

    def add(self, shard, record, delay_s=None):
        """Keep ``record`` of ``shard``; False for a duplicate or a second already written."""
        key = (record["t"], record.get("phase", ""))
        if (shard, key) in self.seen or key in self.flushed:
            return False
        self.seen.add((shard, key))
        self.pending.setdefault(key, {})[shard] = (record, delay_s)
        return True

    def ready(self, now, waiting_for):
        """Fleet lines (:func:`merge_seconds`), oldest first, of the seconds every shard in
        ``waiting_for`` has reported or that ended more than ``grace_s`` before ``now`` (UNIX s). Each
        line is returned once."""
        out = []
        for key in sorted(self.pending):
            got = self.pending[key]
            if not (set(waiting_for) <= set(got)) and now < key[0] + 1 + self.grace_s:
                continue
            out.append(merge_seconds(key, got))
            del self.pending[key]
            self.flushed.add(key)
        return out

    def flush(self):
        """Every pending line, complete or not (the run is over)."""
        return self.ready(math.inf, ())


def merge_seconds(key, got):
    """One fleet line from ``{shard: (record, delay_s)}`` of the same (second, phase)."""
    t, phase = key
    recs = [r for r, _ in got.values()]
    line = {"t": t, "phase": phase, "shards": len(recs)}
    for k in ("ops", "succeeded", "failed", "dropped", "rejected", "throughput", "in_flight", "target"):
        vals = [r.get(k) for r in recs if r.get(k) is not None]
        line[k] = (round(sum(vals), 6) if any(isinstance(v, float) for v in vals) else sum(vals)) if vals else None
    errors = [r.get("errors") for r in recs if r.get("errors") is not None]
    if all(isinstance(e, dict) for e in errors):  # by error type
        line["errors"] = {}
        for e in errors:
            for name, n in e.items():
                line["errors"][name] = line["errors"].get(name, 0) + n
    else:  # a count (the Runner's per-second lines)
        line["errors"] = sum(e if isinstance(e, (int, float)) else sum(e.values()) for e in errors)
    done = (line["succeeded"] or 0) + (line["failed"] or 0)
    line["success_rate"] = round(line["succeeded"] / done, 4) if done else None
    for k in ("latency_ms", "response_ms"):
        parts = [r[k] for r in recs if r.get(k)]
        if parts:  # per-second lines carry percentiles only: the worst shard's, an upper bound
            line[k] = {p: _max([x.get(p) for x in parts]) for p in ("p50", "p90", "p99", "p999", "max")}
    ops = {}  # a mix's per-op percentiles: the worst shard's, as above
    for r in recs:
        for op, lat in (r.get("ops_ms") or {}).items():
            worst = ops.setdefault(op, {})
            for p, v in (lat or {}).items():
                worst[p] = _max([worst.get(p), v])
    if ops:
        line["ops_ms"] = ops
    line["cpu_percent"] = _max([r.get("cpu_percent") for r in recs])  # machine-wide: the busiest machine
    line["pool_memory_mb"] = _max([r.get("pool_memory_mb") for r in recs])  # per machine, as its threshold
    line["fleet_pool_memory_mb"] = round(sum(r.get("pool_memory_mb") or 0.0 for r in recs), 1)
    line["per_shard"] = {str(s): {"ops": r.get("ops"), "throughput": r.get("throughput"),
                                  "p99_ms": (r.get("latency_ms") or {}).get("p99"),
                                  "in_flight": r.get("in_flight"), "pool_memory_mb": r.get("pool_memory_mb"),
                                  "cpu_percent": r.get("cpu_percent"),
                                  "delay_s": None if d is None else round(d, 3)}
                         for s, (r, d) in sorted(got.items())}
    return line


def _max(values):
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


# ---------------------------------------------------------------------- results


def merge_components(per_shard):
    """``[(shard_label, [StressTestResult])]`` of the shards that finished → the fleet's components.

    Components are matched by name, in the order they first ran.
    """
    order, groups = [], {}
    for label, results in per_shard:
        for r in results:
            if r.test_name not in groups:
                order.append(r.test_name)
                groups[r.test_name] = []
            groups[r.test_name].append((label, r))
    return [merge_component(groups[name]) for name in order]


def merge_component(rows):
    """One component from the same component of several shards: ``[(shard_label, StressTestResult)]``."""
    rs = [r for _, r in rows]
    acc = Accounting()
    for r in rs:
        acc.merge(Accounting(**{k: v for k, v in r.accounting.items() if k in Accounting.__dataclass_fields__}))
    hists = {}
    for r in rs:
        for name, payload in (r.histograms or {}).items():
            if name not in hists:
                hists[name] = Histogram()
            hists[name].merge(Histogram.from_payload(payload))
    lat = hists.get("latency", Histogram()).summary_ms()
    throughput = sum(r.throughput_ops_per_sec for r in rs)
    metrics = core_metrics(acc, lat, throughput=throughput, peak_memory_mb=max(r.peak_memory_mb for r in rs),
                           peak_cpu_percent=max(r.peak_cpu_percent for r in rs),
                           breaches=sum(len(r.breaches) for r in rs),
                           open_model=any(r.response_time_ms is not None for r in rs))
    metrics.update(_scenario_metrics(rs, set(metrics)))
    measures_ms = {k[len(MEASURE_PREFIX):]: h.summary_ms() for k, h in sorted(hists.items()) if k.startswith(MEASURE_PREFIX)}
    checks = {}
    for r in rs:
        add_checks(checks, {name: (c["passes"], c["fails"]) for name, c in (r.checks or {}).items()})
    ops = merge_summaries([r.ops for r in rs], lambda name: hists.get(OP_PREFIX + name, Histogram()))
    criteria = [Criterion(c["metric"], c["op"], c["limit"], default=bool(c.get("default"))) for c in rs[0].criteria]
    passed, crit_rows = evaluate(criteria, metrics | named_metrics(measures_ms, checks) | op_metrics(ops))
    codes = [r.exit_code for r in rs]
    exit_code = ExitCode.worst(codes)
    messages, errors, tracebacks, stop_reason = _merged_words(rows)
    if not acc.succeeded:  # as on one machine (result_from_outcome): none succeeded never passes
        passed = False
        messages.insert(0, NONE_SUCCEEDED if acc.completed else NOTHING_RAN)
    leaks = [r.leak for r in rs if r.leak]
    leak = next((lk for lk in leaks if lk.get("leak")), leaks[0] if leaks else {})
    recoveries = [r.recovery_time_seconds for r in rs if r.recovery_time_seconds is not None]
    key_name = rs[0].key_metric[0] if rs[0].key_metric else "success_rate"
    lateness = [r.start_lateness_ms for r in rs if r.start_lateness_ms]
    open_model = any(r.response_time_ms is not None for r in rs)
    return StressTestResult(
        test_name=rs[0].test_name,
        success=passed and all(c == 0 for c in codes),
        duration_seconds=round(max(r.duration_seconds for r in rs), 3),
        max_concurrent_operations=sum(r.max_concurrent_operations for r in rs),
        peak_memory_mb=metrics["peak_memory_mb"],
        peak_cpu_percent=metrics["peak_cpu_percent"],
        total_operations=acc.dispatched,
        successful_operations=acc.succeeded,
        failed_operations=acc.failed + acc.timed_out + acc.crashed,
        throughput_ops_per_sec=round(throughput, 3),
        error_messages=messages[:50],
        performance_metrics={k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()},
        breaking_point_reached=any(r.breaking_point_reached for r in rs),
        recovery_time_seconds=max(recoveries) if recoveries else None,
        criteria=crit_rows,
        accounting=acc.to_dict(),
        latency_ms=lat,
        service_time_ms=hists.get("service", Histogram()).summary_ms(),
        response_time_ms=lat if any(r.response_time_ms is not None for r in rs) else None,
        # Start lateness has no histogram in a result: the worst shard's percentiles (an upper bound).
        start_lateness_ms={k: _max([x.get(k) for x in lateness]) for k in lateness[0]} if lateness else None,
        measures_ms=measures_ms,
        checks=checks_summary(checks),
        ops=ops,
        breaches=[dict(b, shard=label) for label, r in rows for b in r.breaches],
        thresholds_exceeded=[dict(e, shard=label) for label, r in rows for e in r.thresholds_exceeded],
        resource_exhaustion_detected=any(r.resource_exhaustion_detected for r in rs),
        stop_reason=stop_reason,
        exit_code=exit_code,
        leak=dict(leak),
        histograms={k: h.to_payload() for k, h in hists.items()},
        errors=dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        tracebacks=tracebacks,
        key_metric=(key_name, metrics.get(key_name)),
        noise=merge_noise(rs, hists.get("latency", Histogram()), acc, open_model),
    )


def merge_noise(rs, latency, acc, open_model):
    """The ``noise`` of a component merged from shards ``rs`` (see :func:`loadgen.result.noise_of`):
    per-second throughputs of shards running side by side add — means add, variances add, over the
    fewest seconds a shard measured; percentile intervals from the merged ``latency`` histogram; the
    success rate's counts from the merged accounting ``acc``; peak memory's from the worst machine (the
    fleet's peak is that machine's); recovery time's resolution."""
    from ..analysis.noise import percentile_noise

    out = {}
    parts = [(r.noise or {}).get("throughput") for r in rs]
    if parts and all(parts):
        out["throughput"] = {"n": min(p["n"] for p in parts), "mean": round(sum(p["mean"] for p in parts), 6),
                             "sd": round(math.sqrt(sum(p["sd"] ** 2 for p in parts)), 6)}
    out.update(percentile_noise(latency))
    trials = acc.completed + (acc.dropped if open_model else 0)
    if trials:
        out["success_rate"] = {"successes": acc.succeeded, "trials": trials}
    worst = max(rs, key=lambda r: r.peak_memory_mb)
    if (worst.noise or {}).get("peak_memory_mb"):
        out["peak_memory_mb"] = dict(worst.noise["peak_memory_mb"])
    if any(r.recovery_time_seconds is not None for r in rs):
        out["recovery_time_seconds"] = {"resolution_s": 1.0}
    return out


COUNTED = "http_"  # counts of the HTTP ops (named.count_metrics): bytes, connections, events, and their rates


def _scenario_metrics(rs, known):
    """The scenario-specific metrics of the shards' results, combined (see :data:`_WORST_LOW`)."""
    out = {}
    for key in sorted({k for r in rs for k in (r.performance_metrics or {})} - known):
        vals = [r.performance_metrics.get(key) for r in rs]
        nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(nums) != len(vals):  # not a number everywhere (lists, None): the first shard's, as is
            out[key] = vals[0]
        elif key.endswith("throughput") or key.startswith(COUNTED):  # the fleet's is the shards' sum
            out[key] = sum(nums)
        else:
            out[key] = min(nums) if key in _WORST_LOW else max(nums)
    return out


def _merged_words(rows):
    """``(messages, errors, tracebacks, stop_reason)`` of the shards' results, each named by its shard."""
    messages, errors, tracebacks = [], {}, {}
    for label, r in rows:
        messages.extend(f"[{label}] {m}" for m in r.error_messages[:10])
        for k, n in (r.errors or {}).items():
            errors[k] = errors.get(k, 0) + n
        for k, tb in (r.tracebacks or {}).items():
            tracebacks.setdefault(k, tb)
    reasons = list(dict.fromkeys(r.stop_reason for _, r in rows if r.stop_reason))
    stop_reason = reasons[0] if len(reasons) == 1 else "; ".join(f"[{label}] {r.stop_reason}" for label, r in rows)
    return messages, errors, tracebacks, stop_reason


def streamed_ops(seconds):
    """Operations started in ``seconds`` (a shard's streamed per-second records)."""
    return sum(int(rec.get("ops") or 0) for rec in seconds)


def lost_accounting(seconds, default):
    """``{component name: Accounting}`` of what a lost shard streamed (``seconds``, each tagged with
    the ``scenario`` that ran it, else ``default``): every operation it started counts as
    dispatched and ``lost`` (where each ended never reached the fleet); dropped and rejected
    arrivals as they were streamed."""
    out = {}
    for rec in seconds:
        acc = out.setdefault(rec.get("scenario") or default, Accounting())
        started = int(rec.get("ops") or 0)
        acc.dispatched += started
        acc.lost += started
        acc.dropped += int(rec.get("dropped") or 0)
        acc.rejected += int(rec.get("rejected") or 0)
    return out


def add_lost(components, lost, label):
    """Count ``lost`` (:func:`lost_accounting` of the shard ``label``) into the merged ``components``
    (StressTestResults, changed in place); a component no finished shard ran is added, failed, holding
    only what was lost. Returns ``components``."""
    by_name = {r.test_name: r for r in components}
    for name, acc in lost.items():
        if not (acc.dispatched or acc.dropped or acc.rejected):
            continue
        r = by_name.get(name)
        if r is None:
            r = StressTestResult(test_name=name, success=False, duration_seconds=0.0, max_concurrent_operations=0,
                                 peak_memory_mb=0.0, peak_cpu_percent=0.0, total_operations=0, successful_operations=0,
                                 failed_operations=0, throughput_ops_per_sec=0.0, accounting=Accounting().to_dict(),
                                 exit_code=ExitCode.DEGRADED, stop_reason="every shard that ran it was lost")
            components.append(r)
            by_name[name] = r
        merged = Accounting(**{k: v for k, v in r.accounting.items() if k in Accounting.__dataclass_fields__})
        r.accounting = merged.merge(acc).to_dict()
        r.total_operations = merged.dispatched
        r.error_messages.insert(0, f"[{label}] lost: {acc.lost} operations it started never reported where "
                                   "they ended (counted as lost)")
    return components


def result_from_dict(d):
    """A :class:`StressTestResult` from its ``to_dict()`` (fields a newer shard added are kept out)."""
    names = {f.name for f in dataclasses.fields(StressTestResult)}
    kw = {k: v for k, v in d.items() if k in names}
    if isinstance(kw.get("key_metric"), list):
        kw["key_metric"] = tuple(kw["key_metric"])
    return StressTestResult(**kw)


# ---------------------------------------------------------------------- a shard's row


def shard_row_from_results(results):
    """Figures of one finished shard across its components: ops, throughput, p99, peak memory, breaches."""
    latency = Histogram()
    acc = Accounting()
    for r in results:
        latency.merge(Histogram.from_payload((r.histograms or {}).get("latency", "")))
        acc.merge(Accounting(**{k: v for k, v in r.accounting.items() if k in Accounting.__dataclass_fields__}))
    load_s = sum(r.duration_seconds for r in results)
    return {
        "operations": acc.completed,
        "succeeded": acc.succeeded,
        "throughput": round(sum(r.throughput_ops_per_sec * r.duration_seconds for r in results) / load_s, 3)
        if load_s else 0.0,
        "p99_ms": latency.summary_ms()["p99"],
        "p99_basis": "histogram",
        "peak_memory_mb": max((r.peak_memory_mb for r in results), default=0.0),
        "breaches": sum(len(r.breaches) for r in results),
    }


def shard_row_from_seconds(seconds, breach_events=0):
    """Figures of a shard from the per-second lines it streamed (a lost shard): p99 is the worst
    second's (streamed lines carry percentiles, not histograms)."""
    done = sum((s.get("succeeded") or 0) + (s.get("failed") or 0) for s in seconds)
    return {
        "operations": done,
        "succeeded": sum(s.get("succeeded") or 0 for s in seconds),
        "throughput": round(done / len(seconds), 3) if seconds else 0.0,
        "p99_ms": _max([(s.get("latency_ms") or {}).get("p99") for s in seconds]),
        "p99_basis": "worst streamed second",
        "peak_memory_mb": _max([s.get("pool_memory_mb") for s in seconds]) or 0.0,
        "breaches": breach_events,
    }

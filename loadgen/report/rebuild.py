"""``loadgen report RUN_DIR``: rebuild a run directory's reports from its streams alone.

``timeseries.jsonl`` and ``events.jsonl`` are flushed line by line, so they
survive a master killed with SIGKILL, an out-of-memory kill or a power cut,
when ``report.json`` was never written. From them this module rebuilds
``report.json``, ``summary.txt``, ``report.html`` and ``junit.xml``.

What the streams hold, and so how exact the rebuild is:

* a ``scenario`` event before each scenario (name, kind, criteria) and a
  ``component`` event after it (its whole result, histograms included) —
  written by ``streams.note_scenario`` / ``streams.note_component`` for the API.
  A component that finished is rebuilt exactly from its ``component`` event.
* per phase: ``phase`` events (``start`` with the plan and thresholds,
  ``end`` with the exact accounting and exit code), breaches, crashes, and
  one timeseries line per second.

A component that did not finish (or a run written before these events
existed) is rebuilt per phase: accounting from the ``end`` event, else the
per-second sums, with operations started but never finished counted as
crashed; latency **approximated** from the per-second percentiles (each
second's operations drawn from a quantile function through its p50, p90,
p99, p99.9 and max); criteria re-evaluated from the ``scenario`` event; exit code 1
with stop reason ``master killed (rebuilt from streams)`` when the last
phase has no ``end``. ``metadata.rebuilt_from_streams`` is true in every
rebuilt report.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, fields

from ..errors import ExitCode, OutputError, UsageError
from ..analysis import STATISTICS
from ..named import add_checks, checks_summary, count_metrics, label, named_metrics
from ..streams import (COMPONENT_EVENT, EVENTS, MAX_REPORT_BYTES, SCENARIO_EVENT, TIMESERIES, dumps, json_safe, load_json,
                       NotJson, read_jsonl)
from . import write_reports
from .build import SUITE_BASENAME, build_report

log = logging.getLogger("loadgen.rebuild")

KILLED_REASON = "master killed (rebuilt from streams)"
# Fields the rebuild keys on: text when present (a timeseries row's phase always); checked with the line.
_TEXT_KEYS = {EVENTS: ("type", "phase", "name"), TIMESERIES: ("phase",)}
_REQUIRED_TEXT = {EVENTS: (), TIMESERIES: ("phase",)}
# Errors of a record whose deeper fields (a component's result, a phase's accounting) have another shape
# than loadgen writes: the streams are input, so these are a usage error naming the run, not a crash.
_SHAPE_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError)
BASELINE_PHASE = "baseline"  # a reference measurement, not the component's result
# Knots of a second's quantile function: (cumulative share, percentile key).
_MASS = ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p999"), (1.0, "max"))
MAX_DRAWS_PER_SECOND = 1000  # draws of one second's quantile function (weighted beyond)
MAX_OPS_PER_SECOND = 10**9  # a second's count in the streams, at most (a larger one is corrupt)


# ====================================================================== command


def rebuild_command(run_dir, build=None, source="its streams"):
    """Rebuild and write the reports of ``run_dir``; prints one line, returns 0. ``build``: what
    makes the report dict (default :func:`rebuild`; a fleet's directory: ``fleet.rebuild.rebuild_fleet``),
    ``source``: what it was made from, for that line.

    The run's own exit code is in the rebuilt report (``exit_code``); this
    command's is 0 once the reports are written. :class:`UsageError` for a
    missing directory, missing or unreadable streams. The streams are read,
    never appended to; each report file is replaced atomically (a symlink at
    its path is replaced, not followed).
    """
    try:
        report = (build or rebuild)(run_dir)
        _renders(report)  # before any report file is replaced
    except _SHAPE_ERRORS as e:  # a record whose fields are of another shape than loadgen writes
        log.debug("rebuild of %s failed", run_dir, exc_info=True)
        raise UsageError(f"{run_dir}: cannot rebuild from these streams: a record has fields of another shape "
                         f"than loadgen writes ({type(e).__name__}: {_one_line(e)})") from None
    try:
        paths = write_reports(run_dir, report)
    except OSError as e:
        raise OutputError(f"cannot write the reports in {run_dir}: {e.strerror or e}") from None
    names = ", ".join(os.path.basename(p) for p in paths.values())
    print(f"loadgen: rebuilt {names} in {run_dir} from {source} "
          f"({len(report['detailed_metrics'])} component(s), run exit code {report['exit_code']})")
    return ExitCode.OK


def _renders(report):
    """Render the report as :func:`~loadgen.report.write_reports` will (JSON, summary, JUnit; not the page,
    whose failure is not fatal) without writing anything: a component recorded with fields of another
    shape than loadgen writes fails here, before a file is replaced, as one of :data:`_SHAPE_ERRORS`."""
    from .junit import render_junit
    from .text import render_summary

    data = json.loads(dumps(json_safe(report)))
    render_summary(data)
    render_junit(data)


def rebuild(run_dir):
    """The report dict of ``run_dir``, from ``timeseries.jsonl`` and ``events.jsonl`` only."""
    events, rows = load_streams(run_dir)
    phases = _phases(events, rows)
    groups, kind_hint, approximate = _groups(events, phases)
    results = [_result(g) for g in groups]
    kind = kind_hint or _guess_kind(run_dir, groups)
    starts = [p.start["plan"] for p in phases if p.start and isinstance(p.start.get("plan"), dict)]
    thresholds = next((p.start["thresholds"] for p in phases if p.start and isinstance(p.start.get("thresholds"), dict)), {})
    times = [e["t"] for e in events] + [r["t"] + 1 for r in rows]
    started_at, ended_at = min(times), max(times)
    report = build_report(results, kind=kind, started_at=started_at, ended_at=ended_at, thresholds=thresholds,
                          run_dir=os.path.abspath(run_dir), command=None,
                          seed=starts[0].get("seed") if starts else None)
    md = report["metadata"]
    md["rebuilt_from_streams"] = True
    md["approximate_components"] = approximate
    note = ("latency of " + ", ".join(approximate) + " approximated from per-second percentiles; operations "
            "in flight when the master died count as crashed" if approximate
            else "every component rebuilt from its recorded result")
    md["rebuild_note"] = note
    for r in results:
        if r.stop_reason.startswith(KILLED_REASON):
            report["recommendations"].append(f"{r.test_name}: {r.stop_reason} — the master died before it wrote "
                                             "its reports; look for an OOM kill or a SIGKILL in the system log")
    report["recommendations"].append(f"rebuilt from timeseries.jsonl and events.jsonl: {note}")
    return report


def load_streams(run_dir):
    """``(events, timeseries rows)`` of a run directory, each sorted by ``t``; :class:`UsageError` if unusable.

    Each stream is read with :func:`~loadgen.streams.read_jsonl` (a regular file of at most
    :data:`~loadgen.streams.MAX_REPORT_BYTES`, strict JSON per line; a FIFO or device is refused
    unread); a bad line is named by its number.
    """
    if not os.path.isdir(run_dir):
        raise UsageError(f"{run_dir}: no such run directory")
    out = []
    for name in (EVENTS, TIMESERIES):
        path = os.path.join(run_dir, name)
        if not os.path.lexists(path):
            raise UsageError(f"{run_dir}: no {name}; not a loadgen run directory (or its streams were removed)")
        try:
            records = read_jsonl(path, MAX_REPORT_BYTES, f"loadgen {name}", numbered=True)
        except NotJson as e:
            raise UsageError(f"{e}; only a torn last line is tolerated") from None
        kept = []
        for line, r in records:
            if not isinstance(r, dict) or not _is_num(r.get("t")):
                continue  # not a record of ours: left out, as ever
            for key in _TEXT_KEYS[name]:
                if not (isinstance(r.get(key), str) or (r.get(key) is None and key not in _REQUIRED_TEXT[name])):
                    raise UsageError(f"{path}: line {line}: {key!r} is {_shown(r.get(key))}, not text; "
                                     "not a record loadgen writes")
            kept.append(r)
        out.append(kept)
    events, rows = out
    if not any(e.get("type") == "phase" for e in events):
        raise UsageError(f"{run_dir}: {EVENTS} records no phase; nothing to rebuild")
    # Stable sorts: the order of equal times is the order written.
    return sorted(events, key=lambda e: e["t"]), sorted(rows, key=lambda r: r["t"])


# ====================================================================== phases


@dataclass
class _Phase:
    name: str
    scenario: str | None = None
    start: dict | None = None
    end: dict | None = None
    events: list = field(default_factory=list)
    rows: list = field(default_factory=list)

    @property
    def t_start(self):
        """UNIX seconds: the ``start`` event's time, else the phase's first record."""
        if self.start:
            return self.start["t"]
        ts = [e["t"] for e in self.events] + [r["t"] for r in self.rows]
        return min(ts) if ts else 0.0

    @property
    def t_end(self):
        """UNIX seconds: the ``end`` event's time, else the end of the phase's last record."""
        if self.end:
            return self.end["t"]
        ts = [e["t"] for e in self.events] + [r["t"] + 1 for r in self.rows]
        return max(ts) if ts else self.t_start

    def first(self, type_, name=None):
        """The phase's first event of ``type_`` (and ``name``), or None."""
        return next((e for e in self.events if e.get("type") == type_ and (name is None or e.get("name") == name)), None)

    def all(self, type_):
        """The phase's events of ``type_``, in order."""
        return [e for e in self.events if e.get("type") == type_]


def _phases(events, rows):
    """Phase instances in order, with their events and seconds (a phase name may recur in a suite)."""
    phases, open_, scenario = [], {}, None
    for e in events:
        if e.get("type") == SCENARIO_EVENT:
            scenario = e.get("name")
            continue
        name = e.get("phase")
        if name is None:
            continue
        if e.get("type") == "phase" and e.get("name") == "start":
            p = open_[name] = _Phase(name, scenario, start=e)
            phases.append(p)
        p = open_.get(name)
        if p is None:  # events of a phase whose start line was lost
            p = open_[name] = _Phase(name, scenario)
            phases.append(p)
        p.events.append(e)
        if e.get("type") == "phase" and e.get("name") == "end":
            p.end = e
    for r in rows:
        name = r.get("phase")
        same = [p for p in phases if p.name == name]
        if not same:
            p = _Phase(name, scenario=None)
            phases.append(p)
            same = [p]
        # The latest instance that had started by this second (seconds are floored, starts are not).
        fits = [p for p in same if math.floor(p.t_start) <= r["t"]]
        (fits[-1] if fits else same[0]).rows.append(r)
    return sorted(phases, key=lambda p: p.t_start)


@dataclass
class _Group:
    """The phases of one component, and what the streams say about the component itself."""

    name: str
    phases: list
    scenario: dict | None = None
    component: dict | None = None


def _groups(events, phases):
    """``(groups, kind or None, names of approximated components)``."""
    scen = {}
    comps = {}
    kind = None
    order = []
    for e in events:
        if e.get("type") == SCENARIO_EVENT and e.get("name"):
            scen[e["name"]] = e
            kind = e.get("kind") or kind
            if e["name"] not in order:
                order.append(e["name"])
        elif e.get("type") == COMPONENT_EVENT and isinstance(e.get("result"), dict):
            comps[e.get("name") or e["result"].get("test_name")] = e["result"]
    groups = []
    if scen:
        for name in order:
            groups.append(_Group(name, [p for p in phases if p.scenario == name], scen[name], comps.get(name)))
        orphans = [p for p in phases if p.scenario is None]
        if orphans:  # phases recorded before any scenario event
            groups.insert(0, _Group("unattributed", orphans))
    else:  # streams written without scenario events: one component per phase
        groups = [_Group(p.name, [p]) for p in phases]
    approximate = [g.name for g in groups if g.component is None]
    return groups, kind, approximate


def _guess_kind(run_dir, groups):
    """Kind when no ``scenario`` event names it: the report files' names, else 'rebuilt'."""
    if os.path.exists(os.path.join(run_dir, SUITE_BASENAME + ".json")):
        return "suite"
    try:
        kind = load_json(os.path.join(run_dir, "report.json"), MAX_REPORT_BYTES, "loadgen report")["metadata"]["kind"]
        if isinstance(kind, str) and kind:
            return kind
    except (UsageError, KeyError, TypeError):
        pass
    return groups[0].name if len(groups) == 1 else "rebuilt"


# ====================================================================== results


def _result(group):
    from ..result import StressTestResult

    if group.component is not None:
        known = {f.name for f in fields(StressTestResult)}
        kw = {k: v for k, v in group.component.items() if k in known}
        if isinstance(kw.get("key_metric"), list):
            kw["key_metric"] = tuple(kw["key_metric"])
        return StressTestResult(**kw)
    return _approximate_result(group)


def _approximate_result(group):
    """A component that did not finish, rebuilt from its phases' events and seconds."""
    from ..result import StressTestResult, evaluate

    phases = group.phases
    main = [p for p in phases if not p.name.startswith(BASELINE_PHASE)] or phases
    m = _measure(main)
    exit_code, stop_reason = _ending(phases, main)
    acc = m.acc
    lat = m.latency.summary_ms()
    throughput = acc.completed / m.load_s if m.load_s > 0 else 0.0
    metrics = _metrics(m, lat, throughput) | count_metrics(m.checks, m.load_s)
    passed, rows = evaluate(_criteria(group), metrics | named_metrics({}, m.checks))
    key = (group.scenario or {}).get("key_metric") or "success_rate"
    messages = [f"stopped: {stop_reason}"] if exit_code else []
    messages += [f"worker {c.get('worker')} died with {c.get('exit')} ({c.get('hint')})" for c in m.crashes[:5]]
    return StressTestResult(
        test_name=group.name,
        success=passed and exit_code == ExitCode.OK,
        duration_seconds=round(m.duration, 3),
        max_concurrent_operations=m.peaks["in_flight"],
        peak_memory_mb=round(m.peaks["memory"], 1),
        peak_cpu_percent=round(m.peaks["cpu"], 1),
        total_operations=acc.dispatched,
        successful_operations=acc.succeeded,
        failed_operations=acc.failed + acc.timed_out + acc.crashed,
        throughput_ops_per_sec=round(throughput, 3),
        error_messages=messages,
        performance_metrics={k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}
        | {"approximate": True},
        criteria=rows,
        accounting=acc.to_dict(),
        latency_ms=lat,
        breaches=m.breaches,
        stop_reason=stop_reason,
        exit_code=exit_code,
        histograms={"latency": m.latency.to_payload()},
        checks=checks_summary(m.checks),
        key_metric=(key, metrics.get(key)),
    )


@dataclass
class _Measured:
    """What the main phases of an unfinished component measured, summed or peaked over them."""

    acc: object  # Accounting
    latency: object  # Histogram (approximated)
    peaks: dict = field(default_factory=lambda: {"memory": 0.0, "cpu": 0.0, "in_flight": 0})
    memory_series: list = field(default_factory=list)  # [(t, pool MB)]
    breaches: list = field(default_factory=list)
    crashes: list = field(default_factory=list)
    checks: dict = field(default_factory=dict)  # loadgen.check name → [passes, fails], from the seconds
    duration: float = 0.0  # s, phases end to end
    load_s: float = 0.0  # s, from each phase's pool_ready (else its start) to its end


def _measure(main):
    from ..analysis.stats import Accounting, Histogram

    m = _Measured(Accounting(), Histogram())
    for p in main:
        m.acc.merge(_phase_accounting(p))
        m.latency.merge(_approximate_latency(p.rows))
        for r in p.rows:
            m.peaks["memory"] = max(m.peaks["memory"], _f(r.get("pool_memory_mb")))
            m.peaks["cpu"] = max(m.peaks["cpu"], _f(r.get("cpu_percent")))
            m.peaks["in_flight"] = max(m.peaks["in_flight"], int(_f(r.get("in_flight"))))
            if _is_num(r.get("pool_memory_mb")):
                m.memory_series.append((r["t"], r["pool_memory_mb"]))
            checks = r.get("checks")
            if isinstance(checks, dict):
                add_checks(m.checks, {label(k): (int(_f(v[0])), int(_f(v[1]))) for k, v in checks.items()
                                      if isinstance(v, list) and len(v) == 2})
        m.breaches += [{k: v for k, v in e.items() if k not in ("type",)} for e in p.all("breach")]
        m.crashes += p.all("worker_crash")
        m.duration += max(0.0, p.t_end - p.t_start)
        ready = p.first("phase", "pool_ready")
        m.load_s += max(0.0, p.t_end - (ready["t"] if ready else p.t_start))
    return m


def _ending(phases, main):
    """``(exit code, stop reason)``: a phase without ``end`` means the master was killed."""
    codes, reasons = [], []
    for p in phases:
        if p.end is not None:
            codes.append(int(p.end.get("exit_code") or 0))
            if p in main:
                reasons.append(str(p.end.get("reason") or ""))
        else:
            codes.append(1)
            stop = p.first("phase", "stop") or p.first("stop")
            reasons.append(KILLED_REASON + (f"; last stop: {stop.get('reason')}" if stop and stop.get("reason") else ""))
    exit_code = ExitCode.worst(codes) if codes else ExitCode.FAILED
    stop_reason = next((r for r in reversed(reasons) if r.startswith(KILLED_REASON)), reasons[-1] if reasons else KILLED_REASON)
    return exit_code, stop_reason


def _metrics(m, lat, throughput):
    """The criteria's metrics (criteria.METRICS names) of an approximated component."""
    acc, peaks, memory_series = m.acc, m.peaks, m.memory_series
    done = acc.completed
    return {
        "success_rate": acc.success_rate if done else None,
        "error_rate": (done - acc.succeeded) / done if done else None,
        "throughput": throughput, "operations": done,
        **{f"{k}_ms": lat.get(k) for k in STATISTICS},
        "peak_memory_mb": peaks["memory"], "peak_cpu_percent": peaks["cpu"],
        "memory_growth_mb": (memory_series[-1][1] - memory_series[0][1]) if len(memory_series) >= 2 else 0.0,
        "crashed": acc.crashed, "timed_out": acc.timed_out, "dropped": acc.dropped, "breaches": len(m.breaches),
    }


def _criteria(group):
    """The ``scenario`` event's criteria, parsed; one this version does not understand is logged and left out."""
    from ..criteria import Criterion

    criteria = []
    for text in (group.scenario or {}).get("criteria") or []:
        try:
            criteria.append(Criterion.parse(text))
        except UsageError:
            log.warning("rebuild: criterion %r of %s is not understood here; left out", text, group.name)
    return criteria


def _phase_accounting(p):
    """Exact from the ``end`` event; else per-second sums, unfinished operations counted as crashed."""
    from ..analysis.stats import Accounting

    names = {f.name for f in fields(Accounting)}
    if p.end is not None and isinstance(p.end.get("accounting"), dict):
        return Accounting(**{k: int(v) for k, v in p.end["accounting"].items() if k in names})
    acc = Accounting(succeeded=sum(int(_f(r.get("succeeded"))) for r in p.rows),
                     failed=sum(int(_f(r.get("failed"))) for r in p.rows),
                     dropped=sum(int(_f(r.get("dropped"))) for r in p.rows),
                     rejected=sum(int(_f(r.get("rejected"))) for r in p.rows))
    for e in p.all("worker_crash"):
        acc.crashed += int(_f(e.get("crashed")))
        acc.timed_out += int(_f(e.get("timed_out")))
    for e in p.all("worker_killed"):
        acc.crashed += int(_f(e.get("operations_lost_in_flight")))
    started = sum(int(_f(r.get("ops"))) for r in p.rows)
    # In flight when the master died: their fate is unknown, so they count as lost (crashed).
    acc.crashed += max(0, started - acc.completed)
    acc.dispatched = acc.completed
    return acc


def _approximate_latency(rows):
    """An HDR histogram whose percentiles approximate those of the seconds' operations together.

    Each second's ``n`` operations are drawn from its quantile function,
    interpolated linearly through its p50, p90, p99, p99.9 and max (the
    lower half is put at p50: the streams do not say how fast it was). At
    most :data:`MAX_DRAWS_PER_SECOND` draws a second, each weighted by its
    share of ``n`` (every operation its own draw below that), and ``n`` is
    at most :data:`MAX_OPS_PER_SECOND`: a corrupt count costs no memory.
    """
    import numpy as np

    from ..analysis.stats import Histogram, Sparse, _indices

    values, weights = [], []
    for r in rows:
        lat = r.get("latency_ms")
        lat = lat if isinstance(lat, dict) else {}
        n = min(int(_f(r.get("succeeded"))) + int(_f(r.get("failed"))), MAX_OPS_PER_SECOND)
        if n <= 0 or not _is_num(lat.get("p50")):
            continue
        qs, vs, last = [0.0], [float(lat["p50"])], float(lat["p50"])
        for share, key in _MASS:
            last = max(last, float(lat[key])) if _is_num(lat.get(key)) else last
            qs.append(share)
            vs.append(last)
        k = min(n, MAX_DRAWS_PER_SECOND)
        at = (np.arange(k) + 0.5) / k
        values.append(np.rint(np.clip(np.interp(at, qs, vs), 0.0, 1e13) * 1000).astype(np.int64))
        w = np.full(k, n // k, dtype=np.int64)
        w[: n % k] += 1
        weights.append(w)
    h = Histogram()
    if values:
        v, index = _indices(h._h, np.concatenate(values))
        uniq, inverse = np.unique(index, return_inverse=True)
        counts = np.zeros(len(uniq), dtype=np.int64)
        np.add.at(counts, inverse, np.concatenate(weights))
        h.add_sparse(Sparse(uniq, counts, int(v.min()), int(v.max())))
    return h


def _shown(v):
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:40] + "…"


def _one_line(e):
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:200]


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _f(v):
    return float(v) if _is_num(v) else 0.0

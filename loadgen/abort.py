"""Criteria judged while a run goes: ``abort_on_fail`` stops a run that has already lost.

A criterion marked ``abort_on_fail`` (``{expr = "...", abort_on_fail = true}``
in a plan, or ``run --abort-on-fail``) is judged once a second, from the
runner's per-second hook, on the run so far. When it is lost the phase
stops at once (graceful drain, as any stop) with exit code 1 and the reason
``criterion <expr> lost early (...)``, and the session is marked aborted so
that the scenario and the plan end there: nothing more is measured. Every
phase of a scenario is judged, an unstressed baseline included: a criterion
already lost without the stress is lost with it, and waiting for the
stressed phase would only spend its duration.

Which metrics can be judged early, and how:

* **On the data so far** — ``success_rate``, ``error_rate`` (succeeded,
  failed, timed out and crashed operations so far) and the latency
  percentiles ``p50_ms`` … ``p9999_ms`` and ``mean_ms`` (the run's cumulative histogram),
  once at least :data:`MIN_OPERATIONS` operations completed. As in k6's
  ``abortOnFail`` this is a verdict on the evidence so far, not a proof that
  the end value would fail too.
* **Counters and peaks** that never go down — ``max_ms``, ``crashed``,
  ``timed_out``, ``dropped``, ``breaches``, ``operations``,
  ``peak_memory_mb``, ``peak_cpu_percent`` — only with ``<``, ``<=`` or
  ``==``, and only once the value is past the limit: then the end value
  cannot pass whatever happens next.

Anything else (throughput, leak and growth figures, the scenario-specific
metrics) is known only at the end: :func:`check_abortable` rejects
``abort_on_fail`` on it, before anything runs.
"""

from __future__ import annotations

import logging

from .errors import ExitCode, UsageError
from .analysis import PERCENTILES

log = logging.getLogger("loadgen.abort")

MIN_OPERATIONS = 20  # completed operations before a rate or percentile is judged: one failure is no verdict

SO_FAR = {"success_rate", "error_rate", "mean_ms"} | {f"{k}_ms" for k, _ in PERCENTILES}
MONOTONIC = {"max_ms", "crashed", "timed_out", "dropped", "breaches", "operations", "peak_memory_mb",
             "peak_cpu_percent"}
UPPER_BOUND_OPS = {"<", "<=", "=="}  # a never-decreasing value can lose these for good


def abortable(criterion):
    """True when ``criterion`` can be judged while the run goes (see the module docstring)."""
    if criterion.metric in SO_FAR:
        return True
    return criterion.metric in MONOTONIC and criterion.op in UPPER_BOUND_OPS


def check_abortable(criterion, where="criterion"):
    """:class:`UsageError` naming ``where`` unless ``criterion`` can be judged early."""
    if not abortable(criterion):
        if criterion.metric in MONOTONIC:
            why = f"{criterion.metric} only grows, so '{criterion.op}' can be lost only at the end"
        else:
            why = f"{criterion.metric} is known only at the end of a run"
        raise UsageError(f"{where}: abort_on_fail cannot apply to '{criterion}': {why} (early: "
                         f"{', '.join(sorted(SO_FAR))}; and {', '.join(sorted(MONOTONIC))} with <, <= or ==)")
    return criterion


def mark(criteria):
    """The criteria with ``abort_on_fail`` set on every one that can be judged early (``--abort-on-fail``)."""
    import dataclasses

    return [dataclasses.replace(c, abort_on_fail=True) if abortable(c) else c for c in criteria]


class EarlyJudge:
    """The ``on_second`` hook that judges abort criteria; chains to the scenario's own hook.

    ``on_lost(reason)`` is called once, after ``runner.request_stop(reason, 1)``.
    Blocking: no; called by the master between two waits, once per second.
    """

    def __init__(self, criteria, on_lost=None, then=None, min_operations=MIN_OPERATIONS):
        self.criteria = [c for c in criteria if c.abort_on_fail and abortable(c)]
        self.on_lost = on_lost
        self.then = then
        self.min_operations = min_operations
        self.succeeded = self.failed = self.dropped = 0
        self.lost = None

    def __call__(self, runner, record):
        if self.then is not None:
            self.then(runner, record)
        self.succeeded += record.get("succeeded") or 0
        self.failed += record.get("failed") or 0
        self.dropped += record.get("dropped") or 0
        if self.lost is not None or not self.criteria:
            return
        metrics = self.metrics(runner)
        for c in self.criteria:
            value = metrics.get(c.metric)
            if value is None:
                continue
            passed, _ = c.evaluate(metrics)
            if passed:
                continue
            self.lost = (f"criterion {c} lost early (measured {value:.4g} after {metrics['operations']} "
                         f"operations)")
            log.warning("%s: stopping the run", self.lost)
            runner.request_stop(self.lost, ExitCode.FAILED)
            if self.on_lost is not None:
                self.on_lost(self.lost)
            return

    def metrics(self, runner):
        """The early-judgeable metrics of the run so far; a rate or percentile is None until
        ``min_operations`` completed."""
        out = runner.out
        crashed = sum(c.get("crashed") or 0 for c in out.crashes)
        timed_out = sum(c.get("timed_out") or 0 for c in out.crashes)
        done = self.succeeded + self.failed + crashed + timed_out
        lat = out.latency_hist.summary_ms()
        m = {
            "operations": done, "crashed": crashed, "timed_out": timed_out, "dropped": self.dropped,
            "breaches": len(out.breaches), "max_ms": lat["max"], "peak_memory_mb": out.peak_memory_mb,
            "peak_cpu_percent": out.peak_cpu_percent,
        }
        if done >= self.min_operations:
            asked = done + (self.dropped if out.response is not None else 0)  # open model: the arrivals
            m["success_rate"] = self.succeeded / asked
            m["error_rate"] = (asked - self.succeeded) / asked
        if (lat.get("count") or 0) >= self.min_operations:
            m.update({f"{k}_ms": lat[k] for k, _ in PERCENTILES}, mean_ms=lat["mean"])
        return m

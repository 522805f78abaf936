"""What every scenario shares: the :class:`Scenario` base (name, criteria, profile durations, the
main phase's plan) and the comparison with an unstressed baseline.

A scenario runs its phases through the session it is given (``api.Session.run_phase``).
"""

from __future__ import annotations

import dataclasses

from .. import options
from ..criteria import parse_all
from ..engine.load import RunPlan


class Scenario:
    """One stress category: ``run(session) -> StressTestResult``. Subclasses set the class
    attributes and implement :meth:`run`."""

    name = ""
    summary = ""
    criteria = ()  # default criteria expressions (the seed's)
    key_metric = "success_rate"
    durations_s = {"ci": 6.0, "standard": 60.0, "nightly": 600.0}

    def duration(self, session):
        """The main phase's length, seconds: the user's ``duration``, else the user's stages' sum,
        else this scenario's for the profile."""
        stages = session.settings.get("stages")
        return (session.settings.get("duration") or (sum(s.duration_s for s in stages) if stages else None)
                or self.durations_s[session.profile])

    def default_criteria(self, target):
        """This scenario's own criteria (expressions) for ``target`` (a ``TargetSpec``): what it is
        judged by when the user gives none."""
        return self.criteria

    def listed_criteria(self):
        """This scenario's default criteria as ``loadgen list`` shows them."""
        return "; ".join(self.criteria)

    def criteria_for(self, session):
        """The criteria this scenario is judged by: the user's, else its own, marked ``default``
        (reports show them as the default criteria)."""
        if session.criteria:
            return parse_all(session.criteria)
        return [dataclasses.replace(c, default=True) for c in parse_all(self.default_criteria(session.target))]

    def main_plan(self, session, *, target=None, **defaults):
        """The main phase's :class:`RunPlan`: this scenario's ``defaults`` (option keys: concurrency,
        duration, workers, slots, …) under the user's load settings, in the one precedence chain of
        :mod:`loadgen.options` (so the user's ``stages`` or ``duration`` always win)."""
        settings = options.merge(options.Layer(defaults), session.load)
        return RunPlan(target=target or session.target, **options.plan_fields(settings))

    def run(self, session):  # pragma: no cover - abstract
        """Run the scenario's phases in ``session``; return its :class:`~loadgen.result.StressTestResult`."""
        raise NotImplementedError


def report_cpu(thresholds):
    """``thresholds`` whose machine-wide CPU guard never kills (it is reported): for phases that
    saturate the CPU on purpose, even when the user asked ``--kill-on cpu``."""
    return dataclasses.replace(thresholds, kill_on=tuple(k for k in thresholds.kill_on if k != "cpu"))


def compare_with_baseline(base, main):
    """Extra metrics: how the stressed phase compares with the unstressed baseline."""
    b, m = base.latency_hist.summary_ms(), main.latency_hist.summary_ms()
    extra = {"baseline_p99_ms": b["p99"], "baseline_p50_ms": b["p50"], "baseline_throughput": base.throughput,
             "baseline_success_rate": base.accounting.success_rate if base.accounting.completed else None}
    if b["p99"] and m["p99"]:
        extra["p99_vs_baseline"] = m["p99"] / b["p99"]
    if b["p50"] and m["p50"]:
        extra["p50_vs_baseline"] = m["p50"] / b["p50"]
    if base.throughput:
        extra["throughput_vs_baseline"] = main.throughput / base.throughput
    return extra


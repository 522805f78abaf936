"""``concurrent_load``: 15+ (default 20) concurrent flows, beyond normal capacity.

A short baseline at concurrency 1 is measured first in the same run, so
the report can say what the load did to latency.
"""

from ..result import result_from_outcome
from ._base import Scenario


class ConcurrentLoad(Scenario):
    name = "concurrent_load"
    summary = "20 concurrent flows (15+), beyond normal; graceful degradation"
    criteria = ("success_rate > 0.7",)
    baseline_s = {"ci": 2.0, "standard": 10.0, "nightly": 30.0}

    def run(self, session):
        duration = self.duration(session)
        base = session.run_phase("baseline", self.main_plan(session, concurrency=1, duration_s=self.baseline_s[session.profile])
                                 .__class__(concurrency=1, duration_s=self.baseline_s[session.profile], target=session.target))
        if session.stopped:
            return result_from_outcome(self.name, base, self.criteria_for(session))
        main = session.run_phase("load", self.main_plan(session, concurrency=20, duration_s=duration))
        extra = {}
        b99, m99 = base.latency_hist.summary_ms()["p99"], main.latency_hist.summary_ms()["p99"]
        if b99 and m99:
            extra["p99_vs_baseline"] = m99 / b99
        extra["baseline_p99_ms"] = b99
        extra["baseline_throughput"] = base.throughput
        return result_from_outcome(self.name, main, self.criteria_for(session), extra_metrics=extra)


SCENARIO = ConcurrentLoad()

"""``sustained_load``: steady load for the profile's duration; leak verdict and p99 drift.

The leak verdict comes from the monitor's memory series (least-squares
slope with fit-quality guards, see ``analysis.leak.LeakDetector``); p99 drift
compares the last third of the run with the first, from exact per-third
histograms.
"""

import dataclasses

from ..result import result_from_outcome
from ._base import Scenario


class SustainedLoad(Scenario):
    """``sustained_load``: steady load at concurrency 10; leak verdict and p99 drift."""

    name = "sustained_load"
    summary = "steady load for the profile's duration; leak verdict and p99 drift (last vs first third)"
    criteria = ("leak_detected == 0", "p99_drift < 2", "memory_growth_mb < 1024")
    durations_s = {"ci": 15.0, "standard": 180.0, "nightly": 1800.0}

    def run(self, session):
        """One phase at concurrency 10 for the profile's duration (unless the user set one), its latency
        kept per third; the leak verdict covers the whole run. Blocks for the phase.

        Returns its result with ``p99_drift`` (last third's p99 ÷ first
        third's, absent when a third is missing or empty), both p99s (ms) and
        the leak verdict's window (s).
        """
        duration = self.duration(session)
        plan = self.main_plan(session, concurrency=10, duration=self.durations_s[session.profile])
        plan = dataclasses.replace(plan, segment_s=(plan.duration_s or duration) / 3.0)
        # The verdict looks at the whole run (after its warm-up), however short the profile.
        thresholds = dataclasses.replace(session.thresholds,
                                         growth_window_s=max(duration, session.thresholds.growth_window_s))
        out = session.run_phase(self.name, plan, thresholds=thresholds)
        extra = {}
        segs = out.segments
        if len(segs) >= 3:
            first, last = segs[min(segs)], segs[max(k for k in segs if k <= 2)]
            p_first, p_last = first.summary_ms()["p99"], last.summary_ms()["p99"]
            extra.update(p99_first_third_ms=p_first, p99_last_third_ms=p_last)
            if p_first and p_last is not None:
                extra["p99_drift"] = p_last / p_first
        leak = out.leak or {}
        extra["leak_window_s"] = leak.get("window_s")
        return result_from_outcome(self.name, out, self.criteria_for(session), extra_metrics=extra)


SCENARIO = SustainedLoad()

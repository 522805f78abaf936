"""``concurrent_load``: 15+ (default 20) concurrent flows, beyond normal capacity.

An unstressed baseline (the same flow, one at a time) is measured in the
same run, so the report says what the concurrency did to latency.
"""

from ..result import result_from_outcome
from ._base import Scenario, compare_with_baseline

BASELINE_S = {"ci": 2.0, "standard": 10.0, "nightly": 30.0}


class ConcurrentLoad(Scenario):
    """``concurrent_load``: 20 flows at once, compared with a baseline of one at a time."""

    name = "concurrent_load"
    summary = "20 concurrent flows (15+), beyond normal; latency vs a baseline at 1"
    criteria = ("success_rate > 0.7",)
    durations_s = {"ci": 5.0, "standard": 45.0, "nightly": 300.0}

    def run(self, session):
        """The baseline at concurrency 1 (``BASELINE_S`` of the profile, shared within the session), then
        20 concurrent flows for the profile's duration unless the user set one. Blocks for both phases.

        Returns the main phase's result with the comparison with the baseline;
        the baseline's result if a stop came first.
        """
        base = session.baseline(1, BASELINE_S[session.profile])
        if session.stopped:
            return result_from_outcome(self.name, base, self.criteria_for(session))
        main = session.run_phase("concurrent_load", self.main_plan(session, concurrency=20,
                                                                   duration=self.durations_s[session.profile]))
        return result_from_outcome(self.name, main, self.criteria_for(session),
                                   extra_metrics=compare_with_baseline(base, main))


SCENARIO = ConcurrentLoad()

"""The three "flows under pressure" scenarios share one shape: a shared unstressed
baseline at the same concurrency, then the same load with a stressor running."""

from ..result import result_from_outcome
from ._base import Scenario, compare_with_baseline

CONCURRENCY = 10
BASELINE_S = {"ci": 3.0, "standard": 15.0, "nightly": 60.0}


class PressureScenario(Scenario):
    durations_s = {"ci": 4.0, "standard": 40.0, "nightly": 300.0}

    def stressor(self, session):  # pragma: no cover - abstract
        raise NotImplementedError

    def thresholds(self, session):
        return session.thresholds

    def run(self, session):
        base = session.baseline(CONCURRENCY, BASELINE_S[session.profile])
        if session.stopped:
            return result_from_outcome(self.name, base, self.criteria_for(session))
        stressor = self.stressor(session)
        plan = self.main_plan(session, concurrency=CONCURRENCY, duration=self.durations_s[session.profile])
        main = session.run_phase(self.name, plan, thresholds=self.thresholds(session), stressors=[stressor])
        extra = compare_with_baseline(base, main)
        extra.update(self.stressor_metrics(main.stressors[0] if main.stressors else {}))
        return result_from_outcome(self.name, main, self.criteria_for(session), extra_metrics=extra)

    def stressor_metrics(self, stats):
        return {}

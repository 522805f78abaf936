"""The three "flows under pressure" scenarios share one shape: a shared unstressed
baseline at the same concurrency, then the same load with a stressor running."""

from ..result import result_from_outcome
from ._base import Scenario, compare_with_baseline

CONCURRENCY = 10
BASELINE_S = {"ci": 3.0, "standard": 15.0, "nightly": 60.0}


class PressureScenario(Scenario):
    """Base of ``cpu_saturation``, ``memory_pressure`` and ``io_stress``: a baseline, then the same load
    under :meth:`stressor`. Subclasses set the stressor and may relax the thresholds and add metrics."""

    durations_s = {"ci": 4.0, "standard": 40.0, "nightly": 300.0}

    def stressor(self, session):  # pragma: no cover - abstract
        """A new stressor to run during the stressed phase."""
        raise NotImplementedError

    def thresholds(self, session):
        """The stressed phase's thresholds: the session's, unless a subclass relaxes one."""
        return session.thresholds

    def run(self, session):
        """The baseline at ``CONCURRENCY`` (``BASELINE_S`` of the profile, shared within the session),
        then the stressed phase (the profile's duration unless the user set one). Blocks for both
        phases.

        Returns the stressed phase's :class:`~loadgen.result.StressTestResult`,
        with the comparison with the baseline and :meth:`stressor_metrics`; the
        baseline's result if a stop came before the stressed phase.
        """
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
        """Extra metrics from the stressor's ``stats`` ({} if it reported none); none by default."""
        return {}

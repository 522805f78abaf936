"""``load``: exactly the load asked for, nothing added — what ``run --target MOD:fn`` runs when no
scenario is named (Locust's and k6's plain run).

One phase: the user's concurrency (default 1), rate or stages, for the user's duration (default by
profile). No baseline phase. The verdict is the user's ``--criterion`` expressions, a breach or a
stop; without any, a run of the user's own target (``--target``, a mix, ``--url``) has a default
verdict, as Locust fails a run with failed requests: :data:`OWN_TARGET_CRITERIA`, failures fail it.
The embedded flow injects failures on purpose (its ``failure_rate``), so it has no default
criterion. Not part of the suite.
"""

from ..result import result_from_outcome
from ._base import Scenario

#: The default verdict of a run of the user's own target: any failed, timed-out or crashed operation
#: (or, in the open model, a dropped arrival) fails it. Replaced by any criterion the user gives.
OWN_TARGET_CRITERIA = ("error_rate == 0",)


class Load(Scenario):
    """``load``: one phase of exactly the load asked; the user's criteria, else failures fail it."""

    name = "load"
    summary = "exactly the load asked (concurrency, rate or stages); no baseline; the criteria given"
    criteria = ()
    durations_s = {"ci": 10.0, "standard": 60.0, "nightly": 600.0}

    def default_criteria(self, target):
        """``error_rate == 0`` for the user's own target; none for the embedded flow (its failures
        are simulated on purpose)."""
        return () if target is None or target.is_flow else OWN_TARGET_CRITERIA

    def listed_criteria(self):
        return f"{'; '.join(OWN_TARGET_CRITERIA)} with your own --target (none with the embedded flow)"

    def run(self, session):
        """The one phase; blocks for it. Returns its result, judged by the user's criteria, else the
        default ones."""
        out = session.run_phase(self.name, self.main_plan(session, concurrency=1,
                                                          duration=self.durations_s[session.profile]))
        return result_from_outcome(self.name, out, self.criteria_for(session))


SCENARIO = Load()

"""``load``: exactly the load asked for, nothing added — what ``run --target MOD:fn`` runs when no
scenario is named (Locust's and k6's plain run).

One phase: the user's concurrency (default 1), rate or stages, for the user's duration (default by
profile). No baseline phase, no default criteria: the verdict is the user's ``--criterion``
expressions, a breach or a stop. Not part of the suite.
"""

from ..result import result_from_outcome
from ._base import Scenario


class Load(Scenario):
    """``load``: one phase of exactly the load asked; criteria only those given."""

    name = "load"
    summary = "exactly the load asked (concurrency, rate or stages); no baseline; only the criteria given"
    criteria = ()
    durations_s = {"ci": 10.0, "standard": 60.0, "nightly": 600.0}

    def run(self, session):
        """The one phase; blocks for it. Returns its result, judged by the user's criteria only."""
        out = session.run_phase(self.name, self.main_plan(session, concurrency=1,
                                                          duration=self.durations_s[session.profile]))
        return result_from_outcome(self.name, out, self.criteria_for(session))


SCENARIO = Load()

"""``circuit_breaker``: a failure burst must open the breaker; the heal must close it.

The flow runs behind a circuit breaker in each worker's dispatcher
(``breaker.CircuitBreaker``: 3 consecutive failures open it, 1 s recovery
timeout, one half-open probe). A simulated upstream outage makes every
call fail for ``OUTAGE_S``; calls are rejected fast while the breaker is
open (counted as ``rejected``); when the outage heals the half-open probe
succeeds and the breaker closes. Every transition is a ``breaker`` event.
"""

import dataclasses
import time

from ..workload.breaker import BreakerConfig
from ..result import result_from_outcome
from ._base import Scenario

HEALTHY_S = {"ci": 2.0, "standard": 10.0, "nightly": 30.0}
OUTAGE_S = {"ci": 2.0, "standard": 10.0, "nightly": 30.0}
HEAL_S = {"ci": 4.0, "standard": 20.0, "nightly": 60.0}
POOL_START_S = 0.5  # the outage is timed from the phase's start; the pool takes about this to be ready


def outage_flow(outage_start, outage_end, inner=None, flow_params=None, seed=None):
    """Per-worker factory: the embedded flow (or ``inner`` MOD:CALLABLE) behind a simulated
    upstream outage between the UNIX times ``outage_start`` and ``outage_end``."""
    from ..workload.flow import FAILED, FlowResult
    from ..workload.targets import TargetSpec, build_operation

    op = build_operation(TargetSpec(ref=inner, flow_params=dict(flow_params or {}), seed=seed), 0)

    def call(inputs):
        if outage_start <= time.time() < outage_end:
            time.sleep(0.005)  # a fast failure: the provider answers 503 at once
            return FlowResult(state=FAILED, failed_stage="research", reason="upstream LLM outage (HTTP 503)")
        return op(inputs)

    return call


class CircuitBreakerScenario(Scenario):
    """``circuit_breaker``: healthy load, a simulated upstream outage, then the heal, behind a breaker."""

    name = "circuit_breaker"
    summary = "a failure burst opens the dispatcher's breaker; half-open probes close it after the heal"
    criteria = ("breaker_opened == 1", "breaker_closed == 1")

    def run(self, session):
        """One phase at concurrency 10: healthy, ``OUTAGE_S`` of failures, then ``HEAL_S`` to recover
        (seconds of the profile; 8.5 s in all for ci). Blocks for the phase.

        Returns its result with ``breaker_opened`` / ``breaker_closed`` (1.0 or
        0.0: closed means every worker's last transition was to closed), the
        number of transitions, the calls rejected and the seconds from the
        outage's start to the first open and from the heal to the last close
        (None when it did not happen).
        """
        p = session.profile
        start = time.time() + POOL_START_S + HEALTHY_S[p]
        end = start + OUTAGE_S[p]
        inner = session.target
        target = dataclasses.replace(
            inner, ref=f"{__name__}:outage_flow", factory=True, flow_params={},
            kwargs={"outage_start": start, "outage_end": end, "inner": inner.ref,
                    "flow_params": dict(inner.flow_params), "seed": inner.seed})
        duration = POOL_START_S + HEALTHY_S[p] + OUTAGE_S[p] + HEAL_S[p]
        plan = self.main_plan(session, concurrency=10, duration=duration, target=target)
        plan = dataclasses.replace(plan, breaker=BreakerConfig(failure_threshold=3, recovery_timeout_s=1.0))
        out = session.run_phase(self.name, plan)
        events = out.breaker_events
        opened = [e for e in events if e["state"] == "open"]
        last_state = {}
        for e in events:
            last_state[e["worker"]] = e["state"]
        closed_again = bool(opened) and all(s == "closed" for s in last_state.values())
        extra = {
            "breaker_opened": 1.0 if opened else 0.0,
            "breaker_closed": 1.0 if closed_again else 0.0,
            "breaker_transitions": len(events),
            "rejected": out.accounting.rejected,
            "outage_s": OUTAGE_S[p],
            "first_open_after_outage_s": (opened[0]["t"] - start) if opened else None,
            "closed_after_heal_s": (max(e["t"] for e in events if e["state"] == "closed") - end)
            if closed_again else None,
        }
        return result_from_outcome(self.name, out, self.criteria_for(session), extra_metrics=extra)


SCENARIO = CircuitBreakerScenario()

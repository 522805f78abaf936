"""``recovery``: overload beyond capacity, then normal load; how long until it recovers?

One pool lives through both: ``OVERLOAD`` concurrent CPU-heavy flows (far
past what the cores sustain, see ``capacity_limits``), then a step down to
``NORMAL``. Recovered = the rolling success rate and p99 over
``WINDOW_S`` are back within tolerance of a baseline measured first at
``NORMAL``; the time to recover counts from the step down. Memory must
come back within 150 MB of the baseline's (the pool's RSS). Overloading the cores is the
point, so the machine-wide CPU guard never kills in the overload phase (it is reported).
"""

import dataclasses

from ..config import Stage, default_workers
from ..result import result_from_outcome
from .capacity_limits import SEARCH_FLOW
from ._base import Scenario, report_cpu

NORMAL = 4
WINDOW_S = 3  # rolling window, seconds
P99_TOLERANCE = 1.5  # × baseline p99
SUCCESS_TOLERANCE = 0.10  # baseline success rate minus this
OVERLOAD_S = {"ci": 4.0, "standard": 20.0, "nightly": 60.0}
BASELINE_S = {"ci": 2.0, "standard": 15.0, "nightly": 30.0}
MAX_RECOVERY_S = {"ci": 20.0, "standard": 60.0, "nightly": 120.0}
JUMP_S = 0.001  # a stage this short is a step


class Recovery(Scenario):
    """``recovery``: overload past capacity, then normal load; seconds until success rate and p99 recover."""

    name = "recovery"
    summary = "overload past capacity, then normal load; time until success rate and p99 recover"
    criteria = ("recovery_rate > 0.75", "recovery_time_seconds < 60", "memory_back_mb < 150")
    key_metric = "recovery_rate"

    def run(self, session):
        """A baseline at ``NORMAL`` (spawned workers), then one phase: ``OVERLOAD_S`` at
        ``max_concurrent_operations``, a step down to ``NORMAL``, held until recovered or for
        ``MAX_RECOVERY_S`` (seconds of the profile). Blocks for both phases.

        Returns the phase's result with ``recovery_rate`` (success rate after
        the step down), ``recovery_time_seconds`` (None if it never recovered),
        ``memory_back_mb`` (pool RSS, MB: the last ``WINDOW_S`` seconds' peak
        minus the baseline's median) and the limits used; the baseline's result
        if a stop came first.
        """
        target = session.target
        if target.is_flow and "stage_cpu_ms" not in target.flow_params:
            # No stage deadlines here either: past capacity they fail nearly every overload operation, and
            # those still finishing after the step down would be counted against the recovery.
            target = dataclasses.replace(target, flow_params={**SEARCH_FLOW, **target.flow_params})
        overload = session.thresholds.max_concurrent_operations
        workers = default_workers()
        slots = -(-overload // workers)
        base_plan = self.main_plan(session, concurrency=NORMAL, duration=BASELINE_S[session.profile],
                                   workers=workers, slots=slots, target=target)
        # Fresh interpreters (unless the user chose): a forked worker inherits the master's malloc
        # arenas and heap, whose fragmentation would count as memory the flow did not give back.
        base_plan = dataclasses.replace(base_plan, start_method="spawn")
        base = session.run_phase("recovery baseline", dataclasses.replace(base_plan, stages=(), operations=None))
        if session.stopped:
            return result_from_outcome(self.name, base, self.criteria_for(session), key_metric="recovery_rate")
        b = base.latency_hist.summary_ms()
        p99_limit = (b["p99"] or 0) * P99_TOLERANCE
        success_floor = (base.accounting.success_rate if base.accounting.completed else 1.0) - SUCCESS_TOLERANCE
        # RSS, not PSS: a forked worker's PSS also climbs as pages it shares with the master
        # unshare (the more the master holds, the more), which is not memory the flow kept.
        base_memory = sorted(v for _, v in base.rss_series)[len(base.rss_series) // 2] \
            if base.rss_series else 0.0
        over_s = OVERLOAD_S[session.profile]
        stages = (Stage(JUMP_S, overload), Stage(over_s, overload), Stage(JUMP_S, NORMAL),
                  Stage(MAX_RECOVERY_S[session.profile], NORMAL))
        state = {"recovered_at": None}

        def watch(runner, rec):
            start = runner.out.load_started_at
            if start is None or rec["t"] < start + over_s + 2 * JUMP_S:
                return
            state.setdefault("after", []).append(rec)
            window = state["after"][-WINDOW_S:]
            if len(window) < WINDOW_S or state["recovered_at"] is not None:
                return
            done = sum(r["succeeded"] + r["failed"] for r in window)
            ok = sum(r["succeeded"] for r in window)
            p99s = [r["latency_ms"]["p99"] for r in window if r["latency_ms"]["p99"] is not None]
            if done and ok / done >= success_floor and p99s and max(p99s) <= p99_limit:
                state["recovered_at"] = window[0]["t"]
                state["recovery_time"] = max(0.0, window[0]["t"] - (start + over_s))
                runner.request_stop("recovered")

        plan = dataclasses.replace(base_plan, stages=stages, duration_s=None, concurrency=overload)
        # Overloading the cores is the point: the machine-wide CPU guard reports, never kills, here.
        out = session.run_phase("recovery", plan, on_second=watch,
                                thresholds=report_cpu(session.thresholds))
        after = state.get("after", [])
        done = sum(r["succeeded"] + r["failed"] for r in after)
        ok = sum(r["succeeded"] for r in after)
        tail = [r["pool_rss_mb"] for r in after[-WINDOW_S:] if r.get("pool_rss_mb")]
        extra = {
            "recovery_rate": ok / done if done else None,
            "recovery_time_seconds": state.get("recovery_time"),
            "memory_back_mb": (max(tail) - base_memory) if tail else None,
            "baseline_p99_ms": b["p99"], "p99_limit_ms": p99_limit, "success_floor": success_floor,
            "overload_concurrency": overload, "normal_concurrency": NORMAL,
            "overload_p99_ms": max((r["latency_ms"]["p99"] or 0) for r in out.seconds) if out.seconds else None,
        }
        return result_from_outcome(self.name, out, self.criteria_for(session), extra_metrics=extra,
                                   key_metric="recovery_rate", recovery_time_seconds=state.get("recovery_time"))


SCENARIO = Recovery()

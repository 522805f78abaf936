"""``capacity_limits``: the highest concurrency this machine sustains for this flow.

A search, step by step (each step a short closed-model run on a fresh
pool): grow the concurrency geometrically (1, 2, 4, …) until a step
breaks the success rate, the p99 SLO or a threshold, then bisect between
the last good and the first bad step. The SLO is relative: p99 at most
``SLO_FACTOR`` × the p99 at concurrency 1, measured first. Every step's
throughput, p99 and resources are recorded, and the Universal
Scalability Law is fitted to concurrency vs throughput.

Capacity comes from real contention: the embedded flow is made CPU-heavier
here (unless the user sets its CPU), so the cores, not a random number,
are what runs out — pin the run to one core (``taskset -c 0``) or raise
``stage_cpu_ms`` and the capacity falls.
"""

import dataclasses

from ..config import default_workers
from ..result import result_from_outcome
from ..measure import usl
from ._base import Scenario

SLO_FACTOR = 1.5
MIN_SUCCESS_RATE = 0.8
STEP_S = {"ci": 1.5, "standard": 8.0, "nightly": 30.0}
FLOW_DEFAULTS = {"stage_cpu_ms": "3"}  # ≈ 25 ms of numpy CPU per kickoff


class CapacityLimits(Scenario):
    """``capacity_limits``: grow, then bisect, the concurrency; ``max_capacity``: the highest that passed."""

    name = "capacity_limits"
    summary = (f"grow then bisect concurrency until p99 > {SLO_FACTOR:g}× p99 at 1, success < "
               f"{MIN_SUCCESS_RATE:.0%} or a breach; USL fit")
    criteria = ("max_capacity >= 1",)
    key_metric = "max_capacity"

    def run(self, session):
        """The search of the module docstring, one phase per step on a fresh pool. Blocks for every step:
        ``duration`` (else ``STEP_S`` of the profile) seconds each, twice that at concurrency 1.

        Returns the result of the growth's last step (the first to fail, or the
        one at the cap) with ``max_capacity``, what limited it, the SLO, every
        step (``capacity_steps``) and the USL fit (None with fewer than three
        distinct steps). A stop (signal, lost abort criterion) ends the search
        at the current step.
        """
        step_s = session.settings.get("duration") or STEP_S[session.profile]
        target = session.target
        if target.ref is None and "stage_cpu_ms" not in target.flow_params:
            target = dataclasses.replace(target, flow_params={**FLOW_DEFAULTS, **target.flow_params})
        cap = session.thresholds.max_concurrent_operations
        workers = session.settings.get("workers") or default_workers()
        steps = {}

        def step(c):
            # The reference step (c=1) runs longer: its p99 sets the SLO and needs samples.
            seconds = step_s * (2 if c == 1 else 1)
            plan = self.main_plan(session, concurrency=c, duration=seconds, workers=workers,
                                  slots=-(-c // workers), target=target)
            plan = dataclasses.replace(plan, concurrency=c, stages=(), operations=None, duration_s=seconds,
                                       expect_breach=True)
            out = session.run_phase(f"capacity c={c}", plan)
            lat = out.latency_hist.summary_ms()
            acc = out.accounting
            row = {"concurrency": c, "throughput": round(out.throughput, 3), "p50_ms": lat["p50"],
                   "p99_ms": lat["p99"], "success_rate": round(acc.success_rate, 4) if acc.completed else None,
                   "peak_cpu_percent": round(out.peak_cpu_percent, 1), "peak_memory_mb": round(out.peak_memory_mb, 1),
                   "breaches": len(out.breaches), "operations": acc.completed}
            slo = steps[1]["p99_ms"] * SLO_FACTOR if 1 in steps and steps[1]["p99_ms"] else None
            reasons = []
            if out.breaches:
                reasons.append(f"breach: {out.breaches[0]['metric']}")
            if row["success_rate"] is None or row["success_rate"] < MIN_SUCCESS_RATE:
                reasons.append(f"success {row['success_rate']}")
            if slo is not None and (row["p99_ms"] is None or row["p99_ms"] > slo):
                reasons.append(f"p99 {row['p99_ms']} ms > SLO {slo:.1f} ms")
            row["ok"] = not reasons
            row["why"] = "; ".join(reasons)
            steps[c] = row
            return row["ok"], out

        ok, first = step(1)
        good, bad, last_out = (1 if ok else 0), None, first
        c = 1
        while ok and not session.stopped:
            nxt = min(c * 2, cap)
            if nxt == c:
                break
            c = nxt
            ok, last_out = step(c)
            if ok:
                good = c
            else:
                bad = c
        while bad is not None and bad - good > max(1, good // 10) and not session.stopped:
            mid = (good + bad) // 2
            ok, _ = step(mid)
            if ok:
                good = mid
            else:
                bad = mid
        rows = [steps[k] for k in sorted(steps)]
        fitted = usl.fit([r["concurrency"] for r in rows], [r["throughput"] for r in rows])
        extra = {
            "max_capacity": good if good else None,
            "capacity_limited_by": (steps[bad]["why"] if bad is not None else f"max_concurrent_operations={cap}"),
            "slo_p99_ms": steps[1]["p99_ms"] * SLO_FACTOR if steps[1]["p99_ms"] else None,
            "capacity_steps": rows,
            "usl": fitted,
        }
        if fitted:
            extra["usl_peak_concurrency"] = fitted["peak_concurrency"]
        best = max(rows, key=lambda r: r["throughput"])
        extra["peak_throughput"] = best["throughput"]
        return result_from_outcome(self.name, last_out, self.criteria_for(session), extra_metrics=extra,
                                   key_metric="max_capacity", breaking_point_reached=bad is not None)


SCENARIO = CapacityLimits()

"""``capacity_limits``: the highest concurrency this machine sustains for this flow, with its interval.

A search, step by step (each step a closed-model run on a fresh pool): a
reference step at concurrency 1, then 1, 2, 4, … until a step breaks the
latency SLO, the success rate or a threshold, then bisection between the
last good and the first bad step. The capacity is where the SLO is crossed,
interpolated between those two steps, with a 95 % interval; every step is
recorded and the Universal Scalability Law fitted to concurrency vs throughput.

Why the verdicts hold still (the old search gave 1, 11, 16, 19 on the same
machine): the SLO is on the **mean** latency — at most ``SLO_FACTOR`` × the
mean at concurrency 1 — not on a p99 of twenty samples. In a closed model the
mean is concurrency ÷ throughput (Little's law), so it rises smoothly past
the knee, and its standard error is sd/√n: each step runs until it has
``STEP_OPS`` operations (the reference ``REFERENCE_OPS``), which puts it
within a few percent. A step is judged good or bad only when the ratio's 95 %
interval lies on one side of the SLO; otherwise it is run again and the two
pooled; a bad step at concurrency ``EARLY`` or below is always run again, so
one unlucky early step does not end the search at 1 or 2.

The throughput knee and the SLO are two views of one curve: past the knee
throughput stays at its maximum X, so mean latency = c ÷ X and the SLO is
crossed at ``SLO_FACTOR`` × (X × the unloaded latency). The report says
whether the two agree, or why not.

Capacity comes from real contention: the embedded flow is made CPU-heavier
here (unless the user sets its CPU), so the cores, not a random number, are
what runs out — pin the run to one core (``taskset -c 0``) or raise
``stage_cpu_ms`` and the capacity falls.
"""

import dataclasses
import math

from ..analysis import usl
from ..config import default_workers
from ..result import result_from_outcome
from ._base import Scenario

SLO_FACTOR = 1.5  # mean latency at most this × the mean at concurrency 1
MIN_SUCCESS_RATE = 0.8
Z95 = 1.96
# Operations a step must complete, and the longest it may run: (reference at c=1, other steps).
REFERENCE_OPS = {"ci": 50, "standard": 300, "nightly": 1000}
STEP_OPS = {"ci": 120, "standard": 600, "nightly": 2000}
REFERENCE_S = {"ci": 8.0, "standard": 60.0, "nightly": 180.0}
STEP_S = {"ci": 3.0, "standard": 15.0, "nightly": 60.0}
EARLY = 4  # a bad step at this concurrency or below is run again even when its verdict is sure
AGREEMENT = 0.25  # the SLO's capacity and SLO_FACTOR × the knee agree within this share
CONFIDENT_WIDTH = 0.5  # an interval wider than this share of the capacity is not a measurement
FLOW_DEFAULTS = {"stage_cpu_ms": "3"}  # ≈ 25 ms of numpy CPU per kickoff
# The search's own flow has no stage deadlines: its limit is the latency SLO. A deadline turns the same
# slowdown into a cliff of timeouts (success 95 % at one step, 35 % at the next), and a verdict taken on
# the cliff's edge is a coin toss; the pressure scenarios and recovery keep them.
SEARCH_FLOW = {**FLOW_DEFAULTS, "stage_timeout_ms": "none"}


@dataclasses.dataclass
class Step:
    """One concurrency's measurement: ``n`` operations, their mean latency and its sd (ms)."""

    concurrency: int
    n: int
    mean_ms: float
    sd_ms: float
    throughput: float
    success_rate: float | None
    breach: str | None
    outcome: object
    runs: int = 1

    def pooled(self, other):
        """This step and a re-run of it, as one (counts added; mean and variance pooled)."""
        n = self.n + other.n
        if n == 0:
            return self
        mean = (self.n * self.mean_ms + other.n * other.mean_ms) / n
        ss = sum(s.n * (s.sd_ms ** 2 + (s.mean_ms - mean) ** 2) for s in (self, other))
        rate = [s.success_rate for s in (self, other) if s.success_rate is not None]
        return Step(self.concurrency, n, mean, math.sqrt(ss / n), (self.throughput + other.throughput) / 2,
                    min(rate) if rate else None, self.breach or other.breach, other.outcome, self.runs + 1)

    def ratio(self, ref):
        """``(mean ÷ reference mean, its standard error)``, the error from both steps' sd/√n."""
        if not self.n or not ref.n or ref.mean_ms <= 0:
            return math.inf, math.inf
        r = self.mean_ms / ref.mean_ms
        rel = math.sqrt((self.sd_ms / self.mean_ms) ** 2 / self.n + (ref.sd_ms / ref.mean_ms) ** 2 / ref.n) \
            if self.mean_ms > 0 else math.inf
        return r, r * rel

    def row(self, ref, verdict, why):
        """The ``capacity_steps`` row of this step."""
        r, se = self.ratio(ref) if ref is not None else (1.0, 0.0)
        lat = self.outcome.latency_hist.summary_ms()
        return {"concurrency": self.concurrency, "throughput": round(self.throughput, 3), "operations": self.n,
                "mean_ms": round(self.mean_ms, 3), "p50_ms": lat["p50"], "p99_ms": lat["p99"],
                "latency_ratio": round(r, 4), "ratio_se": round(se, 4),
                "success_rate": None if self.success_rate is None else round(self.success_rate, 4),
                "peak_cpu_percent": round(self.outcome.peak_cpu_percent, 1),
                "peak_memory_mb": round(self.outcome.peak_memory_mb, 1), "runs": self.runs,
                "ok": verdict, "why": why}


class CapacityLimits(Scenario):
    """The capacity search (see the module docstring)."""

    name = "capacity_limits"
    summary = (f"grow then bisect concurrency until mean latency > {SLO_FACTOR:g}× its value at 1 (95 % "
               f"confident), success < {MIN_SUCCESS_RATE:.0%} or a breach; capacity with its interval; USL fit")
    criteria = ("max_capacity >= 1", "capacity_confident == 1")
    key_metric = "max_capacity"

    def run(self, session):
        """Search, then judge: returns the component with the capacity, its interval and every step."""
        search = _Search(self, session)
        search.run()
        return search.result()


class _Search:
    """One capacity search in ``session`` (state kept between the steps)."""

    def __init__(self, scenario, session):
        self.scenario, self.session = scenario, session
        profile = session.profile
        self.ops, self.max_s = STEP_OPS[profile], session.settings.get("duration") or STEP_S[profile]
        self.ref_ops, self.ref_s = REFERENCE_OPS[profile], session.settings.get("duration") or REFERENCE_S[profile]
        target = session.target
        if target.is_flow and "stage_cpu_ms" not in target.flow_params:
            target = dataclasses.replace(target, flow_params={**SEARCH_FLOW, **target.flow_params})
        self.target = target
        self.cap = session.thresholds.max_concurrent_operations
        self.workers = session.settings.get("workers") or default_workers()
        self.ref = None
        self.steps = {}  # concurrency → (Step, verdict, why)

    def measure(self, c, ops, seconds):
        """Run one step at concurrency ``c`` until ``ops`` operations or ``seconds``; a :class:`Step`."""
        plan = self.scenario.main_plan(self.session, concurrency=c, duration=seconds, workers=self.workers,
                                       slots=-(-c // self.workers), target=self.target)
        plan = dataclasses.replace(plan, concurrency=c, stages=(), operations=ops, duration_s=seconds,
                                   expect_breach=True)
        out = self.session.run_phase(f"capacity c={c}", plan)
        mean_us, sd_us = out.latency.mean_sd_us()
        acc = out.accounting
        return Step(c, out.latency.count, mean_us / 1000, sd_us / 1000, out.throughput,
                    acc.success_rate if acc.completed else None,
                    out.breaches[0]["metric"] if out.breaches else None, out)

    def judge(self, step):
        """``(verdict, sure, why)``: good or bad, whether the 95 % interval says so, and the reason."""
        if step.breach:
            return False, True, f"breach: {step.breach}"
        if step.success_rate is None or step.success_rate < MIN_SUCCESS_RATE:
            return False, True, f"success {step.success_rate}"
        r, se = step.ratio(self.ref)
        why = f"mean latency {r:.2f}× (±{Z95 * se:.2f}) the unloaded one; SLO {SLO_FACTOR:g}×"
        if r - Z95 * se > SLO_FACTOR:
            return False, True, why
        if r + Z95 * se < SLO_FACTOR:
            return True, True, why
        return r <= SLO_FACTOR, False, why + " (within its interval: judged on the pooled runs)"

    def step(self, c, recheck_bad=False):
        """Measure ``c``, re-running it when its verdict is not sure (or when ``recheck_bad`` and it
        is bad); records and returns the verdict."""
        step = self.measure(c, self.ops, self.max_s)
        ok, sure, why = self.judge(step)
        if (not sure or (recheck_bad and not ok)) and not self.session.stopped:
            step = step.pooled(self.measure(c, self.ops, self.max_s))
            ok, _, why = self.judge(step)
            why += f" (checked twice, {step.n} operations)"
        self.steps[c] = (step, ok, why)
        return ok

    def run(self):
        """Reference, doubling, bisection (stops early when the session is stopped)."""
        self.ref = self.measure(1, self.ref_ops, self.ref_s)
        self.steps[1] = (self.ref, True, "reference")
        self.good, self.bad, c = 1, None, 1
        if self.ref.breach or not self.ref.n:
            self.good = 0
            return
        while self.bad is None and not self.session.stopped:
            nxt = min(c * 2, self.cap)
            if nxt == c:
                break
            c = nxt
            if self.step(c, recheck_bad=c <= EARLY):
                self.good = c
            else:
                self.bad = c
        # Bisect to a bracket a quarter of the capacity wide: the interpolation between its ends, with
        # its interval, does the rest (finer steps would cost time and add no precision the interval lacks).
        while self.bad is not None and self.bad - self.good > max(1, self.good // 4) and not self.session.stopped:
            mid = (self.good + self.bad) // 2
            if self.step(mid):
                self.good = mid
            else:
                self.bad = mid

    def capacity(self):
        """``(capacity, low, high, limited_by)``: where the SLO is crossed, interpolated between the last
        good and the first bad step, with the 95 % interval from both steps' ratios."""
        if not self.good:
            return None, None, None, self.steps[1][2] if 1 in self.steps else "no reference step"
        if self.bad is None:
            return self.good, self.good, self.good, f"max_concurrent_operations={self.cap} (a lower bound)"
        g, (sg, _, _), (sb, _, why) = self.good, self.steps[self.good], self.steps[self.bad]
        rg, eg = sg.ratio(self.ref) if g > 1 else (1.0, 0.0)
        rb, eb = sb.ratio(self.ref)
        if not (sb.breach is None and sb.success_rate is not None and sb.success_rate >= MIN_SUCCESS_RATE) \
                or not math.isfinite(rb):
            return g, g, g, why  # broken by errors or a breach, not by latency: the good step is the capacity

        def cross(a, b):
            return g + (SLO_FACTOR - a) / (b - a) * (self.bad - g) if b > a else float(g)

        c = cross(rg, rb)
        low = cross(rg + Z95 * eg, rb + Z95 * eb)
        high = cross(max(0.0, rg - Z95 * eg), max(SLO_FACTOR, rb - Z95 * eb))
        clamp = lambda v: max(1, int(math.floor(v)))  # noqa: E731 - whole operations in flight
        return clamp(c), clamp(min(low, c)), clamp(max(high, c)), why

    def result(self):
        """The component: the capacity step's figures, the capacity with its interval, every step."""
        cap, low, high, why = self.capacity()
        rows = [self.steps[k][0].row(self.ref, self.steps[k][1], self.steps[k][2]) for k in sorted(self.steps)]
        fitted = usl.fit([r["concurrency"] for r in rows], [r["throughput"] for r in rows])
        served = [r["throughput"] for r in rows if r["ok"]]  # a failing step's fast failures are no throughput
        knee = max(served) * (self.ref.mean_ms / 1000) if served and self.ref and self.ref.n else None
        extra = {
            "max_capacity": cap, "capacity_low": low, "capacity_high": high,
            "capacity_interval": None if cap is None else f"{cap} [{low}–{high}]",
            "capacity_limited_by": why,
            "capacity_confident": 1.0 if cap and (high - low) <= CONFIDENT_WIDTH * cap else 0.0,
            "reference_mean_ms": round(self.ref.mean_ms, 3) if self.ref else None,
            "slo_mean_ms": round(self.ref.mean_ms * SLO_FACTOR, 3) if self.ref and self.ref.n else None,
            "throughput_knee": None if knee is None else round(knee, 2),
            "capacity_vs_knee": _agreement(cap, knee),
            "capacity_steps": rows, "usl": fitted,
            "peak_throughput": max(r["throughput"] for r in rows),
        }
        if fitted:
            extra["usl_peak_concurrency"] = fitted["peak_concurrency"]
        main = self.steps[self.good][0].outcome if self.good in self.steps else self.ref.outcome
        return result_from_outcome(self.scenario.name, main, self.scenario.criteria_for(self.session),
                                   extra_metrics=extra, key_metric="max_capacity",
                                   breaking_point_reached=self.bad is not None)


def _agreement(capacity, knee):
    """Whether the latency SLO's capacity agrees with the throughput knee (``SLO_FACTOR`` × knee)."""
    if capacity is None or not knee:
        return "no knee: too few steps"
    expected = SLO_FACTOR * knee
    if abs(capacity - expected) <= AGREEMENT * expected:
        return (f"agrees: throughput levels off at {knee:.1f} in flight (its maximum × the unloaded latency), "
                f"and {SLO_FACTOR:g}× that is {expected:.1f}")
    if capacity < expected:
        return (f"latency crossed the SLO at {capacity} before throughput levelled off ({SLO_FACTOR:g} × knee "
                f"{knee:.1f} = {expected:.1f}): contention slows operations before the machine is saturated")
    return (f"the SLO held to {capacity}, past {SLO_FACTOR:g} × the knee ({expected:.1f}): latency grew slower "
            "than throughput levelled off (a flow whose waits overlap)")


SCENARIO = CapacityLimits()

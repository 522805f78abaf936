"""What every scenario shares: profiles, the session that runs phases, criteria."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..config import ResourceThresholds
from ..criteria import parse_all
from ..errors import ExitCode
from ..engine.runner import RunPlan, Runner
from ..workload.targets import TargetSpec


@dataclass
class Overrides:
    """What the user set on the command line or in the API for a scenario's main phase."""

    concurrency: int | None = None
    stages: tuple = ()
    duration_s: float | None = None
    operations: int | None = None
    workers: int | None = None
    slots: int | None = None
    op_timeout_s: float | None = None
    criteria: tuple = ()  # replaces the scenario's defaults when given
    rate: float | None = None  # open model for the main phase
    max_lateness_s: float | None = None


@dataclass
class Session:
    """Shared by the phases of a scenario (and the scenarios of a suite)."""

    thresholds: ResourceThresholds = field(default_factory=ResourceThresholds)
    target: TargetSpec = field(default_factory=TargetSpec)
    profile: str = "ci"
    run_dir: str | None = None
    overrides: Overrides = field(default_factory=Overrides)
    sample_interval_s: float = 0.1
    stop_file: str | None = None
    start_method: str | None = None
    progress: object = None
    interrupted: int | None = None  # exit code of a signal that stopped a phase
    baselines: dict = field(default_factory=dict)  # (concurrency, seconds) → RunOutcome, shared in a suite
    gate: object = None  # runner.SignalGate of the whole command (None: each phase handles its own)
    aborted: str | None = None  # why an abort_on_fail criterion stopped a phase (see loadgen.abort)

    @property
    def abort_criteria(self):
        """The user's criteria marked ``abort_on_fail``: judged every second of every phase."""
        return tuple(c for c in parse_all(self.overrides.criteria) if c.abort_on_fail)

    def run_phase(self, phase, plan, thresholds=None, stressors=(), on_second=None):
        """Run one phase; returns its RunOutcome. A phase stopped by a signal, or by a lost
        ``abort_on_fail`` criterion, marks the session (``stopped``)."""
        if self.abort_criteria:
            from ..abort import EarlyJudge

            on_second = EarlyJudge(self.abort_criteria, on_lost=self._abort, then=on_second)
        plan = dataclasses.replace(plan, name=phase, target=plan.target or self.target,
                                   sample_interval_s=self.sample_interval_s, stop_file=self.stop_file,
                                   start_method=self.start_method or plan.start_method)
        runner = Runner(plan, thresholds or self.thresholds, run_dir=self.run_dir, progress=self.progress,
                        phase=phase, stressors=stressors, on_second=on_second, gate=self.gate)
        outcome = runner.run()
        if outcome.exit_code in (ExitCode.SIGINT, ExitCode.SIGTERM):
            self.interrupted = outcome.exit_code
        return outcome

    def _abort(self, reason):
        self.aborted = reason

    @property
    def stopped(self):
        if self.interrupted is None and self.gate is not None and self.gate.exit_code is not None:
            self.interrupted = self.gate.exit_code  # a signal between phases
        return self.interrupted is not None or self.aborted is not None

    def baseline(self, concurrency, seconds):
        """An unstressed run at ``concurrency``, measured once per session and shared."""
        key = (concurrency, seconds)
        if key not in self.baselines:
            plan = RunPlan(concurrency=concurrency, duration_s=seconds, target=self.target)
            self.baselines[key] = self.run_phase(f"baseline c={concurrency}", plan)
        return self.baselines[key]


class Scenario:
    name = ""
    summary = ""
    criteria = ()  # default criteria expressions (the seed's)
    key_metric = "success_rate"
    durations_s = {"ci": 6.0, "standard": 60.0, "nightly": 600.0}

    def duration(self, session):
        return session.overrides.duration_s or self.durations_s[session.profile]

    def criteria_for(self, session):
        return parse_all(session.overrides.criteria or self.criteria)

    def main_plan(self, session, **defaults):
        """The main phase's plan: scenario defaults, then the user's overrides."""
        o = session.overrides
        values = dict(defaults)
        for key in ("concurrency", "rate", "max_lateness_s", "operations", "workers", "slots", "op_timeout_s"):
            v = getattr(o, key)
            if v is not None:
                values[key] = v
        if o.stages:
            values["stages"] = tuple(o.stages)
            values.setdefault("duration_s", None)
        if o.duration_s is not None:
            values["duration_s"] = o.duration_s
        elif o.operations is not None and "duration_s" not in defaults:
            values["duration_s"] = None
        values.setdefault("target", session.target)
        return RunPlan(**values)

    def profile_value(self, session, table):
        return table[session.profile]

    def run(self, session):  # pragma: no cover - abstract
        raise NotImplementedError


def compare_with_baseline(base, main):
    """Extra metrics: how the stressed phase compares with the unstressed baseline."""
    b, m = base.latency_hist.summary_ms(), main.latency_hist.summary_ms()
    extra = {"baseline_p99_ms": b["p99"], "baseline_p50_ms": b["p50"], "baseline_throughput": base.throughput,
             "baseline_success_rate": base.accounting.success_rate if base.accounting.completed else None}
    if b["p99"] and m["p99"]:
        extra["p99_vs_baseline"] = m["p99"] / b["p99"]
    if b["p50"] and m["p50"]:
        extra["p50_vs_baseline"] = m["p50"] / b["p50"]
    if base.throughput:
        extra["throughput_vs_baseline"] = main.throughput / base.throughput
    return extra


"""The Python API; the CLI is a thin layer over it.

``run(...)`` runs one scenario, ``run_suite(...)`` all of them, ``run_plan``
one raw :class:`RunPlan`. Each returns a :class:`Report` after writing the
run directory (unless ``out=False``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .config import ResourceThresholds, parse_duration, parse_stages, positive_int
from .errors import UsageError
from .workload.targets import TargetSpec


@dataclass
class Report:
    """What a run left behind: the report dict, component results, exit code and files."""

    report: dict
    results: list
    exit_code: int
    run_dir: str | None = None
    paths: dict = field(default_factory=dict)

    @property
    def result(self):
        return self.results[0] if self.results else None


def _session(*, thresholds, target, flow_params, target_args, seed, profile, out, name, overrides,
             sample_interval, stop_file, start_method, progress, target_factory=False, inputs=None,
             inputs_mode="cycle"):
    from .scenarios import PROFILES
    from .scenarios._base import Session
    from .streams import default_run_dir, prepare_run_dir

    if profile not in PROFILES:
        raise UsageError(f"--profile: {profile!r} is not one of {', '.join(PROFILES)}")
    if seed is not None:
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise UsageError(f"--seed: expected a whole number, got {seed!r}") from None
        if seed < 0:
            raise UsageError(f"--seed: must be zero or more, got {seed}")
    if target_factory and target is None:
        raise UsageError("--target-factory needs a MOD:FACTORY (the factory builds the operation once per worker)")
    spec = TargetSpec(ref=target, flow_params=dict(flow_params or {}), kwargs=dict(target_args or {}), seed=seed,
                      factory=bool(target_factory), inputs=inputs, inputs_mode=inputs_mode or "cycle")
    from .workload.targets import check_target

    check_target(spec)
    run_dir = None
    if out is not False:
        run_dir = prepare_run_dir(out or default_run_dir(name))
    interval = parse_duration(sample_interval, "--sample-interval") if sample_interval is not None else 0.1
    return Session(thresholds=thresholds or ResourceThresholds(), target=spec, profile=profile, run_dir=run_dir,
                   overrides=overrides, sample_interval_s=interval, stop_file=stop_file,
                   start_method=start_method, progress=progress)


def make_overrides(concurrency=None, duration=None, operations=None, stages=None, workers=None, slots=None,
                   op_timeout=None, criteria=None, rate=None, max_lateness=None):
    from .config import positive_float
    from .criteria import parse_all
    from .scenarios._base import Overrides

    return Overrides(
        concurrency=positive_int(concurrency, "--concurrency") if concurrency is not None else None,
        stages=tuple(parse_stages(stages)) if isinstance(stages, str) else tuple(stages or ()),
        duration_s=parse_duration(duration, "--duration") if duration is not None else None,
        operations=positive_int(operations, "--operations") if operations is not None else None,
        workers=positive_int(workers, "--workers") if workers is not None else None,
        slots=positive_int(slots, "--slots") if slots is not None else None,
        op_timeout_s=parse_duration(op_timeout, "--op-timeout") if op_timeout is not None else None,
        criteria=tuple(parse_all(criteria or ())),
        rate=positive_float(rate, "--rate") if rate is not None else None,
        max_lateness_s=parse_duration(max_lateness, "--max-lateness") if max_lateness is not None else None,
    )


def run(scenario="concurrent_load", *, concurrency=None, rate=None, max_lateness=None, duration=None,
        operations=None, stages=None,
        workers=None, slots=None, op_timeout=None, criteria=None, target=None, flow_params=None,
        target_args=None, seed=None, thresholds=None, out=None, profile="ci", sample_interval=None,
        stop_file=None, start_method=None, progress=None, command=None, target_factory=False, inputs=None,
        inputs_mode="cycle"):
    """Run one scenario and write its run directory; returns a :class:`Report`.

    Durations take seconds or strings (``500ms``, ``10s``, ``5m``). ``out``:
    the run directory (None: ``loadgen-results/<UTC time>-<scenario>``; False:
    write nothing). Raises :class:`UsageError` for bad input before any
    process starts.
    """
    from . import scenarios

    sc = scenarios.get(scenario)
    overrides = make_overrides(concurrency, duration, operations, stages, workers, slots, op_timeout, criteria,
                               rate, max_lateness)
    session = _session(thresholds=thresholds, target=target, flow_params=flow_params, target_args=target_args,
                       seed=seed, profile=profile, out=out, name=scenario, overrides=overrides,
                       sample_interval=sample_interval, stop_file=stop_file, start_method=start_method,
                       progress=progress, target_factory=target_factory, inputs=inputs, inputs_mode=inputs_mode)
    return _run_scenarios([sc], session, kind=scenario, command=command)


def run_suite(*, profile="ci", target=None, flow_params=None, target_args=None, seed=None, thresholds=None,
              out=None, sample_interval=None, stop_file=None, start_method=None, progress=None, command=None,
              only=None, target_factory=False, inputs=None, inputs_mode="cycle"):
    """Run every scenario (or ``only`` those named) in one process tree; seed's report names."""
    from . import scenarios
    from .scenarios._base import Overrides

    names = list(only) if only else scenarios.names()
    scs = [scenarios.get(n) for n in names]
    session = _session(thresholds=thresholds, target=target, flow_params=flow_params, target_args=target_args,
                       seed=seed, profile=profile, out=out, name="suite", overrides=Overrides(),
                       sample_interval=sample_interval, stop_file=stop_file, start_method=start_method,
                       progress=progress, target_factory=target_factory, inputs=inputs, inputs_mode=inputs_mode)
    return _run_scenarios(scs, session, kind="suite", command=command)


def _run_scenarios(scs, session, kind, command=None):
    """Run the scenarios under one signal gate (a signal at any moment still leaves a report)."""
    from .engine.runner import SignalGate

    started = time.time()
    results = []
    session.gate = session.gate or SignalGate()
    installed = session.gate.install()
    try:
        return _run_and_report(scs, session, kind, command, started, results)
    finally:
        if installed:
            session.gate.restore()


def _run_and_report(scs, session, kind, command, started, results):
    from .report.rebuild import note_component, note_scenario
    from .report import build_report, write_reports

    for sc in scs:
        if session.stopped:
            break
        note_scenario(session, sc, kind)  # lets `loadgen report` rebuild a killed run (rebuild.py)
        results.append(sc.run(session))
        note_component(session, results[-1])
        if session.stopped:
            break
    report = build_report(results, kind=kind, started_at=started, ended_at=time.time(),
                          thresholds=session.thresholds, run_dir=session.run_dir, command=command,
                          seed=session.target.seed)
    if session.interrupted is not None:
        report["exit_code"] = session.interrupted
    try:
        paths = write_reports(session.run_dir, report) if session.run_dir else {}
    except OSError as e:
        from .errors import OutputError

        raise OutputError(f"cannot write the reports in {session.run_dir}: {e.strerror or e} "
                          f"(the streams written so far are kept; `loadgen report` rebuilds them)") from None
    return Report(report, results, report["exit_code"], session.run_dir, paths)


def run_plan(plan, thresholds=None, out=None):
    """Run one raw :class:`runner.RunPlan` (no scenario, no criteria); returns the RunOutcome."""
    from .engine.runner import Runner
    from .streams import prepare_run_dir

    run_dir = prepare_run_dir(out) if out else None
    return Runner(plan, thresholds, run_dir=run_dir).run()


class HeavyLoadStressTester:
    """The seed's orchestration class, on loadgen's engine.

    ``tester = HeavyLoadStressTester(ResourceThresholds(...))``;
    ``tester.run_scenario("concurrent_load")`` → ``StressTestResult``;
    ``tester.run_comprehensive_suite()`` → the suite :class:`Report`.
    """

    def __init__(self, thresholds=None, *, profile="ci", out=None, seed=42, flow_params=None, target=None):
        self.thresholds = thresholds or ResourceThresholds()
        self.profile = profile
        self.out = out
        self.seed = seed
        self.flow_params = dict(flow_params or {})
        self.target = target
        self.results = []

    def run_scenario(self, name, **kwargs):
        kwargs.setdefault("profile", self.profile)
        kwargs.setdefault("seed", self.seed)
        kwargs.setdefault("flow_params", self.flow_params)
        kwargs.setdefault("target", self.target)
        out = kwargs.pop("out", None)
        if out is None and self.out:
            out = os.path.join(self.out, name)
        rep = run(name, thresholds=self.thresholds, out=out if out is not None else False, **kwargs)
        self.results.extend(rep.results)
        return rep.result

    def run_comprehensive_suite(self, out=None, **kwargs):
        rep = run_suite(profile=self.profile, thresholds=self.thresholds, seed=self.seed,
                        flow_params=self.flow_params, target=self.target, out=out or self.out, **kwargs)
        self.results.extend(rep.results)
        return rep

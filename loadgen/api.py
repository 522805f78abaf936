"""The Python API. The CLI, plans and fleet shards run through it too.

``run(scenario, **options)`` runs one scenario, ``run_suite(**options)``
all of them, ``run_plan(plan)`` one raw :class:`~loadgen.engine.load.RunPlan`.
Options are the settings of :mod:`loadgen.options` by key (``concurrency=5,
duration="10s", thresholds=ResourceThresholds(...)``), checked as the
command line's are. Each returns a :class:`Report` after writing the run
directory (unless ``out=False``).

Underneath, a :class:`Session` holds one command's resolved settings — the
target, the thresholds, the run directory, the signal gate — and runs the
phases of scenarios; :func:`run_scenarios` runs scenarios in a session and
writes the reports. The CLI (:func:`execute`), plans (``plan.py``) and the
fleet's shards (``fleet/shard.py``) build sessions the same way.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

from . import options as opts
from .config import ResourceThresholds
from .errors import ExitCode, TargetError, UsageError
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
        """The first component's :class:`~loadgen.result.StressTestResult` (None without one)."""
        return self.results[0] if self.results else None


# ====================================================================== the session


@dataclass
class Session:
    """One command's run context, shared by the phases of a scenario and the scenarios of a suite.

    ``settings`` is the merged :class:`~loadgen.options.Layer` of the user's
    settings (a scenario's own defaults are applied per phase, under them);
    ``target`` and ``thresholds`` are built from it and checked. Build one
    with :meth:`open` (or :meth:`derive` for another plan entry in the same
    run directory).
    """

    settings: opts.Layer = field(default_factory=opts.Layer)
    thresholds: ResourceThresholds = field(default_factory=ResourceThresholds)
    target: TargetSpec = field(default_factory=TargetSpec)
    profile: str = "ci"
    run_dir: str | None = None
    sample_interval_s: float = 0.1
    stop_file: str | None = None
    start_method: str | None = None
    max_output_mb: float | None = None  # workers.log's cap (None: none)
    progress: object = None
    interrupted: int | None = None  # exit code of a signal that stopped a phase
    baselines: dict = field(default_factory=dict)  # (concurrency, seconds) → RunOutcome, shared in a suite
    gate: object = None  # engine.signals.SignalGate of the whole command (None: each phase handles its own)
    aborted: str | None = None  # why an abort_on_fail criterion stopped a phase (see loadgen.abort)
    contained: list = field(default_factory=list)  # every phase's containment (shared with derived sessions)
    phase_prefix: str = ""  # "LABEL: " before each phase's name: a parallel plan's entry (loadgen.parallel)

    @classmethod
    def open(cls, settings, *, name, progress=None, gate=None, write=True, shard_of=1, claimed=None):
        """Check ``settings`` (target imported, inputs read, thresholds built), then make the run
        directory (``settings["out"]``, else ``loadgen-results/<UTC time>-<name>``; none when not
        ``write``). Raises :class:`UsageError` naming the setting's origin before anything is written.

        The one place a command opens its run directory (``streams.prepare_run_dir``, an atomic
        claim): one that already holds a run's streams, or that another command claimed first, is
        refused (exit 2) before any load; the phases and scenarios of this
        command (a suite, a plan) then all write into it. ``claimed``: a run directory this command
        already claimed (a fleet shard's, claimed where it can write), used as it is."""
        from .streams import new_run_dir, prepare_run_dir

        session = cls.configured(settings, progress=progress, gate=gate, shard_of=shard_of)
        if claimed:
            session.run_dir = claimed
        elif write:
            out = settings.get("out")
            session.run_dir = prepare_run_dir(out) if out else new_run_dir(name)
        return session

    @classmethod
    def configured(cls, settings, *, shard_of=1, **fields):
        """A session for ``settings`` without a run directory; see :meth:`open`. ``shard_of``: the
        number of fleet shards the load is split over (the safety cap applies to each one's share)."""
        thresholds = opts.thresholds_of(settings)
        target = target_of(settings)
        if shard_of == 1:  # a fleet's shards check their own machines
            opts.check_in_flight(settings, thresholds)
            opts.check_room(settings, thresholds, threads=not target.asynchronous)
        return cls(settings=settings, target=target, thresholds=thresholds,
                   profile=opts.value(settings, "profile"), sample_interval_s=opts.value(settings, "sample_interval"),
                   stop_file=settings.get("stop_file"), start_method=settings.get("start_method"),
                   max_output_mb=opts.value(settings, "max_output_mb"), **fields)

    def derive(self, settings):
        """A session for another plan entry's ``settings``: this one's run directory, progress, gate,
        sampling, stop file and start method; the entry's target, thresholds, profile and load.
        Baselines are not shared: targets differ."""
        return dataclasses.replace(type(self).configured(settings), run_dir=self.run_dir, progress=self.progress,
                                   gate=self.gate, sample_interval_s=self.sample_interval_s,
                                   stop_file=self.stop_file, start_method=self.start_method,
                                   max_output_mb=self.max_output_mb, contained=self.contained, phase_prefix=self.phase_prefix)

    @property
    def load(self):
        """The user's load-model settings (concurrency, rate, stages, duration, …) as a Layer."""
        return opts.Layer({k: v for k, v in self.settings.items() if k in opts.LOAD_KEYS},
                          where=self.settings.where)

    @property
    def criteria(self):
        """The user's criteria (None: the scenario's own)."""
        return self.settings.get("criteria")

    @property
    def abort_criteria(self):
        """The user's criteria marked ``abort_on_fail``: judged every second of every phase."""
        from .criteria import parse_all

        return tuple(c for c in parse_all(self.criteria or ()) if c.abort_on_fail)

    def run_phase(self, phase, plan, thresholds=None, stressors=(), on_second=None):
        """Run one phase (a complete Runner run); returns its RunOutcome. A phase stopped by a
        signal, or by a lost ``abort_on_fail`` criterion, marks the session (:attr:`stopped`)."""
        from .engine.runner import Runner

        if self.abort_criteria:
            from .abort import EarlyJudge

            on_second = EarlyJudge(self.abort_criteria, on_lost=self._abort, then=on_second)
        phase = self.phase_prefix + phase
        plan = dataclasses.replace(plan, name=phase, target=plan.target or self.target,
                                   sample_interval_s=self.sample_interval_s, stop_file=self.stop_file,
                                   start_method=self.start_method or plan.start_method,
                                   max_output_mb=self.max_output_mb)
        runner = Runner(plan, thresholds or self.thresholds, run_dir=self.run_dir, progress=self.progress,
                        phase=phase, stressors=stressors, on_second=on_second, gate=self.gate)
        outcome = runner.run()
        self.contained.append({"phase": phase, **outcome.containment, "accounting_anomalies": len(outcome.anomalies)})
        if ExitCode.is_signal(outcome.exit_code):
            self.interrupted = outcome.exit_code
        elif outcome.target_error:  # found by the workers on the first calls: a usage error, not a measurement
            raise TargetError(outcome.target_error)
        return outcome

    def _abort(self, reason):
        self.aborted = reason

    @property
    def stopped(self):
        """True once a signal or a lost abort criterion ended the session's work."""
        if self.interrupted is None and self.gate is not None and self.gate.exit_code is not None:
            self.interrupted = self.gate.exit_code  # a signal between phases
        return self.interrupted is not None or self.aborted is not None

    def baseline(self, concurrency, seconds):
        """An unstressed run at ``concurrency`` for ``seconds``, measured once per session and shared."""
        from .engine.load import RunPlan

        key = (concurrency, seconds)
        if key not in self.baselines:
            plan = RunPlan(concurrency=concurrency, duration_s=seconds, target=self.target)
            self.baselines[key] = self.run_phase(f"baseline c={concurrency}", plan)
        return self.baselines[key]


def target_of(settings):
    """The :class:`TargetSpec` of ``settings``, checked: the target imported, the inputs read, the
    flow's parameters built. :class:`UsageError` names the setting's origin."""
    from .workload.inputs import load_records
    from .workload.targets import check_target

    ref, mix = settings.get("target"), settings.get("ops") or ()
    if isinstance(ref, tuple):  # a repeated --target: a mix
        ref, mix = None, ref
    mix = opts.http_ops(settings) or mix
    spec = TargetSpec(ref=ref, flow_params=dict(settings.get("flow_params") or {}),
                      kwargs=dict(settings.get("target_args") or {}), seed=settings.get("seed"),
                      factory=bool(settings.get("target_factory")), inputs=settings.get("inputs"),
                      inputs_mode=opts.value(settings, "inputs_mode"), mix=tuple(mix))
    if spec.factory and spec.is_flow:
        raise UsageError(f"{settings.origin('target_factory')}: target_factory needs a target = \"MOD:FACTORY\" "
                         "(the factory builds the operation once per worker)")
    if spec.factory and spec.mix:
        from .workload.mix import check_factory_names

        check_factory_names(spec.mix, settings.origin("ops" if settings.get("ops") else "target"))
    records = _named(settings.origin("inputs"), load_records, spec.inputs) if spec.inputs is not None else None
    where = settings.origin("flow_params" if spec.is_flow else "url" if settings.get("url") else
                            "ops" if settings.get("ops") else "target")
    asynchronous = _named(where, check_target, dataclasses.replace(spec, inputs=None), records)
    if settings.get("criteria"):  # an {op=NAME} that is not one of the mix's ops: before any load, not after it
        from .criteria import check_ops, parse_all

        check_ops(parse_all(settings["criteria"]), [op.name for op in spec.mix], settings.origin("criteria"))
    return dataclasses.replace(spec, asynchronous=asynchronous)


def _named(where, fn, *args):
    try:
        return fn(*args)
    except UsageError as e:
        raise type(e)(f"{where}: {e}") from None


# ====================================================================== running


def run(scenario="concurrent_load", *, progress=None, command=None, **options):
    """Run one scenario and write its run directory; returns a :class:`Report`.

    ``options``: settings by key (see ``loadgen run --help`` and
    :mod:`loadgen.options`); durations take seconds or strings (``500ms``,
    ``10s``, ``5m``). ``out``: the run directory (None:
    ``loadgen-results/<UTC time>-<scenario>``; False: write nothing).
    ``metrics_port`` serves live Prometheus metrics during the run and
    ``prom_textfile`` is written at its end, as on the command line; the
    command line's console and logging settings (:data:`CONSOLE_ONLY`) and a
    fleet's or a plan's (:data:`ELSEWHERE`) are refused with the reason.
    ``progress``: called ``progress(runner, second)`` once a second
    (``progress.done()``, when it has one, at the end).
    Raises :class:`UsageError` for a bad or refused value and :class:`TypeError` for an
    unknown option, before any process starts; :class:`TargetError` also once the
    workers found that the target's calls return no result (a function: a factory
    without ``target_factory``; a coroutine never awaited; a generator), at their first call.
    """
    write = options.get("out") is not False
    if not write:
        options.pop("out")
    settings = api_settings(options, opts.RUN, "run")
    return presented(settings, progress, lambda p: execute(opts.RUN, [scenario], settings, progress=p,
                                                           command=command, write=write))


def run_suite(*, only=None, progress=None, command=None, **options):
    """Run every scenario (or ``only`` those named) in one process tree; the seed's report names.
    ``options`` as :func:`run` takes them, but the load model (each scenario has its own)."""
    settings = api_settings(options, opts.SUITE, "run_suite")
    return presented(settings, progress, lambda p: execute(opts.SUITE, only, settings, progress=p, command=command))


#: Settings of the command line's console and logging: the API prints nothing and leaves logging to
#: its caller, so it refuses them rather than accept and ignore them. key → why.
CONSOLE_ONLY = {
    "quiet": "the API prints nothing (it is the command line's console)",
    "log_level": "the API leaves logging to its caller: logging.getLogger('loadgen').setLevel(...)",
    "progress_interval": "it paces the command line's progress lines and the API prints none; pass "
                         "progress=callable(runner, second)",
}
#: Settings the API takes elsewhere: a fleet's (loadgen.fleet.run) and a plan's (loadgen.plan.run_config).
ELSEWHERE = {**{k: "a fleet's setting: use loadgen.fleet.run / run_suite" for k in opts.FLEET_KEYS},
             "name": "a plan's setting: use loadgen.plan.run_config",
             "parallel": "a plan's setting: use loadgen.plan.run_config"}
#: What the fleet's API (loadgen.fleet.run) honours of those: its own status line's settings.
FLEET_HONOURS = ("quiet", "progress_interval") + opts.FLEET_KEYS


def api_settings(options, command, what, fleet=False):
    """The checked layer of ``what()``'s keywords (``fleet``: the fleet's API); :class:`UsageError` for
    one that it does not honour (:data:`CONSOLE_ONLY`, :data:`ELSEWHERE`), :class:`TypeError` for an
    unknown one."""
    settings = opts.from_api(options, command, what)
    for key in settings:
        why = None if fleet and key in FLEET_HONOURS else CONSOLE_ONLY.get(key) or ELSEWHERE.get(key)
        if why:
            raise UsageError(f"{what}({key}=...): not taken by the API: {why}")
    return settings


def presented(settings, progress, go):
    """``go(progress)``'s :class:`Report`, presented as ``settings`` ask: live Prometheus metrics
    (``metrics_port``) served while it runs, the node_exporter textfile (``prom_textfile``) written
    after it. The command line calls the same two helpers (:func:`live_metrics`,
    :func:`write_prom_textfile`) around its own progress line."""
    progress = live_metrics(settings, progress)
    try:
        rep = go(progress)
    finally:
        if settings.get("metrics_port"):
            progress.done()
    write_prom_textfile(settings, rep)
    return rep


def live_metrics(settings, progress):
    """``progress`` wrapped to serve live Prometheus metrics on ``settings["metrics_port"]`` (unchanged
    without one); :class:`UsageError` when the port cannot be served, or with a fleet's ``cluster``."""
    port = settings.get("metrics_port")
    if not port:
        return progress
    from .live import LiveMetrics

    if settings.get("cluster"):
        raise UsageError("--metrics-port with --cluster: not supported yet (the fleet master serves no live "
                         "metrics); use it on single-machine runs")
    return LiveMetrics(then=progress).serve(port)


def write_prom_textfile(settings, rep):
    """Write ``rep``'s gauges to ``settings["prom_textfile"]`` (node_exporter's textfile collector),
    when set; :class:`~loadgen.errors.OutputError` (one line) when it cannot be written."""
    path = settings.get("prom_textfile")
    if not path:
        return
    from .errors import OutputError
    from .report.prom import write_textfile

    try:
        write_textfile(path, rep.report)
    except OSError as e:  # e.g. the path is a directory, or the disk is full: one line, no traceback
        raise OutputError(f"--prom-textfile {path!r}: cannot write: {e.strerror or e}") from None


def execute(kind, names, settings, *, progress=None, command=None, write=True):
    """Run ``names`` (scenario names; ``kind`` ``"run"`` for one, ``"suite"`` for all when None)
    with ``settings`` (a checked :class:`~loadgen.options.Layer`) into one run directory."""
    from . import scenarios

    names = list(names or scenarios.names())
    scs = [scenarios.get(n) for n in names]
    report_kind = names[0] if kind == opts.RUN else "suite"
    from .engine.signals import SignalGate

    with SignalGate.around() as gate:
        session = Session.open(settings, name=report_kind, progress=progress, write=write, gate=gate)
        if kind == opts.RUN:  # the scenario's own criteria depend on the target (scenarios.load)
            session.settings = opts.mark_abort(session.settings, scs[0].criteria_for(session))
        return run_scenarios(scs, session, kind=report_kind, command=command)


def run_scenarios(scs, session, kind, command=None):
    """Run ``scs`` (scenarios, or plan entries) in ``session`` under one signal gate — a signal at
    any moment still leaves a report — then build and write the reports; returns a :class:`Report`."""
    from .engine.signals import SignalGate

    started = time.time()
    session.gate = session.gate or SignalGate()
    installed = session.gate.install()
    try:
        return _run_and_report(scs, session, kind, command, started)
    finally:
        if installed:
            session.gate.restore()


def _run_and_report(scs, session, kind, command, started):
    from .report import build_report, write_reports
    from .streams import note_component, note_scenario

    results = []
    if session.settings.get("parallel") and len(scs) > 1:
        from .parallel import run_parallel

        results = run_parallel(scs, session, kind)
    for sc in scs[len(results):]:
        if session.stopped:
            break
        note_scenario(session, sc, kind)  # lets `loadgen report` rebuild a killed run (report/rebuild.py)
        session.scenario = sc.name  # what runs now (a fleet shard tags its streamed seconds with it)
        results.append(sc.run(session))
        note_component(session, results[-1])
        if session.stopped:
            break
    from .report.build import run_info

    report = build_report(results, kind=kind, started_at=started, ended_at=time.time(),
                          thresholds=session.thresholds, run_dir=session.run_dir, command=command,
                          seed=session.target.seed, label=session.settings.get("label"),
                          run=run_info(session.settings, profile=session.profile, target=session.target,
                                       entries=[(sc.name, sc.settings) for sc in scs if hasattr(sc, "settings")]))
    if session.contained:  # every phase, baselines included (the results hold their main phase's)
        from .report.build import containment_summary

        report["containment"] = containment_summary(session.contained)
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
    """Run one raw :class:`~loadgen.engine.load.RunPlan` (no scenario, no criteria); returns the RunOutcome."""
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

    def run_scenario(self, name, **options):
        """Run scenario ``name`` (``options`` as :func:`run` takes them); returns its result."""
        options.setdefault("profile", self.profile)
        options.setdefault("seed", self.seed)
        options.setdefault("flow_params", self.flow_params)
        options.setdefault("target", self.target)
        out = options.pop("out", None)
        if out is None and self.out:
            out = os.path.join(self.out, name)
        rep = run(name, thresholds=self.thresholds, out=out if out is not None else False, **options)
        self.results.extend(rep.results)
        return rep.result

    def run_comprehensive_suite(self, out=None, **options):
        """Run the whole suite (``options`` as :func:`run_suite` takes them); returns its Report."""
        rep = run_suite(profile=self.profile, thresholds=self.thresholds, seed=self.seed,
                        flow_params=self.flow_params, target=self.target, out=out or self.out, **options)
        self.results.extend(rep.results)
        return rep

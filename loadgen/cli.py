"""Command line: one parser, outcomes mapped to exit codes in one place (:func:`main`).

Imports of the engine are deferred to the command that needs them, so
``--help`` and bad usage answer fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

COMMON_HELP = "Durations take seconds or 500ms, 10s, 5m, 1h."


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors are one line."""

    def error(self, message):
        from .errors import UsageError

        raise UsageError(message)


def _add_common(p):
    g = p.add_argument_group("common")
    g.add_argument("--target", metavar="MOD:CALLABLE", help="operation to run instead of the embedded flow "
                   "(module:callable or path/to/file.py:callable; sync or async)")
    g.add_argument("--target-factory", action="store_true", default=None,
                   help="--target names a factory called once per worker (with the --target-args) that "
                        "returns the operation: clients and models load once, not per call")
    g.add_argument("--inputs", metavar="FILE", help="a .jsonl or .csv file: each operation gets the next record")
    g.add_argument("--inputs-mode", choices=["cycle", "once"],
                   help="cycle through the records, or go through them once and end the run (default cycle)")
    g.add_argument("--target-arg", metavar="KEY=VALUE", action="append",
                   help="keyword argument for the target (typed: int, float, bool, JSON, else string)")
    g.add_argument("--flow-param", metavar="KEY=VALUE", action="append",
                   help="parameter of the embedded flow (see `loadgen list`)")
    g.add_argument("--seed", help="seed for reproducible runs (integer ≥ 0)")
    g.add_argument("--out", metavar="DIR", help="run directory (default: loadgen-results/<UTC time>-<name>)")
    g.add_argument("--quiet", action="store_true", default=None, help="print only the final summary line")
    g.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default WARNING")
    g.add_argument("--max-memory-mb", help="pool memory limit, PSS (MB, default 1024)")
    g.add_argument("--max-cpu-percent", help="machine CPU limit over 3 s (default 90; 100 = off)")
    g.add_argument("--max-execution-time", metavar="D", help="hard bound of a run (default 300s)")
    g.add_argument("--max-concurrent-operations", metavar="N", help="never more in flight (default 50)")
    g.add_argument("--memory-growth-rate", metavar="MB/S", help="memory slope that kills (default 10)")
    g.add_argument("--min-available-mb", metavar="MB", help="system floor of available memory (default 512)")
    g.add_argument("--sample-interval", metavar="D", help="monitor sampling interval (default 100ms)")
    g.add_argument("--stop-file", metavar="PATH", help="stop gracefully when this file appears")
    g.add_argument("--start-method", choices=["fork", "spawn"], help="how worker processes start (default fork)")
    g.add_argument("--prom-textfile", metavar="PATH", help="also write key gauges for node_exporter's textfile "
                   "collector (atomically)")
    f = p.add_argument_group("fleet (Dask distributed; pip install 'loadgen[distributed]')")
    f.add_argument("--cluster", metavar="ADDRESS", help="run as a fleet on this Dask scheduler "
                   "(tcp://HOST:8786): one shard per worker offering the loadgen resource, the load split")
    f.add_argument("--shards", metavar="N", help="use exactly N shard workers (wait for them up to "
                   "--cluster-timeout; default: every one there)")
    f.add_argument("--cluster-timeout", metavar="D", help="reach the scheduler and find workers within this "
                   "(default 10s)")
    f.add_argument("--start-lead", metavar="D", help="shards start their pools at once and begin the load "
                   "together this long after submission (default 2s; more for slow or busy machines)")


def build_parser():
    p = _Parser(prog="loadgen", description="Multiprocessing load generator and stress tester for Python "
                "workloads. " + COMMON_HELP)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # Flags default to None so that "given" can be told from "not given": a flag given overrides
    # LOADGEN_* variables, which override a plan file (plan.apply_env; defaults in _fill_defaults).
    r = sub.add_parser("run", help="run one scenario, or a plan (--config)",
                       description="Run one scenario, or the scenarios of a TOML plan. Every flag also "
                       "reads LOADGEN_<FLAG> from the environment (flag > environment > plan). " + COMMON_HELP)
    r.add_argument("scenario", nargs="?", help="scenario name (see `loadgen list`); with --config, run only "
                   "the plan's scenario with this label or name")
    r.add_argument("--config", metavar="PLAN.toml", help="run the scenarios of a TOML plan (see `loadgen "
                   "validate`); the flags given here override it")
    r.add_argument("--concurrency", metavar="N", help="closed model: operations in flight")
    r.add_argument("--rate", metavar="R", help="open model: operations started per second, on schedule; "
                   "latency counts from the intended start")
    r.add_argument("--max-lateness", metavar="D", help="open model: drop an arrival no slot can start within "
                   "this of its intended time (default 1s)")
    r.add_argument("--stages", metavar="SPEC", help="ramps of the target, e.g. 10s:5,30s:20,10s:0 (concurrency; "
                   "with --rate, the rate)")
    r.add_argument("--duration", metavar="D", help="how long the main phase runs")
    r.add_argument("--operations", metavar="N", help="stop after N operations")
    r.add_argument("--workers", metavar="N", help="worker processes (default: cores)")
    r.add_argument("--slots", metavar="N", help="threads per worker (default: enough for the concurrency)")
    r.add_argument("--op-timeout", metavar="D", help="kill and replace a worker whose operation runs longer")
    r.add_argument("--criterion", action="append", metavar="EXPR",
                   help="pass criterion replacing the scenario's, e.g. 'p99_ms < 500' (repeatable)")
    r.add_argument("--abort-on-fail", action="store_true", default=None,
                   help="stop the run as soon as a criterion is lost (those that can be judged while it "
                        "goes: success/error rate, percentiles, counters; the scenario's own when no "
                        "--criterion)")
    r.add_argument("--profile", choices=["ci", "standard", "nightly"],
                   help="scales the scenario's phases (default ci)")
    _add_common(r)

    s = sub.add_parser("suite", help="run every scenario; the seed's reports",
                       description="Run all scenarios in one process tree. " + COMMON_HELP)
    s.add_argument("--profile", choices=["ci", "standard", "nightly"], help="default ci")
    s.add_argument("--only", action="append", default=[], metavar="SCENARIO", help="run just these (repeatable)")
    _add_common(s)

    sub.add_parser("list", help="scenarios, their criteria and the flow's parameters")

    cl = sub.add_parser("cluster", help="a Dask cluster for fleet runs (--cluster)")
    cl_sub = cl.add_subparsers(dest="cluster_command", metavar="KIND", parser_class=_Parser)
    cll = cl_sub.add_parser("local", help="loopback LocalCluster for trying fleet mode on one machine; "
                            "prints the scheduler address, runs until Ctrl-C")
    cll.add_argument("--workers", default="2", metavar="N", help="Dask worker processes, one shard each (default 2)")
    cll.add_argument("--port", default="0", metavar="PORT", help="scheduler port on 127.0.0.1 (default: any free)")

    v = sub.add_parser("validate", help="check a TOML plan without running it",
                       description="Check a TOML plan: syntax, keys, types and ranges, the target (imported), "
                       "the inputs file (read), the criteria (parsed); LOADGEN_* variables applied.")
    v.add_argument("plan", metavar="PLAN.toml")

    rb = sub.add_parser("report", help="rebuild a run directory's reports from its streams")
    rb.add_argument("run_dir", metavar="RUN_DIR")

    c = sub.add_parser("compare", help="compare two reports; exit 1 on a regression")
    c.add_argument("baseline", metavar="BASELINE", help="report.json or run directory")
    c.add_argument("current", metavar="CURRENT", help="report.json or run directory")
    c.add_argument("--tolerance", default="10", metavar="PCT", help="allowed change before a regression (default 10%%)")
    return p


def _kv(pairs, what):
    from .errors import UsageError

    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what}: {item!r} is not KEY=VALUE")
        out[key.strip()] = value
    return out


def _typed(pairs):
    import json

    out = {}
    for k, v in _kv(pairs, "--target-arg").items():
        low = v.lower()
        if low in ("true", "false"):
            out[k] = low == "true"
            continue
        for conv in (int, float, json.loads):
            try:
                out[k] = conv(v)
                break
            except ValueError:
                continue
        else:
            out[k] = v
    return out


_DEFAULTS = {"quiet": False, "log_level": "WARNING"}
_RUN_DEFAULTS = {"target_factory": False, "inputs_mode": "cycle", "target_arg": [], "flow_param": [],
                 "profile": "ci", "criterion": [], "abort_on_fail": False}  # a plan sets these itself


def _fill_defaults(args, table):
    for key, value in table.items():
        if hasattr(args, key) and getattr(args, key) is None:
            setattr(args, key, value)


def _criteria(args):
    """``--criterion`` expressions; with ``--abort-on-fail``, marked (the scenario's own when none)."""
    if not args.abort_on_fail:
        return args.criterion
    from . import scenarios
    from .abort import mark
    from .criteria import parse_all

    return mark(parse_all(args.criterion or scenarios.get(args.scenario).criteria))


def _thresholds(args):
    from .config import ResourceThresholds, parse_duration
    from .errors import UsageError

    kw = {}
    for opt, field in (("max_memory_mb", "max_memory_mb"), ("max_cpu_percent", "max_cpu_percent"),
                       ("memory_growth_rate", "memory_growth_rate_mb_per_sec"),
                       ("min_available_mb", "min_available_memory_mb")):
        v = getattr(args, opt)
        if v is not None:
            try:
                kw[field] = float(v)
            except ValueError:
                raise UsageError(f"--{opt.replace('_', '-')}: expected a number, got {v!r}") from None
    if args.max_execution_time is not None:
        kw["max_execution_time_seconds"] = parse_duration(args.max_execution_time, "--max-execution-time")
    if args.max_concurrent_operations is not None:
        from .config import positive_int

        kw["max_concurrent_operations"] = positive_int(args.max_concurrent_operations, "--max-concurrent-operations")
    try:
        return ResourceThresholds(**kw)
    except UsageError as e:
        raise UsageError(str(e).replace("max_memory_mb", "--max-memory-mb")) from None


class Progress:
    """A live status line on a terminal; silent otherwise (only the final summary)."""

    def __init__(self, stream=sys.stderr, enabled=None):
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self.started = time.time()

    def __call__(self, runner, rec):
        if not self.enabled:
            return
        lat = rec.get("latency_ms") or {}
        p99 = lat.get("p99")
        sr = rec.get("success_rate")
        plan = runner.plan
        left = ""
        if plan.duration_s:
            remaining = max(0.0, runner.out.started_at + plan.duration_s - time.time())
            left = f"  left {remaining:4.0f}s"
        line = (f"[{rec.get('phase', '')}] ops/s {rec['throughput']:>7}  ok {'—' if sr is None else f'{sr:6.1%}'}"
                f"  p99 {'—' if p99 is None else f'{p99:8.1f}ms'}  in flight {rec['in_flight']:>3}"
                f"  CPU {rec['cpu_percent'] or 0:5.1f}%  pool {rec['pool_memory_mb']:7.1f}MB{left}")
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()

    def done(self):
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _list():
    from . import scenarios
    from .criteria import METRICS
    from .workload.flow import FLOW_PARAMS
    from tabulate import tabulate

    rows = []
    for name in scenarios.names():
        sc = scenarios.get(name)
        rows.append([name, sc.summary, "; ".join(sc.criteria)])
    print(tabulate(rows, headers=["scenario", "what it does", "default criteria"]))
    print()
    print(tabulate([[k, t, d, h] for k, (t, d, h) in FLOW_PARAMS.items()],
                   headers=["--flow-param", "type", "default", "meaning"]))
    print()
    print(tabulate(sorted(METRICS.items()), headers=["criterion metric", "meaning"]))
    return 0


def _print_outcome(rep, quiet):
    r = rep.report
    ex = r["executive_summary"]
    lat = r["latency_ms"]
    acc = r["accounting"]
    if not quiet:
        for c in r["component_results"]:
            mark = "PASS" if c["status"] == "PASSED" else "FAIL"
            extra = f" — {c['error']}" if c.get("error") else ""
            print(f"{mark} {c['component_name']}{extra}")
        print(f"operations {acc['dispatched']} (ok {acc['succeeded']}, failed {acc['failed']}, timed out "
              f"{acc['timed_out']}, crashed {acc['crashed']}, dropped {acc['dropped']}); p50 {lat.get('p50')} ms, "
              f"p99 {lat.get('p99')} ms")
    print(f"loadgen: {ex['passed_components']}/{ex['total_components']} passed, exit {rep.exit_code}; "
          f"reports in {rep.run_dir}")


def _finish(rep, args, progress):
    progress.done()
    if args.prom_textfile:
        from .errors import OutputError
        from .report.prom import write_textfile

        try:
            write_textfile(args.prom_textfile, rep.report)
        except OSError as e:  # e.g. the path is a directory, or the disk is full: one line, no traceback
            raise OutputError(f"--prom-textfile {args.prom_textfile!r}: cannot write: {e.strerror or e}") from None
    _print_outcome(rep, args.quiet)
    return rep.exit_code


def main(argv=None):
    """Entry point; returns the process exit code (see DESIGN §10)."""
    from .errors import ExitCode, LoadgenError, UsageError

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        if not argv:
            parser.print_help()
            return 0
        args = parser.parse_args(argv)
        if args.version:
            from . import __version__

            print(f"loadgen {__version__}")
            return 0
        if args.command is None:
            parser.print_help()
            return 0
        if args.command == "list":
            return _list()
        if args.command == "report":
            from .report.rebuild import rebuild_command

            return rebuild_command(args.run_dir)
        if args.command == "compare":
            from .report.compare import compare_command

            return compare_command(args.baseline, args.current, args.tolerance)
        if args.command == "cluster":
            if args.cluster_command != "local":
                raise UsageError("cluster: expected `cluster local --workers N`")
            from .fleet.master import cluster_command

            return cluster_command(args)
        from . import plan

        if args.command == "validate":
            return plan.validate_command(args.plan)
        plan.apply_env(args, os.environ)
        _fill_defaults(args, _DEFAULTS)
        config = getattr(args, "config", None)
        if not config:
            _fill_defaults(args, _RUN_DEFAULTS)
            if args.command == "run" and args.scenario is None:
                raise UsageError("run: give a SCENARIO (see `loadgen list`) or --config PLAN.toml")
        logging.basicConfig(level=getattr(logging, args.log_level), format="loadgen %(levelname)s %(name)s: %(message)s")
        progress = Progress(enabled=None if not args.quiet else False)
        if config and getattr(args, "cluster", None):
            raise UsageError("--cluster with --config: not supported yet; give the plan as flags")
        if config:
            rep = plan.run_plan_file(config, plan.layer_from_flags(vars(args)), only=args.scenario,
                                     progress=progress, command=" ".join(["loadgen"] + argv))
            return _finish(rep, args, progress)
        thresholds = _thresholds(args)
        common = dict(target=args.target, flow_params=_kv(args.flow_param, "--flow-param"),
                      target_args=_typed(args.target_arg), seed=args.seed, thresholds=thresholds,
                      out=args.out, sample_interval=args.sample_interval, stop_file=args.stop_file,
                      start_method=args.start_method, progress=progress, command=" ".join(["loadgen"] + argv),
                      target_factory=args.target_factory, inputs=args.inputs, inputs_mode=args.inputs_mode)
        from . import api

        if args.cluster:
            from .fleet.master import run_from_args

            rep = run_from_args(args, common, criteria=_criteria(args) if args.command == "run" else None)
        elif args.command == "run":
            rep = api.run(args.scenario, concurrency=args.concurrency, rate=args.rate,
                          max_lateness=args.max_lateness, duration=args.duration,
                          operations=args.operations, stages=args.stages, workers=args.workers,
                          slots=args.slots, op_timeout=args.op_timeout, criteria=_criteria(args),
                          profile=args.profile, **common)
        else:
            rep = api.run_suite(profile=args.profile, only=args.only or None, **common)
        return _finish(rep, args, progress)
    except UsageError as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return e.exit_code
    except LoadgenError as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return ExitCode.SIGINT
    except Exception as e:  # noqa: BLE001 - a bug: one line here, the traceback on request
        logging.getLogger("loadgen").debug("internal error", exc_info=True)
        print(f"loadgen: internal error: {type(e).__name__}: {e} (run with --log-level DEBUG for the traceback)",
              file=sys.stderr)
        return ExitCode.FAILED

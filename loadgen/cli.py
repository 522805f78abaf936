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

from . import options as opts

COMMON_HELP = "Durations take seconds or 500ms, 10s, 5m, 1h, 1m30s."


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors are one line, and that
    suggests the closest flag, command or choice for a misspelt one (Python 3.11's argparse does not):
    ``--concurency`` → "did you mean --concurrency?"."""

    def error(self, message):
        from .errors import UsageError

        raise UsageError(message)

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown flag is named with the closest flag of the command it was
        given to (``run``'s, not the top level's, whose only flag is ``--version``)."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}{_suggest_flags(extras, self._command_of(ns))}")
        return ns

    def _command_of(self, ns):
        """The (sub)parser that parsed ``ns``'s command: the deepest one chosen."""
        parser = self
        for dest in ("command", "cluster_command"):
            action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                           and a.dest == dest), None)
            chosen = getattr(ns, dest, None)
            if action is None or chosen not in action.choices:
                break
            parser = action.choices[chosen]
        return parser

    def _check_value(self, action, value):
        # argparse's own check, with the closest choice: `loadgen rnu` → "did you mean 'run'?"
        if action.choices is not None and value not in action.choices:
            from .config import did_you_mean

            choices = ", ".join(map(repr, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{did_you_mean(value, action.choices)} "
                                                 f"(choose from {choices})")


def _suggest_flags(extras, parser):
    """`` (did you mean --concurrency?)`` for the first unknown flag of ``extras`` close to one of
    ``parser``'s flags (``--flag=value`` compared by its flag), or ""."""
    import difflib

    known = [o for o in parser._option_string_actions if o.startswith("--")]
    for word in extras:
        if not word.startswith("--"):
            continue
        flag = word.partition("=")[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        if close:
            return f" (did you mean {close[0]}?)"
    return ""


def build_parser():
    """The ``loadgen`` argument parser: every subcommand and its flags (``run`` and ``suite`` take theirs
    from :mod:`loadgen.options`). Its errors raise :class:`UsageError` (exit 2) instead of exiting."""
    p = _Parser(prog="loadgen", description="Multiprocessing load generator and stress tester for Python "
                "workloads. " + COMMON_HELP)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # Every setting's flag comes from the one table (loadgen.options): given flags override LOADGEN_*
    # variables, which override a plan file; defaults apply only to what no level set.
    r = sub.add_parser("run", help="run one scenario, or a plan (--config)",
                       description="Run one scenario, or the scenarios of a TOML plan. Every flag also "
                       "reads LOADGEN_<FLAG> from the environment (flag > environment > plan). " + COMMON_HELP)
    r.add_argument("scenario", nargs="?", help="scenario name (see `loadgen list`), or `load`: exactly the load "
                   "asked, no baseline (the default with --target); with --config, run only the plan's scenario "
                   "with this label or name")
    r.add_argument("--config", metavar="PLAN.toml", help="run the scenarios of a TOML plan (see `loadgen "
                   "validate`); the flags given here override it")
    add_options(r, opts.RUN)

    s = sub.add_parser("suite", help="run every scenario; the seed's reports",
                       description="Run all scenarios in one process tree. " + COMMON_HELP)
    s.add_argument("--only", action="append", default=[], metavar="SCENARIO", help="run just these (repeatable)")
    add_options(s, opts.SUITE)

    sub.add_parser("list", help="scenarios, their criteria and the flow's parameters")

    cl = sub.add_parser("cluster", help="a Dask cluster for fleet runs (--cluster)")
    cl_sub = cl.add_subparsers(dest="cluster_command", metavar="KIND", parser_class=_Parser)
    cll = cl_sub.add_parser("local", help="loopback LocalCluster for trying fleet mode on one machine; "
                            "prints the scheduler address, runs until Ctrl-C")
    cll.add_argument("--workers", default="2", metavar="N", help="Dask worker processes, one shard each (default 2)")
    cll.add_argument("--port", default="0", metavar="PORT", help="scheduler port on 127.0.0.1 (default: any free)")

    sv = sub.add_parser("serve", help="serve the embedded flow over HTTP (the default target of --url)",
                        description="Serve the embedded AI Writing Flow over HTTP/1.1 until SIGINT/SIGTERM: "
                        "POST /kickoff (JSON, or SSE per stage with Accept: text/event-stream), GET /drafts/{id}, "
                        "POST /drafts, GET /ping, GET /stream?events=&first_ms=&gap_ms=&bytes=, "
                        "POST /admin/stall?ms=. Prints one line: loadgen serve: listening on http://HOST:PORT.")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; another "
                    "than loopback is warned about)")
    sv.add_argument("--port", default="8080", metavar="PORT", help="port (default 8080; 0: any free one)")
    sv.add_argument("--flow-param", action="append", default=[], metavar="KEY=VALUE",
                    help="parameter of the served flow (see `loadgen list`; async_io is always on)")
    sv.add_argument("--seed", metavar="N", help="seed of the served flow (reproducible kickoffs)")
    sv.add_argument("--stall", metavar="AT:FOR", help="stall the whole server once, e.g. 5s:1s (at 5 s after "
                    "start, for 1 s)")

    v = sub.add_parser("validate", help="check a TOML plan without running it",
                       description="Check a TOML plan: syntax, keys, types and ranges, the target (imported), "
                       "the inputs file (read), the criteria (parsed); LOADGEN_* variables applied.")
    v.add_argument("plan", metavar="PLAN.toml")

    rb = sub.add_parser("report", help="rebuild a run directory's reports from its streams")
    rb.add_argument("run_dir", metavar="RUN_DIR")

    h = sub.add_parser("history", help="change points over the nights under a nightly root; exit 1 when the newest "
                       "night is regressed", description="Bring ROOT/history.sqlite up to date with ROOT's run "
                       "directories, find each series' change points, write ROOT/history.html and judge the newest "
                       "night: exit 1 when it lies in a regressed segment or failed, 0 otherwise, 2 when nothing "
                       "can be judged.")
    h.add_argument("root", metavar="ROOT", help="the nightly root: one run directory per night")
    h.add_argument("--rebuild", action="store_true", help="rebuild the store from the run directories")
    h.add_argument("--format", default="text", choices=("text", "json"), help="text (default) or json")
    h.add_argument("--label", metavar="GLOB", help="judge only the nights whose --label matches (e.g. 'main-*')")
    h.add_argument("--prom-textfile", metavar="PATH", help="also write the verdict's gauges for node_exporter")
    h.add_argument("--no-page", action="store_true", help="do not write ROOT/history.html")

    c = sub.add_parser("compare", help="compare two reports; exit 1 on a regression")
    c.add_argument("baseline", metavar="BASELINE", help="report.json or run directory")
    c.add_argument("current", metavar="CURRENT", help="report.json or run directory")
    c.add_argument("--tolerance", default="10", metavar="PCT", help="allowed change before a regression (default 10%%)")
    c.add_argument("--alpha", default="0.01", metavar="A", help="family-wise false-alarm rate of the noise tests "
                   "(Holm–Bonferroni over every metric; default 0.01): a change beyond the tolerance is a regression "
                   "only when also significant at this level")
    c.add_argument("--force", action="store_true", help="compare runs of another load, target, profile or "
                   "machine anyway (with a warning) instead of refusing them")
    return p


def add_options(parser, command):
    """Add the flags of ``command`` (``run`` or ``suite``) to ``parser``, in groups. Flags store the
    raw text (or True / a list); checking happens when the layer is built (:func:`from_flags`), so
    that the environment and plans share the checks. Defaults are None: given can be told from not."""
    # Grouped as k6 and Locust group theirs: a reader looking for "how long" or "how safe" finds one block.
    titles = {opts.LOAD: "load (how much, how long, and the verdict)",
              opts.TARGET: "target (what each operation calls; default: the embedded flow)",
              opts.HTTP: "HTTP (requests without code, instead of --target)",
              opts.SAFETY: "safety (the monitor's guards and bounds)",
              opts.OUTPUT: "output (run directory, console, metrics)",
              opts.FLEET: "fleet (Dask distributed; pip install 'loadgen[distributed]')"}
    used = {o.group for o in opts.OPTIONS if o.flag and command in o.commands}
    groups = {g: parser.add_argument_group(titles[g]) for g in opts.GROUPS if g in used}  # in GROUPS' order
    for option in opts.OPTIONS:
        if not option.flag or command not in option.commands:
            continue
        group = groups[option.group]
        kw = {"help": option.help_text.replace("%", "%%")}
        if option.action:
            kw["action"] = option.action
        if option.action == "store_true":
            kw["default"] = None
        if option.metavar:
            kw["metavar"] = option.metavar
        if option.choices:
            kw["choices"] = list(option.choices)
        group.add_argument(option.flag, **kw)


class Progress:
    """Progress while a run goes: on a terminal a live status line (``stream``, stderr), rewritten every
    second; otherwise (CI logs, a pipe) a plain line on ``plain`` (stdout) every ``interval`` seconds,
    so a long run is not silent in a Jenkins or GitHub Actions log. ``enabled=False`` (``--quiet``):
    nothing."""

    def __init__(self, stream=None, enabled=None, interval=10.0, plain=None):
        # sys.stderr now, not at import: a default bound then was None for a run started with 2>&-
        stream = self.stream = stream if stream is not None else sys.stderr
        self.live = stream.isatty() if enabled is None else enabled
        self.plain = (plain or sys.stdout) if enabled is None and not self.live else None
        self.interval = interval
        self.enabled = self.live or self.plain is not None
        self.started = time.time()
        self._next_plain = self.started + interval

    def __call__(self, runner, rec):
        if not self.enabled:
            return
        if not self.live:
            now = time.time()
            if now >= self._next_plain:
                self._next_plain = now + self.interval
                self.plain.write(time.strftime("%H:%M:%S ", time.localtime(now)) + self._line(runner, rec) + "\n")
                self.plain.flush()
            return
        self.stream.write("\r\x1b[2K" + self._line(runner, rec))
        self.stream.flush()

    def _line(self, runner, rec):
        """The status of one written second (phase, throughput, success, p99, in flight, CPU, memory)."""
        lat = rec.get("latency_ms") or {}
        p99 = lat.get("p99")
        sr = rec.get("success_rate")
        plan = runner.plan
        left = ""
        if plan.duration_s:
            remaining = max(0.0, runner.out.started_at + plan.duration_s - time.time())
            left = f"  left {remaining:4.0f}s"
        line = (f"[{rec.get('phase', '')}] ops/s {rec['throughput']:>9,}  ok {'—' if sr is None else f'{sr:6.1%}'}"
                f"  p99 {'—' if p99 is None else f'{p99:8.1f}ms'}  in flight {rec['in_flight']:>6,}"
                f"  CPU {rec['cpu_percent'] or 0:5.1f}%  pool {rec['pool_memory_mb']:7.1f}MB{left}")
        return line

    def done(self):
        """Clear the status line before the final summary prints; a no-op when disabled or plain."""
        if self.live:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _list():
    """``loadgen list``: scenarios with their criteria, the flow's parameters, the criteria metrics."""
    from .errors import ExitCode
    from . import scenarios
    from .criteria import METRICS
    from .workload.flow import FLOW_PARAMS

    rows = []
    for name in scenarios.names() + [scenarios.LOAD]:
        sc = scenarios.get(name)
        rows.append([name, sc.summary, sc.listed_criteria() or "(only --criterion)"])
    # Wrapped at spaces (never inside a word, never cut) to fit 100 columns: a terminal, a CI log.
    print(_table(rows, ["scenario", "what it does", "default criteria"], [15, 52, 27]))
    print(_wrap("A scenario's default criteria judge a run that gives no --criterion; any --criterion "
                "replaces them.", LIST_WIDTH))
    print()
    print(_table([[k, t, _default_text(d), h] for k, (t, d, h) in FLOW_PARAMS.items()],
                 ["--flow-param", "type", "default", "meaning"], [22, 11, 21, 38]))
    print()
    print(_table(sorted(METRICS.items()), ["criterion metric", "meaning"], [21, 76]))
    print(_wrap("Selectors: p95_ms{op=NAME} (one op of a mix), p95_ms{measure=NAME} (a loadgen.measure block), "
                "checks{name=NAME} (one check). Limits may carry a unit: p95_ms < 50ms, success_rate > 95%.",
                LIST_WIDTH))
    return ExitCode.OK


LIST_WIDTH = 100  # `loadgen list` fits a 100-column terminal or CI log


def _wrap(text, width):
    """``text`` wrapped at spaces to ``width``; a word longer than the width stays whole (never cut)."""
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width, break_long_words=False, break_on_hyphens=False)) or ""


def _table(rows, head, widths):
    """A tabulate table whose cells are wrapped at spaces to ``widths`` (no word split, no sentence cut)."""
    from tabulate import tabulate

    return tabulate([[_wrap(v, w) for v, w in zip(row, widths)] for row in rows], headers=head,
                    disable_numparse=True)


def _default_text(default):
    """A flow parameter's default as list text: a per-stage table one ``STAGE:value`` a line."""
    if isinstance(default, dict):
        return " ".join(f"{k}:{v:g}" if isinstance(v, (int, float)) else f"{k}:{v}" for k, v in default.items())
    return "" if default is None else str(default)


def _print_outcome(rep, quiet):
    """The verdict on stdout: a line per component (``--quiet``: only the failed ones), each failed one
    with every failed criterion and what it measured (``(default)``: the scenario's own criterion),
    the accounting and top errors (not with ``--quiet``), then the summary line naming the failed."""
    from .report.fmt import printable_tree
    from .report.text import criterion_text, error_lines, failed_components

    r = printable_tree(rep.report)  # names and messages are the target's and the plan's: escaped
    ex = r["executive_summary"]
    lat = r["latency_ms"]
    acc = r["accounting"]
    failed = dict(failed_components(r))
    details = {d.get("test_name"): d for d in r.get("detailed_metrics") or []}
    for c in r["component_results"]:
        name = c["component_name"]
        if name in failed:
            print(f"FAIL {name} — {'; '.join(failed[name])}")
        elif not quiet:
            defaults = [criterion_text(x) for x in (details.get(name) or {}).get("criteria") or [] if x.get("default")]
            print(f"PASS {name}" + (f" — {'; '.join(defaults)}" if defaults else ""))
    if not quiet:
        lost = f", lost with a shard {acc['lost']:,}" if acc.get("lost") else ""
        print(f"operations {acc['dispatched']:,} (ok {acc['succeeded']:,}, failed {acc['failed']:,}, timed out "
              f"{acc['timed_out']:,}, crashed {acc['crashed']:,}, dropped {acc['dropped']:,}{lost}); p50 {lat.get('p50')} ms, "
              f"p99 {lat.get('p99')} ms")
        for line in error_lines(r, n=3, width=100):
            print(f"  error {line}")
    names = f" (failed: {', '.join(failed)})" if failed else ""
    print(f"loadgen: {ex['passed_components']}/{ex['total_components']} passed{names}, exit {rep.exit_code}; "
          f"reports in {rep.run_dir}")


def _finish(rep, settings, progress):
    from .api import write_prom_textfile

    progress.done()
    write_prom_textfile(settings, rep)
    _print_outcome(rep, opts.value(settings, "quiet"))
    return rep.exit_code


def standard_fds():
    """Give fds 0, 1 and 2 a target if they are closed (``loadgen ... >&- 2>&-``), as daemons do: /dev/null.
    A closed fd 1 is the next fd ``open`` returns — a report file, a pipe to a worker — and the workers'
    ``dup2`` onto 1 and 2 would land on it; Python also sets ``sys.stdout`` to None then, and every
    ``print`` and ``isatty`` failed ("internal error"). With this the run works, its output going nowhere."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    for name, fd in (("stdout", 1), ("stderr", 2)):
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "w", encoding="utf-8", errors="replace", closefd=False))


def main(argv=None):
    """Entry point; returns the process exit code (:class:`~loadgen.errors.ExitCode`, DESIGN §10)."""
    from .errors import ExitCode, LoadgenError, UsageError

    standard_fds()
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        if not argv:
            parser.print_help()
            return ExitCode.OK
        args = parser.parse_args(argv)
        if args.version:
            from . import __version__

            print(f"loadgen {__version__}")
            return ExitCode.OK
        if args.command is None:
            parser.print_help()
            return ExitCode.OK
        return _command(args, " ".join(["loadgen"] + argv))
    except UsageError as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return e.exit_code
    except LoadgenError as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("loadgen: interrupted", file=sys.stderr)
        return ExitCode.SIGINT
    except BrokenPipeError:  # `loadgen list | head`: the reader left; nothing to say, as other tools
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except OSError:
            pass
        return 128 + 13  # SIGPIPE's code, as a shell reports a tool killed by it
    except Exception as e:  # noqa: BLE001 - a bug: one line here, the traceback on request
        logging.getLogger("loadgen").debug("internal error", exc_info=True)
        print(f"loadgen: internal error: {type(e).__name__}: {e} (run with --log-level DEBUG for the traceback)",
              file=sys.stderr)
        return ExitCode.FAILED


def _command(args, command):
    """Run the parsed command; returns its exit code."""
    from .errors import UsageError

    if args.command == "list":
        return _list()
    if args.command == "report":
        from .fleet.rebuild import is_fleet_dir, rebuild_fleet
        from .report.rebuild import rebuild_command

        if is_fleet_dir(args.run_dir):  # a fleet's: merged again from its shards' own run directories
            return rebuild_command(args.run_dir, rebuild_fleet, "its shards' run directories")
        return rebuild_command(args.run_dir)
    if args.command == "compare":
        from .report.compare import compare_command

        return compare_command(args.baseline, args.current, args.tolerance, alpha=args.alpha, force=args.force)
    if args.command == "history":
        from .history.command import history_command

        return history_command(args.root, rebuild=args.rebuild, fmt=args.format, label=args.label,
                               prom_textfile=args.prom_textfile, page=not args.no_page)
    if args.command == "cluster":
        if args.cluster_command != "local":
            raise UsageError("cluster: expected `cluster local --workers N`")
        from .fleet.cluster import cluster_command

        return cluster_command(args.workers, args.port)
    if args.command == "serve":
        from .http.serve import serve_command

        return serve_command(args.host, args.port, args.flow_param, args.seed, args.stall)
    from . import plan

    if args.command == "validate":
        return plan.validate_command(args.plan)
    # flags over LOADGEN_* variables (over a plan file, merged in plan.prepare)
    settings = opts.merge(opts.from_env(os.environ), opts.from_flags(vars(args)))
    config = getattr(args, "config", None)
    if args.command == "run" and not config and args.scenario is None:
        if not settings.get("target") and not settings.get("url"):
            raise UsageError("run: give a SCENARIO (see `loadgen list`), a --target MOD:fn or --url URL (exactly "
                             "that load, no baseline) or --config PLAN.toml")
        from .scenarios import LOAD

        args.scenario = LOAD
    logging.basicConfig(level=getattr(logging, opts.value(settings, "log_level")),
                        format="loadgen %(levelname)s %(name)s: %(message)s")
    progress = Progress(enabled=None if not opts.value(settings, "quiet") else False,
                        interval=opts.value(settings, "progress_interval"))
    from .api import live_metrics

    progress = live_metrics(settings, progress)
    if config and settings.get("cluster"):
        from . import fleet

        rep = fleet.run_plan_fleet(config, settings, only=args.scenario, command=command)
    elif config:
        rep = plan.run_plan_file(config, settings, only=args.scenario, progress=progress, command=command)
    elif settings.get("cluster"):
        from . import fleet

        names = [args.scenario] if args.command == "run" else (args.only or None)
        rep = fleet.run_fleet(args.command, names, settings, command=command)
    else:
        from . import api

        names = [args.scenario] if args.command == "run" else (args.only or None)
        rep = api.execute(args.command, names, settings, progress=progress, command=command)
    return _finish(rep, settings, progress)

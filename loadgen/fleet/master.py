"""Fleet runs: one plan, one shard per machine, on Dask distributed (DESIGN §12).

::

        fleet master (this module; the CLI process)
        ┌──────────────────────────────────────────────────────────────────────┐
        │ Client ─▶ scheduler: find shard workers, measure clock offsets,      │
        │ pick start_at, submit one run_shard task per worker; then blocks in  │
        │ ONE place: the stream queue (fed by the Client's topic subscription) │
        │ with a tick, to merge seconds, watch membership, stop, collect.      │
        └────┬───────────────────────────────▲─────────────────────────────────┘
             │ task + ShardSpec              │ topic events: seconds, heartbeats, events.jsonl lines
        ┌────▼──────────── Dask worker (one per machine, resource loadgen=1) ──┐
        │ _fleet_shard.run_shard: a complete local loadgen run — its own      │
        │ monitor, pool and thresholds — its ready pool held until start_at   │
        └──────────────────────────────────────────────────────────────────────┘

Who writes what: each shard writes its own run directory on its machine
(``<fleet run dir>/shards/<n>`` when it can write there, as on one machine
or a shared file system; else ``$TMPDIR/loadgen-fleet/<run id>/<n>``, named
in the report); the master writes the fleet run directory: ``timeseries.jsonl``
(one merged line per second and phase, with a ``per_shard`` breakdown),
``events.jsonl`` (the master's ``fleet`` events and every shard's events
with ``shard`` and ``host`` fields) and the reports, whose ``fleet`` key
holds the per-machine table.

Exit codes: those of DESIGN §10, among them ``4`` (``ExitCode.DEGRADED``) when a
shard was lost — its machine or Dask worker died, it went silent, or it
could not start — so the fleet's totals miss a machine. Priority: 2, 143,
130, 4, 3, 1, 0. A scheduler that cannot be reached, or that has no worker
for a shard within ``--cluster-timeout``, is a usage error (2).

Dask is imported only here and only when a fleet command runs.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from .merge import (SecondMerger, merge_components, result_from_dict,
                          shard_row_from_results, shard_row_from_seconds)
from ..errors import ClusterError, ExitCode, UsageError
from ..config import TIMING

log = logging.getLogger("loadgen.fleet")

INSTALL_HINT = "pip install 'loadgen[distributed]' (or: pip install 'dask[distributed]')"
RESOURCE = "loadgen"  # the Dask worker resource that marks a load-test machine: --resources loadgen=1

# Dask settings for workers that run loadgen shards (set by `cluster local`; the README gives the
# same for `dask worker`): loadgen's pool and monitor are children of the worker process, so the
# process must not be daemonic; the nanny's memory manager must not pause, spill or restart the
# worker before loadgen's own thresholds act; the statistical profiler would sample the loadgen
# master's threads every 10 ms, so it is off.
WORKER_CONFIG = {
    "distributed.worker.daemon": False,
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.worker.memory.pause": False,
    "distributed.worker.memory.terminate": False,
    "distributed.worker.profile.enabled": False,
}


MISSING_CHECKS = 2  # a worker absent from this many membership checks in a row is gone
LATE_WARNING_S = 0.05  # a shard whose load began this long after the instant is named in the warnings


# ---------------------------------------------------------------------- public API


def run(scenario="concurrent_load", *, cluster, shards=None, cluster_timeout=None, start_lead=None, out=None,
        progress=None, command=None, **options):
    """Run one scenario as a fleet on the Dask scheduler at ``cluster``; returns an ``api.Report``.

    ``options`` are :func:`loadgen.api.run`'s (concurrency, rate, duration, target, thresholds, …):
    the load is split across the shards, everything per machine (workers, slots, thresholds) is
    applied on each. ``shards``: use exactly this many (wait for them up to ``cluster_timeout``);
    default: every worker offering the ``loadgen`` resource (or one per host if none does).
    ``start_lead``: the load begins this long after submission on every shard (default 2 s; a
    shard whose pool is not ready by then starts late, and the report says by how much).
    Raises :class:`UsageError` (:class:`ClusterError`) before any load is applied.
    """
    from .. import api, scenarios

    scenarios.get(scenario)  # an unknown name is a usage error before the cluster is contacted
    run_opts = {k: options.pop(k, None) for k in ("concurrency", "duration", "operations", "stages", "workers",
                                                  "slots", "op_timeout", "criteria", "rate", "max_lateness")}
    api.make_overrides(**run_opts)  # bad numbers fail here, once, not on every shard
    _check_options(options)
    options.update(run_opts)
    return _Fleet("run", (scenario,), options, cluster=cluster, shards=shards, cluster_timeout=cluster_timeout,
                  start_lead=start_lead, out=out, progress=progress, command=command).run()


def run_suite(*, cluster, shards=None, cluster_timeout=None, start_lead=None, only=None, out=None, progress=None,
              command=None, **options):
    """Run the suite (or ``only`` those scenarios) as a fleet; see :func:`run`."""
    from .. import scenarios

    names = tuple(only) if only else tuple(scenarios.names())
    for n in names:
        scenarios.get(n)
    _check_options(options)
    return _Fleet("suite", names, options, cluster=cluster, shards=shards, cluster_timeout=cluster_timeout,
                  start_lead=start_lead, out=out, progress=progress, command=command).run()


def run_from_args(args, common, criteria=None):
    """``loadgen run|suite … --cluster ADDRESS``: the CLI's entry (``common``: cli.main's options;
    ``criteria``: the run's criteria as the CLI resolved them)."""
    opts = dict(common)
    for k in ("progress", "command", "out"):
        opts.pop(k, None)
    progress = _FleetProgress(enabled=None if not args.quiet else False)
    kw = dict(cluster=args.cluster, shards=args.shards, cluster_timeout=args.cluster_timeout,
              start_lead=args.start_lead, out=common.get("out"), progress=progress, command=common.get("command"))
    try:
        if args.command == "run":
            return run(args.scenario, concurrency=args.concurrency, rate=args.rate, max_lateness=args.max_lateness,
                       duration=args.duration, operations=args.operations, stages=args.stages,
                       workers=args.workers, slots=args.slots, op_timeout=args.op_timeout,
                       criteria=criteria, profile=args.profile, **kw, **opts)
        return run_suite(profile=args.profile, only=args.only or None, **kw, **opts)
    finally:
        progress.done()


# ---------------------------------------------------------------------- the master


@dataclass
class _Shard:
    index: int
    worker: str
    host: str
    offset_s: float = 0.0  # this worker's clock minus the master's
    future: object = None
    status: str = "pending"  # pending → running → finished | lost | error | refused | stopped
    reason: str | None = None
    result: dict | None = None
    seconds: list = field(default_factory=list)  # streamed per-second records
    delays: list = field(default_factory=list)  # (second end → arrival at the master) per loaded second, s
    hops: list = field(default_factory=list)  # (sent by the shard → arrival), s
    last_heard: float = 0.0  # time.monotonic() of the last message
    load_started_at: float | None = None  # on the master's clock
    breach_events: int = 0
    missing: int = 0  # consecutive membership checks that did not list the worker
    shares: list = field(default_factory=list)  # {phase, model, mine, total, fraction} per phase begun
    warnings: list = field(default_factory=list)
    usage_error: bool = False

    @property
    def done(self):
        return self.status not in ("pending", "running")

    @property
    def label(self):
        return f"shard {self.index}@{self.host}"


class _Fleet:
    def __init__(self, kind, names, options, *, cluster, shards, cluster_timeout, start_lead, out, progress, command):
        from ..config import ResourceThresholds, parse_duration, positive_int

        self.kind, self.names, self.options = kind, tuple(names), dict(options)
        self.address = _normalise_address(cluster)
        self.want = positive_int(shards, "--shards") if shards is not None else None
        self.timeout_s = (parse_duration(cluster_timeout, "--cluster-timeout") if cluster_timeout is not None
                          else TIMING.fleet_connect_s)
        self.lead_s = parse_duration(start_lead, "--start-lead") if start_lead is not None else TIMING.fleet_start_lead_s
        self.out, self.progress, self.command = out, progress, command
        self.thresholds = self.options.get("thresholds") or ResourceThresholds()
        self.report_kind = names[0] if kind == "run" else "suite"
        self.run_id = uuid.uuid4().hex[:12]
        self.topic = f"loadgen-fleet-{self.run_id}"
        self.inbox = queue.Queue()
        self.merger = SecondMerger(TIMING.fleet_second_grace_s)
        self.shards = []
        self.events = self.timeseries = None
        self.stop_code = None
        self._signals = []
        self.warnings = []

    # -- the whole run

    def run(self):
        distributed = _import_distributed()
        client = self._connect(distributed)
        try:
            self._discover(client)
            self._check_split()
            run_dir = self._open_run_dir()
            client.subscribe_topic(self.topic, self._on_event)
            self._warm_up(client)
            started = time.time()
            self._submit(client)
            old = self._install_signals()
            try:
                self._loop(client)
            finally:
                _restore_signals(old)
            self._drain(client)
            ended = time.time()
            try:
                client.unsubscribe_topic(self.topic)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        finally:
            _close_quietly(client)
        return self._report(run_dir, started, ended)

    # -- before the load

    def _connect(self, distributed):
        try:
            return distributed.Client(self.address, timeout=self.timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise ClusterError(self.address, f"cannot reach the Dask scheduler within {self.timeout_s:g}s "
                                             f"({type(e).__name__}: {_first_line(e)}); is `dask scheduler` "
                                             "running there?") from None

    def _discover(self, client):
        """Pick the shard workers: those offering the loadgen resource, else one per host."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            workers = _workers(client)
            offering = sorted(a for a, w in workers.items() if (w.get("resources") or {}).get(RESOURCE, 0) >= 1)
            self.mode = "resource" if offering else "host"
            if not offering:
                per_host = {}
                for a in sorted(workers):
                    per_host.setdefault(workers[a].get("host"), a)
                offering = sorted(per_host.values())
            enough = len(offering) >= (self.want or 1)
            if enough or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if not enough:
            need = f"{self.want} shard worker(s)" if self.want else "a shard worker"
            raise ClusterError(self.address, f"needs {need} but the scheduler has {len(offering)} after "
                                             f"{self.timeout_s:g}s ({len(workers)} worker(s) in all); start "
                                             f"workers with `dask worker {self.address} --resources "
                                             f"{RESOURCE}=1 --nthreads 1 --memory-limit 0`")
        chosen = offering[: self.want] if self.want else offering
        self.shards = [_Shard(i, a, workers[a].get("host") or "?") for i, a in enumerate(chosen)]

    def _check_split(self):
        n = len(self.shards)
        c = self.options.get("concurrency")
        if c is not None and int(c) < n:
            raise UsageError(f"--concurrency {c} cannot be split over {n} shards (each needs at least 1); "
                             f"use --shards {c} or more concurrency")
        ops = self.options.get("operations")
        if ops is not None and int(ops) < n:
            raise UsageError(f"--operations {ops} cannot be split over {n} shards; use --shards {ops} or more")

    def _open_run_dir(self):
        from ..streams import EVENTS, TIMESERIES, EventLog, JsonLines, default_run_dir, prepare_run_dir

        run_dir = os.path.abspath(prepare_run_dir(self.out or default_run_dir(f"{self.report_kind}-fleet")))
        self.run_dir = run_dir
        self.events = EventLog(os.path.join(run_dir, EVENTS))
        self.timeseries = JsonLines(os.path.join(run_dir, TIMESERIES))
        return run_dir

    def _warm_up(self, client):
        from . import shard

        addrs = [s.worker for s in self.shards]
        try:
            client.run(shard.warm_up, workers=addrs)
        except Exception as e:  # noqa: BLE001 - ModuleNotFoundError on a worker is the usual one
            raise ClusterError(self.address, f"a worker cannot import loadgen ({type(e).__name__}: "
                                             f"{_first_line(e)}); install loadgen on every worker machine") from None
        t0 = time.time()
        clocks = client.run(time.time, workers=addrs)
        t1 = time.time()
        for s in self.shards:
            s.offset_s = clocks[s.worker] - (t0 + t1) / 2  # ± half the round trip
        worst = max(abs(s.offset_s) for s in self.shards)
        if worst > 0.05:
            self.warnings.append(f"worker clocks differ from the master's by up to {worst * 1000:.0f} ms "
                                 "(corrected for the start; sync the machines with NTP)")

    def _submit(self, client):
        from .shard import ShardSpec, run_shard

        self.start_at = time.time() + self.lead_s
        self.events.emit("fleet", name="start", scheduler=self.address, run_id=self.run_id, mode=self.mode,
                         start_at=self.start_at, shards=[{"shard": s.index, "host": s.host, "worker": s.worker,
                                                          "clock_offset_ms": round(s.offset_s * 1000, 3)}
                                                         for s in self.shards])
        n = len(self.shards)
        for s in self.shards:
            spec = ShardSpec(run_id=self.run_id, index=s.index, count=n, kind=self.kind, scenarios=self.names,
                             options=self.options, start_at=self.start_at + s.offset_s,
                             out=os.path.join(self.run_dir, "shards", str(s.index)), topic=self.topic,
                             command=self.command or "")
            s.future = client.submit(run_shard, spec, key=f"loadgen-shard-{self.run_id}-{s.index}",
                                     workers=[s.worker], allow_other_workers=False, pure=False,
                                     resources={RESOURCE: 1} if self.mode == "resource" else None)
            s.status, s.last_heard = "running", time.monotonic()

    # -- while the load runs

    def _on_event(self, event):
        """Client topic handler (runs on the Client's event loop thread): hand over, nothing else."""
        self.inbox.put((time.time(), event[1]))

    def _loop(self, client):
        next_membership = 0.0
        stop_deadline = None
        while not all(s.done for s in self.shards):
            try:
                arrived, msg = self.inbox.get(timeout=TIMING.fleet_tick_s)
                self._handle(arrived, msg)
                while True:
                    arrived, msg = self.inbox.get_nowait()
                    self._handle(arrived, msg)
            except queue.Empty:
                pass
            now = time.monotonic()
            if self._signals:
                if self.stop_code is None:
                    sig = self._signals[0]
                    self.stop_code = 130 if sig == signal.SIGINT else 143
                    self._request_stop(client, f"fleet master interrupted by {signal.Signals(sig).name}")
                    stop_deadline = now + TIMING.fleet_stop_grace_s
                elif len(self._signals) > 1 or (stop_deadline is not None and now > stop_deadline):
                    self._abandon("the master stopped waiting for it (second signal or stop grace exceeded)")
                    break
            for s in self.shards:
                if s.status == "running" and s.future.done():
                    self._collect(s)
            if now >= next_membership:
                next_membership = now + TIMING.fleet_membership_s
                self._check_membership(client)
            for s in self.shards:
                if s.status == "running" and now - s.last_heard > TIMING.fleet_silence_s:
                    self._lose(s, f"silent for {TIMING.fleet_silence_s:g}s (no heartbeat): its machine or network "
                                  "is gone, or the Dask worker is stuck")
            self._write_lines(time.time())

    def _handle(self, arrived, msg):
        if not isinstance(msg, dict) or msg.get("run") != self.run_id:
            return
        try:
            s = self.shards[int(msg.get("shard"))]
        except (TypeError, ValueError, IndexError):
            log.warning("fleet stream: message from an unknown shard: %r", msg)
            return
        s.last_heard = time.monotonic()
        kind = msg.get("k")
        if kind == "second":
            rec = msg.get("rec") or {}
            if not isinstance(rec.get("t"), (int, float)):
                return
            if self.merger.add(s.index, rec, arrived - (rec["t"] + 1)):
                s.seconds.append(rec)
                if rec.get("ops") or rec.get("throughput") or rec.get("in_flight"):
                    # Seconds under load only: a held pool's idle seconds are written by the Runner
                    # after its grace (no worker reports them), which says nothing of the stream.
                    s.delays.append(arrived - (rec["t"] + 1))
                s.hops.append(arrived - (msg.get("sent", arrived) - s.offset_s))
            if msg.get("load_started_at") and s.load_started_at is None:
                s.load_started_at = msg["load_started_at"] - s.offset_s
            if isinstance(msg.get("share"), dict):
                s.shares.append(msg["share"])
        elif kind == "event":
            ev = dict(msg.get("ev") or {})
            if ev.get("type") == "breach":
                s.breach_events += 1
            self.events.write({**ev, "shard": s.index, "host": s.host})
        elif kind == "ready":
            s.warnings = list(msg.get("warnings") or [])
            self.events.emit("fleet", name="shard_ready", shard=s.index, host=s.host, pid=msg.get("pid"))
        elif kind != "alive":
            log.warning("fleet stream: unknown message kind %r from shard %s", kind, s.index)

    def _write_lines(self, now):
        waiting = [s.index for s in self.shards if s.status == "running"]
        for line in self.merger.ready(now, waiting):
            self.timeseries.write(line)
            if self.progress is not None:
                self.progress(line, len(waiting), len(self.shards))

    def _check_membership(self, client):
        try:
            present = set(_workers(client))
        except Exception as e:  # noqa: BLE001 - the scheduler itself may be gone
            for s in self.shards:
                if s.status == "running":
                    self._lose(s, f"the scheduler stopped answering ({type(e).__name__}: {_first_line(e)})")
            return
        for s in self.shards:
            if s.status != "running" or s.future.done():
                continue
            s.missing = 0 if s.worker in present else s.missing + 1
            if s.missing >= MISSING_CHECKS:
                last = f"; its last streamed second was {s.seconds[-1]['t']}" if s.seconds else ""
                self._lose(s, f"its Dask worker {s.worker} on {s.host} left the cluster mid-run (the process "
                              f"died or the machine is unreachable){last}")

    def _collect(self, s):
        fut = s.future
        if fut.status == "finished":
            try:
                res = fut.result(timeout=TIMING.fleet_stop_grace_s)
            except Exception as e:  # noqa: BLE001 - reported as the shard's reason
                self._lose(s, f"its result could not be fetched ({type(e).__name__}: {_first_line(e)})")
                return
            s.result = res
            s.status = res.get("status", "finished")
            s.reason = res.get("reason")
            s.warnings = list(res.get("warnings") or s.warnings)
            if res.get("load_started_at") and s.load_started_at is None:
                s.load_started_at = res["load_started_at"] - s.offset_s
            self.events.emit("fleet", name="shard_end", shard=s.index, host=s.host, status=s.status,
                             exit_code=res.get("exit_code"), reason=s.reason)
            return
        exc = None
        try:
            exc = fut.exception(timeout=1.0)
        except Exception as e:  # noqa: BLE001 - a cancelled future raises here
            exc = e
        if isinstance(exc, UsageError):
            s.status, s.reason, s.usage_error = "error", str(exc), True
            self.events.emit("fleet", name="shard_error", shard=s.index, host=s.host, error=type(exc).__name__,
                             message=str(exc))
        else:
            self._lose(s, f"its task failed: {type(exc).__name__}: {_first_line(exc)}" if exc is not None
                       else f"its task ended as {fut.status}")

    def _lose(self, s, reason):
        s.status, s.reason = "lost", reason
        log.warning("shard %d on %s lost: %s", s.index, s.host, reason)
        self.events.emit("fleet", name="shard_lost", shard=s.index, host=s.host, worker=s.worker, reason=reason,
                         seconds_streamed=len(s.seconds))
        try:
            s.future.cancel()
        except Exception:  # noqa: BLE001 - the scheduler may be gone too
            pass

    def _abandon(self, reason):
        for s in self.shards:
            if s.status == "running":
                self._lose(s, reason)

    def _request_stop(self, client, reason):
        from .shard import request_stop

        self.events.emit("fleet", name="stop", reason=reason)
        live = [s.worker for s in self.shards if s.status == "running"]
        try:
            client.run(request_stop, self.run_id, reason, self.stop_code, workers=live)
        except Exception as e:  # noqa: BLE001 - cancelling is the fallback
            log.warning("could not ask the shards to stop (%s); cancelling them", e)
            self._abandon(f"stop request failed: {e}")

    def _drain(self, client):
        """Late stream messages, then the scheduler's copy of the topic (messages sent before the
        subscription took effect), then every pending line."""
        deadline = time.monotonic() + TIMING.fleet_drain_s
        while time.monotonic() < deadline:
            try:
                arrived, msg = self.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            self._handle(arrived, msg)
        try:
            backlog = client.get_events(self.topic)
        except Exception:  # noqa: BLE001 - the scheduler may be gone; what streamed is kept
            backlog = ()
        now = time.time()
        for _, msg in backlog:
            if isinstance(msg, dict) and msg.get("k") == "second":
                self._handle(now, msg)  # duplicates are dropped by the merger
        for line in self.merger.flush():
            self.timeseries.write(line)

    # -- after the load

    def _report(self, run_dir, started, ended):
        from .. import api
        from ..report import build_report, write_reports

        finished = [s for s in self.shards if s.status == "finished"]
        errors = [s for s in self.shards if s.usage_error]
        if errors and len(errors) == len(self.shards):
            self._close_streams()
            s = errors[0]
            raise UsageError(f"shard {s.index} on {s.host}: {s.reason}")
        per_shard = [(s.label, [result_from_dict(d) for d in s.result.get("results") or []]) for s in finished]
        merged = merge_components(per_shard)
        report = build_report(merged, kind=self.report_kind, started_at=started, ended_at=ended,
                              thresholds=self.thresholds, run_dir=run_dir, command=self.command,
                              seed=self.options.get("seed"))
        fleet = self._fleet_dict(per_shard)
        report["fleet"] = fleet
        codes = [report["exit_code"]]
        codes += [s.result.get("exit_code", 0) for s in finished
                  if s.result.get("exit_code") in (ExitCode.SIGINT, ExitCode.SIGTERM)]
        if self.stop_code is not None:
            codes.append(self.stop_code)
        if fleet["shards_lost"]:
            codes.append(ExitCode.DEGRADED)
        report["exit_code"] = ExitCode.worst(codes)
        advice = [f"fleet: shard {s.index} on {s.host} {s.status}: {s.reason}; the totals leave it out "
                  f"(its {len(s.seconds)} streamed seconds are in timeseries.jsonl)"
                  for s in self.shards if s.status != "finished"]
        advice += [f"fleet: {w}" for w in fleet["warnings"]]
        report["recommendations"][:0] = advice  # first: they qualify everything after them
        self.events.emit("fleet", name="end", exit_code=report["exit_code"], shards_lost=fleet["shards_lost"])
        self._close_streams()
        paths = write_reports(run_dir, report)
        return api.Report(report, merged, report["exit_code"], run_dir, paths)

    def _fleet_dict(self, per_shard):
        rows = dict(per_shard)
        starts = [s.load_started_at for s in self.shards if s.load_started_at]
        first = min(starts) if starts else None
        shards = []
        for s in self.shards:
            res = s.result or {}
            if s.status == "finished":
                figures = shard_row_from_results(rows[s.label])
            else:
                figures = shard_row_from_seconds(s.seconds, s.breach_events)
            shares = _main_shares(res.get("shares") or s.shares, self.names)
            shards.append({
                "index": s.index, "host": s.host, "worker": s.worker, "status": s.status, "reason": s.reason,
                "exit_code": res.get("exit_code"), "share": shares[0] if shares else None, **figures,
                "duration_s": round(sum(r.duration_seconds for r in rows.get(s.label, [])), 3),
                "run_dir": res.get("run_dir") or os.path.join(self.run_dir, "shards", str(s.index)),
                "seconds_streamed": len(s.seconds),
                "clock_offset_ms": round(s.offset_s * 1000, 3),
                "late_ms": None if s.load_started_at is None else round((s.load_started_at - self.start_at) * 1000, 3),
                "load_started_at": s.load_started_at,
                "start_offset_ms": None if s.load_started_at is None else round((s.load_started_at - first) * 1000, 3),
                "max_delivery_delay_s": round(max(s.delays), 3) if s.delays else None,
                "median_delivery_delay_s": round(sorted(s.delays)[len(s.delays) // 2], 3) if s.delays else None,
                "max_transport_delay_s": round(max(s.hops), 3) if s.hops else None,
                "components": [{"test_name": r.test_name, "throughput": r.throughput_ops_per_sec,
                                "p99_ms": r.latency_ms.get("p99"), "peak_memory_mb": r.peak_memory_mb,
                                "breaches": len(r.breaches), "exit_code": r.exit_code, "success": r.success}
                               for r in rows.get(s.label, [])],
            })
        warnings = list(self.warnings)
        for s in self.shards:
            warnings.extend(w for w in s.warnings if w not in warnings)
            late_s = None if s.load_started_at is None else s.load_started_at - self.start_at
            # The open model's arrivals begin TIMING.schedule_lead_s after the (released) pool on every
            # shard alike: late means late against the first shard, or late beyond that lead.
            if late_s is not None and (s.load_started_at - first > LATE_WARNING_S
                                       or late_s > TIMING.schedule_lead_s + LATE_WARNING_S):
                warnings.append(f"shard {s.index} on {s.host} began its load {late_s * 1000:.0f} ms after the agreed "
                                f"instant (its pool was not ready): give a longer --start-lead than {self.lead_s:g}s")
        delays = [d for s in self.shards for d in s.delays]
        import distributed

        return {
            "scheduler": self.address,
            "run_id": self.run_id,
            "mode": self.mode,
            "dask_version": distributed.__version__,
            "shard_count": len(self.shards),
            "shards_finished": sum(1 for s in self.shards if s.status == "finished"),
            "shards_lost": sum(1 for s in self.shards if s.status != "finished"),
            "start_at": self.start_at,
            "start_skew_ms": round((max(starts) - min(starts)) * 1000, 3) if len(starts) > 1 else
            (0.0 if starts else None),
            "max_delivery_delay_s": round(max(delays), 3) if delays else None,
            "exit_code_degraded": ExitCode.DEGRADED,
            "notes": ["latency percentiles and accounting merge the HDR histograms and counts of the shards "
                      "that finished; peak memory and CPU are the worst machine's",
                      "per-second lines in timeseries.jsonl: counts add up, percentiles are the worst shard's"],
            "warnings": warnings,
            "shards": shards,
        }

    def _close_streams(self):
        for st in (self.events, self.timeseries):
            if st is not None:
                st.close()

    # -- signals

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self._signals.append(signum)

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(old):
    for s, h in (old or {}).items():
        signal.signal(s, h)


class _FleetProgress:
    """The live status line of a fleet run (a terminal only)."""

    def __init__(self, stream=sys.stderr, enabled=None):
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled

    def __call__(self, line, running, total):
        if not self.enabled:
            return
        p99 = (line.get("latency_ms") or {}).get("p99")
        sr = line.get("success_rate")
        self.stream.write("\r\x1b[2K" + f"[fleet {running}/{total} running · {line.get('phase', '')}] "
                          f"ops/s {line.get('throughput') or 0:>7}  ok {'—' if sr is None else f'{sr:6.1%}'}  "
                          f"p99≤ {'—' if p99 is None else f'{p99:8.1f}ms'}  in flight {line.get('in_flight') or 0:>4}")
        self.stream.flush()

    def done(self):
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


# ---------------------------------------------------------------------- `cluster local`


def start_local_cluster(workers, port=0):
    """A loopback Dask cluster for trying fleet mode: ``workers`` worker processes on 127.0.0.1,
    one thread each, each offering the ``loadgen`` resource, with :data:`WORKER_CONFIG`.

    The settings are made process-wide (not in a ``with`` block) because the nanny reads
    ``distributed.worker.daemon`` again whenever it restarts a worker. Returns the LocalCluster.
    """
    _import_distributed()
    import dask
    from distributed import LocalCluster

    dask.config.set(WORKER_CONFIG)
    # The scheduler's HTTP routes (health, metrics) start even without a dashboard, on 8787 unless
    # told otherwise: a free loopback port instead, so a real Dask dashboard keeps its port.
    return LocalCluster(n_workers=workers, processes=True, host="127.0.0.1", scheduler_port=port,
                        threads_per_worker=1, memory_limit=0, resources={RESOURCE: 1}, dashboard_address=None,
                        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, silence_logs=logging.ERROR)


def cluster_command(args):
    """``loadgen cluster local --workers N [--port P]``: serve a loopback cluster until Ctrl-C (exit 0)."""
    from ..config import positive_int

    workers = positive_int(args.workers, "--workers")
    port = int(args.port)
    if not 0 <= port <= 65535:
        raise UsageError(f"--port: {args.port} is not a TCP port")
    try:
        cluster = start_local_cluster(workers, port)
    except OSError as e:
        raise UsageError(f"cannot start a local Dask cluster on 127.0.0.1:{port}: {e.strerror or e}") from None
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        address = cluster.scheduler_address
        print(f"loadgen: local Dask cluster at {address}: {workers} worker process(es) on 127.0.0.1, "
              f"resource {RESOURCE}=1, one thread, no Dask memory limit")
        print(f"loadgen: try `python -m loadgen run concurrent_load --cluster {address}`; Ctrl-C stops the cluster",
              flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        _restore_signals(old)
        cluster.close()
    print("loadgen: local cluster stopped")
    return 0


# ---------------------------------------------------------------------- helpers


SHARD_OPTIONS = ("target", "flow_params", "target_args", "seed", "thresholds", "sample_interval", "stop_file",
                 "start_method", "target_factory", "inputs", "inputs_mode", "profile")


def _check_options(options):
    """What a shard runs with: api.run's options that travel (``TypeError`` for any other)."""
    unknown = sorted(set(options) - set(SHARD_OPTIONS))
    if unknown:
        raise TypeError(f"fleet runs do not take {', '.join(unknown)}")


def _main_shares(shares, names):
    """A shard's shares, the scenarios' main phases first (a baseline at concurrency 1 says little)."""
    return sorted(shares, key=lambda sh: (sh.get("phase") not in names, -(sh.get("total") or 0)))


def _workers(client):
    """``{address: info}`` of every worker the scheduler knows, asked now.

    Not ``Client.scheduler_info()``: it returns the Client's cached identity, which the Client's
    own periodic refresh may have replaced, between the call and the read, with a copy that lists
    no worker at all — a worker would look gone.
    """
    try:
        info = client.sync(client.scheduler.identity, n_workers=-1)
    except TypeError:  # older distributed: identity() takes no n_workers and lists every worker
        info = client.sync(client.scheduler.identity)
    return info.get("workers", {})


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise UsageError(f"fleet mode needs Dask distributed, which is not installed: {INSTALL_HINT}") from None
    return distributed


def _normalise_address(address):
    text = str(address or "").strip()
    if not text:
        raise UsageError("--cluster: expected a scheduler address like tcp://10.0.0.5:8786")
    if "://" not in text:
        text = "tcp://" + text
    scheme, _, rest = text.partition("://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--cluster: {address!r} is not a scheduler address like tcp://10.0.0.5:8786")
    return text


def _first_line(e):
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _close_quietly(client):
    try:
        client.close(timeout=5)
    except Exception:  # noqa: BLE001 - the scheduler may already be gone
        pass

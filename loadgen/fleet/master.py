"""Fleet runs: one plan, one shard per machine, on Dask distributed (DESIGN §12).

::

        fleet master (this module; the CLI process)
        ┌──────────────────────────────────────────────────────────────────────┐
        │ Client ─▶ scheduler: find shard workers, measure clock offsets,      │
        │ submit one run_shard task per worker; then blocks in ONE place: the  │
        │ stream queue (fed by the Client's topic subscription) with a tick,   │
        │ to open the start once every shard is ready, merge seconds, watch    │
        │ membership, stop, collect.                                           │
        └────┬───────────────────────────────▲─────────────────────────────────┘
             │ task + ShardSpec              │ topic events: seconds, heartbeats, events.jsonl lines
        ┌────▼──────────── Dask worker (one per machine, resource loadgen=1) ──┐
        │ shard.run_shard: a complete local loadgen run — its own monitor,    │
        │ pool and thresholds — its ready pool held until the start instant   │
        └──────────────────────────────────────────────────────────────────────┘

Who writes what: each shard writes its own run directory on its machine
(``<fleet run dir>/shards/<n>`` when it can write there, as on one machine
or a shared file system; else ``$TMPDIR/loadgen-fleet/<run id>/<n>``, named
in the report); the master writes the fleet run directory: ``timeseries.jsonl``
(one merged line per second and phase, with a ``per_shard`` breakdown),
``events.jsonl`` (the master's ``fleet`` events and every shard's events
with ``shard`` and ``host`` fields) and the reports, whose ``fleet`` key
holds the per-machine table.

The start: every shard builds its pool and reports ``ready``; once the last
live shard has, the master picks the instant — the last ready time plus
``TIMING.fleet_start_margin_s`` (or three round trips to the slowest worker,
if more) — and sends each shard that instant on its own clock
(``shard.open_gates``). ``--start-lead`` bounds the wait: a shard not ready
by then stops every shard before any load, and the run is an error (2).

Exit codes: those of DESIGN §10, among them ``4`` (``ExitCode.DEGRADED``) when a
shard was lost — its machine or Dask worker died, it went silent for
``--silence-limit``, the scheduler died, or it could not start — so the
fleet's totals miss a machine: its streamed operations count as ``lost`` in
the accounting. Priority: 2, 143, 130, 4, 3, 1, 0. A scheduler that cannot be
reached, or that has no worker for a shard within ``--cluster-timeout``, is a
usage error (2).

The report (merged components, the per-machine table, the exit code) is
built by ``summary.py`` from the shards' states kept here.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import threading
import time
import uuid

from .. import options as opts
from ..config import TIMING
from ..errors import ClusterError, ExitCode, UsageError
from .cluster import RESOURCE, close_quietly, first_line, import_distributed, normalise_address, workers_of
from .merge import SecondMerger
from .state import ShardState

log = logging.getLogger("loadgen.fleet")

MISSING_CHECKS = 2  # a worker absent from this many membership checks in a row is gone


class FleetMaster:
    """Runs one fleet: ``kind`` ``"run"`` (one scenario) or ``"suite"``, scenario ``names``, and
    ``settings`` (a checked :class:`~loadgen.options.Layer`, the fleet keys included). Use :meth:`run`."""

    def __init__(self, kind, names, settings, *, progress=None, command=None, plan=None, entry_settings=None):
        self.kind, self.names = kind, tuple(names)
        self.plan = plan  # kind "plan": (plan.Plan, the settings over it, only), sent to every shard
        self.entry_settings = entry_settings or [settings]  # each entry's load must split over the shards
        self.settings = settings
        # What every shard runs with: the settings but the fleet's own and the presentation's.
        self.shard_settings = settings.without(*opts.FLEET_KEYS, *opts.PRESENTATION_KEYS, "out")
        self.address = normalise_address(settings.get("cluster"))
        self.want = settings.get("shards")
        self.timeout_s = settings.get("cluster_timeout") or TIMING.fleet_connect_s
        self.lead_s = settings.get("start_lead") or TIMING.fleet_start_lead_s
        self.silence_s = settings.get("silence_limit") or TIMING.fleet_silence_s
        self.start_at = None  # the master's clock: when the load begins (picked once every shard is ready)
        self.ready_deadline = None  # time.monotonic() by which every shard must be ready
        self.not_ready = []  # shards not ready by the deadline: the run is stopped before any load
        self.rtt_s = 0.0  # the slowest worker's round trip, measured at the warm-up
        self.out, self.progress, self.command = settings.get("out"), progress, command
        self.thresholds = opts.thresholds_of(settings)
        self.report_kind = {opts.RUN: names[0], opts.SUITE: "suite"}.get(kind) or f"plan {plan[0].name}"
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
        """Connect, pick the shards, start them together, follow them, merge; returns an ``api.Report``.
        Raises :class:`UsageError` (:class:`ClusterError`) before any load is applied."""
        from .summary import fleet_report

        distributed = import_distributed()
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
            if self.not_ready:
                self.close_streams()
                raise ClusterError(self.address, self._not_ready_message())
            ended = time.time()
            if _connected(client):
                _bounded(lambda: client.unsubscribe_topic(self.topic), TIMING.fleet_drain_s)
        finally:
            if _connected(client):
                close_quietly(client)
            else:  # closing waits for the Client's reconnection attempts (10 s) to give up: not for us
                _bounded(lambda: close_quietly(client, timeout=1), 1.5)
        return fleet_report(self, run_dir, started, ended)

    # -- before the load

    def _connect(self, distributed):
        try:
            return distributed.Client(self.address, timeout=self.timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise ClusterError(self.address, f"cannot reach the Dask scheduler within {self.timeout_s:g}s "
                                             f"({type(e).__name__}: {first_line(e)}); is `dask scheduler` "
                                             "running there?") from None

    def _discover(self, client):
        """Pick the shard workers: those offering the loadgen resource, else one per host."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            workers = workers_of(client)
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
        self.shards = [ShardState(i, a, workers[a].get("host") or "?") for i, a in enumerate(chosen)]

    def _check_split(self):
        for settings in self.entry_settings:
            self._check_split_of(settings)

    def _check_split_of(self, settings):
        n = len(self.shards)
        c = settings.get("concurrency")
        if c is not None and int(c) < n:
            raise UsageError(f"--concurrency {c} cannot be split over {n} shards (each needs at least 1); "
                             f"use --shards {c} or more concurrency")
        ops = settings.get("operations")
        if ops is not None and int(ops) < n:
            raise UsageError(f"--operations {ops} cannot be split over {n} shards; use --shards {ops} or more")
        # The safety cap is per machine: each shard's share of the load must fit under it.
        share = opts.Layer({k: settings[k] for k in ("concurrency", "rate") if k in settings}, where=settings.where)
        if "concurrency" in share:
            share["concurrency"] = -(-share["concurrency"] // n)
        if settings.get("stages"):
            share["stages"] = tuple(dataclasses.replace(s, target=s.target / n) for s in settings["stages"])
        opts.check_in_flight(share, opts.thresholds_of(settings))

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
                                             f"{first_line(e)}); install loadgen on every worker machine") from None
        t0 = time.time()
        clocks = client.run(time.time, workers=addrs)
        t1 = time.time()
        self.rtt_s = t1 - t0
        for s in self.shards:
            s.offset_s = clocks[s.worker] - (t0 + t1) / 2  # ± half the round trip
        worst = max(abs(s.offset_s) for s in self.shards)
        if worst > 0.05:
            self.warnings.append(f"worker clocks differ from the master's by up to {worst * 1000:.0f} ms "
                                 "(corrected for the start; sync the machines with NTP)")

    def _submit(self, client):
        from .shard import ShardSpec, run_shard

        self.events.emit("fleet", name="submit", scheduler=self.address, run_id=self.run_id, mode=self.mode,
                         kind=self.report_kind, scenarios=list(self.names),
                         start_lead_s=self.lead_s, silence_limit_s=self.silence_s,
                         shards=[{"shard": s.index, "host": s.host, "worker": s.worker,
                                  "clock_offset_ms": round(s.offset_s * 1000, 3)} for s in self.shards])
        n = len(self.shards)
        self.ready_deadline = time.monotonic() + self.lead_s
        # A shard waits for its instant a little longer than the master waits for readiness.
        deadline = time.time() + self.lead_s + self._margin() + TIMING.fleet_stop_grace_s
        for s in self.shards:
            spec = ShardSpec(run_id=self.run_id, index=s.index, count=n, kind=self.kind, scenarios=self.names,
                             settings=self.shard_settings, deadline=deadline + s.offset_s,
                             out=os.path.join(self.run_dir, "shards", str(s.index)), topic=self.topic,
                             command=self.command or "", silence_s=self.silence_s, plan=self.plan)
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
                    self.stop_code = ExitCode.of_signal(sig)
                    self._request_stop(client, f"fleet master interrupted by {signal.Signals(sig).name}")
                    stop_deadline = now + TIMING.fleet_stop_grace_s
                elif len(self._signals) > 1 or (stop_deadline is not None and now > stop_deadline):
                    self._abandon("the master stopped waiting for it (second signal or stop grace exceeded)")
                    break
            for s in self.shards:
                if s.status == "running" and s.future.done():
                    self._collect(client, s)
            if now >= next_membership and not all(s.done for s in self.shards):
                next_membership = now + TIMING.fleet_membership_s
                self._check_membership(client)
            for s in self.shards:
                if s.status == "running" and now - s.last_heard > self.silence_s:
                    self._lose(s, f"silent for {self.silence_s:g}s (no heartbeat): its machine or network "
                                  "is gone, or the Dask worker is stuck")
            if self.start_at is None and self.stop_code is None and not self.not_ready:
                self._maybe_open(client, now)
            self._write_lines(time.time())

    def _margin(self):
        return max(TIMING.fleet_start_margin_s, 3 * self.rtt_s)

    def _maybe_open(self, client, now):
        """Once every live shard is ready, pick the start instant and send it; past the ready deadline,
        stop every shard before any load (:attr:`not_ready`)."""
        from .shard import open_gates

        live = [s for s in self.shards if s.status == "running"]
        if not live:
            return
        if any(s.ready_at is None for s in live):
            if now > self.ready_deadline:
                self.not_ready = [s for s in live if s.ready_at is None]
                self.stop_code = ExitCode.USAGE
                self._request_stop(client, self._not_ready_message())
            return
        self.start_at = max(s.ready_at for s in live) + self._margin()
        self.events.emit("fleet", name="start", start_at=self.start_at,
                         ready={str(s.index): round(s.ready_at - self.start_at, 4) for s in live})
        try:
            client.run(open_gates, self.run_id, {s.index: self.start_at + s.offset_s for s in live},
                       workers=[s.worker for s in live])
        except Exception as e:  # noqa: BLE001 - a shard gone just now: the membership check loses it
            log.warning("fleet: could not send every shard its start (%s)", first_line(e))
        sent = time.time()
        if sent > self.start_at:
            self.warnings.append(f"the start instant reached the shards {1000 * (sent - self.start_at):.0f} ms late "
                                 "(a slow link to a worker): their load began when it arrived")

    def _not_ready_message(self):
        names = ", ".join(s.label for s in self.not_ready)
        return (f"not every shard was ready within --start-lead {self.lead_s:g}s: {names}; no load was applied. "
                "Give a longer --start-lead, or check that machine (a cold worker importing numpy, a loaded machine)")

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
            s.on_second(msg, arrived, self.merger)
        elif kind == "event":
            ev = dict(msg.get("ev") or {})
            if ev.get("type") == "breach":
                s.breach_events += 1
            self.events.write({**ev, "shard": s.index, "host": s.host})
        elif kind == "begin":
            s.warnings = list(msg.get("warnings") or [])
            self.events.emit("fleet", name="shard_begin", shard=s.index, host=s.host, pid=msg.get("pid"))
        elif kind == "ready":
            s.ready_at = arrived
            self.events.emit("fleet", name="shard_ready", shard=s.index, host=s.host)
        elif kind != "alive":
            log.warning("fleet stream: unknown message kind %r from shard %s", kind, s.index)

    def _write_lines(self, now):
        waiting = [s.index for s in self.shards if s.status == "running"]
        for line in self.merger.ready(now, waiting):
            self.timeseries.write(line)
            if self.progress is not None:
                self.progress(line, len(waiting), len(self.shards))

    def _check_membership(self, client):
        if not _connected(client):  # asking would wait for the Client's reconnection attempts (10 s)
            for s in self.shards:
                if s.status == "running":
                    self._lose(s, "the Dask scheduler went away mid-run (the master lost its connection)")
            return
        try:
            present = set(workers_of(client))
        except Exception as e:  # noqa: BLE001 - the scheduler itself may be gone
            for s in self.shards:
                if s.status == "running":
                    self._lose(s, f"the scheduler stopped answering ({type(e).__name__}: {first_line(e)})")
            return
        for s in self.shards:
            if s.status != "running" or s.future.done():
                continue
            s.missing = 0 if s.worker in present else s.missing + 1
            if s.missing >= MISSING_CHECKS:
                last = f"; its last streamed second was {s.seconds[-1]['t']}" if s.seconds else ""
                self._lose(s, f"its Dask worker {s.worker} on {s.host} left the cluster mid-run (the process "
                              f"died or the machine is unreachable){last}")

    def _collect(self, client, s):
        fut = s.future
        if fut.status == "finished":
            try:
                res = fut.result(timeout=TIMING.fleet_stop_grace_s)
            except Exception as e:  # noqa: BLE001 - reported as the shard's reason
                self._lose(s, f"its result could not be fetched ({type(e).__name__}: {first_line(e)})")
                return
            s.on_result(res)
            self.events.emit("fleet", name="shard_end", shard=s.index, host=s.host, status=s.status,
                             exit_code=res.get("exit_code"), reason=s.reason, run_dir=res.get("run_dir"))
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
        elif not _connected(client):
            self._lose(s, "the Dask scheduler went away mid-run (the master lost its connection; its tasks were "
                          "cancelled)")
        else:
            self._lose(s, f"its task failed: {type(exc).__name__}: {first_line(exc)}" if exc is not None
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
        # Bounded: a Client whose scheduler just went away (and does not know it yet) retries this for
        # its whole connect timeout; what streamed is kept either way.
        backlog = _bounded(lambda: client.get_events(self.topic), 2.0, ()) if _connected(client) else ()
        now = time.time()
        for _, msg in backlog:
            if isinstance(msg, dict) and msg.get("k") == "second":
                self._handle(now, msg)  # duplicates are dropped by the merger
        for line in self.merger.flush():
            self.timeseries.write(line)

    # -- after the load

    def close_streams(self):
        """Close the fleet run directory's streams (idempotent)."""
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


def _bounded(call, timeout_s, default=None):
    """``call()`` on a daemon thread, waited for up to ``timeout_s``; ``default`` when it raises or is
    still waiting (a call to a scheduler that went away blocks for the Client's connect timeout)."""
    box = []

    def run():
        try:
            box.append(call())
        except Exception:  # noqa: BLE001 - the scheduler may be gone: the default stands
            pass

    t = threading.Thread(target=run, name="loadgen-fleet-bounded", daemon=True)
    t.start()
    t.join(timeout_s)
    return box[0] if box else default


def _connected(client):
    """True while the Client is connected to its scheduler (``Client.status``)."""
    return getattr(client, "status", "running") == "running"


def _restore_signals(old):
    for s, h in (old or {}).items():
        signal.signal(s, h)



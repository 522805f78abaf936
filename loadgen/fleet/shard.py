"""A fleet shard: one complete local loadgen run inside a Dask task.

::

    fleet master (master.py)                 Dask worker process (this module)
    ───────────────────────                  ─────────────────────────────────
    client.run(warm_up)          ──────────▶ imports loadgen; returns this machine's time.time()
    client.submit(run_shard, spec) ────────▶ task thread: session built (target checked, run dir made),
                                             then a plain local run — monitor, pool, thresholds — whose
                                             first phase holds its ready pool at a StartGate
    subscribe_topic(spec.topic)  ◀── log_event ── "ready": the whole pool is up (gate.pool_ready)
    client.run(open_gates)       ──────────▶ the start instant, on this machine's clock: the gate opens
                                 ◀── log_event ── every second: the Runner's per-second record
                                 ◀── log_event ── publisher thread: heartbeat each second and the
                                                  new lines of the shard's events.jsonl
    client.run(request_stop)     ──────────▶ a flag; the next per-second hook asks the Runner to stop
    future.result()              ◀────────── the shard's results (StressTestResult dicts, HDR payloads)

A shard stops on its own, too: when its task was cancelled (the master went
away), when no start instant came by ``spec.deadline``, and when it could not
reach the scheduler for ``spec.silence_s`` (a partition, a dead scheduler) —
a load generator cut off from its master does not go on loading the target.
Everything a shard keeps in the long-lived Dask worker process is per run id
and dropped when its task ends (the stop flags, the gates, the target's
module), so nothing of one run reaches the next.

The task thread is not the worker's main thread, so the Runner installs no
signal handlers: the master stops shards with :func:`request_stop`, and a
shard whose task the scheduler cancelled (the master went away) stops by
itself. The loadgen pool and monitor are children of the Dask worker
process and die with it (PR_SET_PDEATHSIG), as they die with a local master.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

from .. import options
from ..config import TIMING
from ..errors import ExitCode
from ..api import Session

log = logging.getLogger("loadgen.fleet.shard")

STOP_MASTER_GONE = ("the fleet master went away (its Dask task was cancelled)", ExitCode.SIGTERM)

_STOPS = {}  # run_id → (reason, exit code), set by the master through Client.run
_GATES = {}  # run_id → {shard index: StartGate} of the shards of that run on this worker


@dataclass(frozen=True)
class ShardSpec:
    """What the master sends to one shard (pickled by Dask)."""

    run_id: str
    index: int
    count: int
    kind: str  # "run" (one scenario) or "suite"
    scenarios: tuple  # scenario names
    settings: object  # options.Layer: the fleet's settings less its own and the presentation's
    deadline: float  # THIS worker's clock: the start instant must have come by then (else the shard stops)
    out: str  # the shard's run directory on its machine
    topic: str  # Dask event topic the shard streams to
    command: str = ""
    silence_s: float = TIMING.fleet_silence_s  # stop after this long without reaching the scheduler
    plan: tuple | None = None  # kind "plan": (plan.Plan, the settings over it, only)


def warm_up():
    """Run on each worker before the start instant is chosen: imports loadgen's engine (so the
    first shard does not pay for it after the start) and returns this machine's wall clock."""
    from .. import api, report, scenarios  # noqa: F401 - imported for their side effect: warm caches
    from ..engine import runner  # noqa: F401

    return time.time()


def request_stop(run_id, reason, exit_code):
    """Run on each worker by the master (``Client.run``): stop this run's shard gracefully (when it
    runs here: a request that comes after the shard ended must not stay behind)."""
    if run_id in _GATES:
        _STOPS[run_id] = (reason, int(exit_code))
    return True


def open_gates(run_id, instants):
    """Run on each worker by the master (``Client.run``): this run's shards here begin their load at
    ``instants[index]`` (UNIX time, this machine's clock). Returns this machine's time of the call."""
    for index, gate in list(_GATES.get(run_id, {}).items()):
        if index in instants:
            gate.open(instants[index])
    return time.time()


class ShardSession(Session):
    """A :class:`Session` whose every phase runs this shard's share and streams its seconds."""

    share = None  # merge.Share
    stream_hook = None  # callable(runner, record)
    shares_seen = None  # [{phase, model, mine, total, fraction}]
    gates = None  # [engine.load.StartGate] until the first phase takes it: its ready pool waits there

    @classmethod
    def of(cls, session, share, stream_hook, gate=None):
        """A shard session with every field of ``session``: each phase runs ``share`` of its plan and
        streams its seconds to ``stream_hook``; ``gate``: the first phase's StartGate, or None."""
        fields = {f.name: getattr(session, f.name) for f in dataclasses.fields(session) if f.init}
        s = cls(**fields)
        s.share, s.stream_hook, s.shares_seen, s.gates = share, stream_hook, [], [gate] if gate else []
        return s

    def derive(self, settings):
        """A plan entry's session, sharing this one's share, stream, shares seen and (untaken) gate."""
        d = super().derive(settings)
        d.share, d.stream_hook, d.shares_seen, d.gates = self.share, self.stream_hook, self.shares_seen, self.gates
        return d

    def run_phase(self, phase, plan, thresholds=None, stressors=(), on_second=None):
        """:meth:`Session.run_phase <loadgen.api.Session.run_phase>` on this shard's share of ``plan``:
        records the share, holds the first phase's ready pool at the gate, streams every second
        (before ``on_second``). Blocks for the phase; returns its RunOutcome."""
        self.shares_seen.append({"phase": phase, **self.share.describe(plan)})
        if self.gates:
            # The pool starts now, says when it is ready, and waits for the instant the master picks
            # once every shard is ready: pool start-up times differ between machines by seconds
            # (a cold worker imports numpy), a held start does not. Later phases follow on.
            plan = dataclasses.replace(plan, start_gate=self.gates.pop())
        hook = self.stream_hook
        if on_second is not None:
            own = on_second

            def hook(runner, record):
                self.stream_hook(runner, record)
                own(runner, record)

        return super().run_phase(phase, self.share.apply(plan), thresholds, stressors, on_second=hook)


class _Publisher:
    """Streams to the master: per-second records (from the task thread) and, from its own
    thread, a heartbeat, new events.jsonl lines, and the checks that the task is still wanted,
    that its start instant came in time and that the scheduler can be reached (:attr:`unwanted`)."""

    def __init__(self, worker, spec, key, gate):
        self.worker, self.spec, self.key, self.gate = worker, spec, key, gate
        self.events_path = os.path.join(spec.out, "events.jsonl")
        self._offset = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.unwanted = None  # (reason, exit code): the shard stops at its next second
        self.last_contact = time.monotonic()
        self.thread = threading.Thread(target=self._loop, name="loadgen-fleet-publisher", daemon=True)

    def send(self, kind, **fields):
        msg = {"k": kind, "shard": self.spec.index, "run": self.spec.run_id, "sent": time.time(), **fields}
        try:
            self.worker.log_event(self.spec.topic, msg)
        except Exception as e:  # noqa: BLE001 - a stream hiccup must not end the run; the result still returns
            log.warning("fleet stream: cannot send %s: %s", kind, e)

    def start(self):
        self.thread.start()

    def close(self):
        self._stop.set()
        self.thread.join(2 * TIMING.shard_heartbeat_s + self.spec.silence_s / 3)
        self._tail()

    def _loop(self):
        while not self._stop.wait(TIMING.shard_heartbeat_s):
            self._tail()
            self.send("alive")
            if self.unwanted is None:
                self.unwanted = self._check_wanted() or self._check_start() or self._check_contact()

    def _check_wanted(self):
        ts = self.worker.state.tasks.get(self.key) if self.key is not None else None
        if self.key is not None and (ts is None or ts.state in ("cancelled", "released", "forgotten")):
            return STOP_MASTER_GONE
        return None

    def _check_start(self):
        if self.gate.at is None and time.time() > self.spec.deadline:
            return ("no start instant came from the fleet master by the deadline: stopped before any load",
                    ExitCode.DEGRADED)
        return None

    def _check_contact(self):
        """A round trip to the scheduler (the master's only way here); after ``silence_s`` without
        one, stop: a partitioned load generator must not go on loading the target unwatched."""
        from distributed.utils import sync

        try:
            sync(self.worker.loop, self.worker.scheduler.get_metadata, keys=["loadgen-fleet", self.spec.run_id],
                 default=None, callback_timeout=max(0.5, self.spec.silence_s / 3))
            self.last_contact = time.monotonic()
        except Exception:  # noqa: BLE001 - unreachable, timed out, closed: all the same here
            pass
        cut_off = time.monotonic() - self.last_contact
        if cut_off > self.spec.silence_s:
            return (f"could not reach the Dask scheduler for {cut_off:.1f}s (a network partition, or the scheduler "
                    "died): stopped on its own", ExitCode.DEGRADED)
        return None

    def _tail(self):
        with self._lock:
            try:
                with open(self.events_path, "rb") as f:
                    f.seek(self._offset)
                    data = f.read()
            except OSError:
                return
            end = data.rfind(b"\n")
            if end < 0:
                return
            self._offset += end + 1
            for line in data[:end].split(b"\n"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                self.send("event", ev=event)


def run_shard(spec):
    """The Dask task: one shard's complete local run. Returns a plain dict (see ``master.py``).

    Raises :class:`UsageError` for a bad plan or target (before any load).
    """
    import multiprocessing

    from distributed import get_worker

    from .. import api
    from ..engine.load import StartGate
    from .merge import Share
    from ..streams import dumps

    worker = get_worker()
    try:
        key = worker.get_current_task()
    except Exception:  # noqa: BLE001 - older distributed: no cancellation check, the stop flag still works
        key = None
    host = socket.gethostname()
    base = {"index": spec.index, "host": host, "worker": worker.address, "pid": os.getpid(), "results": [],
            "shares": []}
    if time.time() > spec.deadline:
        return base | {"status": "refused", "exit_code": ExitCode.USAGE,
                       "reason": f"began {time.time() - spec.deadline:.1f}s after the deadline for its start (a re-run "
                                 "after a worker restart?): refused, so the fleet never runs a shard twice"}
    modules = set(sys.modules)
    warnings = _worker_warnings(worker, multiprocessing.current_process().daemon)
    spec = dataclasses.replace(spec, out=_shard_dir(spec))
    base |= {"run_dir": spec.out, "warnings": warnings}
    gate = StartGate()
    _GATES.setdefault(spec.run_id, {})[spec.index] = gate
    publisher = _Publisher(worker, spec, key, gate)
    gate.on_ready = lambda ready_at: publisher.send("ready", ready_at=ready_at)
    first = {}
    try:
        # Heartbeats from now: building the session imports the user's target, which may take a while.
        publisher.start()
        publisher.send("begin", host=host, pid=os.getpid(), warnings=warnings)
        settings, scs, kind, name = _work_of(spec)
        session = Session.open(settings, name=name, shard_of=spec.count, claimed=spec.out)  # by _shard_dir

        def stream(runner, record):
            fields = {"rec": json.loads(dumps(record)), "scenario": getattr(session, "scenario", None)}
            if runner not in first:
                first[runner] = True
                fields["load_started_at"] = runner.out.load_started_at
                fields["share"] = session.shares_seen[-1] if session.shares_seen else None
            publisher.send("second", **fields)
            stop = _STOPS.get(spec.run_id) or publisher.unwanted
            if stop is not None:
                runner.request_stop(*stop)

        session = ShardSession.of(session, Share(spec.index, spec.count), stream, gate)
        rep = api.run_scenarios(scs, session, kind=kind, command=spec.command)
        stop = _STOPS.get(spec.run_id) or publisher.unwanted
        if gate.at is None:  # stopped while held: no load was applied
            return base | {"status": "stopped", "reason": f"stopped before the start: {stop[0] if stop else '?'}",
                           "exit_code": stop[1] if stop else ExitCode.DEGRADED}
        return base | {"status": "finished", "exit_code": rep.exit_code,
                       "results": [r.to_dict() for r in rep.results], "shares": session.shares_seen,
                       "load_started_at": _first_load_start(session, first), "ended_at": time.time()}
    finally:
        _STOPS.pop(spec.run_id, None)
        _GATES.pop(spec.run_id, None)
        publisher.close()
        _forget_targets(modules)


def _work_of(spec):
    """``(settings, scenarios, report kind, session name)`` of this shard: the scenarios with the
    fleet's settings, or a plan's entries (checked here again: its targets are this machine's).
    Seeds are offset by the shard's index: distinct, reproducible random streams per shard."""
    from .. import scenarios

    if spec.plan is not None:
        from .. import plan as plans

        the_plan, upper, only = spec.plan
        prepared = plans.prepare(the_plan, upper, only=only)
        for e in prepared.entries:
            if e.settings.get("seed") is not None:
                e.settings["seed"] += spec.index
        settings = prepared.settings.without(*plans.TARGET_KEYS)
        settings["out"] = spec.out
        return settings, prepared.entries, f"plan {the_plan.name}", the_plan.name
    settings = options.Layer(spec.settings, where=spec.settings.where)
    if settings.get("seed") is not None:
        settings["seed"] += spec.index
    settings["out"] = spec.out
    name = spec.scenarios[0] if spec.kind == options.RUN else "suite"
    return settings, [scenarios.get(n) for n in spec.scenarios], name, name


def _forget_targets(before):
    """Drop the modules this run imported from outside Python's and the installed packages' paths
    (the user's targets): the next run on this long-lived worker imports them afresh."""
    import site
    import sysconfig

    installed = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    installed.update(getattr(site, "getsitepackages", list)())
    installed.add(site.getusersitepackages())
    here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # loadgen itself
    keep = tuple(os.path.realpath(p) + os.sep for p in installed) + (here + os.sep,)
    for name in set(sys.modules) - before:
        path = getattr(sys.modules.get(name), "__file__", None) or ""
        # Python source only: an extension module cannot always be initialised twice in one process.
        if path.endswith((".py", ".pyc")) and not os.path.realpath(path).startswith(keep):
            sys.modules.pop(name, None)


def _shard_dir(spec):
    """The master's path for this shard's run directory when this machine can write there (one
    machine, a shared file system), else a folder under this machine's temp directory."""
    from ..errors import OutputError
    from ..streams import prepare_run_dir

    try:
        return prepare_run_dir(spec.out)
    except OutputError:
        import tempfile

        return prepare_run_dir(os.path.join(tempfile.gettempdir(), "loadgen-fleet", spec.run_id, str(spec.index)))


def _first_load_start(session, first):
    starts = [r.out.load_started_at for r in first if r.out.load_started_at]
    return min(starts) if starts else None


def _worker_warnings(worker, daemonic):
    """What in this Dask worker's set-up could compete with loadgen (said once per shard)."""
    out = []
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if limit:
        out.append(f"Dask worker {worker.address} has memory_limit {limit / 2**20:.0f} MB: its nanny may pause "
                   "or restart the worker before loadgen's thresholds act; start it with --memory-limit 0")
    if daemonic:
        out.append(f"Dask worker {worker.address} is a daemonic process: targets that start "
                   "multiprocessing children fail there; set distributed.worker.daemon: False "
                   "(DASK_DISTRIBUTED__WORKER__DAEMON=False)")
    return out

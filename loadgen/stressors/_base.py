"""What every stressor shares: the life cycle, the child-side plumbing and the common data.

:class:`Stressor` is the parent-side life cycle (NEW → RUNNING → STOPPED,
once) that :mod:`.cpu`, :mod:`.memory` and :mod:`.io` fill in through its
hooks.  A child calls :func:`child_setup` first: it ignores SIGINT (the
parent decides when to stop), exits cleanly (code 0) on SIGTERM, and dies
with its parent (``PR_SET_PDEATHSIG`` plus an :func:`orphaned` check in its
loop).  Parent and child talk over :func:`pipe` with :func:`send`; also
here: :class:`LatencyHistogram`, the argument checks and :data:`MB`.
"""

from __future__ import annotations

import enum
import logging
import math
import mmap
import os
import signal
import time
from dataclasses import dataclass, field

from ..config import TIMING
from ..engine import _proc
from ..errors import UsageError

log = logging.getLogger("loadgen.stressors")

MB = 1024 * 1024
PAGE = mmap.PAGESIZE


class StressorState(enum.Enum):
    """Where a stressor is in its life cycle: NEW → RUNNING → STOPPED, once each."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ChildError:
    """Child → parent: the child failed (``text`` says how) and is about to exit with code 1."""

    text: str


# ---------------------------------------------------------------- latency histogram


@dataclass
class LatencyHistogram:
    """Log-bucketed latencies (seconds) with about 1 % relative resolution.

    Plain data: ``record``, ``merge``, ``to_dict`` / ``from_dict`` and
    ``percentile(q)`` (q in 0–100, seconds, ``nan`` when empty).
    """

    buckets: dict = field(default_factory=dict)  # bucket index → count
    count: int = 0

    _FLOOR_S = 1e-7
    _LOG_BASE = math.log(1.02)

    def record(self, seconds):
        """Count one latency of ``seconds`` (values below 0.1 µs count as 0.1 µs)."""
        i = int(math.log(max(seconds, self._FLOOR_S) / self._FLOOR_S) / self._LOG_BASE)
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.count += 1

    def merge(self, other):
        """Add ``other``'s counts to this histogram; returns ``self``."""
        for i, n in other.buckets.items():
            self.buckets[i] = self.buckets.get(i, 0) + n
        self.count += other.count
        return self

    def percentile(self, q):
        """The ``q``-th percentile (q in 0–100) in seconds, mid-bucket; ``nan`` when empty."""
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                return self._FLOOR_S * math.exp((i + 0.5) * self._LOG_BASE)
        return math.nan  # pragma: no cover - rank ≤ count

    def to_dict(self):
        """Plain, picklable and JSON-able form: ``{"buckets": {index: count}, "count": n}``."""
        return {"buckets": dict(self.buckets), "count": self.count}

    @classmethod
    def from_dict(cls, d):
        """The histogram back from :meth:`to_dict`'s form (keys may be strings, as after JSON)."""
        return cls({int(k): int(v) for k, v in d["buckets"].items()}, int(d["count"]))



# ---------------------------------------------------------------- child plumbing


def child_setup(parent_pid):
    """First thing every stressor child does.

    SIGINT is ignored: a Ctrl-C reaches the whole process group and the
    parent must decide the order of the shutdown.  SIGTERM exits cleanly
    (``finally`` blocks run).  The kernel sends SIGTERM when the parent dies
    (note: when the *thread* that forked us exits — loadgen spawns from the
    main thread); a parent that died before prctl took effect is caught by
    the ``getppid`` check right after: returns False when already orphaned.
    """
    _proc.ignore_sigint()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _proc.set_pdeathsig(signal.SIGTERM)
    return not orphaned(parent_pid)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(0)


def orphaned(parent_pid):
    """True when this process's parent is no longer ``parent_pid`` (it died). Never blocks."""
    return os.getppid() != parent_pid


def own_rss_bytes():
    """This process's resident set size in bytes (``/proc/self/statm``; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        import psutil

        return psutil.Process().memory_info().rss


def send(conn, msg):
    """Send ``msg`` over ``conn``; True if sent, False (no exception) when the other end is gone.

    Used both ways (child → parent reports, parent → child "stop").  May
    block while the pipe's buffer is full.
    """
    try:
        conn.send(msg)
        return True
    except (OSError, EOFError, ValueError):
        return False


# ---------------------------------------------------------------- parent side


def close(conn):
    """Close a pipe end, ignoring OSError."""
    try:
        conn.close()
    except OSError:
        pass


def pipe():
    """A duplex ``multiprocess.Pipe()``: ``(here, there)``; ``there`` goes to the child."""
    import multiprocess

    return multiprocess.Pipe()


class Stressor:
    """Life cycle shared by the stressors: NEW → RUNNING → STOPPED, once.

    Children are never started here directly: ``start(spawn)`` takes
    loadgen's registering function ``spawn(target, args, name) -> process``
    (a started ``multiprocess.Process``-like object).  Targets are
    module-level functions and every argument is picklable, so the "fork"
    and "spawn" start methods both work.  ``stop(timeout_s)`` asks politely,
    waits, then terminate → join → kill → join; it is idempotent and is what
    ``__exit__`` calls.  A subclass provides ``describe()`` (one line for
    reports), ``stats()`` (never blocks, a plain ``dict``) and the hooks
    ``_start``, ``_before_stop``, ``_request_stop``, ``_after_stop``.
    """

    kind = "?"

    def __init__(self):
        self._state = StressorState.NEW
        self._procs = []
        self._t_start = None
        self._t_stop = None

    @property
    def state(self):
        """The current :class:`StressorState`."""
        return self._state

    @property
    def pids(self):
        """Pids of the children started so far (alive or not)."""
        return [p.pid for p in self._procs]

    def _set_state(self, state):
        log.debug("%s stressor: %s → %s", self.kind, self._state.value, state.value)
        self._state = state

    def start(self, spawn):
        """Start the child process(es) through ``spawn(target, args, name)``; returns ``self``.

        Does not wait for the children to be ready.  Raises :class:`UsageError`
        when called twice.
        """
        if self._state is not StressorState.NEW:
            raise UsageError(f"{self.kind} stressor: start() called when already {self._state.value}")
        self._t_start = time.monotonic()
        self._set_state(StressorState.RUNNING)
        try:
            self._start(spawn)
        except BaseException:
            self.stop(timeout_s=0)
            raise
        return self

    def stop(self, timeout_s=TIMING.stressor_stop_grace_s):
        """Stop every child: ask politely, wait ``timeout_s``, then terminate → join → kill.

        Blocks for at most ``timeout_s`` + 2 × ``TIMING.kill_grace_s``.
        Idempotent; ``stats()`` stays available afterwards.
        """
        if self._state is not StressorState.RUNNING:
            return
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            self._before_stop()
            self._request_stop(deadline)
            left = _proc.end_processes(self._procs, polite_s=deadline - time.monotonic())
            if left:
                log.error("%s stressor: pids %s survived SIGKILL", self.kind, [p.pid for p in left])
        finally:
            self._t_stop = time.monotonic()
            self._after_stop()
            self._set_state(StressorState.STOPPED)

    def _spawn(self, spawn, target, args, name):
        proc = spawn(target, args, name)
        self._procs.append(proc)
        return proc

    def _proc_stats(self):
        return {
            "alive": sum(p.is_alive() for p in self._procs),
            "exitcodes": [p.exitcode for p in self._procs],
        }

    def _elapsed_s(self):
        if self._t_start is None:
            return 0.0
        return (self._t_stop or time.monotonic()) - self._t_start

    # hooks
    def _start(self, spawn):  # pragma: no cover - abstract
        raise NotImplementedError

    def _before_stop(self):
        pass

    def _request_stop(self, deadline):
        """Ask the children to exit; may wait for goodbyes until ``deadline`` (monotonic s)."""

    def _after_stop(self):
        pass

    def __enter__(self):
        if self._state is StressorState.NEW:
            raise UsageError(f"{self.kind} stressor: use `with stressor.start(spawn):`")
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def __repr__(self):
        return f"<{type(self).__name__} {self._state.value}: {self.describe()}>"


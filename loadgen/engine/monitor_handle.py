"""The master's handle on the monitor process (:class:`SystemResourceMonitor`, the seed's name): it
starts the process (``engine.monitor``), tells it what to watch and how the run is contained, and
stops it. The master reads the monitor's messages from ``conn`` in its own wait loop."""

from __future__ import annotations

import math
import os

from . import _proc
from ..config import ResourceThresholds
from ..errors import UsageError
from .messages import Contain, Stop, Unwatch, Watch
from .monitor import monitor_main

MIN_INTERVAL_S = 0.01


class SystemResourceMonitor:
    """The master's handle on the monitor process (the seed's class name).

    ::

        mon = SystemResourceMonitor(thresholds, interval_s=0.1)
        conn = mon.start()            # before the pool
        mon.watch(pid, create_time, pgid, role="worker")
        ... connection.wait([conn, ...]) → Sample / Breach / MonitorError
        mon.stop()

    ``interval_s``: sampling period, seconds, ≥ 0.01 (UsageError below).
    The monitor's CPU scales with it: ≈1.5 % of a core at 0.1 s with 50
    watched processes, ten times that at 0.01 s. ``process`` is the
    monitor's ``Process`` once started; ``conn`` the master's pipe end,
    which delivers one :class:`~loadgen.messages.Sample` per tick, a
    :class:`~loadgen.messages.Breach` after the monitor has killed the
    pool, and :class:`~loadgen.messages.MonitorError` if it crashes (then
    it exits with code 1).
    """

    def __init__(self, thresholds=None, interval_s=0.1):
        self.thresholds = thresholds if thresholds is not None else ResourceThresholds()
        try:
            interval_s = float(interval_s)
        except (TypeError, ValueError):
            raise UsageError(f"sample interval: expected seconds, got {interval_s!r}") from None
        if not (math.isfinite(interval_s) and interval_s >= MIN_INTERVAL_S):
            raise UsageError(f"sample interval: must be at least {MIN_INTERVAL_S} s, got {interval_s!r}")
        self.interval_s = interval_s
        self.process = None
        self.conn = None

    def start(self, ctx=None):
        """Start the monitor process; return the master's end of the pipe.

        ``ctx``: a ``multiprocess`` context (default: fork on Linux). The
        calling process is the master the monitor watches. Blocks only for
        the process start.
        """
        import multiprocess as mp

        if self.process is not None:
            raise RuntimeError("monitor already started")
        if ctx is None:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        me = os.getpid()
        proc = ctx.Process(
            target=monitor_main, name="loadgen-monitor", daemon=True,
            args=(child_conn, self.thresholds, self.interval_s, me, _proc.create_time(me)),
        )
        proc.start()
        child_conn.close()
        self.process, self.conn = proc, parent_conn
        return parent_conn

    def watch(self, pid, create_time=None, pgid=None, role="worker"):
        """Ask the monitor to watch (and, for a pool role, guard) ``pid``. Non-blocking.

        ``create_time``: UNIX seconds as psutil reports it (read now if None);
        the monitor ignores the pid unless it matches.
        """
        if create_time is None:
            create_time = _proc.create_time(pid)
        self._send(Watch(pid=pid, create_time=create_time, pgid=pgid, role=role))

    def unwatch(self, pid):
        """Ask the monitor to stop watching ``pid`` (it ended cleanly). Non-blocking."""
        self._send(Unwatch(pid=pid))

    def contain(self, spec):
        """Tell the monitor how the run is contained (``contain.ContainSpec``): if the master dies,
        it ends everything the run started. Non-blocking."""
        self._send(Contain(spec=spec))

    def _send(self, msg):
        """Send to the monitor; a no-op once it is gone (the master stops the run on its own)."""
        if self.conn is None:
            return
        try:
            self.conn.send(msg)
        except (OSError, ValueError):
            pass

    def receive(self, timeout_s=0.0):
        """Every message waiting on the pipe, waiting up to ``timeout_s`` for the first.

        A convenience for tests and simple callers; the master reads
        ``conn`` in its own wait loop instead.
        """
        out = []
        if self.conn.poll(timeout_s):
            while True:
                try:
                    out.append(self.conn.recv())
                except EOFError:
                    break
                if not self.conn.poll(0):
                    break
        return out

    def stop(self, timeout_s=2.0):
        """Stop the monitor: Stop, join, then terminate/kill if needed. Returns its exit code.

        Blocks up to ``timeout_s`` + ``TIMING.kill_grace_s`` (+ ``kill_wait_s`` for a process that
        will not die). Safe to call twice.
        """
        if self.process is None:
            return None
        self._send(Stop())
        _proc.end_processes([self.process], polite_s=timeout_s)
        code = self.process.exitcode
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        return code

    def __enter__(self):
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

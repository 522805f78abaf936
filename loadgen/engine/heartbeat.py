"""The master's pulse, in shared memory: the workers end the pool when the master stops serving them.

A stopped master (SIGSTOP, a debugger, a target that stops its parent) is
alive: PR_SET_PDEATHSIG never fires and the pool's pipes stay open, so a
worker would run on, unguarded, for ever. The master writes CLOCK_MONOTONIC
(system-wide, and it keeps counting while a process is stopped) into one
shared int64 every turn of its loop; each worker runs a watchdog thread that
reads it, and when the master has not written it for
``TIMING.master_silent_s`` the worker ends its whole process group — the
pool — with SIGKILL. A thread, not the worker's main loop: that loop blocks
in a send once the pipe to a master that stopped reading is full.

When the run pauses on Ctrl-Z the master stops the pool before itself, and
writes the heartbeat before it continues the pool: a paused run resumes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from ..config import TIMING


class Heartbeat:
    """One shared int64: the monotonic ns of the master's last turn. Made by the master's pool
    before the workers start (it crosses to them as a ``Process`` argument, fork or spawn)."""

    def __init__(self, ctx):
        # Without a context (a pool that starts no process: tests) the pulse stays in this process.
        self._at = ctx.RawArray("q", 1) if ctx is not None else [0]
        self.beat()

    def beat(self):
        """The master is serving its pool now."""
        self._at[0] = time.monotonic_ns()

    def age_s(self):
        """Seconds since the master's last :meth:`beat`."""
        return (time.monotonic_ns() - self._at[0]) / 1e9


def start_watchdog(heartbeat, master_pid, limit_s=None, poll_s=None):
    """In a worker: a daemon thread that ends the pool once ``heartbeat`` is older than ``limit_s``
    (default ``TIMING.master_silent_s``), looking every ``poll_s`` (``TIMING.worker_poll_s``).
    Returns the thread (None without a heartbeat)."""
    if heartbeat is None:
        return None
    limit_s = TIMING.master_silent_s if limit_s is None else limit_s
    poll_s = TIMING.worker_poll_s if poll_s is None else poll_s

    def watch():
        while True:
            time.sleep(poll_s)
            age = heartbeat.age_s()
            if age > limit_s:
                end_pool(master_pid, f"the master (pid {master_pid}) has not served the pool for {age:.1f} s "
                                     f"(stopped?): ending the pool")

    t = threading.Thread(target=watch, name="master-watchdog", daemon=True)
    t.start()
    return t


def end_pool(master_pid, why):
    """SIGKILL this worker's process group (the pool, and what its operations started in it) — never
    the master's group; then this process."""
    try:
        sys.stderr.write(f"loadgen worker {os.getpid()}: {why}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    try:
        own = os.getpgid(0)
        spared = {os.getpgid(master_pid) if master_pid else None, os.getpgid(os.getppid())}
    except OSError:  # the master is gone: PDEATHSIG ends us anyway
        own, spared = None, set()
    if own is not None and own not in spared:
        try:
            os.killpg(own, signal.SIGKILL)
        except OSError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)

"""SIGINT and SIGTERM for a whole command: recorded, and the running phase woken at once.

A :class:`SignalGate` is installed once around everything a command does
(its phases, the gaps between them, report writing), so a signal at any
moment stops the run gracefully and still leaves a report. The master's
loop blocks in ``connection.wait``; the gate writes a byte to a wake-up
pipe so that the wait returns the moment a signal arrives.
"""

from __future__ import annotations

import os
import signal
import threading

from ..errors import ExitCode


class SignalGate:
    """Records SIGINT/SIGTERM (:attr:`received`, in order) and wakes the phase that is running.

    :meth:`install` replaces the handlers (main thread only); :meth:`open_wakeup`
    gives the running phase a file descriptor that becomes readable on a signal.
    A Runner without its command's gate makes its own.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = []
        self._wake_r = self._wake_w = None
        self._old = None

    def install(self):
        """Install the handlers; True if installed (False off the main thread, or when installed already)."""
        if threading.current_thread() is not threading.main_thread() or self._old is not None:
            return False
        self._old = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return True

    def restore(self):
        """Put back the handlers :meth:`install` replaced."""
        if self._old:
            for s, h in self._old.items():
                signal.signal(s, h)
        self._old = None

    def open_wakeup(self):
        """A pipe's read end that becomes readable when a signal arrives (until :meth:`close_wakeup`);
        drain it with :meth:`drain`."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        return self._wake_r

    def close_wakeup(self):
        """Close the wake-up pipe (idempotent)."""
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), None, None
        for fd in fds:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def drain(self):
        """Empty the wake-up pipe after a wake-up. Never blocks for long (it holds a few bytes)."""
        if self._wake_r is not None:
            try:
                os.read(self._wake_r, 512)
            except OSError:
                pass

    def _handler(self, signum, frame):
        self.deliver(signum)

    def deliver(self, signum):
        """Record ``signum`` and wake the running phase: what the signal handler does (tests and
        embedding code may call it to stop a run as a signal would)."""
        self.received.append(signum)
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"!")
            except OSError:
                pass

    @property
    def exit_code(self):
        """130 or 143 for the first signal received, None if none."""
        if not self.received:
            return None
        return ExitCode.of_signal(self.received[0])

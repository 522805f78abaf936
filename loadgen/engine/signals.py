"""Signals for a whole command: the ones that stop a run recorded, the running phase woken at once;
Ctrl-Z pauses the whole run.

A :class:`SignalGate` is installed once around everything a command does
(its phases, the gaps between them, report writing), so a signal at any
moment stops the run gracefully and still leaves a report. The master's
loop blocks in ``connection.wait``; the gate writes a byte to a wake-up
pipe so that the wait returns the moment a signal arrives.

Stopping signals (:data:`~loadgen.errors.STOP_SIGNALS`): SIGINT, SIGTERM,
SIGHUP (an ssh session dropped), SIGUSR1, SIGUSR2, SIGALRM — each drains the
run, writes every report, and the command exits 128 + the signal.

SIGTSTP (Ctrl-Z) pauses the whole run, as a shell user expects: the workers
run in a process group of their own, which the terminal does not stop, so
the gate stops them first (each registered :class:`Pausable`), then the
master itself; on SIGCONT (``fg``, ``bg``, ``kill -CONT``) it continues them.
The pool is never left running unguarded while the master and the monitor
are stopped.

Children (workers, the monitor) start with :func:`child_signals`: a forked
child inherits the master's Python handlers, which must not run there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from ..errors import STOP_SIGNALS, ExitCode


class Pausable:
    """What the gate stops before the master stops itself on SIGTSTP, and continues after SIGCONT.

    Both run inside a signal handler of the master's main thread: they may only send signals and
    set plain attributes (no file writes, no locks the interrupted code may hold)."""

    def pause(self):
        """Stop what must not run while the master is stopped."""

    def resume(self):
        """Continue what :meth:`pause` stopped."""


class SignalGate:
    """Records the stopping signals (:attr:`received`, in order) and wakes the phase that is running;
    pauses the registered :attr:`pausables` and the master on SIGTSTP.

    :meth:`install` replaces the handlers (main thread only); :meth:`open_wakeup`
    gives the running phase a file descriptor that becomes readable on a signal.
    A Runner without its command's gate makes its own.
    """

    SIGNALS = STOP_SIGNALS
    PAUSE = signal.SIGTSTP

    def __init__(self):
        self.received = []
        self.pausables = []  # Pausable: paused on SIGTSTP, in order; resumed in reverse order
        self.pauses = 0  # SIGTSTPs acted on
        self._wake_r = self._wake_w = None
        self._old = None

    def install(self):
        """Install the handlers; True if installed (False off the main thread, or when installed already)."""
        if threading.current_thread() is not threading.main_thread() or self._old is not None:
            return False
        self._old = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        self._old[self.PAUSE] = signal.signal(self.PAUSE, self._on_pause)
        return True

    @classmethod
    @contextlib.contextmanager
    def around(cls):
        """``with SignalGate.around() as gate:`` — a gate installed for the block (from before a command
        claims its run directory: a signal the moment the directory exists still leaves a report)."""
        gate = cls()
        installed = gate.install()
        try:
            yield gate
        finally:
            if installed:
                gate.restore()

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
        if signum == signal.SIGHUP:
            release_hung_up_console()
        self.deliver(signum)

    def deliver(self, signum):
        """Record ``signum`` and wake the running phase: what the signal handler does (tests and
        embedding code may call it to stop a run as a signal would)."""
        self.received.append(signum)
        self._wake()

    def _wake(self):
        if self._wake_w is not None:
            try:
                os.write(self._wake_w, b"!")
            except OSError:
                pass

    def _on_pause(self, signum, frame):
        self.pause_here()

    def pause_here(self):
        """What SIGTSTP does: pause every registered :class:`Pausable`, stop this process (SIGSTOP:
        the shell sees the job stopped), and once continued resume them in reverse order and wake
        the running phase. Returns after the SIGCONT."""
        self.pauses += 1
        paused = list(self.pausables)
        for p in paused:
            p.pause()
        try:
            os.kill(os.getpid(), signal.SIGSTOP)  # returns once continued
        finally:
            for p in reversed(paused):
                p.resume()
            self._wake()

    @property
    def exit_code(self):
        """128 + the first stopping signal received (130, 143, 129 …), None if none."""
        if not self.received:
            return None
        return ExitCode.of_signal(self.received[0])


def release_hung_up_console():
    """After a terminal hangup (an ssh session that dropped), stdin, stdout and stderr that were that
    terminal fail every read and write with EIO: the drain's progress lines and the final summary would
    end the run with an error instead of its reports. Each such fd is pointed at /dev/null; a console
    still there (a ``kill -HUP``) is left alone. Never raises."""
    import errno
    import termios

    null = None
    try:
        for fd in (0, 1, 2):
            try:
                termios.tcgetattr(fd)
                continue  # a terminal that still answers
            except termios.error as e:
                if not e.args or e.args[0] != errno.EIO:
                    continue  # not a terminal (a file, a pipe): it did not hang up
            except OSError:
                continue
            if null is None:
                null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, fd)
    except OSError:
        pass
    finally:
        if null is not None:
            os.close(null)


def child_signals(ignore_pause=False):
    """A child process's signals (a worker, the monitor): the master's Python handlers, inherited
    through fork, must not run there. Ctrl-C and the other stopping signals are ignored (only the
    master acts on them: a terminal's hangup or Ctrl-C reaches the monitor too, and must not end
    the run's guard); SIGTERM is the default, at once, without Python cleanup that could hang.
    SIGTSTP: the default, or ignored with ``ignore_pause`` (the monitor: the master stops it,
    after the pool, when the run pauses). Main thread only; a no-op elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in STOP_SIGNALS:
        if s != signal.SIGTERM:
            signal.signal(s, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGTSTP, signal.SIG_IGN if ignore_pause else signal.SIG_DFL)

"""A plan's scenarios at the same time (``parallel = true``, as k6 runs its scenarios): one report.

Each entry runs in a process of its own, started (forked) by the command's process: a master as
any other — its own pool, monitor, load model, containment, signal handling — whose phases are
named ``LABEL: PHASE`` in the run directory's streams (each record is one append, so the entries'
lines interleave whole). It sends its result back over a pipe; the command's process waits for
all of them, then reports every entry as a component, in the plan's order, as a sequential plan
does.

Signals: the entries sit in their own process groups, so a terminal's Ctrl-C reaches the command's
process only, which passes each stopping signal (SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGALRM)
on to every entry once (a second SIGINT is a second one for each entry). Ctrl-Z (SIGTSTP) is passed
on too, before the command's process stops itself: each entry pauses its own pool and monitor and
stops; SIGCONT continues the entries. An entry process that dies without a result is reported as a failed component
naming its exit; whatever it left running is ended by the command's process, a child subreaper for
the plan's whole life (``engine.contain``). If the command's process is SIGKILLed, every entry gets
SIGTERM from the kernel (``PR_SET_PDEATHSIG``) and stops as on a signal, its streams kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal

from .engine.signals import Pausable
from .errors import ExitCode, UsageError

log = logging.getLogger("loadgen.parallel")

RESULT_WAIT_S = 5.0  # after an entry's process ended: how long its last message may take to arrive


def run_parallel(entries, session, kind):
    """Run plan ``entries`` at once in ``session`` (the plan's: run directory, gate, progress);
    returns their results in order. Blocks until every entry ended."""
    from multiprocess.connection import wait

    from .engine.contain import Containment
    from .engine.pool import get_context

    ctx = get_context("fork")
    contain = Containment(cgroups=False).start()
    running = []
    pause = None
    try:
        for entry in entries:
            r, w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_entry_main, args=(entry, session, kind, w, os.getpid()),
                            name=f"loadgen-entry-{entry.label}")
            p.start()
            w.close()
            running.append(_Running(entry, p, r))
        if session.gate is not None:  # after the forks: an entry's copy of the gate must not pause its siblings
            pause = _PassPause(running)
            session.gate.pausables.append(pause)
        forwarded = 0
        gate = session.gate
        while any(x.result is None and not x.gone for x in running):
            if gate is not None and len(gate.received) > forwarded:
                for signum in gate.received[forwarded:]:
                    for x in running:
                        if x.process.is_alive():
                            _kill(x.process.pid, signum)
                forwarded = len(gate.received)
            waiting = [x for x in running if x.result is None and not x.gone]
            ready = wait([x.conn for x in waiting] + [x.process.sentinel for x in waiting], timeout=0.2)
            for x in waiting:
                if x.conn in ready or x.process.sentinel in ready:
                    x.collect()
        for x in running:
            x.process.join(RESULT_WAIT_S)
    finally:
        if pause is not None:
            session.gate.pausables.remove(pause)
        for x in running:
            if x.process.is_alive():
                _kill(x.process.pid, signal.SIGCONT)  # one left stopped would not die of SIGTERM
                _kill(x.process.pid, signal.SIGKILL)
                x.process.join(RESULT_WAIT_S)
        contain.sweep()
        contain.close()
    usage = next((x.result for x in running if isinstance(x.result, UsageError)), None)
    if usage is not None:
        raise usage
    results = []
    for x in running:
        result, interrupted, aborted, contained = x.result or (_lost(x), None, None, [])
        session.contained.extend(contained)
        if interrupted is not None:
            session.interrupted = interrupted
        if aborted is not None:
            session.aborted = aborted
        results.append(result)
    return results


class _PassPause(Pausable):
    """Ctrl-Z of a parallel plan (run in the command's signal handler): each entry pauses itself (its
    own gate stops its pool and monitor, then the entry), and continues on SIGCONT."""

    def __init__(self, running):
        self.running = running

    def _send(self, sig):
        for x in self.running:
            if x.result is None and not x.gone and x.process.exitcode is None:
                _kill(x.process.pid, sig)

    def pause(self):
        self._send(signal.SIGTSTP)

    def resume(self):
        self._send(signal.SIGCONT)


@dataclasses.dataclass
class _Running:
    entry: object
    process: object
    conn: object
    result: tuple | None = None
    gone: bool = False

    def collect(self):
        """Take the entry's result if it sent one; note its end when its process is gone without one."""
        try:
            if self.conn.poll():
                self.result = self.conn.recv()
                return
        except (EOFError, OSError):
            pass
        if not self.process.is_alive():
            # A result sent just before the exit may still be on its way.
            try:
                if self.conn.poll(RESULT_WAIT_S if self.process.exitcode == 0 else 0.2):
                    self.result = self.conn.recv()
                    return
            except (EOFError, OSError):
                pass
            self.gone = True


def _entry_main(entry, session, kind, conn, parent):
    """An entry's process: its own process group, SIGTERM if the command's process dies, then the entry."""
    from .engine import _proc
    from .streams import note_component, note_scenario

    os.setpgid(0, 0)
    _proc.set_title(f"loadgen: entry {entry.label}")
    _proc.set_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent:  # the command's process died before the line above
        os._exit(ExitCode.SIGTERM)
    session = dataclasses.replace(session, phase_prefix=f"{entry.label}: ", contained=[])
    note_scenario(session, entry, kind)
    try:
        result = entry.run(session)
    except UsageError as e:  # found once running (a target whose calls return no result): the command's error
        conn.send(e)
        conn.close()
        return
    note_component(session, result)
    conn.send((result, session.interrupted, session.aborted, session.contained))
    conn.close()


def _lost(x):
    """The component of an entry whose process died without a result."""
    from .result import StressTestResult

    code = x.process.exitcode
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
    reason = f"the entry's process ended without a result ({how}); its streams keep what it measured"
    return StressTestResult(test_name=x.entry.label, success=False, duration_seconds=0.0, max_concurrent_operations=0,
                            peak_memory_mb=0.0, peak_cpu_percent=0.0, total_operations=0, successful_operations=0,
                            failed_operations=0, throughput_ops_per_sec=0.0, error_messages=[reason],
                            stop_reason=reason, exit_code=ExitCode.FAILED, key_metric=(x.entry.key_metric, None))


def _kill(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass

"""Exit codes and the one exception tree of loadgen.

:class:`ExitCode` holds every code a command can end with and the order in
which they win when several apply (:meth:`ExitCode.worst`). Every error
loadgen raises on purpose descends from :class:`LoadgenError` and carries
the data that explains it; the CLI maps the tree to exit codes in one
place (``cli.main``).
"""

import enum
import signal


class ExitCode(enum.IntEnum):
    """What a run or command ends with (DESIGN §10)."""

    OK = 0  # every criterion passed
    FAILED = 1  # a criterion failed (or a worker restart limit, or a lost abort criterion)
    USAGE = 2  # bad usage, configuration or target: one clear line, no traceback
    BREACH = 3  # stopped by a safety breach its scenario did not expect, or the monitor was lost
    DEGRADED = 4  # a fleet run lost a shard: its totals miss a machine
    # Stopped by a signal: 128 + its number, as a shell reports a process the signal killed. Each
    # stops a run as SIGTERM does (drain, every report written).
    SIGHUP = 129  # the terminal hung up (an ssh session dropped)
    SIGINT = 130  # interrupted by SIGINT (Ctrl-C)
    SIGUSR1 = 138
    SIGUSR2 = 140
    SIGALRM = 142
    SIGTERM = 143  # terminated by SIGTERM

    __str__ = int.__repr__  # "3", not "ExitCode.BREACH", wherever a code is printed

    @classmethod
    def of_signal(cls, signum):
        """128 + ``signum`` for a signal that stops a run (:data:`STOP_SIGNALS`), 143 (SIGTERM) for any other."""
        try:
            return cls(128 + int(signum)) if int(signum) in STOP_SIGNALS else cls.SIGTERM
        except ValueError:
            return cls.SIGTERM

    @classmethod
    def is_signal(cls, code):
        """True for a code that says a signal stopped the run (129, 130, 138, 140, 142, 143)."""
        return code is not None and int(code) in _SIGNAL_CODES

    @classmethod
    def worst(cls, codes):
        """The code a run ends with when ``codes`` all apply: the first of :data:`PRIORITY`
        present (an unknown code outranks none of them but 0; the highest unknown wins then);
        0 for no codes."""
        present = {int(c) for c in codes}
        for code in PRIORITY:
            if code in present:
                return code
        return max(present, default=cls.OK)


#: When several codes apply, the first one present wins: bad usage says the run did not measure what was
#: asked; a signal says a person stopped it; a lost shard qualifies everything the fleet measured; a breach
#: or a failed criterion is a verdict on the measurement.
PRIORITY = (ExitCode.USAGE, ExitCode.SIGTERM, ExitCode.SIGHUP, ExitCode.SIGUSR1, ExitCode.SIGUSR2, ExitCode.SIGALRM,
            ExitCode.SIGINT, ExitCode.DEGRADED, ExitCode.BREACH, ExitCode.FAILED, ExitCode.OK)

#: The signals that stop a run gracefully (drain, reports, exit 128 + the signal), in every command.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
_SIGNAL_CODES = frozenset(128 + int(s) for s in STOP_SIGNALS)


class LoadgenError(Exception):
    """Base of every error loadgen raises on purpose; :attr:`exit_code` is the command's code."""

    exit_code = ExitCode.FAILED


class UsageError(LoadgenError):
    """Bad usage, configuration or target: exit code 2, one clear line."""

    exit_code = ExitCode.USAGE


class TargetError(UsageError):
    """A ``--target`` that cannot be imported, found or called."""


class OutputError(UsageError):
    """The output directory cannot be created or written."""


class ClusterError(UsageError):
    """The Dask scheduler at ``address`` cannot run a fleet (unreachable, no worker, loadgen missing)."""

    def __init__(self, address, message):
        self.address = address
        super().__init__(f"--cluster {address}: {message}")


class StressorFailed(LoadgenError):
    """A stressor child reported an error or died before it was ready."""


class WorkerCrashed(LoadgenError):
    """Worker ``index`` (``pid``) died with ``exitcode`` while ``in_flight`` operations ran.

    Raised nowhere by the engine (a crash is counted and the worker replaced);
    it names the crash in events, reports and the stop reason of a run that hit
    its restart limit.
    """

    def __init__(self, index, pid, exitcode, in_flight=0):
        self.index, self.pid, self.exitcode, self.in_flight = index, pid, exitcode, in_flight
        self.hint = crash_hint(exitcode)
        super().__init__(f"worker {index} (pid {pid}) died with {describe_exitcode(exitcode)}"
                         + (f": {self.hint}" if self.hint else ""))


class ThresholdBreached(LoadgenError):
    """The monitor killed the pool because ``metric`` = ``value`` passed ``limit``."""

    exit_code = ExitCode.BREACH

    def __init__(self, metric, value, limit):
        self.metric, self.value, self.limit = metric, value, limit
        super().__init__(f"threshold breached: {metric} = {value:.1f} > {limit:.1f}")


def describe_exitcode(exitcode):
    """Human words for a process exit code (negative = killed by signal)."""
    if exitcode is None:
        return "no exit code (still running?)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"{name} (signal {-exitcode})"
    return f"exit code {exitcode}"


SLOT_DIED_EXITCODE = 70  # a worker whose slot died of loadgen's own error exits so (EX_SOFTWARE, sysexits.h)


def crash_hint(exitcode):
    """A guess at why a process died, for the crash report ("" when there is none)."""
    if exitcode == SLOT_DIED_EXITCODE:
        return "a slot of the worker died of an error of loadgen's own (the traceback is in workers.log)"
    if exitcode == -signal.SIGSEGV:
        return "segmentation fault in native code"
    if exitcode == -signal.SIGKILL:
        return "killed with SIGKILL (an OOM kill, the monitor, or an operator)"
    if exitcode == -signal.SIGABRT:
        return "aborted (assertion in native code?)"
    if exitcode is not None and exitcode > 0:
        return "the process exited on its own (sys.exit / os._exit in the target?)"
    return ""

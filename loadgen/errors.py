"""One exception tree for loadgen, rooted at :class:`LoadgenError`.

Every error carries the data that explains it; the CLI maps the tree to
exit codes in one place (``cli.main``).
"""


class LoadgenError(Exception):
    """Base of every error loadgen raises on purpose."""


class UsageError(LoadgenError):
    """Bad usage, configuration or target: exit code 2, one clear line."""


class TargetError(UsageError):
    """A ``--target`` that cannot be imported, found or called."""


class OutputError(UsageError):
    """The output directory cannot be created or written."""




def describe_exitcode(exitcode):
    """Human words for a process exit code (negative = killed by signal)."""
    import signal

    if exitcode is None:
        return "no exit code (still running?)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"{name} (signal {-exitcode})"
    return f"exit code {exitcode}"


def crash_hint(exitcode):
    """A guess at why a process died, for the crash report."""
    import signal

    if exitcode == -signal.SIGSEGV:
        return "segmentation fault in native code"
    if exitcode == -signal.SIGKILL:
        return "killed with SIGKILL (an OOM kill, the monitor, or an operator)"
    if exitcode == -signal.SIGABRT:
        return "aborted (assertion in native code?)"
    if exitcode is not None and exitcode > 0:
        return "the process exited on its own (sys.exit / os._exit in the target?)"
    return ""

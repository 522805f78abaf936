"""A pytest plugin that fails a test which leaves a process behind.

At session start the pytest process becomes a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``, Linux): a descendant orphaned by its
parent's death (a target's ``setsid()`` child, a double fork, the workers of
a killed master) is reparented to pytest instead of init, so
``psutil.Process().children(recursive=True)`` still finds it.

After each test the autouse ``reap_children`` fixture lists the live
descendants (multiprocess's ``resource_tracker``, which lives for the
session by design, and zombies excepted), gives them a moment to finish
exiting, kills and waits for the rest, reaps the zombies reparented to
pytest, and fails the test naming each survivor's pid, name and command line.

Loaded by ``tests/conftest.py`` (``pytest_plugins``); an inner pytest run
(pytester) loads it with ``-p _reaping``.
"""

import ctypes
import multiprocessing.process
import os
import sys
import time
import warnings

import psutil
import pytest

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
# A process that is already dying when the test ends (a signal on its way, PR_SET_PDEATHSIG
# firing, its parent reaping it) is not a leak: it gets this long to go on its own.
SETTLE_S = 1.0
KILL_WAIT_S = 3.0


def make_subreaper():
    """Make this process the child subreaper of its descendants; True when it is (Linux only).
    ctypes directly (as ``loadgen.engine._proc._prctl`` does), so the tests do not lean on it."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    ul = ctypes.c_ulong
    return libc.prctl(ctypes.c_int(PR_SET_CHILD_SUBREAPER), ul(1), ul(0), ul(0), ul(0)) == 0


def pytest_sessionstart(session):
    if not make_subreaper() and sys.platform.startswith("linux"):
        warnings.warn(pytest.PytestWarning(
            f"prctl(PR_SET_CHILD_SUBREAPER) failed ({os.strerror(ctypes.get_errno())}): orphaned "
            "grandchildren go to init and the reaper cannot see them"))


# ---------------------------------------------------------------- looking at processes


def alive(p):
    """Running and not a zombie (and still the process ``p`` was: psutil compares the create time)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmdline(p):
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def is_resource_tracker(p):
    """multiprocess's resource tracker lives as long as the test process, by design."""
    return "resource_tracker" in cmdline(p)


def describe(p):
    try:
        name = p.name()
    except psutil.Error:
        name = "?"
    return f"pid {p.pid} ({name}): {cmdline(p) or '?'}"


def descendants():
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def survivors(exclude=None):
    """Live descendants of this process, resource trackers and ``exclude(p)`` excepted."""
    return [p for p in descendants() if alive(p) and not is_resource_tracker(p) and not (exclude and exclude(p))]


def _held_by_multiprocessing():
    """Pids of the children a multiprocessing / multiprocess Process object of this process still
    owns: their exit status is theirs to collect (a nanny restarting its Dask worker, a pool)."""
    pids = set()
    modules = [multiprocessing.process]
    mp = sys.modules.get("multiprocess.process")
    if mp is not None:
        modules.append(mp)
    for module in modules:
        for child in list(getattr(module, "_children", ())):
            popen = getattr(child, "_popen", None)
            if popen is not None and getattr(popen, "returncode", None) is None:
                pids.add(popen.pid)
    return pids


def reap_zombies():
    """Collect the exit status of zombies that are this process's children (reparented orphans,
    killed leftovers); never ``waitpid(-1)``, and never a child a multiprocessing object owns."""
    me = os.getpid()
    held = _held_by_multiprocessing()
    for p in descendants():
        try:
            if p.pid in held or p.ppid() != me or p.status() != psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        try:
            os.waitpid(p.pid, os.WNOHANG)
        except ChildProcessError:
            pass


def wait_gone(procs, timeout):
    """Until none of ``procs`` is alive (zombies reaped as they appear) or ``timeout``; the rest."""
    deadline = time.monotonic() + timeout
    while True:
        reap_zombies()
        left = [p for p in procs if alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


def kill_all(procs, timeout=KILL_WAIT_S):
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    return wait_gone(procs, timeout)


def check_and_reap(exclude=None, settle_s=SETTLE_S):
    """Kill and reap what the test left; return the descriptions of the live survivors found."""
    left = survivors(exclude)
    if left:
        left = wait_gone(left, settle_s)
    found = [describe(p) for p in left]
    stubborn = kill_all(left)
    reap_zombies()
    if stubborn:
        found.append("and could not kill: " + ", ".join(describe(p) for p in stubborn))
    return found


@pytest.fixture(autouse=True)
def reap_children():
    """After each test: kill and reap whatever the test left behind, and fail the test if anything
    was still alive (a worker, a stressor, a monitor, a target's detached grandchild)."""
    yield
    found = check_and_reap()
    if found:
        pytest.fail("the test left process(es) behind (killed now):\n  " + "\n  ".join(found), pytrace=False)

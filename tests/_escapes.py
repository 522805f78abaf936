"""Operations that detach processes from the pool, every way a real codebase does, for the
containment tests (``tests/faults/test_containment.py``).

Each escapee appends ``pid start_ticks`` to ``pidfile`` (start ticks from ``/proc/PID/stat``), so a
test can tell, by identity, whether that very process is still alive after the run. ``marker``
(a file created with O_EXCL) makes a fault happen once per run, in one worker.
"""

import os
import signal
import subprocess
import sys
import time

from _targets import _first  # the once-per-run marker

# A detached child that clears its PDEATHSIG, leads a new session and ignores SIGTERM.
_STUBBORN = (
    "import ctypes, os, signal, sys, time\n"
    "ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)\n"
    "os.setsid()\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1], 'a').write(f'{os.getpid()} {open(f\"/proc/{os.getpid()}/stat\").read().rsplit(\")\", 1)[1].split()[19]}\\n')\n"
    "time.sleep(600)\n"
)


def start_ticks(pid):
    """Field 22 of /proc/PID/stat (process start, clock ticks after boot)."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])


def record(pidfile, pid):
    with open(pidfile, "a") as f:
        f.write(f"{pid} {start_ticks(pid)}\n")


def popen_setsid(pidfile):
    p = subprocess.Popen(["sleep", "600"], start_new_session=True)
    record(pidfile, p.pid)


def popen_group0(pidfile):
    p = subprocess.Popen(["sleep", "600"], process_group=0)
    record(pidfile, p.pid)


def setpgid_then_spawn(pidfile):
    """The worker leaves the pool's process group itself, then spawns a child there."""
    os.setpgid(0, 0)
    p = subprocess.Popen(["sleep", "600"])
    record(pidfile, p.pid)


def double_fork(pidfile):
    """Child ``setsid()``s and forks; the grandchild execs ``sleep`` and is reparented when the child exits."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            gpid = os.fork()
            if gpid == 0:
                os.execvp("sleep", ["sleep", "600"])
            os.write(w, f"{gpid}\n".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        gpid = int(f.read().strip())
    os.waitpid(pid, 0)
    record(pidfile, gpid)


def stubborn(pidfile):
    """A child that clears its PDEATHSIG, leads its own session and ignores SIGTERM."""
    subprocess.Popen([sys.executable, "-c", _STUBBORN, pidfile])
    time.sleep(0.3)  # it records itself


def fork_no_exec(pidfile):
    """A forked copy of the worker (no exec) that leads a new session and sleeps: it holds every fd
    the worker had (its pipe to the master, its sentinel) unless loadgen closes them."""
    pid = os.fork()
    if pid == 0:
        os.setsid()
        while True:
            time.sleep(600)
    record(pidfile, pid)


CASES = {
    "popen_setsid": popen_setsid,
    "popen_group0": popen_group0,
    "setpgid_then_spawn": setpgid_then_spawn,
    "double_fork": double_fork,
    "stubborn": stubborn,
    "fork_no_exec": fork_no_exec,
}


_held = []


def escape(inputs=None, how="all", pidfile="", marker="", ms=5, hold_mb=0):
    """On the first operation of the run (``marker``), detach one process per case in ``how``
    (comma-separated names of :data:`CASES`, or ``all``); then behave (sleep ``ms``), holding
    ``hold_mb`` more MB after each operation (to breach a memory limit)."""
    if marker and _first(marker):
        names = list(CASES) if how == "all" else how.split(",")
        for name in names:
            CASES[name](pidfile)
    elif hold_mb:
        _held.append(b"x" * int(hold_mb * 2**20))
    time.sleep(ms / 1000)


def fork_every_op(inputs=None, ms=2):
    """``os.fork()`` in every operation; both copies return (the copy into loadgen's slot loop)."""
    os.fork()
    time.sleep(ms / 1000)


def survivors(pidfile):
    """The escapees recorded in ``pidfile`` that are still alive (not zombies) as themselves."""
    left = []
    try:
        lines = open(pidfile).read().split()
    except FileNotFoundError:
        return left
    for pid, ticks in zip(lines[::2], lines[1::2]):
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if rest[0] != "Z" and rest[19] == ticks:
            left.append(int(pid))
    return left


def kill_survivors(pidfile):
    for pid in survivors(pidfile):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def keep_escaping(inputs=None, pidfile="", ms=20):
    """Every operation detaches a new ``sleep`` (double fork + ``setsid``): some are always younger
    than the monitor's last scan when the master is killed."""
    double_fork(pidfile)
    time.sleep(ms / 1000)

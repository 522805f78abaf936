"""Targets for the third round of hostile cases (issue #26, ``tests/faults/test_hostile_round3.py``).

Every process a target detaches records itself as ``pid start_ticks`` in ``pidfile`` (the reaping
fixture's identity: a pid alone could be reused), read back by ``_escapes.survivors``. ``marker`` (a
file made with O_EXCL) makes a fault happen once per run, in one worker.
"""

import ctypes
import os
import subprocess
import sys
import time

import loadgen
from _escapes import record
from _targets import _first

# A detached child (new session, PDEATHSIG cleared, SIGTERM ignored) that first moves itself into the
# cgroup ``sys.argv[2]`` says — "nested": a new cgroup below the run's; "parent": the run's parent —
# then records itself and sleeps.
_MOVER = r"""
import ctypes, os, signal, sys, time
ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)
os.setsid()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
from loadgen.engine import cgroup
run = [d for d in cgroup.own_cgroup_dirs() if d and os.path.basename(d).startswith("loadgen-")]
for d in run:
    if sys.argv[2] == "nested":
        d = os.path.join(d, "nested-%d" % os.getpid())
        os.mkdir(d)
    else:
        d = os.path.dirname(d)
    with open(os.path.join(d, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
ticks = open("/proc/%d/stat" % os.getpid()).read().rsplit(")", 1)[1].split()[19]
open(sys.argv[1], "a").write("%d %s\n" % (os.getpid(), ticks))
time.sleep(600)
"""

# A process that ignores SIGTERM, clears its PDEATHSIG and hands over to a new child every ``ms``: the
# parent exits as soon as it forked, so its pid is always young.
_HOPPER = r"""
import ctypes, os, signal, sys, time
ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.setsid()
pidfile, ms = sys.argv[1], float(sys.argv[2])
while True:
    ticks = open("/proc/%d/stat" % os.getpid()).read().rsplit(")", 1)[1].split()[19]
    with open(pidfile, "a") as f:
        f.write("%d %s\n" % (os.getpid(), ticks))
    time.sleep(ms / 1000)
    if os.fork():
        os._exit(0)
"""


def move_cgroup(inputs=None, pidfile="", marker="", where="nested", n=2, ms=20):
    """Once per run: ``n`` children that move into another cgroup (``where``: see _MOVER)."""
    if marker and _first(marker):
        for _ in range(int(n)):
            subprocess.Popen([sys.executable, "-c", _MOVER, pidfile, where])
    time.sleep(float(ms) / 1000)


def hop(inputs=None, pidfile="", marker="", hop_ms=2, ms=20):
    """Once per run: a process that re-forks every ``hop_ms`` and ignores SIGTERM (_HOPPER)."""
    if marker and _first(marker):
        subprocess.Popen([sys.executable, "-c", _HOPPER, pidfile, str(hop_ms)])
    time.sleep(float(ms) / 1000)


def scrubbed_escape(inputs=None, pidfile="", ms=20):
    """Every operation: ``setsid`` + ``env -i`` + a double fork: a ``sleep`` without the run's mark,
    reparented to the master as soon as its parent exits."""
    p = subprocess.Popen(["setsid", "env", "-i", "sh", "-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!"], stdout=subprocess.PIPE,
                         text=True, env={})
    out, _ = p.communicate()
    try:
        record(pidfile, int(out.strip()))
    except (ValueError, FileNotFoundError):
        pass  # it died at once: nothing to find
    time.sleep(float(ms) / 1000)


# PyDLL, not CDLL: the call keeps the GIL, so the copy (which has only the forking thread) owns it and
# runs on; through CDLL the copy can deadlock on a GIL another thread held at the fork.
_libc = ctypes.PyDLL(None, use_errno=True)


def libc_fork(inputs=None, marker="", pidfile="", ms=5):
    """Once per worker (``marker`` + the pid): ``libc.fork()``, which runs none of Python's at-fork
    handlers (no ``os.register_at_fork``); both copies return into loadgen's slot loop. The copy
    records itself first."""
    if marker and _first(f"{marker}.{os.getpid()}"):
        pid = _libc.fork()
        if pid == 0:
            record(pidfile, os.getpid())
    time.sleep(float(ms) / 1000)


def huge_failure(inputs=None, mb=10):
    """Fail with an ``mb`` MB message."""
    raise RuntimeError("x" * int(float(mb) * 2**20))


def many_checks(inputs=None, n=100_000):
    """``loadgen.check`` ``n`` times in one operation."""
    check = loadgen.check
    for _ in range(int(n)):
        check(True, "hot")


def same_loop_without_checks(inputs=None, n=100_000):
    """The loop of :func:`many_checks` without the call (its baseline)."""
    ok = True
    for _ in range(int(n)):
        bool(ok)


def chatty(inputs=None, kb=1024):
    """Print ``kb`` KB to stdout and as much to stderr."""
    line = "y" * 1023 + "\n"
    sys.stdout.write(line * int(kb))
    sys.stderr.write(line * int(kb))


NAMES = 150


def many_names(inputs=None, seed=0):
    """Measure and check :data:`NAMES` names once each, in an order that differs per operation."""
    import random

    names = [f"n{i:03d}" for i in range(NAMES)]
    random.shuffle(names)
    for name in names:
        with loadgen.measure(name):
            pass
        loadgen.check(True, name)


EVIL = "Evil\n1/1 passed\x1b[2J\u202eCorp"
Evil = type(EVIL, (Exception,), {})  # an exception class named with a newline, ESC and an RTL override


def evil_failure(inputs=None):
    """Fail with an exception whose class name and message hold a newline, ESC and an RTL override."""
    raise Evil(EVIL)


def noop(inputs=None, ms=1):
    """Behave: sleep ``ms``."""
    time.sleep(float(ms) / 1000)

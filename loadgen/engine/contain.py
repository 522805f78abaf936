"""Containment: every process a run starts, and every process those start, ends with the run.

An operation may detach what it starts every way a real codebase does: a new session
(``start_new_session``), a new process group, a double fork, a cleared PDEATHSIG, a fork without
exec. None of these leaves the two nets below:

subreaper (always, no privileges)
    During a run the master is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``, as tini and
    dumb-init are): an orphan is reparented to the master, not to init, so everything the pool
    started stays a descendant of the master while it lives. At the end, :meth:`Containment.sweep`
    ends every descendant the run started (SIGTERM, a short grace, then SIGKILL, round after round
    until none is left; each signal checked by pid + start time) and reaps them.

cgroup (where this machine lets loadgen make one)
    A per-run cgroup created *below* the cgroups the master already runs in (never elsewhere: the
    limits above keep applying), which every worker and stressor joins before it runs anything.
    No process leaves a cgroup by forking or detaching, so the end is exact: ``cgroup.kill`` on
    cgroup v2, freeze → SIGKILL every member → thaw on v1 (the freezer). The cgroup also gives the
    pool's true CPU (v2 ``cpu.stat``) and memory (a v1 ``memory`` child, or v2 ``memory.current``
    where the controller is enabled): :meth:`~.cgroup.RunCgroup.usage`.

The master's own SIGKILL leaves nobody in the master to sweep: the monitor survives it (it gets
SIGUSR1 by PDEATHSIG) and sweeps with what :class:`ContainSpec` told it — the cgroup, else every
descendant it has seen (:class:`Tracker`: a ``/proc`` scan every :data:`SCAN_S`, pid + start ticks).
A run's cgroup left behind by a master *and* monitor both killed is removed by the next run
(:func:`~.cgroup.sweep_stale`). The cgroup file system itself is ``engine.cgroup``.

``report.json`` names the mechanism a run used (``containment.mechanism``).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, field

from . import _proc, _procfs
from ..config import TIMING
from .cgroup import SWEEP_S, RunCgroup, make_cgroup, sweep_stale

log = logging.getLogger("loadgen.contain")

SCAN_S = 0.5  # the monitor's /proc scan for descendants (subreaper mechanism only)
# The run's mark in the environment of every process it starts (inherited by what they start, unless an
# operation scrubs its environment): ``<master pid>-<its start ticks>``. The monitor's sweep after the
# master's death finds by it what was born after its last scan (:func:`marked`).
MARK_ENV = "LOADGEN_RUN"

SUBREAPER = "subreaper"
STOPPED_STATES = ("T", "t")  # /proc/PID/stat states of a stopped (or traced and stopped) process


# ---------------------------------------------------------------- descendants


def descendants(root, exclude=(), table=None):
    """The processes below ``root`` (pid → :class:`~._procfs.StatInfo`), zombies included; the
    subtrees of ``exclude`` (pids) are left out. One ``/proc`` scan unless ``table`` is given."""
    table = _procfs.process_table() if table is None else table
    children = {}
    for pid, st in table.items():
        children.setdefault(st.ppid, []).append(pid)
    out, todo, skip = {}, [root], set(exclude)
    while todo:
        for pid in children.get(todo.pop(), ()):
            if pid in skip or pid in out:
                continue
            out[pid] = table[pid]
            todo.append(pid)
    return out


class Tracker:
    """Every descendant of the master ever seen (pid → start ticks), for the monitor's sweep when the
    master is gone. :meth:`scan` adds the live ones (cost: one ``/proc`` scan)."""

    def __init__(self, master_pid, exclude=()):
        self.master_pid = master_pid
        self.exclude = set(exclude)
        self.seen = {}
        self.next_scan = 0.0

    def scan(self, now=None):
        """Scan if :data:`SCAN_S` passed since the last one: returns the live descendants found
        (pid → StatInfo), or None when it is not time yet."""
        now = time.monotonic() if now is None else now
        if now < self.next_scan:
            return None
        self.next_scan = now + SCAN_S
        self.exclude.add(os.getpid())
        live = {pid: st for pid, st in descendants(self.master_pid, self.exclude).items()
                if not _procfs.is_dead_stat(st)}
        for pid, st in live.items():
            self.seen[pid] = st.start_ticks
        return live

    def sweep(self, timeout_s=SWEEP_S, mark=None):
        """SIGKILL every process seen that is still itself, then whatever those left behind (their
        children, found by parent pid) and — with ``mark`` — every process of this user born since the
        master that carries the run's mark (:func:`marked`: those born after the last scan), until none
        is left or ``timeout_s``. Returns the pids killed."""
        def find(table):
            found = _orphans_of(self.seen, table)
            if mark:
                found.update(marked(table, mark, self.exclude))
            return found

        return kill_rounds(find, timeout_s)


def run_mark(pid=None):
    """The mark of the run whose master is ``pid`` (default: this process): ``<pid>-<start ticks>``, or
    None without /proc."""
    pid = pid or os.getpid()
    st = _procfs.read_stat(pid)
    return None if st is None else f"{pid}-{st.start_ticks}"


def marked(table, mark, exclude=()):
    """Live processes of ``table`` whose environment holds ``MARK_ENV=mark``: only those born since
    the master (its start ticks are in the mark) and readable by this user are read."""
    needle = f"{MARK_ENV}={mark}".encode()
    since = int(mark.rsplit("-", 1)[1])
    me, out = os.getpid(), {}
    for pid, st in table.items():
        if pid == me or pid in exclude or st.start_ticks < since or _procfs.is_dead_stat(st):
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:  # gone, or not ours to read
            continue
        if needle in env.split(b"\0"):
            out[pid] = st
    return out


def _orphans_of(seen, table):
    """Live processes of ``table`` that were seen, or whose parent was (new ones)."""
    out = {}
    for pid, st in table.items():
        if _procfs.is_dead_stat(st):
            continue
        parent = table.get(st.ppid)
        # A child counts by its parent only if that parent is the very process seen (not a reused pid).
        if seen.get(pid) == st.start_ticks or (parent is not None and seen.get(st.ppid) == parent.start_ticks):
            out[pid] = st
            seen.setdefault(pid, st.start_ticks)
    return out


def kill_rounds(find, timeout_s, *, polite_s=0.0, reap=None):
    """End what ``find(table)`` returns (pid → StatInfo) until it returns nothing or ``timeout_s``:
    SIGTERM first if ``polite_s`` (waiting that long for it), then freeze and kill, round after round:
    every running process found is stopped (SIGSTOP: a stopped process cannot fork), and only when a
    look finds none running — nothing was born since the last — is every one found SIGKILLed. Killing
    without the stop lost to a process that re-forks faster than a ``/proc`` scan (a child every 2 ms
    that ignores SIGTERM: each kill hit a pid that had already handed over to its child). ``reap()`` is
    called between rounds (zombies of ours). Returns ``{pid: start ticks}`` of every process signalled.
    Each signal goes through the pid + start ticks check (:func:`_proc._signal_ticks`)."""
    signalled, refused = {}, set()
    deadline = time.monotonic() + timeout_s

    def look():
        if reap is not None:
            reap()
        return {pid: st for pid, st in find(_procfs.process_table()).items()
                if not _procfs.is_dead_stat(st) and pid not in refused}

    def send(procs, sig):
        for pid, st in procs.items():
            try:
                if _proc._signal_ticks(pid, st.start_ticks, sig):
                    signalled[pid] = st.start_ticks
            except PermissionError:  # e.g. an operation ran ``sudo``: not ours to signal; the rest still are
                refused.add(pid)
                log.warning("containment: not allowed to signal pid %d: left alone", pid)

    if polite_s > 0:
        live = look()
        if not live:
            return signalled
        send(live, signal.SIGTERM)
        _wait_gone(live, polite_s)
    while True:
        live = look()
        if not live:
            return signalled
        running = {pid: st for pid, st in live.items() if st.state not in STOPPED_STATES}
        if time.monotonic() >= deadline:
            send(live, signal.SIGKILL)  # never leave one stopped for good
            log.error("containment: %d processes still alive after %.1f s of killing: %s", len(live), timeout_s,
                      sorted(live)[:20])
            return signalled
        if running:
            send(running, signal.SIGSTOP)
            continue  # look again at once: what they forked before they stopped
        send(live, signal.SIGKILL)
        _wait_gone(live, TIMING.death_poll_s * 10)


def _wait_gone(procs, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_procfs.is_dead_stat(_procfs.read_stat(pid)) for pid in procs):
            return
        time.sleep(TIMING.death_poll_s * 5)


# ---------------------------------------------------------------- the master's side


@dataclass(frozen=True)
class ContainSpec:
    """What the monitor needs to sweep when the master dies: the cgroup (or None) and the pids whose
    subtrees are not the run's (the monitor adds itself)."""

    cgroup: RunCgroup | None = None
    exclude: tuple = ()
    mark: str | None = None  # MARK_ENV's value in the run's processes

    @property
    def mechanism(self):
        """The cgroup's kind, or ``subreaper``."""
        return self.cgroup.kind if self.cgroup is not None else SUBREAPER


_seq = 0


MODES = ("auto", "subreaper")
ENV = "LOADGEN_CONTAINMENT"


def _cgroups_wanted():
    mode = os.environ.get(ENV, "auto") or "auto"
    if mode not in MODES:
        from ..errors import UsageError

        raise UsageError(f"{ENV}={mode!r}: expected one of {', '.join(MODES)}")
    return mode == "auto"


@dataclass
class Containment:
    """The master's hold on a run's processes: :meth:`start` before the first child, :meth:`sweep`
    after the last, :meth:`close` at the very end. ``cgroups=False`` never makes a cgroup (default:
    ``LOADGEN_CONTAINMENT=subreaper`` in the environment says so; ``auto`` makes one where allowed)."""

    cgroups: bool = field(default_factory=_cgroups_wanted)
    cgroup: RunCgroup | None = None
    swept: dict = field(default_factory=dict)  # pid → start ticks of strays the sweeps ended
    cgroup_members: int = 0  # processes still in the cgroup when it was killed
    _previous_subreaper: bool | None = None
    _foreign: set = field(default_factory=set)  # children the master had before: not the run's
    _started: bool = False
    mark: str | None = None  # MARK_ENV's value while the run lasts (the master's environment, inherited)
    _previous_mark: str | None = None

    def start(self):
        """Become a child subreaper, remember the children that are not the run's, make the cgroup."""
        global _seq
        self._started = True
        self._previous_subreaper = _proc.set_child_subreaper(True)
        me = os.getpid()
        self._foreign = {pid for pid, st in _procfs.process_table().items() if st.ppid == me}
        self.mark = run_mark(me)
        if self.mark:
            self._previous_mark = os.environ.get(MARK_ENV)
            os.environ[MARK_ENV] = self.mark
        if self.cgroups:
            sweep_stale()
            _seq += 1
            st = _procfs.read_stat(me)
            # Named by the master's pid and start ticks, so that another run's sweep_stale can tell it
            # is alive; without them (no /proc stat) no cgroup: the subreaper sweep does the job.
            self.cgroup = make_cgroup(f"{me}-{st.start_ticks}-{_seq}") if st is not None else None
        log.debug("containment: %s", self.mechanism)
        return self

    @property
    def mechanism(self):
        """``cgroup2``, ``cgroup2-freeze``, ``cgroup1-freezer`` or ``subreaper``."""
        return self.cgroup.kind if self.cgroup is not None else SUBREAPER

    def spec(self, monitor_pid=None):
        """The :class:`ContainSpec` for the monitor."""
        return ContainSpec(cgroup=self.cgroup, mark=self.mark,
                           exclude=tuple(sorted(self._excluded() | ({monitor_pid} if monitor_pid else set()))))

    def _excluded(self):
        out = set(self._foreign)
        tracker = _resource_tracker_pid()
        if tracker:
            out.add(tracker)
        return out

    def reap(self):
        """Collect the exit status of zombies reparented to the master (orphans that ended), never
        one of the master's own children (a ``Process`` reaps those). Non-blocking."""
        reap_adopted(self._foreign)

    def sweep(self):
        """End everything the run started that is still alive, then reap it: the cgroup, exactly, then
        every descendant of the master but the children it had before (and the resource tracker).
        Blocks until none is left or :data:`SWEEP_S`."""
        if not self._started:
            return {}
        if self.cgroup is not None:
            self.cgroup_members += self.cgroup.kill()
        me = os.getpid()
        exclude = self._excluded()
        found = kill_rounds(lambda table: descendants(me, exclude, table), SWEEP_S,
                            polite_s=TIMING.kill_grace_s, reap=self.reap)
        self.reap()
        self.swept.update(found)
        if found:
            log.warning("containment: ended %d processes the run left behind: %s", len(found), sorted(found)[:20])
        return found

    def close(self):
        """Remove the cgroup and give the subreaper flag back. Safe to call twice."""
        if self.cgroup is not None:
            self.cgroup.remove()
        if self._previous_subreaper is not None:
            _proc.set_child_subreaper(self._previous_subreaper)
            self._previous_subreaper = None
        if self.mark and os.environ.get(MARK_ENV) == self.mark:
            if self._previous_mark is None:
                os.environ.pop(MARK_ENV, None)
            else:
                os.environ[MARK_ENV] = self._previous_mark
            self.mark = None

    def to_dict(self):
        """What ``report.json`` says of the run's containment."""
        return {"mechanism": self.mechanism, "strays_ended": len(self.swept) + self.cgroup_members}


class NoContainment(Containment):
    """Containment that does nothing (the Runner's unit tests drive fake pools in threads)."""

    def start(self):
        """Nothing to hold: no subreaper flag, no cgroup."""
        return self

    @property
    def mechanism(self):
        """``none``."""
        return "none"

    def sweep(self):
        """Nothing swept."""
        return {}

    def reap(self):
        """Nothing adopted."""

    def close(self):
        """Nothing to give back."""


def reap_adopted(foreign=()):
    """Reap this process's zombie children that no ``Process``/``Popen`` object owns and that are not
    in ``foreign``: orphans it adopted as a subreaper. Peeks first (``WNOWAIT``), so a child some
    object will reap is never taken from it. Non-blocking."""
    owned = _owned_children() | set(foreign)
    for _ in range(10_000):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if info is None or info.si_pid == 0 or info.si_pid in owned:
            return  # nothing exited, or the next one is someone's to reap
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            return


def _owned_children():
    """Pids of the children a ``multiprocess``/``multiprocessing`` Process of this process still has to
    reap, and of the ``subprocess.Popen`` objects dropped unwaited (``subprocess._active``). A live
    ``Popen`` is not listed anywhere: loadgen's master starts none, but a program that calls
    ``loadgen.api`` and starts one in another thread during a run may find its exit status taken."""
    import sys

    pids = set()
    for modname in ("multiprocess.process", "multiprocessing.process"):
        mod = sys.modules.get(modname)
        for child in list(getattr(mod, "_children", ()) or ()):
            popen = getattr(child, "_popen", None)
            if popen is not None and getattr(popen, "returncode", None) is None:
                pids.add(popen.pid)
    sub = sys.modules.get("subprocess")
    for p in list(getattr(sub, "_active", None) or ()):
        pids.add(p.pid)
    tracker = _resource_tracker_pid()
    if tracker:
        pids.add(tracker)
    return pids


def _resource_tracker_pid():
    import sys

    for modname in ("multiprocess.resource_tracker", "multiprocessing.resource_tracker"):
        mod = sys.modules.get(modname)
        rt = getattr(mod, "_resource_tracker", None)
        pid = getattr(rt, "_pid", None)
        if pid:
            return pid
    return None

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
    where the controller is enabled): :meth:`RunCgroup.usage`.

The master's own SIGKILL leaves nobody in the master to sweep: the monitor survives it (it gets
SIGUSR1 by PDEATHSIG) and sweeps with what :class:`ContainSpec` told it — the cgroup, else every
descendant it has seen (:class:`Tracker`: a ``/proc`` scan every :data:`SCAN_S`, pid + start ticks).
A run's cgroup left behind by a master *and* monitor both killed is removed by the next run
(:func:`sweep_stale`).

``report.json`` names the mechanism a run used (``containment.mechanism``).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field

from . import _proc, _procfs
from ..config import TIMING

log = logging.getLogger("loadgen.contain")

SCAN_S = 0.5  # the monitor's /proc scan for descendants (subreaper mechanism only)
SWEEP_S = 3.0  # the longest a sweep goes on killing (a fork bomb that outruns it is logged)
CGROUP_PREFIX = "loadgen-"
_NAME = re.compile(r"^loadgen-(\d+)-(\d+)-\d+$")  # loadgen-<master pid>-<its start ticks>-<seq>

SUBREAPER = "subreaper"


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

    def sweep(self, timeout_s=SWEEP_S):
        """SIGKILL every process seen that is still itself, then whatever those left behind (their
        children, found by parent pid), until none is left or ``timeout_s``. Returns the pids killed."""
        return kill_rounds(lambda table: _orphans_of(self.seen, table), timeout_s)


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
    """Signal what ``find(table)`` returns (pid → StatInfo) until it returns nothing or ``timeout_s``:
    SIGTERM first if ``polite_s`` (waiting that long for it), then SIGKILL each round. ``reap()`` is
    called between rounds (zombies of ours). Returns ``{pid: start ticks}`` of every process signalled.
    Each signal goes through the pid + start ticks check (:func:`_proc._signal_ticks`)."""
    signalled, refused = {}, set()
    deadline = time.monotonic() + timeout_s
    sig = signal.SIGTERM if polite_s > 0 else signal.SIGKILL
    while True:
        if reap is not None:
            reap()
        live = {pid: st for pid, st in find(_procfs.process_table()).items()
                if not _procfs.is_dead_stat(st) and pid not in refused}
        if not live:
            return signalled
        if time.monotonic() >= deadline:
            log.error("containment: %d processes still alive after %.1f s of killing: %s", len(live), timeout_s,
                      sorted(live)[:20])
            return signalled
        for pid, st in live.items():
            try:
                if _proc._signal_ticks(pid, st.start_ticks, sig):
                    signalled[pid] = st.start_ticks
            except PermissionError:  # e.g. an operation ran ``sudo``: not ours to signal; the rest still are
                refused.add(pid)
                log.warning("containment: not allowed to signal pid %d: left alone", pid)
        if sig == signal.SIGTERM:
            _wait_gone(live, polite_s)
            sig = signal.SIGKILL
        else:
            _wait_gone(live, 0.05)


def _wait_gone(procs, timeout_s):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(_procfs.is_dead_stat(_procfs.read_stat(pid)) for pid in procs):
            return
        time.sleep(TIMING.death_poll_s * 5)


# ---------------------------------------------------------------- cgroups


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _read(path):
    with open(path) as f:
        return f.read()


def _mounts():
    """cgroup mounts: ``[(fstype, mount point, root, controllers)]`` from /proc/self/mountinfo."""
    out = []
    try:
        lines = _read("/proc/self/mountinfo").splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if len(r) < 3 or r[0] not in ("cgroup", "cgroup2"):
            continue
        controllers = set() if r[0] == "cgroup2" else set(r[2].split(","))
        out.append((r[0], f[4].replace("\\040", " "), f[3], controllers))
    return out


def _own_paths():
    """This process's cgroups: ``{"": v2 path, controller: v1 path}`` from /proc/self/cgroup."""
    out = {}
    try:
        lines = _read("/proc/self/cgroup").splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            out[""] = parts[2]
        for c in parts[1].split(","):
            if c:
                out[c] = parts[2]
    return out


def _own_dir(mount, root, path):
    """The directory of cgroup ``path`` under a mount of the hierarchy whose root is ``root``."""
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None  # our cgroup is not visible through this mount
    rel = path[len(root):] if root != "/" else path
    return os.path.join(mount, rel.lstrip("/"))


def _own_cgroup_dirs():
    """``(v2 dir, v1 freezer dir, v1 memory dir)`` this process runs in (None where absent)."""
    own = _own_paths()
    v2 = freezer = memory = None
    for fstype, mount, root, controllers in _mounts():
        if fstype == "cgroup2" and "" in own and v2 is None:
            v2 = _own_dir(mount, root, own[""])
        elif "freezer" in controllers and "freezer" in own and freezer is None:
            freezer = _own_dir(mount, root, own["freezer"])
        elif "memory" in controllers and "memory" in own and memory is None:
            memory = _own_dir(mount, root, own["memory"])
    return v2, freezer, memory


def pids_room():
    """``(free, where)``: the fewest tasks the ``pids`` controller still allows this process's cgroup
    and its ancestors (``pids.max`` − ``pids.current``: a container's ``--pids-limit``, systemd's
    ``TasksMax``), or None where no such limit is set or readable."""
    own = _own_paths()
    best = None
    for fstype, mount, root, controllers in _mounts():
        key = "" if fstype == "cgroup2" else "pids" if "pids" in controllers else None
        if key is None or key not in own:
            continue
        d = _own_dir(mount, root, own[key])
        while d and os.path.normpath(d).startswith(os.path.normpath(mount)):
            try:
                limit = _read(os.path.join(d, "pids.max")).strip()
                if limit != "max":
                    free = int(limit) - int(_read(os.path.join(d, "pids.current")))
                    if best is None or free < best[0]:
                        best = (free, d)
            except (OSError, ValueError):
                pass
            if os.path.normpath(d) == os.path.normpath(mount):
                break
            d = os.path.dirname(d)
    return best


@dataclass(frozen=True)
class RunCgroup:
    """A run's cgroup, picklable (the workers and the monitor get it).

    ``kill_dir``: where members are listed and killed; ``kind``: ``cgroup2`` (``cgroup.kill``),
    ``cgroup2-freeze`` (``cgroup.freeze``, kernels 5.2–5.13) or ``cgroup1-freezer``;
    ``dirs``: every directory a member joins (the kill dir, and a v1 memory child if any);
    ``memory_dir``: where the pool's memory is read, or None.
    """

    kind: str
    kill_dir: str
    dirs: tuple
    memory_dir: str | None = None

    def join(self, pid=0):
        """Move ``pid`` (0: the calling process) into every directory of the run; True if all took it."""
        ok = True
        for d in self.dirs:
            try:
                _write(os.path.join(d, "cgroup.procs"), str(pid or os.getpid()))
            except OSError:
                ok = False
        return ok

    def pids(self):
        """The members now (kill dir's ``cgroup.procs``); empty once the cgroup is gone."""
        try:
            return [int(x) for x in _read(os.path.join(self.kill_dir, "cgroup.procs")).split()]
        except (OSError, ValueError):
            return []

    def kill(self, timeout_s=SWEEP_S):
        """End every member, exactly, and wait (up to ``timeout_s``) until the cgroup is empty.
        Returns the number of members there were."""
        members = self.pids()
        if not members:
            return 0
        try:
            if self.kind == "cgroup2":
                _write(os.path.join(self.kill_dir, "cgroup.kill"), "1")
            else:
                self._freeze_kill()
        except OSError as e:
            log.warning("containment: could not kill cgroup %s: %s", self.kill_dir, e)
        deadline = time.monotonic() + timeout_s
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.005)
        left = self.pids()
        if left:
            log.error("containment: cgroup %s still holds %s after %.1f s", self.kill_dir, left[:20], timeout_s)
        return len(members)

    def _freeze_kill(self):
        """Freeze (no member can fork or run), SIGKILL each, thaw (the kills are delivered)."""
        v1 = self.kind == "cgroup1-freezer"
        state = os.path.join(self.kill_dir, "freezer.state" if v1 else "cgroup.freeze")
        _write(state, "FROZEN" if v1 else "1")
        try:
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                if (_read(state).strip() == "FROZEN") if v1 else ("frozen 1" in _read(
                        os.path.join(self.kill_dir, "cgroup.events"))):
                    break
                time.sleep(0.002)
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)  # members cannot be reaped (nor pids reused) while frozen
                except OSError:  # gone, or not ours to signal: the others still are
                    pass
        finally:  # never leave the cgroup frozen: its members would stay so, and it could not be removed
            _write(state, "THAWED" if v1 else "0")

    def remove(self):
        """Remove the run's directories (they must be empty). True when none is left. Never raises."""
        gone = True
        for d in self.dirs:
            for attempt in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or attempt == 49:
                        log.debug("containment: rmdir %s: %s", d, e)
                        gone = False
                        break
                    time.sleep(0.01)  # the last member's exit is still being accounted
        return gone

    def memory_alarm(self, threshold_mb):
        """A non-blocking eventfd the kernel makes readable whenever the cgroup's memory usage crosses
        ``threshold_mb`` (either way: cgroup v1 ``cgroup.event_control`` on ``memory.usage_in_bytes``),
        or None where the kernel cannot tell (cgroup v2 has no usage threshold; no memory cgroup).
        The caller closes it."""
        if self.memory_dir is None or not hasattr(os, "eventfd"):
            return None
        control = os.path.join(self.memory_dir, "cgroup.event_control")
        if not os.path.exists(control):
            return None
        efd = usage_fd = None
        try:
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            usage_fd = os.open(os.path.join(self.memory_dir, "memory.usage_in_bytes"), os.O_RDONLY | os.O_CLOEXEC)
            _write(control, f"{efd} {usage_fd} {int(threshold_mb * 2**20)}")
            return efd
        except OSError as e:
            log.debug("containment: no memory alarm on %s: %s", self.memory_dir, e)
            if efd is not None:
                os.close(efd)
            return None
        finally:
            if usage_fd is not None:
                os.close(usage_fd)  # the kernel holds its own reference once registered

    def memory_mb(self):
        """The cgroup's memory usage now, MB (None without a memory cgroup)."""
        return self.usage()[0]

    def usage(self):
        """``(memory MB or None, CPU seconds or None)`` of everything in the cgroup now."""
        mem = cpu = None
        if self.memory_dir is not None:
            for name in ("memory.current", "memory.usage_in_bytes"):
                try:
                    mem = int(_read(os.path.join(self.memory_dir, name))) / 2**20
                    break
                except (OSError, ValueError):
                    continue
        if self.kind.startswith("cgroup2"):
            try:
                for line in _read(os.path.join(self.kill_dir, "cpu.stat")).splitlines():
                    if line.startswith("usage_usec "):
                        cpu = int(line.split()[1]) / 1e6
            except (OSError, ValueError):
                pass
        return mem, cpu


def make_cgroup(tag):
    """Create the run's cgroup ``loadgen-<tag>`` below this process's own cgroups, or None where
    that is not allowed (no write access, no cgroup fs, an old kernel). Never raises."""
    v2, freezer, memory = _own_cgroup_dirs()
    name = CGROUP_PREFIX + tag
    made = []

    def mkdir(parent):
        if parent is None or not os.access(os.path.join(parent, "cgroup.procs"), os.W_OK):
            return None
        d = os.path.join(parent, name)
        try:
            os.mkdir(d, 0o755)
        except OSError as e:
            log.debug("containment: cannot create %s: %s", d, e)
            return None
        made.append(d)
        return d

    kind = kill_dir = None
    d = mkdir(v2)
    if d is not None:
        if os.path.exists(os.path.join(d, "cgroup.kill")):
            kind, kill_dir = "cgroup2", d
        elif os.path.exists(os.path.join(d, "cgroup.freeze")):
            kind, kill_dir = "cgroup2-freeze", d
    if kill_dir is None:
        d = mkdir(freezer)
        if d is not None:
            kind, kill_dir = "cgroup1-freezer", d
    if kill_dir is None:
        RunCgroup(kind="", kill_dir="", dirs=tuple(made)).remove()
        return None
    memory_dir = kill_dir if os.path.exists(os.path.join(kill_dir, "memory.current")) else mkdir(memory)
    return RunCgroup(kind=kind, kill_dir=kill_dir, dirs=tuple(made), memory_dir=memory_dir)


def sweep_stale():
    """Remove the cgroups of runs whose master is gone (killed with its monitor): kill what is left
    in them, then rmdir. Returns how many were removed. Never raises."""
    removed = 0
    for parent in _own_cgroup_dirs():
        if parent is None:
            continue
        try:
            names = [n for n in os.listdir(parent) if _NAME.match(n)]
        except OSError:
            continue
        for name in names:
            pid, ticks = (int(x) for x in _NAME.match(name).groups())
            st = _procfs.read_stat(pid)
            if not _procfs.is_dead_stat(st) and st.start_ticks == ticks:
                continue  # its master still runs
            d = os.path.join(parent, name)
            kind = ("cgroup2" if os.path.exists(os.path.join(d, "cgroup.kill")) else
                    "cgroup2-freeze" if os.path.exists(os.path.join(d, "cgroup.freeze")) else
                    "cgroup1-freezer" if os.path.exists(os.path.join(d, "freezer.state")) else None)
            stale = RunCgroup(kind=kind or "", kill_dir=d, dirs=(d,))
            # A v1 memory directory cannot kill: its members are in the run's freezer or v2 cgroup too,
            # which this loop kills; it is only removed.
            n = stale.kill(timeout_s=1.0) if kind else 0
            if not stale.remove():
                continue
            removed += 1
            log.warning("containment: removed the cgroup %s of a run whose master is gone (%d processes ended)",
                        d, n)
    return removed


# ---------------------------------------------------------------- the master's side


@dataclass(frozen=True)
class ContainSpec:
    """What the monitor needs to sweep when the master dies: the cgroup (or None) and the pids whose
    subtrees are not the run's (the monitor adds itself)."""

    cgroup: RunCgroup | None = None
    exclude: tuple = ()

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

    def start(self):
        """Become a child subreaper, remember the children that are not the run's, make the cgroup."""
        global _seq
        self._started = True
        self._previous_subreaper = _proc.set_child_subreaper(True)
        me = os.getpid()
        self._foreign = {pid for pid, st in _procfs.process_table().items() if st.ppid == me}
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
        return ContainSpec(cgroup=self.cgroup,
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

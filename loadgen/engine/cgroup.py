"""The run's cgroup on the file system: made below the cgroups loadgen already runs in (never
elsewhere), joined by every child, killed exactly (``cgroup.kill``, freeze-and-kill), read for the
pool's memory and CPU, watched for a memory alarm, removed — and the stale ones of killed runs swept
(:func:`sweep_stale`). The policy that uses it is ``engine.contain``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import signal
import time
from dataclasses import dataclass

from . import _procfs
from ..config import TIMING

log = logging.getLogger("loadgen.contain")

RMDIR_TRIES = 50  # EBUSY retries of a cgroup's rmdir, TIMING.death_poll_s × 5 apart
SWEEP_S = 3.0  # the longest a sweep goes on killing (a fork bomb that outruns it is logged)
CGROUP_PREFIX = "loadgen-"
_NAME = re.compile(r"^loadgen-(\d+)-(\d+)-\d+$")  # loadgen-<master pid>-<its start ticks>-<seq>


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


def own_cgroup_dirs():
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

    def subtree(self):
        """The kill dir and every cgroup nested below it (a member may make one and move into it: it is
        still the run's), deepest last."""
        out = []
        for top, dirs, _ in os.walk(self.kill_dir) if self.kill_dir else ():
            out.append(top)
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(top, d))]
        return out

    def pids(self):
        """The members now, nested cgroups included (each directory's ``cgroup.procs``); empty once the
        cgroup is gone."""
        out = []
        for d in self.subtree():
            try:
                out += [int(x) for x in _read(os.path.join(d, "cgroup.procs")).split()]
            except (OSError, ValueError):
                continue
        return out

    def kill(self, timeout_s=SWEEP_S):
        """End every member of the cgroup and of every cgroup nested in it, exactly, and wait (up to
        ``timeout_s``) until none is left. Returns the number of members there were. Not only the top
        directory's ``cgroup.procs`` is asked: a member that moved itself into a nested cgroup leaves it
        empty, and the sweep of a killed run's cgroup returned early and left it alive."""
        members = self.pids()
        if not members:
            return 0
        try:
            if self.kind == "cgroup2":
                _write(os.path.join(self.kill_dir, "cgroup.kill"), "1")  # the whole subtree (cgroup v2)
            else:
                self._freeze_kill()
        except OSError as e:
            log.warning("containment: could not kill cgroup %s: %s", self.kill_dir, e)
        deadline = time.monotonic() + timeout_s
        while self.pids() and time.monotonic() < deadline:
            time.sleep(TIMING.death_poll_s)
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
        """Remove the run's directories (they must be empty), nested cgroups first. True when none is
        left. Never raises."""
        gone = True
        for top in self.dirs:
            nested = []
            for d, dirs, _ in os.walk(top):
                nested.append(d)
                dirs[:] = [x for x in dirs if not os.path.islink(os.path.join(d, x))]
            for d in reversed(nested):  # children before their parent: rmdir takes empty cgroups only
                gone = _rmdir(d) and gone
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


def _rmdir(d):
    """rmdir a cgroup, waiting a little while its last member's exit is accounted (EBUSY). True if gone."""
    for attempt in range(RMDIR_TRIES):
        try:
            os.rmdir(d)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or attempt == RMDIR_TRIES - 1:
                log.debug("containment: rmdir %s: %s", d, e)
                return False
            time.sleep(TIMING.death_poll_s * 5)
    return False


def make_cgroup(tag):
    """Create the run's cgroup ``loadgen-<tag>`` below this process's own cgroups, or None where
    that is not allowed (no write access, no cgroup fs, an old kernel). Never raises."""
    v2, freezer, memory = own_cgroup_dirs()
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
    for parent in own_cgroup_dirs():
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

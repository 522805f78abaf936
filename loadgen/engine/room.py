"""How much this machine can hold: the upper bounds of ``--workers``, ``--slots`` and ``--rate``.

A run asks for ``workers`` processes with ``slots`` threads each. Before anything starts, the plan is
checked against the room the machine has *now* (:func:`check`); a plan that does not fit is refused
with exit 2, naming the flag and the rule:

* processes: ``workers`` ≤ min(pid room, task room, memory room), where
  pid room = half the pids still free (``/proc/sys/kernel/pid_max`` − tasks running now: threads
  take pids too; the other half is left to the target and the rest of the machine), task room =
  half of what ``RLIMIT_NPROC`` still allows this user's tasks (when it is set and applies) and
  half of what the ``pids`` cgroup controller still allows (``pids.max``), and memory room =
  ``MemAvailable`` ÷ :data:`WORKER_MB`;
* threads: ``workers × slots`` ≤ min(pid room, thread room, task room, MemAvailable ÷
  :data:`THREAD_KB`), thread room = half of ``/proc/sys/kernel/threads-max`` − tasks now; for an
  async target the slots are coroutines: ``workers × slots`` ≤ MemAvailable ÷ :data:`COROUTINE_KB`;
* thread slots: at most :data:`MAX_THREAD_SLOTS` a worker (derived shapes use more workers instead);
* rate: ``--rate`` ≤ cores × :data:`STARTS_PER_CORE` (one start per microsecond per core: no Python
  operation starts faster, so beyond it every arrival would be dropped);
* file descriptors: the soft ``RLIMIT_NOFILE`` is first raised to the hard one (as servers do:
  :func:`raise_fd_limit`), then fds open now + ``workers`` × :data:`MASTER_FDS_PER_WORKER` +
  :data:`FD_RESERVE` ≤ that limit: the master holds a pipe end and a sentinel per worker, and the
  usual soft limit of 1024 ended a 340-worker run with EMFILE, an internal error and no report.

Linux; elsewhere (no ``/proc``) only the rate is checked.
"""

from __future__ import annotations

import os
import resource

from ..errors import UsageError
from .cgroup import pids_room

WORKER_MB = 50  # an idle worker: ≈ 30 MB resident with numpy (spawn), less under fork; room for its work
THREAD_KB = 256  # a slot thread: its stack's touched pages, its frames and its share of the lists
MAX_THREAD_SLOTS = 1_000  # threads a worker runs for a sync target (an async one runs coroutines instead)
COROUTINE_KB = 64  # an async slot: its coroutine, its operation's task and buffers (generous: a target's own state)
STARTS_PER_CORE = 1_000_000
# The master's fds per worker: its pipe end, its sentinel and one more (not traced further);
# measured: 44 fds with 10 workers, 196 with 60 (fork): 3.0 a worker.
MASTER_FDS_PER_WORKER = 3
# fds the master opens besides the workers' whatever their number: the monitor's pipe, the streams,
# the reports, the wake-up pipe, the stressors', a target's own in the master (measured ≈ 14), with room.
FD_RESERVE = 128


def raise_fd_limit():
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit (what the workers and the monitor
    inherit); returns ``(soft, hard)`` as they are then. Never raises."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft, hard


def _open_fds():
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own
    except OSError:
        return None


def check_fds(workers):
    """Refuse (:class:`UsageError`, exit 2) a pool whose pipes and sentinels would not fit the fd limit,
    after raising the soft limit to the hard one (see the module)."""
    soft, hard = raise_fd_limit()
    now = _open_fds()
    if soft == resource.RLIM_INFINITY or now is None:
        return
    need = now + workers * MASTER_FDS_PER_WORKER + FD_RESERVE
    if need > soft:
        fit = max(0, (soft - now - FD_RESERVE) // MASTER_FDS_PER_WORKER)
        raise UsageError(f"--workers {workers}: the master needs about {need} file descriptors ({now} open now + "
                         f"{MASTER_FDS_PER_WORKER} a worker + {FD_RESERVE} of its own), above the limit of {soft} "
                         f"(ulimit -n; hard limit {hard}); raise it (ulimit -n {need}) or ask for at most {fit} "
                         "workers")


def _read_int(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _tasks_now():
    """Tasks (threads) on the machine now, from ``/proc/loadavg``'s running/total."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return None


def _available_mb():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return None


def _user_tasks():
    """Tasks (threads) of this real user now, from /proc/PID/status; None without /proc."""
    uid, n = os.getuid(), 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                n += int(fields["Threads"])
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return n


def limits():
    """``{"processes": (n, why), "threads": (n, why)}``: the room now (an entry is absent when it
    cannot be read)."""
    tasks = _tasks_now()
    pid_max = _read_int("/proc/sys/kernel/pid_max")
    threads_max = _read_int("/proc/sys/kernel/threads-max")
    avail = _available_mb()
    procs, threads = [], []
    if pid_max and tasks is not None:
        room = max(0, (pid_max - tasks) // 2)
        procs.append((room, f"half the free pids (pid_max {pid_max} − {tasks} tasks) = {room}"))
        threads.append(procs[-1])
    if threads_max and tasks is not None:
        room = max(0, (threads_max - tasks) // 2)
        threads.append((room, f"half the free threads (threads-max {threads_max} − {tasks} tasks) = {room}"))
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    mine = _user_tasks() if soft != resource.RLIM_INFINITY and os.geteuid() != 0 else None
    if mine is not None:  # the limit counts this user's tasks, not the machine's
        room = max(0, (soft - mine) // 2)
        procs.append((room, f"half of what RLIMIT_NPROC {soft} leaves to this user's {mine} tasks = {room}"))
        threads.append(procs[-1])
    cgroup = pids_room()
    if cgroup is not None:
        room = max(0, cgroup[0] // 2)
        procs.append((room, f"half of the {cgroup[0]} tasks pids.max still allows in {cgroup[1]} = {room}"))
        threads.append(procs[-1])
    if avail is not None:
        procs.append((avail // WORKER_MB, f"available memory {avail} MB ÷ {WORKER_MB} MB a worker = "
                                          f"{avail // WORKER_MB}"))
        threads.append((avail * 1024 // THREAD_KB, f"available memory {avail} MB ÷ {THREAD_KB} KB a thread = "
                                                   f"{avail * 1024 // THREAD_KB}"))
    out = {}
    if procs:
        out["processes"] = min(procs)
    if threads:
        out["threads"] = min(threads)
    return out


def check(workers, slots, rate=None, *, room=None, threads=True):
    """Refuse (:class:`UsageError`, exit 2) a plan this machine has no room for (see the module).
    ``threads``: slots are threads (a sync target); else coroutines, bounded by memory only."""
    room = limits() if room is None else room
    check_fds(workers)
    if not threads:
        avail = _available_mb()
        if avail is not None and workers * slots * COROUTINE_KB > avail * 1024:
            raise UsageError(f"--slots {slots} × --workers {workers} = {workers * slots} async slots: this machine has "
                             f"room for {avail * 1024 // COROUTINE_KB} now (available memory {avail} MB ÷ "
                             f"{COROUTINE_KB} KB a coroutine and its operation); lower --slots or --concurrency")
        room = {k: v for k, v in room.items() if k != "threads"}
    elif slots > MAX_THREAD_SLOTS:
        raise UsageError(f"--slots {slots}: a sync target runs one thread per slot, at most {MAX_THREAD_SLOTS} a "
                         f"worker; give more --workers (each holds {MAX_THREAD_SLOTS}), or make the target "
                         "async def (coroutine slots, thousands a worker)")
    if "processes" in room and workers > room["processes"][0]:
        n, why = room["processes"]
        raise UsageError(f"--workers {workers}: this machine has room for {n} worker processes now "
                         f"({why}); ask for fewer")
    if "threads" in room and workers * slots > room["threads"][0]:
        n, why = room["threads"]
        raise UsageError(f"--slots {slots} × --workers {workers} = {workers * slots} threads: this machine has "
                         f"room for {n} now ({why}); lower --slots, --concurrency or --workers")
    if rate is not None:
        cap = (os.cpu_count() or 1) * STARTS_PER_CORE
        if rate > cap:
            raise UsageError(f"--rate {rate:g}: above {cap:g} starts per second ({os.cpu_count()} cores × "
                             f"{STARTS_PER_CORE:g}: no operation starts in under a microsecond)")

"""Small Linux process helpers shared by the master, the workers and the monitor.

Identity
    A process is named by ``(pid, create_time)``: ``create_time`` is UNIX
    seconds as :meth:`psutil.Process.create_time` returns it. Every signal
    loadgen sends goes through :func:`kill_verified`, which checks both, so a
    pid that the kernel has handed to a stranger is never hit.

Death
    The monitor is not the parent of the workers and cannot reap them, so
    "dead" here means: gone from ``/proc``, or a zombie (its memory is already
    released), or the pid now belongs to another process.

Set-up
    prctl helpers (:func:`set_pdeathsig`, :func:`set_title`),
    :func:`ignore_sigint`, and a worker's process set-up: its group
    (:func:`join_group`), BLAS threads (:func:`limit_blas`), malloc arenas
    (:func:`limit_arenas`, :func:`trim_heap`).

The fast ``/proc`` readers (``read_stat``, ``StatReader``, ``read_pss_mb`` …)
are in ``_procfs``. Everything degrades to a no-op or to psutil off Linux;
loadgen targets Linux.
"""


from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import time

import psutil

from ..config import TIMING
from ._procfs import CLOCK_TICKS, is_dead_stat, read_stat

log = logging.getLogger("loadgen.proc")

_IS_LINUX = sys.platform.startswith("linux")

# prctl(2) options, from <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15

# Two create times name the same process when they differ by less than this.
# /proc keeps start times in clock ticks (10 ms) and psutil adds the boot time,
# so two readings of one process agree to float rounding; two ticks of slack
# absorb a value rounded by another tool, while a reused pid would have to
# wrap the whole pid space inside 20 ms to collide.
CREATE_TIME_TOLERANCE_S = 2.0 / CLOCK_TICKS


_libc = None


def _prctl(option, arg2):
    """Call prctl(2); return True on success. No-op (False) off Linux."""
    global _libc
    if not _IS_LINUX:
        return False
    if _libc is None:
        # CDLL(None) is the running program, libc included. Not
        # ctypes.util.find_library: it forks ldconfig/gcc to search.
        _libc = ctypes.CDLL(None, use_errno=True)
    # Every argument as unsigned long: ctypes would pass a bare int as a
    # 32-bit C int and truncate a pointer (PR_SET_NAME takes one).
    ul = ctypes.c_ulong
    if _libc.prctl(ctypes.c_int(option), ul(arg2), ul(0), ul(0), ul(0)) != 0:
        err = ctypes.get_errno()
        log.debug("prctl(%d) failed: %s", option, os.strerror(err))
        return False
    return True


def set_pdeathsig(sig=signal.SIGKILL):
    """Ask the kernel to send ``sig`` to this process when its parent dies.

    Linux only (returns False elsewhere, and when prctl fails). Note the
    kernel's rule: the signal fires when the *thread* that forked this
    process exits, so a parent that forks from a short-lived thread should
    pair this with an explicit liveness check (the monitor does).
    Non-blocking; returns True when set.
    """
    return _prctl(_PR_SET_PDEATHSIG, int(sig))


_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37


def set_child_subreaper(on=True):
    """Make this process the *child subreaper* of its descendants (``on``) or stop being one: an
    orphaned descendant is then reparented to it instead of init. Returns what the flag was before
    (False off Linux or when prctl fails, and then nothing changed)."""
    if not _IS_LINUX:
        return False
    before = ctypes.c_int(0)
    _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.addressof(before))
    _prctl(_PR_SET_CHILD_SUBREAPER, 1 if on else 0)
    return bool(before.value)


def set_title(text):
    """Name this process for ``ps``/``top`` (e.g. ``loadgen: monitor``).

    Uses setproctitle (the full command line) and also sets the kernel's
    15-byte ``comm`` name, which ``top`` shows by default. Never raises.
    """
    try:
        import setproctitle

        setproctitle.setproctitle(text)
    except Exception:  # noqa: BLE001 - a missing title must never stop a process
        log.debug("setproctitle unavailable; using prctl only", exc_info=True)
    name = ctypes.create_string_buffer(text.encode("utf-8", "replace")[:15])
    _prctl(_PR_SET_NAME, ctypes.addressof(name))


def ignore_sigint():
    """Ignore Ctrl-C: only the master reacts to SIGINT (it reaches the whole group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def create_time(pid):
    """UNIX seconds when ``pid`` started (psutil's value); raises psutil.NoSuchProcess."""
    return psutil.Process(pid).create_time()


def boot_time():
    """System boot time, UNIX seconds, as psutil computes it (read afresh each call)."""
    return psutil.boot_time()


def start_ticks_to_create_time(start_ticks, boot_time_s):
    """UNIX seconds from a /proc start time (clock ticks after boot) and the boot time (UNIX s)."""
    return start_ticks / CLOCK_TICKS + boot_time_s


def identify(pid, create_time_s):
    """Start ticks of ``pid`` if it is alive and matches ``create_time_s``, else None.

    The monitor stores the returned ticks so later checks compare integers
    and never depend on the boot time (which moves when the clock is
    stepped). Cost: one /proc/PID/stat and one /proc/stat read.
    """
    st = read_stat(pid)
    if is_dead_stat(st):
        return None
    if abs(start_ticks_to_create_time(st.start_ticks, boot_time()) - create_time_s) >= CREATE_TIME_TOLERANCE_S:
        return None
    return st.start_ticks


def is_same_process(pid, create_time_s):
    """True if ``pid`` is alive (not a zombie) and started at ``create_time_s``.

    A pid reused by another process, a zombie and a missing pid are all
    False. Non-blocking, about 30 µs.
    """
    if not _IS_LINUX:  # pragma: no cover
        try:
            p = psutil.Process(pid)
            return p.status() != psutil.STATUS_ZOMBIE and abs(p.create_time() - create_time_s) < CREATE_TIME_TOLERANCE_S
        except psutil.Error:
            return False
    return identify(pid, create_time_s) is not None


def _is_alive_ticks(pid, start_ticks):
    st = read_stat(pid)
    return not is_dead_stat(st) and st.start_ticks == start_ticks


def _signal_ticks(pid, start_ticks, sig):
    """Send ``sig`` to ``pid`` if it still has ``start_ticks``; True if sent.

    With pidfds (Linux ≥ 5.3) there is no race at all: the fd pins the
    process that held the pid when it was opened, so if the identity check
    that follows passes, the signal reaches that very process — or fails
    with ESRCH if it died meanwhile. Without pidfds a pid could in theory be
    reused between check and kill; the window is microseconds.
    """
    pidfd = None
    if hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal"):
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError:
            pidfd = None  # e.g. ENOSYS on an old kernel: fall back to kill()
    try:
        if not _is_alive_ticks(pid, start_ticks):
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def kill_verified(pid, create_time_s, sig):
    """Send ``sig`` to ``pid`` only if it is the process that started at ``create_time_s``.

    Returns True if the signal was sent, False if the pid is gone, a zombie
    or another process. Non-blocking. Raises PermissionError if the process
    is ours by identity but not signalable (should not happen).
    """
    ticks = identify(pid, create_time_s)
    if ticks is None:
        return False
    return _signal_ticks(pid, ticks, sig)


def _group_is_ours(pgid, alive_ticks):
    """True if process group ``pgid`` may be signalled.

    The group must not be our own (the monitor shares the master's group, so
    killpg on it would end the master) and must contain at least one of the
    verified processes: groups are created by setpgid in loadgen's own
    children, so a group holding one of them is the pool's group; any
    other member descends from the pool (e.g. a subprocess a flow spawned),
    which is exactly what the group kill is for.
    """
    if pgid is None or pgid <= 1:
        return False
    try:
        if pgid == os.getpgid(0):
            log.error("refusing to signal process group %d: it is the monitor's own group", pgid)
            return False
    except OSError:  # pragma: no cover
        return False
    for pid, ticks in alive_ticks.items():
        st = read_stat(pid)
        if not is_dead_stat(st) and st.start_ticks == ticks and st.pgid == pgid:
            return True
    return False


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("no permission to signal process group %d", pgid)
        return False


def kill_group_then_pids(pgid, procs, grace_s, *, kill_wait_s=TIMING.kill_wait_s):
    """Terminate a pool: TERM, wait up to ``grace_s``, KILL the rest, wait for death.

    ``pgid``: the pool's process group, or None. It is signalled only if it
    is not our own group and one of ``procs`` is verifiably in it.
    ``procs``: pid → create time (UNIX s); only those that still match are
    signalled. Blocks up to ``grace_s + kill_wait_s`` (normally a few ms:
    a process with the default SIGTERM action dies at once).

    Returns the UNIX time at which every verified process was seen dead
    (gone, zombie or replaced) — the moment its memory was released. If one
    survives SIGKILL for ``kill_wait_s`` (uninterruptible sleep), logs an
    error and returns the current time.
    """
    # Resolve identities once; later checks compare start ticks exactly.
    bt = boot_time()
    alive = {}
    for pid, ct in procs.items():
        st = read_stat(pid)
        if is_dead_stat(st):
            continue
        if abs(start_ticks_to_create_time(st.start_ticks, bt) - ct) < CREATE_TIME_TOLERANCE_S:
            alive[pid] = st.start_ticks
        else:
            log.warning("pid %d is not the process registered (create time differs): not signalled", pid)
    return kill_ticks(pgid, alive, grace_s, kill_wait_s=kill_wait_s)


def kill_ticks(pgids, alive, grace_s, *, kill_wait_s=TIMING.kill_wait_s):
    """:func:`kill_group_then_pids` for identities already resolved to start ticks.

    ``pgids``: None, one process group or an iterable of them (a pool and
    its stressors may sit in different groups). ``alive``: pid → start
    ticks (from :func:`identify`). Same contract and return value.
    """
    alive = dict(alive)
    if pgids is None:
        pgids = ()
    elif isinstance(pgids, int):
        pgids = (pgids,)
    groups = [g for g in dict.fromkeys(pgids) if _group_is_ours(g, alive)]
    for group in groups:
        _killpg(group, signal.SIGTERM)
    for pid, ticks in list(alive.items()):
        if not _signal_ticks(pid, ticks, signal.SIGTERM) and not _is_alive_ticks(pid, ticks):
            del alive[pid]

    def reap(deadline):
        while alive:
            for pid, ticks in list(alive.items()):
                if not _is_alive_ticks(pid, ticks):
                    del alive[pid]
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(TIMING.death_poll_s)
        return time.time()

    dead_at = reap(time.monotonic() + grace_s)
    for group in groups:
        # Members we never registered (a subprocess a flow started) may
        # ignore SIGTERM. The group was verified above; while it has a
        # member its id cannot be handed out again, and once empty its id
        # could only return after the pid space wrapped, which the few
        # milliseconds since cannot allow. So this reaches the pool's group
        # or nobody (ESRCH).
        _killpg(group, signal.SIGKILL)
    if not alive:
        return dead_at
    log.info("pids %s survived SIGTERM for %.3f s: SIGKILL", sorted(alive), grace_s)
    for pid, ticks in list(alive.items()):
        _signal_ticks(pid, ticks, signal.SIGKILL)
    dead_at = reap(time.monotonic() + kill_wait_s)
    if alive:
        log.error("pids %s still alive %.1f s after SIGKILL (uninterruptible sleep?)", sorted(alive), kill_wait_s)
    return dead_at


def end_processes(procs, grace_s=TIMING.kill_grace_s, *, polite_s=0.0):
    """End child processes that this process started (``multiprocess.Process``-like objects).

    The one terminate-grace-kill of loadgen: wait up to ``polite_s`` for them
    to exit on their own (after the caller asked them to), then SIGTERM, wait
    up to ``grace_s``, SIGKILL, and reap, waiting up to ``TIMING.kill_wait_s``.
    A child's pid cannot be reused before it is reaped, so no identity check
    is needed here (for processes loadgen did not start, the monitor uses
    :func:`kill_ticks`). Blocks at most ``polite_s + grace_s + kill_wait_s``.
    Returns the processes still alive after SIGKILL (normally none).
    """
    procs = list(procs)
    deadline = time.monotonic() + max(0.0, polite_s)
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for step, wait_s in (("terminate", grace_s), ("kill", TIMING.kill_wait_s)):
        alive = [p for p in procs if p.is_alive()]
        if not alive:
            return []
        for p in alive:
            try:
                getattr(p, step)()
            except (OSError, ValueError):  # gone meanwhile, or already closed
                pass
        deadline = time.monotonic() + wait_s
        for p in alive:
            p.join(max(0.0, deadline - time.monotonic()))
    left = [p for p in procs if p.is_alive()]
    if left:
        log.error("pids %s still alive %.1f s after SIGKILL (uninterruptible sleep?)", [p.pid for p in left],
                  TIMING.kill_wait_s)
    return left


# ---------------------------------------------------------------- a worker's process set-up


def join_group(pgid):
    """Join process group ``pgid`` (None or 0: lead a new one); lead a new one if it is gone."""
    try:
        os.setpgid(0, pgid or 0)
    except OSError:
        # The group's leader is gone and so is the group: lead a new one; the master
        # learns the new pgid from our pid and tells the monitor.
        os.setpgid(0, 0)


def limit_blas(n):
    """Cap BLAS/OpenMP threads at ``n`` (environment, and threadpoolctl if numpy is loaded). Never raises."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if "numpy" in sys.modules:  # imported before the fork: its BLAS pool already exists
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(n)
        except Exception:  # noqa: BLE001 - best effort; without it BLAS may use more threads
            pass


_malloc_trim = None  # glibc's malloc_trim once looked up, False without glibc
MALLOC_ARENAS = 2  # glibc malloc arenas per worker (default 8 × cores): slots share them


def limit_arenas():
    """Few malloc arenas: with one per slot thread, what the slots free is scattered over
    dozens of heaps that ``malloc_trim`` cannot give back, and a pool that recovered from an
    overload would keep its peak memory. Caps them at :data:`MALLOC_ARENAS`; a no-op off glibc."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, MALLOC_ARENAS)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def trim_heap():
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; ≈ 0.5 ms, µs when idle).

    Every slot thread has its own malloc arena and glibc keeps what they free,
    so without this the pool's memory would show what the allocator holds, not
    what the workload holds: a recovered flow would look as if it kept its peak.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def open_fds():
    """This process's open file descriptors: fd → (st_dev, st_ino), the identity :func:`release_fds` checks."""
    out = {}
    try:
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:  # pragma: no cover - no /proc
        return out
    for fd in fds:
        try:
            st = os.fstat(fd)
        except OSError:  # the listing's own fd, closed by now
            continue
        out[fd] = (st.st_dev, st.st_ino)
    return out


def release_fds(fds):
    """Let go of the files behind the fds of ``fds`` (from :func:`open_fds`) that still name the same
    file (one closed and reused since is left alone): each is pointed at ``/dev/null`` (``dup2``), so
    the file is released but the number stays taken — an object that still holds the number writes
    nowhere, never into a file opened later under it. Never raises."""
    try:
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for fd, ident in fds.items():
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == ident and fd != null:
                    os.dup2(null, fd, inheritable=False)
            except OSError:
                pass
    finally:
        os.close(null)


_PROT_READ, _PROT_WRITE = 1, 2
_MAP_PRIVATE, _MAP_FIXED, _MAP_ANONYMOUS = 0x02, 0x10, 0x20


def privatize(view):
    """Make the memory under ``view`` (a writable buffer over shared memory) private to this process,
    content kept: its pages are replaced by anonymous private ones (``mmap MAP_FIXED``). What this
    process writes there afterwards no other process sees. Linux only; returns False when it could not.

    For a forked copy of a worker: its writes to the shared counters must not reach the master."""
    if not _IS_LINUX:
        return False
    import mmap

    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    n = view.nbytes
    if n == 0:
        return True
    buf = (ctypes.c_char * n).from_buffer(view)
    addr = ctypes.addressof(buf)
    del buf
    page = mmap.PAGESIZE
    start = addr & ~(page - 1)
    length = ((addr + n + page - 1) & ~(page - 1)) - start
    saved = ctypes.string_at(start, length)
    fn = _libc.mmap
    fn.restype = ctypes.c_void_p
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    got = fn(start, length, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_FIXED | _MAP_ANONYMOUS, -1, 0)
    if got != start:
        return False
    ctypes.memmove(start, saved, length)
    return True


def own_create_time():
    """This process's create time, UNIX seconds (psutil's value); 0.0 if it cannot be read."""
    try:
        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001
        return 0.0

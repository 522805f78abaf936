"""Stressors: real CPU, memory and I/O pressure applied while the flows run.

Each stressor owns one or more child processes and nothing else::

    parent (runner)                           children
    ───────────────                           ────────
    CpuStressor ──spawn──► _cpu_main × cores   pinned duty-cycle burners
                 ◄─pipe── BurnStarted          (one message, then silent)
    MemoryStressor ─spawn─► _memory_main       mmap ballast, touched, held
                 ◄─pipe── BallastBaseline / BallastStep / BallastReady
                 ──pipe─► "stop"
    IoStressor ──spawn──► _io_main × workers   disk loop + TCP echo (127.0.0.1)
                 ◄─pipe── IoReport (every io_report_interval_s, and at stop)
                 ──pipe─► "stop"

Children are never started here directly: ``start(spawn)`` takes loadgen's
registering function ``spawn(target, args, name) -> process`` (a started
``multiprocess.Process``-like object).  Targets are module-level functions
and every argument is picklable, so the "fork" and "spawn" start methods
both work.  Every child ignores SIGINT (the parent decides when to stop),
exits cleanly (code 0) on SIGTERM, and dies with its parent
(``PR_SET_PDEATHSIG`` plus a ``getppid()`` check in its loop).

``stop(timeout_s)`` asks politely, waits, then terminate → join → kill →
join; it is idempotent and is what ``__exit__`` calls.  ``stats()`` never
blocks and returns a plain ``dict``; ``describe()`` is one line for reports.
"""

from __future__ import annotations

import enum
import logging
import math
import mmap
import operator
import os
import random
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field

from ..config import TIMING
from ..engine import _proc
from ..errors import StressorFailed, UsageError

log = logging.getLogger(__name__)

MB = 1024 * 1024
_PAGE = mmap.PAGESIZE
_LOOPBACK = "127.0.0.1"  # the only address the I/O stressor ever touches

# Linux constants the stdlib does not name.
_MADV_POPULATE_WRITE = 23  # Linux ≥ 5.14: fault every page in, writable, in one call


# Each CPU burner period's length is drawn uniformly within ± this fraction of
# TIMING.cpu_period_s. Why: with tick-based accounting /proc/stat charges a whole tick (4 ms at
# HZ=250) to whatever runs when the tick fires; a fixed period keeps the busy window at a fixed
# phase of the tick grid, and at 50 % that read +1 point high on this machine.
CPU_PERIOD_JITTER = 0.25
# The burner's feedback may owe or be owed at most this many periods of CPU; beyond that the debt
# is written off, so a burst of contention from other processes is not "repaid" as a 100 % spike.
CPU_MAX_DEBT_PERIODS = 2.0
IO_CHUNK_BYTES = 1 * MB  # one write()/readv() of the disk loop
MEMORY_HEADROOM = 0.9  # ballast may take at most this share of available memory


class StressorState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


# ---------------------------------------------------------------- messages (child → parent)


@dataclass(frozen=True)
class BurnStarted:
    """A CPU burner is pinned and burning: its clocks at that moment."""

    core: int | None
    monotonic_s: float
    cpu_s: float


@dataclass(frozen=True)
class BallastBaseline:
    rss_bytes: int  # the child's RSS before any ballast
    monotonic_s: float


@dataclass(frozen=True)
class BallastStep:
    step: int  # 1-based
    allocated_bytes: int  # cumulative, all touched
    monotonic_s: float


@dataclass(frozen=True)
class BallastReady:
    allocated_bytes: int
    alloc_s: float  # first allocation → last page touched, step intervals included
    monotonic_s: float


@dataclass(frozen=True)
class ChildError:
    text: str


@dataclass(frozen=True)
class IoReport:
    """Cumulative figures of one I/O worker since it began its loops."""

    worker: int
    final: bool
    elapsed_s: float
    files: int
    bytes_written: int
    bytes_read: int
    verify_errors: int
    write_busy_s: float  # time spent in write + fsync
    read_busy_s: float  # time spent reading back
    fsync_write: dict  # LatencyHistogram.to_dict(), one file's write + fsync
    read_back: dict  # LatencyHistogram.to_dict(), one file's read
    tcp_round_trips: int
    tcp_bytes: int  # payload bytes sent by the client (the same number comes back)
    tcp_rtt: dict  # LatencyHistogram.to_dict()
    error: str = ""


# ---------------------------------------------------------------- latency histogram


@dataclass
class LatencyHistogram:
    """Log-bucketed latencies (seconds) with about 1 % relative resolution.

    Plain data: ``record``, ``merge``, ``to_dict`` / ``from_dict`` and
    ``percentile(q)`` (q in 0–100, seconds, ``nan`` when empty).
    """

    buckets: dict = field(default_factory=dict)  # bucket index → count
    count: int = 0

    _FLOOR_S = 1e-7
    _LOG_BASE = math.log(1.02)

    def record(self, seconds):
        i = int(math.log(max(seconds, self._FLOOR_S) / self._FLOOR_S) / self._LOG_BASE)
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.count += 1

    def merge(self, other):
        for i, n in other.buckets.items():
            self.buckets[i] = self.buckets.get(i, 0) + n
        self.count += other.count
        return self

    def percentile(self, q):
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(self.count * q / 100.0))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                return self._FLOOR_S * math.exp((i + 0.5) * self._LOG_BASE)
        return math.nan  # pragma: no cover - rank ≤ count

    def to_dict(self):
        return {"buckets": dict(self.buckets), "count": self.count}

    @classmethod
    def from_dict(cls, d):
        return cls({int(k): int(v) for k, v in d["buckets"].items()}, int(d["count"]))


# ---------------------------------------------------------------- child plumbing


def _child_setup(parent_pid):
    """First thing every stressor child does.

    SIGINT is ignored: a Ctrl-C reaches the whole process group and the
    parent must decide the order of the shutdown.  SIGTERM exits cleanly
    (``finally`` blocks run).  The kernel sends SIGTERM when the parent dies
    (note: when the *thread* that forked us exits — loadgen spawns from the
    main thread); a parent that died before prctl took effect is caught by
    the ``getppid`` check right after: returns False when already orphaned.
    """
    from ..engine import _proc

    _proc.ignore_sigint()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _proc.set_pdeathsig(signal.SIGTERM)
    return not _orphaned(parent_pid)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(0)


def _orphaned(parent_pid):
    return os.getppid() != parent_pid


def _own_rss_bytes():
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        import psutil

        return psutil.Process().memory_info().rss


def _send(conn, msg):
    """Send to the parent; a parent that is gone is not an error here."""
    try:
        conn.send(msg)
        return True
    except (OSError, EOFError, ValueError):
        return False


# ---------------------------------------------------------------- child: CPU burner


def _cpu_main(conn, core, load_percent, period_s, jitter, max_debt_periods, parent_pid):
    if not _child_setup(parent_pid):
        return
    if core is not None:
        os.sched_setaffinity(0, {core})
    _send(conn, BurnStarted(core, time.monotonic(), time.process_time()))
    conn.close()
    _burn(load_percent / 100.0, period_s, jitter, period_s * max_debt_periods, parent_pid)


def _burn(load, period_s, jitter, max_debt_s, parent_pid):
    """Hold ``load`` (0–1] of one core until SIGTERM or the parent's death.

    Feedback on the process's own CPU time: at the start of each period the
    burner computes the CPU seconds it owes (load × wall time − CPU time,
    since its reference point), spins for load × period plus that debt,
    then sleeps to the end of the period.  Sleep overshoot, time slices
    lost to other processes and the cost of waking up all show up as debt
    and are repaid in the next periods; the debt is clamped to ±max_debt_s
    (anti-windup) by moving the reference.  Period lengths are drawn within
    ±``jitter`` of ``period_s`` (see :data:`CPU_PERIOD_JITTER`).
    """
    clock = time.monotonic
    cpu_clock = time.process_time  # user + system of this process, ns resolution on Linux
    sleep = time.sleep
    getppid = os.getppid
    draw = random.Random().random
    wall_ref = clock()
    cpu_ref = cpu_clock()
    period_start = wall_ref
    while True:
        if getppid() != parent_pid:
            return
        now = clock()
        cpu = cpu_clock()
        owed = load * (now - wall_ref) - (cpu - cpu_ref)
        if owed > max_debt_s:
            cpu_ref -= owed - max_debt_s
            owed = max_debt_s
        elif owed < -max_debt_s:
            cpu_ref += -max_debt_s - owed
            owed = -max_debt_s
        # Spin on the wall clock (vDSO, user mode: ~70 ns a call) rather than on
        # process_time (a real syscall here, ~700 ns, which turned most of the
        # burn into system time); a slice lost to preemption during the spin
        # is seen as debt at the next period.
        length = period_s * (1.0 + jitter * (2.0 * draw() - 1.0))
        until = now + load * length + owed
        while clock() < until:
            pass
        period_start += length
        rest = period_start - clock()
        if rest > 0:
            sleep(rest)
        else:  # fell behind (100 %, or starved): restart the grid from now
            period_start = clock()


# ---------------------------------------------------------------- child: memory ballast


def _memory_main(conn, total_bytes, steps, step_interval_s, huge_pages, parent_pid):
    if not _child_setup(parent_pid):
        return
    chunks = []
    try:
        _send(conn, BallastBaseline(_own_rss_bytes(), time.monotonic()))
        t0 = time.monotonic()
        allocated = 0
        sizes = _split_pages(total_bytes, steps)
        for step, size in enumerate(sizes, 1):
            if conn.poll(0):
                return  # stopped before (or while) growing
            chunks.append(_touched_block(size, huge_pages))
            allocated += size
            _send(conn, BallastStep(step, allocated, time.monotonic()))
            if step < len(sizes) and step_interval_s > 0 and conn.poll(step_interval_s):
                return  # "stop" (or the parent closed the pipe) while stepping
        now = time.monotonic()
        _send(conn, BallastReady(allocated, now - t0, now))
        while not _orphaned(parent_pid):
            if conn.poll(TIMING.ballast_check_s):
                return  # "stop", or EOF: either way the ballast goes
    except (MemoryError, OSError) as e:
        _send(conn, ChildError(f"ballast allocation failed: {e}"))
        raise SystemExit(1)
    finally:
        for m in chunks:
            m.close()


def _split_pages(total_bytes, steps):
    """``total_bytes`` (page-rounded) split into ``steps`` page-multiple sizes."""
    pages = -(-total_bytes // _PAGE)
    base, extra = divmod(pages, steps)
    return [(base + (i < extra)) * _PAGE for i in range(steps) if base + (i < extra)]


def _touched_block(size, huge_pages=False):
    """An anonymous mapping of ``size`` bytes with every page resident.

    MADV_POPULATE_WRITE faults every page in, writable, in one call (no
    Python loop, no per-page trap: ~0.3 s/GiB here against ~0.5–1.2 s for
    touching one byte per page); on
    kernels before 5.14 one byte per page is written through a strided
    memoryview (still one C loop).  ``huge_pages`` asks for transparent
    huge pages first (MADV_HUGEPAGE).
    """
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge_pages and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    try:
        m.madvise(_MADV_POPULATE_WRITE)
    except OSError:
        view = memoryview(m)
        try:
            view[::_PAGE] = b"\x01" * (size // _PAGE)
        finally:
            view.release()
    return m


# ---------------------------------------------------------------- child: I/O worker


def _io_main(conn, worker, top_dir, file_bytes, tcp, tcp_block_bytes, parent_pid):
    """Disk loop and TCP client in threads; the main thread reports and waits for "stop".

    Everything from ``_child_setup`` on runs under the ``finally`` that
    cleans up: a SIGTERM (the parent's death, or its terminate) can land
    anywhere, set-up included, and an orphan must still remove its files
    and, if it is the last one out, the private dir.
    """
    work_dir = os.path.join(top_dir, f"worker-{worker}")
    stop = threading.Event()
    figures = _IoFigures(worker)
    threads = []
    server = None
    try:
        if not _child_setup(parent_pid):
            return  # orphaned already: the finally below removes the private dir
        os.mkdir(work_dir, 0o700)
        threads.append(threading.Thread(target=_disk_loop, args=(work_dir, file_bytes, figures, stop),
                                        name="disk", daemon=True))
        if tcp:
            server = _EchoServer(tcp_block_bytes, stop)
            threads.append(threading.Thread(target=_tcp_client_loop,
                                            args=(server.port, tcp_block_bytes, figures, stop),
                                            name="tcp-client", daemon=True))
        figures.begin()
        for t in threads:
            t.start()
        while not _orphaned(parent_pid) and not figures.error:
            if conn.poll(TIMING.io_report_s):
                break  # "stop" or EOF
            if not _send(conn, figures.report(final=False)):
                break
    except OSError as e:
        figures.error = figures.error or f"{type(e).__name__}: {e}"
    finally:
        # Cleanup must not be cut short by a second SIGTERM (the parent's
        # terminate after its grace); a SIGKILL still can, and then the
        # parent removes the whole private dir itself.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop.set()
        for t in threads:
            if t.ident is not None:  # a SIGTERM may land between creating and starting them
                t.join(TIMING.io_thread_join_s)
        if server is not None:
            server.close()
        shutil.rmtree(work_dir, ignore_errors=True)
        if _orphaned(parent_pid):  # nobody will remove the private dir: the last one out does
            _remove_if_empty(top_dir)
        _send(conn, figures.report(final=True))
    if figures.error:
        raise SystemExit(1)


def _remove_if_empty(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


class _IoFigures:
    """Counters shared by an I/O worker's threads (one lock, tiny critical sections)."""

    def __init__(self, worker):
        self.worker = worker
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.files = self.bytes_written = self.bytes_read = self.verify_errors = 0
        self.write_busy_s = self.read_busy_s = 0.0
        self.tcp_round_trips = self.tcp_bytes = 0
        self.fsync_write = LatencyHistogram()
        self.read_back = LatencyHistogram()
        self.tcp_rtt = LatencyHistogram()
        self.error = ""

    def begin(self):
        self.t0 = time.monotonic()

    def report(self, final):
        with self.lock:
            return IoReport(
                worker=self.worker, final=final, elapsed_s=time.monotonic() - self.t0,
                files=self.files, bytes_written=self.bytes_written, bytes_read=self.bytes_read,
                verify_errors=self.verify_errors, write_busy_s=self.write_busy_s, read_busy_s=self.read_busy_s,
                fsync_write=self.fsync_write.to_dict(), read_back=self.read_back.to_dict(),
                tcp_round_trips=self.tcp_round_trips, tcp_bytes=self.tcp_bytes,
                tcp_rtt=self.tcp_rtt.to_dict(), error=self.error,
            )


def _disk_loop(work_dir, file_bytes, figures, stop):
    """Write one file, fsync, drop it from the page cache, read it back, verify, remove.

    The page cache is dropped (POSIX_FADV_DONTNEED, the pages are clean after
    fsync) so the read-back is a real read.  The first 8 bytes carry the
    cycle number, so a stale read fails verification.  At most one file of
    ``file_bytes`` exists per worker at any time.
    """
    data = bytearray(os.urandom(file_bytes))
    back = bytearray(file_bytes)
    chunk = IO_CHUNK_BYTES
    path = os.path.join(work_dir, "ballast.bin")
    cycle = 0
    try:
        while not stop.is_set():
            cycle += 1
            if file_bytes >= 8:
                struct.pack_into("<Q", data, 0, cycle)
            t = time.perf_counter()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                done = 0
                while done < file_bytes:
                    done += os.write(fd, view[done:done + chunk])
                os.fsync(fd)
            finally:
                os.close(fd)
            write_s = time.perf_counter() - t
            t = time.perf_counter()
            fd = os.open(path, os.O_RDONLY)
            try:
                if hasattr(os, "posix_fadvise"):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                view = memoryview(back)
                got = 0
                while got < file_bytes:
                    n = os.readv(fd, [view[got:got + chunk]])
                    if n == 0:
                        break
                    got += n
            finally:
                os.close(fd)
            read_s = time.perf_counter() - t
            os.unlink(path)
            ok = got == file_bytes and back == data
            with figures.lock:
                figures.files += 1
                figures.bytes_written += file_bytes
                figures.bytes_read += got
                figures.verify_errors += not ok
                figures.write_busy_s += write_s
                figures.read_busy_s += read_s
                figures.fsync_write.record(write_s)
                figures.read_back.record(read_s)
    except OSError as e:
        figures.error = f"disk loop: {type(e).__name__}: {e}"
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


class _EchoServer:
    """A tiny echo server on 127.0.0.1, ephemeral port; one thread per connection."""

    def __init__(self, block_bytes, stop):
        self.block_bytes = block_bytes
        self.stop = stop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((_LOOPBACK, 0))
        self.sock.listen(4)
        self.sock.settimeout(TIMING.io_socket_timeout_s)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, name="echo-accept", daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), name="echo", daemon=True).start()

    def _echo(self, conn):
        buf = bytearray(self.block_bytes)
        view = memoryview(buf)
        with conn:
            conn.settimeout(TIMING.io_socket_timeout_s)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not self.stop.is_set():
                try:
                    n = conn.recv_into(view)
                    if not n:
                        return
                    conn.sendall(view[:n])
                except socket.timeout:
                    continue
                except OSError:
                    return

    def close(self):
        self.sock.close()
        self.thread.join(TIMING.io_thread_join_s)


def _tcp_client_loop(port, block_bytes, figures, stop):
    """Round trips of one block each: send it, wait until all of it has come back."""
    block = os.urandom(block_bytes)
    buf = bytearray(block_bytes)
    view = memoryview(buf)
    try:
        with socket.create_connection((_LOOPBACK, port), timeout=TIMING.io_socket_timeout_s) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while not stop.is_set():
                t = time.perf_counter()
                s.sendall(block)
                got = 0
                while got < block_bytes:
                    n = s.recv_into(view[got:])
                    if not n:
                        raise ConnectionError("echo server closed the connection")
                    got += n
                rtt = time.perf_counter() - t
                with figures.lock:
                    figures.tcp_round_trips += 1
                    figures.tcp_bytes += block_bytes
                    figures.tcp_rtt.record(rtt)
    except socket.timeout:
        if not stop.is_set():
            figures.error = "tcp: a round trip timed out"
    except OSError as e:
        if not stop.is_set():
            figures.error = f"tcp: {type(e).__name__}: {e}"


# ---------------------------------------------------------------- parent side


def _close(conn):
    try:
        conn.close()
    except OSError:
        pass


def _pipe():
    import multiprocess

    return multiprocess.Pipe()


def _check_int(value, what, low, high=None):
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # int, numpy integers; not 2.0, not "2"
    except TypeError:
        raise UsageError(f"{what}: expected a whole number, got {value!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UsageError(f"{what}: must be {bound}, got {value!r}")
    return value


def _check_number(value, what, low, high=None, low_inclusive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{what}: expected a finite number, got {value!r}")
    if (value < low if low_inclusive else value <= low) or (high is not None and value > high):
        lo = f"{'at least' if low_inclusive else 'greater than'} {low}"
        raise UsageError(f"{what}: must be {lo}{f' and at most {high}' if high is not None else ''}, got {value!r}")
    return float(value)


def _usable_cores():
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return list(range(os.cpu_count() or 1))


class _Stressor:
    """Life cycle shared by the stressors: NEW → RUNNING → STOPPED, once."""

    kind = "?"

    def __init__(self):
        self._state = StressorState.NEW
        self._procs = []
        self._t_start = None
        self._t_stop = None

    @property
    def state(self):
        return self._state

    @property
    def pids(self):
        return [p.pid for p in self._procs]

    def _set_state(self, state):
        log.debug("%s stressor: %s → %s", self.kind, self._state.value, state.value)
        self._state = state

    def start(self, spawn):
        """Start the child process(es) through ``spawn(target, args, name)``; returns ``self``.

        Does not wait for the children to be ready.  Raises :class:`UsageError`
        when called twice.
        """
        if self._state is not StressorState.NEW:
            raise UsageError(f"{self.kind} stressor: start() called when already {self._state.value}")
        self._t_start = time.monotonic()
        self._set_state(StressorState.RUNNING)
        try:
            self._start(spawn)
        except BaseException:
            self.stop(timeout_s=0)
            raise
        return self

    def stop(self, timeout_s=TIMING.stressor_stop_grace_s):
        """Stop every child: ask politely, wait ``timeout_s``, then terminate → join → kill.

        Blocks for at most ``timeout_s`` + 2 × ``TIMING.kill_grace_s``.
        Idempotent; ``stats()`` stays available afterwards.
        """
        if self._state is not StressorState.RUNNING:
            return
        deadline = time.monotonic() + max(0.0, timeout_s)
        try:
            self._before_stop()
            self._request_stop(deadline)
            left = _proc.end_processes(self._procs, polite_s=deadline - time.monotonic())
            if left:
                log.error("%s stressor: pids %s survived SIGKILL", self.kind, [p.pid for p in left])
        finally:
            self._t_stop = time.monotonic()
            self._after_stop()
            self._set_state(StressorState.STOPPED)

    def _spawn(self, spawn, target, args, name):
        proc = spawn(target, args, name)
        self._procs.append(proc)
        return proc

    def _proc_stats(self):
        return {
            "alive": sum(p.is_alive() for p in self._procs),
            "exitcodes": [p.exitcode for p in self._procs],
        }

    def _elapsed_s(self):
        if self._t_start is None:
            return 0.0
        return (self._t_stop or time.monotonic()) - self._t_start

    # hooks
    def _start(self, spawn):  # pragma: no cover - abstract
        raise NotImplementedError

    def _before_stop(self):
        pass

    def _request_stop(self, deadline):
        """Ask the children to exit; may wait for goodbyes until ``deadline`` (monotonic s)."""

    def _after_stop(self):
        pass

    def __enter__(self):
        if self._state is StressorState.NEW:
            raise UsageError(f"{self.kind} stressor: use `with stressor.start(spawn):`")
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def __repr__(self):
        return f"<{type(self).__name__} {self._state.value}: {self.describe()}>"


class CpuStressor(_Stressor):
    """Hold ``load_percent`` of each chosen core busy with a duty-cycle burner.

    ``cores``: None → every usable core (``os.sched_getaffinity``); an int n →
    the first n usable cores; an iterable → those CPU ids (each must be
    usable).  One child per core, pinned to it.  Each child loops over
    ``period_s`` periods: busy for load % of it, asleep for the rest, with a
    feedback loop on its own CPU time that repays sleep overshoot and
    preemption (see :func:`_burn`).

    ``load_percent`` is the burners' own share of each core: on an idle
    machine that is what ``psutil.cpu_percent`` shows; other work on the
    same cores (the flows under test) comes on top of it rather than being
    absorbed, so the pressure applied does not depend on the workload.
    (stress-ng ``--cpu-load`` times its duty cycle on the wall clock and
    yields instead: 86 % of its own at 90 % with 4 points of other load.)
    """

    kind = "cpu"

    def __init__(self, load_percent, cores=None, *, period_s=TIMING.cpu_period_s):
        super().__init__()
        self.load_percent = _check_number(load_percent, "cpu load_percent", 1, 100)
        self.period_s = _check_number(period_s, "cpu period_s", 0.001, 1.0)
        usable = _usable_cores()
        if cores is None:
            self.cores = usable
        elif hasattr(cores, "__index__") and not isinstance(cores, bool):  # a count
            _check_int(cores, "cpu cores", 1, len(usable))
            self.cores = usable[:cores]
        else:
            try:
                chosen = sorted({_check_int(c, "cpu core id", 0) for c in cores})
            except TypeError:
                raise UsageError(f"cpu cores: expected None, a count or CPU ids, got {cores!r}") from None
            missing = [c for c in chosen if c not in usable]
            if not chosen or missing:
                raise UsageError(f"cpu cores: {missing or 'none'} not usable here (usable: {usable})")
            self.cores = chosen
        self._conns = []
        self._started = {}  # pid → BurnStarted
        self._last = {}  # pid → (cpu_s, monotonic_s) last seen by the parent

    def describe(self):
        return (f"cpu: {self.load_percent:g}% of {len(self.cores)} core(s) {self.cores}, "
                f"{self.period_s * 1000:g} ms duty cycle")

    def _start(self, spawn):
        parent = os.getpid()
        for core in self.cores:
            here, there = _pipe()
            self._conns.append(here)
            try:
                self._spawn(spawn, _cpu_main,
                            (there, core, self.load_percent, self.period_s, CPU_PERIOD_JITTER,
                             CPU_MAX_DEBT_PERIODS, parent),
                            f"loadgen-cpu-{core}")
            finally:
                _close(there)

    def _poll(self):
        import psutil

        for proc, conn in zip(self._procs, self._conns):
            if proc.pid not in self._started:
                try:
                    if conn.poll(0):
                        self._started[proc.pid] = conn.recv()
                except (EOFError, OSError):
                    pass
            if proc.pid in self._started:
                try:
                    t = psutil.Process(proc.pid).cpu_times()
                    self._last[proc.pid] = (t.user + t.system, time.monotonic())
                except psutil.Error:
                    pass

    def wait_started(self, timeout_s):
        """Block until every burner is pinned and burning; True if so within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._poll()
            if len(self._started) == len(self._procs) or time.monotonic() >= deadline:
                return len(self._started) == len(self._procs)
            time.sleep(TIMING.stressor_poll_s)

    def stats(self):
        """What the burners achieved, from the parent's view of their CPU time.

        ``per_core_percent``: core → CPU time / wall time since that burner
        began burning (start-up excluded), in percent of one core;
        ``achieved_percent``: their mean.  Frozen at ``stop()``.
        """
        if self._state is StressorState.RUNNING:
            self._poll()
        per_core = {}
        for proc in self._procs:
            b, last = self._started.get(proc.pid), self._last.get(proc.pid)
            if b is None or last is None or last[1] <= b.monotonic_s:
                continue
            per_core[b.core] = round(100.0 * (last[0] - b.cpu_s) / (last[1] - b.monotonic_s), 2)
        return {
            "kind": self.kind,
            "state": self._state.value,
            "load_percent": self.load_percent,
            "cores": list(self.cores),
            "period_s": self.period_s,
            "per_core_percent": per_core,
            "achieved_percent": round(sum(per_core.values()) / len(per_core), 2) if per_core else None,
            "elapsed_s": round(self._elapsed_s(), 3),
            **self._proc_stats(),
        }

    def _before_stop(self):
        self._poll()  # last CPU-time reading while the burners still exist

    def _request_stop(self, deadline):
        for p in self._procs:  # a burner's SIGTERM is its polite stop: exit code 0
            if p.is_alive():
                try:
                    p.terminate()
                except (OSError, ValueError):
                    pass

    def _after_stop(self):
        for c in self._conns:
            _close(c)


class MemoryStressor(_Stressor):
    """Ballast of ``total_mb`` MiB, allocated and touched (resident) in one child.

    It grows in ``steps`` equal steps ``step_interval_s`` apart and is held
    until ``stop()``.  Refuses (UsageError) a size above
    ``MEMORY_HEADROOM`` of the memory available when constructed.
    ``huge_pages``: ask for transparent huge pages.  Off by default: in
    this VM they fault in faster at best (0.1 s/GiB against 0.3 s) but
    much slower when the host must first back fresh 2 MiB blocks (up to
    1.8 s against 0.8 s), and plain 4 KiB pages are what applications'
    heaps are made of.
    """

    kind = "memory"

    def __init__(self, total_mb, steps=1, step_interval_s=0.0, *, huge_pages=False):
        super().__init__()
        import psutil

        self.total_mb = _check_number(total_mb, "memory total_mb", 0, low_inclusive=False)
        self.steps = _check_int(steps, "memory steps", 1)
        self.step_interval_s = _check_number(step_interval_s, "memory step_interval_s", 0)
        if not isinstance(huge_pages, bool):
            raise UsageError(f"memory huge_pages: expected True or False, got {huge_pages!r}")
        self.huge_pages = huge_pages
        self.total_bytes = int(self.total_mb * MB)
        if self.total_bytes < _PAGE * self.steps:
            raise UsageError(f"memory total_mb: {total_mb!r} is less than one page per step ({self.steps} steps)")
        available_mb = psutil.virtual_memory().available / MB
        if self.total_mb > available_mb * MEMORY_HEADROOM:
            raise UsageError(f"memory total_mb: {total_mb!r} MB is more than {MEMORY_HEADROOM:.0%} "
                             f"of the {available_mb:.0f} MB available")
        self._conn = None
        self._baseline = None
        self._steps_done = None
        self._ready = None
        self._error = ""
        self._final = None

    def describe(self):
        steps = f" in {self.steps} steps {self.step_interval_s:g} s apart" if self.steps > 1 else ""
        return f"memory: {self.total_mb:g} MB ballast{steps}, resident, held"

    def _start(self, spawn):
        here, there = _pipe()
        self._conn = here
        try:
            self._spawn(spawn, _memory_main,
                        (there, self.total_bytes, self.steps, self.step_interval_s, self.huge_pages,
                         os.getpid()),
                        "loadgen-memory")
        finally:
            _close(there)

    def _poll(self, timeout_s=0.0):
        if self._conn is None or self._conn.closed:
            return
        try:
            while self._conn.poll(timeout_s):
                msg = self._conn.recv()
                timeout_s = 0.0
                if isinstance(msg, BallastBaseline):
                    self._baseline = msg
                elif isinstance(msg, BallastStep):
                    self._steps_done = msg
                elif isinstance(msg, BallastReady):
                    self._ready = msg
                elif isinstance(msg, ChildError):
                    self._error = msg.text
                else:
                    log.warning("memory stressor: unknown message %r", msg)
        except (EOFError, OSError):
            _close(self._conn)

    def wait_resident(self, timeout_s):
        """Block until the whole ballast is resident: True, or False after ``timeout_s``.

        Raises :class:`StressorFailed` if the child reports an allocation
        error or dies first.
        """
        deadline = time.monotonic() + timeout_s
        while self._ready is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._poll(min(left, TIMING.stressor_poll_s))
            if self._error:
                raise StressorFailed(f"memory stressor: {self._error}")
            if self._ready is None and self._procs and not self._procs[0].is_alive():
                self._poll()
                if self._ready is None:
                    raise StressorFailed(f"memory stressor: child pid {self._procs[0].pid} exited "
                                         f"(code {self._procs[0].exitcode}) before its ballast was resident")
        if self._final is None:
            self._final = self._measure()
        return True

    def _measure(self):
        import psutil

        try:
            rss = psutil.Process(self._procs[0].pid).memory_info().rss
        except (psutil.Error, IndexError):
            return None
        return rss

    def stats(self):
        """Resident ballast in MB (child RSS, read here, minus its pre-ballast RSS) and timings.

        ``time_to_resident_s``: ``start()`` → last page touched (both on
        CLOCK_MONOTONIC); ``alloc_s``: the child's own allocation time.
        Figures are None until known.  After ``stop()`` the last reading is kept.
        """
        if self._state is StressorState.RUNNING:
            self._poll()
            rss = self._measure()
            if rss is not None:
                self._final = rss
        rss = self._final
        ballast = None
        if rss is not None and self._baseline is not None:
            ballast = (rss - self._baseline.rss_bytes) / MB
        return {
            "kind": self.kind,
            "state": self._state.value,
            "total_mb": self.total_mb,
            "steps": self.steps,
            "steps_done": self._steps_done.step if self._steps_done else 0,
            "ready": self._ready is not None,
            "rss_mb": round(rss / MB, 2) if rss is not None else None,
            "resident_mb": round(ballast, 2) if ballast is not None else None,
            "size_error_percent": round(100.0 * (ballast - self.total_mb) / self.total_mb, 3)
            if ballast is not None else None,
            "time_to_resident_s": round(self._ready.monotonic_s - self._t_start, 4) if self._ready else None,
            "alloc_s": round(self._ready.alloc_s, 4) if self._ready else None,
            "error": self._error,
            "elapsed_s": round(self._elapsed_s(), 3),
            **self._proc_stats(),
        }

    def _before_stop(self):
        self._poll()
        rss = self._measure()
        if rss is not None:
            self._final = rss

    def _request_stop(self, deadline):
        if self._conn is not None and not self._conn.closed:
            _send(self._conn, "stop")

    def _after_stop(self):
        if self._conn is not None:
            _close(self._conn)


class IoStressor(_Stressor):
    """Disk and loopback-TCP pressure from ``workers`` child processes.

    Each worker, inside its own directory of a private temp dir
    (``tempfile.mkdtemp`` under ``dir``, mode 0700, removed by ``stop()``),
    loops: write ``file_bytes``, fsync, drop from the page cache, read back,
    verify, remove.  At most ``workers × file_bytes`` bytes are on disk at
    once, and that must fit in ``max_total_bytes``.  With ``tcp``, each
    worker also runs an echo server on 127.0.0.1 (ephemeral port) and a
    client doing round trips of ``tcp_block_bytes`` (≤ 64 KiB, so that a
    block always fits in the loopback socket buffers).  Each worker holds
    2 × ``file_bytes`` of memory (the pattern and the read-back buffer).
    ``start()`` raises :class:`UsageError` when ``dir`` has less free space
    than ``max_total_bytes``.
    """

    kind = "io"
    MAX_TCP_BLOCK_BYTES = 64 * 1024

    def __init__(self, file_bytes=4 * MB, max_total_bytes=64 * MB, tcp=True, workers=1, *,
                 tcp_block_bytes=16 * 1024, dir=None):
        super().__init__()
        self.file_bytes = _check_int(file_bytes, "io file_bytes", 1)
        self.max_total_bytes = _check_int(max_total_bytes, "io max_total_bytes", 1)
        if not isinstance(tcp, bool):
            raise UsageError(f"io tcp: expected True or False, got {tcp!r}")
        self.tcp = tcp
        self.workers = _check_int(workers, "io workers", 1, 64)
        self.tcp_block_bytes = _check_int(tcp_block_bytes, "io tcp_block_bytes", 1, self.MAX_TCP_BLOCK_BYTES)
        if self.file_bytes * self.workers > self.max_total_bytes:
            raise UsageError(f"io: {self.workers} worker(s) × file_bytes {self.file_bytes} exceeds "
                             f"max_total_bytes {self.max_total_bytes}")
        if dir is not None and not os.path.isdir(dir):
            raise UsageError(f"io dir: {dir!r} is not a directory")
        self.base_dir = dir
        self.temp_dir = None
        self._conns = []
        self._reports = {}  # worker → IoReport (latest)

    def describe(self):
        tcp = f" + TCP echo {self.tcp_block_bytes} B blocks on 127.0.0.1" if self.tcp else ""
        return (f"io: {self.workers} worker(s), {self.file_bytes / MB:g} MB files write+fsync+read "
                f"(≤ {self.max_total_bytes / MB:g} MB on disk){tcp}")

    def _start(self, spawn):
        base = self.base_dir or tempfile.gettempdir()
        free = shutil.disk_usage(base).free
        if free < self.max_total_bytes:
            raise UsageError(f"io: only {free / MB:.0f} MB free in {base}, "
                             f"need max_total_bytes {self.max_total_bytes / MB:.0f} MB")
        self.temp_dir = tempfile.mkdtemp(prefix="loadgen-io-", dir=base)
        parent = os.getpid()
        for w in range(self.workers):
            here, there = _pipe()
            self._conns.append(here)
            try:
                self._spawn(spawn, _io_main,
                            (there, w, self.temp_dir, self.file_bytes, self.tcp, self.tcp_block_bytes, parent),
                            f"loadgen-io-{w}")
            finally:
                _close(there)

    def _poll(self, timeout_s=0.0):
        for conn in self._conns:
            if conn.closed:
                continue
            try:
                while conn.poll(timeout_s):
                    msg = conn.recv()
                    if isinstance(msg, IoReport):
                        self._reports[msg.worker] = msg
                    else:
                        log.warning("io stressor: unknown message %r", msg)
            except (EOFError, OSError):
                _close(conn)

    def stats(self):
        """Throughput and latency summed over the workers (their latest reports).

        Disk: ``disk_write_mb_s`` / ``disk_read_mb_s`` (bytes over the time
        spent writing+fsyncing / reading, summed over workers), ``disk_mb_s``
        (written + read over elapsed: what the loop sustained),
        ``fsync_write_p50_ms`` / ``_p99_ms`` (write + fsync of one file),
        ``read_p50_ms`` / ``_p99_ms`` (reading one file back, page cache dropped).
        TCP: ``tcp_round_trips_per_s``, ``tcp_mb_s`` (payload, each way),
        ``tcp_rtt_p50_ms`` / ``_p99_ms``.  MB is MiB.  Rates use the longest
        worker's elapsed time.  ``errors``: worker → text.
        """
        if self._state is StressorState.RUNNING:
            self._poll()
        reps = list(self._reports.values())
        fsync, read, rtt = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
        for r in reps:
            fsync.merge(LatencyHistogram.from_dict(r.fsync_write))
            read.merge(LatencyHistogram.from_dict(r.read_back))
            rtt.merge(LatencyHistogram.from_dict(r.tcp_rtt))
        elapsed = max((r.elapsed_s for r in reps), default=0.0)
        total = {k: sum(getattr(r, k) for r in reps)
                 for k in ("files", "bytes_written", "bytes_read", "verify_errors", "tcp_round_trips", "tcp_bytes")}

        def rate(n, scale=1.0):
            return round(n / scale / elapsed, 3) if elapsed > 0 else 0.0

        def ms(h, q):
            v = h.percentile(q)
            return None if math.isnan(v) else round(v * 1000.0, 3)

        return {
            "kind": self.kind,
            "state": self._state.value,
            "workers": self.workers,
            "tcp": self.tcp,
            "temp_dir": self.temp_dir,
            "elapsed_s": round(elapsed, 3),
            **total,
            "disk_write_mb_s": round(sum(r.bytes_written / r.write_busy_s for r in reps if r.write_busy_s) / MB, 3),
            "disk_read_mb_s": round(sum(r.bytes_read / r.read_busy_s for r in reps if r.read_busy_s) / MB, 3),
            "disk_mb_s": rate(total["bytes_written"] + total["bytes_read"], MB),
            "fsync_write_p50_ms": ms(fsync, 50),
            "fsync_write_p99_ms": ms(fsync, 99),
            "read_p50_ms": ms(read, 50),
            "read_p99_ms": ms(read, 99),
            "tcp_round_trips_per_s": rate(total["tcp_round_trips"]),
            "tcp_mb_s": rate(total["tcp_bytes"], MB),
            "tcp_rtt_p50_ms": ms(rtt, 50),
            "tcp_rtt_p99_ms": ms(rtt, 99),
            "final_reports": sum(r.final for r in reps),
            "errors": {r.worker: r.error for r in reps if r.error},
            **self._proc_stats(),
        }

    def _request_stop(self, deadline):
        for conn in self._conns:
            if not conn.closed:
                _send(conn, "stop")
        # The final reports come just before the workers exit; wait for them.
        while time.monotonic() < deadline:
            self._poll(TIMING.stressor_poll_s)
            if all(r.final for r in self._reports.values()) and len(self._reports) == len(self._conns):
                break
            if not any(p.is_alive() for p in self._procs):
                self._poll()
                break

    def _after_stop(self):
        for conn in self._conns:
            _close(conn)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


__all__ = [
    "CpuStressor", "MemoryStressor", "IoStressor", "LatencyHistogram",
    "StressorFailed", "StressorState",
]

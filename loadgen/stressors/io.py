"""The I/O stressor: disk write/fsync/read-back loops and loopback TCP echo, in worker children.

:class:`IoStressor` (parent side) makes a private temp dir and starts one
:func:`_io_main` child per worker.  Each runs a disk loop (:func:`_disk_loop`)
and, with TCP, an echo server on 127.0.0.1 (:class:`_EchoServer`) with a
client doing round trips (:func:`_tcp_client_loop`), in threads; the main
thread sends an :class:`IoReport` every ``TIMING.io_report_s`` and a final
one when it stops ("stop", EOF, SIGTERM or its parent's death).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time
from dataclasses import dataclass

from ..config import TIMING, check_int
from ..errors import UsageError
from ._base import (
    MB,
    LatencyHistogram,
    Stressor,
    StressorState,
    child_setup,
    close,
    orphaned,
    pipe,
    send,
)

log = logging.getLogger("loadgen.stressors")

_LOOPBACK = "127.0.0.1"  # the only address the I/O stressor ever touches
IO_CHUNK_BYTES = 1 * MB  # one write()/readv() of the disk loop


# ---------------------------------------------------------------- message (child → parent)


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


# ---------------------------------------------------------------- child: I/O worker


def _io_main(conn, worker, top_dir, file_bytes, tcp, tcp_block_bytes, parent_pid):
    """Disk loop and TCP client in threads; the main thread reports and waits for "stop".

    Everything from ``child_setup`` on runs under the ``finally`` that
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
        if not child_setup(parent_pid):
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
        while not orphaned(parent_pid) and not figures.error:
            if conn.poll(TIMING.io_report_s):
                break  # "stop" or EOF
            if not send(conn, figures.report(final=False)):
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
        if orphaned(parent_pid):  # nobody will remove the private dir: the last one out does
            _remove_if_empty(top_dir)
        send(conn, figures.report(final=True))
    if figures.error:
        raise SystemExit(1)


def _remove_if_empty(path):
    """``os.rmdir(path)`` if it is empty; any OSError (not empty, gone) is ignored."""
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
            write_s = _write_file(path, data, file_bytes, chunk)
            got, read_s = _read_file(path, back, file_bytes, chunk)
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


def _write_file(path, data, file_bytes, chunk):
    """Write ``data`` to ``path`` (created or truncated, mode 0600) in ``chunk``-byte writes, fsync.

    Returns the seconds spent opening, writing, fsyncing and closing.  Raises OSError.
    """
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
    return time.perf_counter() - t


def _read_file(path, back, file_bytes, chunk):
    """Read ``path`` into ``back`` after dropping it from the page cache, ``chunk`` bytes a call.

    Returns ``(bytes read, seconds spent)``; stops early at end of file.  Raises OSError.
    """
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
    return got, time.perf_counter() - t


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


class IoStressor(Stressor):
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
        self.file_bytes = check_int(file_bytes, "io file_bytes", 1, strict=True)
        self.max_total_bytes = check_int(max_total_bytes, "io max_total_bytes", 1, strict=True)
        if not isinstance(tcp, bool):
            raise UsageError(f"io tcp: expected True or False, got {tcp!r}")
        self.tcp = tcp
        self.workers = check_int(workers, "io workers", 1, 64, strict=True)
        self.tcp_block_bytes = check_int(tcp_block_bytes, "io tcp_block_bytes", 1, self.MAX_TCP_BLOCK_BYTES, strict=True)
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
        """One line for reports: workers, file size, disk bound, TCP block size."""
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
            here, there = pipe()
            self._conns.append(here)
            try:
                self._spawn(spawn, _io_main,
                            (there, w, self.temp_dir, self.file_bytes, self.tcp, self.tcp_block_bytes, parent),
                            f"loadgen-io-{w}")
            finally:
                close(there)

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
                close(conn)

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
                send(conn, "stop")
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
            close(conn)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


"""Fast /proc readers for the monitor's hot path: per-process stat and PSS, machine CPU and memory.

They read ``/proc`` with bare ``os.open``/``os.read``/``os.pread``: the
monitor reads every watched process ten times a second, and psutil's
``memory_info()`` + ``cpu_percent()`` costs about 40 µs per process,
several times a raw read.

* :func:`read_stat` / :class:`StatReader` — ``/proc/PID/stat`` → :class:`StatInfo`;
* :func:`read_pss_mb` — ``/proc/PID/smaps_rollup`` (costly: paced by the monitor);
* :class:`SystemReader` — ``/proc/stat`` and ``/proc/meminfo``, kept open;
* :func:`read_io` — disk and network counters and load average (psutil).

Reading only: process identity, signals and kills are ``_proc``'s. Linux only.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import NamedTuple

# read_io runs in the monitor process: its messages keep the monitor's logger.
log = logging.getLogger("loadgen.monitor")

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _read_file(path, size=4096):
    """Whole content of a small /proc file as bytes; raises OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, size)
            if not chunk:
                break
            # Some /proc files (/proc/stat) return short reads on line
            # boundaries before the end, so only an empty read ends the file.
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class StatInfo(NamedTuple):
    """The fields of ``/proc/PID/stat`` the monitor needs.

    ``state``: one letter (``R``, ``S``, ``D``, ``Z``, ``X`` …).
    ``cpu_ticks``: utime + stime in clock ticks (:data:`CLOCK_TICKS` per second).
    ``rss_pages``: resident pages (:data:`PAGE_SIZE` bytes each).
    ``start_ticks``: start time in clock ticks after boot (the identity).
    ``num_threads``, ``pgid``, ``ppid``: as named.
    """

    state: str
    cpu_ticks: int
    rss_pages: int
    start_ticks: int
    num_threads: int
    pgid: int
    ppid: int


def read_stat(pid):
    """One read of ``/proc/PID/stat`` → :class:`StatInfo`, or None if the pid is gone.

    About 8 µs (open, read, close); never blocks on anything but the kernel.
    Raises only on unexpected errors (a malformed file). For a process read
    again and again, :class:`StatReader` is twice as fast.
    """
    try:
        data = _read_file(f"/proc/{pid}/stat", 1024)
    except OSError as exc:
        if exc.errno in (errno.ESRCH, errno.ENOENT):
            return None
        raise
    return _parse_stat(data)


class StatReader:
    """``/proc/PID/stat`` kept open and re-read with ``pread``: about 4 µs a read.

    The open file stays bound to the process it was opened for: once that
    process is reaped, reads fail with ESRCH even if the pid is reused, so
    a reader can never report on a stranger. Opening raises
    FileNotFoundError if the pid does not exist. Call :meth:`close`.
    """

    __slots__ = ("pid", "_fd")

    def __init__(self, pid):
        self.pid = pid
        self._fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)

    def read(self):
        """:class:`StatInfo`, or None once the process is reaped (or the reader closed)."""
        if self._fd is None:
            return None
        try:
            data = os.pread(self._fd, 2048, 0)
        except OSError as exc:
            if exc.errno in (errno.ESRCH, errno.ENOENT):
                return None
            raise
        if not data:
            return None
        return _parse_stat(data)

    def close(self):
        """Close the file; later reads return None. Safe to call twice."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _parse_stat(data):
    # The command name (field 2) is in parentheses and may contain spaces or
    # ')' itself, so split after the *last* ')'.
    # rest[0] is field 3 (state); field N is rest[N - 3]. Splitting stops
    # after rss (field 24): the ~28 fields beyond are not needed, and this
    # runs 500 times a second in the monitor.
    rest = data[data.rindex(b")") + 2:].split(None, 22)
    return StatInfo(
        state=rest[0].decode("ascii", "replace"),
        cpu_ticks=int(rest[11]) + int(rest[12]),
        rss_pages=int(rest[21]),
        start_ticks=int(rest[19]),
        num_threads=int(rest[17]),
        pgid=int(rest[2]),
        ppid=int(rest[1]),
    )


def process_table():
    """Every process of the machine: pid → :class:`StatInfo` (one ``/proc/PID/stat`` read each,
    ≈ 8 µs: a few ms for a few hundred processes). Processes that vanish meanwhile are left out."""
    table = {}
    try:
        names = os.listdir("/proc")
    except OSError:  # pragma: no cover - no /proc
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            st = read_stat(name)
        except (OSError, ValueError, IndexError):
            continue
        if st is not None:
            table[int(name)] = st
    return table


def read_pss_mb(pid):
    """Proportional set size of ``pid`` in MB from ``/proc/PID/smaps_rollup``, or None.

    Shared pages are divided among the processes that map them, so the sum
    over a forked pool counts them once. Costly: the kernel walks the page
    tables (roughly 0.1 ms for an idle Python process, a few ms for one
    holding a GB), so call it sparingly. Returns None if the pid is gone or
    the file is not readable (kernel < 4.14, other user).
    """
    try:
        data = _read_file(f"/proc/{pid}/smaps_rollup", 4096)
    except OSError:
        return None
    idx = data.find(b"\nPss:")
    if idx < 0:
        return None
    line = data[idx + 5:data.index(b"\n", idx + 5)]
    return int(line.split()[0]) / 1024.0  # the kernel reports kB


def is_dead_stat(st):
    """True if a :func:`read_stat` result means the process is gone (None, zombie, dead)."""
    return st is None or st.state in ("Z", "X", "x")


class SystemReader:
    """Machine CPU and memory from /proc, files kept open (≈20 µs a tick).

    Opening raises OSError without ``/proc``. Non-blocking reads; call
    :meth:`close`.
    """

    def __init__(self):
        self._stat_fd = os.open("/proc/stat", os.O_RDONLY)
        self._mem_fd = os.open("/proc/meminfo", os.O_RDONLY)
        # Only the "cpu" lines at the top of /proc/stat are needed; the
        # interrupt line after them can be many kB.
        self._stat_bytes = 512 + 160 * (os.cpu_count() or 1)
        self._last = self._cpu_times()

    def close(self):
        """Close both files; never raises."""
        for fd in (self._stat_fd, self._mem_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def _cpu_times(self):
        data = os.pread(self._stat_fd, self._stat_bytes, 0)
        out = []
        for line in data.split(b"\n"):
            if not line.startswith(b"cpu"):
                break
            f = line.split()
            if len(f) < 9:  # a line cut by the read size
                break
            vals = [int(x) for x in f[1:9]]  # user nice system idle iowait irq softirq steal
            total = sum(vals)
            # As psutil: iowait is idle time; guest time is already in user.
            out.append((total - vals[3] - vals[4], total))
        return out

    def cpu_percent(self):
        """(machine %, per-core % tuple) since the previous call, 0–100 each."""
        now = self._cpu_times()
        pcts = []
        for (b0, t0), (b1, t1) in zip(self._last, now):
            dt = t1 - t0
            pcts.append(0.0 if dt <= 0 else max(0.0, min(100.0, 100.0 * (b1 - b0) / dt)))
        self._last = now
        if not pcts:
            return 0.0, ()
        return pcts[0], tuple(pcts[1:])

    def memory_mb(self):
        """(available MB, swap used MB)."""
        data = os.pread(self._mem_fd, 8192, 0)
        vals = {}
        for key in (b"MemAvailable:", b"SwapTotal:", b"SwapFree:"):
            i = data.find(key)
            if i >= 0:
                vals[key] = int(data[i + len(key):data.index(b"kB", i)]) / 1024.0
        avail = vals.get(b"MemAvailable:", 0.0)
        return avail, vals.get(b"SwapTotal:", 0.0) - vals.get(b"SwapFree:", 0.0)


def read_io():
    """Disk and network counters and load average (cumulative, as psutil gives them).

    Keys: ``t`` (UNIX s), ``disk_read_bytes``, ``disk_write_bytes``,
    ``disk_read_count``, ``disk_write_count``, ``net_bytes_sent``,
    ``net_bytes_recv``, ``net_packets_sent``, ``net_packets_recv``,
    ``net_errin``, ``net_errout``, ``net_dropin``, ``net_dropout``,
    ``load_1``, ``load_5``, ``load_15``. A counter the system lacks (no
    disks in a container) is absent. Costs ≈0.3 ms.
    """
    import psutil

    out = {"t": time.time()}
    try:
        d = psutil.disk_io_counters()
        if d is not None:
            out.update(disk_read_bytes=d.read_bytes, disk_write_bytes=d.write_bytes,
                       disk_read_count=d.read_count, disk_write_count=d.write_count)
    except Exception:  # noqa: BLE001 - optional counters
        log.debug("disk counters unavailable", exc_info=True)
    try:
        n = psutil.net_io_counters()
        if n is not None:
            out.update(net_bytes_sent=n.bytes_sent, net_bytes_recv=n.bytes_recv,
                       net_packets_sent=n.packets_sent, net_packets_recv=n.packets_recv,
                       net_errin=n.errin, net_errout=n.errout, net_dropin=n.dropin, net_dropout=n.dropout)
    except Exception:  # noqa: BLE001
        log.debug("network counters unavailable", exc_info=True)
    try:
        out["load_1"], out["load_5"], out["load_15"] = os.getloadavg()
    except OSError:
        pass
    return out

"""The memory stressor: a ballast of anonymous memory, made resident and held in one child.

:class:`MemoryStressor` (parent side) starts one :func:`_memory_main` child,
which reports its RSS before any ballast (:class:`BallastBaseline`), grows
the ballast in steps of touched pages (:class:`BallastStep` each), reports
:class:`BallastReady` and holds it until "stop", EOF or its parent's death.
The parent measures the child's RSS itself.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from dataclasses import dataclass

from ..config import TIMING, check_int, check_number
from ..errors import StressorFailed, UsageError
from ._base import (
    MB,
    PAGE,
    ChildError,
    Stressor,
    StressorState,
    child_setup,
    close,
    orphaned,
    own_rss_bytes,
    pipe,
    send,
)

log = logging.getLogger("loadgen.stressors")

MEMORY_HEADROOM = 0.9  # ballast may take at most this share of available memory

# Linux constants the stdlib does not name.
_MADV_POPULATE_WRITE = 23  # Linux ≥ 5.14: fault every page in, writable, in one call


# ---------------------------------------------------------------- messages (child → parent)


@dataclass(frozen=True)
class BallastBaseline:
    """The memory child's RSS before any ballast, and when it was read (CLOCK_MONOTONIC s)."""

    rss_bytes: int  # the child's RSS before any ballast
    monotonic_s: float


@dataclass(frozen=True)
class BallastStep:
    """One ballast step is resident: cumulative bytes allocated so far, and when."""

    step: int  # 1-based
    allocated_bytes: int  # cumulative, all touched
    monotonic_s: float


@dataclass(frozen=True)
class BallastReady:
    """The whole ballast is resident: its size, the child's allocation time, and when."""

    allocated_bytes: int
    alloc_s: float  # first allocation → last page touched, step intervals included
    monotonic_s: float


# ---------------------------------------------------------------- child: memory ballast


def _memory_main(conn, total_bytes, steps, step_interval_s, huge_pages, parent_pid):
    """Child target: grow the ballast step by step, report, hold it until "stop"/EOF/orphaned."""
    if not child_setup(parent_pid):
        return
    chunks = []
    try:
        send(conn, BallastBaseline(own_rss_bytes(), time.monotonic()))
        t0 = time.monotonic()
        allocated = 0
        sizes = _split_pages(total_bytes, steps)
        for step, size in enumerate(sizes, 1):
            if conn.poll(0):
                return  # stopped before (or while) growing
            chunks.append(_touched_block(size, huge_pages))
            allocated += size
            send(conn, BallastStep(step, allocated, time.monotonic()))
            if step < len(sizes) and step_interval_s > 0 and conn.poll(step_interval_s):
                return  # "stop" (or the parent closed the pipe) while stepping
        now = time.monotonic()
        send(conn, BallastReady(allocated, now - t0, now))
        while not orphaned(parent_pid):
            if conn.poll(TIMING.ballast_check_s):
                return  # "stop", or EOF: either way the ballast goes
    except (MemoryError, OSError) as e:
        send(conn, ChildError(f"ballast allocation failed: {e}"))
        raise SystemExit(1)
    finally:
        for m in chunks:
            m.close()


def _split_pages(total_bytes, steps):
    """``total_bytes`` (page-rounded) split into ``steps`` page-multiple sizes."""
    pages = -(-total_bytes // PAGE)
    base, extra = divmod(pages, steps)
    return [(base + (i < extra)) * PAGE for i in range(steps) if base + (i < extra)]


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
            view[::PAGE] = b"\x01" * (size // PAGE)
        finally:
            view.release()
    return m


# ---------------------------------------------------------------- parent side


class MemoryStressor(Stressor):
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

        self.total_mb = check_number(total_mb, "memory total_mb", 0, strict=True)
        self.steps = check_int(steps, "memory steps", 1, strict=True)
        self.step_interval_s = check_number(step_interval_s, "memory step_interval_s", 0, low_open=False, strict=True)
        if not isinstance(huge_pages, bool):
            raise UsageError(f"memory huge_pages: expected True or False, got {huge_pages!r}")
        self.huge_pages = huge_pages
        self.total_bytes = int(self.total_mb * MB)
        if self.total_bytes < PAGE * self.steps:
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
        """One line for reports: size, steps, resident and held."""
        steps = f" in {self.steps} steps {self.step_interval_s:g} s apart" if self.steps > 1 else ""
        return f"memory: {self.total_mb:g} MB ballast{steps}, resident, held"

    def _start(self, spawn):
        here, there = pipe()
        self._conn = here
        try:
            self._spawn(spawn, _memory_main,
                        (there, self.total_bytes, self.steps, self.step_interval_s, self.huge_pages,
                         os.getpid()),
                        "loadgen-memory")
        finally:
            close(there)

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
            close(self._conn)

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
            send(self._conn, "stop")

    def _after_stop(self):
        if self._conn is not None:
            close(self._conn)


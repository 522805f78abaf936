"""Stressors: real CPU, memory and I/O pressure applied while the flows run.

Each stressor owns one or more child processes and nothing else::

    parent (runner)                  children
    ───────────────                  ────────
    cpu.CpuStressor       ──spawn──► _cpu_main × cores    pinned duty-cycle burners
                          ◄──pipe─── BurnStarted          (one message, then silent)
    memory.MemoryStressor ──spawn──► _memory_main         mmap ballast, touched, held
                          ◄──pipe─── BallastBaseline / BallastStep / BallastReady
                          ───pipe──► "stop"
    io.IoStressor         ──spawn──► _io_main × workers   disk loop + TCP echo (127.0.0.1)
                          ◄──pipe─── IoReport (every TIMING.io_report_s, and at stop)
                          ───pipe──► "stop"

One role per module: ``_base`` holds what they share (the NEW → RUNNING →
STOPPED life cycle with ``start(spawn)`` / ``stop(timeout_s)`` / ``stats()``
/ ``describe()``, the child-side plumbing, :class:`LatencyHistogram`,
:data:`MB`); ``cpu``, ``memory`` and ``io`` one stressor each, parent side
and child side.  Import from here.
"""

from ..errors import StressorFailed
from ._base import MB as MB
from ._base import ChildError as ChildError
from ._base import LatencyHistogram, StressorState
from .cpu import CPU_MAX_DEBT_PERIODS as CPU_MAX_DEBT_PERIODS
from .cpu import CPU_PERIOD_JITTER as CPU_PERIOD_JITTER
from .cpu import BurnStarted as BurnStarted
from .cpu import CpuStressor
from .io import IO_CHUNK_BYTES as IO_CHUNK_BYTES
from .io import IoReport as IoReport
from .io import IoStressor
from .memory import MEMORY_HEADROOM as MEMORY_HEADROOM
from .memory import BallastBaseline as BallastBaseline
from .memory import BallastReady as BallastReady
from .memory import BallastStep as BallastStep
from .memory import MemoryStressor

__all__ = [
    "CpuStressor", "MemoryStressor", "IoStressor", "LatencyHistogram",
    "StressorFailed", "StressorState",
]

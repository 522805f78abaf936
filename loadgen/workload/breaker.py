"""A circuit breaker for the dispatcher: closed → open → half-open → closed.

Each worker keeps one breaker in front of its slots. ``failure_threshold``
consecutive failures open it; while open, calls are rejected at once
(counted as ``rejected``, never lost); after ``recovery_timeout_s`` it
half-opens and lets ``half_open_probes`` calls through: all succeeding
close it, one failing opens it again. Every transition is recorded with
its time and drained by the worker into its result batch, so the master
writes each one as a ``breaker`` event.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass

from ..config import check_int, check_number


class BreakerState(enum.Enum):
    """Where a :class:`CircuitBreaker` stands; the value is what ``breaker`` events show."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """A breaker's settings: ``failure_threshold`` consecutive failures open it; ``recovery_timeout_s``
    seconds later it lets ``half_open_probes`` calls through. Raises :class:`UsageError` (exit 2) when
    out of range."""

    failure_threshold: int = 3
    recovery_timeout_s: float = 1.0
    half_open_probes: int = 1

    def __post_init__(self):
        check_int(self.failure_threshold, "breaker failure_threshold", 1)
        check_number(self.recovery_timeout_s, "breaker recovery_timeout_s", 0)
        check_int(self.half_open_probes, "breaker half_open_probes", 1)


class CircuitBreaker:
    """Thread-safe; ``allow()`` before a call, ``record(ok)`` after an allowed one."""

    def __init__(self, config=None, clock=time.monotonic, wall=time.time):
        self.config = config or BreakerConfig()
        self.state = BreakerState.CLOSED
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0
        self._probes_out = 0
        self._probes_ok = 0
        self.transitions = []  # (UNIX time, from, to, reason), drained by the worker

    def _to(self, state, reason):
        # The one place the state changes.
        self.transitions.append((self._wall(), self.state.value, state.value, reason))
        self.state = state
        if state is BreakerState.OPEN:
            self._opened_at = self._clock()
        if state is not BreakerState.CLOSED:
            self._probes_out = self._probes_ok = 0
        self._failures = 0

    def allow(self):
        """True if a call may go ahead now; False means rejected."""
        with self._lock:
            if self.state is BreakerState.CLOSED:
                return True
            if self.state is BreakerState.OPEN:
                if self._clock() - self._opened_at < self.config.recovery_timeout_s:
                    return False
                self._to(BreakerState.HALF_OPEN, "recovery timeout elapsed")
            if self._probes_out < self.config.half_open_probes:
                self._probes_out += 1
                return True
            return False

    def record(self, ok):
        """Report the outcome of a call :meth:`allow` let through; may open or close the breaker."""
        with self._lock:
            if self.state is BreakerState.HALF_OPEN:
                if not ok:
                    self._to(BreakerState.OPEN, "probe failed")
                else:
                    self._probes_ok += 1
                    if self._probes_ok >= self.config.half_open_probes:
                        self._to(BreakerState.CLOSED, "probes succeeded")
            elif self.state is BreakerState.CLOSED:
                if ok:
                    self._failures = 0
                else:
                    self._failures += 1
                    if self._failures >= self.config.failure_threshold:
                        self._to(BreakerState.OPEN, f"{self._failures} consecutive failures")
            # OPEN: a call allowed before the breaker opened finished late; it changes nothing.

    def remaining_open_s(self):
        """Seconds until an open breaker half-opens; 0.0 when it is not open."""
        with self._lock:
            if self.state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self.config.recovery_timeout_s - (self._clock() - self._opened_at))

"""Arrival schedules of the open model: when the n-th operation is meant to start.

The rate is piecewise linear in time (``--rate R`` alone is one constant
piece; ``--stages`` ramps it). ``time_of(n)`` inverts the cumulative
arrivals Λ(t) = ∫ rate so that arrival ``n`` (0-based) is due when
Λ(t) = n. Within a stage that ramps from r0 to r1 over D seconds,
Λ(u) = r0·u + (r1 − r0)·u²/(2D), a quadratic solved exactly.

Times are seconds from the schedule's start; workers add the start
instant (CLOCK_MONOTONIC, shared by every process on the machine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """``start_rate`` ops/s, then ``stages`` as ((duration_s, target_rate), …).

    After the last stage the rate stays at the last target (forever, or
    until the run's duration ends it).
    """

    start_rate: float
    stages: tuple = ()

    def __post_init__(self):
        pieces = []  # (t0, duration or inf, r0, r1, arrivals before)
        t = 0.0
        n = 0.0
        r = float(self.start_rate)
        for d, target in self.stages:
            pieces.append((t, float(d), r, float(target), n))
            n += (r + float(target)) / 2.0 * d
            t += d
            r = float(target)
        pieces.append((t, math.inf, r, r, n))
        object.__setattr__(self, "_pieces", tuple(pieces))

    def rate_at(self, t):
        """Arrivals per second at ``t`` seconds from the start (linear within a stage; last target after)."""
        for t0, d, r0, r1, _ in self._pieces:
            if t < t0 + d:
                return r0 + (r1 - r0) * (t - t0) / d if d != math.inf else r0
        return self._pieces[-1][3]

    def arrivals_before(self, t):
        """Λ(t): how many arrivals are due in [0, t)."""
        for t0, d, r0, r1, n0 in self._pieces:
            if t < t0 + d:
                u = t - t0
                slope = (r1 - r0) / d if d != math.inf else 0.0
                return n0 + r0 * u + slope * u * u / 2.0
        return self._pieces[-1][4]

    def time_of(self, n):
        """Seconds from the start at which arrival ``n`` is due; ``inf`` if never (rate 0 forever)."""
        for t0, d, r0, r1, n0 in self._pieces:
            end_n = n0 + (r0 + r1) / 2.0 * d if d != math.inf else math.inf
            if n < end_n or d == math.inf:
                m = n - n0
                if d == math.inf:
                    return t0 + m / r0 if r0 > 0 else math.inf
                a = (r1 - r0) / (2.0 * d)
                if abs(a) < 1e-12:
                    return t0 + (m / r0 if r0 > 0 else 0.0)
                # a·u² + r0·u − m = 0, the root in [0, d]
                disc = r0 * r0 + 4.0 * a * m
                u = (-r0 + math.sqrt(max(disc, 0.0))) / (2.0 * a)
                return t0 + min(max(u, 0.0), d)
        return math.inf

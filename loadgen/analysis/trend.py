"""Trend fits on a time series, pure (no I/O, no processes): least-squares lines.

* :func:`linear_fit` — a least-squares line through a batch of points;
* :func:`best_step_sse` — the best single-step model, to tell a trend from one jump;
* :class:`SlopeEstimator` — a line over a sliding time window, O(1) per point.

Used by the monitor's growth guard (``engine.thresholds``) and by the leak
verdict (``analysis.leak``).
"""

from __future__ import annotations

import collections
import math


def linear_fit(ts, vs):
    """Least-squares line through ``(ts, vs)``.

    Returns ``(slope, r2, sse, slope_stderr)``: slope in units of v per unit
    of t; r² in [0, 1] (0 when v is constant: no trend is explained); sse the
    residual sum of squares; the slope's standard error (inf with < 3
    points). Raises ValueError with < 2 points or a zero time span.
    """
    n = len(ts)
    if n < 2:
        raise ValueError("a line needs at least two points")
    mt = math.fsum(ts) / n
    mv = math.fsum(vs) / n
    sxx = sxy = syy = 0.0
    for t, v in zip(ts, vs):
        dt, dv = t - mt, v - mv
        sxx += dt * dt
        sxy += dt * dv
        syy += dv * dv
    if sxx <= 0.0:
        raise ValueError("all points have the same time")
    slope = sxy / sxx
    sse = max(0.0, syy - slope * sxy)
    r2 = (sxy * sxy) / (sxx * syy) if syy > 0.0 else 0.0
    se = math.sqrt(sse / (n - 2) / sxx) if n > 2 else math.inf
    return slope, min(1.0, r2), sse, se


def best_step_sse(vs, min_segment=2):
    """Residual sum of squares of the best single-step model (two flat levels).

    ``vs`` in time order; each level holds at least ``min_segment`` points.
    Returns ``(sse, index)`` where ``index`` is the first point of the upper
    level, or ``(inf, None)`` if ``vs`` is too short. O(n).
    """
    n = len(vs)
    if n < 2 * min_segment:
        return math.inf, None
    total = math.fsum(vs)
    mean = total / n
    syy = math.fsum((v - mean) ** 2 for v in vs)
    best, best_k = math.inf, None
    s1 = 0.0
    for k in range(1, n - min_segment + 1):
        s1 += vs[k - 1]
        if k < min_segment:
            continue
        s2 = total - s1
        # Variance explained by splitting at k: between-group sum of squares.
        between = s1 * s1 / k + s2 * s2 / (n - k) - total * total / n
        sse = syy - between
        if sse < best:
            best, best_k = sse, k
    return max(0.0, best), best_k


class SlopeEstimator:
    """Least-squares slope of a value over a sliding time window.

    ``update(t, value)`` adds a point (t in seconds, non-decreasing) and
    evicts those older than ``t - window_s``; O(1) amortised, from running
    sums. ``slope()`` is value units per second, None with fewer than two
    points or no time span; ``r2()`` likewise (0.0 for a constant value).
    """

    def __init__(self, window_s):
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self.window_s = float(window_s)
        self.reset()

    def reset(self):
        """Forget every point (the window stays)."""
        self._pts = collections.deque()
        self._t0 = self._v0 = 0.0
        self._st = self._sv = self._stt = self._stv = self._svv = 0.0
        self._evicted = 0

    def __len__(self):
        return len(self._pts)

    def span_s(self):
        """Time between the oldest and newest point, seconds (0.0 if < 2 points)."""
        return self._pts[-1][0] - self._pts[0][0] if len(self._pts) > 1 else 0.0

    def points(self):
        """The points in the window, oldest first, as a list of (t, value)."""
        return list(self._pts)

    def _add(self, t, v, sign):
        x, y = t - self._t0, v - self._v0
        self._st += sign * x
        self._sv += sign * y
        self._stt += sign * x * x
        self._stv += sign * x * y
        self._svv += sign * y * y

    def _recompute(self):
        # Running sums drift by rounding as points come and go; rebuilding
        # them from the window whenever it has turned over bounds the error,
        # and re-centring on the oldest point keeps the squares small.
        self._t0, self._v0 = self._pts[0]
        self._st = self._sv = self._stt = self._stv = self._svv = 0.0
        for t, v in self._pts:
            self._add(t, v, 1.0)
        self._evicted = 0

    def update(self, t, value):
        """Add ``(t, value)``; raises ValueError if ``t`` goes back in time."""
        t, value = float(t), float(value)
        if self._pts and t < self._pts[-1][0]:
            raise ValueError(f"time went backwards: {t} < {self._pts[-1][0]}")
        if not self._pts:
            self._t0, self._v0 = t, value
        self._pts.append((t, value))
        self._add(t, value, 1.0)
        limit = t - self.window_s
        while self._pts[0][0] < limit:
            old_t, old_v = self._pts.popleft()
            self._add(old_t, old_v, -1.0)
            self._evicted += 1
        if self._evicted >= len(self._pts):
            self._recompute()

    def _moments(self):
        n = len(self._pts)
        if n < 2:
            return None
        sxx = self._stt - self._st * self._st / n
        sxy = self._stv - self._st * self._sv / n
        syy = self._svv - self._sv * self._sv / n
        # A time span below a microsecond is no span (rounding noise).
        if sxx <= 1e-12 * n:
            return None
        return sxx, sxy, max(0.0, syy)

    def slope(self):
        """Least-squares slope over the window, value units per second; None with < 2 points or no span."""
        m = self._moments()
        return None if m is None else m[1] / m[0]

    def r2(self):
        """r² of the line over the window in [0, 1] (0.0 for a constant value); None like :meth:`slope`."""
        m = self._moments()
        if m is None:
            return None
        sxx, sxy, syy = m
        if syy <= 1e-12 * max(1.0, abs(self._svv)):
            return 0.0
        return max(0.0, min(1.0, sxy * sxy / (sxx * syy)))

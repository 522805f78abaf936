"""The leak verdict written into every report, pure (no I/O): does the pool's memory leak?

:class:`LeakDetector` judges one memory series (a significant, well-fitted,
sustained slope — not a large working set, a single jump or the warm-up
climb); :func:`leak_verdict` applies it to the pool's PSS and confirms a
climb on its RSS. The fits are ``analysis.trend``'s.
"""

from __future__ import annotations

import math

from .trend import best_step_sse, linear_fit


class LeakDetector:
    """The leak verdict written into every report.

    A leak is a slope of the pool's memory that is significant, well fitted
    and sustained — not a large working set, not a single jump, not the
    warm-up climb. See :meth:`verdict`.
    """

    #: With no ``warmup_s``: ignore this much of the start, at most a third of the run.
    DEFAULT_WARMUP_S = 10.0
    #: Fewer points than this, or a shorter span, gives no verdict.
    MIN_POINTS = 8
    MIN_SPAN_S = 10.0
    #: Each half of the window must climb at least this share of the overall slope.
    HALF_SLOPE_FRACTION = 0.3
    #: Dense samples are averaged into this many time bins before the fit, so
    #: that r² measures the trend against the slow wander of the working set,
    #: not against sample-to-sample jitter (which the averaging removes), and
    #: means the same at 10 Hz as at 1 Hz.
    BINS = 30

    @staticmethod
    def _bin(ts, vs, bin_s):
        if bin_s <= 0 or len(ts) < 2 * LeakDetector.BINS:
            return ts, vs
        bins = {}
        t0 = ts[0]
        for t, v in zip(ts, vs):
            acc = bins.setdefault(min(int((t - t0) / bin_s), LeakDetector.BINS - 1), [0.0, 0.0, 0])
            acc[0] += t
            acc[1] += v
            acc[2] += 1
        rows = [bins[k] for k in sorted(bins)]
        return [r[0] / r[2] for r in rows], [r[1] / r[2] for r in rows]

    def __init__(self, window_s=30.0, min_slope_mb_s=1.0, min_r2=0.5, warmup_s=None):
        self.window_s = window_s
        self.min_slope_mb_s = min_slope_mb_s
        self.min_r2 = min_r2
        self.warmup_s = warmup_s

    def __call__(self, times, values):
        """:meth:`verdict` with this detector's settings."""
        return self.verdict(
            times, values, window_s=self.window_s, min_slope_mb_s=self.min_slope_mb_s,
            min_r2=self.min_r2, warmup_s=self.warmup_s,
        )

    @classmethod
    def verdict(cls, times, values, window_s=30.0, min_slope_mb_s=1.0, min_r2=0.5, warmup_s=None):
        """Judge whether memory leaks; pure, no I/O, O(n).

        ``times``: seconds (any origin); ``values``: MB (pool PSS). The fit
        uses the last ``window_s`` seconds after the warm-up (``warmup_s``;
        default :attr:`DEFAULT_WARMUP_S`, at most a third of the run).

        ``leak`` is True only if all hold:

        * the slope is clearly above zero (three standard errors) and
          consistent with at least ``min_slope_mb_s`` (within two standard
          errors, and never below half of it) — so a true 1 MB/s leak is
          not missed because noise put its estimate at 0.97;
        * the line explains the data: r² ≥ ``min_r2``;
        * a line fits better than a single step (one jump, then flat);
        * each half of the window climbs, at ≥ :attr:`HALF_SLOPE_FRACTION`
          of the slope (so a ramp that has levelled off — warm-up, a cache
          filling — is not a leak).

        Returns a dict: ``slope_mb_per_s``, ``r2`` (None without a fit),
        ``window_s`` (span actually fitted, s), ``samples``, ``leak``,
        ``reason`` (one line for the report), ``slope_stderr``.
        """
        pts = sorted(
            (float(t), float(v)) for t, v in zip(times, values)
            if t is not None and v is not None and math.isfinite(t) and math.isfinite(v)
        )

        def result(leak, reason, slope=None, r2=None, se=None, span=0.0, n=0):
            return {
                "slope_mb_per_s": slope, "r2": r2, "window_s": span, "samples": n,
                "leak": leak, "reason": reason, "slope_stderr": se,
            }

        if len(pts) < cls.MIN_POINTS:
            return result(False, f"not enough samples for a verdict ({len(pts)})", n=len(pts))
        t_first, t_last = pts[0][0], pts[-1][0]
        run_s = t_last - t_first
        warm = min(cls.DEFAULT_WARMUP_S, run_s / 3.0) if warmup_s is None else float(warmup_s)
        start = max(t_first + warm, t_last - float(window_s))
        sel = [p for p in pts if p[0] >= start]
        ts = [p[0] for p in sel]
        vs = [p[1] for p in sel]
        span = ts[-1] - ts[0] if sel else 0.0
        min_span = min(cls.MIN_SPAN_S, float(window_s) / 2.0)
        if len(sel) < cls.MIN_POINTS or span < min_span:
            return result(
                False, f"not enough data after a {warm:.0f} s warm-up ({len(sel)} samples over {span:.1f} s)",
                span=span, n=len(sel),
            )
        n_samples = len(sel)
        ts, vs = cls._bin(ts, vs, span / cls.BINS)
        slope, r2, sse, se = linear_fit(ts, vs)

        def res(leak, reason):
            return result(leak, reason, slope=slope, r2=r2, se=se, span=span, n=n_samples)

        floor = float(min_slope_mb_s)
        if not (slope > 3.0 * se and slope + 3.0 * se >= floor and slope >= 0.5 * floor):
            return res(False, f"no leak: memory slope {slope:+.3g} MB/s (±{se:.2g}) is not a significant climb of ≥ {floor:g} MB/s")
        if r2 < min_r2:
            return res(False, f"no leak: slope {slope:.3g} MB/s fits poorly (r² {r2:.2f} < {min_r2:g})")
        step_sse, k = best_step_sse(vs, max(2, len(vs) // 10))
        if step_sse < sse:
            jump = math.fsum(vs[k:]) / (len(vs) - k) - math.fsum(vs[:k]) / k
            return res(False, f"no leak: a single step of {jump:+.3g} MB at t={ts[k] - t_first:.1f} s, flat around it")
        half = len(ts) // 2
        slopes = []
        for a, b in ((0, half), (half, len(ts))):
            try:
                slopes.append(linear_fit(ts[a:b], vs[a:b])[0])
            except ValueError:
                slopes.append(0.0)
        if min(slopes) < cls.HALF_SLOPE_FRACTION * slope:
            return res(
                False,
                f"no leak: growth did not hold across the window (halves {slopes[0]:+.3g}, {slopes[1]:+.3g} MB/s): "
                "warm-up or a plateau",
            )
        return res(True, f"leak: memory grows {slope:.3g} MB/s (±{se:.2g}) over {span:.0f} s, r² {r2:.2f}")


def leak_verdict(pss_series, rss_series, window_s):
    """The leak verdict on the pool's PSS, confirmed on its RSS.

    After a fork, workers' writes (reference counts, the GC) unshare pages
    they shared with the master: PSS climbs while RSS stays flat. That is
    copy-on-write settling, not a leak, so a PSS climb counts only if RSS
    climbs too.

    ``pss_series``, ``rss_series``: ``(t, MB)`` pairs (t in seconds);
    ``window_s``: the fit window, seconds. Returns :meth:`LeakDetector.verdict`'s
    dict, with ``rss_slope_mb_per_s`` added when PSS climbs, or ``leak`` None
    without samples. Pure, O(n).
    """
    if not pss_series:
        return {"leak": None, "reason": "no memory samples"}
    ts, vs = zip(*pss_series)
    verdict = LeakDetector().verdict(list(ts), list(vs), window_s=window_s)
    if verdict.get("leak") and rss_series:
        ts, vs = zip(*rss_series)
        rss = LeakDetector().verdict(list(ts), list(vs), window_s=window_s)
        verdict["rss_slope_mb_per_s"] = rss.get("slope_mb_per_s")
        if not rss.get("leak"):
            verdict["leak"] = False
            verdict["reason"] = (f"no leak: PSS climbs {verdict['slope_mb_per_s']:.3g} MB/s but RSS does not "
                                 f"({rss['reason']}): shared pages unsharing after fork")
    return verdict

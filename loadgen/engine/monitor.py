"""The monitor: a separate process that samples the pool and the machine,
enforces the thresholds, and kills the pool itself when one is breached.

::

      master ── SystemResourceMonitor.conn ─────────────┐ (one duplex pipe)
        │   Watch / Unwatch / Stop  ──▶                 │
        │   ◀── Sample (every tick), Breach, MonitorError
        │                                               ▼
        │ fork                           ┌─────────── monitor ───────────┐
        └──────────────────────────────▶ │ tick every interval_s:        │
                                         │  /proc/PID/stat per watched   │
                                         │  PSS, oldest first, CPU-paced │
                                         │  /proc/stat, /proc/meminfo    │
                                         │  ThresholdEvaluator.check     │
                                         │  breach → kill_ticks(pool)    │
                                         │  master alive? else kill+exit │
                                         └───────────────────────────────┘

The master starts the monitor (``SystemResourceMonitor.start``) before the
pool, sends ``Watch(pid, create_time, pgid, role)`` for every worker and
stressor it starts and ``Unwatch(pid)`` when one ends cleanly, and reads
``Sample`` / ``Breach`` / ``MonitorError`` from the same pipe. On a breach
the pool is already dead when ``Breach`` arrives: the monitor does not ask.

The master's death is noticed two ways: PR_SET_PDEATHSIG delivers
SIGUSR1, whose wake-up fd ends the monitor's wait at once, and every tick
re-reads the master's /proc entry (pid + start time). Either way the
monitor kills the pool and exits. A closed pipe is not relied on: forked
children inherit the master's end of it.

Roles ``worker`` and ``stressor`` (:data:`POOL_ROLES`) are the pool: their
memory is the pool's memory and they are killed on a breach. Any other
role is sampled and reported, never counted nor signalled.

The pure pieces — :class:`SlopeEstimator`, :class:`LeakDetector`,
:class:`ThresholdEvaluator` — need no process and are unit-tested alone.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import pickle
import select
import signal
import time
import traceback

from . import _proc
from ..config import TIMING, ResourceThresholds
from ..errors import UsageError
from .messages import Breach, MonitorError, Sample, Stop, Unwatch, Watch

log = logging.getLogger("loadgen.monitor")

POOL_ROLES = frozenset({"worker", "stressor"})
GROWTH_ROLES = frozenset({"worker"})  # whose memory the growth-rate guard follows

# Breach metrics, as they appear in Breach.metric and events.jsonl.
METRIC_MEMORY = "memory_mb"  # pool PSS estimate > max_memory_mb
METRIC_AVAILABLE = "available_memory_mb"  # system available < min_available_memory_mb
METRIC_GROWTH = "memory_growth_mb_per_s"  # pool slope > memory_growth_rate_mb_per_sec
METRIC_CPU = "cpu_percent"  # machine CPU > max_cpu_percent for cpu_window_s

MIN_INTERVAL_S = 0.01

_MB = 1024.0 * 1024.0


# PSS re-reads are paced by CPU: smaps_rollup walks the page tables (≈0.4–1 ms for an idle
# numpy worker on this VM, more for a big one), so reading 50 of them every tick would cost a
# core by itself. The reads, oldest first, may use this share of one core (0.3 %: 50 idle
# workers are each re-read about every 15–25 s), and no process is re-read sooner than
# TIMING.pss_refresh_min_s. Between reads a process's memory is estimated as PSS + (RSS now −
# RSS at that read), exact for private growth; only changes in sharing (copy-on-write
# breaking) wait for the next read.
PSS_CPU_BUDGET = 0.003
# The hard growth limit's fit must be good and better than a single step, so that a warm-up
# jump is not a "rate": enough points, spanning enough of TIMING.growth_window_s, well fitted.
GROWTH_MIN_FILL = 0.8  # the points must span this share of the window
GROWTH_MIN_POINTS = 10
GROWTH_MIN_R2 = 0.8
# Samples kept while the master does not read its pipe; older ones are dropped (a Breach never
# is) so the monitor never blocks on a send.
MAX_PENDING_SAMPLES = 50

# The kernel sends this to the monitor when the master dies (PR_SET_PDEATHSIG).
# Not SIGKILL: the monitor must outlive the master long enough to kill the pool.
_PDEATH_SIGNAL = signal.SIGUSR1


# ---------------------------------------------------------------- fits (pure)


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
        m = self._moments()
        return None if m is None else m[1] / m[0]

    def r2(self):
        m = self._moments()
        if m is None:
            return None
        sxx, sxy, syy = m
        if syy <= 1e-12 * max(1.0, abs(self._svv)):
            return 0.0
        return max(0.0, min(1.0, sxy * sxy / (sxx * syy)))


# ---------------------------------------------------------------- leak verdict (pure)


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


# ---------------------------------------------------------------- thresholds (pure)


class ThresholdEvaluator:
    """Decides, sample by sample, whether a threshold is breached.

    ``check(sample) -> (metric, value, limit)`` or None. Holds the state
    that spans samples: the CPU window and the growth window. Pure: no I/O.

    * memory: ``pool_memory_mb > max_memory_mb`` at once;
    * floor: ``available_mb < min_available_memory_mb`` at once (0 disables);
    * growth: the least-squares slope of pool memory over
      ``growth_window_s`` > ``memory_growth_rate_mb_per_sec``, with a good
      fit (r², coverage) that beats a single step;
    * CPU: every sample over the last ``cpu_window_s`` above
      ``max_cpu_percent`` (the value reported is the lowest of them);
      ``max_cpu_percent == 100`` disables it.

    Processes joining or leaving the pool are not growth: the owner calls
    :meth:`rebase` with the memory that joined (+) or left (−).
    """

    def __init__(self, thresholds=None):
        self.thresholds = thresholds or ResourceThresholds()
        self.growth = SlopeEstimator(TIMING.growth_window_s)
        self._offset_mb = 0.0
        self._last_memory_t = None
        self._cpu_above_since = None
        self._cpu_window_min = math.inf

    def reset(self):
        """Forget the windows (after a breach: a new pool starts afresh)."""
        self.growth.reset()
        self._offset_mb = 0.0
        self._last_memory_t = None
        self._cpu_above_since = None
        self._cpu_window_min = math.inf

    def rebase(self, delta_mb):
        """Account ``delta_mb`` of pool memory to membership, not to growth."""
        self._offset_mb += delta_mb

    def observe_memory(self, t, pool_memory_mb):
        """Feed the growth window; returns the current slope (MB/s) or None.

        Idempotent per ``t``: :meth:`check` does not feed a sample twice.
        """
        if self._last_memory_t is None or t > self._last_memory_t:
            self.growth.update(t, pool_memory_mb - self._offset_mb)
            self._last_memory_t = t
        return self.growth.slope()

    def growth_rate(self):
        """The slope (MB/s) if the window is full enough and linear, else None."""
        slope = self.growth.slope()
        if slope is None or len(self.growth) < GROWTH_MIN_POINTS:
            return None
        if self.growth.span_s() < GROWTH_MIN_FILL * self.growth.window_s:
            return None
        r2 = self.growth.r2()
        if r2 is None or r2 < GROWTH_MIN_R2:
            return None
        return slope

    def _growth_breach(self, limit):
        slope = self.growth_rate()
        if slope is None or slope <= limit:
            return None
        # Only now pay for the O(n) step test: a line must explain the
        # window better than one jump (a worker loading its data) does.
        pts = self.growth.points()
        vs = [v for _, v in pts]
        try:
            _, _, sse, _ = linear_fit([t for t, _ in pts], vs)
        except ValueError:
            return None
        step_sse, _ = best_step_sse(vs, max(2, len(vs) // 10))
        return slope if sse <= step_sse else None

    def _cpu_breach(self, t, cpu):
        th = self.thresholds
        if th.max_cpu_percent >= 100.0:
            self._cpu_above_since = None
            return None
        if cpu > th.max_cpu_percent:
            if self._cpu_above_since is None:
                self._cpu_above_since = t
                self._cpu_window_min = cpu
            else:
                self._cpu_window_min = min(self._cpu_window_min, cpu)
            if t - self._cpu_above_since >= th.cpu_window_s:
                return self._cpu_window_min
        else:
            self._cpu_above_since = None
        return None

    def check(self, sample):
        """``(metric, value, limit)`` for the first threshold ``sample`` breaches, else None."""
        th = self.thresholds
        self.observe_memory(sample.t, sample.pool_memory_mb)
        # The CPU window is updated on every sample, breach or not, so that
        # its state never depends on which other check fired first.
        cpu = self._cpu_breach(sample.t, sample.cpu_percent)
        if sample.pool_memory_mb > th.max_memory_mb:
            return METRIC_MEMORY, sample.pool_memory_mb, th.max_memory_mb
        if th.min_available_memory_mb > 0 and sample.available_mb < th.min_available_memory_mb:
            return METRIC_AVAILABLE, sample.available_mb, th.min_available_memory_mb
        slope = self._growth_breach(th.memory_growth_rate_mb_per_sec)
        if slope is not None:
            return METRIC_GROWTH, slope, th.memory_growth_rate_mb_per_sec
        if cpu is not None:
            return METRIC_CPU, cpu, th.max_cpu_percent
        return None


# ---------------------------------------------------------------- system readings


class _SystemReader:
    """Machine CPU and memory from /proc, files kept open (≈20 µs a tick)."""

    def __init__(self):
        self._stat_fd = os.open("/proc/stat", os.O_RDONLY)
        self._mem_fd = os.open("/proc/meminfo", os.O_RDONLY)
        # Only the "cpu" lines at the top of /proc/stat are needed; the
        # interrupt line after them can be many kB.
        self._stat_bytes = 512 + 160 * (os.cpu_count() or 1)
        self._last = self._cpu_times()

    def close(self):
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


# ---------------------------------------------------------------- the monitor process


class _Watched:
    """One watched process and what the monitor last read of it."""

    __slots__ = ("pid", "create_time", "start_ticks", "pgid", "role", "reader",
                 "last_ticks", "last_mono", "rss_mb", "cpu_percent",
                 "pss_mb", "pss_rss_mb", "pss_mono", "memory_mb")

    @property
    def in_pool(self):
        return self.role in POOL_ROLES


class _MasterGone(Exception):
    pass


class Monitor:
    """The monitor's state and handlers, driven by :func:`monitor_main`.

    Usable without a process: tests call :meth:`handle` and :meth:`tick`
    with a fake connection (anything with ``send``; ``fileno`` optional).
    """

    def __init__(self, conn, thresholds=None, interval_s=0.1, master_pid=None, master_create_time=None,
                 *, wake_fd=None):
        self.conn = conn
        self.thresholds = thresholds or ResourceThresholds()
        self.interval_s = float(interval_s)
        self.evaluator = ThresholdEvaluator(self.thresholds)
        self.watched = {}  # pid → _Watched
        self.stopping = False
        self.breaches = 0
        self.samples_dropped = 0
        self.ticks_skipped = 0
        self._armed = False  # a pool process was watched since the last breach
        self._wake_fd = wake_fd
        self._outbox = collections.deque()
        self._pss_queue = collections.deque()  # pids in round-robin order
        self._pss_credit_s = 0.0
        self._io = {}
        self._io_next = 0.0
        self._system = _SystemReader()
        self._handlers = {Watch: self._on_watch, Unwatch: self._on_unwatch, Stop: self._on_stop}
        self._master = None  # (pid, start ticks or None if already gone, StatReader)
        self._master_is_parent = False
        if master_pid is not None:
            self._master = self._identify_master(master_pid, master_create_time)
            self._master_is_parent = self._master[1] is not None and os.getppid() == master_pid

    @staticmethod
    def _identify_master(pid, create_time):
        if create_time is not None:
            ticks = _proc.identify(pid, create_time)
        else:
            st = _proc.read_stat(pid)
            ticks = None if _proc.is_dead_stat(st) else st.start_ticks
        reader = None
        if ticks is not None:
            try:
                reader = _proc.StatReader(pid)
            except FileNotFoundError:
                ticks = None
        return pid, ticks, reader

    # -- messages

    def handle(self, msg):
        """Dispatch one message from the master; unknown types are logged."""
        handler = self._handlers.get(type(msg))
        if handler is None:
            log.warning("monitor: ignoring unknown message %r", msg)
            return
        handler(msg)

    def _on_watch(self, msg):
        old = self.watched.get(msg.pid)
        if old is not None:
            self._drop(old, "re-watched")
        ticks = _proc.identify(msg.pid, msg.create_time)
        if ticks is None:
            log.warning(
                "monitor: not watching pid %d (%s): no live process with create time %.3f — "
                "it exited, or the pid belongs to another process now", msg.pid, msg.role, msg.create_time)
            return
        try:
            reader = _proc.StatReader(msg.pid)
        except FileNotFoundError:
            return
        # Re-check through the open file: it is bound to one process for good,
        # so from here on no read can describe a stranger.
        st = reader.read()
        if _proc.is_dead_stat(st) or st.start_ticks != ticks:
            reader.close()
            return
        w = _Watched()
        w.pid, w.create_time, w.start_ticks = msg.pid, msg.create_time, ticks
        w.pgid, w.role, w.reader = msg.pgid, msg.role, reader
        w.last_ticks, w.last_mono = st.cpu_ticks, time.monotonic()
        w.rss_mb = st.rss_pages * _proc.PAGE_SIZE / _MB
        w.cpu_percent = 0.0
        self._read_pss(w, w.last_mono)
        w.memory_mb = w.pss_mb
        self.watched[w.pid] = w
        self._pss_queue.append(w.pid)
        if w.role in GROWTH_ROLES:
            self.evaluator.rebase(w.memory_mb)
            self._armed = True
        log.debug("monitor: watching pid %d (%s, pgid %s)", w.pid, w.role, w.pgid)

    def _on_unwatch(self, msg):
        w = self.watched.get(msg.pid)
        if w is not None:
            self._drop(w, "unwatched")

    def _on_stop(self, msg):
        self.stopping = True

    def _drop(self, w, why):
        self.watched.pop(w.pid, None)
        w.reader.close()
        if w.role in GROWTH_ROLES:
            self.evaluator.rebase(-w.memory_mb)
        log.debug("monitor: pid %d %s", w.pid, why)

    # -- sampling

    def _read_pss(self, w, now_mono):
        """Re-read ``w``'s PSS; returns the seconds it took (the cost paced by the budget)."""
        t0 = time.perf_counter()
        pss = _proc.read_pss_mb(w.pid)
        # Without smaps_rollup (old kernel) RSS is the best we have.
        w.pss_mb = w.rss_mb if pss is None else pss
        w.pss_rss_mb = w.rss_mb
        w.pss_mono = now_mono
        return time.perf_counter() - t0

    def _refresh_pss(self, now_mono):
        # Credit accrues at the budget rate and is capped at one second's
        # worth, so idle periods do not bank a burst of reads.
        self._pss_credit_s = min(self._pss_credit_s + PSS_CPU_BUDGET * self.interval_s, PSS_CPU_BUDGET)
        while self._pss_credit_s > 0.0 and self._pss_queue:
            w = self.watched.get(self._pss_queue[0])
            if w is None:
                self._pss_queue.popleft()  # dropped since: its slot costs nothing
                continue
            if now_mono - w.pss_mono < TIMING.pss_refresh_min_s:
                break  # the queue is oldest first: nobody else is due either
            self._pss_queue.rotate(-1)
            self._pss_credit_s -= self._read_pss(w, now_mono)

    def _sample_processes(self, now_mono):
        page_mb = _proc.PAGE_SIZE / _MB
        for w in list(self.watched.values()):
            st = w.reader.read()
            if _proc.is_dead_stat(st):
                self._drop(w, "exited")
                continue
            dt = now_mono - w.last_mono
            if dt > 0:
                w.cpu_percent = 100.0 * (st.cpu_ticks - w.last_ticks) / _proc.CLOCK_TICKS / dt
            w.last_ticks, w.last_mono = st.cpu_ticks, now_mono
            w.rss_mb = st.rss_pages * page_mb
        self._refresh_pss(now_mono)
        pool_mem = pool_rss = pool_cpu = 0.0
        procs = {}
        for w in self.watched.values():
            mem = max(0.0, w.pss_mb + (w.rss_mb - w.pss_rss_mb))
            if w.in_pool:
                # Keep the growth series continuous: what a member gains is growth.
                pool_mem += mem
                pool_rss += w.rss_mb
                pool_cpu += w.cpu_percent
            w.memory_mb = mem
            procs[w.pid] = (w.rss_mb, w.cpu_percent)
        return pool_mem, pool_rss, pool_cpu, procs

    def tick(self):
        """Take one sample, evaluate it, act on a breach, send it. Returns the Sample.

        Blocks only while killing the pool on a breach (≤ kill grace + a few ms
        when the pool dies on SIGTERM). Raises :class:`_MasterGone` (after
        killing the pool) if the master has died.
        """
        self.check_master()
        now_mono = time.monotonic()
        t = time.time()
        pool_mem, pool_rss, pool_cpu, procs = self._sample_processes(now_mono)
        cpu, per_cpu = self._system.cpu_percent()
        avail, swap = self._system.memory_mb()
        if now_mono >= self._io_next:
            self._io = read_io()
            self._io_next = now_mono + TIMING.io_refresh_s
        # The growth guard follows the workers only: a stressor's ballast grows on purpose.
        growth = self.evaluator.observe_memory(
            t, sum(w.memory_mb for w in self.watched.values() if w.role in GROWTH_ROLES and w.memory_mb))
        sample = Sample(
            t=t, pool_memory_mb=pool_mem, pool_rss_mb=pool_rss, pool_cpu_percent=pool_cpu,
            cpu_percent=cpu, per_cpu=per_cpu, available_mb=avail, swap_used_mb=swap,
            processes=procs, io=self._io, growth_mb_per_s=growth,
        )
        breach = self.evaluator.check(sample)
        self.send(sample)
        if breach is not None:
            if self._armed and any(w.in_pool for w in self.watched.values()):
                self._breach(*breach)
            else:
                log.debug("monitor: %s = %.6g past %.6g, but no pool to kill", *breach)
        return sample

    def _pool(self):
        return [w for w in self.watched.values() if w.in_pool]

    def kill_pool(self):
        """Kill every pool process (and its group): TERM, grace, KILL. Blocks until dead.

        Returns ``(pool_dead_at, killed_pids)``: UNIX seconds, sorted tuple.
        """
        # Never the master nor the monitor itself, whatever role a Watch claimed.
        spared = {os.getpid(), self._master[0] if self._master else None}
        pool = [w for w in self._pool() if w.pid not in spared]
        alive = {w.pid: w.start_ticks for w in pool}
        pgids = [w.pgid for w in pool if w.pgid is not None]
        dead_at = _proc.kill_ticks(pgids, alive, TIMING.kill_grace_s)
        return dead_at, tuple(sorted(alive))

    def _breach(self, metric, value, limit):
        detected_at = time.time()
        log.warning("monitor: %s = %.6g past the limit %.6g: killing the pool", metric, value, limit)
        dead_at, killed = self.kill_pool()
        self.breaches += 1
        self._armed = False
        for pid in killed:
            w = self.watched.get(pid)
            if w is not None:
                self._drop(w, "killed")
        self.evaluator.reset()
        self.send(Breach(metric=metric, value=value, limit=limit, detected_at=detected_at,
                         pool_dead_at=dead_at, killed_pids=killed))
        log.warning("monitor: pool %s dead %.0f ms after detection", list(killed), (dead_at - detected_at) * 1e3)

    # -- the master

    def master_alive(self):
        """True while the master runs. Non-blocking: ≈0.4 µs when the master is
        our parent (getppid), else one /proc read (≈5–90 µs: the kernel sums
        the CPU time of every thread of the master)."""
        if self._master is None:
            return True
        pid, ticks, reader = self._master
        if ticks is None or reader is None:
            return False
        if self._master_is_parent:
            # A dead parent's children are re-parented at its exit, before it
            # is even a zombie, and the new parent is never this pid.
            return os.getppid() == pid
        st = reader.read()
        return not _proc.is_dead_stat(st) and st.start_ticks == ticks

    def check_master(self):
        """Raise :class:`_MasterGone` after killing the pool if the master is dead."""
        if not self.master_alive():
            log.warning("monitor: the master (pid %s) is gone: killing the pool and exiting",
                        self._master[0] if self._master else "?")
            if self._pool():
                self.kill_pool()
            raise _MasterGone()

    # -- sending

    def _writable(self):
        fileno = getattr(self.conn, "fileno", None)
        if fileno is None:
            return True
        try:
            # A socketpair end is writable while at least half its buffer is
            # free, far more than one message: the send below cannot block.
            return bool(select.select([], [fileno()], [], 0)[1])
        except (OSError, ValueError):
            return True  # closed: let send raise

    def send(self, msg):
        """Queue ``msg`` for the master and send what the pipe takes without blocking.

        A master that stops reading costs old samples (counted in
        :attr:`samples_dropped`), never a Breach, and never stalls the monitor.
        """
        self._outbox.append(msg)
        self.flush()

    def flush(self):
        while self._outbox:
            if not self._writable():
                excess = sum(isinstance(m, Sample) for m in self._outbox) - MAX_PENDING_SAMPLES
                if excess > 0:
                    kept = collections.deque()
                    for m in self._outbox:
                        if excess > 0 and isinstance(m, Sample):
                            excess -= 1
                            self.samples_dropped += 1
                            continue
                        kept.append(m)
                    self._outbox = kept
                    if self.samples_dropped % 100 == 1:
                        log.warning("monitor: the master is not reading; %d samples dropped", self.samples_dropped)
                return
            msg = self._outbox.popleft()
            send_bytes = getattr(self.conn, "send_bytes", None)
            if send_bytes is not None:
                # multiprocess pickles with dill's pure-Python pickler: 0.13 ms
                # for a 50-process Sample, most of the monitor's CPU budget.
                # Messages are plain dataclasses, so the C pickler does (3 µs),
                # and the master's conn.recv() reads its output unchanged.
                send_bytes(pickle.dumps(msg, pickle.HIGHEST_PROTOCOL))
            else:
                self.conn.send(msg)

    # -- the loop

    def _drain_wake_fd(self):
        try:
            while os.read(self._wake_fd, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _receive(self):
        # Bounded so that a flood of messages cannot starve the schedule.
        for _ in range(1000):
            if not self.conn.poll(0):
                return
            try:
                msg = self.conn.recv()
            except EOFError:
                self.check_master()
                log.warning("monitor: the master closed the pipe without Stop; exiting")
                self.stopping = True
                return
            self.handle(msg)
            if self.stopping:
                return

    def run(self):
        """Sample every ``interval_s`` until Stop, EOF or the master's death.

        Ticks are scheduled on absolute deadlines (start + k·interval), so
        the rate does not drift with the work a tick does; ticks missed
        while the monitor was starved are skipped, not bunched.
        """
        # One poll object for the whole run: connection.wait() would build
        # and tear down a selector on every pass.
        poller = select.poll()
        conn_fd = self.conn.fileno()
        poller.register(conn_fd, select.POLLIN)
        if self._wake_fd is not None:
            poller.register(self._wake_fd, select.POLLIN)
        next_tick = time.monotonic()
        try:
            while not self.stopping:
                now = time.monotonic()
                if now >= next_tick:
                    self.tick()
                    next_tick += self.interval_s
                    now = time.monotonic()
                    if next_tick <= now:
                        missed = int((now - next_tick) / self.interval_s) + 1
                        next_tick += missed * self.interval_s
                        self.ticks_skipped += missed
                elif self._outbox:
                    self.flush()
                # poll() takes whole ms: round up, or the loop would spin
                # through the last fraction of a millisecond before a tick.
                timeout_ms = max(0, math.ceil((next_tick - time.monotonic()) * 1e3))
                for fd, _ in poller.poll(timeout_ms):
                    if fd == conn_fd:
                        self._receive()  # POLLHUP too: recv() then reports EOF
                    else:
                        self._drain_wake_fd()
                        self.check_master()
        except _MasterGone:
            return

    def close(self):
        for w in list(self.watched.values()):
            w.reader.close()
        self.watched.clear()
        self._system.close()
        if self._master is not None and self._master[2] is not None:
            self._master[2].close()


def monitor_main(conn, thresholds, interval_s, master_pid, master_create_time):
    """Body of the monitor process (the target of ``Process``). Returns when done.

    Runs until ``Stop``, until the master closes its pipe end, or until the
    master dies (then it kills the pool first). An unexpected error is sent
    as :class:`~loadgen.messages.MonitorError` and ends the process with
    exit code 1. Blocks for the whole run.
    """
    _proc.set_title("loadgen: monitor")
    _proc.ignore_sigint()
    # A forked child inherits the master's handlers (e.g. a SIGTERM handler
    # that writes a report): the monitor wants the plain default.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    wake_r = None
    try:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        # The handler does nothing; the wake-up fd makes the wait return at once.
        # Installing it also replaces any wake-up fd inherited from the master,
        # which would otherwise receive the monitor's signals.
        signal.signal(_PDEATH_SIGNAL, lambda signum, frame: None)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    except ValueError:  # not the main thread (tests): the per-tick check remains
        wake_r = None
    _proc.set_pdeathsig(_PDEATH_SIGNAL)
    mon = None
    try:
        mon = Monitor(conn, thresholds, interval_s, master_pid, master_create_time, wake_fd=wake_r)
        mon.run()
    except Exception as exc:
        log.exception("monitor: crashed")
        try:
            conn.send(MonitorError(type(exc).__name__, str(exc), traceback.format_exc()))
        except Exception:  # noqa: BLE001 - the master may be gone too
            pass
        raise SystemExit(1) from exc
    finally:
        if mon is not None:
            mon.close()


# ---------------------------------------------------------------- the master's handle


class SystemResourceMonitor:
    """The master's handle on the monitor process (the seed's class name).

    ::

        mon = SystemResourceMonitor(thresholds, interval_s=0.1)
        conn = mon.start()            # before the pool
        mon.watch(pid, create_time, pgid, role="worker")
        ... connection.wait([conn, ...]) → Sample / Breach / MonitorError
        mon.stop()

    ``interval_s``: sampling period, seconds, ≥ 0.01 (UsageError below).
    The monitor's CPU scales with it: ≈1.5 % of a core at 0.1 s with 50
    watched processes, ten times that at 0.01 s. ``process`` is the
    monitor's ``Process`` once started; ``conn`` the master's pipe end,
    which delivers one :class:`~loadgen.messages.Sample` per tick, a
    :class:`~loadgen.messages.Breach` after the monitor has killed the
    pool, and :class:`~loadgen.messages.MonitorError` if it crashes (then
    it exits with code 1).
    """

    def __init__(self, thresholds=None, interval_s=0.1):
        self.thresholds = thresholds if thresholds is not None else ResourceThresholds()
        try:
            interval_s = float(interval_s)
        except (TypeError, ValueError):
            raise UsageError(f"sample interval: expected seconds, got {interval_s!r}") from None
        if not (math.isfinite(interval_s) and interval_s >= MIN_INTERVAL_S):
            raise UsageError(f"sample interval: must be at least {MIN_INTERVAL_S} s, got {interval_s!r}")
        self.interval_s = interval_s
        self.process = None
        self.conn = None

    def start(self, ctx=None):
        """Start the monitor process; return the master's end of the pipe.

        ``ctx``: a ``multiprocess`` context (default: fork on Linux). The
        calling process is the master the monitor watches. Blocks only for
        the process start.
        """
        import multiprocess as mp

        if self.process is not None:
            raise RuntimeError("monitor already started")
        if ctx is None:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        me = os.getpid()
        proc = ctx.Process(
            target=monitor_main, name="loadgen-monitor", daemon=True,
            args=(child_conn, self.thresholds, self.interval_s, me, _proc.create_time(me)),
        )
        proc.start()
        child_conn.close()
        self.process, self.conn = proc, parent_conn
        return parent_conn

    def watch(self, pid, create_time=None, pgid=None, role="worker"):
        """Ask the monitor to watch (and, for a pool role, guard) ``pid``. Non-blocking.

        ``create_time``: UNIX seconds as psutil reports it (read now if None);
        the monitor ignores the pid unless it matches.
        """
        if create_time is None:
            create_time = _proc.create_time(pid)
        self._send(Watch(pid=pid, create_time=create_time, pgid=pgid, role=role))

    def unwatch(self, pid):
        self._send(Unwatch(pid=pid))

    def _send(self, msg):
        """Send to the monitor; a no-op once it is gone (the master stops the run on its own)."""
        if self.conn is None:
            return
        try:
            self.conn.send(msg)
        except (OSError, ValueError):
            pass

    def receive(self, timeout_s=0.0):
        """Every message waiting on the pipe, waiting up to ``timeout_s`` for the first.

        A convenience for tests and simple callers; the master reads
        ``conn`` in its own wait loop instead.
        """
        out = []
        if self.conn.poll(timeout_s):
            while True:
                try:
                    out.append(self.conn.recv())
                except EOFError:
                    break
                if not self.conn.poll(0):
                    break
        return out

    def stop(self, timeout_s=2.0):
        """Stop the monitor: Stop, join, then terminate/kill if needed. Returns its exit code.

        Blocks up to ``timeout_s`` + ``TIMING.kill_grace_s`` (+ ``kill_wait_s`` for a process that
        will not die). Safe to call twice.
        """
        if self.process is None:
            return None
        self._send(Stop())
        _proc.end_processes([self.process], polite_s=timeout_s)
        code = self.process.exitcode
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        return code

    def __enter__(self):
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

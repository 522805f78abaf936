"""The thresholds, judged sample by sample: :class:`ThresholdEvaluator`, pure (no I/O).

The monitor feeds it every :class:`~loadgen.engine.messages.Sample` and
acts on the ``(metric, value, limit)`` crossings it returns: it kills the
pool for those that :func:`kills` says kill, and reports the others. The metric
names (``METRIC_*``) are those of ``Breach.metric`` and ``events.jsonl``;
``POOL_ROLES``/``GROWTH_ROLES`` say whose memory the limits count.
The growth guard's fits are ``analysis.trend``'s.
"""

from __future__ import annotations

import math

from ..config import TIMING, ResourceThresholds
from ..analysis.trend import SlopeEstimator, best_step_sse, linear_fit

# Roles of watched processes. The pool (workers, stressors and the processes they started) is
# what the memory limit counts and what a breach kills; any other role is sampled and reported,
# never counted nor signalled.
POOL_ROLES = frozenset({"worker", "stressor", "descendant"})  # descendant: a process the pool started
GROWTH_ROLES = frozenset({"worker"})  # whose memory the growth-rate guard follows

# Breach metrics, as they appear in Breach.metric and events.jsonl.
METRIC_MEMORY = "memory_mb"  # pool PSS estimate > max_memory_mb
METRIC_AVAILABLE = "available_memory_mb"  # system available < min_available_memory_mb
METRIC_GROWTH = "memory_growth_mb_per_s"  # pool slope > memory_growth_rate_mb_per_sec
METRIC_CPU = "cpu_percent"  # machine CPU > max_cpu_percent for cpu_window_s

# The hard growth limit's fit must be good and better than a single step, so that a warm-up
# jump is not a "rate": enough points, spanning enough of TIMING.growth_window_s, well fitted.
GROWTH_MIN_FILL = 0.8  # the points must span this share of the window
GROWTH_MIN_POINTS = 10
GROWTH_MIN_R2 = 0.8


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
        """``(metric, value, limit)`` for the first threshold ``sample`` crosses, else None."""
        found = self.crossings(sample)
        return found[0] if found else None

    def crossings(self, sample):
        """Every ``(metric, value, limit)`` that ``sample`` crosses, the guards that protect the machine
        first (memory, the system floor), then growth, then CPU. Call once per sample: it feeds the
        windows. Which of them kill is :func:`kills`'s call."""
        th = self.thresholds
        self.observe_memory(sample.t, sample.pool_memory_mb)
        # The CPU window is updated on every sample, crossing or not, so that
        # its state never depends on which other check fired.
        cpu = self._cpu_breach(sample.t, sample.cpu_percent)
        found = []
        if sample.pool_memory_mb > th.max_memory_mb:
            found.append((METRIC_MEMORY, sample.pool_memory_mb, th.max_memory_mb))
        if th.min_available_memory_mb > 0 and sample.available_mb < th.min_available_memory_mb:
            found.append((METRIC_AVAILABLE, sample.available_mb, th.min_available_memory_mb))
        slope = self._growth_breach(th.memory_growth_rate_mb_per_sec)
        if slope is not None:
            found.append((METRIC_GROWTH, slope, th.memory_growth_rate_mb_per_sec))
        if cpu is not None:
            found.append((METRIC_CPU, cpu, th.max_cpu_percent))
        return found


def kills(thresholds, metric):
    """True when crossing ``metric`` kills the pool: the pool's memory and the system floor always do;
    machine CPU and memory growth only when named in ``thresholds.kill_on`` (else they are reported)."""
    guard = {METRIC_CPU: "cpu", METRIC_GROWTH: "growth"}.get(metric)
    return guard is None or guard in thresholds.kill_on

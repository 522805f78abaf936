"""Monitor pieces without processes: fits, leak verdict, thresholds, message handling."""

import logging
import math
import os

import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.engine import _proc, _procfs
from loadgen.config import ResourceThresholds
from loadgen.engine.messages import Breach, Exceeded, Sample, Stop, Unwatch, Watch
from loadgen.engine.monitor import MAX_PENDING_SAMPLES, Monitor
from loadgen.engine.thresholds import (
    METRIC_AVAILABLE,
    METRIC_CPU,
    METRIC_GROWTH,
    METRIC_MEMORY,
    ThresholdEvaluator,
    kills,
)
from loadgen.analysis.leak import LeakDetector
from loadgen.analysis.trend import SlopeEstimator, best_step_sse, linear_fit

T0 = 1.79e9  # realistic UNIX times stress the arithmetic


def sample(t, memory=100.0, cpu=10.0, available=10_000.0):
    return Sample(t=t, pool_memory_mb=memory, pool_rss_mb=memory, pool_cpu_percent=0.0,
                  cpu_percent=cpu, per_cpu=(cpu, cpu), available_mb=available, swap_used_mb=0.0)


# ---------------------------------------------------------------- SlopeEstimator


@settings(max_examples=60, deadline=None)
@given(
    slope=st.floats(-500, 500, allow_nan=False),
    intercept=st.floats(0, 5000, allow_nan=False),
    dt=st.sampled_from([0.01, 0.1, 1.0]),
    n=st.integers(2, 300),
)
def test_slope_of_exact_line(slope, intercept, dt, n):
    est = SlopeEstimator(window_s=1e9)
    for i in range(n):
        est.update(T0 + i * dt, intercept + slope * i * dt)
    assert est.slope() == pytest.approx(slope, abs=1e-6 * max(1.0, abs(slope)) + 1e-6)
    if abs(slope) * n * dt > 1e-3:
        assert est.r2() == pytest.approx(1.0, abs=1e-6)


def test_slope_needs_two_points_and_a_span():
    est = SlopeEstimator(5.0)
    assert est.slope() is None and est.r2() is None
    est.update(T0, 1.0)
    assert est.slope() is None
    est.update(T0, 2.0)  # same instant: no time span
    assert est.slope() is None
    est.update(T0 + 1, 3.0)
    assert est.slope() is not None


def test_constant_value_has_zero_slope_and_r2():
    est = SlopeEstimator(5.0)
    for i in range(50):
        est.update(T0 + i * 0.1, 800.0)
    assert est.slope() == pytest.approx(0.0, abs=1e-9)
    assert est.r2() == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_slope_with_noise(seed):
    rng = np.random.default_rng(seed)
    est = SlopeEstimator(10.0)
    for i in range(101):  # 10 s at 10 Hz, 5 MB/s, noise sd 2 MB
        est.update(T0 + i * 0.1, 300 + 5.0 * i * 0.1 + rng.normal(0, 2.0))
    # Standard error ≈ 2 / (sqrt(101) · 2.9) ≈ 0.07 MB/s.
    assert est.slope() == pytest.approx(5.0, abs=0.35)
    assert est.r2() > 0.9


def test_window_evicts_old_points():
    est = SlopeEstimator(window_s=2.0)
    for i in range(100):  # 10 s climbing at 10 MB/s
        est.update(T0 + i * 0.1, 10.0 * i * 0.1)
    for i in range(100, 200):  # then 10 s flat
        est.update(T0 + i * 0.1, 100.0)
    assert len(est) == 21  # points within [t - 2 s, t] at 10 Hz
    assert est.span_s() == pytest.approx(2.0)
    assert est.slope() == pytest.approx(0.0, abs=1e-6)


def test_running_sums_do_not_drift():
    rng = np.random.default_rng(7)
    est = SlopeEstimator(window_s=3.0)
    for i in range(20_000):
        est.update(T0 + i * 0.01, 1000 + 3.0 * i * 0.01 + rng.normal(0, 5))
    pts = est.points()
    slope, r2, _, _ = linear_fit([t for t, _ in pts], [v for _, v in pts])
    assert est.slope() == pytest.approx(slope, rel=1e-9, abs=1e-9)
    assert est.r2() == pytest.approx(r2, rel=1e-7, abs=1e-9)


def test_time_must_not_go_back():
    est = SlopeEstimator(5.0)
    est.update(T0 + 1, 1.0)
    with pytest.raises(ValueError):
        est.update(T0, 1.0)


def test_best_step_finds_the_jump():
    vs = [10.0] * 30 + [50.0] * 20
    sse, k = best_step_sse(vs)
    assert k == 30 and sse == pytest.approx(0.0, abs=1e-9)
    _, _, line_sse, _ = linear_fit(list(range(50)), vs)
    assert line_sse > 1000


# ---------------------------------------------------------------- leak verdict


def series(fn, duration_s=60.0, hz=2.0, noise_mb=3.0, seed=0):
    rng = np.random.default_rng(seed)
    ts = np.arange(0.0, duration_s, 1.0 / hz) + T0
    vs = np.array([fn(t - T0) for t in ts]) + rng.normal(0.0, noise_mb, len(ts))
    return ts.tolist(), vs.tolist()


SEEDS = range(6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rate", [1.0, 2.0, 5.0])
def test_linear_growth_is_a_leak(rate, seed):
    ts, vs = series(lambda t: 400 + rate * t, seed=seed)
    v = LeakDetector.verdict(ts, vs)
    assert v["leak"], v
    assert v["slope_mb_per_s"] == pytest.approx(rate, abs=0.3)
    assert v["r2"] > 0.5 and v["samples"] >= 50 and v["window_s"] == pytest.approx(30.0, abs=1.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_one_mb_per_s_at_one_hz_with_noise(seed):
    # The report's per-second timeseries: 30 points in the window.
    ts, vs = series(lambda t: 900 + 1.0 * t, duration_s=45, hz=1.0, noise_mb=4.0, seed=seed)
    assert LeakDetector.verdict(ts, vs)["leak"]


@pytest.mark.parametrize("seed", SEEDS)
def test_steady_large_working_set_is_not_a_leak(seed):
    # 1.5 GB held, with a sawtooth of operations allocating and freeing 40 MB.
    ts, vs = series(lambda t: 1500 + 40 * ((t * 0.7) % 1.0), noise_mb=8.0, seed=seed)
    v = LeakDetector.verdict(ts, vs)
    assert not v["leak"], v
    assert abs(v["slope_mb_per_s"]) < 1.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("at", [35.0, 45.0, 55.0])
def test_a_single_step_is_not_a_leak(seed, at):
    ts, vs = series(lambda t: 500 + (80 if t >= at else 0), noise_mb=2.0, seed=seed)
    v = LeakDetector.verdict(ts, vs)
    assert not v["leak"], v


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ramp_s", [8.0, 20.0])
def test_warm_up_ramp_then_flat_is_not_a_leak(seed, ramp_s):
    ts, vs = series(lambda t: 200 + 300 * min(t, ramp_s) / ramp_s, duration_s=50, noise_mb=3.0, seed=seed)
    v = LeakDetector.verdict(ts, vs)
    assert not v["leak"], v


@pytest.mark.parametrize("seed", SEEDS)
def test_ramp_levelling_off_inside_the_window_is_not_a_leak(seed):
    # A cache filling: grows 3 MB/s until t=40 s, then flat; the window is 25–55 s.
    ts, vs = series(lambda t: 300 + 3.0 * min(t, 40.0), duration_s=55, noise_mb=2.0, seed=seed)
    v = LeakDetector.verdict(ts, vs, warmup_s=0)
    assert not v["leak"], v


def test_leak_after_a_warm_up_is_still_found():
    ts, vs = series(lambda t: 200 + 300 * min(t, 5) / 5 + 2.0 * max(0.0, t - 5), seed=3)
    assert LeakDetector.verdict(ts, vs)["leak"]


def test_too_little_data_gives_no_verdict():
    v = LeakDetector.verdict([T0, T0 + 1, T0 + 2], [1, 2, 3])
    assert not v["leak"] and "not enough" in v["reason"]
    ts, vs = series(lambda t: 100 + 5 * t, duration_s=6)
    assert "not enough" in LeakDetector.verdict(ts, vs)["reason"]


def test_detector_instance_carries_its_settings():
    ts, vs = series(lambda t: 400 + 1.5 * t, seed=1)
    assert LeakDetector(min_slope_mb_s=1.0)(ts, vs)["leak"]
    assert not LeakDetector(min_slope_mb_s=5.0)(ts, vs)["leak"]


# ---------------------------------------------------------------- ThresholdEvaluator


def test_memory_breach():
    ev = ThresholdEvaluator(ResourceThresholds(max_memory_mb=200, max_cpu_percent=100))
    assert ev.check(sample(T0, memory=199.9)) is None
    assert ev.check(sample(T0 + 0.1, memory=200.5)) == (METRIC_MEMORY, 200.5, 200)


def test_available_memory_floor_breach():
    ev = ThresholdEvaluator(ResourceThresholds(min_available_memory_mb=512))
    assert ev.check(sample(T0, available=600)) is None
    assert ev.check(sample(T0 + 0.1, available=400)) == (METRIC_AVAILABLE, 400, 512)
    off = ThresholdEvaluator(ResourceThresholds(min_available_memory_mb=0))
    assert off.check(sample(T0, available=1)) is None


def run_cpu(ev, profile, dt=0.1):
    """Feed (duration_s, cpu) segments; return the first breach and its time."""
    t = T0
    for duration, cpu in profile:
        for _ in range(round(duration / dt)):
            t += dt
            b = ev.check(sample(t, cpu=cpu))
            if b is not None:
                return b, t
    return None, t


def test_cpu_above_limit_shorter_than_window_does_not_breach():
    ev = ThresholdEvaluator(ResourceThresholds(max_cpu_percent=90, cpu_window_s=3.0))
    breach, _ = run_cpu(ev, [(1, 20), (2.8, 99), (0.1, 50), (2.8, 99), (1, 20)] * 3)
    assert breach is None


def test_cpu_above_limit_for_the_whole_window_breaches():
    ev = ThresholdEvaluator(ResourceThresholds(max_cpu_percent=90, cpu_window_s=3.0))
    breach, t = run_cpu(ev, [(1, 20), (1, 95), (10, 99)])
    assert breach == (METRIC_CPU, 95, 90)  # the lowest sample of the window
    assert 1.1 + 3.0 - 1e-6 <= t - T0 <= 1.1 + 3.1 + 1e-6  # one tick of float slack


def test_cpu_guard_off_at_100():
    ev = ThresholdEvaluator(ResourceThresholds(max_cpu_percent=100, cpu_window_s=1.0))
    breach, _ = run_cpu(ev, [(10, 100.0)])
    assert breach is None


def grow(ev, rate, seconds, start=100.0, t0=T0, dt=0.1, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(round(seconds / dt)):
        t = t0 + i * dt
        b = ev.check(sample(t, memory=start + rate * i * dt + rng.normal(0, noise)))
        if b is not None:
            return b, t - t0
    return None, seconds


def test_growth_rate_breach_after_a_filled_window():
    th = ResourceThresholds(memory_growth_rate_mb_per_sec=10, max_cpu_percent=100)
    breach, after = grow(ThresholdEvaluator(th), 25.0, 10.0, noise=3.0)
    assert breach is not None and breach[0] == METRIC_GROWTH and breach[1] == pytest.approx(25, abs=3)
    assert 3.5 < after < 5.0  # needs 80% of the 5 s window


def test_growth_below_limit_and_a_step_do_not_breach():
    th = ResourceThresholds(memory_growth_rate_mb_per_sec=10, max_cpu_percent=100)
    assert grow(ThresholdEvaluator(th), 8.0, 15.0, noise=1.0)[0] is None
    ev = ThresholdEvaluator(th)
    for i in range(150):  # a worker loading 300 MB of data at once, at t = 7.5 s
        t = T0 + i * 0.1
        assert ev.check(sample(t, memory=100 + (300 if i >= 75 else 0))) is None


def test_processes_joining_are_not_growth():
    th = ResourceThresholds(memory_growth_rate_mb_per_sec=10, max_cpu_percent=100, max_memory_mb=10_000)
    ev = ThresholdEvaluator(th)
    memory = 0.0
    for i in range(100):  # a new 40 MB worker every 0.2 s for 10 s: 200 MB/s
        if i % 2 == 0:
            memory += 40.0
            ev.rebase(40.0)
        assert ev.check(sample(T0 + i * 0.1, memory=memory)) is None
    assert abs(ev.growth.slope()) < 1e-6


# ---------------------------------------------------------------- Monitor with a fake connection


class FakeConn:
    def __init__(self):
        self.sent = []

    def send(self, msg):
        self.sent.append(msg)


@pytest.fixture
def monitor():
    m = Monitor(FakeConn(), ResourceThresholds(max_cpu_percent=100), 0.1)
    yield m
    m.close()


def me():
    return os.getpid(), psutil.Process().create_time()


def test_unknown_message_is_logged(monitor, caplog):
    with caplog.at_level(logging.WARNING, logger="loadgen.monitor"):
        monitor.handle("hello")
    assert "unknown message" in caplog.text and "hello" in caplog.text


def test_watch_sample_unwatch_stop(monitor):
    pid, ct = me()
    monitor.handle(Watch(pid, ct, role="master"))  # not a pool role: sampled, never killed
    s = monitor.tick()
    assert pid in s.processes and s.processes[pid][0] > 1.0
    assert s.pool_memory_mb == 0.0 and s.pool_rss_mb == 0.0
    assert 0.0 <= s.cpu_percent <= 100.0 and len(s.per_cpu) == psutil.cpu_count()
    assert s.available_mb > 0 and "t" in s.io
    assert monitor.conn.sent[-1] is s
    monitor.handle(Unwatch(pid))
    assert pid not in monitor.tick().processes
    monitor.handle(Stop())
    assert monitor.stopping


def test_pool_memory_counts_pss_and_growth_is_reported(monitor):
    pid, ct = me()
    # Role "stressor" puts the test process in the pool; the breach limit is
    # far away, so nothing is killed.
    monitor.handle(Watch(pid, ct, role="stressor"))
    s = monitor.tick()
    pss = _procfs.read_pss_mb(pid)
    assert s.pool_memory_mb == pytest.approx(pss, rel=0.2)
    assert s.pool_rss_mb >= s.pool_memory_mb * 0.9
    monitor.handle(Unwatch(pid))


def test_watch_with_wrong_create_time_is_refused(monitor, caplog):
    pid, ct = me()
    with caplog.at_level(logging.WARNING, logger="loadgen.monitor"):
        monitor.handle(Watch(pid, ct - 3600, role="worker"))
    assert pid not in monitor.watched
    assert "not watching" in caplog.text


def test_breach_without_a_pool_kills_nothing(monitor):
    monitor.evaluator = ThresholdEvaluator(ResourceThresholds(min_available_memory_mb=10**9, max_cpu_percent=100))
    monitor.tick()
    assert not any(isinstance(m, Breach) for m in monitor.conn.sent)


def test_dead_master_is_noticed():
    m = Monitor(FakeConn(), ResourceThresholds(), 0.1, master_pid=os.getpid(),
                master_create_time=psutil.Process().create_time())
    try:
        assert m.master_alive()
    finally:
        m.close()
    stranger = Monitor(FakeConn(), ResourceThresholds(), 0.1, master_pid=os.getpid(),
                       master_create_time=psutil.Process().create_time() - 100)
    try:
        assert not stranger.master_alive()
    finally:
        stranger.close()


# ---------------------------------------------------------------- _proc on this process


def test_proc_reads_match_psutil():
    p = psutil.Process()
    st = _procfs.read_stat(p.pid)
    assert st.state in "RS"
    assert st.rss_pages * _procfs.PAGE_SIZE == pytest.approx(p.memory_info().rss, rel=0.1)
    assert st.pgid == os.getpgid(0)
    reader = _procfs.StatReader(p.pid)
    try:
        assert reader.read().start_ticks == st.start_ticks
    finally:
        reader.close()
    assert 0 < _procfs.read_pss_mb(p.pid) <= p.memory_info().rss / 2**20 + 1
    assert _procfs.read_stat(2**22 + 17) is None


def test_identity_checks():
    p = psutil.Process()
    ct = p.create_time()
    assert _proc.is_same_process(p.pid, ct)
    assert not _proc.is_same_process(p.pid, ct + 1.0)
    assert not _proc.is_same_process(2**22 + 17, ct)
    # Signal 0 probes without effect: a wrong create time is never signalled.
    assert _proc.kill_verified(p.pid, ct, 0)
    assert not _proc.kill_verified(p.pid, ct - 0.5, 0)


def test_kill_refuses_our_own_group_and_strangers():
    # Nothing registered and our own group: nothing is signalled, returns at once.
    dead_at = _proc.kill_group_then_pids(os.getpgid(0), {os.getpid(): psutil.Process().create_time() - 50}, 0.1)
    assert isinstance(dead_at, float) and not math.isnan(dead_at)


def test_pdeathsig_can_be_set_and_cleared():
    assert _proc.set_pdeathsig(0)  # 0 clears it, so the test process is unchanged


def test_a_master_that_does_not_read_costs_samples_never_a_breach(monitor):
    writable = [False]
    monitor._writable = lambda: writable[0]
    limit = MAX_PENDING_SAMPLES
    for i in range(limit + 20):
        monitor.send(sample(T0 + i))
    breach = Breach("memory_mb", 300.0, 200.0, T0, T0 + 0.02, (1,))
    monitor.send(breach)
    for i in range(10):
        monitor.send(sample(T0 + 100 + i))
    assert monitor.conn.sent == []
    assert monitor.samples_dropped >= 30
    writable[0] = True
    monitor.flush()
    sent = monitor.conn.sent
    assert breach in sent and sum(isinstance(m, Sample) for m in sent) == limit
    assert sent[-1].t == T0 + 109  # the newest samples are the ones kept


def _tick_with(monitor, cpu):
    """One tick of ``monitor`` with a machine CPU reading of ``cpu`` (no /proc read of the system)."""
    monitor.sampler.sample_system = lambda now: (cpu, (cpu,), 8000.0, 0.0, {})
    return monitor.tick()


def test_report_only_cpu_is_sent_once_per_episode_and_kills_nothing(monitor, monkeypatch):
    """A report-only guard sends one Exceeded when the CPU stays above the limit for its window,
    none while it stays there, and a new one after it fell back and crossed again."""
    import loadgen.engine.monitor as monitor_module

    clock = [T0]
    monkeypatch.setattr(monitor_module.time, "time", lambda: clock[0])
    monitor.thresholds = ResourceThresholds(max_cpu_percent=80, cpu_window_s=0.25)
    monitor.evaluator = ThresholdEvaluator(monitor.thresholds)
    monitor.handle(Watch(*me(), pgid=None, role="worker"))
    for cpu in [95] * 6 + [10] * 2 + [95] * 6:
        _tick_with(monitor, cpu)
        clock[0] += 0.1
    exceeded = [m for m in monitor.conn.sent if isinstance(m, Exceeded)]
    assert [m.metric for m in exceeded] == [METRIC_CPU, METRIC_CPU]
    assert not [m for m in monitor.conn.sent if isinstance(m, Breach)]
    assert monitor.breaches == 0


def test_kill_on_cpu_makes_the_cpu_guard_kill():
    th = ResourceThresholds(max_cpu_percent=80, kill_on=("cpu",))
    assert kills(th, METRIC_CPU) and not kills(th, METRIC_GROWTH)
    assert kills(ResourceThresholds(), METRIC_MEMORY) and kills(ResourceThresholds(), METRIC_AVAILABLE)
    assert not kills(ResourceThresholds(), METRIC_CPU) and not kills(ResourceThresholds(), METRIC_GROWTH)


def test_crossings_lists_every_threshold_passed_machine_guards_first():
    ev = ThresholdEvaluator(ResourceThresholds(max_memory_mb=100, max_cpu_percent=80, cpu_window_s=0.1))
    ev.crossings(sample(T0, memory=50, cpu=95))
    found = ev.crossings(sample(T0 + 0.2, memory=150, cpu=95))
    assert [c[0] for c in found] == [METRIC_MEMORY, METRIC_CPU]

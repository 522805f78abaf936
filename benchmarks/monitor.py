"""How fast the monitor stops a runaway pool, by how much memory overshoots, what it costs.

    python benchmarks/monitor.py [--trials 10] [--cpu-seconds 10] [--watched 50]

(a) breach → pool dead: a child grows its memory fast and logs the moment
    its own memory (PSS at start + RSS growth since, the monitor's measure)
    crosses the limit; latency = Breach.pool_dead_at − that moment. Median
    over the trials at 50 ms and 100 ms sampling; target ≤ interval + 60 ms.
    A bare psutil watcher (memory_info() polling at the same interval, then
    SIGKILL) runs in the same session as the baseline.
(b) overshoot past max_memory_mb at several growth rates, against the
    bound rate × (interval + 60 ms).
(c) the monitor's own CPU, % of one core, at 10 Hz with N idle watched
    processes (target ≤ 2 %), from its CPU times over --cpu-seconds.
(d) as (a), the grower in a run cgroup (``engine.contain``) whose memory
    alarm the kernel raises (cgroup v1 memory): crossing→dead at 100 ms and
    1 s sampling, target ≤ 25 ms whatever the interval.

Timings are wall-clock on a shared machine: read the medians, not the maxima.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import multiprocess as mp  # noqa: E402
import numpy  # noqa: E402,F401  - workers import numpy: the idle processes carry its mappings
import psutil  # noqa: E402

from loadgen.engine import _procfs  # noqa: E402
from loadgen.config import ResourceThresholds  # noqa: E402
from loadgen.engine.messages import Breach, Sample  # noqa: E402
from loadgen.engine.monitor_handle import SystemResourceMonitor  # noqa: E402

MB = 1024 * 1024
LIMIT_MB = 200.0
SLACK_S = 0.060  # the latency target's allowance on top of one interval
CEILING_MB = 1500  # a grower that is never stopped stops itself here


def grower(rate_mb_s, limit_mb, crossed_at, crossed_rss_at, peak_mb, ready, cgroup=None):
    """Grow private memory at ``rate_mb_s`` in 10 ms steps; log the limit crossings.

    ``crossed_at``: when the monitor's measure (PSS at start + RSS growth)
    passed the limit; ``crossed_rss_at``: when plain RSS did (what a bare
    psutil watcher compares). ``cgroup``: a run cgroup to join first.
    """
    os.setpgid(0, 0)
    if cgroup is not None:
        cgroup.join()
    step_s = 0.01
    chunk = max(1, int(rate_mb_s * step_s * MB))
    pss0 = _procfs.read_pss_mb(os.getpid())
    rss0 = _procfs.read_stat(os.getpid()).rss_pages * _procfs.PAGE_SIZE / MB
    ready.set()
    hold = []
    start = time.monotonic()
    k = 0
    piece = min(chunk, MB)  # log the crossing to within a MB (2 ms at 500 MB/s)
    while len(hold) * piece < CEILING_MB * MB:
        for _ in range(max(1, chunk // piece)):
            hold.append(b"\x01" * piece)
            rss = _procfs.read_stat(os.getpid()).rss_pages * _procfs.PAGE_SIZE / MB
            mem = pss0 + (rss - rss0)
            peak_mb.value = mem
            now = time.time()
            if mem > limit_mb and crossed_at.value == 0.0:
                crossed_at.value = now
            if rss > limit_mb and crossed_rss_at.value == 0.0:
                crossed_rss_at.value = now
        k += 1
        delay = start + k * step_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    time.sleep(30)


def idle():
    time.sleep(3600)


def start_grower(ctx, rate_mb_s, limit_mb, phase_s, cgroup=None):
    """Start a grower after a random delay in [0, phase_s), so that the limit
    is crossed at a random point of the sampling period (trials started back
    to back would otherwise all cross at the same phase)."""
    time.sleep(random.uniform(0.0, phase_s))
    crossed, crossed_rss, peak, ready = ctx.Value("d", 0.0), ctx.Value("d", 0.0), ctx.Value("d", 0.0), ctx.Event()
    p = ctx.Process(target=grower, args=(rate_mb_s, limit_mb, crossed, crossed_rss, peak, ready, cgroup),
                    daemon=True)
    p.start()
    ready.wait(10)
    return p, crossed, crossed_rss, peak


def monitor_trial(ctx, mon, rate_mb_s, limit_mb, cgroup=None, early_ok=False):
    """One grower under the monitor → (latency_s, detect_s, kill_s, overshoot_mb) or None.
    ``early_ok``: a breach before the grower's own measure crossed (they differ by < 1 MB) counts,
    from the detection (latency = kill + free)."""
    p, crossed, _, peak = start_grower(ctx, rate_mb_s, limit_mb, mon.interval_s, cgroup)
    try:
        mon.watch(p.pid, psutil.Process(p.pid).create_time(), pgid=p.pid, role="worker")
        end = time.monotonic() + 20
        while time.monotonic() < end:
            for msg in mon.receive(0.2):
                if isinstance(msg, Breach):
                    p.join(2)
                    if crossed.value == 0.0:
                        if not early_ok:
                            return None
                        crossed.value = msg.detected_at
                    return (msg.pool_dead_at - crossed.value, msg.detected_at - crossed.value,
                            msg.pool_dead_at - msg.detected_at, peak.value - limit_mb)
        return None
    finally:
        if p.is_alive():
            p.kill()
        p.join(2)


def psutil_trial(ctx, interval_s, rate_mb_s, limit_mb):
    """The baseline: poll memory_info().rss every interval, SIGKILL, wait for the exit."""
    p, _, crossed, peak = start_grower(ctx, rate_mb_s, limit_mb, 0.0)
    try:
        proc = psutil.Process(p.pid)
        # Unlike the monitor, this loop starts with the child: offset its phase.
        time.sleep(random.uniform(0.0, interval_s))
        start = time.monotonic()
        k = 0
        while time.monotonic() - start < 20:
            if proc.memory_info().rss / MB > limit_mb:
                proc.kill()
                p.join(5)
                dead = time.time()
                return dead - crossed.value if crossed.value else None
            k += 1
            time.sleep(max(0.0, start + k * interval_s - time.monotonic()))
        return None
    finally:
        if p.is_alive():
            p.kill()
        p.join(2)


def fmt_ms(xs):
    return f"{statistics.median(xs) * 1e3:6.1f} ms median, {min(xs) * 1e3:6.1f}–{max(xs) * 1e3:6.1f}"


def bench_latency(ctx, trials, rate_mb_s=500.0):
    print(f"(a) breach → pool dead, limit {LIMIT_MB:.0f} MB, growth {rate_mb_s:.0f} MB/s, {trials} trials")
    results = {}
    for interval in (0.05, 0.1):
        mon = SystemResourceMonitor(ResourceThresholds(max_memory_mb=LIMIT_MB, max_cpu_percent=100), interval)
        mon.start(ctx)
        try:
            mon.receive(0.3)
            runs = [r for r in (monitor_trial(ctx, mon, rate_mb_s, LIMIT_MB) for _ in range(trials)) if r]
        finally:
            mon.stop()
        base = [r for r in (psutil_trial(ctx, interval, rate_mb_s, LIMIT_MB) for _ in range(trials)) if r]
        lat = [r[0] for r in runs]
        target = interval + SLACK_S
        med = statistics.median(lat)
        print(f"  interval {interval * 1e3:.0f} ms: monitor  crossing→dead {fmt_ms(lat)}"
              f"  [target ≤ {target * 1e3:.0f} ms: {'OK' if med <= target else 'MISSED'}]")
        print(f"                  detection {fmt_ms([r[1] for r in runs])}; kill+free {fmt_ms([r[2] for r in runs])}")
        if base:
            print(f"                  psutil watcher crossing→dead {fmt_ms(base)}"
                  f"  (monitor/psutil = {med / statistics.median(base):.2f})")
        results[interval] = (lat, base)
    return results


def bench_alarm(ctx, trials, rate_mb_s=500.0):
    """(d) as (a), the grower in a run cgroup whose memory alarm the kernel raises (cgroup v1 memory)."""
    from loadgen.engine.cgroup import make_cgroup
    from loadgen.engine.contain import ContainSpec

    cgroup = make_cgroup(f"bench-{os.getpid()}")
    probe = cgroup.memory_alarm(1.0) if cgroup is not None else None
    if probe is None:
        print("(d) kernel memory alarm: not available here (needs a v1 memory cgroup loadgen may create)")
        if cgroup is not None:
            cgroup.remove()
        return None
    os.close(probe)
    print(f"(d) breach → pool dead with the kernel's memory alarm ({cgroup.kind}, memory in {cgroup.memory_dir}), "
          f"limit {LIMIT_MB:.0f} MB, growth {rate_mb_s:.0f} MB/s, {trials} trials")
    results = {}
    try:
        for interval in (0.1, 1.0):
            mon = SystemResourceMonitor(ResourceThresholds(max_memory_mb=LIMIT_MB, max_cpu_percent=100), interval)
            mon.start(ctx)
            try:
                mon.contain(ContainSpec(cgroup=cgroup))
                mon.receive(0.3)
                runs = [r for r in (monitor_trial(ctx, mon, rate_mb_s, LIMIT_MB, cgroup, early_ok=True)
                                    for _ in range(trials)) if r]
            finally:
                mon.stop()
            lat = [r[0] for r in runs]
            med = statistics.median(lat)
            print(f"  interval {interval * 1e3:.0f} ms: monitor  crossing→dead {fmt_ms(lat)}"
                  f"  [target ≤ 25 ms: {'OK' if med <= 0.025 else 'MISSED'}]")
            print(f"                  detection {fmt_ms([r[1] for r in runs])} (< 0: before the grower's own measure); "
                  f"kill+free {fmt_ms([r[2] for r in runs])}")
            results[interval] = lat
        floor = [kernel_free_s(LIMIT_MB) for _ in range(5)]
        print(f"  the kernel's own floor: SIGKILL → zombie of a process holding {LIMIT_MB:.0f} MB {fmt_ms(floor)}")
    finally:
        cgroup.kill()
        cgroup.remove()
    return results


def kernel_free_s(mb):
    """Seconds from SIGKILL to zombie for a forked child holding ``mb`` MB: the kernel frees its pages
    before the process counts as dead, a floor no monitor goes under."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        hold = [b"\x01" * MB for _ in range(int(mb))]  # noqa: F841 - held until killed
        os.write(w, b"x")
        time.sleep(60)
        os._exit(0)
    os.read(r, 1)
    os.close(r)
    os.close(w)
    t = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while not _procfs.is_dead_stat(_procfs.read_stat(pid)):
        pass
    took = time.perf_counter() - t
    os.waitpid(pid, 0)
    return took


def bench_overshoot(ctx, trials):
    interval = 0.1
    print(f"(b) overshoot past {LIMIT_MB:.0f} MB at {interval * 1e3:.0f} ms sampling, bound = rate × (interval + 60 ms)")
    mon = SystemResourceMonitor(ResourceThresholds(max_memory_mb=LIMIT_MB, max_cpu_percent=100), interval)
    mon.start(ctx)
    try:
        mon.receive(0.3)
        for rate in (100.0, 300.0, 1000.0):
            runs = [r for r in (monitor_trial(ctx, mon, rate, LIMIT_MB) for _ in range(trials)) if r]
            over = [r[3] for r in runs]
            bound = rate * (interval + SLACK_S)
            print(f"  {rate:6.0f} MB/s: overshoot median {statistics.median(over):6.1f} MB, max {max(over):6.1f} MB"
                  f"  (bound {bound:5.0f} MB: {'OK' if max(over) <= bound else 'exceeded'})")
    finally:
        mon.stop()


def run_time_s(pid):
    """Seconds ``pid`` has spent on a CPU, from /proc/PID/schedstat (ns), or None."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def bench_cpu(ctx, watched, seconds):
    interval = 0.1
    print(f"(c) monitor CPU at {1 / interval:.0f} Hz with {watched} idle watched processes, over {seconds:.0f} s")
    procs = []
    mon = SystemResourceMonitor(ResourceThresholds(max_memory_mb=1e6, max_cpu_percent=100), interval)
    mon.start(ctx)
    try:
        for _ in range(watched):
            p = ctx.Process(target=idle, daemon=True)
            p.start()
            procs.append(p)
            mon.watch(p.pid, psutil.Process(p.pid).create_time(), role="worker")
        end = time.monotonic() + 2.0  # let every PSS be read once and the pipe settle
        while time.monotonic() < end:
            mon.receive(0.1)
        me = psutil.Process(mon.process.pid)
        c0, s0, w0 = me.cpu_times(), run_time_s(me.pid), time.monotonic()
        n = 0
        end = w0 + seconds
        last = None
        while time.monotonic() < end:
            for msg in mon.receive(0.1):
                if isinstance(msg, Sample):
                    n += 1
                    last = msg
        c1, s1, w1 = me.cpu_times(), run_time_s(me.pid), time.monotonic()
        # schedstat counts nanoseconds on CPU; cpu_times() moves in 10 ms ticks,
        # too coarse for 1 % over 10 s. Both are printed.
        cpu_s = s1 - s0 if s1 is not None else (c1.user - c0.user) + (c1.system - c0.system)
        pct = 100.0 * cpu_s / (w1 - w0)
        print(f"  {pct:.2f} % of one core (user {c1.user - c0.user:.3f} s, system {c1.system - c0.system:.3f} s)"
              f"  [target ≤ 2 %: {'OK' if pct <= 2.0 else 'MISSED'}]")
        print(f"  {n} samples in {w1 - w0:.1f} s, {cpu_s / max(n, 1) * 1e3:.2f} ms of CPU per tick;"
              f" last sample: {len(last.processes) if last else 0} processes, pool PSS {last.pool_memory_mb:.0f} MB"
              f" vs RSS sum {last.pool_rss_mb:.0f} MB")
    finally:
        mon.stop()
        for p in procs:
            p.kill()
        for p in procs:
            p.join(2)
    # The per-process read the monitor replaces, for scale.
    pid = os.getpid()
    proc = psutil.Process(pid)
    reader = _procfs.StatReader(pid)
    for label, fn in (("psutil memory_info()+cpu_percent()", lambda: (proc.memory_info(), proc.cpu_percent())),
                      ("StatReader.read()", reader.read),
                      ("read_pss_mb() (smaps_rollup)", lambda: _procfs.read_pss_mb(pid))):
        k = 200
        t = time.perf_counter()
        for _ in range(k):
            fn()
        print(f"  {label:38s} {(time.perf_counter() - t) / k * 1e6:7.1f} µs per process")
    reader.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--watched", type=int, default=50)
    ap.add_argument("--cpu-seconds", type=float, default=10.0)
    ap.add_argument("--only", choices=["latency", "overshoot", "cpu", "alarm"])
    args = ap.parse_args(argv)
    ctx = mp.get_context("fork")
    # The monitor logs every breach as a warning; the trials make dozens.
    logging.getLogger("loadgen").setLevel(logging.ERROR)
    print(f"{psutil.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, python {sys.version.split()[0]}")
    if args.only in (None, "latency"):
        bench_latency(ctx, args.trials)
    if args.only in (None, "alarm"):
        bench_alarm(ctx, args.trials)
    if args.only in (None, "overshoot"):
        bench_overshoot(ctx, max(3, args.trials // 3))
    if args.only in (None, "cpu"):
        bench_cpu(ctx, args.watched, args.cpu_seconds)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())

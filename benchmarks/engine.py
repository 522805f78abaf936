"""Core engine figures (issue: core engine). Run: ``python benchmarks/engine.py``.

Prints, each measured in this run:
  1. generator overhead: no-op target, closed model, workers = cores, vs
     ``multiprocess.Pool.imap_unordered`` over the same no-op (chunksize 1 and 1000);
  2. scaling: a 10 ms numpy CPU burn per operation vs the ideal cores ÷ 10 ms;
  3. ``python -m loadgen --help`` wall time (median of 7);
  4. a 50-worker pool: time until every worker is ready; idle worker USS.
"""

import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loadgen.config import ResourceThresholds, default_workers  # noqa: E402
from loadgen.engine.load import RunPlan  # noqa: E402
from loadgen.engine.runner import Runner  # noqa: E402
from loadgen.workload.targets import TargetSpec  # noqa: E402

OPS = os.path.join(HERE, "_ops.py")
CORES = default_workers()
FREE = ResourceThresholds(max_cpu_percent=100, max_concurrent_operations=100)


def _noop(_):
    return None


def pool_baseline(n, chunksize):
    import multiprocess as mp

    with mp.get_context("fork").Pool(CORES) as pool:
        t = time.perf_counter()
        for _ in pool.imap_unordered(_noop, range(n), chunksize=chunksize):
            pass
        return n / (time.perf_counter() - t)


def loadgen_rate(ref, seconds, concurrency=None, slots=1):
    plan = RunPlan(concurrency=concurrency or CORES, workers=CORES, slots=slots, duration_s=seconds,
                   target=TargetSpec(ref=ref))
    out = Runner(plan, FREE).run()
    assert out.accounting.adds_up()
    return out


def main():
    print(f"machine: {CORES} usable cores, python {sys.version.split()[0]}")
    print("\n1. generator overhead (no-op, closed model, workers = cores, 5 s)")
    out = loadgen_rate(f"{OPS}:noop", 5.0)
    rate = out.throughput
    base1 = pool_baseline(200_000, 1)
    base1000 = pool_baseline(2_000_000, 1000)
    print(f"   loadgen                         {rate:12,.0f} ops/s  (latency samples {out.latency.count:,})")
    print(f"   multiprocess.Pool chunksize=1   {base1:12,.0f} ops/s  ratio {rate / base1:6.1f}x")
    print(f"   multiprocess.Pool chunksize=1000{base1000:12,.0f} ops/s  ratio {rate / base1000:6.1f}x")
    print(f"   target ≥ 600,000 ops/s: {'met' if rate >= 600_000 else 'NOT met'}")

    print("\n2. scaling (10 ms numpy CPU burn per operation, 6 s)")
    out = loadgen_rate(f"{OPS}:burn_10ms", 8.0)
    ideal = CORES / 0.010
    # Steady state: the whole seconds of load, without the first and the last (ramp and drain).
    steady = [r["throughput"] for r in list(out.seconds)[1:-1]]
    steady_rate = sum(steady) / len(steady) if steady else 0.0
    print(f"   steady state {steady_rate:8.1f} ops/s of ideal {ideal:.0f} = {steady_rate / ideal:6.1%}  (target ≥ 98%)")
    print(f"   whole run    {out.throughput:8.1f} ops/s = {out.throughput / ideal:6.1%} (start and drain included)")

    print("\n3. `python -m loadgen --help`")
    times = []
    for _ in range(7):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "loadgen", "--help"], stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    bare = []
    for _ in range(7):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t)
    print(f"   median {statistics.median(times) * 1000:.0f} ms (bare interpreter {statistics.median(bare) * 1000:.0f} ms; "
          f"target ≤ 300 ms)")

    print("\n4. 50-worker pool")
    import psutil

    plan = RunPlan(concurrency=50, workers=50, slots=1, duration_s=4.0, target=TargetSpec(ref=f"{OPS}:idle"))
    runner = Runner(plan, FREE)
    uss = []

    def progress(r, rec):
        if not uss:
            for h in r.pool.handles.values():
                try:
                    uss.append(psutil.Process(h.pid).memory_full_info().uss / 2**20)
                except psutil.Error:
                    pass

    runner.progress = progress
    out = runner.run()
    print(f"   ready in {out.pool_ready_s:.2f} s (target ≤ 2 s)")
    if uss:
        print(f"   idle worker USS: median {statistics.median(uss):.1f} MB, max {max(uss):.1f} MB (target ≤ 20 MB)")


if __name__ == "__main__":
    main()

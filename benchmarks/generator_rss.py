"""The generator's own memory over a long open-model run (issue: measurement you can trust).

    python benchmarks/generator_rss.py --minutes 30 --rate 20000

Drives a no-op target at ``--rate`` ops/s and samples the master's RSS every
second (from the per-second hook). Prints RSS after a one-minute warm-up,
at the end, the growth between them, and the least-squares slope. Target:
growth < 5 MB over 30 minutes at 20,000 ops/s. Not part of the test suite.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import psutil  # noqa: E402

from loadgen.config import ResourceThresholds  # noqa: E402
from loadgen.engine.load import RunPlan  # noqa: E402
from loadgen.engine.runner import Runner  # noqa: E402
from loadgen.workload.targets import TargetSpec  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=20_000.0)
    ap.add_argument("--out", default=None, help="run directory (streams on disk, as a real run)")
    args = ap.parse_args()
    me = psutil.Process()
    samples = []

    def sample(runner, rec):
        samples.append((time.monotonic(), me.memory_info().rss / 2**20, me.num_fds()))

    seconds = args.minutes * 60
    plan = RunPlan(rate=args.rate, duration_s=seconds, workers=2, slots=1,
                   target=TargetSpec(ref=os.path.join(HERE, "_ops.py") + ":noop"))
    th = ResourceThresholds(max_cpu_percent=100, max_execution_time_seconds=seconds + 600)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    out = Runner(plan, th, run_dir=args.out, on_second=sample).run()
    t0 = samples[0][0]
    warm = [s for s in samples if s[0] - t0 >= 60] or samples
    n = len(warm)
    mt = sum(s[0] for s in warm) / n
    mv = sum(s[1] for s in warm) / n
    slope = sum((s[0] - mt) * (s[1] - mv) for s in warm) / (sum((s[0] - mt) ** 2 for s in warm) or 1)
    acc = out.accounting
    print(f"{args.minutes:g} min at {args.rate:,.0f} ops/s: {acc.dispatched:,} operations "
          f"({acc.dispatched / out.load_duration_s:,.0f}/s), dropped {acc.dropped:,}")
    print(f"master RSS: after 1 min warm-up {warm[0][1]:.1f} MB, end {warm[-1][1]:.1f} MB, "
          f"growth {warm[-1][1] - warm[0][1]:+.2f} MB (target < 5 MB), max {max(s[1] for s in samples):.1f} MB, "
          f"slope {slope * 3600:+.2f} MB/h")
    print(f"master fds: {warm[0][2]} → {warm[-1][2]}")


if __name__ == "__main__":
    main()

"""How well the flow's CPU budget holds: asked vs used thread CPU time.

    python benchmarks/flow_calibration.py [--repeats N]

For each asked budget (1, 5, 10, 50 ms) the CPU part of a stage
(``loadgen.flow.burn_cpu``) runs ``--repeats`` times; the table shows the
mean and worst thread CPU time used (``time.thread_time``, what the flow
calibrates on) and the process CPU time (``time.process_time``: it would
exceed the thread's if BLAS ran on threads of its own). Then a few default
kickoffs give the default flow's mean wall time and CPU. Takes ~3 s.
"""

import argparse
import os
import sys
import time

# As loadgen's workers do: one BLAS thread, set before numpy is imported.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from loadgen.workload.flow import MockAIWritingFlowV2, burn_cpu  # noqa: E402

ASKED_MS = (1, 5, 10, 50)


def calibrate(asked_ms, repeats):
    """(mean used ms, worst error %, mean process ms) over ``repeats`` burns."""
    used, process = [], []
    for _ in range(repeats):
        t0, p0 = time.thread_time(), time.process_time()
        burn_cpu(asked_ms)
        used.append((time.thread_time() - t0) * 1000)
        process.append((time.process_time() - p0) * 1000)
    worst = max(abs(u - asked_ms) / asked_ms * 100 for u in used)
    return sum(used) / repeats, worst, sum(process) / repeats


def default_kickoffs(n):
    """(mean wall ms, mean thread CPU ms, loops per kickoff) of ``n`` default kickoffs."""
    flow = MockAIWritingFlowV2(seed=0)
    flow.kickoff()  # warm-up: this thread's matrices, numpy's caches
    loops = 0
    w0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(n):
        loops += flow.kickoff().style_loops
    return (time.perf_counter() - w0) / n * 1000, (time.thread_time() - c0) / n * 1000, loops / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="burns per budget (default 10)")
    parser.add_argument("--kickoffs", type=int, default=15, help="default kickoffs to time (default 15)")
    args = parser.parse_args(argv)

    burn_cpu(1)  # warm-up
    print(f"{'asked ms':>9} {'used ms':>9} {'error %':>8} {'worst %':>8} {'process ms':>11}")
    for asked in ASKED_MS:
        used, worst, process = calibrate(asked, args.repeats)
        print(f"{asked:>9} {used:>9.3f} {(used - asked) / asked * 100:>+8.2f} {worst:>8.2f} {process:>11.3f}")

    wall_ms, cpu_ms, loops = default_kickoffs(args.kickoffs)
    print(
        f"\ndefault kickoff (mean of {args.kickoffs}): wall {wall_ms:.1f} ms, "
        f"thread CPU {cpu_ms:.2f} ms, style loops {loops:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``--op-timeout`` on a no-op at full speed (issue #23, row 5). Run: ``python benchmarks/op_timeout.py``.

A no-op through the engine (closed model, workers = cores, one slot each) for ``--seconds`` (default
60), with ``--op-timeout 5s`` (A) and without (B), in alternating runs A B A B (``--pairs``, default 2),
so that a drift of the machine hits both alike. Prints, each measured in this run:

1. each run's throughput, and the timeouts (timed out operations, ``timeout`` events, worker crashes)
   of the runs with the timeout — goal: 0, over millions of µs-operations;
2. each pair's ratio A / B and the ratio of the sums — goal: within 5 % (the master's check reads each
   slot's start once per tick; the slots write their start times with or without a timeout, so the
   hot loop is the same).
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loadgen.config import ResourceThresholds, default_workers  # noqa: E402
from loadgen.engine.load import RunPlan  # noqa: E402
from loadgen.engine.runner import Runner  # noqa: E402
from loadgen.workload.targets import TargetSpec  # noqa: E402

OPS = os.path.join(HERE, "_ops.py")
CORES = default_workers()
FREE = ResourceThresholds(max_cpu_percent=100, max_concurrent_operations=100)
OP_TIMEOUT_S = 5.0
GOAL_RATIO = 0.05  # |A / B - 1| at most this


def run(seconds, op_timeout_s, asynchronous):
    plan = RunPlan(concurrency=CORES, workers=CORES, slots=1, duration_s=seconds, op_timeout_s=op_timeout_s,
                   target=TargetSpec(ref=f"{OPS}:{'anoop' if asynchronous else 'noop'}"))
    out = Runner(plan, FREE).run()
    assert out.accounting.adds_up()
    timeouts = out.accounting.timed_out + len(out.crashes)
    return out.throughput, out.accounting.dispatched, timeouts, out.exit_code, out.stop_reason


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each run (default 60)")
    ap.add_argument("--pairs", type=int, default=2, help="A B pairs (default 2: A B A B)")
    ap.add_argument("--async", dest="asynchronous", action="store_true", help="an async def no-op (async slots)")
    args = ap.parse_args()
    kind = "async no-op" if args.asynchronous else "no-op"
    print(f"machine: {CORES} usable cores, python {sys.version.split()[0]}; {kind}, closed model, "
          f"{CORES} workers × 1 slot, {args.seconds:g} s a run")
    a_sum = b_sum = 0.0
    ops_with = timeouts_with = 0
    verdicts_ok = True
    for pair in range(1, args.pairs + 1):
        rates = {}
        for label, timeout_s in (("A --op-timeout 5s", OP_TIMEOUT_S), ("B no --op-timeout", None)):
            rate, ops, timeouts, code, why = run(args.seconds, timeout_s, args.asynchronous)
            rates[timeout_s] = rate
            verdicts_ok &= code == 0
            extra = f"; timeouts {timeouts}" if timeout_s is not None else ""
            print(f"   pair {pair} {label:18} {rate:12,.0f} ops/s  ({ops:,} operations{extra}; exit {code}, {why})")
            if timeout_s is not None:
                ops_with += ops
                timeouts_with += timeouts
        a, b = rates[OP_TIMEOUT_S], rates[None]
        a_sum, b_sum = a_sum + a, b_sum + b
        print(f"   pair {pair} ratio A / B {a / b:.3f}")
    ratio = a_sum / b_sum
    print(f"\nratio of the sums A / B {ratio:.3f} (goal within {GOAL_RATIO:.0%}: "
          f"{'met' if abs(ratio - 1) <= GOAL_RATIO else 'NOT met'})")
    print(f"timeouts with --op-timeout {OP_TIMEOUT_S:g}s: {timeouts_with} over {ops_with:,} operations "
          f"(goal 0: {'met' if timeouts_with == 0 else 'NOT met'}); every run exit 0: {'yes' if verdicts_ok else 'NO'}")
    return 0 if timeouts_with == 0 and verdicts_ok and abs(ratio - 1) <= GOAL_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())

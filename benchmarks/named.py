"""Named measurements, checks and mixes (``loadgen.measure``, ``loadgen.check``, ``--target a@1 --target b@9``).

Run: ``python benchmarks/named.py``. Prints, each measured in this run:

1. what ``with loadgen.measure(name):`` and ``loadgen.check(ok, name)`` add to an operation, in a process
   that keeps them (as a worker does): the same loop with and without them, best of 7 rounds of
   1,000,000 — ns per use (target ≤ 1 µs);
2. what the worker's once-a-second drain costs per value it ships (``named.drain`` + ``Sparse.of``);
3. a 9:1 mix of no-ops through the engine (2 workers, 100,000 operations): each op's share of the
   operations (target: within 1 % of its weight);
4. no-op throughput through the engine, one target against a 1:1 mix of the same no-op (the mix's
   own cost per operation), 5 s each.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import loadgen  # noqa: E402
from loadgen import named  # noqa: E402
from loadgen.config import ResourceThresholds, default_workers  # noqa: E402
from loadgen.engine.load import RunPlan  # noqa: E402
from loadgen.engine.runner import Runner  # noqa: E402
from loadgen.workload.mix import MixOp  # noqa: E402
from loadgen.workload.targets import TargetSpec  # noqa: E402

OPS = os.path.join(HERE, "_ops.py")
FREE = ResourceThresholds(max_cpu_percent=100, max_concurrent_operations=100)
N = 1_000_000
ROUNDS = 7


def _best(fn):
    best = float("inf")
    for _ in range(ROUNDS):
        t = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - t)
        named.drain()
    return best / N


def per_use():
    def op():
        return None

    def bare():
        for _ in range(N):
            op()

    def measured():
        measure = loadgen.measure
        for _ in range(N):
            with measure("op"):
                op()

    def checked():
        check = loadgen.check
        for _ in range(N):
            op()
            check(True, "ok")

    named.collect()
    base = _best(bare)
    return base, _best(measured) - base, _best(checked) - base


def drain_cost():
    from loadgen.analysis.stats import Sparse

    named.collect()
    for _ in range(N):
        with loadgen.measure("op"):
            pass
    t = time.perf_counter_ns()
    timings, _ = named.drain()
    parts = {k: Sparse.of(v) for k, v in timings.items()}
    assert parts["op"].total == N
    return (time.perf_counter_ns() - t) / N


def run(target, seconds=None, operations=None):
    plan = RunPlan(concurrency=default_workers(), workers=default_workers(), slots=1, duration_s=seconds,
                   operations=operations, target=target)
    out = Runner(plan, FREE).run()
    assert out.accounting.adds_up()
    return out


def main():
    print(f"machine: {default_workers()} usable cores, python {sys.version.split()[0]}")
    base, m, c = per_use()
    print(f"\n1. cost per use (best of {ROUNDS} × {N:,}; baseline: the bare operation call, {base:.0f} ns)")
    print(f"   loadgen.measure  +{m:6.0f} ns per use   target ≤ 1,000 ns: {'met' if m <= 1000 else 'NOT met'}")
    print(f"   loadgen.check    +{c:6.0f} ns per use")
    print(f"\n2. the worker's drain: {drain_cost():.0f} ns per value (once a second, off the operations' path)")

    mix = (MixOp("a", f"{OPS}:noop", 1), MixOp("b", f"{OPS}:noop", 9))
    out = run(TargetSpec(mix=mix), operations=100_000)
    a, b = (out.ops[k].succeeded + out.ops[k].failed for k in ("a", "b"))
    share = a / (a + b)
    print(f"\n3. 9:1 mix over {a + b:,} operations, 2 workers: a {a:,} ({share:.4%}), b {b:,}; "
          f"off its weight by {abs(share - 0.1) / 0.1:.3%} (target ≤ 1 %)")

    single = run(TargetSpec(ref=f"{OPS}:noop"), seconds=5.0).throughput
    mixed = run(TargetSpec(mix=(MixOp("a", f"{OPS}:noop", 1), MixOp("b", f"{OPS}:noop", 1))), seconds=5.0).throughput
    print(f"\n4. no-op through the engine, 5 s: one target {single:,.0f} ops/s; a 1:1 mix {mixed:,.0f} ops/s "
          f"(ratio {mixed / single:.2f}; the mix's wrapper per operation ≈ {(1 / mixed - 1 / single) * 1e9 * default_workers():.0f} ns "
          "of a worker's time)")


if __name__ == "__main__":
    main()

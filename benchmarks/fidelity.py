"""Measurement fidelity (issue: measurement you can trust). Run: ``python benchmarks/fidelity.py``.

1. Coordinated omission: a target that stalls 1 s once every 10 s, driven at
   100 ops/s for 60 s. The true p99 is computed from the schedule (every
   arrival's wait for the stall plus the service time); loadgen's open-model
   response-time p99 must be within 10% of it. The closed model's naive p99
   over the same target is printed beside it.
2. Rate accuracy on a no-op target at 1,000, 10,000 and 50,000 ops/s: the
   arrivals started or dropped over the schedule vs asked (within 1%), and
   the start-time lateness p99 (≤ 1 ms at 1,000 ops/s).

``--quick`` shortens the CO run to 30 s.
"""

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loadgen.config import ResourceThresholds  # noqa: E402
from loadgen.engine.load import RunPlan  # noqa: E402
from loadgen.engine.runner import Runner  # noqa: E402
from loadgen.workload.targets import TargetSpec  # noqa: E402

OPS = os.path.join(HERE, "_ops.py")
FREE = ResourceThresholds(max_cpu_percent=100, max_concurrent_operations=400)


def coordinated_omission(seconds):
    period, stall, service_ms, rate = 10.0, 1.0, 1.0, 100.0
    kwargs = {"period_s": period, "stall_s": stall, "ms": service_ms}
    target = TargetSpec(ref=f"{OPS}:stall_every", kwargs=kwargs)
    runner = Runner(RunPlan(rate=rate, duration_s=seconds, workers=2, slots=150, target=target), FREE)
    out = runner.run()
    start = runner._schedule_wall
    arrivals = start + np.arange(int(rate * seconds)) / rate
    phase = np.mod(arrivals, period)
    wait_ms = np.where(phase < stall, stall - phase, 0.0) * 1000
    service = out.latency.summary_ms()["p50"]  # what a call takes outside a stall (sleep overshoot included)
    true = wait_ms + service
    true_p99 = float(np.percentile(true, 99))
    got = out.response.summary_ms()
    closed = Runner(RunPlan(concurrency=1, duration_s=seconds, workers=1, slots=1, target=target), FREE).run()
    naive = closed.latency.summary_ms()
    print(f"   true p99 from the schedule      {true_p99:9.1f} ms")
    print(f"   loadgen open model, response p99 {got['p99']:9.1f} ms  error {got['p99'] / true_p99 - 1:+.1%}  "
          f"(target within ±10%)")
    print(f"   loadgen open model, service p99  {out.latency.summary_ms()['p99']:9.1f} ms  (what a naive "
          f"tool measuring start→end would report)")
    print(f"   closed model (1 in flight) p99   {naive['p99']:9.1f} ms  ({closed.accounting.completed} ops: the "
          f"stall hides in {closed.accounting.completed and 100 * 6 / closed.accounting.completed:.1f}% of samples)")
    print(f"   dropped {out.accounting.dropped}, completed {out.accounting.completed}")


def rate_accuracy():
    print(f"   {'asked':>8} {'achieved':>10} {'error':>8} {'dropped':>8} {'lateness p50':>13} {'p99':>8} {'p99.9':>8}")
    for rate, seconds in ((1_000, 10.0), (10_000, 10.0), (50_000, 10.0)):
        plan = RunPlan(rate=rate, duration_s=seconds, workers=2, slots=1, target=TargetSpec(ref=f"{OPS}:noop"))
        out = Runner(plan, FREE).run()
        acc = out.accounting
        achieved = (acc.dispatched + acc.dropped) / seconds
        started = acc.dispatched / seconds
        late = out.lateness.summary_ms()
        print(f"   {rate:>8,} {started:>10,.1f} {started / rate - 1:>+8.2%} {acc.dropped:>8} {late['p50']:>11.3f}ms "
              f"{late['p99']:>6.3f}ms {late['p999']:>6.3f}ms   (scheduled {achieved:,.0f}/s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    print("1. coordinated omission: stall 1 s every 10 s, 100 ops/s")
    coordinated_omission(30.0 if args.quick else 60.0)
    print("\n2. rate accuracy, no-op target, 2 workers")
    rate_accuracy()


if __name__ == "__main__":
    t = time.time()
    main()
    print(f"\n({time.time() - t:.0f} s)")

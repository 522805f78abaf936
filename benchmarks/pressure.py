"""Do the embedded flow's failures respond to pressure? Quiet vs CPU-starved, same run.

    python benchmarks/pressure.py [--seconds N] [--ballast-mb MB] [--flow-param KEY=VALUE …]

Runs the embedded flow (``MockAIWritingFlowV2``, default parameters, so
default stage deadlines) through loadgen's engine at the ``cpu_saturation``
scenario's load — closed model, concurrency 10, one worker per usable core —
for ``--seconds`` (default 10) in each condition:

1. **quiet** — nothing else running (as far as this script knows);
2. **starved** — this process pinned to core 0 (``os.sched_setaffinity``;
   the workers and the burner inherit it) while a ``CpuStressor(90,
   cores=[0])`` burns that core at nice 0 and the workers run at nice +10,
   as loadgen's do; the worker count stays that of the quiet run;
3. **ballast** (only with ``--ballast-mb``) — a resident ``MemoryStressor``
   of that many MB, no pinning.

Per condition it prints kickoffs completed, success rate, deadline misses
(reasons starting ``timed out``) by reason, injected failures
(``simulated:``), p50/p99 latency; then starved ÷ quiet. Deadline misses
depend on real time: expect a few percent of variation run to run. The
stressors run beside the pool through ``Runner(stressors=…)``, as in the
``cpu_saturation`` scenario, so they are reaped with the run.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loadgen.config import ResourceThresholds, default_workers  # noqa: E402
from loadgen.engine.load import RunPlan  # noqa: E402
from loadgen.engine.runner import Runner  # noqa: E402
from loadgen.scenarios._pressure import CONCURRENCY  # noqa: E402
from loadgen.stressors import CpuStressor, MemoryStressor  # noqa: E402
from loadgen.workload.flow import build_flow  # noqa: E402
from loadgen.workload.targets import TargetSpec  # noqa: E402

THRESHOLDS = ResourceThresholds(max_cpu_percent=100)  # as cpu_saturation: the CPU guard off
STARVED_CORE = 0
BURN_PERCENT = 90  # cpu_saturation's CPU_LOAD_PERCENT


def run(seconds, workers, flow_params, stressors=()):
    """One engine run of the embedded flow; returns the RunOutcome."""
    plan = RunPlan(name="pressure", concurrency=CONCURRENCY, workers=workers, duration_s=seconds,
                   target=TargetSpec(flow_params=flow_params))
    out = Runner(plan, THRESHOLDS, stressors=list(stressors)).run()
    assert out.accounting.adds_up(), out.accounting
    return out


def summarize(out):
    """The figures printed per condition, from a RunOutcome."""
    acc = out.accounting
    errors = out.errors.to_dict()  # "stage: reason" → count
    misses = {k: n for k, n in errors.items() if k.partition(": ")[2].startswith("timed out")}
    injected = sum(n for k, n in errors.items() if k.partition(": ")[2].startswith("simulated:"))
    done = acc.completed
    return {
        "kickoffs": done,
        "throughput": done / out.load_duration_s if out.load_duration_s else 0.0,
        "success": acc.success_rate,
        "misses": sum(misses.values()),
        "miss_rate": sum(misses.values()) / done if done else 0.0,
        "by_reason": misses,
        "injected": injected,
        "other": acc.failed + acc.timed_out + acc.crashed - sum(misses.values()) - injected,
        "p50": out.latency.value_at(50) / 1000,
        "p99": out.latency.value_at(99) / 1000,
        "stressors": out.stressors,
        "stages": {k: (h.value_at(50) / 1000, h.value_at(99) / 1000, h.value_at(99.9) / 1000)
                   for k, h in out.stages.items()},
    }


def show(name, s):
    print(f"\n{name}")
    print(f"   kickoffs {s['kickoffs']:>6}  ({s['throughput']:.1f}/s)   success rate {s['success']:.3f}")
    print(f"   deadline misses {s['misses']:>5}  ({s['miss_rate']:.2%} of kickoffs)   "
          f"injected failures {s['injected']}   other failures {s['other']}")
    for key, n in sorted(s["by_reason"].items(), key=lambda kv: -kv[1]):
        print(f"      {n:>5}  {key}")
    print(f"   latency p50 {s['p50']:.1f} ms   p99 {s['p99']:.1f} ms")
    print("   stage wall ms p50/p99/p99.9 (summed over style loops): " + "; ".join(
        f"{k} {a:.0f}/{b:.0f}/{c:.0f}" for k, (a, b, c) in s["stages"].items()))
    for st in s["stressors"]:
        achieved = st.get("achieved_percent")
        extra = f" (achieved {achieved:.0f}%)" if isinstance(achieved, (int, float)) else ""
        print(f"   stressor: {st.get('describe')}{extra}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per condition (default 10)")
    parser.add_argument("--ballast-mb", type=float, default=0.0,
                        help="also run a third condition under a resident memory ballast of this size (default: off)")
    parser.add_argument("--flow-param", action="append", default=[], metavar="KEY=VALUE",
                        help="a flow parameter, as loadgen's --flow-param (default: the flow's defaults)")
    args = parser.parse_args(argv)

    params = dict(p.partition("=")[::2] for p in args.flow_param)
    workers = default_workers()
    flow = build_flow(params)
    print(f"machine: {os.cpu_count()} cores, {workers} usable; load: concurrency {CONCURRENCY}, "
          f"{workers} workers, {args.seconds:g} s per condition")
    print("stage deadlines (ms): " + ", ".join(f"{k} {v:g}" for k, v in flow.stage_timeout_ms.items())
          + f"  (timeout_factor {flow.timeout_factor:.2f})")

    results = {}
    results["quiet"] = summarize(run(args.seconds, workers, params))
    show("1. quiet", results["quiet"])

    original = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {STARVED_CORE})
    try:
        burner = CpuStressor(BURN_PERCENT, cores=[STARVED_CORE])
        results["starved"] = summarize(run(args.seconds, workers, params, [burner]))
    finally:
        os.sched_setaffinity(0, original)
    show(f"2. starved (pinned to core {STARVED_CORE}, {BURN_PERCENT}% nice-0 burner on it)", results["starved"])

    if args.ballast_mb > 0:
        time.sleep(0.5)
        results["ballast"] = summarize(run(args.seconds, workers, params, [MemoryStressor(args.ballast_mb)]))
        show(f"3. memory ballast {args.ballast_mb:g} MB", results["ballast"])

    q, s = results["quiet"], results["starved"]
    print("\nstarved ÷ quiet")
    print(f"   success rate {s['success'] / q['success'] if q['success'] else float('nan'):.3f}   "
          f"throughput {s['throughput'] / q['throughput'] if q['throughput'] else float('nan'):.3f}   "
          f"p50 {s['p50'] / q['p50'] if q['p50'] else float('nan'):.2f}x   "
          f"p99 {s['p99'] / q['p99'] if q['p99'] else float('nan'):.2f}x   "
          f"deadline misses {s['misses']} vs {q['misses']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

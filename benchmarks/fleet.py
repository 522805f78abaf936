"""Fleet mode vs a plain local run of the same total load (issue: beyond one machine).

Run: ``python benchmarks/fleet.py [--seconds 10] [--concurrency 20] [--sleep-ms 100] [--rate R] [--rounds 3]``.

On one machine: a loopback LocalCluster of 2 Dask workers (127.0.0.1 only)
runs the load as 2 shards; a plain local run (``python -m loadgen run``,
its own process) applies the same total load with the same number of
loadgen worker processes. The target sleeps (an
I/O-bound operation), so a 2-core machine is not the bottleneck. The two
kinds of run alternate (local, fleet, fleet, local, …; ``--rounds`` of each)
and the medians are compared, because a sleep's p99 is the machine's
scheduling jitter, which drifts with whatever else the machine runs.
Prints:

  1. throughput: fleet ÷ local (target: within 5%);
  2. merged p99 (exact HDR merge) vs the local p99 (target: within 2%);
  3. start skew between the shards' load starts (target: ≤ 50 ms);
  4. per-second delivery delay: end of a second on a shard → its figures at
     the fleet master (target: ≤ 2 s), and the transport alone.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loadgen import fleet  # noqa: E402
from loadgen.config import ResourceThresholds  # noqa: E402

TARGET = os.path.join(HERE, "_fleet_ops.py") + ":sleep_ms"
FREE = ResourceThresholds(max_cpu_percent=100, max_concurrent_operations=100)
SCENARIO = "sustained_load"  # one phase, no baseline: the whole run is the measured load


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--rate", type=float, default=None, help="open model instead: total arrivals per second")
    ap.add_argument("--sleep-ms", type=float, default=100.0,
                    help="the operation (default 100 ms: a short sleep's p99 is scheduler jitter, which on a shared "
                         "machine drifts between runs by more than the 2%% target)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each kind, in ABBA order (default 3)")
    a = ap.parse_args()
    load = {"rate": a.rate} if a.rate else {"concurrency": a.concurrency}
    common = dict(duration=f"{a.seconds}s", target=TARGET, target_args={"ms": a.sleep_ms}, thresholds=FREE,
                  seed=1, **load)
    tmp = tempfile.mkdtemp(prefix="loadgen-fleet-bench-")
    print(f"machine: {os.cpu_count()} cores; load {load}, {a.seconds:g} s, target sleeps {a.sleep_ms:g} ms; "
          f"{a.shards} shards on a loopback LocalCluster")
    t = time.perf_counter()
    cluster = fleet.start_local_cluster(a.shards)
    print(f"local cluster up in {time.perf_counter() - t:.1f} s at {cluster.scheduler_address}")
    locals_, fleets = [], []
    try:
        for i in range(2 * a.rounds):
            kind = "local" if i % 4 in (0, 3) else "fleet"
            out = os.path.join(tmp, f"{i}-{kind}")
            t = time.perf_counter()
            if kind == "local":  # its own process: no Dask scheduler threads beside its master
                flags = [f"--rate={a.rate}"] if a.rate else [f"--concurrency={a.concurrency}"]
                subprocess.run([sys.executable, "-m", "loadgen", "run", SCENARIO, *flags, f"--duration={a.seconds}s",
                                f"--target={TARGET}", f"--target-arg=ms={a.sleep_ms}", "--max-cpu-percent=100",
                                "--max-concurrent-operations=100", "--seed=1", f"--workers={a.shards}",
                                f"--out={out}", "--quiet"], check=False, stdout=subprocess.DEVNULL)
                with open(os.path.join(out, "report.json")) as f:
                    rep = json.load(f)
                locals_.append(rep)
            else:
                rep = fleet.run(SCENARIO, cluster=cluster.scheduler_address, workers=1, out=out, **common).report
                fleets.append(rep)
            print(f"  run {i + 1} {kind:5}: {rep['detailed_metrics'][0]['throughput_ops_per_sec']:8.1f} ops/s, "
                  f"p50 {rep['latency_ms']['p50']:.3f} ms, p99 {rep['latency_ms']['p99']:.3f} ms, "
                  f"exit {rep['exit_code']}, {time.perf_counter() - t:.1f} s wall", flush=True)
    finally:
        cluster.close()
    fl = fleets[-1]
    lt = statistics.median(r["detailed_metrics"][0]["throughput_ops_per_sec"] for r in locals_)
    ft = statistics.median(r["detailed_metrics"][0]["throughput_ops_per_sec"] for r in fleets)
    lp = statistics.median(r["latency_ms"]["p99"] for r in locals_)
    fp = statistics.median(r["latency_ms"]["p99"] for r in fleets)
    f = fl["fleet"]
    print(f"\nmedians over {a.rounds} run(s) each")
    print(f"{'':28}{'local':>12}{'fleet':>12}{'ratio':>9}   target")
    print(f"{'throughput ops/s':28}{lt:12.1f}{ft:12.1f}{ft / lt:9.3f}   within 5%  {_ok(abs(ft / lt - 1) <= 0.05)}")
    print(f"{'p99 ms (fleet: exact merge)':28}{lp:12.3f}{fp:12.3f}{fp / lp:9.3f}   within 2%  {_ok(abs(fp / lp - 1) <= 0.02)}")
    print(f"{'p50 ms':28}{statistics.median(r['latency_ms']['p50'] for r in locals_):12.3f}"
          f"{statistics.median(r['latency_ms']['p50'] for r in fleets):12.3f}")
    skews = [r["fleet"]["start_skew_ms"] for r in fleets]
    print(f"\nstart skew between shards: {', '.join(f'{x:.1f}' for x in skews)} ms (target ≤ 50 ms) "
          f"{_ok(max(skews) <= 50)}; the last fleet run:")
    worst = max(s["max_delivery_delay_s"] or 0.0 for r in fleets for s in r["fleet"]["shards"])
    for s in f["shards"]:
        print(f"  shard {s['index']} {s['worker']}: share {s['share']['mine']:g}/{s['share']['total']:g}, "
              f"{s['throughput']:.1f} ops/s, p99 {s['p99_ms']} ms, load began {s['late_ms']:+.2f} ms after the instant "
              f"(+{s['start_offset_ms']:.1f} ms after the first shard), clock offset {s['clock_offset_ms']:+.2f} ms; "
              f"delivery delay median {s['median_delivery_delay_s']:.3f} s, max {s['max_delivery_delay_s']:.3f} s "
              f"(transport max {s['max_transport_delay_s']:.3f} s), {s['seconds_streamed']} seconds streamed")
    print(f"per-second delivery delay, worst shard of every fleet run: {worst:.3f} s (target ≤ 2 s) "
          f"{_ok(worst <= 2.0)}")
    print(f"run dirs in {tmp}")


def _ok(flag):
    return "OK" if flag else "MISSED"


if __name__ == "__main__":
    main()

"""Fleet mode vs a plain local run of the same total load (issue: beyond one machine; fleets on real networks).

Run: ``python benchmarks/fleet.py [--netns] [--shards N] [--seconds 10] [--concurrency 20] [--sleep-ms 100]
[--rate R] [--rounds 3] [--partition]``.

Where the shards run:

* default: a loopback LocalCluster of N Dask workers (127.0.0.1 only);
* ``--netns`` (root on Linux): the multi-host harness of the tests
  (``tests/_netns.py``) — a Dask scheduler on the host and one Dask worker in
  each of N network namespaces on a private bridge, torn down at the end
  (3 shards on 3 network stacks: ``--netns --shards 3``).

A plain local run (``python -m loadgen run``, its own process) applies the
same total load with the same number of loadgen worker processes. The
target sleeps (an I/O-bound operation), so a 2-core machine is not the
bottleneck. The two kinds of run alternate (local, fleet, fleet, local, …;
``--rounds`` of each) and the medians are compared, because a sleep's p99 is
the machine's scheduling jitter, which drifts with whatever else the machine runs.
Prints:

  1. throughput: fleet ÷ local (target: within 2%);
  2. merged p99 (exact HDR merge) vs the local p99 (target: within 2%);
  3. start skew between the shards' load starts (target: ≤ 20 ms);
  4. per-second delivery delay: end of a second on a shard → its figures at
     the fleet master, p99 over every second of every run (target: ≤ 100 ms).

``--partition`` (with ``--netns``) adds one fleet run whose last stack's link
goes down after 3 s of load: the time from the cut to the master's loss of
that shard (target: ≤ the silence limit + 2 s), the operations unaccounted in
the master's report (dispatched − completed − lost; target 0) and, after
``loadgen report`` merges the cut-off shard's own run directory, the
operations unaccounted against the sum of the shards' own reports (target 0).
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

SILENCE_S = 3.0  # --partition: the silence limit of its run

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
    ap.add_argument("--netns", action="store_true", help="each shard on its own network stack (root, Linux)")
    ap.add_argument("--partition", action="store_true", help="with --netns: also a run whose last stack is cut off")
    a = ap.parse_args()
    load = {"rate": a.rate} if a.rate else {"concurrency": a.concurrency}
    common = dict(duration=f"{a.seconds}s", target=TARGET, target_args={"ms": a.sleep_ms}, thresholds=FREE,
                  seed=1, **load)
    tmp = tempfile.mkdtemp(prefix="loadgen-fleet-bench-")
    where = f"{a.shards} network namespaces on a private bridge" if a.netns else "a loopback LocalCluster"
    print(f"machine: {os.cpu_count()} cores; load {load}, {a.seconds:g} s, target sleeps {a.sleep_ms:g} ms; "
          f"{a.shards} shards on {where}")
    t = time.perf_counter()
    cluster = _NetCluster(a.shards) if a.netns else fleet.start_local_cluster(a.shards)
    print(f"cluster up in {time.perf_counter() - t:.1f} s at {cluster.scheduler_address}")
    locals_, fleets = [], []
    partition = None
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
                rep = fleet.run(SCENARIO, cluster=cluster.scheduler_address, workers=1, out=out, shards=a.shards,
                                **common).report
                fleets.append(rep)
            print(f"  run {i + 1} {kind:5}: {rep['detailed_metrics'][0]['throughput_ops_per_sec']:8.1f} ops/s, "
                  f"p50 {rep['latency_ms']['p50']:.3f} ms, p99 {rep['latency_ms']['p99']:.3f} ms, "
                  f"exit {rep['exit_code']}, {time.perf_counter() - t:.1f} s wall", flush=True)
        if a.partition and a.netns:
            partition = _partition_run(cluster, a, common, os.path.join(tmp, "partition"))
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
    print(f"{'throughput ops/s':28}{lt:12.1f}{ft:12.1f}{ft / lt:9.3f}   within 2%  {_ok(abs(ft / lt - 1) <= 0.02)}")
    print(f"{'p99 ms (fleet: exact merge)':28}{lp:12.3f}{fp:12.3f}{fp / lp:9.3f}   within 2%  {_ok(abs(fp / lp - 1) <= 0.02)}")
    print(f"{'p50 ms':28}{statistics.median(r['latency_ms']['p50'] for r in locals_):12.3f}"
          f"{statistics.median(r['latency_ms']['p50'] for r in fleets):12.3f}")
    skews = [r["fleet"]["start_skew_ms"] for r in fleets]
    print(f"\nstart skew between shards: {', '.join(f'{x:.1f}' for x in skews)} ms (target ≤ 20 ms) "
          f"{_ok(max(skews) <= 20)}; the last fleet run:")
    worst = max(s["max_delivery_delay_s"] or 0.0 for r in fleets for s in r["fleet"]["shards"])
    for s in f["shards"]:
        print(f"  shard {s['index']} {s['worker']}: share {s['share']['mine']:g}/{s['share']['total']:g}, "
              f"{s['throughput']:.1f} ops/s, p99 {s['p99_ms']} ms, load began {s['late_ms']:+.2f} ms after the instant "
              f"(+{s['start_offset_ms']:.1f} ms after the first shard), clock offset {s['clock_offset_ms']:+.2f} ms; "
              f"delivery delay median {s['median_delivery_delay_s']:.3f} s, max {s['max_delivery_delay_s']:.3f} s "
              f"(transport max {s['max_transport_delay_s']:.3f} s), {s['seconds_streamed']} seconds streamed")
    delays = sorted(d for r in fleets for d in _delays(r))
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))] if delays else float("nan")
    print(f"per-second delivery delay over {len(delays)} shard-seconds: p99 {p99 * 1000:.1f} ms (target ≤ 100 ms) "
          f"{_ok(p99 <= 0.1)}, max {worst * 1000:.1f} ms")
    if partition:
        print(f"\npartition (stack {a.shards - 1}'s link down after 3 s of load, silence limit {SILENCE_S:g} s): "
              f"shard lost {partition['detect_s']:.2f} s after the cut (target ≤ {SILENCE_S + 2:g} s) "
              f"{_ok(partition['detect_s'] <= SILENCE_S + 2)}; the cut-off shard stopped its own load "
              f"{partition['self_stop_s']:.2f} s after the cut; exit {partition['exit']}; "
              f"operations: {partition['dispatched']} dispatched, {partition['lost']} lost, "
              f"{partition['unaccounted']} unaccounted {_ok(partition['unaccounted'] == 0)}; after `loadgen report`: "
              f"{partition['rebuilt']} dispatched = the shards' own {partition['own']}, "
              f"{partition['own'] - partition['rebuilt']} unaccounted {_ok(partition['own'] == partition['rebuilt'])}")
    print(f"run dirs in {tmp}")


def _delays(report):
    """The per-second delivery delays (s) of a fleet run, from its merged timeseries (per shard)."""
    path = os.path.join(report["metadata"]["run_dir"], "timeseries.jsonl")
    out = []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            for part in (rec.get("per_shard") or {}).values():
                if part.get("delay_s") is not None and part.get("ops"):
                    out.append(part["delay_s"])
    return out


class _NetCluster:
    """The tests' multi-host harness (tests/_netns.py): a scheduler on the host, a worker per namespace."""

    def __init__(self, n):
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
        from _netns import NetFleet, netns_available

        ok, why = netns_available()
        if not ok:
            sys.exit(f"--netns: {why}")
        self.net = NetFleet(n)
        try:
            self.net.start_scheduler()
            self.net.start_workers()
            self.net.wait_for_workers(n)
        except BaseException:
            self.net.close()
            raise
        self.scheduler_address = self.net.scheduler_address

    def close(self):
        self.net.close()


def _partition_run(cluster, a, common, out):
    """One fleet run whose last stack's link goes down after 3 s of load; the figures of its loss."""
    import threading

    net, last = cluster.net, a.shards - 1
    series = os.path.join(out, "shards", str(last), "timeseries.jsonl")
    cut = {}

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with open(series) as f:
                    busy = [ln for ln in f if ln.strip() and json.loads(ln).get("throughput")]
            except (OSError, ValueError):
                busy = []
            if len(busy) >= 3:
                cut["at"] = time.time()
                net.link_down(last)
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        rep = fleet.run(SCENARIO, cluster=cluster.scheduler_address, workers=1, out=out, shards=a.shards,
                        silence_limit=f"{SILENCE_S}s", **common).report
    finally:
        t.join(1)
        net.link_up(last)
    with open(os.path.join(out, "events.jsonl")) as f:
        lost_at = next(e["t"] for e in map(json.loads, f) if e.get("name") == "shard_lost")
    acc = rep["accounting"]
    done = acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"]
    # The cut-off shard stops on its own after the silence limit and writes its own report.
    own_path = os.path.join(out, "shards", str(last), "report.json")
    deadline = time.monotonic() + SILENCE_S + 30
    while not os.path.exists(own_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    with open(os.path.join(out, "shards", str(last), "events.jsonl")) as f:
        stopped = [e["t"] for e in map(json.loads, f) if e.get("type") == "phase" and e.get("name") == "stop"]
    subprocess.run([sys.executable, "-m", "loadgen", "report", out], check=True, stdout=subprocess.DEVNULL)
    own = 0
    for i in range(a.shards):
        with open(os.path.join(out, "shards", str(i), "report.json")) as f:
            own += json.load(f)["accounting"]["dispatched"]
    with open(os.path.join(out, "report.json")) as f:
        rebuilt = json.load(f)["accounting"]["dispatched"]
    return {"detect_s": lost_at - cut["at"], "self_stop_s": stopped[0] - cut["at"] if stopped else float("nan"),
            "exit": rep["exit_code"], "dispatched": acc["dispatched"],
            "lost": acc["lost"], "unaccounted": acc["dispatched"] - done - acc["lost"], "own": own, "rebuilt": rebuilt}


def _ok(flag):
    return "OK" if flag else "MISSED"


if __name__ == "__main__":
    main()

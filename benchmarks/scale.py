"""Ten thousand in flight: async slots on an I/O-bound target, beside Locust when it is installed.

Run: ``python benchmarks/scale.py [--quick]`` (``LOCUST=/path/to/locust`` to use one not on PATH).

Prints, each measured in this run (closed model, 2 workers, target ``async def op(): await
asyncio.sleep(1.0)``):

1. for 1,000, 10,000 and 50,000 in flight: the steady-state throughput (the whole seconds of load
   without the first two and the last), the worst per-second p99 over those seconds and the whole
   run's p99, loop stalls, and the pool's memory per operation in flight (peak pool PSS less that
   of 100 in flight, ÷ the difference in flight);
2. Locust (``--processes 2``, gevent users each doing ``gevent.sleep(1.0)`` and reporting it as a
   request) at the same counts, when ``locust`` is found;
3. no-op targets, closed model, 2 workers × 8 slots: ``async def`` on async slots against ``def`` on
   thread slots — ops/s and their ratio.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loadgen.config import ResourceThresholds  # noqa: E402
from loadgen.engine.aslots import loop_kind  # noqa: E402
from loadgen.engine.load import RunPlan  # noqa: E402
from loadgen.engine.runner import Runner  # noqa: E402
from loadgen.workload.targets import TargetSpec, check_target  # noqa: E402

OPS = os.path.join(HERE, "_ops.py")
WORKERS = 2
LOCUSTFILE = '''
import gevent
from locust import User, constant, events, task


class Sleeper(User):
    wait_time = constant(0)

    @task
    def op(self):
        t = __import__("time").perf_counter()
        gevent.sleep(1.0)
        events.request.fire(request_type="op", name="sleep", response_time=(__import__("time").perf_counter() - t) * 1000,
                            response_length=0, exception=None, context={})
'''


def loadgen_run(ref, in_flight, seconds, slots=None):
    spec = TargetSpec(ref=ref)
    plan = RunPlan(concurrency=in_flight, workers=WORKERS, slots=slots, duration_s=seconds,
                   target=dataclasses.replace(spec, asynchronous=check_target(spec)))
    out = Runner(plan, ResourceThresholds(max_cpu_percent=100, max_concurrent_operations=max(in_flight, 50),
                                          max_memory_mb=16_000)).run()
    assert out.accounting.adds_up()
    return out


def steady(out):
    rows = list(out.seconds)[2:-1]
    if not rows:
        return 0.0, None
    rate = sum(r["throughput"] for r in rows) / len(rows)
    p99s = [r["latency_ms"]["p99"] for r in rows if r["latency_ms"]["p99"] is not None]
    return rate, max(p99s) if p99s else None


def locust_run(locust, users, seconds):
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "locustfile.py")
        with open(f, "w") as fh:
            fh.write(LOCUSTFILE)
        csv = os.path.join(d, "out")
        subprocess.run([locust, "-f", f, "--headless", "-u", str(users), "-r", str(users), "--run-time",
                        f"{seconds}s", "--processes", str(WORKERS), "--csv", csv, "--only-summary"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 120, check=False)
        try:
            with open(csv + "_stats.csv") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return None
        head = lines[0].split(",")
        for line in lines[1:]:
            row = dict(zip(head, line.split(",")))
            if row.get("Name") == "Aggregated":
                return float(row["Requests/s"]), float(row["99%"]), float(row["Max Response Time"])
    return None


def main():
    quick = "--quick" in sys.argv
    seconds = 8.0 if quick else 15.0
    counts = [1_000, 10_000] if quick else [1_000, 10_000, 50_000]
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, event loop: {loop_kind()}")
    print(f"\n1. loadgen, async slots, asyncio.sleep(1.0), {WORKERS} workers, {seconds:g} s each")
    base = loadgen_run(f"{OPS}:asleep", 100, 6.0)
    base_mb = base.peak_memory_mb
    for n in counts:
        out = loadgen_run(f"{OPS}:asleep", n, seconds)
        rate, p99 = steady(out)
        per_op_kb = (out.peak_memory_mb - base_mb) * 1024 / (n - 100)
        stalls = out.loop_stalls.get("count", 0)
        print(f"   {n:>6,} in flight: {rate:9,.0f} ops/s steady ({rate / n:6.1%} of ideal), p99 worst second "
              f"{p99:7.1f} ms, whole run {out.latency.summary_ms()['p99']:7.1f} ms; stalls {stalls}; "
              f"{per_op_kb:5.1f} KB a slot (pool {out.peak_memory_mb:.0f} MB)")
    locust = os.environ.get("LOCUST") or shutil.which("locust")
    print("\n2. Locust, same target (gevent.sleep(1.0) as a request), --processes 2")
    if not locust:
        print("   locust not found (pip install locust, or LOCUST=/path/to/locust): figures of issue #15 were "
              "9,434 req/s p99 1,000 ms at 10,000; 45,750 req/s p99 1,000 ms at 50,000")
    else:
        for n in counts:
            got = locust_run(locust, n, int(seconds) + 5)
            if got is None:
                print(f"   {n:>6,} users: no result")
            else:
                print(f"   {n:>6,} users: {got[0]:9,.0f} req/s (ramp included), p99 {got[1]:7.0f} ms, max {got[2]:7.0f} ms")
    print(f"\n3. no-op, closed model, {WORKERS} workers × 8 slots, 5 s")
    a = loadgen_run(f"{OPS}:anoop", WORKERS * 8, 5.0, slots=8).throughput
    t = loadgen_run(f"{OPS}:noop", WORKERS * 8, 5.0, slots=8).throughput
    print(f"   async def on async slots {a:12,.0f} ops/s; def on thread slots {t:12,.0f} ops/s; ratio {a / t:.2f} "
          "(target: async ≥ 500,000; threads ≥ 600,000 in benchmarks/engine.py's shape)")


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"\n({time.time() - t0:.0f} s)")

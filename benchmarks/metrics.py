"""What live metrics cost: ``--metrics-port`` scraped every second during a fast run.

    python benchmarks/metrics.py [--pairs 3] [--seconds 6]

Runs a no-op target (closed model, concurrency 4) ``--pairs`` times without and with the metrics
server, alternating (A B A B …), the server scraped once a second by a separate process as Prometheus
would. Prints the throughput of each run, the ratio with/without (median of the pairs; target: ≥ 0.98,
serving costs ≤ 2 %), and the scrape latency (median and max over all scrapes; target ≤ 50 ms) —
at the run's own rate (target: ≥ 100,000 ops/s). Not part of the test suite.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from loadgen import api  # noqa: E402
from loadgen.live import LiveMetrics  # noqa: E402

SCRAPER = """
import sys, time, urllib.request
url, until = sys.argv[1], time.time() + float(sys.argv[2])
while time.time() < until:
    t0 = time.perf_counter()
    try:
        body = urllib.request.urlopen(url, timeout=5).read()
        print(f"{(time.perf_counter() - t0) * 1000:.2f} {len(body)}", flush=True)
    except OSError:
        pass
    time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(seconds, serve):
    """``(ops/s, [scrape ms])`` of one run."""
    progress, scraper = None, None
    if serve:
        port = free_port()
        progress = LiveMetrics().serve(port)
        scraper = subprocess.Popen([sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{port}/metrics",
                                    str(seconds + 1)], stdout=subprocess.PIPE, text=True)
    try:
        rep = api.run("load", target="benchmarks._ops:noop", concurrency=4, duration=seconds, out=False,
                      progress=progress)
    finally:
        if progress is not None:
            progress.done()
    scrapes = []
    if scraper is not None:
        out, _ = scraper.communicate(timeout=30)
        scrapes = [float(line.split()[0]) for line in out.splitlines() if line.strip()]
    return rep.report["detailed_metrics"][0]["throughput_ops_per_sec"], scrapes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args()
    ratios, all_scrapes = [], []
    for i in range(args.pairs):
        base, _ = one(args.seconds, serve=False)
        served, scrapes = one(args.seconds, serve=True)
        all_scrapes += scrapes
        ratios.append(served / base)
        print(f"pair {i + 1}: without {base:,.0f} ops/s, with {served:,.0f} ops/s (ratio {served / base:.3f}), "
              f"{len(scrapes)} scrapes", flush=True)
    print(f"throughput with / without metrics: median ratio {statistics.median(ratios):.3f} (target ≥ 0.98)")
    if all_scrapes:
        print(f"scrape latency: median {statistics.median(all_scrapes):.1f} ms, max {max(all_scrapes):.1f} ms "
              f"over {len(all_scrapes)} scrapes (target ≤ 50 ms)")


if __name__ == "__main__":
    main()

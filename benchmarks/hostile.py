"""loadgen's own bookkeeping under hostile targets (issue #26): bounded per second, whatever the target does.

Run: ``python benchmarks/hostile.py [SECONDS]`` (default 10). Prints, each measured in this run through
the real CLI (``run sustained_load``, 2 workers, 2 slots, default limits; its exit code is printed but not
the point: the scenario's p99-drift criterion may fail a 10 s run, exit 1 — a breach would be exit 3):

1. ``loadgen.check`` in a tight loop (100,000 a call) against the same loop with a plain function in its
   place: checks a second, and the pool's memory (PSS: mean and peak of the monitor's samples) of both
   (target: within 5 %);
2. a failure storm, every operation raising a 10 MB message: breaches (target: none at the default
   limits), the pool's peak memory, the failures counted.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OPS = os.path.join(HERE, "_ops.py")


def run(target, seconds, *args):
    """One CLI run: (report dict, per-second pool memory MB, exit code)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out")
        cmd = [sys.executable, "-m", "loadgen", "run", "sustained_load", "--target", f"{OPS}:{target}", *args,
               "--workers", "2", "--concurrency", "2", "--duration", f"{seconds}s", "--max-cpu-percent", "100",
               "--quiet", "--out", out]
        p = subprocess.run(cmd, cwd=tmp, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
        report = json.load(open(os.path.join(out, "report.json")))
        memory = [json.loads(x).get("pool_memory_mb") for x in open(os.path.join(out, "timeseries.jsonl"))]
        return report, [m for m in memory if m], p.returncode


def checks(seconds):
    base, base_mem, _ = run("same_loop", seconds)
    rep, mem, code = run("many_checks", seconds)
    n = rep["detailed_metrics"][0]["checks"]["hot"]
    calls = n["passes"] + n["fails"]
    print(f"checks: {calls:,} in {seconds} s = {calls / seconds:,.0f} a second (exact: "
          f"{calls == rep['accounting']['succeeded'] * 100_000}), exit {code}, breaches {len(rep['breaches'])}")
    for name, m in (("without checks", base_mem), ("with checks", mem)):
        print(f"  pool memory {name}: mean {statistics.mean(m):.1f} MB, peak {max(m):.1f} MB")
    print(f"  difference: mean {statistics.mean(mem) / statistics.mean(base_mem) * 100 - 100:+.1f} %, "
          f"peak {max(mem) / max(base_mem) * 100 - 100:+.1f} %")


def storm(seconds):
    rep, mem, code = run("huge_failure", seconds)
    acc = rep["accounting"]
    print(f"10 MB failure storm: {acc['failed']:,} failures in {seconds} s, exit {code}, breaches "
          f"{[b['metric'] for b in rep['breaches']]}, pool memory peak {max(mem):.1f} MB (limit "
          f"{rep['thresholds']['max_memory_mb']} MB)")


if __name__ == "__main__":
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    checks(seconds)
    storm(seconds)

"""Verdicts you can trust night after night: repeatable capacity, quiet A/A compares, loud A/B ones.

Run: ``python benchmarks/repeatability.py [--only capacity|pairs|cotenant] [--runs 5] [--pairs 10]``.

Prints, each measured in this run on this machine:
  1. ``run capacity_limits`` × N back to back (ci profile): every capacity and its interval, the
     median, and the spread against ±15 % of the median; then the same pinned to one core
     (``taskset -c 0``): the median should fall to about half (±20 %);
  2. ``suite --profile ci`` in triples: A, A' (the same again) and B (the flow made 25 % slower,
     ``--flow-param processing_time_base=0.125``): ``compare A A'`` must exit 0 (no false alarm) and
     ``compare A' B --force`` must exit 1 naming a slower latency; every suite run's own exit code;
  3. one suite while ``stress-ng --cpu 2`` burns both cores (when stress-ng is installed): it must end
     with a verdict and say the machine was busy, not exit 3 from a guard.
Run it on a quiet machine, alone: the figures are about noise.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE_REPORT = "ai_writing_flow_v2_heavy_load_stress_report.json"


def loadgen(*args, prefix=(), timeout=900):
    """Run ``python -m loadgen ARGS``; returns (exit code, stdout + stderr, seconds)."""
    t = time.monotonic()
    p = subprocess.run([*prefix, sys.executable, "-m", "loadgen", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t


def capacity(runs, tmp, pinned):
    prefix = ("taskset", "-c", "0") if pinned else ()
    caps = []
    for i in range(runs):
        out = os.path.join(tmp, f"cap-{'pinned' if pinned else 'free'}-{i}")
        code, text, secs = loadgen("run", "capacity_limits", "--out", out, "--quiet", prefix=prefix)
        m = json.load(open(os.path.join(out, "report.json")))["detailed_metrics"][0]["performance_metrics"]
        caps.append(m["max_capacity"])
        print(f"   run {i + 1}: capacity {m['capacity_interval']}  (exit {code}, {secs:.0f} s; limited by "
              f"{m['capacity_limited_by'][:60]})", flush=True)
    return caps


def spread(caps, share):
    med = statistics.median(caps)
    inside = sum(1 for c in caps if abs(c - med) <= share * med)
    return med, inside


def pairs(n, tmp):
    aa_quiet = ab_loud = suites_ok = suites = 0
    for i in range(n):
        dirs = {}
        for tag, extra in (("A", ()), ("A2", ()), ("B", ("--flow-param", "processing_time_base=0.125"))):
            dirs[tag] = os.path.join(tmp, f"pair{i}-{tag}")
            code, text, secs = loadgen("suite", "--profile", "ci", "--out", dirs[tag], "--quiet", *extra)
            suites += 1
            suites_ok += code == 0
            print(f"   pair {i + 1} {tag:2}: suite exit {code} in {secs:.0f} s", flush=True)
        code_aa, text_aa, _ = loadgen("compare", dirs["A"], dirs["A2"])
        code_ab, text_ab, _ = loadgen("compare", dirs["A2"], dirs["B"], "--force")
        aa_quiet += code_aa == 0
        named = code_ab == 1 and ("p50 ms" in text_ab or "p99 ms" in text_ab)
        ab_loud += named
        print(f"   pair {i + 1}: compare A A' exit {code_aa} ({text_aa.strip().splitlines()[-1][:100]})", flush=True)
        print(f"   pair {i + 1}: compare A' B exit {code_ab} ({text_ab.strip().splitlines()[-1][:100]})", flush=True)
    return aa_quiet, ab_loud, suites_ok, suites


def cotenant(tmp):
    if not shutil.which("stress-ng"):
        print("   stress-ng not installed (apt-get install stress-ng): skipped")
        return
    burner = subprocess.Popen(["stress-ng", "--cpu", "2", "--timeout", "300s", "--quiet"])
    try:
        time.sleep(1.0)
        out = os.path.join(tmp, "cotenant")
        code, text, secs = loadgen("suite", "--profile", "ci", "--out", out, "--quiet")
    finally:
        burner.terminate()
        burner.wait(10)
    report = json.load(open(os.path.join(out, SUITE_REPORT)))
    busy = [r for r in report["recommendations"] if "saturated" in r]
    print(f"   suite exit {code} in {secs:.0f} s; breaches {len(report['breaches'])}; "
          f"resource_exhaustion_detected {report.get('resource_exhaustion_detected')}; "
          f"{len(busy)} recommendation(s) say the CPU was saturated")
    print("   components: " + ", ".join(f"{c['component_name']} {c['status']}" for c in report["component_results"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["capacity", "pairs", "cotenant"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pairs", type=int, default=10)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="loadgen-repeat-")
    print(f"{os.cpu_count()} cores, python {sys.version.split()[0]}; runs in {tmp}")
    try:
        if a.only in (None, "capacity"):
            print(f"\n1. run capacity_limits × {a.runs}, ci profile")
            free = capacity(a.runs, tmp, pinned=False)
            med, inside = spread(free, 0.15)
            print(f"   capacities {free}: median {med}, {inside}/{len(free)} within ±15 % (target: all)")
            if shutil.which("taskset"):
                pinned = capacity(a.runs, tmp, pinned=True)
                pmed, pinside = spread(pinned, 0.20)
                print(f"   taskset -c 0: {pinned}: median {pmed}, {pinside}/{len(pinned)} within ±20 %; "
                      f"pinned ÷ free {pmed / med:.2f} (target: about 0.5)")
        if a.only in (None, "pairs"):
            print(f"\n2. suite --profile ci: {a.pairs} triples (A, A', B = the flow 25 % slower)")
            aa, ab, ok, n = pairs(a.pairs, tmp)
            print(f"   A/A compare exit 0: {aa}/{a.pairs} (target {a.pairs}/{a.pairs}); A/B exit 1 naming a latency: "
                  f"{ab}/{a.pairs} (target ≥ {a.pairs - 1}); suites that exited 0: {ok}/{n}")
        if a.only in (None, "cotenant"):
            print("\n3. suite --profile ci with stress-ng --cpu 2 burning both cores")
            cotenant(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

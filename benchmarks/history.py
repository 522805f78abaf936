"""How well the history finds changes, on simulated nights with the noise measured on this machine.

    python benchmarks/history.py              # detection table + `loadgen history` timing (about 1 min)
    python benchmarks/history.py --libraries  # the same cases through each change-point library
    python benchmarks/history.py --real       # 10 real `suite --profile ci` nights (≈ 15 min of load)

Noise: ``benchmarks/data/history_aa_ci.json`` holds two A/A nights of
``suite --profile ci``; each metric's per-night relative noise is the median
over the 8 components of |a − b| / √2 / mean. A simulated night is
100 × (1 + shift) × (1 + noise × N(0, 1)) for throughput (higher is better).

Cases (each judged night by night, as ``scripts/nightly.sh`` does):

* A/A: 100 nights without a change; a false alarm is a night that announces
  a new regression;
* a 5 % / 10 % step after 30 nights: found within 3 / 2 nights of its start;
* a drift of 1 % a night for 10 nights after 30: found by its 10th night; and
  the pairwise rule (``loadgen compare`` at 10 % tolerance: a night more than
  10 % worse than the night before) on the same nights.

``--libraries`` runs the same cases through ruptures (PELT + loadgen's test,
``loadgen.history.detect``), Apache Otava's ``compute_change_points`` and
MongoDB's ``e_divisive``, when importable (see README: their pins keep them
out of loadgen; to measure, unpack their sources and put them on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from loadgen.history import detect  # noqa: E402

NOISE_FILE = os.path.join(HERE, "data", "history_aa_ci.json")
BASELINE_NIGHTS = 30
HISTORIES = 10
AA_NIGHTS = 100
AA_HISTORIES = 30  # A/A false alarms are rare events: more histories than the step cases
SUITE_FIGURES = 104  # figures of a ci suite night: 8 components × (7 core + 6 stage medians) (the A/A reports)
PAIRWISE_TOLERANCE = 0.10
SEED = 2026


def measured_noise():
    """{metric: per-night relative sd} from the saved A/A nights (median over components)."""
    doc = json.load(open(NOISE_FILE))
    a, b = (n["figures"] for n in doc["nights"][:2])
    per = {}
    for key in a.keys() & b.keys():
        metric = key.split("/", 1)[1]
        m = (a[key] + b[key]) / 2
        if m:
            per.setdefault(metric, []).append(abs(a[key] - b[key]) / math.sqrt(2) / abs(m))
    return {k: statistics.median(v) for k, v in per.items() if len(v) >= 4}


# ---------------------------------------------------------------- detectors: values → regressed, new


def ours(values, alpha=detect.ALPHA):
    """(regressed, new regression) of the newest night, as loadgen.history.detect judges it."""
    s = detect.segment(values, +1, alpha)
    if not s.regressed:
        return False, False
    before = detect.segment(values[:-1], +1, alpha).changes
    c = s.changes[-1]
    new = len(values) - c.index <= detect.NEW_MAX_AGE_NIGHTS and not any(
        abs(b.index - c.index) <= detect.NEW_WITHIN_NIGHTS and b.worse for b in before)
    return True, new


def _from_indices(find):
    """A detector from a library call ``find(values) → change indices``: regressed when the last segment's
    mean is below the one before it (throughput)."""
    def judge(values):
        def regressed(v):
            cps = sorted(i for i in find(v) if 0 < i < len(v))
            if not cps:
                return False, None
            edges = [0, *cps, len(v)]
            return float(np.mean(v[edges[-2]:])) < float(np.mean(v[edges[-3]:edges[-2]])), cps[-1]
        now, at = regressed(values)
        if not now:
            return False, False
        then, at_before = regressed(values[:-1])
        return True, not (then and abs(at - at_before) <= detect.NEW_WITHIN_NIGHTS)
    return judge


def libraries():
    """{name: detector} of the libraries importable here."""
    out = {"ruptures PELT + z-test (loadgen)": ours}
    try:
        from otava.analysis import compute_change_points

        out["apache-otava compute_change_points"] = _from_indices(
            lambda v: [c.index for c in compute_change_points(list(v), window_len=50, max_pvalue=0.001)[0]])
    except ImportError as e:
        print(f"(apache-otava not importable: {e})")
    try:
        import itertools
        import types

        # Its logging and one helper only: stand-ins so its e_divisive can be measured without its pins.
        class _Log:  # structlog's call shape: a message and keywords
            def __getattr__(self, name):
                return lambda *a, **kw: None

        sys.modules.setdefault("structlog", types.SimpleNamespace(get_logger=lambda *a: _Log()))
        sys.modules.setdefault("more_itertools", types.SimpleNamespace(pairwise=itertools.pairwise))
        from signal_processing_algorithms.energy_statistics.energy_statistics import e_divisive

        out["signal-processing-algorithms e_divisive"] = _from_indices(
            lambda v: e_divisive(np.asarray(v, dtype=float), pvalue=0.01, permutations=100))
    except ImportError as e:
        print(f"(signal-processing-algorithms not importable: {e})")
    return out


# ---------------------------------------------------------------- cases


def _nights(rng, sigma, shifts):
    return 100.0 * (1 + np.asarray(shifts)) * (1 + sigma * rng.standard_normal(len(shifts)))


def aa(judge, sigma, rng, histories=HISTORIES):
    """False alarms per history of AA_NIGHTS nights (new regressions announced), as a list."""
    out = []
    for _ in range(histories):
        v = _nights(rng, sigma, np.zeros(AA_NIGHTS))
        out.append(sum(judge(v[:k])[1] for k in range(detect.MIN_NIGHTS, AA_NIGHTS + 1)))
    return out


def step(judge, sigma, rng, size, within, histories=HISTORIES):
    """Histories (of ``histories``) whose step of ``size`` (0.05: 5 % worse) is flagged within ``within``
    nights of its start, with no alarm in the 30 nights before it."""
    hits = 0
    for _ in range(histories):
        shifts = np.r_[np.zeros(BASELINE_NIGHTS), np.full(within, -size)]
        v = _nights(rng, sigma, shifts)
        quiet = not any(judge(v[:k])[1] for k in range(detect.MIN_NIGHTS, BASELINE_NIGHTS + 1))
        hits += quiet and any(judge(v[:BASELINE_NIGHTS + k])[0] for k in range(1, within + 1))
    return hits


def drift(judge, sigma, rng, per_night=0.01, nights=10, histories=HISTORIES):
    """(histories flagged by the drift's last night, histories the pairwise rule ever flags)."""
    hits = pair = 0
    for _ in range(histories):
        shifts = np.r_[np.zeros(BASELINE_NIGHTS), -per_night * np.arange(1, nights + 1)]
        v = _nights(rng, sigma, shifts)
        hits += any(judge(v[:BASELINE_NIGHTS + k])[0] for k in range(1, nights + 1))
        pair += any(v[i] < v[i - 1] * (1 - PAIRWISE_TOLERANCE) for i in range(BASELINE_NIGHTS, len(v)))
    return hits, pair


def table(rows, head):
    from tabulate import tabulate

    print(tabulate(rows, headers=head))


def detection_table(noise):
    rng = np.random.default_rng(SEED)
    sigmas = [("quiet machine", 0.01), ("", 0.02)] + [(f"measured {m}", s) for m, s in sorted(noise.items())
                                                       if m in ("throughput_ops_per_s", "p50_ms", "p99_ms",
                                                                "success_rate", "peak_memory_mb")]
    rows = []
    suite_alpha = detect.series_alpha(SUITE_FIGURES)
    for alpha, scope in ((detect.ALPHA, "1 figure"), (suite_alpha, f"suite, {SUITE_FIGURES} figures")):
        judge = lambda v, a=alpha: ours(v, a)  # noqa: E731
        for name, sigma in sigmas:
            fa = aa(judge, sigma, rng, histories=AA_HISTORIES)
            d_hits, d_pair = drift(judge, sigma, rng)
            rows.append([f"{alpha:.0e} ({scope})", name, f"{sigma:.1%}", f"{max(fa)} (mean {statistics.mean(fa):.1f})",
                         f"{step(judge, sigma, rng, 0.05, 3)}/{HISTORIES}",
                         f"{step(judge, sigma, rng, 0.10, 2)}/{HISTORIES}", f"{d_hits}/{HISTORIES}",
                         f"{d_pair}/{HISTORIES}"])
    print("Detection, loadgen.history.detect (ruptures KernelCPD/PELT + t-test), simulated nights, throughput-like "
          f"(higher is better), {HISTORIES} histories per cell; α per figure (a suite night judges ~{SUITE_FIGURES} "
          "figures: Bonferroni):")
    table(rows, ["α per figure", "noise of", "sd/night", f"A/A false alarms /100 nights (worst of {AA_HISTORIES})", "5% step ≤3 nights",
                 "10% step ≤2 nights", "drift 1%/night by night 10", "pairwise 10% ever flags the drift"])


def library_table(noise):
    found = libraries()
    rows = []
    for sigma in (0.02, noise.get("throughput_ops_per_s", 0.05)):
        for name, judge in found.items():
            rng = np.random.default_rng(SEED)
            t0 = time.perf_counter()
            fa = aa(judge, sigma, rng, histories=5)
            s5 = step(judge, sigma, rng, 0.05, 3)
            s10 = step(judge, sigma, rng, 0.10, 2)
            d, _ = drift(judge, sigma, rng)
            v = _nights(rng, sigma, np.zeros(365))
            t1 = time.perf_counter()
            judge(v)
            one = time.perf_counter() - t1
            rows.append([name, f"{sigma:.1%}", f"{max(fa)}", f"{s5}/{HISTORIES}", f"{s10}/{HISTORIES}", f"{d}/{HISTORIES}",
                         f"{one * 1000:.0f}", f"{time.perf_counter() - t0:.0f}"])
    table(rows, ["library", "sd/night", "A/A false alarms /100 nights (worst of 5)", "5% ≤3", "10% ≤2",
                 "drift by 10", "ms per judgment of 365 nights", "s total"])


# ---------------------------------------------------------------- `loadgen history` over 365 nights × 8 components


def fabricated_root(folder, nights=365, components=8):
    """A nightly root of ``nights`` run directories, each a suite report of ``components`` components made from
    tests/data/sample_run (figures jittered by 2 %)."""
    rng = np.random.default_rng(SEED)
    sample = json.load(open(os.path.join(ROOT, "tests", "data", "sample_run", "report.json")))
    d0 = sample["detailed_metrics"][0]
    start = 1_790_000_000.0
    for i in range(nights):
        rep = json.loads(json.dumps(sample))
        rep["metadata"].update(kind="suite", ended_at=start + i * 86400, started_at=start + i * 86400 - 90,
                               command="loadgen suite --profile ci --quiet --out x")
        rep["detailed_metrics"] = []
        for c in range(components):
            d = json.loads(json.dumps(d0))
            d["test_name"] = f"component_{c}"
            j = 1 + 0.02 * rng.standard_normal()
            d["throughput_ops_per_sec"] *= j
            d["noise"]["throughput"] = {"n": 60, "mean": d["throughput_ops_per_sec"], "sd": 3.0}  # a night of whole seconds
            d["latency_ms"] = {k: v / j for k, v in d["latency_ms"].items() if k != "count"}
            rep["detailed_metrics"].append(d)
        run = os.path.join(folder, f"2026{i:04d}T000000Z")
        os.makedirs(run)
        with open(os.path.join(run, "ai_writing_flow_v2_heavy_load_stress_report.json"), "w") as f:
            json.dump(rep, f)
    return folder


def _history(root, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "loadgen", "history", root, *args], env=env, capture_output=True,
                       text=True)
    return time.perf_counter() - t0, p


def timing_table():
    tmp = tempfile.mkdtemp(prefix="lg-history-bench-")
    try:
        root = fabricated_root(os.path.join(tmp, "root"))
        rows = []
        wall, p = _history(root, "--rebuild")
        rows.append(["--rebuild (read 365 reports, store, judge, page)", f"{wall:.2f}", p.returncode])
        if p.returncode not in (0, 1):
            print(p.stderr)
        newest = sorted(n for n in os.listdir(root) if n[0].isdigit())[-1]
        tonight = os.path.join(root, "20270101T000000Z")
        shutil.copytree(os.path.join(root, newest), tonight)
        report = os.path.join(tonight, "ai_writing_flow_v2_heavy_load_stress_report.json")
        rep = json.load(open(report))
        rep["metadata"]["ended_at"] += 86400
        json.dump(rep, open(report, "w"))
        wall, p = _history(root)
        rows.append(["a new night appended (the nightly call: store, judge, page)", f"{wall:.2f}", p.returncode])
        wall, p = _history(root, "--format", "json")
        rows.append(["up to date, --format json", f"{wall:.2f}", p.returncode])
        print("`loadgen history` over 365 nights × 8 components (wall time, one process each, this machine):")
        table(rows, ["call", "s", "exit"])
        if p.returncode not in (0, 1):
            print(p.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- --real


def real(nights=10, slower_from=6, out=None):
    """``nights`` real `suite --profile ci` nights into a nightly root; from night ``slower_from`` the target
    (benchmarks/_history_target.py, the embedded flow) waits 10 % longer: the settings recorded are the same
    (a code change, not a settings change). Then `loadgen history` judges each night in turn."""
    root = out or tempfile.mkdtemp(prefix="lg-history-real-")
    target = os.path.join(HERE, "_history_target.py") + ":kickoff"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    rows = []
    for night in range(1, nights + 1):
        run = os.path.join(root, f"20260101T{night:02d}0000Z")
        env["LOADGEN_BENCH_SLOWDOWN"] = "1.10" if night >= slower_from else "1.0"
        p = subprocess.run([sys.executable, "-m", "loadgen", "suite", "--profile", "ci", "--quiet", "--target", target,
                            "--out", run], env=env, capture_output=True, text=True)
        _, h = _history(root, "--format", "json")
        verdict = json.loads(h.stdout) if h.stdout.strip().startswith("{") else {}
        new = [f"{c['component']} {c['metric']} from {c['night']} ({c['change_pct']:+.1f}%)"
               for s in verdict.get("series", []) for c in s.get("changes", []) if c.get("new")]
        rows.append([night, "slower" if night >= slower_from else "", p.returncode, h.returncode, "; ".join(new)[:120]])
    table(rows, ["night", "target", "suite exit", "history exit", "new change points"])
    print(f"root: {root}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--libraries", action="store_true", help="compare the change-point libraries")
    ap.add_argument("--real", action="store_true", help="10 real suite nights, the target 10%% slower from night 6")
    ap.add_argument("--out", help="--real: the nightly root to fill (default: a new temp folder)")
    a = ap.parse_args()
    noise = measured_noise()
    print("measured per-night noise (sd / mean), suite --profile ci A/A: "
          + ", ".join(f"{k} {v:.1%}" for k, v in sorted(noise.items())))
    if a.real:
        real(out=a.out)
    elif a.libraries:
        library_table(noise)
    else:
        detection_table(noise)
        print()
        timing_table()


if __name__ == "__main__":
    main()

"""Fabricated nights for the history's tests: run directories whose report.json is tests/data/sample_run's
with the figures a test chooses (the history reads only report.json, so a fabricated night is read exactly
as a real one)."""

import copy
import json
import os

from _helpers import TESTS

SAMPLE_REPORT = os.path.join(TESTS, "data", "sample_run", "report.json")
DAY_S = 86400.0
T0 = 1_790_000_000.0  # the first night's end


def sample():
    with open(SAMPLE_REPORT) as f:
        return json.load(f)


def night_name(i):
    return f"2026{i // 28 + 1:02d}{i % 28 + 1:02d}T010000Z"


def make_report(i, throughput=160.0, p99_ms=226.0, success=True, exit_code=0, flow_params=None, label=None,
                components=("concurrent_load",)):
    """Night ``i``'s report: the sample's, with ``throughput`` (ops/s) and ``p99_ms`` for every component."""
    rep = sample()
    d0 = rep["detailed_metrics"][0]
    md = rep["metadata"]
    md.update(ended_at=T0 + i * DAY_S, started_at=T0 + i * DAY_S - 60, label=label,
              command=f"loadgen run concurrent_load --duration 1s --quiet --out /nightly/{night_name(i)}")
    if flow_params is not None:
        md["run"]["target"]["flow_params"] = flow_params
    rep["detailed_metrics"] = []
    for name in components:
        d = copy.deepcopy(d0)
        d["test_name"] = name
        d["throughput_ops_per_sec"] = throughput
        d["latency_ms"]["p99"] = p99_ms
        d["noise"]["p99_ms"]["ci95"] = [p99_ms * 0.95, p99_ms * 1.05]
        # As a run of whole seconds has (the sample's 1.2 s has none, and a history keeps no throughput then).
        d["noise"]["throughput"] = {"n": 5, "mean": throughput, "sd": throughput * 0.02}
        d["success"] = success
        rep["detailed_metrics"].append(d)
    rep["exit_code"] = exit_code
    return rep


def write_night(root, i, **kw):
    """``ROOT/<night i>/report.json``; returns the run directory."""
    run = os.path.join(str(root), night_name(i))
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "report.json"), "w") as f:
        json.dump(make_report(i, **kw), f)
    return run


# A night-to-night wobble of about 1 % (fixed, so the tests are deterministic).
WOBBLE = (0.004, -0.009, 0.011, -0.002, 0.007, -0.012, 0.003, 0.009, -0.006, 0.001, -0.004, 0.012, -0.01, 0.005,
          -0.001, 0.008, -0.007, 0.002, -0.011, 0.006)


def throughputs(n, step_at=None, step=-0.15, base=160.0):
    """``n`` nights of throughput wobbling by ~1 %, ``step`` (a share) from night index ``step_at`` on."""
    return [base * (1 + WOBBLE[i % len(WOBBLE)]) * (1 + (step if step_at is not None and i >= step_at else 0))
            for i in range(n)]


def write_history(root, values, **kw):
    for i, v in enumerate(values):
        write_night(root, i, throughput=v, **kw)
    return str(root)

"""The capacity search on a target whose capacity is known by construction."""

import json

from _targets import GATE_PLACES

from loadgen.scenarios.capacity_limits import SLO_FACTOR


def test_capacity_of_a_gate_with_k_places_is_found_within_its_interval(cli, tmp_path):
    """``gated``: K places, 30 ms each, one worker. Past K in flight throughput stays at K / 30 ms and
    the mean latency is c / K × 30 ms (Little's law), so the knee is K and the SLO (mean ≤ 1.5 × the
    unloaded mean) is crossed at 1.5 × K: the search must report both, the latter inside its interval."""
    out = tmp_path / "run"
    code, stdout, err = cli.run("run", "capacity_limits", "--target", "_targets:gated", "--workers", "1",
                                "--out", str(out), "--quiet", timeout=120)
    assert code == 0, stdout + err
    report = json.loads((out / "report.json").read_text())
    m = report["detailed_metrics"][-1]["performance_metrics"]
    expected = SLO_FACTOR * GATE_PLACES
    assert m["capacity_low"] <= expected <= m["capacity_high"], m["capacity_interval"]
    assert abs(m["max_capacity"] - expected) <= 1, m["capacity_interval"]
    assert abs(m["throughput_knee"] - GATE_PLACES) <= 0.15 * GATE_PLACES, m["throughput_knee"]
    assert m["capacity_vs_knee"].startswith("agrees"), m["capacity_vs_knee"]
    steps = {s["concurrency"]: s for s in m["capacity_steps"]}
    assert steps[2 * GATE_PLACES]["ok"] is False  # twice the places: the mean latency doubles

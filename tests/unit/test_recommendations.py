"""Recommendations say nothing their own figures contradict (issue #27): each edge case of the CPU and of a
concurrency ramp is fed to ``build.recommendations`` and every sentence is read back against the numbers
it quotes. No process is started."""

import re

import pytest

from loadgen.report.build import SATURATED_CPU_PERCENT, recommendations
from loadgen.result import StressTestResult


def result(name, **metrics):
    return StressTestResult(
        test_name=name, success=True, duration_seconds=6.0, max_concurrent_operations=20, peak_memory_mb=120.0,
        peak_cpu_percent=100.0, total_operations=600, successful_operations=600, failed_operations=0,
        throughput_ops_per_sec=100.0, performance_metrics={"success_rate": 1.0, **metrics},
        accounting={"dispatched": 600, "succeeded": 600, "failed": 0, "timed_out": 0, "crashed": 0, "dropped": 0},
        latency_ms={"p50": 100.0, "p99": 200.0})


RISING = [{"concurrency": c, "throughput": 10.0 * c} for c in (1, 2, 4, 8, 16)]  # still growing at 16
PLATEAU = [{"concurrency": 1, "throughput": 10.0}, {"concurrency": 2, "throughput": 19.0},
           {"concurrency": 4, "throughput": 30.0}, {"concurrency": 8, "throughput": 31.0}]


def quoted_cpu(sentence):
    """``(median, p90)`` of the ``CPU M% median, P% p90`` a sentence quotes."""
    m = re.search(r"CPU (\d+)% median, (\d+)% p90", sentence)
    assert m, sentence
    return int(m.group(1)), int(m.group(2))


def assert_consistent(sentences):
    """No sentence says the opposite of its numbers."""
    for s in sentences:
        if "CPU" in s and "median" in s:
            med, p90 = quoted_cpu(s)
            if "had room" in s:
                assert med < SATURATED_CPU_PERCENT and p90 < SATURATED_CPU_PERCENT, s
            if "saturated" in s and "was saturated" in s or "held the CPU saturated" in s:
                assert med >= SATURATED_CPU_PERCENT, s
            if "not the CPU" in s:
                assert med < SATURATED_CPU_PERCENT, s
        if "stopped growing" in s:
            m = re.search(r"\((\d+) ops/s at (\d+)\)", s)
            assert m, s


CASES = [
    # (name, metrics, must contain, must not contain)
    ("cpu_saturation", {"cpu_median_percent": 100.0, "cpu_p90_percent": 100.0, "p99_vs_baseline": 1.6},
     "held the CPU saturated", "had room"),  # the contradiction
    ("memory_pressure", {"cpu_median_percent": 100.0, "cpu_p90_percent": 100.0, "p99_vs_baseline": 1.6},
     "was saturated", "had room"),
    ("memory_pressure", {"cpu_median_percent": 12.0, "cpu_p90_percent": 20.0, "p99_vs_baseline": 2.0},
     "had room", "saturated"),  # CPU idle
    ("memory_pressure", {"cpu_median_percent": 60.0, "cpu_p90_percent": 97.0, "p99_vs_baseline": 2.0},
     "busy part of the time", "had room"),  # neither: no cause claimed
    ("capacity_limits", {"cpu_median_percent": 99.0, "cpu_p90_percent": 100.0, "capacity_steps": PLATEAU},
     "CPU is the bottleneck", "had room"),
    ("capacity_limits", {"cpu_median_percent": 30.0, "cpu_p90_percent": 40.0, "capacity_steps": PLATEAU},
     "the limit is not the CPU", "bottleneck"),  # a plateau with the CPU idle
    ("capacity_limits", {"cpu_median_percent": 99.0, "cpu_p90_percent": 100.0, "capacity_steps": RISING},
     "was saturated", "stopped growing"),  # still rising: no plateau claimed
    ("capacity_limits", {"cpu_median_percent": 30.0, "cpu_p90_percent": 40.0, "capacity_steps": RISING},
     None, "stopped growing"),
]


@pytest.mark.parametrize("name, metrics, must, must_not", CASES)
def test_no_recommendation_contradicts_its_figures(name, metrics, must, must_not):
    out = recommendations([result(name, **metrics)])
    assert_consistent(out)
    text = " ".join(out)
    if must:
        assert must in text, out
    assert must_not not in text, out


def test_cpu_saturation_below_the_slowdown_says_nothing_about_the_cpu():
    out = recommendations([result("cpu_saturation", cpu_median_percent=100.0, cpu_p90_percent=100.0,
                                  p99_vs_baseline=1.1)])
    assert not any("CPU" in s for s in out), out

"""The seed's heavy-load stress test classes, driving loadgen's API at ``ci`` scale.

    pytest tests/integration/test_heavy_load_standalone.py -v -s -m performance
    pytest tests/integration/test_heavy_load_standalone.py::TestExtremeLoadStressing -v -s -m performance
    python3 tests/integration/test_heavy_load_standalone.py

The suite runs once per session (about 80 s on 2 cores); every class reads
its components from it. Reports go to ``$LOADGEN_REPORT_DIR`` (``/tmp``
reproduces the seed's paths) or a temporary folder. Fixed seed; each
assertion is on measured behaviour.
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from loadgen import HeavyLoadStressTester, ResourceThresholds  # noqa: E402
from loadgen.report import SUITE_BASENAME  # noqa: E402

pytestmark = pytest.mark.performance
SEED = 42


@pytest.fixture(scope="session")
def suite(tmp_path_factory):
    out = os.environ.get("LOADGEN_REPORT_DIR") or str(tmp_path_factory.mktemp("stress"))
    tester = HeavyLoadStressTester(ResourceThresholds(), profile="ci", seed=SEED)
    report = tester.run_comprehensive_suite(out=out)
    return report


def component(suite, name):
    for r in suite.results:
        if r.test_name == name:
            return r
    raise AssertionError(f"{name} did not run")


def criterion(result, metric):
    for c in result.criteria:
        if c["metric"] == metric:
            return c
    raise AssertionError(f"{result.test_name} has no criterion on {metric}")


class TestExtremeLoadStressing:
    def test_concurrent_load_beyond_normal(self, suite):
        r = component(suite, "concurrent_load")
        assert r.max_concurrent_operations >= 15  # really in flight, not the end-of-test count
        assert r.success_rate > 0.7
        assert r.accounting["dispatched"] == (r.accounting["succeeded"] + r.accounting["failed"]
                                              + r.accounting["timed_out"] + r.accounting["crashed"])
        assert r.performance_metrics["baseline_p99_ms"] is not None
        assert r.success


class TestResourceExhaustion:
    def test_memory_pressure(self, suite):
        r = component(suite, "memory_pressure")
        assert r.performance_metrics["ballast_mb"] >= 0.5 * 0.5 * 1024  # ballast really held
        assert r.peak_memory_mb > r.performance_metrics["ballast_mb"]  # counted in the pool's memory
        assert r.success_rate > 0.5 and r.success

    def test_cpu_saturation(self, suite):
        r = component(suite, "cpu_saturation")
        assert r.performance_metrics["burner_cpu_percent"] >= 50  # the burners really ran (their own share)
        assert r.peak_cpu_percent >= 90
        assert r.success_rate > 0.6 and r.success

    def test_io_stress(self, suite):
        r = component(suite, "io_stress")
        assert r.performance_metrics["disk_write_mb_s"] > 0
        assert r.performance_metrics["tcp_round_trips_per_s"] > 0
        assert r.success_rate > 0.6 and r.success


class TestBreakingPointDetection:
    def test_capacity_limits(self, suite):
        r = component(suite, "capacity_limits")
        m = r.performance_metrics
        steps = m["capacity_steps"]
        assert len(steps) >= 4
        assert m["max_capacity"] >= 1
        # found from the machine: throughput stops growing before the search stops
        assert max(s["throughput"] for s in steps) < steps[-1]["concurrency"] / steps[0]["concurrency"] \
            * steps[0]["throughput"]
        assert m["usl"] and m["usl"]["r2"] > 0.5
        assert r.success

    def test_sustained_load_has_no_leak_and_stable_p99(self, suite):
        r = component(suite, "sustained_load")
        assert r.leak["leak"] is False and r.leak["samples"] >= 8
        assert r.performance_metrics["p99_drift"] < 2
        assert r.success


class TestSystemRecovery:
    def test_recovery_after_overload(self, suite):
        r = component(suite, "recovery")
        m = r.performance_metrics
        assert m["overload_p99_ms"] > m["p99_limit_ms"]  # the overload really hurt
        assert r.recovery_time_seconds is not None and r.recovery_time_seconds < 60
        assert m["recovery_rate"] > 0.75
        assert m["memory_back_mb"] < 150
        assert r.success

    def test_circuit_breaker_opens_and_closes(self, suite):
        r = component(suite, "circuit_breaker")
        m = r.performance_metrics
        assert m["breaker_opened"] == 1 and m["breaker_closed"] == 1
        assert r.accounting["rejected"] > 0
        assert r.success


class TestComprehensiveStressSuite:
    def test_complete_heavy_load_stress_suite(self, suite):
        rep = suite.report
        assert rep["executive_summary"]["total_components"] == 8
        assert rep["executive_summary"]["passed_components"] == 8, [
            (c["component_name"], c["error"]) for c in rep["component_results"] if c["status"] != "PASSED"]
        assert suite.exit_code == 0
        path = os.path.join(suite.run_dir, SUITE_BASENAME + ".json")
        on_disk = json.load(open(path))
        for key in ("metadata", "executive_summary", "component_results", "detailed_metrics", "recommendations"):
            assert on_disk[key]
        assert all(d["total_operations"] > 0 for d in on_disk["detailed_metrics"])
        text = open(os.path.join(suite.run_dir, SUITE_BASENAME + ".txt")).read()
        for heading in ("EXECUTIVE SUMMARY", "COMPONENT RESULTS", "PERFORMANCE HIGHLIGHTS", "RECOMMENDATIONS"):
            assert heading in text
        assert "✅ capacity_limits: PASSED (Max Capacity:" in text


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s", "-m", "performance"]))

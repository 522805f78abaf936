"""``loadgen compare`` judged against the runs' own noise, without processes: the noise a result keeps
(``result.noise_of``, ``fleet.merge.merge_noise``), the statistics (``analysis/noise.py``), noise-aware
verdicts with Holm–Bonferroni, capacity_limits' step figures never judged, and the refusal of runs that
differ in load, target, profile or machine. Reports are built with ``build_report`` from synthetic
``RunOutcome``s and ``StressTestResult``s, or edited dicts.
"""

import copy
import json
import math
import re

import numpy as np
import pytest

from loadgen import cli
from loadgen.config import ResourceThresholds, Stage
from loadgen.engine.load import RunPlan
from loadgen.engine.outcome import RunOutcome
from loadgen.fleet.merge import merge_component
from loadgen.analysis import noise
from loadgen.analysis.stats import Accounting, Histogram
from loadgen.options import Layer
from loadgen.report import build_report, compare
from loadgen.report.build import run_info
from loadgen.result import StressTestResult, result_from_outcome

T0 = 1_700_000_000
RUN = run_info(Layer({"profile": "ci", "concurrency": 10, "duration": 30.0}))


# ====================================================================== synthetic runs


def synthetic_outcome(seed, seconds=30, rate=100, median_ms=100.0, sigma=0.3, mem_mb=200.0, mem_sd=2.0,
                      success=0.99):
    """A RunOutcome as the master would close it: ``rate`` operations a second (Poisson), lognormal
    latencies, binomial successes, a flat pool memory with noise ``mem_sd``; load from T0 + 0.4 s."""
    rng = np.random.default_rng(seed)
    out = RunOutcome(plan=RunPlan(concurrency=10, duration_s=seconds), thresholds=ResourceThresholds())
    start = T0 + 0.4
    out.started_at, out.load_started_at = T0, start
    out.load_ended_at = start + seconds
    out.ended_at = out.load_ended_at + 0.5
    ts = list(range(int(start), int(out.load_ended_at) + 1))  # the seconds the load overlaps
    counts = rng.poisson(rate, len(ts))
    total = int(counts.sum())
    out.latency.record_many(rng.lognormal(math.log(median_ms * 1000), sigma, total).astype(np.int64))
    ok = int(rng.binomial(total, success))
    out.accounting = Accounting(dispatched=total, succeeded=ok, failed=total - ok)
    for t, n in zip(ts, counts):
        mem = mem_mb + rng.normal(0, mem_sd)
        out.seconds.append({"t": t, "throughput": int(n), "succeeded": int(n), "failed": 0, "cpu_percent": 50.0,
                            "pool_memory_mb": round(mem, 1)})
        out.memory_series.append((t, mem))
    out.peak_memory_mb = max(v for _, v in out.memory_series)
    out.peak_cpu_percent = 50.0
    return out


def synthetic_result(seed, name="concurrent_load", **kw):
    return result_from_outcome(name, synthetic_outcome(seed, **kw), criteria=[])


def report_of(results, kind="concurrent_load", run=RUN):
    return build_report(results, kind=kind, started_at=float(T0), ended_at=T0 + 40.0,
                        thresholds={"max_memory_mb": 1024.0}, run=copy.deepcopy(run))


def plain_result(name="concurrent_load", p99=200.0, throughput=100.0, noise_=None, performance_metrics=None,
                 peak_memory_mb=200.0):
    """A StressTestResult with chosen figures and noise (no histogram needed)."""
    return StressTestResult(
        test_name=name, success=True, duration_seconds=30.0, max_concurrent_operations=10,
        peak_memory_mb=peak_memory_mb, peak_cpu_percent=50.0, total_operations=3000, successful_operations=2970,
        failed_operations=30, throughput_ops_per_sec=throughput,
        performance_metrics=dict(performance_metrics or {"success_rate": 0.99}),
        accounting={"dispatched": 3000, "succeeded": 2970, "failed": 30, "timed_out": 0, "crashed": 0,
                    "dropped": 0, "rejected": 0},
        latency_ms={"p50": 100.0, "p90": 150.0, "p99": p99, "p999": p99, "max": p99, "mean": 100.0, "count": 3000},
        noise=dict(noise_ or {}))


def write(tmp_path, name, report):
    path = tmp_path / name
    path.write_text(json.dumps(report, default=list))
    return str(path)


def run_compare(capsys, *argv):
    code = cli.main(["compare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def verdicts(rows):
    return {(r["component"], r["metric"]): r["verdict"] for r in rows}


# ====================================================================== what a result keeps


def test_a_result_keeps_the_noise_of_each_metric():
    out = synthetic_outcome(1)
    r = result_from_outcome("c", out, criteria=[], recovery_time_seconds=3.0)
    nz = r.noise
    # 31 seconds overlap the load; the first and last (partial) are dropped
    assert nz["throughput"]["n"] == 29
    counts = [rec["throughput"] for rec in list(out.seconds)[1:-1]]
    assert nz["throughput"]["mean"] == pytest.approx(np.mean(counts))
    assert nz["throughput"]["sd"] == pytest.approx(np.std(counts, ddof=1))
    for key, q in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)):
        lo, hi = nz[key]["ci95"]
        assert lo <= r.latency_ms[key[:3]] <= hi and nz[key]["n"] == out.latency.count
        assert [lo, hi] == noise.percentile_interval(out.latency, q)
    assert nz["success_rate"] == {"successes": out.accounting.succeeded, "trials": out.accounting.completed}
    assert nz["peak_memory_mb"]["n"] == 29 and 1.0 < nz["peak_memory_mb"]["sd"] < 3.5
    assert nz["recovery_time_seconds"] == {"resolution_s": 1.0}
    # plain data, as report.json keeps it; an old result without noise still builds
    json.dumps(r.to_dict())
    assert StressTestResult(**{k: v for k, v in r.to_dict().items() if k != "noise"}).noise == {}


def test_open_model_trials_are_the_arrivals():
    out = synthetic_outcome(2)
    out.response = out.latency.copy()
    out.accounting.dropped = 40
    r = result_from_outcome("c", out, criteria=[])
    assert r.noise["success_rate"]["trials"] == out.accounting.completed + 40


def test_fleet_merge_adds_throughputs_and_recomputes_intervals():
    a, b = synthetic_outcome(3), synthetic_outcome(4, rate=50, mem_mb=300.0, mem_sd=5.0)
    ra, rb = (result_from_outcome("c", o, criteria=[]) for o in (a, b))
    merged = merge_component([("s0", ra), ("s1", rb)])
    nz = merged.noise
    assert nz["throughput"]["mean"] == pytest.approx(ra.noise["throughput"]["mean"] + rb.noise["throughput"]["mean"])
    assert nz["throughput"]["sd"] == pytest.approx(math.hypot(ra.noise["throughput"]["sd"],
                                                               rb.noise["throughput"]["sd"]), abs=1e-5)
    union = a.latency.copy().merge(b.latency)
    assert nz["p99_ms"] == {"n": union.count, "ci95": noise.percentile_interval(union, 0.99)}
    assert nz["success_rate"]["trials"] == a.accounting.completed + b.accounting.completed
    assert nz["peak_memory_mb"] == rb.noise["peak_memory_mb"]  # the worst machine's


# ====================================================================== statistics


def test_holm_bonferroni_against_a_hand_computation():
    # m = 5 at alpha 0.05: sorted 0.001 ≤ 0.05/5 ✓, 0.0105 ≤ 0.05/4 ✓, 0.012 ≤ 0.05/3 ✓, 0.04 > 0.05/2 ✗ (stop)
    p = [0.001, 0.04, 0.012, 0.3, 0.0105]
    assert noise.holm(p, 0.05) == [True, False, True, False, True]
    # Bonferroni alone (0.05/5 = 0.01) would have kept only the first
    assert [x <= 0.01 for x in p] == [True, False, False, False, False]
    # rows without a test are not in the family: m = 2 here, 0.02 ≤ 0.05/2 ✓, 0.04 ≤ 0.05 ✓
    assert noise.holm([None, 0.04, 0.02, None], 0.05) == [False, True, True, False]
    assert noise.holm([0.02, 0.03], 0.01) == [False, False]
    assert noise.holm([], 0.01) == []


def test_p_values_against_known_values():
    assert noise.t_p(2.0, 10) == pytest.approx(0.0733880348, rel=1e-6)
    assert noise.t_p(2.228138852, 10) == pytest.approx(0.05, rel=1e-6)
    assert noise.t_p(1.0, 1) == pytest.approx(0.5, rel=1e-9)  # Cauchy
    assert noise.t_p(1.959963985, 1e9) == pytest.approx(0.05, rel=1e-6)
    assert noise.normal_p(1.959963985) == pytest.approx(0.05, rel=1e-6)
    assert noise.z_p(0.0, 0.0) == 1.0 and noise.z_p(1.0, 0.0) == 0.0
    # Welch: means 10 and 12, sd 2 and 3, n 20 and 25 → t = 2.659, df ≈ 41.9, p ≈ 0.011
    assert noise.welch_p(10, 2, 20, 12, 3, 25) == pytest.approx(0.0111, abs=5e-4)
    assert noise.welch_p(10, 2, 1, 12, 3, 25) is None
    # two proportions: 90/100 vs 80/100 → z = 1.980, p ≈ 0.0477
    assert noise.proportions_p(90, 100, 80, 100) == pytest.approx(0.0477, abs=5e-4)
    assert noise.proportions_p(100, 100, 100, 100) == 1.0


def test_percentile_interval_holds_the_true_percentile_and_shrinks_with_n():
    rng = np.random.default_rng(11)
    true = {0.5: 500.0, 0.9: 900.0, 0.99: 990.0}  # uniform 0–1000 ms
    widths = {q: [] for q in true}
    for n in (1_000, 10_000, 100_000):
        h = Histogram()
        h.record_many(rng.uniform(0, 1_000_000, n).astype(np.int64))
        for q, value in true.items():
            lo, hi = noise.percentile_interval(h, q)
            assert lo <= value <= hi, (n, q, lo, hi)
            widths[q].append(hi - lo)
    for q, w in widths.items():
        assert w[0] > w[1] > w[2], (q, w)
        assert w[0] / w[2] == pytest.approx(10, rel=0.5)  # ∝ 1/√n
    # exact values 1..1000 ms: the ranks of the order-statistic method, read back
    h = Histogram()
    h.record_many(np.arange(1, 1001) * 1000)
    lo_rank, hi_rank = noise.rank_interval(1000, 0.5)
    assert (lo_rank, hi_rank) == (469, 531)  # 500 ± 1.96·√250 = 500 ± 30.99: floor, ceil
    lo, hi = noise.percentile_interval(h, 0.5)
    assert lo == pytest.approx(469, rel=1e-3) and hi == pytest.approx(531, rel=1e-3)
    assert noise.percentile_interval(Histogram(), 0.5) is None


def test_percentile_interval_covers_about_95_percent():
    rng = np.random.default_rng(5)
    hits = {0.5: 0, 0.99: 0}
    reps = 200
    for _ in range(reps):
        h = Histogram()
        h.record_many(rng.exponential(100_000, 3000).astype(np.int64))
        for q in hits:
            lo, hi = noise.percentile_interval(h, q)
            hits[q] += lo <= -100.0 * math.log(1 - q) <= hi
    for q, n in hits.items():
        assert 0.90 <= n / reps <= 1.0, (q, n)


# ====================================================================== verdicts


def test_a_a_runs_are_no_regression_even_with_changes_up_to_the_tolerance(tmp_path, capsys):
    for seed in range(10):
        old = report_of([synthetic_result(100 + seed)])
        new = report_of([synthetic_result(200 + seed)])
        rows = compare.compare_reports(old, new, 10, alpha=0.01)
        assert "REGRESSION" not in verdicts(rows).values(), rows
        assert all(r["p"] is not None for r in rows if r["metric"] not in ("status", "capacity", "recovery rate"))
    # the current run moved by up to the tolerance on every metric, the worse way
    d, b = new["detailed_metrics"][0], old["detailed_metrics"][0]
    d["throughput_ops_per_sec"] = b["throughput_ops_per_sec"] * 0.905
    d["latency_ms"]["p50"] = b["latency_ms"]["p50"] * 1.095
    d["latency_ms"]["p99"] = b["latency_ms"]["p99"] * 1.095
    d["peak_memory_mb"] = b["peak_memory_mb"] * 1.095
    code, out, err = run_compare(capsys, write(tmp_path, "old.json", old), write(tmp_path, "new.json", new))
    assert code == 0, out + err
    assert "REGRESSION" not in out
    assert out.strip().splitlines()[-1].startswith("compare: no regression beyond 10% and the noise (α 0.01, "
                                                   "Holm–Bonferroni")


def test_a_real_shift_is_a_regression_naming_the_metric(tmp_path, capsys):
    old = report_of([synthetic_result(1)])
    new = report_of([synthetic_result(2)])
    d = new["detailed_metrics"][0]
    d["latency_ms"]["p99"] = old["detailed_metrics"][0]["latency_ms"]["p99"] * 1.4  # tight intervals: ~3000 samples
    code, out, _ = run_compare(capsys, write(tmp_path, "old.json", old), write(tmp_path, "new.json", new))
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[-1].startswith("compare: 1 regression beyond 10% and the noise")
    # the regressions under their own name, each with the threshold Holm held it to
    listed = next(ln for ln in lines if ln.startswith("regressions (1): "))
    assert re.search(r"concurrent_load p99 ms \(p \S+ ≤ \S+\)", listed), listed
    assert not any(ln.startswith("within noise") for ln in lines)
    row = next(ln for ln in out.splitlines() if " p99 ms " in ln)
    assert "REGRESSION" in row and "+40.0%" in row and "p " in row
    # the whole distribution slower: p50 and p99 both regress
    slow = report_of([synthetic_result(3, median_ms=140.0)])
    rows = compare.compare_reports(old, slow, 10)
    assert verdicts(rows)[("concurrent_load", "p50 ms")] == "REGRESSION"
    assert verdicts(rows)[("concurrent_load", "p99 ms")] == "REGRESSION"


def test_a_big_change_with_wide_intervals_is_within_noise(tmp_path, capsys):
    wide = {"p99_ms": {"n": 40, "ci95": [100.0, 400.0]},
            "throughput": {"n": 5, "mean": 100.0, "sd": 40.0}}
    old = report_of([plain_result(p99=200.0, throughput=100.0, noise_=wide)])
    new = report_of([plain_result(p99=300.0, throughput=70.0, noise_=wide)])
    rows = compare.compare_reports(old, new, 10)
    v = verdicts(rows)
    assert v[("concurrent_load", "p99 ms")] == "within noise"
    assert v[("concurrent_load", "throughput ops/s")] == "within noise"
    code, out, _ = run_compare(capsys, write(tmp_path, "old.json", old), write(tmp_path, "new.json", new))
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-1].startswith("compare: no regression beyond 10%") and lines[-1].endswith("; 2 within noise")
    listed = next(ln for ln in lines if ln.startswith("within noise (beyond 10% but not beyond the noise) (2): "))
    # each row says what it was held to: its p-value above its Holm threshold
    for metric in ("p99 ms", "throughput ops/s"):
        m = re.search(rf"concurrent_load {metric} \(p (\S+) > (\S+)\)", listed)
        assert m and float(m.group(1)) > float(m.group(2)), listed
    assert not any(ln.startswith("regressions") for ln in lines)
    # an improvement within the noise is not "better" either
    rows = compare.compare_reports(new, old, 10)
    assert verdicts(rows)[("concurrent_load", "p99 ms")] == "within noise"


def test_holm_makes_a_marginal_change_among_many_rows_within_noise():
    # p ≈ 0.004 for the p99 row: significant alone at 0.01, not among the 12 tests of 4 components
    nz = {"p99_ms": {"n": 1000, "ci95": [190.0, 210.0]}, "success_rate": {"successes": 990, "trials": 1000},
          "throughput": {"n": 30, "mean": 100.0, "sd": 5.0}}
    names = ["a", "b", "c", "d"]
    old = report_of([plain_result(n, p99=100.0, noise_=nz) for n in names], kind="suite")
    new = copy.deepcopy(old)
    new["detailed_metrics"][0]["latency_ms"]["p99"] = 100.0 + 2.87 * math.sqrt(2) * 10 / noise.Z95
    rows = compare.compare_reports(old, new, 10, alpha=0.01)
    row = next(r for r in rows if r["component"] == "a" and r["metric"] == "p99 ms")
    assert 0.003 < row["p"] < 0.005 and row["change_pct"] > 10
    assert row["verdict"] == "within noise"
    assert sum(1 for r in rows if r["p"] is not None) == 12
    # the row names the threshold it was held to: below α 0.01 yet above its Holm rank's
    assert row["held_to"] < row["p"] < 0.01 and f"> {row['held_to']:.2g}" in row["noise"]
    rows = compare.compare_reports(old, new, 10, alpha=0.05)
    assert verdicts(rows)[("a", "p99 ms")] == "REGRESSION"


def test_an_old_report_without_noise_is_judged_by_the_tolerance_alone(tmp_path, capsys):
    old = report_of([plain_result(p99=200.0)])
    new = report_of([plain_result(p99=260.0)])
    for rep in (old, new):
        del rep["metadata"]["run"]
        for d in rep["detailed_metrics"]:
            del d["noise"]
    code, out, _ = run_compare(capsys, write(tmp_path, "old.json", old), write(tmp_path, "new.json", new))
    assert code == 1
    row = next(ln for ln in out.splitlines() if " p99 ms " in ln)
    assert "REGRESSION" in row and compare.TOLERANCE_ONLY in row
    assert "warning: baseline and current have no metadata.run" in out


# ====================================================================== capacity_limits


def test_capacity_limits_step_figures_are_shown_not_judged():
    steps = [{"concurrency": 1, "ok": True}, {"concurrency": 2, "ok": True}, {"concurrency": 4, "ok": True},
             {"concurrency": 8, "ok": False}, {"concurrency": 6, "ok": True}, {"concurrency": 7, "ok": False}]
    pm = {"max_capacity": 6, "capacity_steps": steps, "success_rate": 0.99}
    tight = {"p99_ms": {"n": 5000, "ci95": [199.0, 201.0]}, "throughput": {"n": 30, "mean": 100.0, "sd": 1.0},
             "peak_memory_mb": {"n": 30, "sd": 0.5}}
    old = report_of([plain_result("capacity_limits", p99=200.0, throughput=100.0, noise_=tight,
                                  performance_metrics=pm)], kind="capacity_limits")
    new = report_of([plain_result("capacity_limits", p99=370.0, throughput=66.0, noise_=tight, peak_memory_mb=306.0,
                                  performance_metrics=dict(pm, success_rate=0.7))], kind="capacity_limits")
    rows = compare.compare_reports(old, new, 10)
    v = verdicts(rows)
    for metric in ("p50 ms", "p99 ms", "throughput ops/s", "peak memory MB", "success rate"):
        assert v[("capacity_limits", metric)] == compare.NOT_COMPARABLE, metric
    assert v[("capacity_limits", "capacity")] == "ok"
    assert all(r["p"] is None for r in rows if r["verdict"] == compare.NOT_COMPARABLE)
    # capacity is judged: from its interval when the report gives one …
    low = copy.deepcopy(new)
    low["detailed_metrics"][0]["performance_metrics"].update(max_capacity=3, capacity_low=3, capacity_high=3.5)
    old_i = copy.deepcopy(old)
    old_i["detailed_metrics"][0]["performance_metrics"].update(capacity_low=5.5, capacity_high=6.5)
    assert verdicts(compare.compare_reports(old_i, low, 10))[("capacity_limits", "capacity")] == "REGRESSION"
    wide = copy.deepcopy(low)
    wide["detailed_metrics"][0]["performance_metrics"].update(capacity_low=1, capacity_high=8)
    assert verdicts(compare.compare_reports(old_i, wide, 10))[("capacity_limits", "capacity")] == "within noise"
    # … else from the search's bracket (6 passed, 7 failed): 5 passed and 6 failed is within it
    near = copy.deepcopy(new)
    near["detailed_metrics"][0]["performance_metrics"].update(
        max_capacity=5, capacity_steps=steps[:4] + [{"concurrency": 6, "ok": False}, {"concurrency": 5, "ok": True}])
    row = next(r for r in compare.compare_reports(old, near, 10) if r["metric"] == "capacity")
    assert row["verdict"] == "within noise" and row["basis"] == "search bracket"


# ====================================================================== like with like


def _pair(**changes):
    old = report_of([synthetic_result(1)])
    new = report_of([synthetic_result(2)])
    for path, value in changes.items():
        node = new["metadata"]
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return old, new


@pytest.mark.parametrize("path, value, named", [
    ("run__profile", "nightly", "profile: ci ≠ nightly"),
    ("run__target__ref", "mypkg.client:call", "target.ref: MockAIWritingFlowV2 ≠ mypkg.client:call"),
    ("run__target__flow_params", {"stage_cpu_ms": "5"}, "target.flow_params"),
    ("run__load__concurrency", 20, "load.concurrency: 10 ≠ 20"),
    ("run__load__rate", 50.0, "load.rate: unset ≠ 50.0"),
    ("system_info__cpu_count", 64, "machine cpu_count"),
    ("system_info__machine", "aarch64", "machine machine"),
    ("system_info__total_memory_gb", 512.0, "machine total_memory_gb"),
])
def test_runs_that_differ_are_refused_unless_forced(tmp_path, capsys, path, value, named):
    old, new = _pair(**{path: value})
    a, b = write(tmp_path, "old.json", old), write(tmp_path, "new.json", new)
    code, out, err = run_compare(capsys, a, b)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadgen: error: the runs differ") and named in lines[0], err
    assert "--force" in lines[0]
    code, out, err = run_compare(capsys, a, b, "--force")
    assert code in (0, 1) and err == ""
    warning = next(ln for ln in out.splitlines() if ln.startswith("warning:"))
    assert named in warning and "(--force)" in warning
    assert "p99 ms" in out


def test_the_kernel_hostname_python_and_seed_may_differ(tmp_path, capsys):
    old, new = _pair(system_info__platform="Linux-7.0-other", system_info__python="3.13.1")
    new["metadata"]["seed"] = 99
    code, out, err = run_compare(capsys, write(tmp_path, "old.json", old), write(tmp_path, "new.json", new))
    assert code == 0 and "warning" not in out, out + err


def test_a_report_without_metadata_run_compares_with_a_warning(tmp_path, capsys):
    old, new = _pair(system_info__cpu_count=64)
    del old["metadata"]["run"]
    code, out, err = run_compare(capsys, write(tmp_path, "old.json", old), write(tmp_path, "new.json", new))
    assert code in (0, 1), err
    warnings = [ln for ln in out.splitlines() if ln.startswith("warning:")]
    assert any("baseline has no metadata.run" in w for w in warnings)
    assert any("machine cpu_count" in w and "compared anyway" in w for w in warnings)


def test_run_info_is_plain_data_of_the_user_settings():
    settings = Layer({"profile": "nightly", "rate": 20.0, "stages": (Stage(5.0, 10.0), Stage(20.0, 40.0)),
                      "workers": 2, "target": "mypkg:call", "target_args": {"n": 3, "obj": object()},
                      "seed": 7, "out": "/tmp/x"})
    info = run_info(settings, shards=3)
    assert info["profile"] == "nightly" and info["shards"] == 3
    assert info["load"] == {"rate": 20.0, "stages": [[5.0, 10.0], [20.0, 40.0]], "workers": 2}
    assert info["target"]["ref"] == "mypkg:call" and info["target"]["target_args"]["n"] == 3
    json.dumps(info)
    assert run_info(Layer())["target"] == {"ref": "MockAIWritingFlowV2", "flow_params": {}, "target_args": {}}
    assert run_info(Layer())["profile"] == "ci"


def test_bad_alpha_is_a_usage_error(tmp_path, capsys):
    old, new = _pair()
    a, b = write(tmp_path, "old.json", old), write(tmp_path, "new.json", new)
    for bad in ("0", "1", "-0.1", "x"):
        code, _, err = run_compare(capsys, a, b, "--alpha", bad)
        assert code == 2 and "--alpha" in err, (bad, err)
    code, out, _ = run_compare(capsys, a, b, "--alpha", "0.05")
    assert code == 0 and "(α 0.05, Holm–Bonferroni" in out

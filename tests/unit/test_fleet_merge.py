"""Fleet mode without a cluster: the load split, the per-second merge, the merged component, the fleet
section of the reports, and the usage errors found before dialling out (fleet/merge.py, report/fleet.py,
the CLI). The runs on a loopback Dask cluster: ``tests/integration/test_fleet.py``.
"""

import sys

import numpy as np
import pytest

from _helpers import XSD
from _helpers import run_main as _main
from loadgen.fleet.merge import SecondMerger, Share, merge_component
from loadgen.config import ResourceThresholds, Stage
from loadgen.report import build_report, render_summary
from loadgen.report.fleet import fleet_junit_suite, render_fleet_text
from loadgen.result import StressTestResult
from loadgen.engine.load import RunPlan
from loadgen.analysis.stats import Histogram


def test_share_splits_every_kind_of_load():
    closed = RunPlan(concurrency=7, duration_s=1.0, operations=10,
                     stages=(Stage(1.0, 5.0), Stage(1.0, 0.0)))
    parts = [Share(i, 3).apply(closed) for i in range(3)]
    assert [p.concurrency for p in parts] == [3, 2, 2]
    assert [p.operations for p in parts] == [4, 3, 3]
    assert [[s.target for s in p.stages] for p in parts] == [[2, 0], [2, 0], [1, 0]]
    assert Share(0, 3).describe(closed) == {"model": "closed", "mine": 3, "total": 7, "fraction": round(3 / 7, 6)}
    opened = RunPlan(rate=10.0, duration_s=1.0, stages=(Stage(1.0, 30.0),))
    assert [Share(i, 4).apply(opened).rate for i in range(4)] == [2.5] * 4
    assert Share(1, 4).apply(opened).stages[0].target == 7.5
    assert Share(0, 1).apply(closed) is closed
    # fewer in flight than shards: each still runs one
    assert Share(2, 3).apply(RunPlan(concurrency=1, duration_s=1.0)).concurrency == 1


def _rec(t, ok, p99, phase="main", mem=10.0):
    return {"t": t, "phase": phase, "ops": ok, "succeeded": ok, "failed": 0, "dropped": 0, "rejected": 0,
            "throughput": ok, "in_flight": 2, "target": 2, "errors": 1,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": p99, "p999": p99, "max": p99},
            "cpu_percent": 40.0, "pool_memory_mb": mem}


def test_second_merger_waits_for_every_running_shard_then_for_grace():
    m = SecondMerger(grace_s=3.0)
    assert m.add(0, _rec(100, 10, 5.0), 0.1)
    assert m.ready(101.5, [0, 1]) == []  # shard 1 has not reported second 100
    assert m.add(1, _rec(100, 20, 9.0, mem=30.0), 0.2)
    assert not m.add(1, _rec(100, 20, 9.0))  # a backfilled duplicate
    [line] = m.ready(101.5, [0, 1])
    assert (line["t"], line["shards"], line["succeeded"], line["throughput"]) == (100, 2, 30, 30)
    assert line["errors"] == 2
    assert line["latency_ms"]["p99"] == 9.0  # the worst shard's: an upper bound
    assert line["pool_memory_mb"] == 30.0 and line["fleet_pool_memory_mb"] == 40.0
    assert set(line["per_shard"]) == {"0", "1"}
    assert not m.add(0, _rec(100, 1, 1.0))  # that second is written already
    m.add(0, _rec(101, 10, 5.0))
    assert m.ready(104.9, [0, 1]) == []
    assert [x["t"] for x in m.ready(105.1, [0, 1])] == [101]  # a silent shard holds nothing back for long


def _result(name, values_us, acc, criteria=(), breaches=(), code=0, peak_mb=50.0):
    h = Histogram()
    h.record_many(values_us)
    return StressTestResult(
        test_name=name, success=code == 0, duration_seconds=2.0, max_concurrent_operations=5,
        peak_memory_mb=peak_mb, peak_cpu_percent=30.0, total_operations=acc["dispatched"],
        successful_operations=acc["succeeded"], failed_operations=acc["failed"], throughput_ops_per_sec=100.0,
        performance_metrics={"max_capacity": 40.0 if peak_mb < 60 else 30.0},
        criteria=[dict(c) for c in criteria], accounting=dict(acc), latency_ms=h.summary_ms(),
        histograms={"latency": h.to_payload(), "service": h.to_payload(), "measure:draft": h.to_payload()},
        breaches=list(breaches), exit_code=code, key_metric=("success_rate", 1.0))


def test_merged_component_is_the_union_of_the_shards():
    rng = np.random.default_rng(7)
    a_vals = rng.lognormal(9, 0.5, 5000).astype(np.int64)
    b_vals = rng.lognormal(10, 0.8, 3000).astype(np.int64)
    acc_a = {"dispatched": 5000, "succeeded": 4990, "failed": 10, "timed_out": 0, "crashed": 0, "dropped": 0}
    acc_b = {"dispatched": 3000, "succeeded": 2900, "failed": 100, "timed_out": 0, "crashed": 0, "dropped": 3}
    crit = [{"criterion": "p99_ms < 100000", "metric": "p99_ms", "op": "<", "limit": 100000.0,
             "value": 1, "passed": True}]
    breach = {"metric": "cpu_percent", "value": 95.0, "limit": 90.0}
    merged = merge_component([("s0", _result("c", a_vals, acc_a, crit)),
                              ("s1", _result("c", b_vals, acc_b, crit, [breach], code=3, peak_mb=70.0))])
    union = Histogram()
    union.record_many(np.concatenate([a_vals, b_vals]))
    assert merged.latency_ms == union.summary_ms()
    assert Histogram.from_payload(merged.histograms["latency"]).count == 8000
    assert merged.measures_ms["draft"] == union.summary_ms()
    assert merged.accounting["dispatched"] == 8000 and merged.accounting["dropped"] == 3
    assert (merged.successful_operations, merged.failed_operations) == (7890, 110)
    assert merged.throughput_ops_per_sec == 200.0
    assert merged.peak_memory_mb == 70.0  # the worst machine
    assert merged.performance_metrics["max_capacity"] == 30.0  # the worst shard
    assert merged.breaches == [dict(breach, shard="s1")]
    assert merged.criteria[0]["passed"] and merged.criteria[0]["value"] == union.summary_ms()["p99"]
    assert merged.exit_code == 3 and not merged.success


def _fleet_report(lost=True):
    acc = {"dispatched": 10, "succeeded": 10, "failed": 0, "timed_out": 0, "crashed": 0, "dropped": 0}
    r = _result("concurrent_load", [1000] * 10, acc)
    report = build_report([r], kind="concurrent_load", started_at=1.0e9, ended_at=1.0e9 + 5,
                          thresholds=ResourceThresholds())
    shards = [{"index": 0, "host": "a", "worker": "tcp://127.0.0.1:1", "status": "finished", "exit_code": 0,
               "share": {"model": "closed", "mine": 5, "total": 10, "fraction": 0.5}, "operations": 10,
               "throughput": 5.0, "p99_ms": 1.0, "p99_basis": "histogram", "peak_memory_mb": 40.0, "breaches": 0,
               "start_offset_ms": 0.0, "max_delivery_delay_s": 0.1, "duration_s": 2.0}]
    if lost:
        shards.append({"index": 1, "host": "b", "worker": "tcp://127.0.0.1:2", "status": "lost",
                       "reason": "its Dask worker left the cluster mid-run", "operations": 4, "throughput": 2.0,
                       "p99_ms": 3.0, "p99_basis": "worst streamed second", "peak_memory_mb": 41.0, "breaches": 0,
                       "start_offset_ms": 12.0, "max_delivery_delay_s": 0.2})
    report["fleet"] = {"scheduler": "tcp://127.0.0.1:8786", "shard_count": len(shards),
                       "shards_finished": 1, "shards_lost": len(shards) - 1, "start_skew_ms": 12.0,
                       "max_delivery_delay_s": 0.2, "warnings": ["clocks differ"], "shards": shards}
    return report


def test_fleet_section_in_text_html_and_junit():
    from loadgen.report.junit import render_junit
    from loadgen.report.html import render_html

    report = _fleet_report()
    text = render_summary(report)
    assert "FLEET" in text and "its Dask worker left the cluster mid-run" in text
    assert "3.0*" in text  # a lost shard's p99 is marked as the worst streamed second
    assert "\n".join(render_fleet_text(report)) in text
    page = render_html(report)
    assert "<section id='fleet'>" in page and "tcp://127.0.0.1:2" in page
    xml = render_junit(report)
    assert 'name="loadgen.fleet"' in xml and 'type="ShardLost"' in xml
    xmlschema = pytest.importorskip("xmlschema")
    xmlschema.XMLSchema(XSD).validate(xml)
    suite = fleet_junit_suite(_fleet_report(lost=False), "2020-01-01T00:00:00", "h", 1)
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "0", "0")


def test_cluster_flag_without_dask_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    code, _, err = _main(["run", "concurrent_load", "--duration", "1s", "--cluster", "tcp://127.0.0.1:9"])
    assert code == 2
    assert "pip install 'loadgen[distributed]'" in err and "Traceback" not in err


@pytest.mark.parametrize("address", ["nonsense", "tcp://127.0.0.1:notaport", "tcp://:8786"])
def test_bad_scheduler_address_is_a_usage_error(address):
    pytest.importorskip("distributed", reason="fleet mode needs Dask distributed (pip install '.[distributed]')")
    code, _, err = _main(["run", "concurrent_load", "--duration", "1s", "--cluster", address])
    assert code == 2 and "--cluster" in err


@pytest.mark.parametrize("flag, value, says", [("--silence-limit", "1s", "at least 3s"),
                                               ("--start-lead", "0s", "greater than zero")])
def test_bad_fleet_timings_are_one_line_and_exit_2(flag, value, says):
    code, _, err = _main(["run", "concurrent_load", "--duration", "1s", "--cluster", "tcp://127.0.0.1:9", flag, value])
    assert code == 2 and says in err and flag in err and len(err.strip().splitlines()) == 1


def test_merged_checks_add_and_criteria_on_names_are_judged_on_the_union():
    acc = {"dispatched": 10, "succeeded": 10, "failed": 0, "timed_out": 0, "crashed": 0, "dropped": 0}
    crit = [{"criterion": "checks{name=ok} > 0.75", "metric": "checks{name=ok}", "op": ">", "limit": 0.75},
            {"criterion": "count{measure=draft} == 3000", "metric": "count{measure=draft}", "op": "==", "limit": 3000}]
    a, b = _result("c", [1000] * 1000, acc, crit), _result("c", [2000] * 2000, acc, crit)
    a.checks = {"ok": {"passes": 9, "fails": 1, "rate": 0.9}}
    b.checks = {"ok": {"passes": 6, "fails": 4, "rate": 0.6}, "other": {"passes": 1, "fails": 0, "rate": 1.0}}
    merged = merge_component([("s0", a), ("s1", b)])
    assert merged.checks == {"ok": {"passes": 15, "fails": 5, "rate": 0.75}, "other": {"passes": 1, "fails": 0, "rate": 1.0}}
    assert [(c["value"], c["passed"]) for c in merged.criteria] == [(0.75, False), (3000, True)]


def test_a_lost_shards_streamed_operations_count_as_lost_and_the_totals_add_up():
    from loadgen.fleet.merge import add_lost, lost_accounting

    seconds = [dict(_rec(t, 40, 5.0), scenario=name, dropped=d) for t, name, d in
               ((100, "a", 0), (101, "a", 2), (102, "b", 0))]
    seconds[1]["ops"] = 45  # started more than ended this second
    lost = lost_accounting(seconds, "a")
    assert (lost["a"].dispatched, lost["a"].lost, lost["a"].dropped, lost["a"].succeeded) == (85, 85, 2, 0)
    assert lost["b"].lost == 40
    acc = {"dispatched": 2, "succeeded": 2, "failed": 0}
    comps = [merge_component([("shard 0@x", _result("a", [1000, 2000], acc))])]
    add_lost(comps, lost, "shard 1@y")
    a, b = comps
    assert a.accounting["dispatched"] == 87 and a.accounting["lost"] == 85 and a.total_operations == 87
    assert a.accounting["dispatched"] == a.accounting["succeeded"] + a.accounting["lost"]
    assert a.error_messages[0].startswith("[shard 1@y] lost: 85 operations")
    # a component only the lost shard ran: added, failed, with its lost operations only
    assert (b.test_name, b.success, b.accounting["lost"], b.exit_code) == ("b", False, 40, 4)
    report = build_report(comps, kind="suite", started_at=0.0, ended_at=1.0, thresholds=ResourceThresholds())
    assert report["accounting"]["lost"] == 125 and report["accounting"]["dispatched"] == 127


def test_start_gate_holds_a_ready_pool_until_it_opens():
    from loadgen.engine.load import StartGate

    told = []
    gate = StartGate(on_ready=told.append)
    gate.pool_ready()
    gate.pool_ready()  # reported once
    assert len(told) == 1 and gate.ready_at == told[0] and gate.at is None
    gate.open(told[0] + 0.5)
    assert gate.at == told[0] + 0.5


def test_a_shard_forgets_the_users_modules_but_not_installed_ones(tmp_path, monkeypatch):
    """What a run imported from the user's files is dropped when its shard ends: the next run on the
    long-lived Dask worker imports the target afresh (an edited file is read again)."""
    import importlib

    from loadgen.fleet.shard import _forget_targets

    (tmp_path / "lg_user_target_mod.py").write_text("VERSION = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules) - {"colorsys"}
    sys.modules.pop("colorsys", None)
    mod = importlib.import_module("lg_user_target_mod")
    importlib.import_module("colorsys")  # the standard library's: kept
    assert mod.VERSION == 1
    _forget_targets(before)
    assert "lg_user_target_mod" not in sys.modules and "colorsys" in sys.modules
    (tmp_path / "lg_user_target_mod.py").write_text("VERSION = 22\n")  # another size: no stale .pyc
    importlib.invalidate_caches()
    assert importlib.import_module("lg_user_target_mod").VERSION == 22
    sys.modules.pop("lg_user_target_mod", None)


def test_a_fleet_second_keeps_each_op_of_a_mix_at_its_worst_shard():
    from loadgen.fleet.merge import merge_seconds

    a = {"t": 1, "phase": "load", "succeeded": 5, "failed": 0, "ops_ms": {"browse": {"p50": 3.0, "p99": 9.0}}}
    b = {"t": 1, "phase": "load", "succeeded": 5, "failed": 0,
         "ops_ms": {"browse": {"p50": 4.0, "p99": 7.0}, "login": {"p50": 8.0, "p99": 12.0}}}
    line = merge_seconds((1, "load"), {0: (a, 0.1), 1: (b, 0.2)})
    assert line["ops_ms"] == {"browse": {"p50": 4.0, "p99": 9.0}, "login": {"p50": 8.0, "p99": 12.0}}

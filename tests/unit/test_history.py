"""The history without processes: series keys, figures, the store (rebuild, corrupt, newer schema, killed and
pruned nights), change points on synthetic series, the verdict, the page and the textfile."""

import json
import os
import re
import shutil
import sqlite3

import numpy as np
import pytest

from _helpers import TESTS, parse_prom
from _nights import make_report, night_name, throughputs, write_history, write_night
from loadgen.errors import UsageError
from loadgen.history import detect, series, store
from loadgen.history.command import history_command

SAMPLE_RUN = os.path.join(TESTS, "data", "sample_run")


# ---------------------------------------------------------------- series keys and figures


def test_series_key_ignores_output_flags_and_label_but_not_settings():
    a, b = make_report(0, label="abc123"), make_report(1, label="def456")
    b["metadata"]["command"] = a["metadata"]["command"].replace("--quiet ", "") + " --label def456"
    assert series.series_key(series.series_fields(a)) == series.series_key(series.series_fields(b))
    for change in (lambda r: r["metadata"]["run"]["target"]["flow_params"].update(processing_time_base=0.125),
                   lambda r: r["metadata"]["system_info"].update(cpu_count=64),
                   lambda r: r["metadata"].update(version="9.9.9"),
                   lambda r: r["metadata"]["run"].update(profile="nightly"),
                   lambda r: r["metadata"].update(command=r["metadata"]["command"] + " --seed 4")):
        c = make_report(2)
        change(c)
        assert series.series_key(series.series_fields(c)) != series.series_key(series.series_fields(a))


def test_normalised_command_drops_output_flags_with_their_values():
    assert series.normalised_command("loadgen suite --profile ci --out /x/y --quiet --log-level INFO --label a "
                                     "--only io_stress") == "loadgen suite --profile ci --only io_stress"
    assert series.normalised_command("loadgen run x --out=/a --seed 3") == "loadgen run x --seed 3"


def test_describe_change_names_what_differs():
    a, b = make_report(0), make_report(1, flow_params={"processing_time_base": 0.125})
    text = series.describe_change(series.series_fields(a), series.series_fields(b))
    assert "run.target.flow_params.processing_time_base: (none) → 0.125" in text


def test_figures_of_a_report():
    rep = json.load(open(os.path.join(SAMPLE_RUN, "report.json")))
    rep["detailed_metrics"][0]["noise"]["throughput"] = {"n": 3, "mean": 161.0, "sd": 3.0}  # whole seconds
    rows = {(c, m): (v, lo, hi) for c, m, v, lo, hi in series.figures(rep)}
    assert rows[("concurrent_load", "throughput_ops_per_s")][0] == pytest.approx(161.012)
    assert rows[("concurrent_load", "p99_ms")] == (226.559, 217.727, 242.047)
    assert rows[("concurrent_load", "success_rate")][0] == pytest.approx(0.917526)
    assert ("concurrent_load", "measure.research.p50_ms") in rows
    assert ("concurrent_load", "leak_slope_mb_per_s") not in rows  # the sample's slope is null: left out
    assert series.direction("throughput_ops_per_s") == 1 and series.direction("measure.research.p50_ms") == -1


def test_a_throughput_over_less_than_two_loaded_seconds_is_not_kept():
    rep = json.load(open(os.path.join(SAMPLE_RUN, "report.json")))
    d = rep["detailed_metrics"][0]
    assert "throughput" not in d["noise"]  # 1.2 s: result.noise_of leaves it out under two whole loaded seconds
    rows = {(c, m) for c, m, *_ in series.figures(rep)}
    assert (d["test_name"], "throughput_ops_per_s") not in rows and (d["test_name"], "p99_ms") in rows
    del d["noise"]  # a report without any noise (older, or another kind): its throughput is kept
    assert (d["test_name"], "throughput_ops_per_s") in {(c, m) for c, m, *_ in series.figures(rep)}


# ---------------------------------------------------------------- the store


def test_store_is_rebuilt_from_the_run_directories(tmp_path):
    write_history(tmp_path, throughputs(4))
    first = store.open_store(str(tmp_path))
    assert first.added == 4 and [n.name for n in first.nights] == [night_name(i) for i in range(4)]
    assert store.open_store(str(tmp_path)).added == 0  # up to date: nothing read again
    write_night(tmp_path, 4, throughput=150.0)
    again = store.open_store(str(tmp_path))
    assert again.added == 1 and again.nights[-1].figures[("concurrent_load", "throughput_ops_per_s")][0] == 150.0
    rebuilt = store.open_store(str(tmp_path), rebuild=True)
    assert rebuilt.added == 5
    assert [n.figures for n in rebuilt.nights] == [n.figures for n in again.nights]


def test_a_corrupt_store_is_rebuilt_with_a_warning(tmp_path):
    write_history(tmp_path, throughputs(3))
    with open(store.store_path(str(tmp_path)), "wb") as f:
        f.write(b"this is not an SQLite database" * 100)
    loaded = store.open_store(str(tmp_path))
    assert len(loaded.nights) == 3
    assert any("corrupt store" in w and "rebuilt from the run directories" in w for w in loaded.warnings)


def test_a_store_from_a_newer_loadgen_is_refused_unless_rebuilt(tmp_path):
    write_history(tmp_path, throughputs(3))
    store.open_store(str(tmp_path))
    con = sqlite3.connect(store.store_path(str(tmp_path)))
    with con:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(store.SCHEMA_VERSION + 1),))
    con.close()
    with pytest.raises(UsageError, match="store written by a newer loadgen"):
        store.open_store(str(tmp_path))
    assert len(store.open_store(str(tmp_path), rebuild=True).nights) == 3


def test_a_store_that_cannot_be_made_is_a_usage_error(tmp_path):
    write_history(tmp_path, throughputs(2))
    os.makedirs(store.store_path(str(tmp_path)))  # a directory where the store goes
    with pytest.raises(UsageError, match="cannot keep the history's store here"):
        store.open_store(str(tmp_path))


def test_a_root_without_runs_is_a_usage_error(tmp_path):
    os.makedirs(tmp_path / "notes")
    with pytest.raises(UsageError, match="no runs to judge"):
        store.open_store(str(tmp_path))
    with pytest.raises(UsageError, match="not a directory"):
        store.open_store(str(tmp_path / "missing"))


def test_a_killed_night_is_rebuilt_from_its_streams_and_an_empty_one_skipped(tmp_path):
    write_history(tmp_path, throughputs(2))
    killed = tmp_path / night_name(2)
    os.makedirs(killed)
    for name in ("events.jsonl", "timeseries.jsonl"):
        shutil.copy(os.path.join(SAMPLE_RUN, name), killed / name)
        os.utime(killed / name, (1, 1))  # an old night, not one still running
    os.makedirs(tmp_path / night_name(3))  # nothing in it at all
    loaded = store.open_store(str(tmp_path), now=2e9)
    names = {n.name: n for n in loaded.nights}
    assert names[night_name(2)].rebuilt and not os.path.exists(killed / "report.json")  # rebuilt in memory
    assert names[night_name(2)].series == names[night_name(1)].series  # no settings of its own: the night before's
    assert loaded.skipped == [(night_name(3), "no report and no streams")]
    assert any(w.startswith(f"{night_name(3)}: skipped") for w in loaded.warnings)


def test_a_pruned_night_keeps_its_figures(tmp_path):
    write_history(tmp_path, throughputs(3))
    store.open_store(str(tmp_path))
    shutil.rmtree(tmp_path / night_name(0))
    nights = store.open_store(str(tmp_path)).nights
    assert len(nights) == 3 and not nights[0].present and nights[1].present


# ---------------------------------------------------------------- change points


def _noise(n, sd=0.01, seed=5):
    return 100 * (1 + sd * np.random.default_rng(seed).standard_normal(n))


def test_a_step_is_found_at_its_night():
    v = _noise(40)
    v[30:] *= 0.9
    s = detect.segment(v, +1)
    assert [c.index for c in s.changes] == [30]
    assert s.changes[0].worse and s.changes[0].change_pct == pytest.approx(-10, abs=1.5) and s.regressed
    assert not detect.segment(v, -1).regressed  # lower is better (a latency): the same step is an improvement


def test_the_pelt_loaded_on_its_own_is_ruptures_kernelcpd():
    """detect calls ruptures' C function without importing the package (1 s of scipy): the same cuts as
    the public ``KernelCPD``, on steps, noise and short series."""
    import ruptures

    assert detect._ruptures_pelt() is not None  # the fast path is the one used here
    rng = np.random.default_rng(7)
    for n in (4, 6, 9, 40, 365):
        for shift in (0.0, 3.0, 8.0):
            x = rng.standard_normal(n)
            x[n // 2:] += shift
            pen = detect.PENALTY_PER_LOG_N * np.log(n)
            public = [b for b in ruptures.KernelCPD(kernel="linear", min_size=detect.MIN_SEGMENT, jump=1)
                      .fit(x.reshape(-1, 1)).predict(pen=pen) if b < n]
            assert detect._candidates(x) == public, (n, shift)


def test_aa_nights_are_quiet():
    for seed in range(5):
        assert detect.segment(_noise(100, seed=seed), +1).changes == []


def test_a_series_is_not_judged_before_it_has_enough_nights():
    v = _noise(detect.MIN_NIGHTS - 1)
    v[-2:] *= 0.5
    assert detect.segment(v, +1).changes == []


def _loaded(tmp_path):
    return store.open_store(str(tmp_path)).nights


def test_failed_nights_are_marked_and_never_a_baseline(tmp_path):
    values = throughputs(12)
    write_history(tmp_path, values)
    for i in (3, 7):  # two failed nights with absurd figures: not part of any segment
        write_night(tmp_path, i, throughput=10.0, success=False, exit_code=1)
    nights = _loaded(tmp_path)
    v = detect.judge_series(nights[0].series, nights, None)
    assert v.found == []
    used, _ = v.segments[("concurrent_load", "throughput_ops_per_s")]
    assert len(used) == 10 and all(not n.failed for n in used)
    assert [n.failed for n in nights].count(True) == 2


def test_a_breached_night_gives_no_figure_and_a_criterion_failure_only_its_component(tmp_path):
    write_history(tmp_path, throughputs(2))
    write_night(tmp_path, 2, exit_code=3)  # a breach: nothing of it is judged
    rep = make_report(3, components=("concurrent_load", "io_stress"), exit_code=1)
    rep["detailed_metrics"][1]["success"] = False
    os.makedirs(tmp_path / night_name(3))
    json.dump(rep, open(tmp_path / night_name(3) / "report.json", "w"))
    nights = _loaded(tmp_path)
    assert not nights[2].usable_for("concurrent_load")
    assert nights[3].usable_for("concurrent_load") and not nights[3].usable_for("io_stress")


def test_a_change_of_settings_starts_a_named_series(tmp_path):
    write_history(tmp_path, throughputs(8))
    write_night(tmp_path, 8, flow_params={"processing_time_base": 0.125})
    parts = detect.split_series(_loaded(tmp_path))
    assert [len(p[1]) for p in parts] == [8, 1]
    assert parts[0][2] is None and "processing_time_base: (none) → 0.125" in parts[1][2]


def test_the_newest_night_in_a_regressed_segment_and_new_only_once(tmp_path, capsys):
    write_history(tmp_path, throughputs(12, step_at=10))
    assert history_command(str(tmp_path), page=False) == 1
    out = capsys.readouterr().out
    assert re.search(rf"^NEW regression concurrent_load throughput_ops_per_s -1[45]\.\d% from {night_name(10)} ", out, re.M)
    assert "history: REGRESSED" in out
    write_night(tmp_path, 12, throughput=throughputs(13, step_at=10)[12])
    assert history_command(str(tmp_path), page=False) == 1  # still regressed: the exit code says so every night
    out = capsys.readouterr().out
    assert "NEW " not in out and "  change regression concurrent_load throughput_ops_per_s" in out


# ---------------------------------------------------------------- page and textfile


def test_the_page_has_a_chart_per_component_and_metric_and_links_each_night(tmp_path, capsys):
    write_history(tmp_path, throughputs(10, step_at=7), components=("concurrent_load", "io_stress"))
    write_night(tmp_path, 10, throughput=1.0, success=False, exit_code=1, components=("concurrent_load", "io_stress"))
    for i in range(11):
        (tmp_path / night_name(i) / "report.html").write_text("<html></html>")
    history_command(str(tmp_path), page=False)  # the store holds night 0 …
    shutil.rmtree(tmp_path / night_name(0))  # … which is then pruned: kept in the store, without a link
    capsys.readouterr()
    history_command(str(tmp_path), fmt="json")
    summary = json.loads(capsys.readouterr().out)
    page = (tmp_path / "history.html").read_text()
    cur = next(s for s in summary["series"] if s["current"])
    assert cur["figures_judged"] > 10
    panels = page.count("<svg class='trend'")
    assert panels == cur["figures_judged"]
    for comp in ("concurrent_load", "io_stress"):
        assert f"data-component='{comp}' data-metric='throughput_ops_per_s'" in page
    for i in range(1, 11):
        assert f"href='{night_name(i)}/report.html'" in page
    assert f"href='{night_name(0)}/" not in page and "directory gone; figures kept" in page
    assert page.count("class='failed'") == panels  # the failed night, drawn in every panel, marked
    assert "<script src" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_the_textfile_carries_the_latest_verdict(tmp_path, capsys):
    write_history(tmp_path, throughputs(12, step_at=10))
    prom = tmp_path / "history.prom"
    assert history_command(str(tmp_path), page=False, prom_textfile=str(prom)) == 1
    fams = parse_prom(prom.read_text())
    assert fams["loadgen_history_regressed"].samples[0].value == 1
    change = fams["loadgen_history_change_percent"].samples[0]
    assert change.labels["component"] == "concurrent_load" and change.labels["metric"] == "throughput_ops_per_s"
    assert change.value == pytest.approx(-15, abs=2)

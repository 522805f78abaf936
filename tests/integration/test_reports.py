"""Reports of real runs: junit.xml (schema), Prometheus textfile, report.html, compare, rebuild, nightly.

One small real run per module (``cli.main`` in process, ~5 s) feeds most
tests; ``test_nightly_*`` runs ``scripts/nightly.sh`` for real. The formats
built from report dicts without processes: ``tests/unit/test_report_formats.py``.
"""

import copy
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

from _helpers import ROOT, parse_prom, temp_leftovers
from loadgen import cli
from loadgen.report import rebuild
from loadgen.report import SUITE_BASENAME
from loadgen.streams import EVENTS, TIMESERIES

NIGHTLY = os.path.join(ROOT, "scripts", "nightly.sh")
REPORT_FILES = ("report.json", "summary.txt", "report.html", "junit.xml")


# ====================================================================== fixtures


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real concurrent_load run (1 s of load after its ~2 s baseline), with --prom-textfile."""
    base = tmp_path_factory.mktemp("run")
    run_dir, prom_path = str(base / "run"), str(base / "loadgen.prom")
    code = cli.main(["run", "concurrent_load", "--duration", "1s", "--seed", "1", "--max-cpu-percent", "100",
                     "--quiet", "--out", run_dir, "--prom-textfile", prom_path])
    assert code in (0, 1), code
    with open(os.path.join(run_dir, "report.json")) as f:
        report = json.load(f)
    return {"dir": run_dir, "prom": prom_path, "report": report, "code": code}


def copy_run(run, tmp_path, name="copy"):
    dst = str(tmp_path / name)
    shutil.copytree(run["dir"], dst)
    return dst


def cli_run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_usage_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("loadgen: error: ")
    assert "Traceback" not in err


# ====================================================================== the run directory


def test_a_run_writes_every_report_atomically(run):
    for name in REPORT_FILES:
        path = os.path.join(run["dir"], name)
        assert os.path.getsize(path) > 0, name
    assert temp_leftovers(run["dir"]) == []
    assert temp_leftovers(os.path.dirname(run["prom"])) == []


# ====================================================================== junit.xml


def test_junit_of_a_real_run_is_valid(run, schema):
    path = os.path.join(run["dir"], "junit.xml")
    schema.validate(path)
    import xml.etree.ElementTree as ET

    suites = ET.parse(path).getroot()
    names = [s.get("name") for s in suites.findall("testsuite")]
    assert names == ["loadgen.concurrent_load"]
    cases = [c.get("name") for c in suites.iter("testcase")]
    assert "success_rate > 0.7" in cases and "run" in cases


# ====================================================================== Prometheus textfile


def test_prom_textfile_of_a_real_run(run):
    with open(run["prom"]) as f:
        text = f.read()
    families = parse_prom(text)
    for name in ("loadgen_success_rate", "loadgen_throughput_ops_per_second", "loadgen_latency_p50_seconds",
                 "loadgen_latency_p99_seconds", "loadgen_peak_memory_bytes", "loadgen_breaches_total",
                 "loadgen_exit_code", "loadgen_last_run_timestamp_seconds"):
        assert name in families, name
        assert families[name].type == "gauge"
    (sample,) = families["loadgen_success_rate"].samples
    assert sample.labels == {"kind": "concurrent_load", "component": "concurrent_load"}
    assert 0 <= sample.value <= 1
    (code,) = families["loadgen_exit_code"].samples
    assert code.value == run["report"]["exit_code"] and code.labels == {"kind": "concurrent_load"}
    p99 = families["loadgen_latency_p99_seconds"].samples[0].value
    assert p99 == pytest.approx(run["report"]["latency_ms"]["p99"] / 1000, rel=1e-6)
    assert "loadgen_capacity_concurrency" not in families  # no capacity search in this scenario
    assert stat.S_IMODE(os.stat(run["prom"]).st_mode) == 0o644  # node_exporter runs as another user


# ====================================================================== report.html


def test_html_is_self_contained_with_charts(run):
    with open(os.path.join(run["dir"], "report.html"), encoding="utf-8") as f:
        page = f.read()
    assert page.count("<img class='chart'") >= 5  # throughput, latency, CPU, memory, stages
    assert page.count("src='data:image/png;base64,") == page.count("<img")
    for remote in ("http://", "https://", "src='//", "<link"):
        assert remote not in page, remote
    assert "Content-Security-Policy" in page and "success_rate &gt; 0.7" in page


# ====================================================================== compare


def test_compare_same_report_is_no_regression(run, capsys):
    code, out, err = cli_run(capsys, "compare", run["dir"], os.path.join(run["dir"], "report.json"))
    assert code == 0, out + err
    assert "no regression" in out and "p99 ms" in out and "REGRESSION" not in out


def test_compare_flags_regressions_by_direction(run, tmp_path, capsys):
    rep = copy.deepcopy(run["report"])
    d = rep["detailed_metrics"][0]
    d["latency_ms"]["p99"] = d["latency_ms"]["p99"] * 2  # worse
    d["throughput_ops_per_sec"] = d["throughput_ops_per_sec"] * 3  # better: not a regression
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(rep))
    code, out, _ = cli_run(capsys, "compare", run["dir"], str(worse), "--tolerance", "10%")
    assert code == 1
    lines = {ln.split()[1] + " " + ln.split()[2]: ln for ln in out.splitlines() if ln.startswith("concurrent_load")}
    assert "REGRESSION" in lines["p99 ms"] and "+100.0%" in lines["p99 ms"]
    assert "better" in lines["throughput ops/s"]
    # Reversed, the same change is an improvement in latency and a throughput regression.
    code, out, _ = cli_run(capsys, "compare", str(worse), run["dir"], "--tolerance", "60")
    assert code == 1 and "concurrent_load throughput ops/s" in next(ln for ln in out.splitlines()
                                                                   if ln.startswith("regressions ("))
    code, _, _ = cli_run(capsys, "compare", run["dir"], str(worse), "--tolerance", "150")
    assert code == 0


def _bad_inputs(run, tmp):
    good = os.path.join(run["dir"], "report.json")
    text = open(good).read()
    (tmp / "truncated.json").write_text(text[: len(text) // 2])
    (tmp / "empty.json").write_text("")
    (tmp / "list.json").write_text("[1, 2]")
    other = json.loads(text)
    other["schema_version"] = 999
    (tmp / "v999.json").write_text(json.dumps(other))
    suite = json.loads(text)
    suite["metadata"]["kind"] = "suite"
    os.makedirs(tmp / "suite_dir")
    (tmp / "suite_dir" / (SUITE_BASENAME + ".json")).write_text(json.dumps(suite))
    os.makedirs(tmp / "empty_dir")
    return {
        "missing": (str(tmp / "nope.json"), good),
        "truncated": (good, str(tmp / "truncated.json")),
        "empty": (str(tmp / "empty.json"), good),
        "not a report": (good, str(tmp / "list.json")),
        "schema": (good, str(tmp / "v999.json")),
        "suite vs scenario": (str(tmp / "suite_dir"), good),
        "dir without report": (str(tmp / "empty_dir"), good),
    }


def test_compare_bad_inputs_exit_2_with_one_line(run, tmp_path, capsys):
    cases = _bad_inputs(run, tmp_path)
    expected = {"missing": "no such file", "truncated": "truncated", "empty": "empty", "not a report": "not a loadgen",
                "schema": "schema", "suite vs scenario": "suite against a single scenario",
                "dir without report": "no report.json"}
    for what, (a, b) in cases.items():
        code, out, err = cli_run(capsys, "compare", a, b)
        assert_one_line_usage_error(code, err)
        assert expected[what] in err, (what, err)
    code, _, err = cli_run(capsys, "compare", run["dir"], run["dir"], "--tolerance", "-5")
    assert_one_line_usage_error(code, err)


# ====================================================================== rebuild


def _truncate_like_a_killed_master(run_dir):
    """Reports gone, no 'end' nor 'component' event, the last timeseries line torn in half."""
    for name in REPORT_FILES:
        os.unlink(os.path.join(run_dir, name))
    ev = os.path.join(run_dir, EVENTS)
    kept = [ln for ln in open(ev).read().splitlines()
            if '"name":"end"' not in ln and '"type":"component"' not in ln]
    with open(ev, "w") as f:
        f.write("\n".join(kept) + "\n")
    ts = os.path.join(run_dir, TIMESERIES)
    lines = open(ts).read().splitlines()
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    with open(ts, "w") as f:
        f.write("\n".join(lines))  # no newline: the writer died mid-line


def test_rebuild_a_killed_run(run, tmp_path, capsys, schema):
    d = copy_run(run, tmp_path)
    _truncate_like_a_killed_master(d)
    code, out, err = cli_run(capsys, "report", d)
    assert code == 0, err
    assert "rebuilt" in out
    for name in REPORT_FILES:
        assert os.path.getsize(os.path.join(d, name)) > 0, name
    assert temp_leftovers(d) == []
    rep = json.load(open(os.path.join(d, "report.json")))
    assert rep["schema_version"] == run["report"]["schema_version"]
    assert rep["metadata"]["rebuilt_from_streams"] is True
    assert rep["metadata"]["kind"] == "concurrent_load"
    assert rep["exit_code"] == 1
    (comp,) = rep["detailed_metrics"]
    assert comp["test_name"] == "concurrent_load" and not comp["success"]
    assert comp["stop_reason"].startswith(rebuild.KILLED_REASON)
    acc = comp["accounting"]
    assert acc["dispatched"] == acc["succeeded"] + acc["failed"] + acc["timed_out"] + acc["crashed"]
    assert 0 < acc["succeeded"] <= run["report"]["accounting"]["succeeded"]
    assert [c["criterion"] for c in comp["criteria"]] == ["success_rate > 0.7"]
    lat, real = rep["latency_ms"], run["report"]["latency_ms"]
    assert lat["p50"] is not None and lat["p50"] <= lat["p99"] <= lat["max"] <= real["max"] + 1
    assert lat["p50"] == pytest.approx(real["p50"], rel=0.5)  # approximate, not invented
    schema.validate(os.path.join(d, "junit.xml"))
    assert "master killed" in open(os.path.join(d, "summary.txt")).read()
    html = open(os.path.join(d, "report.html")).read()
    assert "Rebuilt from the run" in html and html.count("<img class='chart'") >= 4
    # compare reads a rebuilt report like any other
    code, out, _ = cli_run(capsys, "compare", run["dir"], d, "--tolerance", "1000")
    assert code == 1 and "status" in out  # PASSED → FAILED is a regression whatever the tolerance


def test_rebuild_a_finished_run_is_exact(run, tmp_path, capsys):
    d = copy_run(run, tmp_path)
    for name in REPORT_FILES:
        os.unlink(os.path.join(d, name))
    assert cli_run(capsys, "report", d)[0] == 0
    rep = json.load(open(os.path.join(d, "report.json")))
    real = run["report"]
    assert rep["exit_code"] == real["exit_code"]
    assert rep["accounting"] == real["accounting"]
    assert rep["latency_ms"] == real["latency_ms"]
    assert rep["detailed_metrics"][0]["criteria"] == real["detailed_metrics"][0]["criteria"]
    assert rep["metadata"]["approximate_components"] == []


def test_rebuild_streams_without_scenario_events(run, tmp_path, capsys):
    d = copy_run(run, tmp_path)
    ev = os.path.join(d, EVENTS)
    kept = [ln for ln in open(ev).read().splitlines() if '"type":"scenario"' not in ln and '"type":"component"' not in ln]
    open(ev, "w").write("\n".join(kept) + "\n")
    os.unlink(os.path.join(d, "report.json"))
    assert cli_run(capsys, "report", d)[0] == 0
    rep = json.load(open(os.path.join(d, "report.json")))
    # One component per phase; every phase ended, so the run's exit code stands.
    assert len(rep["detailed_metrics"]) == 2
    assert rep["exit_code"] == 0
    assert rep["accounting"]["dispatched"] == rep["accounting"]["succeeded"] + rep["accounting"]["failed"]


def test_rebuild_bad_input_exit_2(run, tmp_path, capsys):
    code, _, err = cli_run(capsys, "report", str(tmp_path / "nope"))
    assert_one_line_usage_error(code, err)
    os.makedirs(tmp_path / "empty")
    code, _, err = cli_run(capsys, "report", str(tmp_path / "empty"))
    assert_one_line_usage_error(code, err)
    assert "events.jsonl" in err
    d = copy_run(run, tmp_path)
    lines = open(os.path.join(d, EVENTS)).read().splitlines()
    lines[1] = lines[1][:10]  # corruption in the middle is not a torn last line
    open(os.path.join(d, EVENTS), "w").write("\n".join(lines) + "\n")
    code, _, err = cli_run(capsys, "report", d)
    assert_one_line_usage_error(code, err)
    assert "line 2" in err


# ====================================================================== nightly


def _nightly(root, timeout=120):
    env = dict(os.environ, LOADGEN_ROOT=str(root), LOADGEN_KEEP="2", LOADGEN_PROFILE="ci",
               LOADGEN_PYTHON=sys.executable,
               LOADGEN_ARGS="--only concurrent_load --max-cpu-percent 100 --seed 3",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(["bash", NIGHTLY], env=env, capture_output=True, text=True, timeout=timeout)


def _runs(root):
    return sorted(n for n in os.listdir(root) if n[0].isdigit())


@pytest.mark.slow
def test_nightly_twice_links_judges_and_prunes(tmp_path):
    root = tmp_path / "nightly"
    for old in ("20000101T000000Z", "20000102T000000Z"):  # older runs without reports: removed when pruned
        os.makedirs(root / old)
    first = _nightly(root)
    assert first.returncode in (0, 1, 3), first.stderr
    assert _runs(root)[0] == "20000102T000000Z" and len(_runs(root)) == 2
    run1 = os.readlink(root / "latest")
    assert "history: no verdict yet" in (root / run1 / "history.txt").read_text() or first.returncode

    second = _nightly(root)
    run2 = os.readlink(root / "latest")
    assert run2 != run1 and not os.path.isabs(run2)
    assert _runs(root) == sorted([run1, run2])  # pruned to LOADGEN_KEEP=2 (the empty old run went)
    verdict = (root / run2 / "history.txt").read_text()
    assert "2 nights, 1 series" in verdict  # tonight judged against the history kept under the root
    assert (root / "history.sqlite").exists() and (root / "history.html").exists()
    suite_rc = json.load(open(root / run2 / (SUITE_BASENAME + ".json")))["exit_code"]
    history_rc = 1 if re.search(r"^history: (REGRESSED|FAILED)", verdict, re.M) else 0
    assert second.returncode == (suite_rc or history_rc)
    if second.returncode == 0:
        assert second.stdout == ""  # quiet for cron mail
    else:
        assert second.stdout.startswith("nightly: ")
    assert not os.path.exists(root / ".latest.tmp")


def test_nightly_rebuilds_the_reports_of_a_killed_suite(run, tmp_path):
    """A suite whose master is SIGKILLed (exit 137) leaves streams only; nightly rebuilds its reports."""
    killed = copy_run(run, tmp_path, "killed")
    _truncate_like_a_killed_master(killed)
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
if [ "$1 $2 $3" = "-m loadgen suite" ]; then
    while [ "$1" != "--out" ]; do shift; done
    cp {killed}/{EVENTS} {killed}/{TIMESERIES} "$2"/
    exit 137
fi
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    root = tmp_path / "nightly"
    env = dict(os.environ, LOADGEN_ROOT=str(root), LOADGEN_PYTHON=str(fake),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run(["bash", NIGHTLY], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 137, p.stdout + p.stderr
    assert p.stdout.startswith("nightly: ") and "suite exit 137" in p.stdout
    latest = root / "latest"
    rep = json.load(open(latest / "report.json"))
    assert rep["metadata"]["rebuilt_from_streams"] and rep["exit_code"] == 1
    assert (latest / "report.html").exists() and (latest / "junit.xml").exists()
    assert "rebuilding it from the streams" in (latest / "nightly.log").read_text()


def test_nightly_refuses_to_overlap(tmp_path):
    root = tmp_path / "nightly"
    os.makedirs(root)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p = _nightly(root, timeout=30)
    assert p.returncode == 75
    assert "another run holds" in p.stderr
    assert _runs(root) == []


def test_nightly_script_is_clean_shell():
    assert subprocess.run(["bash", "-n", NIGHTLY]).returncode == 0
    if shutil.which("shellcheck"):
        p = subprocess.run(["shellcheck", NIGHTLY], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout

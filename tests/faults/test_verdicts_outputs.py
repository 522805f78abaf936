"""Issue #23's verdict table, outputs' rows: the default verdict (row 2), the claim of ``--out``
(row 10), the API's options (row 11), ``compare``'s ranges (row 12) and the console / nightly mail
naming each failed component. Real CLI, real processes; each case asserts the exit code, the one
line, and where a report is due its counts. Each failed on main for the reason in its row."""

import copy
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from _helpers import ROOT, TESTS

SAMPLE = os.path.join(TESTS, "data", "sample_run", "report.json")
NIGHTLY = os.path.join(ROOT, "scripts", "nightly.sh")
QUICK = ("--duration", "1s", "--workers", "1", "--max-cpu-percent", "100")
SERVICE_DOWN = "def op(inputs=None):\n    raise ConnectionRefusedError('service down')\n"


def _report(path):
    with open(path) as f:
        return json.load(f)


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- row 2: the default verdict

ROW2 = [
    # id, extra args, exit, the FAIL (or PASS) line, the criteria rows' texts and default marks
    ("no criterion: the default one fails it", (), 1,
     "FAIL load — error_rate == 0 (default) failed (measured 1); every operation failed: none succeeded",
     [("error_rate == 0", True)]),
    ("--quiet still names the failed component", ("--quiet",), 1,
     "FAIL load — error_rate == 0 (default) failed (measured 1); every operation failed: none succeeded",
     [("error_rate == 0", True)]),
    ("a criterion of the user's that passes: none succeeded still fails it", ("--criterion", "crashed == 0"), 1,
     "FAIL load — every operation failed: none succeeded", [("crashed == 0", False)]),
]


@pytest.mark.parametrize("args, code, line, criteria", [c[1:] for c in ROW2], ids=[c[0] for c in ROW2])
def test_row2_a_run_of_your_own_target_has_a_default_verdict(cli, tmp_path, args, code, line, criteria):
    (tmp_path / "t.py").write_text(SERVICE_DOWN)
    got, out, err = cli.run("run", "--target", "t.py:op", *QUICK, "--out", "r", *args)
    assert got == code, out + err
    lines = out.splitlines()
    assert line in lines, out
    assert lines[-1].startswith("loadgen: 0/1 passed (failed: load), exit 1"), out
    if "--quiet" in args:
        assert lines == [line, lines[-1]], out  # quiet: the failed component and the summary line only
    d = _report(tmp_path / "r" / "report.json")["detailed_metrics"][0]
    acc = d["accounting"]
    assert acc["succeeded"] == 0 and acc["failed"] == acc["dispatched"] > 0, acc
    assert [(c["criterion"], bool(c.get("default"))) for c in d["criteria"]] == criteria
    marked = any(default for _, default in criteria)
    summary = (tmp_path / "r" / "summary.txt").read_text()
    assert ("error_rate == 0 (default)" in summary) == marked
    assert ("error_rate == 0 (default)" in (tmp_path / "r" / "report.html").read_text()) == marked
    assert "FAILED COMPONENTS" in summary and line in summary


def test_row2_the_default_passes_a_healthy_target_and_list_shows_it(cli, tmp_path):
    code, out, err = cli.run("run", "--target", "_targets:noop", *QUICK, "--out", "r")
    assert code == 0, out + err
    assert "PASS load — error_rate == 0 (default)" in out.splitlines()
    d = _report(tmp_path / "r" / "report.json")["detailed_metrics"][0]
    assert d["criteria"][0]["default"] is True and d["criteria"][0]["passed"] and d["accounting"]["succeeded"] > 0
    code, out, err = cli.run("list")
    assert code == 0 and "error_rate == 0 with your" in out, out + err


# ---------------------------------------------------------------- row 10: one --out, one run


def _pool_starts(run_dir):
    with open(os.path.join(run_dir, "events.jsonl")) as f:
        return sum(1 for x in f if json.loads(x).get("name") == "pool_start")


def test_row10_two_runs_at_once_into_one_out_one_runs_the_other_exits_2(cli, tmp_path):
    runs = [cli.start("run", "--target", "_targets:noop", *QUICK, "--out", "r") for _ in range(2)]
    results = [(p.wait(60), *p.communicate()) for p in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    (_, out, err), = [r for r in results if r[0] == 2]
    assert _one_error_line(err).startswith("loadgen: error: --out 'r' already holds a run (events.jsonl"), err
    assert out == ""  # refused before any load: no verdict, no operations
    r = _report(tmp_path / "r" / "report.json")
    assert r["accounting"]["succeeded"] == r["accounting"]["dispatched"] > 0
    assert _pool_starts(tmp_path / "r") == 1  # one run's streams, not two interleaved


def test_row10_two_runs_at_once_without_out_get_a_directory_each(cli, tmp_path):
    runs = [cli.start("run", "--target", "_targets:noop", *QUICK, "--quiet") for _ in range(2)]
    results = [(p.wait(60), *p.communicate()) for p in runs]
    assert [code for code, _, _ in results] == [0, 0], results
    dirs = sorted(os.listdir(tmp_path / "loadgen-results"))
    assert len(dirs) == 2, dirs
    for d in dirs:
        assert _pool_starts(tmp_path / "loadgen-results" / d) == 1
        assert os.path.isfile(tmp_path / "loadgen-results" / d / "report.json")


# ---------------------------------------------------------------- row 11: what the API takes, it does


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_row11_the_api_serves_metrics_and_writes_the_textfile(tmp_path):
    from loadgen import api
    from loadgen.config import ResourceThresholds

    port, scraped, done = _free_port(), [], threading.Event()

    def scrape():
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
                    scraped.append(r.read().decode())
            except OSError:
                pass
            time.sleep(0.1)

    t = threading.Thread(target=scrape)
    t.start()
    try:
        rep = api.run("load", target="_targets:sleep_ms", duration="2s", workers=1, out=str(tmp_path / "r"),
                      thresholds=ResourceThresholds(max_cpu_percent=100), metrics_port=port,
                      prom_textfile=str(tmp_path / "loadgen.prom"))
    finally:
        done.set()
        t.join()
    assert rep.exit_code == 0
    assert any("loadgen_operations_started_total" in s for s in scraped), scraped[-1:]
    prom = (tmp_path / "loadgen.prom").read_text()
    assert "loadgen_success_rate" in prom
    with pytest.raises(OSError):  # served during the run only
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1)


@pytest.mark.parametrize("key, value, says", [
    ("log_level", "DEBUG", "logging.getLogger('loadgen')"),
    ("progress_interval", "1s", "progress=callable"),
    ("quiet", True, "prints nothing"),
    ("shards", 2, "loadgen.fleet.run"),
    ("parallel", True, "loadgen.plan.run_config"),
])
def test_row11_the_api_refuses_what_it_cannot_honour_before_any_load(tmp_path, key, value, says):
    from loadgen import api
    from loadgen.errors import UsageError

    with pytest.raises(UsageError) as e:
        api.run("load", target="_targets:noop", duration="1s", out=str(tmp_path / "r"), **{key: value})
    assert f"run({key}=...): not taken by the API" in str(e.value) and says in str(e.value)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- row 12: compare reads measurements only


def _spoil(d, path, value):
    *parents, last = path
    for k in parents:
        d = d[k]
    d[last] = value


ROW12 = [
    ("success rate 1e308", ("performance_metrics", "success_rate"), 1e308,
     "performance_metrics.success_rate = 1e+308, not a rate in 0–1"),
    ("p99 -1e308", ("latency_ms", "p99"), -1e308, "latency_ms.p99 = -1e+308, not a finite number ≥ 0"),
    ("a negative count", ("accounting", "failed"), -5, "accounting.failed = -5, not a whole number ≥ 0"),
]


@pytest.mark.parametrize("side", ["current", "baseline"])
@pytest.mark.parametrize("path, value, says", [c[1:] for c in ROW12], ids=[c[0] for c in ROW12])
def test_row12_compare_refuses_figures_out_of_range(cli, tmp_path, side, path, value, says):
    report = _report(SAMPLE)
    bad = copy.deepcopy(report)
    _spoil(bad["detailed_metrics"][0], path, value)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    shutil.copy(SAMPLE, tmp_path / "good.json")
    args = ("good.json", "bad.json") if side == "current" else ("bad.json", "good.json")
    code, out, err = cli.run("compare", *args)
    assert code == 2, out + err
    assert _one_error_line(err) == f"loadgen: error: bad.json: not a loadgen report (detailed_metrics[0].{says})"
    assert out == ""


# ---------------------------------------------------------------- console and the nightly mail


def test_nightly_mail_names_each_failed_component_with_its_criteria(tmp_path):
    env = dict(os.environ, LOADGEN_ROOT=str(tmp_path / "nightly"), LOADGEN_PROFILE="ci",
               LOADGEN_PYTHON=sys.executable,
               LOADGEN_ARGS="--only concurrent_load --max-cpu-percent 100 --seed 3 --flow-param failure_rate=0.95",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    p = subprocess.run(["bash", NIGHTLY], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    failed = [x for x in lines if x.startswith("FAIL ")]
    assert len(failed) == 1 and failed[0].startswith(
        "FAIL concurrent_load — success_rate > 0.7 (default) failed (measured 0.0"), p.stdout
    assert any(x.startswith("loadgen: 0/1 passed (failed: concurrent_load), exit 1") for x in lines), p.stdout

"""``loadgen history`` through the real CLI, and ``scripts/nightly.sh`` judging nights against the history.

The roots are fabricated run directories (the history reads report.json only) except one real short run
that records ``--label``. nightly.sh runs with a stand-in Python whose ``-m loadgen suite`` writes a
fabricated report (the suite's figures are the test's choice) and that runs the real loadgen otherwise.
"""

import json
import os
import re
import sqlite3
import subprocess
import sys

import pytest

from _helpers import ROOT
from _nights import make_report, night_name, throughputs, write_history, write_night
from loadgen.history.store import SCHEMA_VERSION, STORE_FILE

NIGHTLY = os.path.join(ROOT, "scripts", "nightly.sh")


def one_line_error(code, out, err):
    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith("loadgen: error: ") and "Traceback" not in err, err
    return err


def test_history_cli_flags_a_lasting_regression_and_writes_page_and_json(cli, tmp_path):
    root = write_history(tmp_path / "root", throughputs(12, step_at=10))
    code, out, err = cli.run("history", root)
    assert code == 1, out + err
    assert re.search(rf"^NEW regression concurrent_load throughput_ops_per_s -1[45]\.\d% from {night_name(10)} ",
                     out, re.M), out
    assert os.path.exists(os.path.join(root, "history.html")) and os.path.exists(os.path.join(root, STORE_FILE))
    code, out, err = cli.run("history", root, "--format", "json", "--no-page")
    summary = json.loads(out)
    assert code == 1 and summary["verdict"] == "regressed" and summary["nights"] == 12
    reg = summary["series"][0]["regressions"][0]
    assert (reg["component"], reg["metric"], reg["night"], reg["new"]) == (
        "concurrent_load", "throughput_ops_per_s", night_name(10), True)  # new: tonight's night revealed it


def test_history_cli_quiet_history_exits_0(cli, tmp_path):
    root = write_history(tmp_path / "root", throughputs(10))
    code, out, err = cli.run("history", root)
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("history: ok: ") and "NEW" not in out


@pytest.mark.parametrize("case", ["empty root", "missing root", "newer store", "no label matches",
                                  "prom folder missing", "bad format"])
def test_history_cli_bad_input_is_one_line_and_exit_2(cli, tmp_path, case):
    root = tmp_path / "root"
    os.makedirs(root)
    args = ["history", str(root)]
    if case == "missing root":
        args = ["history", str(tmp_path / "nothing")]
    elif case == "empty root":
        os.makedirs(root / night_name(0))  # a run directory with nothing in it
    else:
        write_history(root, throughputs(3))
    if case == "newer store":
        con = sqlite3.connect(root / STORE_FILE)
        with con:
            con.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);")
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION + 5),))
        con.close()
    elif case == "no label matches":
        args += ["--label", "release-*"]
    elif case == "prom folder missing":
        args += ["--prom-textfile", str(tmp_path / "no" / "h.prom")]
    elif case == "bad format":
        args += ["--format", "yaml"]
    err = one_line_error(*cli.run(*args))
    expected = {"empty root": "no runs to judge", "missing root": "not a directory",
                "newer store": "store written by a newer loadgen", "no label matches": "no night with a label",
                "prom folder missing": "does not exist", "bad format": "invalid choice"}[case]
    assert expected in err


def test_history_cli_rebuilds_a_corrupt_store_with_a_warning(cli, tmp_path):
    root = write_history(tmp_path / "root", throughputs(4))
    (tmp_path / "root" / STORE_FILE).write_bytes(b"\0garbage" * 512)
    code, out, err = cli.run("history", root)
    assert code == 0, out + err
    assert "corrupt store" in err and "rebuilt from the run directories" in err and "Traceback" not in err


def test_a_real_run_records_its_label_and_joins_the_history(cli, tmp_path):
    root = tmp_path / "root"
    code, out, err = cli.run("run", "--target", os.path.join(ROOT, "tests", "_targets.py") + ":noop",
                             "--duration", "1s", "--max-cpu-percent", "100", "--quiet", "--label", "abc123",
                             "--out", str(root / "20260101T010000Z"))
    assert code == 0, out + err
    rep = json.load(open(root / "20260101T010000Z" / "report.json"))
    assert rep["metadata"]["label"] == "abc123"
    code, out, err = cli.run("history", str(root), "--format", "json", "--label", "abc*")
    summary = json.loads(out)
    assert code == 0 and summary["verdict"] == "baseline" and summary["newest"]["label"] == "abc123", out + err


# ====================================================================== nightly.sh on the history


def _stand_in_python(tmp_path):
    """A Python whose ``-m loadgen suite … --out DIR`` writes $NIGHT_REPORT (a report JSON) into DIR and exits
    with its exit_code; anything else runs the real loadgen."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
if [ "$1 $2 $3" = "-m loadgen suite" ]; then
    while [ "$1" != "--out" ]; do shift; done
    mkdir -p "$2" && cp "$NIGHT_REPORT" "$2/report.json"
    echo "loadgen: suite (stand-in) done"
    exit "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["exit_code"])' "$NIGHT_REPORT")"
fi
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    return str(fake)


def _nightly(tmp_path, root, report, keep="20"):
    path = tmp_path / "tonight.json"
    path.write_text(json.dumps(report))
    env = dict(os.environ, LOADGEN_ROOT=str(root), LOADGEN_KEEP=keep, LOADGEN_PYTHON=_stand_in_python(tmp_path),
               NIGHT_REPORT=str(path), PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(["bash", NIGHTLY], env=env, capture_output=True, text=True, timeout=60)


def _tonight(i, **kw):
    rep = make_report(i, **kw)
    rep["metadata"]["ended_at"] = 2e9 + i  # after every fabricated night: tonight is the newest
    return rep


def test_nightly_mails_a_new_change_once_then_stays_silent_while_it_lasts(tmp_path):
    root = tmp_path / "nightly"
    values = throughputs(13, step_at=10)
    write_history(root, values[:11])  # ten nights at the old level, then the first slow one
    first = _nightly(tmp_path, root, _tonight(11, throughput=values[11]))
    assert first.returncode == 1, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("nightly: ") and "history exit 1" in lines[0]
    assert any(re.match(rf"NEW regression concurrent_load throughput_ops_per_s -1[45]\.\d% from {night_name(10)} ", x)
               for x in lines), first.stdout
    assert any(x.startswith("history: REGRESSED") for x in lines)
    second = _nightly(tmp_path, root, _tonight(12, throughput=values[12]))
    assert second.returncode == 1 and second.stdout == "", second.stdout  # still regressed: said once, not nightly
    latest = os.readlink(root / "latest")
    assert "history: REGRESSED" in (root / latest / "history.txt").read_text()


def test_nightly_is_silent_on_a_quiet_night_and_says_one_line_on_a_new_series(tmp_path):
    root = tmp_path / "nightly"
    write_history(root, throughputs(8))
    quiet = _nightly(tmp_path, root, _tonight(8, throughput=throughputs(9)[8]))
    assert quiet.returncode == 0 and quiet.stdout == "", quiet.stdout + quiet.stderr
    changed = _nightly(tmp_path, root, _tonight(9, flow_params={"processing_time_base": 0.125}))
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert len(changed.stdout.splitlines()) == 1, changed.stdout
    assert re.match(r"nightly: \S+ new series: .*processing_time_base: \(none\) → 0\.125", changed.stdout)


def test_nightly_mails_a_failed_suite_and_keeps_old_nights_reports(tmp_path):
    root = tmp_path / "nightly"
    write_history(root, throughputs(4))
    for i in range(4):
        (root / night_name(i) / "report.html").write_text("<html></html>")
        (root / night_name(i) / "events.jsonl").write_text("")
    p = _nightly(tmp_path, root, _tonight(4, success=False, exit_code=1), keep="2")
    assert p.returncode == 1
    assert p.stdout.startswith("nightly: ") and "suite exit 1" in p.stdout
    assert "history: FAILED" in p.stdout
    for i in range(3):  # beyond LOADGEN_KEEP=2: slimmed to the reports the history reads
        assert sorted(os.listdir(root / night_name(i))) == ["report.json"]
    assert "report.html" in os.listdir(root / night_name(3))
    code = subprocess.run([sys.executable, "-m", "loadgen", "history", str(root), "--rebuild", "--format", "json",
                           "--no-page"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT)).stdout
    assert json.loads(code)["nights"] == 5  # nothing lost to the pruning

"""A weighted mix of operations in one run: exact weights, each op's own figures in every report format
and in criteria, per-op arguments from a plan, and bad mixes refused before anything runs."""

import json

from _helpers import parse_prom, write


def test_a_mix_holds_its_weights_and_reports_each_op(cli, tmp_path):
    n = 3000
    code, out, err = cli.run(
        "run", "--target", "_targets:login@1", "--target", "_targets:browse@9", "--operations", str(n),
        "--concurrency", "4", "--workers", "2", "--criterion", "p95_ms{op=login} >= 4",
        "--criterion", "operations{op=browse} == 2700", "--criterion", "p99_ms{op=browse} > 1000",
        "--out", "r", "--prom-textfile", str(tmp_path / "m.prom"), "--quiet")
    assert code == 1, err  # browse is far faster than 1 s
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (d,) = report["detailed_metrics"]
    assert {k: v["operations"] for k, v in d["ops"].items()} == {"login": 300, "browse": 2700}
    assert d["accounting"]["succeeded"] == n
    assert d["ops"]["login"]["latency_ms"]["p50"] >= 4 > d["ops"]["browse"]["latency_ms"]["p99"]
    assert [c["passed"] for c in d["criteria"]] == [True, True, False]
    assert report["metadata"]["run"]["target"]["ops"][1] == {"name": "browse", "target": "_targets:browse",
                                                             "weight": 9, "args": {}}
    text = (tmp_path / "r" / "summary.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line.startswith("load ") and " %" in line]
    assert [r[1:4] for r in rows] == [["login", "1", "300"], ["browse", "9", "2700"]]
    assert "id='ops'" in (tmp_path / "r" / "report.html").read_text()
    assert 'name="op.login.operations" value="300"' in (tmp_path / "r" / "junit.xml").read_text()
    fams = parse_prom((tmp_path / "m.prom").read_text())
    assert {s.labels["op"]: s.value for s in fams["loadgen_op_operations"].samples} == {"login": 300, "browse": 2700}


def test_a_plans_ops_take_their_own_args_and_name_their_errors(cli, tmp_path):
    (tmp_path / "shop.py").write_text(
        "calls = 0\n"
        "def browse(inputs=None, fail_every=0):\n"
        "    global calls\n"
        "    calls += 1\n"
        "    if fail_every and calls % fail_every == 0:\n"
        "        raise LookupError('page not found')\n"
        "def login(inputs=None, user='x'):\n"
        "    assert user == 'ada'\n")
    write(tmp_path, """
name = "shop"
[[scenario]]
name = "load"
operations = 1000
concurrency = 2
workers = 1
criteria = ["success_rate{op=login} == 1", "error_rate{op=pages} > 0.09"]
[[scenario.ops]]
target = "shop.py:login"
weight = 1
args = {user = "ada"}
[[scenario.ops]]
target = "shop.py:browse"
name = "pages"
weight = 4
args = {fail_every = 10}
""")
    code, out, err = cli.run("run", "--config", "plan.toml", "--out", "r", "--quiet")
    assert code == 0, err + out
    (d,) = json.loads((tmp_path / "r" / "report.json").read_text())["detailed_metrics"]
    assert d["ops"]["login"]["operations"] == 200 and d["ops"]["login"]["failed"] == 0
    assert d["ops"]["pages"] | {"latency_ms": None} == {
        "target": str(tmp_path / "shop.py") + ":browse", "weight": 4, "operations": 800, "succeeded": 720,
        "failed": 80, "success_rate": 0.9, "throughput": d["ops"]["pages"]["throughput"], "latency_ms": None,
        "errors": {"LookupError": 80}}


def test_bad_mixes_are_one_line_and_exit_2(cli, tmp_path):
    for args, says in [
        (["--target", "_targets:login@1", "--target", "_targets:nope@2"], "has no attribute 'nope'"),
        (["--target", "_targets:login@1", "--target", "_targets:login@2"], "op name 'login' is already op 0's"),
        (["--target", "_targets:login@0"], "weight must be a whole number from 1 to 10000"),
    ]:
        code, out, err = cli.run("run", *args, "--duration", "1s", "--out", "r")
        assert code == 2 and says in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "r").exists()

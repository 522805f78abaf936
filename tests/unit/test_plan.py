"""TOML plans: precedence (file < LOADGEN_* < flags), validate and its errors, abort_on_fail; the
scenario loop is stubbed (real runs of plans: ``tests/integration/test_plan_runs.py``)."""

import os

import pytest

from _helpers import write
from loadgen import api
from loadgen.abort import MIN_OPERATIONS, EarlyJudge, abortable
from loadgen.cli import main
from loadgen.criteria import Criterion
from loadgen.options import BY_DEST, ENV

FAKE_REPORT = {
    "executive_summary": {"passed_components": 0, "total_components": 0},
    "latency_ms": {"p50": None, "p99": None},
    "accounting": {k: 0 for k in ("dispatched", "succeeded", "failed", "timed_out", "crashed", "dropped")},
    "component_results": [],
}


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Stub the scenario loop: capture what a run would run, run nothing."""
    monkeypatch.chdir(tmp_path)
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)
    calls = []

    def fake(scs, session, kind, command=None):
        calls.append({"scenarios": list(scs), "session": session, "kind": kind})
        return api.Report(dict(FAKE_REPORT), [], 0, session.run_dir)

    monkeypatch.setattr(api, "run_scenarios", fake)
    return calls


BASE = """
    seed = 1
    target = "_targets:sleep_ms"
    [target_args]
    ms = 3
    [thresholds]
    max_memory_mb = 2048
    max_cpu_percent = 100

    [[scenario]]
    name = "concurrent_load"
    concurrency = 4
    duration = "2s"
    criteria = ["success_rate > 0.9"]
    [scenario.thresholds]
    max_concurrent_operations = 40

    [[scenario]]
    name = "sustained_load"
    label = "steady"
    rate = 50
    duration = 3
"""


def entries(call):
    return [(e.label, e.session_for(call["session"])) for e in call["scenarios"]]


# ---------------------------------------------------------------------------- precedence


def test_file_values_reach_each_scenario(captured, tmp_path):
    assert main(["run", "--config", write(tmp_path, BASE), "--out", "o"]) == 0
    (call,) = captured
    assert call["kind"] == "plan plan"
    (l1, s1), (l2, s2) = entries(call)
    assert (l1, l2) == ("concurrent_load", "steady")
    assert s1.settings.get("concurrency") == 4 and s1.settings.get("duration") == 2.0 and s1.settings.get("rate") is None
    assert [str(c) for c in s1.settings.get("criteria")] == ["success_rate > 0.9"]
    assert s2.settings.get("rate") == 50.0 and s2.settings.get("concurrency") is None and s2.settings.get("duration") == 3.0
    assert s1.target.ref == "_targets:sleep_ms" and s1.target.kwargs == {"ms": 3} and s1.target.seed == 1
    # tables merge key by key: the scenario's thresholds over the top level's
    assert (s1.thresholds.max_memory_mb, s1.thresholds.max_concurrent_operations) == (2048, 40)
    assert (s2.thresholds.max_memory_mb, s2.thresholds.max_concurrent_operations) == (2048, 50)
    assert os.path.abspath(call["session"].run_dir) == str(tmp_path / "o")


def test_environment_overrides_file_and_flags_override_environment(captured, tmp_path, monkeypatch):
    plan = write(tmp_path, BASE)
    monkeypatch.setenv("LOADGEN_DURATION", "5s")
    monkeypatch.setenv("LOADGEN_SEED", "2")
    monkeypatch.setenv("LOADGEN_MAX_MEMORY_MB", "3000")
    monkeypatch.setenv("LOADGEN_OUT", "from-env")
    monkeypatch.setenv("LOADGEN_CRITERIA", "p99_ms < 100; error_rate < 0.5")
    assert main(["run", "--config", plan]) == 0
    (_, s1), (_, s2) = entries(captured[-1])
    assert s1.settings.get("duration") == s2.settings.get("duration") == 5.0
    assert s1.target.seed == 2 and captured[-1]["session"].target.seed == 2
    assert s1.thresholds.max_memory_mb == 3000 and s1.thresholds.max_concurrent_operations == 40
    assert [str(c) for c in s2.settings.get("criteria")] == ["p99_ms < 100", "error_rate < 0.5"]
    assert os.path.abspath(captured[-1]["session"].run_dir) == str(tmp_path / "from-env")

    assert main(["run", "--config", plan, "--duration", "7s", "--seed", "3", "--max-memory-mb", "4000",
                 "--out", "from-cli", "--criterion", "p50_ms < 9"]) == 0
    (_, s1), _ = entries(captured[-1])
    assert s1.settings.get("duration") == 7.0 and s1.target.seed == 3 and s1.thresholds.max_memory_mb == 4000
    assert [str(c) for c in s1.settings.get("criteria")] == ["p50_ms < 9"]
    assert os.path.abspath(captured[-1]["session"].run_dir) == str(tmp_path / "from-cli")


def test_a_higher_level_load_model_replaces_the_lower_one(captured, tmp_path, monkeypatch):
    plan = write(tmp_path, BASE)
    monkeypatch.setenv("LOADGEN_CONCURRENCY", "6")
    assert main(["run", "--config", plan]) == 0
    (_, s1), (_, s2) = entries(captured[-1])
    assert (s1.settings.get("concurrency"), s1.settings.get("rate")) == (6, None)
    assert (s2.settings.get("concurrency"), s2.settings.get("rate")) == (6, None)  # the file's rate is gone
    # the command line's --rate replaces the environment's concurrency in turn
    assert main(["run", "--config", plan, "--rate", "30"]) == 0
    (_, s1), _ = entries(captured[-1])
    assert (s1.settings.get("concurrency"), s1.settings.get("rate")) == (None, 30.0)
    # stages alone keep the model: they ramp the rate of an open-model scenario
    monkeypatch.delenv("LOADGEN_CONCURRENCY")
    assert main(["run", "--config", plan, "--stages", "1s:10,1s:0"]) == 0
    _, (_, s2) = entries(captured[-1])
    assert s2.settings.get("rate") == 50.0 and len(s2.settings.get("stages")) == 2


def test_a_new_target_does_not_inherit_the_old_ones_arguments(captured, tmp_path, monkeypatch):
    plan = write(tmp_path, BASE)
    assert main(["run", "--config", plan, "--target", "_targets:noop"]) == 0
    (_, s1), _ = entries(captured[-1])
    assert s1.target.ref == "_targets:noop" and s1.target.kwargs == {}
    monkeypatch.setenv("LOADGEN_TARGET_ARGS", '{"ms": 7}')
    assert main(["run", "--config", plan, "--target-arg", "extra=x"]) == 0
    (_, s1), _ = entries(captured[-1])
    assert s1.target.kwargs == {"ms": 7, "extra": "x"}


def test_environment_applies_to_plain_runs_too(captured, monkeypatch):
    monkeypatch.setenv("LOADGEN_CONCURRENCY", "3")
    monkeypatch.setenv("LOADGEN_PROFILE", "standard")
    monkeypatch.setenv("LOADGEN_FLOW_PARAMS", "failure_rate=0.5,processing_time_base=0.01")
    assert main(["run", "concurrent_load", "--out", "o"]) == 0
    s = captured[-1]["session"]
    assert s.settings.get("concurrency") == 3 and s.profile == "standard"
    assert s.target.flow_params == {"failure_rate": "0.5", "processing_time_base": "0.01"}
    assert main(["run", "concurrent_load", "--out", "o2", "--concurrency", "9", "--profile", "ci"]) == 0
    s = captured[-1]["session"]
    assert s.settings.get("concurrency") == 9 and s.profile == "ci"


@pytest.mark.parametrize("var,value,words", [
    ("LOADGEN_CONCURRENCY", "lots", "LOADGEN_CONCURRENCY: expected a whole number > 0, got 'lots'"),
    ("LOADGEN_DURATION", "-3s", "LOADGEN_DURATION"),
    ("LOADGEN_MAX_CPU_PERCENT", "150", "LOADGEN_MAX_CPU_PERCENT: expected a number > 0 and ≤ 100"),
    ("LOADGEN_QUIET", "maybe", "LOADGEN_QUIET: expected true or false"),
    ("LOADGEN_PROFILE", "huge", "LOADGEN_PROFILE: expected one of ci, standard, nightly"),
    ("LOADGEN_CRITERIA", "p98 < 1", "LOADGEN_CRITERIA[1]: criterion 'p98 < 1'"),
    ("LOADGEN_TARGET_ARGS", "{oops", "LOADGEN_TARGET_ARGS: not a JSON object"),
])
def test_bad_environment_values_name_the_variable(captured, monkeypatch, capsys, var, value, words):
    monkeypatch.setenv(var, value)
    assert main(["run", "concurrent_load", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and not captured


def test_every_flag_has_an_environment_variable():
    from loadgen.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    dests = {a.dest for name in ("run", "suite") for a in sub[name]._actions
             if a.option_strings and a.dest not in ("help", "config", "only")}
    assert dests <= set(ENV) and set(BY_DEST) == set(ENV) and all(ENV.values())
    assert ENV["max_memory_mb"] == "LOADGEN_MAX_MEMORY_MB" and ENV["criterion"] == "LOADGEN_CRITERIA"


def test_paths_in_a_plan_are_relative_to_its_folder(captured, tmp_path):
    sub = tmp_path / "plans"
    sub.mkdir()
    (sub / "data.jsonl").write_text('{"i": 1}\n')
    (sub / "op.py").write_text("def op(inputs=None):\n    return inputs\n")
    plan = write(sub, """
        target = "op.py:op"
        inputs = "data.jsonl"
        out = "results"
        [[scenario]]
        name = "concurrent_load"
    """)
    assert main(["run", "--config", plan]) == 0
    (_, s), = entries(captured[-1])
    assert s.target.ref == f"{sub / 'op.py'}:op" and s.target.inputs == str(sub / "data.jsonl")
    assert captured[-1]["session"].run_dir == str(sub / "results")


def test_a_positional_scenario_selects_from_the_plan(captured, tmp_path, capsys):
    plan = write(tmp_path, BASE)
    assert main(["run", "--config", plan, "steady", "--out", "o"]) == 0
    assert [label for label, _ in entries(captured[-1])] == ["steady"]
    assert main(["run", "--config", plan, "nope", "--out", "o"]) == 2
    assert "no scenario 'nope' in this plan (it has: concurrent_load, steady)" in capsys.readouterr().err


def test_run_needs_a_scenario_or_a_config(captured, capsys):
    assert main(["run"]) == 2
    assert "--config" in capsys.readouterr().err


def test_abort_on_fail_marks_what_can_be_judged_early(captured, tmp_path):
    assert main(["run", "concurrent_load", "--out", "o", "--abort-on-fail", "--criterion", "success_rate > 0.9",
                 "--criterion", "throughput > 5"]) == 0
    crit = captured[-1]["session"].settings.get("criteria")
    assert [(str(c), c.abort_on_fail) for c in crit] == [("success_rate > 0.9", True), ("throughput > 5", False)]
    # no --criterion: the scenario's own
    assert main(["run", "concurrent_load", "--out", "o2", "--abort-on-fail"]) == 0
    assert [(str(c), c.abort_on_fail) for c in captured[-1]["session"].settings.get("criteria")] == \
        [("success_rate > 0.7", True)]
    plan = write(tmp_path, """
        [[scenario]]
        name = "concurrent_load"
        criteria = ["p99_ms < 50", {expr = "success_rate > 0.5", abort_on_fail = true}]
    """)
    assert main(["run", "--config", plan, "--out", "o3"]) == 0
    (_, s), = entries(captured[-1])
    assert [(str(c), c.abort_on_fail) for c in s.abort_criteria] == [("success_rate > 0.5", True)]


# ---------------------------------------------------------------------------- validate


def test_validate_ok(tmp_path, capsys, monkeypatch):
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)
    plan = write(tmp_path, BASE)
    assert main(["validate", plan]) == 0
    assert capsys.readouterr().out == f"{plan}: OK — 2 scenarios (concurrent_load, steady)\n"
    assert not os.path.exists(tmp_path / "loadgen-results")


BAD_PLANS = [
    ("syntax", 'seed = 1\n[[scenario]\nname = "x"\n', "plan.toml: TOML syntax error: ", "line 2"),
    ("unknown top key", 'sead = 1\n[[scenario]]\nname = "concurrent_load"\n', "plan.toml: unknown key 'sead'",
     "did you mean 'seed'"),
    ("unknown scenario key", '[[scenario]]\nname = "concurrent_load"\nconcurency = 3\n',
     "plan.toml: scenario[1]: unknown key 'concurency'", "did you mean 'concurrency'"),
    ("unknown threshold", '[thresholds]\nmax_memory = 5\n[[scenario]]\nname = "concurrent_load"\n',
     "plan.toml: thresholds: unknown key 'max_memory'", "max_memory_mb"),
    ("wrong type", '[[scenario]]\nname = "concurrent_load"\n[[scenario]]\nname = "recovery"\nconcurrency = "5"\n',
     "plan.toml: scenario[2].concurrency", "expected a whole number > 0, got '5'"),
    ("negative", '[[scenario]]\nname = "concurrent_load"\nworkers = -2\n', "plan.toml: scenario[1].workers",
     "expected a whole number > 0, got -2"),
    ("negative threshold", '[[scenario]]\nname = "concurrent_load"\n[scenario.thresholds]\nmax_memory_mb = -1\n',
     "plan.toml: scenario[1].thresholds.max_memory_mb", "expected a number > 0"),
    ("bool as number", 'seed = true\n[[scenario]]\nname = "concurrent_load"\n', "plan.toml: seed",
     "expected a whole number ≥ 0, got true"),
    ("bad duration", '[[scenario]]\nname = "concurrent_load"\nduration = "soon"\n',
     "plan.toml: scenario[1].duration", "is not a duration"),
    ("bad stages", '[[scenario]]\nname = "concurrent_load"\nstages = [["10s", -5]]\n',
     "plan.toml: scenario[1].stages[1].target", "expected a number ≥ 0"),
    ("unknown scenario", '[[scenario]]\nname = "concurent_load"\n', "plan.toml: scenario[1].name",
     "did you mean 'concurrent_load'"),
    ("no scenario", 'seed = 1\n', "plan.toml: no [[scenario]]", "name = "),
    ("scenario not array", '[scenario]\nname = "concurrent_load"\n', "plan.toml: scenario",
     "expected an array of tables"),
    ("duplicate", '[[scenario]]\nname = "concurrent_load"\n[[scenario]]\nname = "concurrent_load"\n',
     "plan.toml: scenario[2].label", "distinct label"),
    ("bad criterion", '[[scenario]]\nname = "concurrent_load"\ncriteria = ["p98 < 1"]\n',
     "plan.toml: scenario[1].criteria[1]", "unknown metric 'p98'"),
    ("criteria not array", '[[scenario]]\nname = "concurrent_load"\ncriteria = "p99_ms < 1"\n',
     "plan.toml: scenario[1].criteria", "expected an array"),
    ("abort on end-only metric",
     '[[scenario]]\nname = "concurrent_load"\ncriteria = [{expr = "throughput > 1", abort_on_fail = true}]\n',
     "plan.toml: scenario[1].criteria[1]", "known only at the end"),
    ("unimportable target", 'target = "no_such_mod_xyz:f"\n[[scenario]]\nname = "concurrent_load"\n',
     "plan.toml: target", "cannot import 'no_such_mod_xyz'"),
    ("missing attribute", '[[scenario]]\nname = "concurrent_load"\ntarget = "os:nope"\n',
     "plan.toml: scenario[1].target", "no attribute 'nope'"),
    ("missing inputs", 'inputs = "nope.jsonl"\n[[scenario]]\nname = "concurrent_load"\n', "plan.toml: inputs",
     "no such file"),
    ("bad flow param", '[flow_params]\nfailure_rate = 3\n[[scenario]]\nname = "concurrent_load"\n',
     "plan.toml: flow_params", "failure_rate"),
    ("factory without target", 'target_factory = true\n[[scenario]]\nname = "concurrent_load"\n',
     "plan.toml: target_factory", "needs a target"),
    ("bad choice", 'inputs_mode = "twice"\n[[scenario]]\nname = "concurrent_load"\n', "plan.toml: inputs_mode",
     "expected one of cycle, once"),
    ("sample interval", 'sample_interval = "1ms"\n[[scenario]]\nname = "concurrent_load"\n',
     "plan.toml: sample_interval", "between 10ms and 10s"),
]


@pytest.mark.parametrize("text,where,what", [b[1:] for b in BAD_PLANS], ids=[b[0] for b in BAD_PLANS])
def test_validate_errors_name_file_key_and_expectation(tmp_path, capsys, monkeypatch, text, where, what):
    monkeypatch.chdir(tmp_path)
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "plan.toml").write_text(text)
    for argv in (["validate", "plan.toml"], ["run", "--config", "plan.toml"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("loadgen: error: ") and where in err and what in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not os.path.exists(tmp_path / "loadgen-results")


def test_validate_a_malformed_inputs_file_names_its_line(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n{oops\n')
    plan = write(tmp_path, 'inputs = "in.jsonl"\n[[scenario]]\nname = "concurrent_load"\n')
    assert main(["validate", plan]) == 2
    err = capsys.readouterr().err
    assert f"{plan}: inputs" in err and "line 2" in err


def test_validate_a_missing_or_unreadable_plan(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "none.toml")]) == 2
    assert "none.toml: cannot read" in capsys.readouterr().err
    assert main(["validate", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    assert main(["validate", str(tmp_path / "bin.toml")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


# ---------------------------------------------------------------------------- abort_on_fail, no processes


class FakeOut:
    def __init__(self):
        from loadgen.analysis.stats import Histogram

        self.latency_hist = Histogram()
        self.response = None  # a closed-model run
        self.crashes, self.breaches = [], []
        self.peak_memory_mb = self.peak_cpu_percent = 0.0


class FakeRunner:
    def __init__(self):
        self.out = FakeOut()
        self.stops = []

    def request_stop(self, reason, exit_code=0):
        self.stops.append((reason, exit_code))


def second(ok, failed, dropped=0):
    return {"succeeded": ok, "failed": failed, "dropped": dropped}


def test_early_judge_waits_for_enough_operations_then_stops_once():
    lost, seen = [], []
    judge = EarlyJudge([Criterion.parse("success_rate > 0.9", abort_on_fail=True)], on_lost=lost.append,
                       then=lambda r, rec: seen.append(rec))
    runner = FakeRunner()
    judge(runner, second(0, MIN_OPERATIONS - 1))  # all failed, but too few to judge
    assert runner.stops == [] and lost == []
    judge(runner, second(0, 1))
    assert len(runner.stops) == 1 and runner.stops[0][1] == 1
    assert runner.stops[0][0].startswith("criterion success_rate > 0.9 lost early (measured 0 after 20 operations")
    judge(runner, second(0, 5))
    assert len(runner.stops) == 1 and len(lost) == 1 and len(seen) == 3  # once; the scenario's hook still runs


def test_early_judge_passes_a_run_that_is_winning_and_ignores_unmarked():
    judge = EarlyJudge([Criterion.parse("error_rate < 0.1", abort_on_fail=True),
                        Criterion.parse("success_rate > 0.99")])
    runner = FakeRunner()
    for _ in range(5):
        judge(runner, second(95, 5))
    assert runner.stops == []


def test_early_judge_counters_lose_only_past_the_limit():
    judge = EarlyJudge([Criterion.parse("dropped < 10", abort_on_fail=True)])
    runner = FakeRunner()
    judge(runner, second(1, 0, dropped=9))
    assert runner.stops == []
    judge(runner, second(1, 0, dropped=1))
    assert "dropped < 10 lost early" in runner.stops[0][0]


def test_early_judge_percentiles_on_the_cumulative_histogram():
    judge = EarlyJudge([Criterion.parse("p99_ms < 50", abort_on_fail=True)])
    runner = FakeRunner()
    runner.out.latency_hist.record_many([1_000] * 10)
    judge(runner, second(10, 0))
    assert runner.stops == []
    runner.out.latency_hist.record_many([1_000] * 30 + [200_000] * 5)  # 5 of 45 at 200 ms
    judge(runner, second(35, 0))
    assert "p99_ms < 50 lost early" in runner.stops[0][0]


@pytest.mark.parametrize("text,ok", [("success_rate > 0.9", True), ("p999_ms < 5", True), ("crashed == 0", True),
                                     ("crashed > 0", False), ("throughput > 1", False), ("leak_detected == 0", False),
                                     ("max_ms <= 100", True), ("operations >= 100", False)])
def test_what_can_be_judged_early(text, ok):
    assert abortable(Criterion.parse(text)) is ok

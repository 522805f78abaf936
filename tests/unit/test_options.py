"""The options table: explicit options win, conflicts are errors, guards in tiers are set as asked."""

import textwrap

import pytest

from loadgen import api, options
from loadgen.cli import main
from loadgen.config import ResourceThresholds
from loadgen.errors import UsageError
from loadgen.options import ENV
from loadgen.scenarios import get

FAKE_REPORT = {
    "executive_summary": {"passed_components": 0, "total_components": 0},
    "latency_ms": {"p50": None, "p99": None},
    "accounting": {k: 0 for k in ("dispatched", "succeeded", "failed", "timed_out", "crashed", "dropped")},
    "component_results": [],
}


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Stub the scenario loop: capture the session a run would use, run nothing."""
    monkeypatch.chdir(tmp_path)
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)
    calls = []

    def fake(scs, session, kind, command=None):
        calls.append(session)
        return api.Report(dict(FAKE_REPORT), [], 0, session.run_dir)

    monkeypatch.setattr(api, "run_scenarios", fake)
    return calls


def error_of(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


# ---------------------------------------------------------------------------- explicit options win


@pytest.mark.parametrize("stages,duration,expected_s", [
    ("3s:4,4s:8,3s:0", None, None),  # the stages set it: their sum (10 s), not the scenario's 5 s
    ("3s:4,4s:8,3s:0", "6s", 6.0),  # both given: the explicit duration cuts them
    (None, None, 5.0),  # neither: the scenario's ci duration
])
def test_stages_set_the_duration_over_a_scenario_default(captured, stages, duration, expected_s):
    argv = ["run", "concurrent_load", "--out", "o"] + (["--stages", stages] if stages else []) + \
           (["--duration", duration] if duration else [])
    assert main(argv) == 0
    plan = get("concurrent_load").main_plan(captured[-1], concurrency=20, duration=5.0)
    assert plan.duration_s == expected_s
    if stages:
        assert sum(s.duration_s for s in plan.stages) == 10.0  # and validated() ends the run at their sum


@pytest.mark.parametrize("argv,words", [
    (["--concurrency", "100"], "--concurrency: 100 operations in flight is above the safety cap "
                               "max_concurrent_operations = 50; raise it with --max-concurrent-operations"),
    (["--stages", "2s:10,2s:80"], "--stages: 80 operations in flight is above"),
    (["--concurrency", "4", "--rate", "10"], "--concurrency and --rate: give one load model"),
])
def test_conflicts_and_silent_caps_are_usage_errors(captured, capsys, argv, words):
    assert words in error_of(["run", "concurrent_load", "--out", "o"] + argv, capsys)
    assert not captured


def test_raising_the_cap_lets_more_run_in_flight(captured):
    assert main(["run", "concurrent_load", "--out", "o", "--concurrency", "100",
                 "--max-concurrent-operations", "200"]) == 0
    assert captured[-1].settings["concurrency"] == 100


def test_an_upper_level_model_replaces_a_lower_one_without_a_conflict(captured, monkeypatch):
    monkeypatch.setenv("LOADGEN_RATE", "30")
    assert main(["run", "concurrent_load", "--out", "o", "--concurrency", "4"]) == 0
    assert captured[-1].settings.get("rate") is None and captured[-1].settings["concurrency"] == 4
    monkeypatch.setenv("LOADGEN_CONCURRENCY", "3")
    assert "LOADGEN_CONCURRENCY and LOADGEN_RATE: give one load model" in \
        error_of_env(["run", "concurrent_load", "--out", "o"])


def error_of_env(argv):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(argv) == 2
    return err.getvalue()


def test_a_plan_that_gives_both_models_at_one_level_is_refused(tmp_path, capsys, captured):
    plan = tmp_path / "plan.toml"
    plan.write_text(textwrap.dedent("""
        [[scenario]]
        name = "concurrent_load"
        concurrency = 4
        rate = 10
    """))
    err = error_of(["validate", str(plan)], capsys)
    assert "plan.toml: scenario[1].concurrency and " in err and "scenario[1].rate: give one load model" in err


# ---------------------------------------------------------------------------- guards in tiers


def test_kill_on_from_flag_environment_and_plan(captured, monkeypatch, tmp_path):
    assert main(["run", "concurrent_load", "--out", "o", "--kill-on", "cpu"]) == 0
    assert captured[-1].thresholds.kill_on == ("cpu",)
    monkeypatch.setenv("LOADGEN_KILL_ON", "growth,cpu")
    assert main(["run", "concurrent_load", "--out", "o2"]) == 0  # a new directory: "o" is claimed by the first
    assert captured[-1].thresholds.kill_on == ("cpu", "growth")
    monkeypatch.delenv("LOADGEN_KILL_ON")
    plan = tmp_path / "plan.toml"
    plan.write_text(textwrap.dedent("""
        [thresholds]
        max_cpu_percent = {limit = 85, action = "kill"}
        memory_growth_rate_mb_per_sec = {limit = 20, action = "report"}
        [[scenario]]
        name = "concurrent_load"
    """))
    assert main(["run", "--config", str(plan), "--out", "o3"]) == 0
    th = captured[-1].thresholds
    assert (th.max_cpu_percent, th.memory_growth_rate_mb_per_sec, th.kill_on) == (85.0, 20.0, ("cpu",))
    assert ResourceThresholds().kill_on == ()  # by default nothing but the machine's guards kills


@pytest.mark.parametrize("argv,table,words", [
    (["--kill-on", "memory"], None, "'memory' is not a guard that can be told to kill"),
    ([], "max_memory_mb = {limit = 900, action = \"report\"}", "max_memory_mb always acts"),
    ([], "max_cpu_percent = {limit = 85, action = \"maybe\"}", "expected one of kill, report"),
    ([], "max_cpu_percent = {action = \"kill\"}", "expected limit = NUMBER"),
])
def test_bad_tiers_are_one_line_usage_errors(tmp_path, capsys, argv, table, words):
    if table is None:
        err = error_of(["run", "concurrent_load", "--out", str(tmp_path / "o")] + argv, capsys)
    else:
        plan = tmp_path / "plan.toml"
        plan.write_text(f"[thresholds]\n{table}\n[[scenario]]\nname = \"concurrent_load\"\n")
        err = error_of(["validate", str(plan)], capsys)
    assert words in err


def test_the_api_checks_as_the_command_line_does():
    with pytest.raises(UsageError, match="concurrency and rate: give one load model"):
        options.from_api({"concurrency": 3, "rate": 5})
    with pytest.raises(TypeError, match="unexpected keyword argument 'concurency'"):
        options.from_api({"concurency": 3})
    with pytest.raises(UsageError, match="above the safety cap"):
        api.Session.configured(options.from_api({"concurrency": 60}))


def test_run_help_groups_its_options_load_target_http_safety_output():
    """``run --help`` in groups, as k6 and Locust group theirs; each flag under its table group's title."""
    from loadgen.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    titles = [line.split(" (")[0] for line in text.splitlines() if line and not line.startswith(" ")
              and line.endswith(":") and "(" in line]
    assert titles == ["load", "target", "HTTP", "safety", "output", "fleet"], titles

    def section(title):
        start = text.index(f"\n{title} (")
        end = text.find("\n\n", start + 1)
        return text[start:end]

    assert "--concurrency" in section("load") and "--criterion" in section("load")
    assert "--target-arg" in section("target") and "--url" in section("HTTP")
    assert "--max-memory-mb" in section("safety") and "--stop-file" in section("safety")
    assert "--out" in section("output") and "--prom-textfile" in section("output")

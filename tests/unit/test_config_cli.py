"""Unit tests without processes: durations, stages, thresholds, the CLI's bad-input table."""

import pytest

from loadgen.cli import main
from loadgen.config import ResourceThresholds, Stage, parse_duration, parse_stages
from loadgen.errors import UsageError
from loadgen.engine.load import split, stage_target


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("10s", 10), ("5m", 300), ("1h", 3600), ("2.5", 2.5),
                                          (" 3s ", 3), (7, 7.0), ("1m30s", 90), ("1h15m", 4500),
                                          ("1h2m3s500ms", 3723.5), ("2m0.5s", 120.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "abc", "10x", "-1s", "0", "0ms", "1e3", "s", "nan", "inf", "30s1m", "1m1m",
                                 "1m30", "1m 30s", "0m0s", "1h-5m"])
def test_parse_duration_rejects(bad):
    with pytest.raises(UsageError):
        parse_duration(bad)


def test_parse_stages_and_target_arithmetic():
    stages = parse_stages("10s:50,30s:200,10s:0")
    assert stages == [Stage(10, 50), Stage(30, 200), Stage(10, 0)]
    assert stage_target(stages, 0) == 0
    assert stage_target(stages, 5) == pytest.approx(25)
    assert stage_target(stages, 10) == pytest.approx(50)
    assert stage_target(stages, 25) == pytest.approx(125)
    assert stage_target(stages, 45) == pytest.approx(100)
    assert stage_target(stages, 99) == 0


@pytest.mark.parametrize("bad", ["10s", "10s:x", "abc:5", "10s:-1", ","])
def test_parse_stages_rejects(bad):
    with pytest.raises(UsageError):
        parse_stages(bad)


def test_split_spreads_remainder():
    assert split(20, 3) == [7, 7, 6]
    assert split(1, 2) == [1, 0]
    assert split(10, 2, cap=4) == [4, 4]
    assert sum(split(50, 7)) == 50


def test_thresholds_seed_defaults_and_validation():
    t = ResourceThresholds()
    assert (t.max_memory_mb, t.max_cpu_percent, t.max_execution_time_seconds, t.max_concurrent_operations,
            t.memory_growth_rate_mb_per_sec) == (1024.0, 90.0, 300.0, 50, 10.0)
    for bad in (dict(max_memory_mb=0), dict(max_cpu_percent=101), dict(max_concurrent_operations=0),
                dict(memory_growth_rate_mb_per_sec=-1), dict(max_execution_time_seconds=float("nan"))):
        with pytest.raises(UsageError):
            ResourceThresholds(**bad)


BAD_CLI = [
    (["run", "no_such_scenario"], "unknown scenario"),
    (["run", "concurrent_load", "--concurrency", "0"], "--concurrency"),
    (["run", "concurrent_load", "--concurrency", "-3"], "--concurrency"),
    (["run", "concurrent_load", "--duration", "ten"], "--duration"),
    (["run", "concurrent_load", "--duration", "0s"], "--duration"),
    (["run", "concurrent_load", "--operations", "1.5"], "--operations"),
    (["run", "concurrent_load", "--workers", "0"], "--workers"),
    (["run", "concurrent_load", "--target", "no_such_module_xyz:f"], "cannot import"),
    (["run", "concurrent_load", "--target", "os:no_such_attr"], "no attribute"),
    (["run", "concurrent_load", "--target", "os:sep"], "not a callable"),
    (["run", "concurrent_load", "--target", "nocolon"], "MODULE:CALLABLE"),
    (["run", "concurrent_load", "--flow-param", "nope=1"], "nope"),
    (["run", "concurrent_load", "--flow-param", "failure_rate=2"], "failure_rate"),
    (["run", "concurrent_load", "--max-memory-mb", "-5"], "max-memory-mb"),
    (["run", "concurrent_load", "--max-cpu-percent", "150"], "max_cpu_percent"),
    (["run", "concurrent_load", "--seed", "-1"], "--seed"),
    (["run", "concurrent_load", "--criterion", "p98 < 1"], "criterion"),
    (["run", "concurrent_load", "--stages", "10s"], "--stages"),
    (["run", "concurrent_load", "--out", "/proc/loadgen-cannot-write-here"], "--out"),
    (["run", "concurrent_load", "--bogus-flag"], "unrecognized"),
    (["suite", "--profile", "huge"], "invalid choice"),
]


@pytest.mark.parametrize("argv,words", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_input_is_one_line_and_exit_2(argv, words, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert words in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_list_shows_scenarios_and_criteria(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "concurrent_load" in out and "success_rate > 0.7" in out and "processing_time_base" in out


@pytest.mark.parametrize("argv, says", [
    (["run", "load", "--concurency", "5"], "unrecognized arguments: --concurency 5 (did you mean --concurrency?)"),
    (["run", "--duraton=5s"], "(did you mean --duration?)"),
    (["suite", "--max-memroy-mb", "3"], "(did you mean --max-memory-mb?)"),
    (["compare", "a", "b", "--tolerence", "5"], "(did you mean --tolerance?)"),
    (["rnu"], "invalid choice: 'rnu' (did you mean 'run'?)"),
    (["run", "--profile", "nighlty"], "invalid choice: 'nighlty' (did you mean 'nightly'?)"),
    (["cluster", "lcoal"], "invalid choice: 'lcoal' (did you mean 'local'?)"),
])
def test_a_misspelt_flag_command_or_choice_gets_the_closest(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_an_unknown_flag_far_from_any_gets_no_guess(capsys):
    assert main(["run", "--zzz"]) == 2
    assert capsys.readouterr().err.strip() == "loadgen: error: unrecognized arguments: --zzz"

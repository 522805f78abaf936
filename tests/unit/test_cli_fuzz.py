"""Property: whatever the arguments or the plan, the CLI answers with an exit code, never a traceback.

Random argument lists for ``run``/``suite``/``validate``/``compare`` are built
from the parser's real flags with random values; random TOML plans are built
valid-looking and then, often, broken. ``api.run_scenarios`` is stubbed (an
empty report), so what is exercised is parsing and checking, not load.
"""

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen import api, scenarios
from loadgen.cli import build_parser, main
from loadgen.config import THRESHOLD_CHECKS
from loadgen.options import ENV, PLAN_KEYS, SCENARIO_KEYS
from loadgen.report import build_report

EXIT_CODES = {0, 1, 2, 3}
NOT_FUZZED = {"--help", "--cluster", "--shards", "--cluster-timeout", "--start-lead"}  # help exits; fleet flags dial out
# Targets are imported: only these, so that no random module (`antigravity`…) is ever imported.
TARGETS = ["_targets:noop", "_targets:fail_always", "no_such_module_xyz:f", "os:sep", "os:no_such", "nocolon",
           ":", "x.py:f", "_targets:make_client", "_targets:async_sleep"]
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _flags(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return sorted({o for a in sub._actions for o in a.option_strings if o.startswith("--")} - NOT_FUZZED)


safe_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/"),
                    max_size=12)
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True))
durations = st.builds(lambda n, u: f"{n}{u}", st.one_of(st.integers(-5, 100), st.floats(-1, 100)),
                      st.sampled_from(["", "ms", "s", "m", "h", "x", " s"]))
pairs = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["failure_rate", "seed", "ms", "nope", "", "a b"]),
                  st.one_of(numbers.map(str), safe_text))
criteria_text = st.builds(lambda m, o, n: f"{m} {o} {n}",
                          st.sampled_from(["success_rate", "p99_ms", "throughput", "p98", "leak_detected", ""]),
                          st.sampled_from(["<", ">", "==", "~", ">="]), st.one_of(numbers.map(str), safe_text))
values = st.one_of(numbers.map(str), durations, safe_text, pairs, criteria_text, st.sampled_from(TARGETS),
                   st.sampled_from(["ci", "standard", "fork", "spawn", "cycle", "once", "DEBUG", "true", "-1"]))


def flag_args(command):
    def build(chosen):
        out = []
        for flag, value in chosen:
            out.append(flag)
            if value is not None:
                out.append(value)
        return out

    return st.lists(st.tuples(st.sampled_from(_flags(command)), st.one_of(st.none(), values)),
                    max_size=6).map(build)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A folder to run in, no LOADGEN_* from the outside, and a scenario loop that runs nothing."""
    monkeypatch.chdir(tmp_path)
    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)

    def fake(scs, session, kind, command=None):
        for sc in scs:  # what a run would evaluate first: the criteria
            sc.criteria_for(session)
        report = build_report([], kind=kind, started_at=0.0, ended_at=1.0, thresholds=session.thresholds,
                              run_dir=session.run_dir, command=command)
        return api.Report(report, [], report["exit_code"], session.run_dir)

    monkeypatch.setattr(api, "run_scenarios", fake)
    (tmp_path / "in.jsonl").write_text('{"i": 1}\n')
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    (tmp_path / "empty.json").write_text("{}")
    report = build_report([], kind="plan x", started_at=0.0, ended_at=1.0, thresholds={})
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "junk.json").write_text("[1, 2")
    return tmp_path


def check(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse must not exit on its own either
        pytest.fail(f"SystemExit({e.code}) for {argv!r}")
    out, err = capsys.readouterr()
    assert code in EXIT_CODES, (argv, code, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    assert "internal error" not in err, (argv, err)  # main's last-resort catch: a bug, not an answer
    if code == 2:
        assert err.startswith("loadgen: error: ") and err.count("\n") == 1, (argv, err)
    return code


@SETTINGS
@given(st.data())
def test_random_run_and_suite_arguments(sandbox, capsys, data):
    command = data.draw(st.sampled_from(["run", "suite"]))
    argv = [command]
    if command == "run":
        argv.append(data.draw(st.one_of(st.sampled_from(scenarios.names()), safe_text.filter(
            lambda s: not s.startswith("-")))))
    argv += data.draw(flag_args(command))
    check(argv, capsys)


@SETTINGS
@given(st.data())
def test_random_compare_arguments(sandbox, capsys, data):
    paths = st.sampled_from(["report.json", "report.json", "empty.json", "junk.json", "nope.json", ".", "in.jsonl"])
    argv = ["compare", data.draw(paths), data.draw(paths)]
    if data.draw(st.booleans()):
        argv += ["--tolerance", data.draw(values)]
    check(argv, capsys)


# ---------------------------------------------------------------------------- random plans


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else repr(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_text(top, scenarios_):
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in top.items()]
    for table in scenarios_:
        lines.append("[[scenario]]")
        lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


scalar = st.one_of(st.integers(-10**20, 10**20), st.floats(), st.booleans(), safe_text, durations,
                   criteria_text, st.sampled_from(TARGETS + ["in.jsonl", "bad.jsonl", "nope.jsonl"]))
VALID_CRITERIA = ["success_rate > 0.9", "p99_ms < 500", "throughput >= 1", "error_rate < 5%", "crashed == 0",
                  {"expr": "success_rate > 0.5", "abort_on_fail": True}, {"expr": "max_ms <= 9000"}]
valid = {  # values a plan may hold
    "concurrency": st.integers(1, 60), "rate": st.floats(0.5, 500), "workers": st.integers(1, 4),
    "slots": st.integers(1, 8), "operations": st.integers(1, 1000), "seed": st.integers(0, 99),
    "duration": st.sampled_from(["1s", "500ms", 2, 0.5, "1m"]), "op_timeout": st.sampled_from(["5s", 3]),
    "max_lateness": st.sampled_from(["1s", 0.2]), "sample_interval": st.sampled_from(["100ms", 0.05, "1s"]),
    "stages": st.sampled_from(["1s:5,1s:0", [["1s", 5], [2, 0]], [{"duration": "1s", "target": 3}]]),
    "criteria": st.lists(st.sampled_from(VALID_CRITERIA), max_size=3),
    "profile": st.sampled_from(["ci", "standard", "nightly"]), "inputs_mode": st.sampled_from(["cycle", "once"]),
    "start_method": st.sampled_from(["fork", "spawn"]),
    "target": st.sampled_from(["_targets:noop", "_targets:sleep_ms", "_targets:async_sleep"]),
    "inputs": st.just("in.jsonl"), "abort_on_fail": st.booleans(),
    "thresholds": st.fixed_dictionaries({}, optional={"max_memory_mb": st.integers(100, 4000),
                                                      "max_cpu_percent": st.floats(1, 100),
                                                      "max_execution_time_seconds": st.sampled_from(["5m", 60])}),
    "flow_params": st.fixed_dictionaries({}, optional={"failure_rate": st.floats(0, 1),
                                                       "processing_time_base": st.floats(0.001, 1)}),
    "out": st.sampled_from(["o", "o/p"]), "stop_file": st.just("stop"),
}
invalid = {  # and values it should not
    "concurrency": st.one_of(st.integers(-10**20, 0), st.floats(), safe_text, st.booleans()),
    "thresholds": st.dictionaries(st.sampled_from(sorted(THRESHOLD_CHECKS) + ["max_memory"]),
                                  st.one_of(st.integers(-5, 10**20), st.floats(), durations, safe_text), max_size=3),
    "criteria": st.lists(st.one_of(criteria_text, st.fixed_dictionaries(
        {"expr": criteria_text}, optional={"abort_on_fail": st.booleans(), "junk": st.integers()})), max_size=3),
    "stages": st.one_of(durations.map(lambda d: f"{d}:5,1s:0"),
                        st.lists(st.tuples(durations, st.integers(-1, 9)).map(list), max_size=3)),
    "target": st.sampled_from(TARGETS), "inputs": st.sampled_from(["bad.jsonl", "nope.jsonl", ""]),
    "flow_params": st.dictionaries(st.sampled_from(["failure_rate", "nope"]), scalar, max_size=2),
    "target_args": st.dictionaries(safe_text, scalar, max_size=2),
}
keys = sorted(set(SCENARIO_KEYS) | set(PLAN_KEYS) | {"label"}) + ["sead", "concurency"]
ENTRY_KEYS = ["concurrency", "rate", "stages", "duration", "operations", "workers", "slots", "op_timeout",
              "criteria", "thresholds", "abort_on_fail", "seed", "profile", "target", "flow_params"]
TOP_KEYS = ["seed", "target", "inputs", "inputs_mode", "thresholds", "duration", "criteria", "sample_interval",
            "start_method", "profile", "out", "stop_file", "flow_params"]


def _valid_table(draw, allowed):
    return {k: draw(valid[k]) for k in draw(st.lists(st.sampled_from(allowed), max_size=4, unique=True))}


@st.composite
def plans(draw):
    # Hypothesis leans to small integers (0, the first choice…): odds come from a plain RNG instead,
    # so that about half the plans are valid and half spoilt in one of many ways.
    rng = random.Random(draw(st.integers(0, 2**32)))
    top = _valid_table(draw, TOP_KEYS)
    entries = []
    for i in range(draw(st.integers(1, 3))):
        table = {"name": draw(st.sampled_from(scenarios.names())), "label": f"s{i}"}
        table.update(_valid_table(draw, ENTRY_KEYS))
        entries.append(table)
    if rng.random() < 0.35:  # spoil a value, add an unknown key, drop a name, misplace a key
        where = rng.choice([top] + entries)
        key = rng.choice(keys + ["name"])
        where[key] = draw(invalid.get(key, scalar))
    if rng.random() < 0.05:
        entries = []
    text = toml_text(top, entries)
    if rng.random() < 0.15:  # break the syntax
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(['"', "[", "]", "=", "\n", "{", "x", "[[scenario]]\n", ""]) + text[i + 1:]
    return text


@SETTINGS
@given(plans(), st.sampled_from(["validate", "run"]), st.data())
def test_random_plans(sandbox, capsys, text, how, data):
    (sandbox / "plan.toml").write_text(text, encoding="utf-8")
    if how == "validate":
        argv = ["validate", "plan.toml"]
    else:
        argv = ["run", "--config", "plan.toml"] + data.draw(flag_args("run"))
    code = check(argv, capsys)
    assert code in (0, 2)
    PLAN_CODES[code] = PLAN_CODES.get(code, 0) + 1


PLAN_CODES = {}


def test_random_plans_were_often_valid():
    # runs after test_random_plans (file order): the property must not only ever see broken plans
    if PLAN_CODES:
        assert PLAN_CODES.get(0, 0) >= 0.2 * sum(PLAN_CODES.values()), PLAN_CODES


def test_the_fuzzed_flags_are_the_real_ones():
    run = _flags("run")
    assert {"--concurrency", "--config", "--criterion", "--abort-on-fail", "--max-memory-mb"} <= set(run)
    assert "--tolerance" in _flags("compare")

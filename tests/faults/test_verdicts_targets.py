"""The verdict table of issue #23, its rows about targets, mixes and criteria (rows 1, 3 and 4).

Every case runs the real CLI (``python -m loadgen`` in its own session, reaped by the ``cli``
fixture) against a target written here, and asserts the exit code, the one line on stderr, and what
was (or was not) written. Each failed on the main of the issue for the reason in its row:

* row 1: a target module that raises SystemExit / KeyboardInterrupt / any BaseException when imported
  (``sys.exit(main())`` at its end) ended loadgen with the module's code — 0, nothing printed or
  written — for ``run``, ``suite``, ``validate``, plans and fleets; a module that exits only in a worker
  was a report line on stdout, not the usage error on stderr;
* row 3: ``--target lg.py:make_read`` where make_read is a factory "succeeded" millions of times (every
  call returned a function), as did a sync callable returning a coroutine, a generator or an awaitable;
* row 4: ``--criterion "p95_ms{op=read} < 50"`` naming no op of the mix failed after the whole run with
  "measured no value"; a ``{measure=X}`` never recorded said nothing of the names that were.
"""

import json
import os
import textwrap

import pytest

MODULES = {
    "exits.py": """
        import sys

        def op(inputs=None):
            return 1

        def main():
            return 0

        sys.exit(main())
    """,
    "interrupts.py": """
        def op(inputs=None):
            return 1

        raise KeyboardInterrupt
    """,
    "base_raise.py": """
        class Boom(BaseException):
            pass

        def op(inputs=None):
            return 1

        raise Boom("not an Exception")
    """,
    "exits_in_worker.py": """
        import os
        import sys

        def op(inputs=None):
            return 1

        # The first process to import this is the master; any other (a worker: a file target is imported
        # again there, under fork too) exits.
        FIRST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "first_importer")
        try:
            fd = os.open(FIRST, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
        except FileExistsError:
            if open(FIRST).read() != str(os.getpid()):
                sys.exit(0)
    """,
    "lg.py": """
        import asyncio

        import loadgen

        CALLS = []

        def make_read():
            def read(inputs=None):
                return b"row"
            return read

        def make_write():
            def write(inputs=None):
                return b"ok"
            return write

        def make_make():
            return make_read

        def not_a_factory():
            return 42

        def exiting_factory():
            raise SystemExit(0)

        async def fetch(inputs=None):
            return {"id": 1}

        def returns_coroutine(inputs=None):
            return fetch()

        async def returns_coroutine_async(inputs=None):
            return fetch()

        def rows(inputs=None):
            yield 1

        def returns_future(inputs=None):
            return asyncio.Future(loop=asyncio.new_event_loop())

        def timed(inputs=None):
            with loadgen.measure("db"):
                pass
            with loadgen.measure("cache"):
                pass
            return 1
    """,
}

WORDS = {"SystemExit": "raised SystemExit(0) (it calls sys.exit when imported",
         "KeyboardInterrupt": "raised KeyboardInterrupt", "Boom": "raised Boom: not an Exception"}
FAST = ["--duration", "1s", "--workers", "1", "--concurrency", "2", "--quiet"]


@pytest.fixture
def files(tmp_path):
    for name, text in MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def _plan(tmp_path, target, extra=""):
    path = tmp_path / "plan.toml"
    path.write_text(f'target = "{target}"\n{extra}\n[[scenario]]\nname = "load"\nconcurrency = 1\nduration = "1s"\n'
                    'workers = 1\n')
    return str(path)


def _one_line(err):
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- row 1: a module that exits at import

ROW1 = [
    # (id, command builder, module, what it raised)
    ("run/SystemExit", lambda d: ["run", "--target", "exits.py:op", "--out", "o", *FAST], "exits.py", "SystemExit"),
    ("run/KeyboardInterrupt", lambda d: ["run", "--target", "interrupts.py:op", "--out", "o", *FAST],
     "interrupts.py", "KeyboardInterrupt"),
    ("run/BaseException", lambda d: ["run", "--target", "base_raise.py:op", "--out", "o", *FAST], "base_raise.py",
     "Boom"),
    ("suite", lambda d: ["suite", "--only", "concurrent_load", "--target", "exits.py:op", "--out", "o", "--quiet"],
     "exits.py", "SystemExit"),
    ("validate", lambda d: ["validate", _plan(d, "exits.py:op")], "exits.py", "SystemExit"),
    ("plan", lambda d: ["run", "--config", _plan(d, "exits.py:op"), "--out", "o", "--quiet"], "exits.py",
     "SystemExit"),
    # The fleet master checks the target before it contacts the cluster: this address is never dialled.
    ("fleet", lambda d: ["run", "--target", "exits.py:op", "--cluster", "tcp://127.0.0.1:9", "--out", "o", *FAST],
     "exits.py", "SystemExit"),
    ("fleet plan", lambda d: ["run", "--config", _plan(d, "exits.py:op"), "--cluster", "tcp://127.0.0.1:9",
                              "--out", "o", "--quiet"], "exits.py", "SystemExit"),
]


@pytest.mark.parametrize("argv,module,raised", [c[1:] for c in ROW1], ids=[c[0] for c in ROW1])
def test_row1_a_target_that_exits_at_import_is_a_usage_error(cli, files, argv, module, raised):
    code, out, err = cli.run(*argv(files), timeout=60)
    line = _one_line(err)
    assert code == 2, (code, out, err)
    assert module in line and WORDS[raised] in line, line
    assert not (files / "o").exists()  # found before anything was written


def test_row1_a_target_that_exits_only_in_a_worker_is_a_usage_error(cli, files):
    code, out, err = cli.run("run", "--target", "exits_in_worker.py:op", "--out", "o", *FAST, timeout=60)
    line = _one_line(err)
    assert code == 2, (code, out, err)
    assert "exits_in_worker.py" in line and "raised SystemExit(0)" in line, line
    assert not (files / "o" / "report.json").exists()


# ---------------------------------------------------------------- row 3: a factory without --target-factory, …

ROW3 = [
    ("factory without the flag", ["--target", "lg.py:make_read"],
     "lg.py:make_read returned a function (did you mean --target-factory?)"),
    ("sync returns a coroutine", ["--target", "lg.py:returns_coroutine"],
     "lg.py:returns_coroutine returned an un-awaited coroutine"),
    ("async returns a coroutine", ["--target", "lg.py:returns_coroutine_async"],
     "lg.py:returns_coroutine_async returned an un-awaited coroutine"),
    ("generator", ["--target", "lg.py:rows"], "lg.py:rows returned a generator"),
    ("awaitable", ["--target", "lg.py:returns_future"], "lg.py:returns_future returned an awaitable"),
    ("factory of a factory", ["--target", "lg.py:make_make", "--target-factory"],
     "the operation built by factory lg.py:make_make returned a function"),
    ("factory returns no callable", ["--target", "lg.py:not_a_factory", "--target-factory"],
     "factory lg.py:not_a_factory returned 42 (of type int), not a callable"),
    ("factory exits", ["--target", "lg.py:exiting_factory", "--target-factory"],
     "factory lg.py:exiting_factory raised SystemExit(0)"),
    ("one op of a mix", ["--target", "read=lg.py:make_read@1", "--target", "fetch=lg.py:fetch@1"],
     "lg.py:make_read returned a function (did you mean --target-factory?)"),
]


@pytest.mark.parametrize("target,says", [c[1:] for c in ROW3], ids=[c[0] for c in ROW3])
def test_row3_a_target_that_returns_no_result_is_a_usage_error_at_its_first_call(cli, files, target, says):
    code, out, err = cli.run("run", *target, "--out", "o", *FAST, timeout=60)
    line = _one_line(err)
    assert code == 2, (code, out, err)
    assert line == f"loadgen: error: {says}" or line.startswith(f"loadgen: error: {says} ("), line
    assert not (files / "o" / "report.json").exists()
    events = [json.loads(x) for x in open(files / "o" / "events.jsonl")]
    end = [e for e in events if e["type"] == "phase" and e["name"] == "end"][-1]
    assert end["exit_code"] == 2
    # The slots stopped at the first call: at most one call per slot (2 here), none counted a success.
    assert end["accounting"]["dispatched"] <= 2 and end["accounting"]["succeeded"] == 0, end


# ---------------------------------------------------------------- row 4: criteria that select what is not there


def test_row4_an_op_the_mix_does_not_have_is_a_usage_error_before_any_load(cli, files):
    code, out, err = cli.run("run", "--target", "lg.py:fetch@1", "--target", "lg.py:timed@1", "--criterion",
                             "p95_ms{op=read} < 50", "--out", "o", *FAST, timeout=60)
    line = _one_line(err)
    assert code == 2, (code, out, err)
    assert "p95_ms{op=read} < 50 selects op 'read'" in line and "its ops: 'fetch', 'timed'" in line, line
    assert not (files / "o").exists()


def test_row4_an_op_in_a_run_without_a_mix_is_a_usage_error(cli, files):
    code, out, err = cli.run("run", "--target", "lg.py:fetch", "--criterion", "p95_ms{op=fetch} < 50", "--out", "o",
                             *FAST, timeout=60)
    assert code == 2 and "this run has no mix of ops" in _one_line(err), (code, err)


def test_row4_a_measure_never_recorded_names_the_recorded_ones(cli, files):
    code, out, err = cli.run("run", "--target", "lg.py:timed", "--criterion", "p95_ms{measure=dbb} < 50",
                             "--out", "o", "--duration", "1s", "--workers", "1", "--concurrency", "1", timeout=60)
    assert code == 1, (code, out, err)
    assert "p95_ms{measure=dbb} < 50 failed (measured no value: no measure 'dbb' was recorded " \
           "(recorded: 'cache', 'db'))" in out, out
    report = json.loads((files / "o" / "report.json").read_text())
    (criterion,) = report["detailed_metrics"][0]["criteria"]
    assert criterion["passed"] is False and criterion["value"] is None
    assert criterion["why"] == "no measure 'dbb' was recorded (recorded: 'cache', 'db')"


# ---------------------------------------------------------------- extras: op names, Locust-style selectors, units


def test_a_factory_mix_is_named_by_the_user_and_a_locust_style_name_works_in_a_selector(cli, files):
    code, out, err = cli.run(
        "run", "--target", "GET /rows/{id}=lg.py:make_read@3", "--target", "write=lg.py:make_write@1",
        "--target-factory", "--criterion", "p95_ms{op=GET /rows/{id}} < 500ms",
        "--criterion", 'operations{op="write"} > 0', "--out", "o", *FAST, timeout=60)
    assert code == 0, (code, out, err)
    report = json.loads((files / "o" / "report.json").read_text())
    comp = report["detailed_metrics"][0]
    assert set(comp["ops"]) == {"GET /rows/{id}", "write"}
    assert comp["ops"]["GET /rows/{id}"]["operations"] > 0 and comp["ops"]["write"]["failed"] == 0
    assert [c["passed"] for c in comp["criteria"]] == [True, True]
    assert comp["criteria"][0]["limit"] == 500.0  # 500ms, in the metric's unit


def test_a_factory_mix_without_names_is_refused_never_named_after_the_factory(cli, files):
    code, out, err = cli.run("run", "--target", "lg.py:make_read@1", "--target", "lg.py:make_write@1",
                             "--target-factory", "--out", "o", *FAST, timeout=60)
    line = _one_line(err)
    assert code == 2 and 'e.g. --target "read=lg.py:make_read@1"' in line, (code, err)
    assert not (files / "o").exists()


def test_row3_in_a_parallel_plan_the_entry_s_usage_error_is_the_command_s(cli, files):
    plan = files / "parallel.toml"
    plan.write_text(textwrap.dedent("""
        parallel = true
        [[scenario]]
        name = "load"
        label = "factory"
        target = "lg.py:make_read"
        concurrency = 1
        duration = "1s"
        workers = 1
        [[scenario]]
        name = "load"
        label = "fine"
        target = "lg.py:fetch"
        concurrency = 1
        duration = "1s"
        workers = 1
    """))
    code, out, err = cli.run("run", "--config", str(plan), "--out", "o", "--quiet", timeout=60)
    line = _one_line(err)
    assert code == 2, (code, out, err)
    assert line.endswith("lg.py:make_read returned a function (did you mean --target-factory?)"), line

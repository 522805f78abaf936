"""Hostile inputs: files that are not files, JSON that is not data, run directories that are not ours.

The issue's table, one test per row, then a property over 210 hostile inputs (70 per command):

* ``compare good.json /dev/zero`` (or a FIFO) hung, reading without end: now refused unread, exit 2;
* JSON nested 100,000 deep, or with a 5,000-digit integer, was an "internal error": now exit 2, one
  line naming the file (and the line of a stream);
* symlinks planted in an existing ``--out`` were appended through, and a second run appended to the
  first one's streams: now a directory holding a run's streams is refused (exit 2), and the streams
  are never opened through a symlink;
* a control character in a plan's name made ``junit.xml`` ill-formed: now cleaned everywhere.

Everything runs in process (``loadgen.cli.main``) on real files, FIFOs, sockets and symlinks; one
test forks a child for the worker's ``workers.log``. Each CLI call runs under ``signal.alarm``, so a
hang fails the test instead of blocking it.
"""

import contextlib
import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import sys
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from _helpers import TESTS, write
from loadgen import api, streams
from loadgen.cli import main
from loadgen.errors import OutputError, UsageError
from loadgen.report import compare as compare_mod
from loadgen.report import write_reports
from loadgen.report.build import build_report
from loadgen.report.html import render_html
from loadgen.report.junit import render_junit
from loadgen.result import StressTestResult
from loadgen.streams import EVENTS, RUN_STREAMS, TIMESERIES, WORKERS_LOG

SAMPLE = os.path.join(TESTS, "data", "sample_run")  # the streams and report of a real 1 s concurrent_load run
REPORT_FILES = ("report.json", "summary.txt", "report.html", "junit.xml")
VICTIM_TEXT = "the victim's own content\n"
ALARM_S = 20  # far above any answer (< 2 s); a hang fails the test
# What junit.xml (XML 1.0) and report.html (HTML parse errors) must never hold.
UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
CONTROL = "".join(map(chr, range(0x20))) + "\x7f\x85\ufffe\uffff"


class Hang(BaseException):
    """Raised by the alarm: a BaseException, so that no ``except Exception`` in loadgen swallows it."""


@contextlib.contextmanager
def deadline(seconds=ALARM_S):
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def cli(*argv):
    """``main(argv)`` in process, under the alarm: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with deadline(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_answer(code, out, err, what=""):
    """What every answer must be: 0, 1 or 2; a 2 is exactly one line "loadgen: error: …"; no traceback."""
    assert code in (0, 1, 2), (what, code, err)
    assert "Traceback" not in err and "Traceback" not in out, (what, err)
    assert "internal error" not in err, (what, err)
    if code == 2:
        assert err.startswith("loadgen: error: ") and err.count("\n") == 1, (what, err)


def usage_error(code, out, err):
    assert_answer(code, out, err)
    assert code == 2, (code, out, err)
    return err


def snapshot(path):
    st_ = os.lstat(path)
    with open(path, "rb") as f:
        return stat.S_IFMT(st_.st_mode), st_.st_size, st_.st_mtime_ns, f.read()


def listing(root, skip=None):
    """Every path under ``root`` (not following links) with its type, size and mtime; ``skip``: a subtree left out."""
    out = {}
    for folder, dirs, files in os.walk(root):
        if skip and os.path.abspath(folder) == os.path.abspath(skip):
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if not (skip and os.path.abspath(os.path.join(folder, d)) == os.path.abspath(skip))]
        for name in dirs + files:
            p = os.path.join(folder, name)
            s = os.lstat(p)
            out[os.path.relpath(p, root)] = (stat.S_IFMT(s.st_mode), s.st_size if stat.S_ISREG(s.st_mode) else 0,
                                              s.st_mtime_ns if stat.S_ISREG(s.st_mode) else 0)
    return out


def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def copy_sample(folder, names=(EVENTS, TIMESERIES, "report.json")):
    os.makedirs(folder, exist_ok=True)
    for n in names:
        shutil.copy(os.path.join(SAMPLE, n), os.path.join(folder, n))
    return folder


@pytest.fixture
def victim(tmp_path):
    p = tmp_path / "victim.txt"
    p.write_text(VICTIM_TEXT)
    return p


@pytest.fixture
def good(tmp_path):
    p = tmp_path / "good.json"
    shutil.copy(os.path.join(SAMPLE, "report.json"), p)
    return p


@pytest.fixture
def no_env(monkeypatch):
    from loadgen.options import ENV

    for var in ENV.values():
        monkeypatch.delenv(var, raising=False)


# ====================================================================== row 1: /dev/zero, FIFOs, sockets


def test_compare_refuses_dev_zero_and_a_fifo_unread(tmp_path, good):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    rss = max_rss_mb()
    for other in ("/dev/zero", fifo):
        for argv in (("compare", good, other), ("compare", other, good)):
            err = usage_error(*cli(*argv))
            assert str(other) in err and "not a regular file" in err, err
    assert max_rss_mb() - rss < 64  # nothing was read (it used to reach 6.5 GB in 6 s)


def test_report_and_validate_refuse_fifos_and_devices_unread(tmp_path, no_env):
    run = copy_sample(tmp_path / "run")
    os.unlink(run / EVENTS)
    os.mkfifo(run / EVENTS)
    err = usage_error(*cli("report", run))
    assert EVENTS in err and "FIFO" in err
    run2 = copy_sample(tmp_path / "run2")
    os.unlink(run2 / TIMESERIES)
    os.symlink("/dev/zero", run2 / TIMESERIES)  # a symlink to a device: the device is what counts
    err = usage_error(*cli("report", run2))
    assert TIMESERIES in err and "character device" in err
    fifo = tmp_path / "plan.toml"
    os.mkfifo(fifo)
    assert "FIFO" in usage_error(*cli("validate", fifo))
    assert "character device" in usage_error(*cli("validate", "/dev/zero"))
    os.mkfifo(tmp_path / "in.jsonl")
    plan = write(tmp_path, 'inputs = "in.jsonl"\n[[scenario]]\nname = "concurrent_load"\n', "inputs.toml")
    err = usage_error(*cli("validate", plan))
    assert "in.jsonl" in err and "FIFO" in err


def test_a_socket_and_a_directory_are_refused(tmp_path, good, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short relative path: AF_UNIX paths are limited to 108 bytes
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind("sock.json")
        assert "socket" in usage_error(*cli("compare", good, "sock.json"))
        assert "socket" in usage_error(*cli("validate", "sock.json"))
    os.mkdir(tmp_path / "plan.toml")
    assert "is a directory" in usage_error(*cli("validate", tmp_path / "plan.toml"))
    run = copy_sample(tmp_path / "run")
    os.unlink(run / EVENTS)
    os.mkdir(run / EVENTS)
    assert "is a directory" in usage_error(*cli("report", run))


def test_a_fifo_swapped_in_after_the_stat_neither_blocks_nor_is_read(tmp_path, good, monkeypatch):
    """The open is O_NONBLOCK and fstat'ed: a FIFO that replaces a file between the check and the open is
    refused at once (without O_NONBLOCK, opening a FIFO with no writer blocks for ever)."""
    fifo = str(tmp_path / "swapped.json")
    os.mkfifo(fifo)
    regular, real_stat = os.stat(good), os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: regular if str(p) == fifo else real_stat(p, *a, **k))
    with deadline(5), pytest.raises(UsageError, match="FIFO"):
        streams.read_bounded(fifo, streams.MAX_REPORT_BYTES, "loadgen report")


def test_a_file_over_the_bound_is_refused(tmp_path, good, monkeypatch):
    monkeypatch.setattr(compare_mod, "MAX_REPORT_BYTES", 1000)
    err = usage_error(*cli("compare", good, good))
    assert str(good) in err and "larger than" in err
    p = tmp_path / "big"
    p.write_bytes(b"x" * 5000)
    with pytest.raises(UsageError, match="larger than"):
        streams.read_bounded(p, 4999, "stream")
    assert streams.read_bounded(p, 5000, "stream") == b"x" * 5000
    assert streams.MAX_REPORT_BYTES == 256 * 2**20 and streams.MAX_PLAN_BYTES == 64 * 2**20


# ====================================================================== row 2: pathological JSON

PATHOLOGICAL = {
    "nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
    "a 5,000-digit integer": '{"t": ' + "7" * 5000 + "}",
    "a 33-digit integer": '{"t": 1' + "0" * 32 + "}",
    "NaN": '{"t": NaN}',
    "-Infinity": '{"t": -Infinity}',
    "1e999": '{"t": 1e999}',
    "nested 65 deep": '{"t": 1, "x": ' + "[" * 65 + "]" * 65 + "}",
}


@pytest.mark.parametrize("what", list(PATHOLOGICAL))
def test_pathological_json_in_a_report_is_exit_2_naming_the_file(tmp_path, good, what):
    bad = tmp_path / "bad.json"
    bad.write_text(PATHOLOGICAL[what])
    for argv in (("compare", good, bad), ("compare", bad, good)):
        err = usage_error(*cli(*argv))
        assert str(bad) in err, err


@pytest.mark.parametrize("what", list(PATHOLOGICAL))
def test_pathological_json_in_a_stream_is_exit_2_naming_file_and_line(tmp_path, what):
    for name in (EVENTS, TIMESERIES):
        run = copy_sample(tmp_path / f"run-{name}")
        lines = (run / name).read_text().splitlines()
        lines[2] = PATHOLOGICAL[what]
        (run / name).write_text("\n".join(lines) + "\n")
        err = usage_error(*cli("report", run))
        assert f"{name}: line 3" in err, err
        assert not os.path.exists(run / "junit.xml")


@pytest.mark.parametrize("what", ["nested 100,000 deep", "a 5,000-digit integer"])
def test_pathological_json_in_an_inputs_file_is_exit_2_naming_file_and_line(tmp_path, no_env, what):
    (tmp_path / "in.jsonl").write_text('{"i": 1}\n' + PATHOLOGICAL[what] + "\n")
    plan = write(tmp_path, 'inputs = "in.jsonl"\n[[scenario]]\nname = "concurrent_load"\n')
    err = usage_error(*cli("validate", plan))
    assert "in.jsonl" in err and "line 2" in err, err


def test_pathological_toml_is_exit_2(tmp_path, no_env):
    for text in ("a = " + "[" * 100_000 + "]" * 100_000, "name = 'x'\nseed = " + "9" * 5000,
                 '[[scenario]]\nname = "concurrent_load"\nconcurrency = ' + "9" * 4000):
        plan = write(tmp_path, text)
        err = usage_error(*cli("validate", plan))
        assert plan in err, err


# ====================================================================== row 3: run directories


@pytest.mark.parametrize("planted", RUN_STREAMS + ("all",))
def test_symlinks_planted_in_an_existing_out_are_refused_never_followed(tmp_path, victim, no_env, planted):
    out = tmp_path / "out"
    out.mkdir()
    for name in RUN_STREAMS if planted == "all" else (planted,):
        os.symlink(victim, out / name)
    before, listed = snapshot(victim), listing(out)
    for argv in (["run", "concurrent_load", "--duration", "1s"], ["suite", "--only", "concurrent_load"]):
        err = usage_error(*cli(*argv, "--out", out, "--quiet"))
        assert str(out) in err and "already holds a run" in err and "--out" in err, err
    assert snapshot(victim) == before
    assert listing(out) == listed


def test_a_second_run_into_the_same_out_is_refused(tmp_path, no_env):
    out = copy_sample(tmp_path / "out")  # a finished run's directory
    listed = listing(out)
    contents = {n: (out / n).read_bytes() for n in (EVENTS, TIMESERIES)}
    err = usage_error(*cli("run", "concurrent_load", "--out", out, "--duration", "1s", "--quiet"))
    assert str(out) in err and "already holds a run" in err
    plan = write(tmp_path, f'out = "{out}"\n[[scenario]]\nname = "concurrent_load"\nduration = "1s"\n')
    assert "already holds a run" in usage_error(*cli("run", "--config", plan))
    with pytest.raises(OutputError, match="already holds a run"):
        api.run("concurrent_load", out=str(out), duration="1s")
    assert listing(out) == listed
    assert {n: (out / n).read_bytes() for n in contents} == contents


def test_other_files_do_not_make_a_run_and_the_probe_never_follows(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / "nightly.log").write_text("nightly's own log\n")  # scripts/nightly.sh writes it before the suite
    os.symlink(victim, out / ".loadgen-write-test")  # the old probe's fixed name
    before = snapshot(victim)
    assert streams.prepare_run_dir(str(out)) == str(out)
    assert snapshot(victim) == before
    assert sorted(os.listdir(out)) == [".loadgen-write-test", EVENTS, "nightly.log"]  # the claim: the run's events


def test_one_command_one_run_dir_phases_and_journal_append(tmp_path):
    """A suite or plan opens its directory once, then every phase and the rebuild journal append to it."""
    d = str(tmp_path / "run")
    streams.prepare_run_dir(d)
    for phase in ("baseline", "main"):
        ev = streams.EventLog(os.path.join(d, EVENTS), phase=phase)
        ev.emit("phase", name="start")
        ev.close()
        ts = streams.JsonLines(os.path.join(d, TIMESERIES))
        ts.write({"t": 1, "phase": phase})
        ts.close()
    scenario = SimpleNamespace(name="concurrent_load", criteria_for=lambda s: [], key_metric="success_rate")
    streams.note_scenario(SimpleNamespace(run_dir=d, profile="ci"), scenario, "concurrent_load")
    assert [e["type"] for e in streams.read_jsonl(os.path.join(d, EVENTS))] == ["phase", "phase", "scenario"]
    assert len(streams.read_jsonl(os.path.join(d, TIMESERIES))) == 2
    with pytest.raises(OutputError, match="already holds a run"):
        streams.prepare_run_dir(d)  # the next command
    assert sorted(os.listdir(d)) == sorted([EVENTS, TIMESERIES])


def test_streams_never_open_a_planted_link_fifo_or_hard_link(tmp_path, victim):
    d = tmp_path / "run"
    d.mkdir()
    before = snapshot(victim)
    os.symlink(victim, d / EVENTS)
    with pytest.raises(OSError):
        streams.EventLog(str(d / EVENTS)).emit("x")
    os.mkfifo(d / TIMESERIES)
    with deadline(5), pytest.raises(OSError):
        streams.JsonLines(str(d / TIMESERIES))
    os.link(victim, d / WORKERS_LOG)
    with pytest.raises(OSError, match="hard links"):
        streams.open_stream(str(d / WORKERS_LOG))
    os.unlink(d / WORKERS_LOG)
    assert snapshot(victim)[3] == before[3] and os.lstat(victim).st_size == before[1]
    # The journal's append through a planted link is dropped (logged), never written through.
    session = SimpleNamespace(run_dir=str(d), profile="ci")
    streams.note_scenario(session, SimpleNamespace(name="x", criteria_for=lambda s: []), "x")
    assert snapshot(victim)[3] == before[3]


def test_streams_and_reports_are_never_writable_by_others(tmp_path):
    old = os.umask(0)
    try:
        d = str(tmp_path / "run")
        streams.prepare_run_dir(d)
        streams.JsonLines(os.path.join(d, EVENTS)).close()
        os.close(streams.open_stream(os.path.join(d, WORKERS_LOG), mode=0o666))
        streams.atomic_write(os.path.join(d, "report.json"), "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o755
    for name in (EVENTS, WORKERS_LOG, "report.json"):
        assert stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) == 0o644, name


def test_atomic_write_replaces_a_planted_link_and_its_temp_file_is_exclusive(tmp_path, victim, monkeypatch):
    target = tmp_path / "report.json"
    os.symlink(victim, target)
    before = snapshot(victim)
    calls, real_open = [], os.open

    def spy(path, flags, *a, **k):
        calls.append((os.fspath(path), flags))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", spy)
    streams.atomic_write(str(target), "new report\n")
    monkeypatch.undo()
    temps = [f for p, f in calls if os.path.basename(p).startswith(".report.json.")]
    assert temps and all(f & os.O_CREAT and f & os.O_EXCL and f & os.O_NOFOLLOW for f in temps)
    assert not os.path.islink(target) and target.read_text() == "new report\n"
    assert snapshot(victim) == before
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_report_rebuilds_into_its_run_dir_replacing_planted_links_appending_nothing(tmp_path, victim):
    run = copy_sample(tmp_path / "run")
    for name in REPORT_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(run / name)
        os.symlink(victim, run / name)
    before = snapshot(victim)
    streams_before = {n: snapshot(run / n) for n in (EVENTS, TIMESERIES)}
    code, out, err = cli("report", run)
    assert code == 0, err
    for name in REPORT_FILES:
        s = os.lstat(run / name)
        assert stat.S_ISREG(s.st_mode) and not s.st_mode & 0o022, name
    assert snapshot(victim) == before
    assert {n: snapshot(run / n) for n in streams_before} == streams_before


def _in_child(fn):
    """Run ``fn`` in a forked child (it rewires fds 1 and 2); its exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_workers_log_is_opened_without_following_a_planted_link(tmp_path, victim):
    from loadgen.engine.worker import _redirect_output

    def target_prints(path):
        def fn():
            _redirect_output(str(path))
            print("the target printed this")
            sys.stdout.flush()
        return fn

    d = tmp_path / "run"
    d.mkdir()
    os.symlink(victim, d / WORKERS_LOG)
    before = snapshot(victim)
    assert _in_child(target_prints(d / WORKERS_LOG)) == 0
    assert snapshot(victim) == before and os.path.islink(d / WORKERS_LOG)  # the prints went to /dev/null
    d2 = tmp_path / "run2"
    d2.mkdir()
    old = os.umask(0)
    try:
        assert _in_child(target_prints(d2 / WORKERS_LOG)) == 0
    finally:
        os.umask(old)
    assert (d2 / WORKERS_LOG).read_text() == "the target printed this\n"
    assert stat.S_IMODE(os.stat(d2 / WORKERS_LOG).st_mode) == 0o644


# ====================================================================== row 4: control characters


def _result(name, messages):
    return StressTestResult(
        test_name=name, success=False, duration_seconds=1.0, max_concurrent_operations=2, peak_memory_mb=10.0,
        peak_cpu_percent=5.0, total_operations=10, successful_operations=8, failed_operations=2,
        throughput_ops_per_sec=10.0, error_messages=messages, stop_reason="stopped: " + CONTROL,
        exit_code=2, criteria=[{"criterion": "success_rate > 0.9" + CONTROL, "metric": "success_rate" + CONTROL,
                                "op": ">", "limit": 0.9, "value": 0.8, "passed": False}],
        accounting={"dispatched": 10, "succeeded": 8, "failed": 2, "timed_out": 0, "crashed": 0, "dropped": 0},
        breaches=[{"metric": "mem" + CONTROL, "value": 1.0, "limit": 0.5}],
        tracebacks={"ValueError" + CONTROL: "Traceback …\n  " + CONTROL}, errors={"E\x01": 2})


def assert_well_formed(run_dir, schema=None):
    junit = os.path.join(run_dir, "junit.xml")
    ET.parse(junit)  # well-formed XML 1.0
    if schema is not None:
        schema.validate(junit)
    page = open(os.path.join(run_dir, "report.html"), encoding="utf-8").read()
    assert not UNSAFE.search(page), repr(UNSAFE.search(page).group())


def test_a_plan_name_with_a_control_character_gives_well_formed_junit_and_valid_html(
        tmp_path, monkeypatch, no_env, schema):
    def fake(scs, session, kind, command=None):  # a run without processes: the real writers, names as given
        results = [_result(sc.name, [CONTROL, "\x00 nul", "\ufffe nonchar"]) for sc in scs]
        report = build_report(results, kind=kind, started_at=0.0, ended_at=1.0, thresholds=session.thresholds,
                              run_dir=session.run_dir, command=command)
        write_reports(session.run_dir, report)
        return api.Report(report, results, report["exit_code"], session.run_dir)

    monkeypatch.setattr(api, "run_scenarios", fake)
    plan = write(tmp_path, 'name = "bad\\u0001name"\n[[scenario]]\nname = "concurrent_load"\n'
                           'label = "lab\\u0001el\\u001f"\n')
    out = tmp_path / "out"
    code, stdout, err = cli("run", "--config", plan, "--out", out, "--quiet")
    assert code in (1, 2), err
    assert_well_formed(out, schema)
    root = ET.parse(out / "junit.xml").getroot()
    assert root.get("name") == "loadgen plan bad\ufffdname"
    assert "lab\ufffdel\ufffd" in (out / "report.html").read_text()


@pytest.mark.parametrize("text", [CONTROL, "".join(map(chr, range(0x20))), "\ufffe\uffff\ud800\U0001fffe", "\x00",
                                  "$x^$ $\\frac$"])
def test_writers_clean_control_characters_everywhere(text, schema, tmp_path):
    report = build_report([_result("comp" + text, [text, "msg" + text])], kind="plan " + text, started_at=0.0,
                          ended_at=1.0, thresholds={"max_cpu_percent" + text: text}, run_dir=str(tmp_path),
                          command="loadgen run " + text)
    report["recommendations"].append("see " + text)
    report["metadata"]["rebuild_note"] = text
    xml_text = render_junit(report)
    assert not UNSAFE.search(xml_text)
    ET.fromstring(xml_text.encode("utf-8"))
    page = render_html(report, [{"t": 1, "phase": "x" + text, "ops": 1}],
                       [{"t": 1, "type": "breach", "phase": text, "metric": text, "value": 1, "limit": 0}])
    assert not UNSAFE.search(page)
    d = tmp_path / "w"
    d.mkdir()
    write_reports(str(d), report)  # a lone surrogate must not stop summary.txt either
    assert_well_formed(d, schema)


def test_report_of_streams_with_control_characters_gives_well_formed_outputs(tmp_path, schema):
    run = copy_sample(tmp_path / "run", (EVENTS, TIMESERIES))
    for name in (EVENTS, TIMESERIES):
        text = (run / name).read_text().replace('"concurrent_load"', json.dumps("concurrent" + CONTROL + "load"))
        (run / name).write_text(text.replace('"duration reached"', json.dumps("reason \x00\x1b[31m\ufffe")))
    code, out, err = cli("report", run)
    assert code == 0, err
    assert_well_formed(run, schema)


# ====================================================================== property: ~200 hostile inputs

_NUMBER = re.compile(r"(?<=[:\[,])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?=[,\]}])")
_STRING_VALUE = re.compile(r'(?<=:)"(?:[^"\\]|\\.)*"')
_TOML_NUMBER = re.compile(r"(?<== )\d+")

poison_numbers = st.sampled_from(["9" * 33, "9" * 400, "9" * 5000, "-" + "9" * 4301, "1e999", "-1e400", "NaN",
                                  "Infinity", "-Infinity", "1e308", "123456789012345678901234567890", "-0", "0",
                                  "1e-400", "4.9e-324", "-1", "1e18"])
deep_values = st.one_of(st.sampled_from([65, 200, 990, 5000, 100_000]).map(lambda d: "[" * d + "]" * d),
                        st.sampled_from([65, 3000]).map(lambda d: '{"a":' * d + "1" + "}" * d))
control_strings = st.text(alphabet=st.sampled_from(list(CONTROL + "ab\\\"$é😀\ud800")), min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3), max_leaves=6)
OPS = ("number", "number", "deep", "rename", "string", "value", "raw_control", "truncate", "garbage_line", "bytes")


def _replace_one(draw, pattern, text, new):
    found = list(pattern.finditer(text))
    if not found:
        return text
    m = found[draw(st.integers(0, len(found) - 1))]
    return text[:m.start()] + new + text[m.end():]


@st.composite
def mutated_json(draw, text, names):
    """``text`` (JSON or JSON lines) after 0–3 hostile edits; bytes."""
    ops = draw(st.lists(st.sampled_from(OPS), max_size=3))
    for op in ops:
        if op == "number":
            text = _replace_one(draw, _NUMBER, text, draw(poison_numbers))
        elif op == "deep":
            text = _replace_one(draw, _NUMBER, text, draw(deep_values))
        elif op == "rename":  # a component, scenario or phase name with control characters, everywhere
            old = draw(st.sampled_from(names))
            text = text.replace(json.dumps(old), json.dumps(old + draw(control_strings)))
        elif op == "string":
            text = _replace_one(draw, _STRING_VALUE, text, json.dumps(draw(control_strings)))
        elif op == "value":
            text = _replace_one(draw, _NUMBER if draw(st.booleans()) else _STRING_VALUE, text,
                                json.dumps(draw(json_values)))
        elif op == "raw_control":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(control_strings) + text[at:]
        elif op == "truncate":
            text = text[:draw(st.integers(0, len(text)))]
        elif op == "garbage_line":
            lines = text.split("\n")
            lines.insert(draw(st.integers(0, len(lines))), draw(st.one_of(deep_values, json_values.map(json.dumps),
                                                                          st.text(max_size=20))))
            text = "\n".join(lines)
        elif op == "bytes":
            return draw(st.binary(max_size=200))
    return text.encode("utf-8", "surrogatepass")


NOT_REGULAR = ("fifo", "devzero", "dir", "dangling", "link_regular", "link_fifo", "link_victim", "missing")
KINDS = ("regular",) * 8 + NOT_REGULAR


def make_file(path, kind, content, victim):
    path = str(path)
    if kind == "regular":
        with open(path, "wb") as f:
            f.write(content)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "devzero":
        os.symlink("/dev/zero", path)
    elif kind == "dir":
        os.mkdir(path)
    elif kind == "dangling":
        os.symlink(path + ".nowhere", path)
    elif kind == "link_regular":
        make_file(path + ".real", "regular", content, victim)
        os.symlink(path + ".real", path)
    elif kind == "link_fifo":
        os.mkfifo(path + ".fifo")
        os.symlink(path + ".fifo", path)
    elif kind == "link_victim":
        os.symlink(victim, path)


def _text(name):
    with open(os.path.join(SAMPLE, name), encoding="utf-8") as f:
        return f.read()


REPORT_TEXT, EVENTS_TEXT, TIMESERIES_TEXT = _text("report.json"), _text(EVENTS), _text(TIMESERIES)
NAMES = ["concurrent_load", "baseline c=1", "success_rate > 0.7", "duration reached"]
PLAN_TEXT = ('name = "hostile"\ninputs = "in.jsonl"\nseed = 7\n[thresholds]\nmax_memory_mb = 2048\n'
             '[[scenario]]\nname = "concurrent_load"\nlabel = "closed"\nconcurrency = 2\nduration = "1s"\n'
             'criteria = ["success_rate > 0.5"]\n')


@st.composite
def hostile_file(draw, text, names=NAMES, regular=8):
    """``(kind, content)``: a regular file ``regular`` times in ``regular`` + 8, its content edited (or not)."""
    kind = draw(st.sampled_from(("regular",) * regular + NOT_REGULAR))
    return kind, draw(mutated_json(text, names))


@st.composite
def hostile_plan(draw):
    text = PLAN_TEXT
    for op in draw(st.lists(st.sampled_from(["name", "number", "deep", "truncate", "bytes", "nan"]), max_size=3)):
        if op == "name":
            text = text.replace('"hostile"', json.dumps("hostile" + draw(control_strings)))
        elif op == "number":
            text = _replace_one(draw, _TOML_NUMBER, text, draw(st.sampled_from(["9" * 33, "9" * 5000, "1e999",
                                                                                  "0", "-5", "inf"])))
        elif op == "deep":
            text += "deep = " + draw(deep_values) + "\n"
        elif op == "truncate":
            text = text[:draw(st.integers(0, len(text)))]
        elif op == "nan":
            text = text.replace("concurrency = 2", "concurrency = nan")
        elif op == "bytes":
            return draw(st.sampled_from(KINDS)), draw(st.binary(max_size=100))
    return draw(st.sampled_from(KINDS)), text.encode("utf-8", "surrogatepass")


@st.composite
def hostile_cases(draw, command):
    if command == "compare":
        sides = [draw(st.one_of(st.just(("pristine", None)), st.tuples(st.sampled_from(["file", "dir"]),
                                                                       hostile_file(REPORT_TEXT, regular=24))))
                 for _ in range(2)]
        return {"command": command, "sides": sides}
    if command == "report":
        return {"command": command, "dir_kind": draw(st.sampled_from(["dir"] * 8 + ["link_dir", "fifo", "devzero",
                                                                                    "missing"])),
                "events": draw(hostile_file(EVENTS_TEXT, regular=40)),
                "timeseries": draw(hostile_file(TIMESERIES_TEXT, regular=40)),
                "old_report": draw(hostile_file(REPORT_TEXT)),
                "planted": {n: draw(st.sampled_from(["none", "none", "link_victim", "dir", "fifo"]))
                            for n in REPORT_FILES[1:]}}
    return {"command": command, "plan": draw(hostile_plan()),
            "inputs": draw(hostile_file('{"i": 1}\n{"i": 2, "s": "x"}\n', ["x"]))}


def build_case(case, ex, victim):
    """The files of ``case`` under the example's folder ``ex``; the argv."""
    if case["command"] == "compare":
        argv = ["compare"]
        for i, (how, spec) in enumerate(case["sides"]):
            if how == "pristine":
                p = os.path.join(ex, f"pristine{i}.json")
                shutil.copy(os.path.join(SAMPLE, "report.json"), p)
            elif how == "file":
                p = os.path.join(ex, f"side{i}.json")
                make_file(p, *spec, victim)
            else:
                p = os.path.join(ex, f"side{i}")
                os.mkdir(p)
                make_file(os.path.join(p, "report.json"), *spec, victim)
            argv.append(p)
        return argv
    if case["command"] == "report":
        run = os.path.join(ex, "run")
        kind = case["dir_kind"]
        if kind == "link_dir":
            os.mkdir(run + ".real")
            os.symlink(run + ".real", run)
        elif kind != "dir":
            make_file(run, kind, b"", victim)
            return ["report", run]
        else:
            os.mkdir(run)
        make_file(os.path.join(run, EVENTS), *case["events"], victim)
        make_file(os.path.join(run, TIMESERIES), *case["timeseries"], victim)
        make_file(os.path.join(run, "report.json"), *case["old_report"], victim)
        for name, how in case["planted"].items():
            if how != "none":
                make_file(os.path.join(run, name), how, b"", victim)
        return ["report", run]
    plan = os.path.join(ex, "plan.toml")
    make_file(plan, *case["plan"], victim)
    make_file(os.path.join(ex, "in.jsonl"), *case["inputs"], victim)
    return ["validate", plan]


@pytest.mark.parametrize("command", ["compare", "report", "validate"])
@settings(max_examples=70, deadline=None, derandomize=True, database=None,  # 3 × 70 = 210 hostile inputs
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data())
def test_hostile_inputs_get_an_answer_never_a_crash_a_hang_or_a_write_elsewhere(tmp_path, monkeypatch, no_env,
                                                                              command, data):
    case = data.draw(hostile_cases(command), label="case")
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    monkeypatch.chdir(root)  # a relative write would land here, and show in the listing
    victim = root / "victim.txt"
    if not victim.exists():
        victim.write_text(VICTIM_TEXT)
    n = len([x for x in os.listdir(root) if x.startswith("ex")])
    ex = root / f"ex{n}"
    os.mkdir(ex)
    argv = build_case(case, str(ex), str(victim))
    before, victim_before = listing(root, skip=ex), snapshot(victim)
    code, out, err = cli(*argv)
    event(f"{case['command']} exit {code}")  # --hypothesis-show-statistics
    assert_answer(code, out, err, argv)
    assert listing(root, skip=ex) == before, argv
    assert snapshot(victim) == victim_before, argv
    if case["command"] == "report" and code == 0:  # every writer worked (html and junit failures are only logged)
        planted = case["planted"]
        for name in REPORT_FILES:
            if planted.get(name) != "dir":
                assert stat.S_ISREG(os.lstat(os.path.join(argv[1], name)).st_mode), (name, argv)
        if planted["junit.xml"] != "dir" and planted["report.html"] != "dir":
            assert_well_formed(argv[1])

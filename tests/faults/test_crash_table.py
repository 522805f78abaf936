"""Workers that die: the crash table (an operation raises, exits, is killed, segfaults or hangs; under
fork and spawn) and the restart limit. Real processes; after each fault the run goes on, or stops, with
accounting that adds up."""

import json

import pytest

from _helpers import START_METHODS, Runner, plan


CRASHES = [
    # how, crashed, timed_out, failed, exit words
    ("raise", 0, 0, 1, None),
    ("sys_exit", 1, 0, 0, "exit code 7"),
    ("os_exit", 1, 0, 0, "exit code 9"),
    ("sigkill", 1, 0, 0, "SIGKILL"),
    ("segfault", 1, 0, 0, "SIGSEGV"),
    ("hang", 0, 1, 0, "SIGKILL"),
]


@pytest.mark.parametrize("start_method", START_METHODS)
@pytest.mark.parametrize("how,crashed,timed_out,failed,words", CRASHES, ids=[c[0] for c in CRASHES])
def test_crash_table(tmp_path, start_method, how, crashed, timed_out, failed, words):
    marker = str(tmp_path / "marker")
    # One slot per worker: the faulting operation is the only one in flight in its worker. Only the
    # hang case needs an op timeout inside the run; the others get one longer than the run, so that a
    # 5 ms operation delayed by a loaded machine (a spawn replacement importing numpy on 2 busy cores)
    # cannot be counted as timed out.
    op_timeout_s = 0.8 if how == "hang" else 30.0
    out = Runner(plan("_targets:fault_once", start_method, concurrency=2, workers=2, slots=1,
                      duration_s=2.5, op_timeout_s=op_timeout_s, kwargs={"how": how, "marker": marker, "ms": 5}),
                 run_dir=str(tmp_path)).run()
    acc = out.accounting
    events = [json.loads(x) for x in open(tmp_path / "events.jsonl")]
    # Everything a failure needs to be understood from a CI log alone.
    seen = f"{acc}; exit {out.exit_code} ({out.stop_reason}); events {[e['type'] for e in events]}"
    assert acc.adds_up(), seen
    assert (acc.crashed, acc.timed_out, acc.failed) == (crashed, timed_out, failed), seen
    assert acc.succeeded > 50, seen  # the run went on after the fault
    assert out.exit_code == 0, seen
    crashes = [e for e in events if e["type"] == "worker_crash"]
    if words is None:
        assert not crashes
    else:
        assert len(crashes) == 1 and words in crashes[0]["exit"], f"{crashes}; {seen}"
        assert crashes[0]["worker"] in (0, 1) and crashes[0]["pid"] > 0
    if how == "hang":
        assert any(e["type"] == "timeout" for e in events)


ASYNC_CRASHES = [c if c[0] != "hang" else ("hang", 0, 1, 0, None) for c in CRASHES]  # async: cancelled, not killed


@pytest.mark.parametrize("how,crashed,timed_out,failed,words", ASYNC_CRASHES, ids=[c[0] for c in ASYNC_CRASHES])
def test_crash_table_on_async_slots(tmp_path, how, crashed, timed_out, failed, words):
    marker = str(tmp_path / "marker")
    out = Runner(plan("_targets:afault_once", "fork", concurrency=8, workers=2, slots=4, duration_s=1.5,
                      op_timeout_s=0.8 if how == "hang" else 30.0, kwargs={"how": how, "marker": marker, "ms": 5}),
                 run_dir=str(tmp_path)).run()
    acc = out.accounting
    events = [json.loads(x) for x in open(tmp_path / "events.jsonl")]
    seen = f"{acc}; exit {out.exit_code} ({out.stop_reason}); events {[e['type'] for e in events]}"
    assert acc.adds_up(), seen
    # A worker that dies takes its other in-flight operations with it (up to 3 more, the other slots).
    assert crashed <= acc.crashed <= crashed * 4 and (acc.timed_out, acc.failed) == (timed_out, failed), seen
    assert acc.succeeded > 50 and out.exit_code == 0, seen
    crashes = [e for e in events if e["type"] == "worker_crash"]
    assert (not crashes) if words is None else (len(crashes) == 1 and words in crashes[0]["exit"]), seen
    assert not any(e["type"] == "timeout" for e in events), seen  # an async hang is cancelled, never killed


def test_restart_limit_stops_the_run(tmp_path):
    out = Runner(plan("_targets:crash_always", concurrency=2, workers=2, slots=1, duration_s=20,
                      max_restarts=3), run_dir=str(tmp_path)).run()
    assert out.exit_code == 1
    assert "restart limit (3)" in out.stop_reason
    assert out.accounting.adds_up() and out.accounting.crashed >= 4
    assert out.duration_s < 15

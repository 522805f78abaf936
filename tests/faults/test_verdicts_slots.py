"""The verdict table of the slot loops (issue #23, rows 5 and 6): the real CLI, real workers.

Row 5: ``--op-timeout 5s`` on a no-op ended with exit 1 in about 2 s ("timeouts", the restart limit): the
master read a slot's start time twice, and a slot that ended its µs operation in between looked as old as
the clock's uptime. Now 0 timeouts, exit 0, over millions of operations.

Row 6: a result whose ``state`` raises or is a numpy record array, or an op that raises a CancelledError of
its own in 1 call of 200, killed the slot thread or the async slots' loop: the run ended after a fraction
of a second as "inputs exhausted", exit 0, its operations "crashed" with no event. Now each call counts
as a success (a returned value is the user's) or as a failure with its exception, and the run lasts its
duration. A slot that dies of loadgen's own error (injected here, in-process, under fork) is a worker
crash: a ``worker_crash`` event naming it, the worker replaced, and at the restart limit exit 1 — never
an early exit 0.
"""

import json
import os

import pytest

import _slot_targets
from _helpers import Runner, plan
from loadgen.errors import SLOT_DIED_EXITCODE

DURATION_S = 2.0
MIN_DURATION_S = 1.8  # the run lasted (nearly) its duration: no early end
PASSED = "loadgen: 1/1 passed, exit 0"
# The 1-in-200 cancel cases fail ~0.5 % of their calls on purpose: their criterion is given, so that the
# verdict judged is the one asked for, not a default one of failures.
SOME_FAILURES = ("--criterion", "success_rate > 0.9")


def _run(cli, tmp_path, *args):
    out = tmp_path / "run"
    code, stdout, stderr = cli.run("run", "--duration", f"{DURATION_S:g}s", "--workers", "2", "--out", str(out),
                                   *args, timeout=120)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()] \
        if (out / "events.jsonl").exists() else []
    return code, stdout, stderr, report, events


ROW5 = {
    # A no-op on thread slots: millions of operations, each slot's start written and cleared each time.
    "noop-threads": (("--target", "_targets:noop", "--concurrency", "4"), 1_000_000),
    # 64 async slots a worker: the master's numpy scan of the starts (counters.VECTOR_SLOTS).
    "noop-async-64-slots": (("--target", "_targets:anoop", "--concurrency", "128",
                             "--max-concurrent-operations", "128"), 100_000),
    "noop-async": (("--target", "_targets:anoop", "--concurrency", "4"), 100_000),
}


@pytest.mark.parametrize("case", ROW5)
def test_row5_an_op_timeout_never_times_out_a_fast_operation(cli, tmp_path, case):
    args, at_least = ROW5[case]
    code, stdout, stderr, report, events = _run(cli, tmp_path, *args, "--op-timeout", "5s")
    acc = report["accounting"] if report else None
    seen = f"exit {code}; {acc}; stderr {stderr[-600:]!r}; stdout {stdout[-600:]!r}"
    assert code == 0, seen
    assert PASSED in stdout.splitlines()[-1] and "Traceback" not in stderr, seen
    assert acc["timed_out"] == 0 and acc["crashed"] == 0 and acc["failed"] == 0, seen
    assert acc["dispatched"] >= at_least, seen
    assert not [e for e in events if e["type"] in ("timeout", "worker_crash")], seen
    result = report["detailed_metrics"][0]
    assert result["stop_reason"] == "duration reached" and result["duration_seconds"] >= MIN_DURATION_S, seen


ROW6 = {
    # case: (args, 1 call in how many fails (0: none), the error key)
    "raising-state": (("--target", "_slot_targets:raising_state"), 0),
    "record-array": (("--target", "_slot_targets:record_array"), 0),
    "async-raising-state": (("--target", "_slot_targets:araising_state"), 0),
    "async-record-array": (("--target", "_slot_targets:arecord_array"), 0),
    "async-cancel-1-in-200": (("--target", "_slot_targets:acancel_sometimes", *SOME_FAILURES),
                              _slot_targets.CANCEL_EVERY),
    "async-cancel-1-in-200-with-op-timeout": (("--target", "_slot_targets:acancel_sometimes", "--op-timeout", "5s",
                                               *SOME_FAILURES), _slot_targets.CANCEL_EVERY),
    "async-cancel-1-in-200-open-model": (("--target", "_slot_targets:acancel_sometimes", "--rate", "2000",
                                          *SOME_FAILURES), _slot_targets.CANCEL_EVERY),
    "sync-cancel-1-in-200": (("--target", "_slot_targets:cancel_sometimes", *SOME_FAILURES),
                             _slot_targets.CANCEL_EVERY),
}


@pytest.mark.parametrize("case", ROW6)
def test_row6_a_hostile_result_or_an_ops_own_cancellation_never_ends_a_run(cli, tmp_path, case):
    args, every = ROW6[case]
    if "--rate" not in args:
        args = (*args, "--concurrency", "4")
    code, stdout, stderr, report, events = _run(cli, tmp_path, *args)
    acc = report["accounting"] if report else None
    seen = f"exit {code}; {acc}; stderr {stderr[-600:]!r}; stdout {stdout[-600:]!r}"
    assert code == 0, seen
    assert PASSED in stdout.splitlines()[-1] and "Traceback" not in stderr, seen
    result = report["detailed_metrics"][0]
    assert result["stop_reason"] == "duration reached" and result["duration_seconds"] >= MIN_DURATION_S, seen
    assert acc["crashed"] == 0 and acc["timed_out"] == 0 and acc["dropped"] == 0, seen
    assert acc["dispatched"] == acc["succeeded"] + acc["failed"] >= 1000, seen
    assert not [e for e in events if e["type"] in ("worker_crash", "worker_killed")], seen
    if every:
        # Each worker's process counts its own calls: 1 in `every` of them failed, give or take one a worker.
        assert acc["dispatched"] // every - 2 <= acc["failed"] <= acc["dispatched"] // every + 2, seen
        assert result["errors"] == {"CancelledError": acc["failed"]}, seen
    else:
        assert acc["failed"] == 0, seen


# ---------------------------------------------------------------- a slot that dies of loadgen's own error


def _outcome_that_breaks(marker, once):
    """``results.outcome``, but the call after a marker file is claimed (once a run, or every time) raises:
    an error of the slot loop's own (the classification is loadgen's), not of the operation."""
    from loadgen.workload.results import outcome

    def broken(result):
        if not once or _claim(marker):
            raise RuntimeError("loadgen's own bug, injected")
        return outcome(result)

    return broken


def _claim(marker):
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


SLOT_DEATHS = {
    # case: (module whose outcome breaks, target)
    "thread-slot": ("loadgen.engine.slots", "_targets:sleep_ms"),
    "async-slots": ("loadgen.engine.aslots", "_targets:async_sleep"),
}


@pytest.mark.parametrize("case", SLOT_DEATHS)
def test_row6_a_slot_that_dies_is_a_worker_crash_and_the_worker_is_replaced(tmp_path, monkeypatch, case):
    module, ref = SLOT_DEATHS[case]
    monkeypatch.setattr(module + ".outcome", _outcome_that_breaks(str(tmp_path / "marker"), once=True))
    out = Runner(plan(ref, "fork", concurrency=2, workers=2, slots=1, duration_s=DURATION_S, kwargs={"ms": 5}),
                 run_dir=str(tmp_path)).run()
    acc = out.accounting
    events = [json.loads(x) for x in open(tmp_path / "events.jsonl")]
    seen = f"{acc}; exit {out.exit_code} ({out.stop_reason}); events {[e['type'] for e in events]}"
    crashes = [e for e in events if e["type"] == "worker_crash"]
    assert len(crashes) == 1 and crashes[0]["exitcode"] == SLOT_DIED_EXITCODE, seen
    assert "slot of the worker died" in crashes[0]["hint"], seen
    assert acc.adds_up() and acc.crashed == 1 and acc.succeeded > 50, seen  # replaced: the run went on
    assert out.stop_reason == "duration reached" and out.exit_code == 0, seen
    log = (tmp_path / "workers.log").read_text()
    assert "died:" in log and "loadgen's own bug, injected" in log, seen


@pytest.mark.parametrize("case", SLOT_DEATHS)
def test_row6_slots_that_keep_dying_end_the_run_at_the_restart_limit_never_with_0(tmp_path, monkeypatch, case):
    module, ref = SLOT_DEATHS[case]
    monkeypatch.setattr(module + ".outcome", _outcome_that_breaks("", once=False))
    out = Runner(plan(ref, "fork", concurrency=2, workers=2, slots=1, duration_s=20, max_restarts=2,
                      kwargs={"ms": 5}), run_dir=str(tmp_path)).run()
    acc = out.accounting
    seen = f"{acc}; exit {out.exit_code} ({out.stop_reason})"
    assert out.exit_code == 1 and "restart limit (2)" in out.stop_reason, seen
    assert acc.adds_up() and acc.crashed >= 3, seen
    assert out.duration_s < 15, seen

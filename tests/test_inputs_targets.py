"""User targets: per-worker factories, input records (cycle and once), bad input files."""

import json

import pytest

from loadgen.config import ResourceThresholds
from loadgen.errors import UsageError
from loadgen.workload.inputs import load_records
from loadgen.engine.load import RunPlan
from loadgen.engine.runner import Runner
from loadgen.workload.targets import TargetSpec

FREE = ResourceThresholds(max_cpu_percent=100)


def _records(tmp_path, n):
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(n)))
    return str(p)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_once_mode_uses_every_record_exactly_once_and_ends_the_run(tmp_path, start_method):
    seen = tmp_path / "seen.txt"
    spec = TargetSpec(ref="_targets:echo_record", kwargs={"path": str(seen)}, inputs=_records(tmp_path, 157),
                      inputs_mode="once")
    out = Runner(RunPlan(concurrency=4, workers=2, duration_s=30, target=spec, start_method=start_method),
                 FREE).run()
    got = sorted(json.loads(x)["i"] for x in seen.read_text().splitlines())
    assert got == list(range(157))
    assert out.stop_reason == "inputs exhausted"
    assert out.accounting.dispatched == 157 and out.duration_s < 20


def test_cycle_mode_goes_round(tmp_path):
    seen = tmp_path / "seen.txt"
    spec = TargetSpec(ref="_targets:echo_record", kwargs={"path": str(seen)}, inputs=_records(tmp_path, 5))
    out = Runner(RunPlan(concurrency=2, workers=2, duration_s=None, operations=40, target=spec), FREE).run()
    got = [json.loads(x)["i"] for x in seen.read_text().splitlines()]
    assert len(got) == 40 and set(got) == set(range(5))


def test_csv_records_are_dicts(tmp_path):
    p = tmp_path / "in.csv"
    p.write_text("name,n\nalpha,1\nbeta,2\n")
    assert load_records(str(p)) == [{"name": "alpha", "n": "1"}, {"name": "beta", "n": "2"}]


@pytest.mark.parametrize("name,content,words", [
    ("empty.jsonl", "", "no records"),
    ("bad.jsonl", '{"a": 1}\n{oops\n', "line 2"),
    ("bad.csv", "a,b\n1,2\n3\n", "line 3"),
    ("header.csv", "", "empty CSV"),
    ("data.txt", "x", ".jsonl or .csv"),
])
def test_bad_inputs_files_name_file_and_line(tmp_path, name, content, words):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(UsageError) as e:
        load_records(str(p))
    assert words in str(e.value) and name in str(e.value)


def test_factory_builds_once_per_worker(tmp_path):
    builds = tmp_path / "builds.txt"
    spec = TargetSpec(ref="_targets:make_client", factory=True, kwargs={"path": str(builds)})
    out = Runner(RunPlan(concurrency=6, workers=2, duration_s=1.5, target=spec), FREE).run()
    assert out.accounting.succeeded > 100
    assert len(builds.read_text().split()) == 2  # once per worker, not per call


def test_async_target_and_exceptions_classified_with_tracebacks(tmp_path):
    spec = TargetSpec(ref="_targets:async_sleep", kwargs={"ms": 2, "fail_every": 4},
                      inputs=_records(tmp_path, 40), inputs_mode="once")
    out = Runner(RunPlan(concurrency=4, workers=2, duration_s=20, target=spec), FREE).run()
    acc = out.accounting
    assert acc.dispatched == 40 and acc.failed == 10 and acc.succeeded == 30  # i = 0, 4, …, 36 fail
    assert out.errors.to_dict() == {"KeyError": 10}
    tbs = out.tracebacks["KeyError"]
    assert 1 <= len(tbs) <= 3 and all("async_sleep" in tb and "KeyError" in tb for tb in tbs)

"""Input records without a run: CSV rows as dicts, bad input files named by file and line. The runs
that consume them: ``tests/integration/test_inputs_targets.py``."""

import pytest

from loadgen.errors import UsageError
from loadgen.workload.inputs import load_records


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

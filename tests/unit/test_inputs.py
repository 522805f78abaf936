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


def _op_record(record):
    return record


def _op_fields(user, amount, scale=1):
    return user, amount * scale


def _op_kwonly(*, user):
    return user


def _op_nothing():
    return None


def _op_default(inputs=None, path=""):
    return inputs


@pytest.mark.parametrize("fn,kwargs,style", [
    (_op_record, {}, "dict"), (_op_default, {"path": "x"}, "dict"), (_op_nothing, {}, "dict"),
    (_op_fields, {}, "keywords"), (_op_kwonly, {}, "keywords"),
    (_op_fields, {"amount": 2}, "dict"),  # one required parameter left: the record is it
])
def test_a_record_arrives_as_one_dict_or_as_keywords_by_the_targets_signature(fn, kwargs, style):
    from loadgen.workload.targets import input_style

    assert input_style(fn, kwargs) == style


@pytest.mark.parametrize("fn,record,words", [
    (_op_fields, {"user": "a"}, "missing a required argument: 'amount'"),
    (_op_fields, {"user": "a", "amount": 1, "extra": 2}, "unexpected keyword argument 'extra'"),
    (_op_nothing, {"user": "a"}, "takes no argument"),
    (_op_kwonly, ["a"], "not an object with named fields"),
])
def test_a_target_that_cannot_take_the_first_record_is_one_clear_line(fn, record, words):
    from loadgen.workload.targets import _check_binding

    with pytest.raises(UsageError) as e:
        _check_binding("t.py:op", fn, {}, record)
    msg = str(e.value)
    assert words in msg and "\n" not in msg and "def op(user, amount)" in msg

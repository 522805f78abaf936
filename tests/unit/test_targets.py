"""Targets without processes: what a module that exits at import, and a result that is no result, give."""

import asyncio
import functools
import textwrap

import pytest

from loadgen.errors import TargetError
from loadgen.workload import results, targets
from loadgen.workload.results import misuse_message, misuse_of, outcome
from loadgen.workload.targets import TargetSpec, resolve


@pytest.mark.parametrize("tail, says", [
    ("import sys\nsys.exit(main())", "raised SystemExit(0) (it calls sys.exit when imported"),
    ("raise SystemExit('bye')", "raised SystemExit('bye')"),
    ("raise KeyboardInterrupt", "raised KeyboardInterrupt"),
    ("raise GeneratorExit", "raised GeneratorExit"),
    ("class Boom(BaseException): pass\nraise Boom('x\\ny')", "raised Boom: x y"),
    ("raise ValueError('bad')", "raised ValueError: bad"),
])
def test_a_module_that_raises_anything_at_import_is_a_target_error(tmp_path, tail, says):
    path = tmp_path / "mod.py"
    path.write_text("def main():\n    return 0\n\ndef op():\n    return 1\n\n" + tail + "\n")
    with pytest.raises(TargetError) as e:
        resolve(f"{path}:op")
    assert says in str(e.value) and "\n" not in str(e.value)
    import sys

    assert "loadgen_target_mod" not in sys.modules  # a half-imported module is not kept


def test_a_module_getattr_that_exits_is_a_target_error(tmp_path):
    path = tmp_path / "lazy.py"
    path.write_text("import sys\ndef __getattr__(name):\n    sys.exit(3)\n")
    with pytest.raises(TargetError, match=r"looking up 'op' raised SystemExit\(3\)"):
        resolve(f"{path}:op")


async def _coro():
    return 1


def _gen():
    yield 1


async def _agen():
    yield 1


class _Awaitable:
    def __await__(self):
        return iter(())


@pytest.mark.parametrize("make, kind", [
    (lambda: (lambda: 1), "a function"),
    (lambda: len, "a function"),
    (lambda: [].append, "a function"),
    (lambda: functools.partial(len, ()), "a function"),
    (lambda: _gen(), "a generator"),
    (lambda: _agen(), "an async generator"),
    (lambda: _Awaitable(), "an awaitable"),
    (lambda: asyncio.Future(loop=asyncio.new_event_loop()), "an awaitable"),
    (lambda: None, None), (lambda: 0, None), (lambda: {"state": "ok"}, None), (lambda: b"", None),
    (lambda: object(), None), (lambda: type("R", (), {"state": "ok"})(), None),
])
def test_what_cannot_be_a_result(make, kind):
    assert misuse_of(make()) == kind


def test_outcome_of_no_result_is_a_failure_that_tells_the_worker_once_and_closes_the_coroutine():
    stops = []
    results.on_misuse(lambda: stops.append(1))
    try:
        coro = _coro()
        assert outcome(coro) == "returned an un-awaited coroutine"
        assert coro.cr_frame is None  # closed: no "never awaited" warning per call
        assert outcome(lambda: 1) == "returned a function"
        assert results.misused == ["an un-awaited coroutine", None]  # the first one is kept
        assert stops == [1, 1]
        assert outcome(None) is None and outcome(3) is None
    finally:
        results.on_misuse(None)
    assert results.misused is None


@pytest.mark.parametrize("spec, kind, says", [
    (TargetSpec(ref="lg.py:make_read"), "a function", "lg.py:make_read returned a function (did you mean "
                                                       "--target-factory?)"),
    (TargetSpec(ref="lg.py:f", factory=True), "a function", "the operation built by factory lg.py:f returned a "
                                                           "function"),
    (TargetSpec(ref="lg.py:c"), "an un-awaited coroutine", "lg.py:c returned an un-awaited coroutine (a sync "
                                                           "target cannot return one: make it `async def`"),
    (TargetSpec(ref="lg.py:g"), "a generator", "lg.py:g returned a generator (return the result, do not yield it)"),
])
def test_the_line_names_the_target_and_the_way_out(spec, kind, says):
    assert misuse_message(spec, kind).startswith(says)


def test_a_factory_that_returns_no_callable_is_named_with_what_it_returned(tmp_path):
    path = tmp_path / "f.py"
    path.write_text(textwrap.dedent("""
        def make():
            return 42
    """))
    with pytest.raises(TargetError, match=r"factory .*f.py:make returned 42 \(of type int\), not a callable"):
        targets.build_operation(TargetSpec(ref=f"{path}:make", factory=True), 0)


def test_a_factory_that_exits_is_a_target_error_and_one_that_raises_keeps_its_exception(tmp_path):
    path = tmp_path / "g.py"
    path.write_text("import sys\ndef exits():\n    sys.exit(0)\ndef fails():\n    raise ConnectionError('down')\n")
    with pytest.raises(TargetError, match=r"factory .*g.py:exits raised SystemExit\(0\)$"):
        targets.build_operation(TargetSpec(ref=f"{path}:exits", factory=True), 0)
    with pytest.raises(ConnectionError, match="down"):
        targets.build_operation(TargetSpec(ref=f"{path}:fails", factory=True), 0)

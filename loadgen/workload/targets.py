"""What an operation calls: the embedded flow or a user's ``module:callable``.

A :class:`TargetSpec` is plain, picklable data; it is resolved into a
callable inside each worker (:func:`build_operation`) and once in the
master beforehand (:func:`check_target`) so that a bad target is a clear
usage error before any process starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field

from ..errors import TargetError
from .results import outcome

@dataclass(frozen=True)
class TargetSpec:
    """``ref``: ``package.module:callable`` or ``path/to/file.py:callable``;
    None means the embedded flow built from ``flow_params`` (strings from
    ``--flow-param KEY=VALUE``, or typed values from the API) — unless ``mix``
    names several ops (:class:`~loadgen.workload.mix.MixOp`), each picked by its
    weight, each with ``kwargs`` under its own ``args``."""

    ref: str | None = None
    flow_params: dict = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)
    seed: int | None = None
    factory: bool = False  # ref is called once per worker (with kwargs) and returns the operation
    inputs: str | None = None  # a .jsonl/.csv file: each operation gets the next record
    inputs_mode: str = "cycle"  # or "once": the run ends when the records run out
    mix: tuple = ()  # MixOp, …: a weighted mix of operations (ref is None then)
    asynchronous: bool | None = None  # runs on async slots (check_target says; None: not known in the master)

    @property
    def label(self):
        """What reports call the target: ``ref``, the mix's ops, or ``MockAIWritingFlowV2`` for the embedded flow."""
        if self.mix:
            return "mix " + ", ".join(f"{op.ref}@{op.weight}" for op in self.mix)
        return self.ref or "MockAIWritingFlowV2"

    @property
    def is_flow(self):
        """True for the embedded flow (no ref, no mix)."""
        return self.ref is None and not self.mix

    def op_kwargs(self, op):
        """The keyword arguments of mix op ``op``: the run's ``kwargs`` under the op's own ``args``."""
        return {**self.kwargs, **op.args}


def resolve(ref):
    """Import ``ref`` and return the object it names; raises :class:`TargetError`."""
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"{ref!r}: expected MODULE:CALLABLE or PATH.py:CALLABLE")
    name = None  # a file's module name in sys.modules, dropped again when it cannot be imported
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = os.path.abspath(module_name)
            if not os.path.isfile(path):
                raise TargetError(f"{ref!r}: no such file {module_name!r}")
            name = "loadgen_target_" + os.path.splitext(os.path.basename(path))[0]
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except TargetError:
        raise
    except ImportError as e:
        raise TargetError(f"{ref!r}: cannot import {module_name!r}: {e}") from e
    except BaseException as e:  # noqa: BLE001 - the module itself raised while importing
        # SystemExit and KeyboardInterrupt too: a module that ends in ``sys.exit(main())`` would
        # otherwise end loadgen itself with the module's code (0: nothing run, nothing written).
        if name is not None:
            sys.modules.pop(name, None)
        raise TargetError(f"{ref!r}: importing {module_name!r} raised {_raised(e)}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{ref!r}: module {module_name!r} has no attribute {attr!r}") from None
        except BaseException as e:  # noqa: BLE001 - a module __getattr__ or a property that raises
            raise TargetError(f"{ref!r}: looking up {attr!r} raised {_raised(e)}") from None
    if not callable(obj):
        raise TargetError(f"{ref!r}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj


def _raised(e, imported=True):
    """What an exception says, in one line: ``SystemExit(0)``, with a hint for an exit at import."""
    if isinstance(e, SystemExit):
        if not imported:
            return f"SystemExit({e.code!r})"
        return (f"SystemExit({e.code!r}) (it calls sys.exit when imported: put that under "
                "`if __name__ == \"__main__\":`)")
    if isinstance(e, KeyboardInterrupt):
        return "KeyboardInterrupt"
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def check_target(spec, records=None):
    """Fail early, in the master, for a target that cannot work — one that cannot take the first
    ``--inputs`` record included (:func:`input_style`), not 30,000 failed operations later.
    ``records``: the inputs already read (else read from ``spec.inputs``).

    Returns whether the operation runs on async slots (``TargetSpec.asynchronous``): an ``async def``
    target or mix of them, the flow with ``async_io``; None for a factory (known only once it ran,
    in a worker)."""
    if records is None and spec.inputs is not None:
        from .inputs import MODES, load_records

        if spec.inputs_mode not in MODES:
            raise TargetError(f"inputs_mode: {spec.inputs_mode!r} is not one of {', '.join(MODES)}")
        records = load_records(spec.inputs)
    if spec.is_flow:
        return _build_flow(spec.flow_params, spec.seed).async_io
    coroutines = []
    for op in spec.mix:
        if op.http is not None:
            from ..http.spec import check_fields

            coroutines.append(True)
            if records:
                check_fields(op.http, records[0], op.name)
            elif op.http.fields:
                raise TargetError(f"{op.name}: the template names {{{sorted(op.http.fields)[0]}}}: give --inputs "
                                  "records to fill it")
    for ref, kwargs in ([(op.ref, spec.op_kwargs(op)) for op in spec.mix if op.http is None]
                        or ([(spec.ref, dict(spec.kwargs))] if not spec.mix else [])):
        fn = resolve(ref)
        coroutines.append(_is_coroutine_function(fn))
        if records and not spec.factory:  # a factory's operation exists only in the workers
            _check_binding(ref, fn, kwargs, records[0])
    return None if spec.factory else all(coroutines)


def _is_coroutine_function(fn):
    """``async def`` — a function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def input_style(fn, kwargs=()):
    """How an ``--inputs`` record reaches ``fn``: ``"keywords"`` — ``fn(**record)`` — when ``fn`` has two
    or more required parameters that ``kwargs`` (the ``--target-arg`` names) does not supply, or a
    required keyword-only one (``def op(user, amount)``, ``def op(*, user)``); else ``"dict"``, the
    record as one positional argument (``def op(record)``, ``def op(inputs=None)``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return "dict"
    required = [p for p in params if p.default is p.empty and p.name not in kwargs
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if any(p.kind == p.KEYWORD_ONLY for p in required) or len(required) >= 2:
        return "keywords"
    return "dict"


def _check_binding(ref, fn, kwargs, record):
    """:class:`TargetError` (exit 2, one line) when ``record`` cannot be passed to ``fn`` as
    :func:`input_style` says: what is missing or unexpected, the record's keys, the rule."""
    style = input_style(fn, kwargs)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        if style == "keywords":
            if not isinstance(record, dict):
                raise TypeError(f"the record is a {type(record).__name__}, not an object with named fields")
            sig.bind(**record, **kwargs)
        else:
            sig.bind(record, **kwargs)
    except TypeError as e:
        why = "it takes no argument, so the records would never reach it" if not sig.parameters else e
        keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
        how = "as keywords (**record)" if style == "keywords" else "as one argument (a dict)"
        raise TargetError(f"--target {ref}{sig}: the first --inputs record ({keys}) cannot be passed {how}: {why}. "
                          "A record reaches the target as one dict when it takes one argument "
                          "(def op(record)), as keywords when it names two or more (def op(user, amount))") from None


def build_operation(spec, worker_index):
    """Return ``call(inputs) -> result`` for one worker.

    The embedded flow gets its own instance per worker, seeded from the
    run's seed and the worker index so workers do not repeat each other.
    ``async def`` targets give an :class:`AsyncCall`: the worker runs them on async slots.
    """
    if spec.is_flow:
        seed = None if spec.seed is None else spec.seed * 1009 + worker_index
        flow = _build_flow(spec.flow_params, seed)
        return AsyncCall(flow.akickoff, {}) if flow.async_io else flow.kickoff
    if spec.mix:
        from .mix import AsyncMix, Mix

        calls = [_http_call(op.http) if op.http is not None else
                 _call_of(op.ref, spec.op_kwargs(op), spec.factory, spec.inputs is not None) for op in spec.mix]
        weights = [op.weight for op in spec.mix]
        refs = [op.ref for op in spec.mix]
        if all(getattr(c, "is_async", False) for c in calls):
            return AsyncMix(calls, weights, worker_index, outcome, refs)
        calls = [blocking(c) if getattr(c, "is_async", False) else c for c in calls]
        return Mix(calls, weights, worker_index, outcome, refs)
    return _call_of(spec.ref, dict(spec.kwargs), spec.factory, spec.inputs is not None)


def _short_repr(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _http_call(http):
    from ..http.client import HttpOp

    return HttpOp(http)


def _call_of(ref, kwargs, factory, with_inputs):
    """``call(inputs) -> result`` of one target ``ref`` (see :func:`build_operation`)."""
    fn = resolve(ref)
    if factory:
        # Per-worker setup: connection pools and models are built once, not per call.
        try:
            fn = fn(**kwargs)
        except Exception:
            raise  # the factory's own failure (a client that cannot connect): the worker reports it as it is
        except BaseException as e:  # noqa: BLE001 - sys.exit in a factory is loadgen's usage error, not its exit
            raise TargetError(f"factory {ref} raised {_raised(e, imported=False)}") from None
        kwargs = {}
        if not callable(fn):
            raise TargetError(f"factory {ref} returned {_short_repr(fn)} (of type {type(fn).__name__}), not a "
                              "callable (with --target-factory it must return the operation)")
    keywords = with_inputs and input_style(fn, kwargs) == "keywords"
    if _is_coroutine_function(fn):
        return AsyncCall(fn, kwargs, keywords, _takes_input(fn))
    if keywords:
        return lambda inputs: fn(**inputs, **kwargs)
    if _takes_input(fn):
        return (lambda inputs: fn(inputs, **kwargs)) if kwargs else fn
    return (lambda inputs: fn(**kwargs)) if kwargs else (lambda inputs: fn())


class AsyncCall:
    """``call(inputs)`` → the coroutine of an ``async def`` target: run by a worker's async slots
    (``engine.aslots``), many at once on one event loop. ``is_async`` tells the worker so."""

    is_async = True
    __slots__ = ("fn", "kwargs", "keywords", "takes_input")

    def __init__(self, fn, kwargs, keywords=False, takes_input=True):
        self.fn, self.kwargs, self.keywords, self.takes_input = fn, kwargs, keywords, takes_input

    def __call__(self, inputs):
        if self.keywords:
            return self.fn(**inputs, **self.kwargs)
        return self.fn(inputs, **self.kwargs) if self.takes_input else self.fn(**self.kwargs)


def blocking(acall):
    """A sync ``call(inputs)`` that runs the async ``acall`` to its end on an event loop of the calling
    thread (one per thread, kept): an async op in a mix whose other ops are sync."""
    import asyncio
    import threading

    local = threading.local()

    def call(inputs):
        loop = getattr(local, "loop", None)
        if loop is None:
            loop = local.loop = asyncio.new_event_loop()
        return loop.run_until_complete(acall(inputs))

    return call


def _build_flow(params, seed):
    from .flow import build_flow

    params = dict(params)
    if seed is not None:
        params.setdefault("seed", seed)
    return build_flow(params)


def _takes_input(fn):
    """True when ``fn`` accepts a positional argument (the operation's input)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL):
            return True
    return False

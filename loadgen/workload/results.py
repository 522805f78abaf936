"""What a call's result or exception means: success, a failure and its error key, or a misuse.

Every slot loop (``engine.slots``, ``engine.aslots``) and a mix (``workload.mix``) classify each call
with :func:`outcome` and :func:`error_key`; :func:`outcome` also finds a result that cannot be one —
a function, a coroutine, a generator, an awaitable.

``--target lg.py:make_read`` where make_read is a factory (``--target-factory`` forgotten) "succeeds"
millions of times and sends no request: every call returns a function. So do a sync callable that returns
a coroutine (never awaited) or an awaitable, and a generator function (never run). Such a result is found
on the first call of a worker's slots, in the worker, not by a probe call in the master: a probe would
run the user's code outside the pool's guard (its memory, its process group) and send the user's service
a request that no report counts. The call that found it counts as failed; the worker stops its slots at
once (``on_misuse``) and tells the master, which ends the run as a usage error (exit 2) naming it.
"""

from __future__ import annotations

import functools
import types

# type → what a result of that type is when it cannot be a result, or None: learnt per type, so that the
# check costs one dict lookup a call (the hot loop's budget is tens of nanoseconds).
_KIND_OF_TYPE = {
    types.FunctionType: "a function", types.BuiltinFunctionType: "a function", types.MethodType: "a function",
    functools.partial: "a function", types.CoroutineType: "an un-awaited coroutine",
    types.GeneratorType: "a generator", types.AsyncGeneratorType: "an async generator",
    **dict.fromkeys((int, float, str, bytes, bool, dict, list, tuple, set), None),
}
_TYPES_KEPT = 1000  # types learnt at most (a target returning instances of ever new classes stays bounded)
_UNSEEN = object()
MISUSE_KEY = "returned "  # the error key of a call that returned one: "returned a function"

misused = None  # [kind, ref or None]: the first such result this process saw (a worker reads it)
_on_misuse = None  # the worker's callback: stop the slots


def on_misuse(callback):
    """Call ``callback()`` (from the slot's thread) when an operation first returns what cannot be a
    result; the worker stops its slots with it. Forgets what an earlier run of this process saw."""
    global misused, _on_misuse
    misused, _on_misuse = None, callback


def misuse_of(result):
    """What ``result`` is when it cannot be an operation's result (``"a function"``, ``"an un-awaited
    coroutine"``, ``"a generator"``, ``"an async generator"``, ``"an awaitable"``), else None."""
    kind = _KIND_OF_TYPE.get(type(result), _UNSEEN)
    return _learn(type(result)) if kind is _UNSEEN else kind


def _learn(t):
    kind = "an awaitable" if hasattr(t, "__await__") else None
    if len(_KIND_OF_TYPE) < _TYPES_KEPT:
        _KIND_OF_TYPE[t] = kind
    return kind


def _note_misuse(result, kind):
    global misused
    if misused is None:
        misused = [kind, None]
    close = getattr(result, "close", None)  # a coroutine or generator: no "never awaited" warning per call
    if close is not None and isinstance(result, (types.CoroutineType, types.GeneratorType)):
        close()
    callback = _on_misuse
    if callback is not None:
        callback()


def attribute_misuse(ref):
    """Name ``ref`` (a mix's op) as the target whose result was the misuse noted, if none is named yet."""
    if misused is not None and misused[1] is None:
        misused[1] = ref


def misuse_message(spec, kind, ref=None):
    """The one line of a run ended because ``ref`` (default: ``spec``'s target) returned ``kind``."""
    ref = ref or spec.ref or spec.label
    what = f"the operation built by factory {ref}" if spec.factory else ref
    if kind == "a function":
        hint = ("the factory's operation must return a result, not another function" if spec.factory
                else "did you mean --target-factory?")
    elif kind == "an un-awaited coroutine":
        hint = "a sync target cannot return one: make it `async def`; an async one must await it"
    elif kind == "an awaitable":
        hint = "make the target `async def` and await it inside"
    else:
        hint = "return the result, do not yield it"
    return f"{what} returned {kind} ({hint})"


MAX_KEY_CHARS = 200  # of an error key (a class name, an error_key): a key is counted per second, not a message


def error_key(exc):
    """How reports count a failure raised as ``exc``: its ``error_key`` when it carries one (an HTTP op's
    ``HTTP 404 GET /drafts/{id}``), else its class's name."""
    key = getattr(exc, "error_key", None)
    key = key if isinstance(key, str) else type(exc).__name__
    return key if len(key) <= MAX_KEY_CHARS else key[:MAX_KEY_CHARS] + "…"  # a class name made at run time can be any size


FAILED_STATE = "failed"  # a returned result's ``state`` that means the operation failed (the embedded flow's)


def outcome(result):
    """Classify a returned value: ``None`` for success, else an error key. Never raises.

    Returning is success, except for a flow-style result whose ``state`` is the string ``failed``
    (the embedded flow returns failures, it does not raise), and a result that cannot be one — a
    function, a coroutine, a generator, an awaitable (:func:`misuse_of`): its key is ``"returned …"``
    and the worker is told (:func:`on_misuse`). Anything odd about ``state`` — a property that raises,
    a numpy array (whose ``==`` is element-wise and whose truth value is ambiguous), an object with its
    own ``__eq__`` — is not a returned failure: the call returned, and what it returned is the user's.
    A ``str`` subclass (an enum's member) is compared as the string it holds."""
    if result is None:  # the common no-op's result: nothing else to look at
        return None
    kind = _KIND_OF_TYPE.get(type(result), _UNSEEN)  # misuse_of, inline: this runs once a call
    if kind is not None:
        if kind is _UNSEEN:
            kind = _learn(type(result))
        if kind is not None:
            _note_misuse(result, kind)
            return MISUSE_KEY + kind
    try:
        state = getattr(result, "state", None)
        # isinstance may ask the object its __class__, which may raise too; str.__eq__ skips a subclass's own ==.
        failed = isinstance(state, str) and str.__eq__(state, FAILED_STATE)
    except Exception:  # noqa: BLE001 - a raising ``state`` property: the call still returned
        return None
    if not failed:
        return None
    return f"{_text_of(result, 'failed_stage') or 'flow'}: {_text_of(result, 'reason') or 'failed'}"


def _text_of(result, name):
    """``str(result.<name>)``, or None when it is missing, empty or cannot be read or printed."""
    try:
        value = getattr(result, name, None)
        return None if value is None else str(value)
    except Exception:  # noqa: BLE001 - an error key must come out of any result
        return None

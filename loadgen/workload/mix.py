"""Mixed operations: several targets in one run, each picked by its weight, each measured on its own.

::

    loadgen run --target shop.py:login@1 --target shop.py:browse@9 --concurrency 20 --duration 1m \\
                --criterion "p95_ms{op=browse} < 200"

or, in a plan, ``[[scenario.ops]]`` tables (``target``, ``weight``, ``name``, ``args``). An op is named
after the function it calls (``browse``); ``NAME=MOD:fn@WEIGHT`` names it on the command line as a plan's
``name =`` does (``"GET /drafts/{id}=shop.py:draft@3"``: any printable name without ``=``), which a
factory's ops (``--target-factory``) must do: their function exists only in the workers. Weights are
whole numbers (as Locust's ``@task(weight)``). Each worker goes through a fixed sequence that holds
the weights exactly — a smooth weighted round robin, ``login browse browse … browse`` spread out,
not drawn at random — from its own place in it, so the mix over a run is within one sequence per
worker of the weights (9:1 over 100,000 operations: ≤ 0.02 %).

A mix is one operation to the engine (:class:`Mix`): the slots time, count and classify it as any
target. The mix times and classifies each call too and keeps ``(op, µs, error key)`` in this
process's list, which the worker drains into its per-second batch (:func:`drain`); the master
adds them per op (:func:`add_ops`). So every op has its own histogram, counts and errors, and
the run's totals stay the engine's. An operation that times out or dies with its worker counts in
the run's accounting only: which op it was died with it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from ..analysis.stats import CappedCounter
from ..errors import UsageError
from .results import MISUSE_KEY, attribute_misuse, error_key

MAX_OPS = 50  # ops in one mix
MAX_WEIGHT = 10_000
OP_ERROR_KEYS = 10  # error keys kept per op, "other" among them (the run's own table keeps more)
OP_PREFIX = "op:"  # a result's histograms: "op:NAME" beside "latency"
MAX_NAME_CHARS = 100  # an op's name: a Locust-style "GET /drafts/{id}" fits

_clock = time.perf_counter_ns
_log = []  # (op index, µs, error key or None), appended by the slots' threads through Mix.__call__


@dataclass(frozen=True)
class MixOp:
    """One op of a mix: ``name`` (reports, criteria ``{op=NAME}``), ``ref`` (``MOD:fn``), ``weight``
    and ``args`` (its own keyword arguments, over the run's ``target_args``). ``named``: the user gave
    the name (``NAME=MOD:fn``, ``name =``); else it is the function's."""

    name: str
    ref: str
    weight: int = 1
    args: dict = field(default_factory=dict)
    named: bool = field(default=False, compare=False)
    http: object = None  # an HTTP op's loadgen.http.spec.HttpSpec (ref then names it: "GET http://…")

    def __str__(self):
        return f"{self.name}@{self.weight}"


def split_weight(text):
    """``("MOD:fn", 9)`` of ``"MOD:fn@9"``; ``(text, None)`` without a weight."""
    head, at, tail = text.rpartition("@")
    if at and tail.strip().isdigit() and ":" in head:
        return head, int(tail)
    return text, None


def split_name(text):
    """``("read", "lg.py:make_read@9")`` of ``"read=lg.py:make_read@9"`` (the op's name, given on the
    command line as a plan's ``name =``: everything before the first ``=``, which a name cannot hold);
    ``(None, text)`` without one."""
    name, eq, rest = text.partition("=")
    if eq and ":" in rest:
        return name.strip(), rest.strip()
    return None, text


def is_mix_item(text):
    """True when a ``--target`` text makes a mix on its own: it carries a weight or a name."""
    name, rest = split_name(text)
    return name is not None or split_weight(rest)[1] is not None


def parse_op(item, where):
    """A :class:`MixOp` from ``"MOD:fn[@WEIGHT]"`` or a table ``{target, weight, name, args}``;
    :class:`UsageError` naming ``where`` for anything else."""
    if isinstance(item, MixOp):
        return item
    if isinstance(item, str):
        name, rest = split_name(item)
        ref, weight = split_weight(rest)
        table = {"target": ref.strip(), "weight": 1 if weight is None else weight}
        if name is not None:
            table["name"] = name
    elif isinstance(item, dict):
        table = item
        if "url" in table:
            return http_op(table, where)
        unknown = set(table) - {"target", "weight", "name", "args"}
        if unknown:
            raise UsageError(f"{where}: unknown key {sorted(unknown)[0]!r} (an op has target, weight, name, args; "
                             "an HTTP op url, method, headers, json or body, expect_status, name, weight)")
    else:
        raise UsageError(f"{where}: expected \"MOD:fn@WEIGHT\" or a table with target and weight, "
                         f"got {type(item).__name__}")
    ref = table.get("target")
    if not isinstance(ref, str) or ":" not in ref:
        raise UsageError(f"{where}: expected target = \"MOD:fn\" (or PATH.py:fn), got {ref!r}")
    weight = _weight(table, where)
    named = "name" in table
    name = _checked_name(table.get("name", ref.rpartition(":")[2].rpartition(".")[2]), where)
    args = table.get("args", {})
    if not isinstance(args, dict):
        raise UsageError(f"{where}.args: expected a table of keyword arguments, got {type(args).__name__}")
    return MixOp(name, ref, weight, dict(args), named)


def _checked_name(name, where):
    if not isinstance(name, str) or not name or name != name.strip() or not name.isprintable() \
            or len(name) > MAX_NAME_CHARS:
        raise UsageError(f"{where}: op name {name!r}: 1 to {MAX_NAME_CHARS} printable characters, no space "
                         "at either end (\"GET /drafts/{id}\" is fine)")
    return name


def _weight(table, where):
    weight = table.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
        raise UsageError(f"{where}: weight must be a whole number from 1 to {MAX_WEIGHT}, got {weight!r}")
    return weight


HTTP_OP_KEYS = ("url", "method", "headers", "json", "body", "expect_status", "checks", "insecure", "name", "weight")


def http_op(table, where):
    """A :class:`MixOp` of an HTTP op from a table (``[[scenario.ops]]`` with ``url``, or the command line's
    ``--url`` with its ``--method``, ``--header``, … — see :mod:`loadgen.http.spec`). Its name defaults to
    the method and the URL's path template, ``GET /drafts/{id}``."""
    from ..http.spec import build

    unknown = set(table) - set(HTTP_OP_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key {sorted(unknown)[0]!r} (an HTTP op has {', '.join(HTTP_OP_KEYS)})")
    headers = table.get("headers") or ()
    if not isinstance(headers, (dict, list, tuple)):
        raise UsageError(f"{where}.headers: expected a table of header = \"value\" (or a list of \"Name: value\")")
    spec = build(table["url"], where, method=table.get("method"), headers=headers, body=table.get("body"),
                 json_text=table.get("json"), expect_status=table.get("expect_status"),
                 insecure=table.get("insecure", False), checks=table.get("checks") or ())
    name = _checked_name(table.get("name", spec.name), where)
    return MixOp(name, spec.describe(), _weight(table, where), {}, named=True, http=spec)


def parse_mix(items, where):
    """A tuple of :class:`MixOp` from a list (a repeated ``--target``, ``[[scenario.ops]]``); names unique."""
    if not items:
        raise UsageError(f"{where}: no op given")
    if len(items) > MAX_OPS:
        raise UsageError(f"{where}: {len(items)} ops; at most {MAX_OPS} in one mix")
    ops = tuple(parse_op(item, f"{where}[{i}]") for i, item in enumerate(items))
    seen = {}
    for i, op in enumerate(ops):
        if op.name in seen:
            raise UsageError(f"{where}[{i}]: op name {op.name!r} is already op {seen[op.name]}'s: give each a "
                             "name of its own (NAME=MOD:fn@WEIGHT on the command line, name = \"…\" in a plan, "
                             "or different functions)")
        seen[op.name] = i
    return ops


def check_factory_names(ops, where):
    """:class:`UsageError` for a factory mix op that was not given a name: an op is named after what it
    calls, and a factory's operation is built only in the workers, so its name cannot come from the
    factory (``make_read``) — the user names it (``read=lg.py:make_read@9``, ``name = "read"``)."""
    for i, op in enumerate(ops):
        if not op.named:
            base = op.ref.rpartition(":")[2]
            hint = base[5:] if base.startswith("make_") and len(base) > 5 else "NAME"
            raise UsageError(f"{where}[{i}]: {op.ref} is a factory (target_factory): name the op it builds, "
                             f"e.g. --target \"{hint}={op.ref}@{op.weight}\" (name = \"{hint}\" in a plan); "
                             "ops are named after what they call, never after the factory")


def sequence(weights):
    """The smooth weighted round robin of ``weights``: a tuple of op indices, ``sum(weights)`` long,
    each index ``weights[i]`` times, spread as evenly as the weights allow (9:1 → one 0 among nine 1s)."""
    current = [0] * len(weights)
    total = sum(weights)
    out = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=current.__getitem__)
        current[best] -= total
        out.append(best)
    return tuple(out)


class Mix:
    """The operation of a mix in one worker: ``calls[i]`` is op i's ``call(inputs)``. Picks the next op
    of :func:`sequence` (worker ``worker_index`` starts its own way into it, so workers do not move in
    step), calls it, and logs ``(i, µs, error key or None)``. Thread-safe: ``next`` on a count and
    ``list.append`` are atomic."""

    def __init__(self, calls, weights, worker_index, classify, refs=()):
        self.calls = tuple(calls)
        self.refs = tuple(refs)  # each op's MOD:fn, to name the op whose result was no result (results.misused)
        self.order = sequence(weights)
        n = len(self.order)
        self._next = itertools.count((worker_index * 7919) % n).__next__
        self._classify = classify

    def __call__(self, inputs):
        i, t0 = self._pick(), _clock()
        try:
            result = self.calls[i](inputs)
        except BaseException as e:  # noqa: BLE001 - a CancelledError of the op's own is its failure too (slots.raised_key)
            _done(i, t0, error_key(e))
            raise
        key = self._classify(result)
        if key is not None and key.startswith(MISUSE_KEY) and self.refs:
            attribute_misuse(self.refs[i])
        _done(i, t0, key)
        return result

    def _pick(self):
        return self.order[self._next() % len(self.order)]


class AsyncMix(Mix):
    """A :class:`Mix` of ``async def`` ops: calling it gives the coroutine of the op picked."""

    is_async = True

    async def __call__(self, inputs):
        i, t0 = self._pick(), _clock()
        try:
            result = await self.calls[i](inputs)
        except BaseException as e:  # noqa: BLE001 - a CancelledError of the op's own is its failure too (slots.raised_key)
            _done(i, t0, error_key(e))
            raise
        key = self._classify(result)
        if key is not None and key.startswith(MISUSE_KEY) and self.refs:
            attribute_misuse(self.refs[i])
        _done(i, t0, key)
        return result


def _done(i, t0, key):
    _log.append((i, (_clock() - t0) // 1000, key))


def drain(names):
    """What this process's mix did since the last call: ``{name: (µs values, succeeded, failed, {error: n})}``."""
    n = len(_log)
    got = _log[:n]
    del _log[:n]
    out = {}
    for i, us, key in got:
        entry = out.get(i)
        if entry is None:
            entry = out[i] = [[], 0, 0, CappedCounter(OP_ERROR_KEYS)]
        entry[0].append(us)
        if key is None:
            entry[1] += 1
        else:
            entry[2] += 1
            entry[3].add(key)
    return {names[i]: (us, ok, bad, errors.to_dict()) for i, (us, ok, bad, errors) in out.items()}


class OpTally:
    """One op's figures over a run (the master's, or a fleet's): latency histogram, counts, errors."""

    __slots__ = ("latency", "succeeded", "failed", "errors")

    def __init__(self):
        from ..analysis.stats import Histogram

        self.latency = Histogram()
        self.succeeded = self.failed = 0
        self.errors = CappedCounter(OP_ERROR_KEYS)

    def add(self, succeeded, failed, errors):
        self.succeeded += int(succeeded)
        self.failed += int(failed)
        self.errors.update(errors)

    def summary(self, op, load_s):
        """The result's entry of this op (``op``: its :class:`MixOp`; ``load_s``: seconds of load)."""
        done = self.succeeded + self.failed
        return {"target": op.ref, "weight": op.weight, "operations": done, "succeeded": self.succeeded,
                "failed": self.failed, "success_rate": round(self.succeeded / done, 6) if done else None,
                "throughput": round(done / load_s, 3) if load_s > 0 else None,
                "latency_ms": self.latency.summary_ms(),
                "errors": self.errors.to_dict()}


def add_ops(tallies, ops):
    """Add a batch's ``ops`` (``{name: (Sparse or None, succeeded, failed, errors)}``) into ``tallies``."""
    for name, (sparse, succeeded, failed, errors) in ops.items():
        t = tallies.get(name)
        if t is None:
            t = tallies[name] = OpTally()
        if sparse is not None:
            t.latency.add_sparse(sparse)
        t.add(succeeded, failed, errors)


def op_metrics(ops):
    """The criteria metrics of a result's ``ops`` (see :meth:`OpTally.summary`): ``p95_ms{op=NAME}`` and
    every latency statistic, ``success_rate``, ``error_rate``, ``operations`` and ``throughput``."""
    out = {}
    for name, d in ops.items():
        for stat, value in (d.get("latency_ms") or {}).items():
            if stat != "count":
                out[f"{stat}_ms{{op={name}}}"] = value
        rate = d.get("success_rate")
        out[f"success_rate{{op={name}}}"] = rate
        out[f"error_rate{{op={name}}}"] = None if rate is None else 1.0 - rate
        out[f"operations{{op={name}}}"] = d.get("operations")
        out[f"throughput{{op={name}}}"] = d.get("throughput")
    return out


def merge_summaries(per_result, latency_of):
    """One ``ops`` entry per op from several results' (a fleet's shards): counts, throughputs and errors
    add; ``latency_of(name)`` gives the op's merged histogram (its percentiles are the union's)."""
    out = {}
    for ops in per_result:
        for name, d in (ops or {}).items():
            m = out.setdefault(name, {"target": d.get("target"), "weight": d.get("weight"), "operations": 0,
                                      "succeeded": 0, "failed": 0, "throughput": None,
                                      "errors": CappedCounter(OP_ERROR_KEYS)})
            for key in ("operations", "succeeded", "failed"):
                m[key] += int(d.get(key) or 0)
            if d.get("throughput") is not None:
                m["throughput"] = round((m["throughput"] or 0.0) + d["throughput"], 3)
            m["errors"].update({key: int(n) for key, n in (d.get("errors") or {}).items()})
    for name, m in out.items():
        done = m["operations"]
        m["success_rate"] = round(m["succeeded"] / done, 6) if done else None
        m["latency_ms"] = latency_of(name).summary_ms()
        m["errors"] = m["errors"].to_dict()
    return out

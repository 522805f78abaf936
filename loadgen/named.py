"""Named measurements and checks, made from inside an operation (``loadgen.measure``, ``loadgen.check``).

::

    import loadgen

    def op(record):
        with loadgen.measure("llm_call"):       # times the block into the histogram "llm_call"
            reply = call_llm(record)
        loadgen.check("title" in reply, "has_title")  # a pass or a fail; the operation goes on

``measure`` records the block's wall time whether or not it raises; ``check`` returns ``bool(ok)``,
so it can stand in an ``if``. In a worker, ``measure`` appends to this process's list (a tuple each, no
lock: ``list.append`` is atomic) and ``check`` counts in place (two ``itertools.count`` per name, whose
``next`` is atomic under the GIL: no list entry per call, so millions of checks a second cost no
memory), which the worker drains into its per-second batch (:func:`drain`);
the master adds the batches into one histogram and one pass/fail count per name, a fleet adds its
shards' — exact, as the run's latency is — and every report shows them. Criteria name them:
``p95_ms{measure=llm_call} < 800``, ``checks{name=has_title} > 0.99`` (``checks``: all checks).

Outside a worker (a target called directly, a test) nothing is kept: the calls cost a clock read.
A name is any string; at most :data:`MAX_NAMES` of each kind are kept per run (more fold into
:data:`OTHER`, so a name made per operation cannot grow memory without bound). *Which* names are kept
is decided by rank, not arrival (:func:`rank`: a CRC of the name): the :data:`MAX_NAMES` lowest-ranked
names seen. A name the run keeps is then among the lowest of every worker and every second that saw
it, so each worker kept all of its figures and the master's are exact; a name pushed out by a
lower-ranked newcomer has its figures folded into :data:`OTHER` where it is kept (worker, master),
and nothing is lost. (First come, first kept, made each worker and each second keep a different set,
and the kept names' counts came out short: 143,410 of 163,756.)
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib

MAX_NAMES = 100  # distinct measure names, and check names, kept per worker and per run
MAX_NAME_CHARS = 100
OTHER = "(other names)"
MEASURE_PREFIX = "measure:"  # a result's histograms: "measure:NAME" beside "latency" and "service"
# Counts (bytes, connections) travel with the checks as [n, 0] under this prefix — the same sums from
# the worker through the master to a fleet's merge — and leave them where a result is built.
COUNT_PREFIX = "count:"

_clock = time.perf_counter_ns
_collecting = False  # set in a worker by collect(): outside one, nothing accumulates
_timings = []  # (name, µs), appended by any thread of this process
# raw name → [passes, fails, label, last passes drained, last fails drained]: the counts live in place
_checks = {}
_check_lock = threading.Lock()  # a new check name only (the slow path)
MAX_RAW_CHECK_NAMES = 10_000  # raw names remembered; past them a new name is counted under OTHER's entry
_count_sources = []  # take() -> {name: n since the last call}, called by drain()
_timing_sources = []  # take() -> {name: [µs, …] since the last call}, called by drain()


class measure:
    """``with measure("name"):`` times the block (wall time, µs resolution) into the run's histogram
    ``name``. After the block, ``.ms`` is the time it took, for the caller's own use."""

    __slots__ = ("name", "t0_ns", "ns")

    def __init__(self, name):
        self.name = name
        self.ns = None

    def __enter__(self):
        self.t0_ns = _clock()
        return self

    def __exit__(self, *exc):
        self.ns = ns = _clock() - self.t0_ns
        if _collecting:
            _timings.append((self.name, ns // 1000))
        return False

    @property
    def ms(self):
        """Milliseconds the block took (None inside it)."""
        return None if self.ns is None else self.ns / 1e6


def record(name, us):
    """Add ``us`` microseconds to measurement ``name`` (what :class:`measure` does for a block), for code
    that takes its own clock readings (the HTTP op)."""
    if _collecting:
        _timings.append((name, us))


def add_timing_source(take):
    """Call ``take()`` at every drain: its ``{name: [µs, …]}`` go to the measurements — for a hot path that
    appends ints to its own lists rather than a tuple per sample (the HTTP op)."""
    _timing_sources.append(take)


def add_counter_source(take):
    """Call ``take()`` at every drain: its ``{name: n}`` (counts since the last call) go to the run's counts."""
    _count_sources.append(take)


def check(ok, name):
    """Count a pass (``ok`` truthy) or a fail under ``name``; the operation is not failed. Returns ``bool(ok)``."""
    ok = bool(ok)
    if _collecting:
        entry = _checks.get(name)
        if entry is None:
            entry = _new_check(name)
        next(entry[0] if ok else entry[1])
    return ok


def _new_check(name):
    """The counting entry of a check name not seen before (under a lock: this is the rare path)."""
    with _check_lock:
        entry = _checks.get(name)
        if entry is not None:
            return entry
        key = label(name)
        if key != OTHER and _worker_checks.admit(key) is False:
            key = OTHER
        if key == OTHER or len(_checks) >= MAX_RAW_CHECK_NAMES:
            entry = _checks.get(_OTHER_ENTRY)
            if entry is None:
                entry = _checks[_OTHER_ENTRY] = [itertools.count(), itertools.count(), OTHER, 0, 0]
            if len(_checks) < MAX_RAW_CHECK_NAMES:
                _checks[name] = entry  # the next call of this name takes the fast path
            return entry
        entry = _checks[name] = [itertools.count(), itertools.count(), key, 0, 0]
        return entry


_OTHER_ENTRY = object()  # _checks' key of the names counted under OTHER


def _count_of(counter):
    """The next value of an ``itertools.count`` without taking it: how many ``next`` calls it had."""
    return int(repr(counter)[len("count("):-1])


class NameCap:
    """The names a table keeps: at most ``cap``, the lowest-ranked seen (:func:`rank`). :meth:`admit`
    says whether a name is kept, and which kept name it pushed out (to be folded into OTHER)."""

    def __init__(self, cap=MAX_NAMES):
        self.cap = cap
        self.kept = {}  # name → rank
        self.worst = None  # (rank, name) of the highest-ranked kept name, once full

    def admit(self, name):
        """True: ``name`` is kept (it was, or there was room); False: it is not; else the name it pushed
        out (a str). A name once refused is refused for good: the worst kept rank only ever falls."""
        if name in self.kept:
            return True
        r = rank(name)
        if len(self.kept) < self.cap:
            self.kept[name] = r
            if len(self.kept) == self.cap:
                self.worst = max((v, k) for k, v in self.kept.items())
            return True
        if (r, name) >= self.worst:
            return False
        out = self.worst[1]
        del self.kept[out]
        self.kept[name] = r
        self.worst = max((v, k) for k, v in self.kept.items())
        return out


def rank(name):
    """A name's rank for the cap (lower is kept first): a CRC-32 of it, the same in every process (not
    ``hash``, which each spawned process salts anew), then the name itself."""
    return zlib.crc32(name.encode("utf-8", "surrogatepass")), name


_worker_checks = NameCap()  # the check names this process keeps
_worker_measures = NameCap()  # the measurement names this process keeps


def collect():
    """Start keeping measurements and checks in this process (a worker, before its slots start)."""
    global _collecting
    _collecting = True


def label(name):
    """A name as reports show it: a string of at most :data:`MAX_NAME_CHARS`, control characters replaced."""
    text = name if isinstance(name, str) else repr(name)
    text = "".join(ch if ch.isprintable() else "?" for ch in text[:MAX_NAME_CHARS])
    return text or "?"


def kept_name(names, name, fold=None):
    """The key of table ``names`` (name → figures) that ``name``'s figures go under: ``name`` while it is
    among the :data:`MAX_NAMES` lowest-ranked names of the table (:func:`rank`; counts of
    :data:`COUNT_PREFIX` and :data:`OTHER` aside), else :data:`OTHER`. A name that pushes a kept one out
    has the pushed one's figures folded into OTHER by ``fold(names, pushed)`` (default: pairs added)."""
    if name in names or name == OTHER or name.startswith(COUNT_PREFIX):
        return name
    kept = [k for k in names if k != OTHER and not k.startswith(COUNT_PREFIX)]
    if len(kept) < MAX_NAMES:
        return name
    worst = max(kept, key=rank)
    if rank(name) >= rank(worst):
        return OTHER
    (fold or _fold_pair)(names, worst)
    return name


def _fold_pair(names, pushed):
    pair = names.setdefault(OTHER, [0, 0])
    passes, fails = names.pop(pushed)
    pair[0] += passes
    pair[1] += fails


def drain():
    """What this process measured since the last call: ``({name: [µs, …]}, {name: [passes, fails]})``,
    names cleaned by :func:`label` and capped at :data:`MAX_NAMES` each (by rank: see the module)."""
    n = len(_timings)
    timings = _timings[:n]
    del _timings[:n]
    per_name, names = {}, {}

    def key_of(name):
        key = names.get(name)
        if key is None:
            key = names[name] = _kept_measure(per_name, label(name))
        return key

    for name, us in timings:
        per_name.setdefault(key_of(name), []).append(us)
    for take in _timing_sources:
        for name, values in take().items():
            if values:
                per_name.setdefault(key_of(name), []).extend(values)
    counts = {}
    with _check_lock:
        entries = {id(e): e for e in list(_checks.values())}.values()  # OTHER's entry is under many names
    for entry in entries:
        p, f = _count_of(entry[0]), _count_of(entry[1])
        dp, df = p - entry[3], f - entry[4]
        entry[3], entry[4] = p, f
        if dp or df:
            key = entry[2] if entry[2] in _worker_checks.kept else OTHER
            pair = counts.setdefault(key, [0, 0])
            pair[0] += dp
            pair[1] += df
    for take in _count_sources:
        for name, n in take().items():
            counts.setdefault(COUNT_PREFIX + name, [0, 0])[0] += n
    return per_name, counts


def _kept_measure(per_name, key):
    """The key a measurement name's samples go under in this process: itself while kept, else OTHER; a
    name pushed out now has this drain's samples moved to OTHER (those of earlier drains were shipped
    under its name: the master, ranking alike, folds them too)."""
    verdict = _worker_measures.admit(key)
    if verdict is False:
        return OTHER
    if verdict is not True and verdict in per_name:  # ``key`` pushed ``verdict`` out
        per_name.setdefault(OTHER, []).extend(per_name.pop(verdict))
    return key


def add_checks(into, checks):
    """Add ``checks`` (``{name: [passes, fails]}``) into ``into``, keeping at most :data:`MAX_NAMES` names."""
    for name, (passes, fails) in checks.items():
        pair = into.setdefault(kept_name(into, name), [0, 0])
        pair[0] += int(passes)
        pair[1] += int(fails)


def checks_summary(checks):
    """``{name: {passes, fails, rate}}`` of ``{name: [passes, fails]}`` (rate: passes ÷ both; None if none)."""
    return {name: {"passes": p, "fails": f, "rate": round(p / (p + f), 6) if p + f else None}
            for name, (p, f) in sorted(checks.items()) if not name.startswith(COUNT_PREFIX)}


def count_metrics(checks, load_s):
    """The counts that rode with ``checks`` (:data:`COUNT_PREFIX`) as figures: ``NAME`` (the total) and
    ``NAME_per_s`` (over ``load_s`` seconds of load)."""
    out = {}
    for name, (n, _) in sorted(checks.items()):
        if name.startswith(COUNT_PREFIX):
            name = name[len(COUNT_PREFIX):]
            out[name] = int(n)
            out[f"{name}_per_s"] = round(n / load_s, 3) if load_s > 0 else None
    return out


def named_metrics(measures_ms, checks):
    """The criteria metrics of named measurements and checks: ``p95_ms{measure=NAME}`` (every statistic
    of ``measures_ms``, ``{name: Histogram.summary_ms()}``), ``count{measure=NAME}``,
    ``checks{name=NAME}`` (pass rate) and ``checks`` (all checks' pass rate)."""
    out = {}
    for name, summary in measures_ms.items():
        for stat, value in summary.items():
            out[f"{stat}_ms{{measure={name}}}" if stat != "count" else f"count{{measure={name}}}"] = value
    passes = fails = 0
    for name, (p, f) in checks.items():
        if name.startswith(COUNT_PREFIX):
            continue
        out[f"checks{{name={name}}}"] = p / (p + f) if p + f else None
        passes, fails = passes + p, fails + f
    if passes + fails:
        out["checks"] = passes / (passes + fails)
    return out

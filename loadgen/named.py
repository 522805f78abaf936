"""Named measurements and checks, made from inside an operation (``loadgen.measure``, ``loadgen.check``).

::

    import loadgen

    def op(record):
        with loadgen.measure("llm_call"):       # times the block into the histogram "llm_call"
            reply = call_llm(record)
        loadgen.check("title" in reply, "has_title")  # a pass or a fail; the operation goes on

``measure`` records the block's wall time whether or not it raises; ``check`` returns ``bool(ok)``,
so it can stand in an ``if``. In a worker, both append to this process's lists (a tuple each, no
lock: ``list.append`` is atomic), which the worker drains into its per-second batch (:func:`drain`);
the master adds the batches into one histogram and one pass/fail count per name, a fleet adds its
shards' — exact, as the run's latency is — and every report shows them. Criteria name them:
``p95_ms{measure=llm_call} < 800``, ``checks{name=has_title} > 0.99`` (``checks``: all checks).

Outside a worker (a target called directly, a test) nothing is kept: the calls cost a clock read.
A name is any string; at most :data:`MAX_NAMES` of each kind are kept per run (more fold into
:data:`OTHER`, so a name made per operation cannot grow memory without bound).
"""

from __future__ import annotations

import time

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
_checks = []  # (name, passed)
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
        _checks.append((name, ok))
    return ok


def collect():
    """Start keeping measurements and checks in this process (a worker, before its slots start)."""
    global _collecting
    _collecting = True


def label(name):
    """A name as reports show it: a string of at most :data:`MAX_NAME_CHARS`, control characters replaced."""
    text = name if isinstance(name, str) else repr(name)
    text = "".join(ch if ch.isprintable() else "?" for ch in text[:MAX_NAME_CHARS])
    return text or "?"


def kept_name(names, name):
    """``name`` if ``names`` (the names kept so far) has room for it, else :data:`OTHER`."""
    return name if name in names or len(names) < MAX_NAMES else OTHER


def drain():
    """What this process measured since the last call: ``({name: [µs, …]}, {name: [passes, fails]})``,
    names cleaned by :func:`label` and capped at :data:`MAX_NAMES` each."""
    n = len(_timings)
    timings = _timings[:n]
    del _timings[:n]
    n = len(_checks)
    checks = _checks[:n]
    del _checks[:n]
    per_name, names = {}, {}
    for name, us in timings:
        key = names.get(name)
        if key is None:
            key = names[name] = kept_name(per_name, label(name))
        per_name.setdefault(key, []).append(us)
    for take in _timing_sources:
        for name, values in take().items():
            if values:
                key = names.get(name)
                if key is None:
                    key = names[name] = kept_name(per_name, label(name))
                per_name.setdefault(key, []).extend(values)
    counts, names = {}, {}
    for name, ok in checks:
        key = names.get(name)
        if key is None:
            key = names[name] = kept_name(counts, label(name))
        pair = counts.setdefault(key, [0, 0])
        pair[0 if ok else 1] += 1
    for take in _count_sources:
        for name, n in take().items():
            counts.setdefault(COUNT_PREFIX + name, [0, 0])[0] += n
    return per_name, counts


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

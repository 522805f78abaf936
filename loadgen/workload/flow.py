"""The embedded default workload: a simulation of the "AI Writing Flow V2" pipeline.

The real pipeline runs six stages, each an LLM-backed step::

    input_validation → research → audience_align → draft_generation
        → style_validation ──(may loop back to draft_generation, bounded)
        → quality_check → finalized | failed

:class:`MockAIWritingFlowV2` reproduces its resource profile with real
work, so that loadgen measures a machine and not a ``time.sleep``:

* **CPU** — numpy matrix products, burned until the calling thread's CPU
  clock (``time.thread_time``) has advanced by the stage's budget
  (``cpu_ms``); asked and used agree within a few percent
  (``benchmarks/flow_calibration.py``).
* **memory** — a working set of ``memory_mb`` allocated with numpy, every
  page written (resident, not just reserved), held for the whole stage
  including its I/O wait and released at the stage's end.
* **I/O** — the LLM call: ``time.sleep`` of a lognormal duration whose
  *mean* is the stage's ``io_ms`` (spread ``io_sigma``).

Like the real flow, a failure is *returned* — ``FlowResult(state="failed",
failed_stage=..., reason=...)`` — never raised, and the stages after it do
not run. Failures come from two sources:

* **injected** — ``failure_rate``: a kickoff fails at a random stage with a
  reason marked ``simulated:``; it does not depend on the machine.
* **deadlines** — each stage has a deadline (``stage_timeout_ms``), as the
  real stage's LLM client has a timeout. A stage pass whose wall time
  (memory + CPU + wait, measured around the whole pass) overruns it fails
  with a reason starting ``timed out`` (see :func:`timeout_reason`); a wait
  that cannot end before the deadline is cut at the deadline, as a client
  gives up. These misses really happened, so they are not marked simulated:
  on a starved machine a stage's CPU, wake-ups and page faults take longer
  in wall time (the workers run niced), so pressure shows in the success
  rate as well as in the latency.

By default the flow is mostly simulated LLM wait, as the real pipeline is:
a mean I/O wait of ``processing_time_base`` (0.1 s) per kickoff plus its
style loops (~0.12 s wall in all), against ~2.4 ms of numpy CPU (~3.5 ms of
process CPU with allocation, page faults and Python) and a working set of
1–3 MB per stage.

MB here is 2**20 bytes throughout.

Default deadlines
-----------------
A stage's default deadline is ``k × its mean wait + 4 × its CPU budget +
10 ms``, rounded up to a whole ms: with the default profile
input_validation 36 ms, research 162, audience_align 62, draft_generation
163, style_validation 62, quality_check 87. ``k`` (``timeout_factor``) is
by default ``exp(z·σ − σ²/2)`` with ``σ = io_sigma`` and ``z = 3.469``: 5.0
at the default σ = 0.5, and never below 2 (σ below 0.23, and exact waits
at σ = 0: a client's timeout is not set tighter than twice the usual
wait). Why: the wait ``W`` is lognormal with mean ``m``,
``ln W ~ N(ln m − σ²/2, σ)``, so::

    P(W > k·m) = 1 − Φ((ln k + σ²/2) / σ)

(:func:`wait_overrun_probability`), and ``k = exp(z·σ − σ²/2)`` holds it
at ``1 − Φ(z) = 2.6e-4`` per stage pass whatever ``io_sigma`` is (less
where the floor applies). The CPU and fixed margins cover the pass's own work on a quiet machine — its CPU
budget (slots of one worker share the GIL), page faults of its 1–3 MB
working set, sleep overshoot, a scheduler tick or a GC pause — so on a
quiet machine a pass misses only when its wait alone overruns ``k·m`` plus
what those margins leave over. Per default kickoff (6.8 stage passes with
the style loops) that is at most 6.8 × 2.6e-4 = 0.18 %, and ~0.06 % with
the margins counted (1 ms of overhead per pass), on top of
``failure_rate``. Under starvation the pass's CPU, wake-ups and page
faults take milliseconds to tens of milliseconds longer in wall time; the
short-wait stages (input_validation, audience_align, style_validation),
whose deadlines leave the least room beyond their wait, miss first
(``benchmarks/pressure.py``). With a tiny ``processing_time_base`` the
deadlines shrink to about 10 ms plus 4 × CPU: any stall that long fails a
stage.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..config import check_bool, check_int, check_number, parse_duration
from ..errors import UsageError
from ..named import measure

__all__ = [
    "STAGES",
    "FINALIZED",
    "FAILED",
    "FlowResult",
    "MockAIWritingFlowV2",
    "FLOW_PARAMS",
    "build_flow",
    "burn_cpu",
    "touch_memory",
    "timeout_reason",
    "wait_overrun_probability",
]

STAGES = (
    "input_validation",
    "research",
    "audience_align",
    "draft_generation",
    "style_validation",
    "quality_check",
)

FINALIZED = "finalized"
FAILED = "failed"

_BYTES_PER_MB = 1 << 20
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

# Default resource profile of one pass through each stage. Drafting is the
# heaviest step of the real pipeline (long prompt + long completion);
# input validation is nearly free. Numpy CPU: 2.0 ms per kickoff before
# style loops, 2.35 ms on average with the default loops (0.39 per kickoff);
# allocation, page faults, the sleeps and Python add ~1 ms more.
DEFAULT_STAGE_CPU_MS = {
    "input_validation": 0.1,
    "research": 0.4,
    "audience_align": 0.3,
    "draft_generation": 0.6,
    "style_validation": 0.3,
    "quality_check": 0.3,
}
DEFAULT_STAGE_MEMORY_MB = {
    "input_validation": 1.0,
    "research": 3.0,
    "audience_align": 2.0,
    "draft_generation": 3.0,
    "style_validation": 2.0,
    "quality_check": 1.0,
}
# Share of ``processing_time_base`` each stage waits on its LLM call, when
# ``stage_io_ms`` does not say otherwise. Sums to 1: one kickoff without
# style loops waits ``processing_time_base`` seconds on average.
STAGE_IO_SHARE = {
    "input_validation": 0.05,
    "research": 0.30,
    "audience_align": 0.10,
    "draft_generation": 0.30,
    "style_validation": 0.10,
    "quality_check": 0.15,
}

# Injected failures name a plausible cause, marked as simulated so nobody
# goes looking for a real LLM outage in a load-test report.
_FAILURE_REASONS = {
    "input_validation": "simulated: input rejected (topic_title failed validation)",
    "research": "simulated: research LLM call timed out",
    "audience_align": "simulated: audience alignment returned malformed JSON",
    "draft_generation": "simulated: draft LLM call rate-limited (HTTP 429)",
    "style_validation": "simulated: style guide check crashed",
    "quality_check": "simulated: quality score below threshold",
}

# Default stage deadlines: k × the mean wait + TIMEOUT_CPU_FACTOR × the CPU
# budget + TIMEOUT_SLACK_MS (see the module docstring). TIMEOUT_Z sets k from
# io_sigma so that a wait overruns k × its mean with probability 1 − Φ(z),
# 2.6e-4; it is chosen to make k exactly DEFAULT_TIMEOUT_FACTOR at σ = 0.5.
DEFAULT_TIMEOUT_FACTOR = 5.0
TIMEOUT_Z = (math.log(DEFAULT_TIMEOUT_FACTOR) + 0.5**2 / 2) / 0.5  # 3.469
TIMEOUT_MIN_FACTOR = 2.0  # auto k never below this (σ ≤ 0.23): a timeout of twice the mean wait
TIMEOUT_CPU_FACTOR = 4.0
TIMEOUT_SLACK_MS = 10.0
TIMED_OUT = "timed out"  # every deadline miss's reason starts with this

_DEFAULT_INPUTS = {"topic_title": "AI Writing Flow V2 load test", "platform": "LinkedIn"}


# ------------------------------------------------------------------ result


@dataclass(frozen=True)
class FlowResult:
    """Outcome of one :meth:`MockAIWritingFlowV2.kickoff`.

    ``state``: ``"finalized"`` or ``"failed"``.
    ``failed_stage`` / ``reason``: the stage that failed and why (None when
    finalized).
    ``stage_timings_us``: wall time per stage in microseconds, in execution
    order, summed over style loops; stages that did not run are absent.
    ``style_loops``: times style_validation sent the flow back to drafting.
    ``output``: a small dict (topic_title, word_count, quality_score) when
    finalized; empty when failed.
    """

    state: str
    failed_stage: Optional[str] = None
    reason: Optional[str] = None
    stage_timings_us: dict = field(default_factory=dict)
    style_loops: int = 0
    output: dict = field(default_factory=dict)

    @property
    def ok(self):
        """True when the flow finalized."""
        return self.state == FINALIZED

    @property
    def timed_out(self):
        """True when a stage overran its deadline (not an injected failure)."""
        return self.state == FAILED and (self.reason or "").startswith(TIMED_OUT)

    def to_dict(self):
        """The fields as a plain dict (``dataclasses.asdict``)."""
        return asdict(self)


# ------------------------------------------------------------------ real work

# 64×64 float64 products: ~10 µs each on a 2020s core, short enough that
# the overshoot past a 1 ms budget stays near 1 %. OpenBLAS runs a GEMM with
# M·N·K ≤ 4·65536 on the calling thread even if OPENBLAS_NUM_THREADS was not
# set, so the work never leaks to BLAS threads that thread_time cannot see.
_MATMUL_N = 64
_scratch = threading.local()


def _matrices():
    """This thread's operands, made once: the burn loop allocates nothing.

    Thread-local because matmul releases the GIL: two slots writing the same
    ``out`` would race.
    """
    m = getattr(_scratch, "m", None)
    if m is None:
        a = np.random.default_rng(_MATMUL_N).random((_MATMUL_N, _MATMUL_N))
        b = a / _MATMUL_N  # keeps products bounded; c is recomputed, never accumulated
        m = _scratch.m = (a, b, np.empty_like(a))
    return m


def burn_cpu(cpu_ms):
    """Burn ``cpu_ms`` milliseconds of the calling thread's CPU time with numpy.

    Runs 64×64 matrix products until ``time.thread_time()`` has advanced by
    the budget, stopping when the next product would overshoot by more than
    it would fall short (so the error is at most half a product, ~5 µs).
    Time spent waiting for the GIL or for a core is not CPU time and is not
    counted. Blocks for at least ``cpu_ms``. Returns the thread CPU time
    actually used, in seconds.
    """
    budget_s = cpu_ms / 1000.0
    if budget_s <= 0:
        return 0.0
    a, b, c = _matrices()
    matmul, clock = np.matmul, time.thread_time
    start = now = clock()
    deadline = start + budget_s
    last_s = 0.0
    while now + last_s / 2 < deadline:
        matmul(a, b, out=c)
        t = clock()
        last_s, now = t - now, t
    return now - start


def touch_memory(memory_mb):
    """Allocate ``memory_mb`` MB (2**20 bytes) with numpy and write every page.

    Returns the array (None for 0 MB): the memory stays resident while the
    caller holds it and is returned to the allocator when it is dropped, as a
    real Python service's working set is. (A fresh mapping per stage would
    cost ~0.8 ms of page faults per MB here, CPU the stage was not asked for;
    loadgen's workers hand freed heap memory back to the OS once a second.)
    """
    nbytes = int(memory_mb * _BYTES_PER_MB)
    if nbytes <= 0:
        return None
    ws = np.empty(nbytes, dtype=np.uint8)
    ws[::_PAGE_BYTES] = 1  # one byte per page faults every page in
    ws[-1] = 1  # the last page, when the array does not start on a page boundary
    return ws


# ------------------------------------------------------------------ parameters


# Upper bounds of the flow's sizes: no stage pass waits or computes longer than an hour (a load
# test's operation, not a batch job), and no stage holds more memory than the machine has.
MAX_STAGE_MS = 3_600_000.0
MAX_IO_SIGMA = 5.0  # lognormal: at 5 the p99 wait is already 10^5 × the median
MAX_STYLE_LOOPS = 100


def machine_mb():
    """This machine's memory, MB: the bound of every memory size of the flow."""
    import psutil

    return psutil.virtual_memory().total / 2**20


def _number(value, what, *, hi=math.inf, expected="a number ≥ 0"):
    return check_number(value, what, 0.0, hi, low_open=False, expected=expected)


def _ms(value, what, expected=None):
    return _number(value, what, hi=MAX_STAGE_MS, expected=expected or f"ms ≥ 0 and ≤ {MAX_STAGE_MS:.0f} (an hour)")


def _mb(value, what, expected=None):
    hi = machine_mb()
    return _number(value, what, hi=hi, expected=expected or f"MB ≥ 0 and ≤ {hi:.0f} (this machine's memory)")


def _seconds(value, what):
    """``0.1``, ``"0.1"``, or a duration such as ``"100ms"`` → seconds ≥ 0, at most an hour."""
    if isinstance(value, str) and value.strip() and value.strip()[-1].isalpha():
        s = parse_duration(value, what)
    else:
        s = _number(value, what, expected="seconds ≥ 0 (e.g. 0.1 or 100ms)")
    return _number(s, what, hi=MAX_STAGE_MS / 1000, expected="seconds ≥ 0 and ≤ 3600 (an hour)")


def _probability(value, what):
    return _number(value, what, hi=1.0, expected="a probability between 0 and 1")


def _count(value, what):
    return check_int(value, what, 0)


def _per_stage(value, what, unit):
    """A number for every stage, or ``{stage: number}`` / ``"stage:n,stage:n"``.

    Returns ``{stage: float}`` holding only the stages given (a plain number
    gives all six). Unknown stage names are a :class:`UsageError`; so is a
    number past its unit's bound (:data:`MAX_STAGE_MS`, :func:`machine_mb`).
    """
    check = _ms if unit == "ms" else _mb
    expected = f"{unit} ≥ 0, or STAGE:{unit},… with STAGE one of {', '.join(STAGES)}"
    if isinstance(value, str) and ":" in value:
        pairs = {}
        for part in value.split(","):
            if not part.strip():
                continue
            stage, sep, number = part.partition(":")
            if not sep:
                raise UsageError(f"{what}: {part.strip()!r} is not STAGE:{unit}")
            pairs[stage.strip()] = number
        value = pairs
    if isinstance(value, Mapping):
        out = {}
        for stage, number in value.items():
            if stage not in STAGES:
                raise UsageError(f"{what}: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
            out[stage] = check(number, f"{what} {stage}")
        return out
    x = _number(value, what, expected=expected)
    return dict.fromkeys(STAGES, check(x, what))


def _is_word(value, *words):
    return isinstance(value, str) and value.strip().lower() in words


def _timeouts(value, what):
    """Stage deadlines in ms: ``"auto"`` → ``{}`` (every stage derived);
    ``"none"``, None or 0 → every stage off; a number → every stage;
    ``{stage: ms}`` / ``"stage:ms,stage:ms"`` → only those stages (``none``
    or 0 switches one off). Returns ``{stage: ms or None}`` (None: no deadline)."""
    if _is_word(value, "auto"):
        return {}
    if value is None or _is_word(value, "none"):
        return dict.fromkeys(STAGES)
    expected = "ms ≥ 0 (0 or none: no deadline)"

    def one(number, where, expected=expected):
        if number is None or _is_word(number, "none"):
            return None
        ms = _number(number, where, expected=expected)
        return _ms(ms, where) or None

    if isinstance(value, str) and ":" in value:
        pairs = {}
        for part in value.split(","):
            if not part.strip():
                continue
            stage, sep, number = part.partition(":")
            if not sep:
                raise UsageError(f"{what}: {part.strip()!r} is not STAGE:ms")
            pairs[stage.strip()] = number
        value = pairs
    if isinstance(value, Mapping):
        out = {}
        for stage, number in value.items():
            if stage not in STAGES:
                raise UsageError(f"{what}: unknown stage {stage!r} (stages: {', '.join(STAGES)})")
            out[stage] = one(number, f"{what} {stage}")
        return out
    every = one(value, what, expected=f"auto, none, {expected} or STAGE:ms,… with STAGE one of {', '.join(STAGES)}")
    return dict.fromkeys(STAGES, every)


def _factor(value, what):
    if value is None or _is_word(value, "auto"):
        return None
    return check_number(value, what, 1.0, low_open=False, expected="auto or a number ≥ 1 (× the stage's mean wait)")


def wait_overrun_probability(factor, sigma):
    """P(W > factor × mean) for a lognormal wait W of any mean with log-sigma ``sigma``.

    ``ln W ~ N(ln mean − σ²/2, σ)``, so the probability is
    ``1 − Φ((ln factor + σ²/2) / σ)``; for σ = 0 the wait is its mean (0, or 1
    when factor < 1). The quiet-machine chance that a stage pass misses a
    deadline of ``factor`` × its mean wait plus margins covering its own work.
    """
    if factor <= 0:
        return 1.0
    if sigma <= 0:
        return 1.0 if factor < 1 else 0.0
    return 0.5 * math.erfc((math.log(factor) + sigma * sigma / 2) / sigma / math.sqrt(2))


def _ms_text(ms):
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.3g}"


def timeout_reason(wall_ms, deadline_ms):
    """The reason of a deadline miss: ``timed out (deadline 162 ms)``, or with
    ``after >N× its deadline`` when the pass took N = 2, 4, 8 or 16 times
    longer or more. Bucketed, not the exact wall time (that is in
    ``stage_timings_us``), so a run's error counts keep a few keys per stage
    rather than one per kickoff."""
    over = wall_ms / deadline_ms if deadline_ms > 0 else math.inf
    times = 16 if over >= 16 else 8 if over >= 8 else 4 if over >= 4 else 2 if over >= 2 else 1
    if times == 1:
        return f"{TIMED_OUT} (deadline {_ms_text(deadline_ms)} ms)"
    return f"{TIMED_OUT} after >{times}× its deadline ({_ms_text(deadline_ms)} ms)"


def _seed(value, what):
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    return check_int(value, what, 0)


# name -> (type, default, one-line help). Shown by ``loadgen list``; the
# keys are the ``--flow-param KEY=VALUE`` keys and the constructor's names.
FLOW_PARAMS = {
    "processing_time_base": (
        "seconds",
        0.1,
        "mean simulated LLM wait of one kickoff without style loops; scales the default per-stage I/O",
    ),
    "failure_rate": ("probability", 0.05, "chance that a kickoff fails, at a stage chosen at random"),
    "stage_cpu_ms": (
        "ms | STAGE:ms,…",
        dict(DEFAULT_STAGE_CPU_MS),
        "numpy CPU budget per stage pass, thread CPU time (one number: every stage)",
    ),
    "stage_memory_mb": (
        "MB | STAGE:MB,…",
        dict(DEFAULT_STAGE_MEMORY_MB),
        "working set allocated, touched and held during each stage (one number: every stage)",
    ),
    "stage_io_ms": (
        "ms | STAGE:ms,…",
        None,
        "mean simulated LLM wait per stage; unset stages: processing_time_base × their share",
    ),
    "io_sigma": ("float", 0.5, "lognormal sigma of the I/O waits (0: every wait is exactly its mean)"),
    "stage_timeout_ms": (
        "auto | none | ms | STAGE:ms,…",
        "auto",
        "deadline per stage pass, wall time; overrun: the kickoff fails 'timed out' "
        "(auto: timeout_factor × mean wait + 4 × CPU ms + 10 ms; none or 0: off)",
    ),
    "timeout_factor": (
        "auto | float ≥ 1",
        "auto",
        "auto deadlines' multiple of the stage's mean wait "
        "(auto: exp(3.469·io_sigma − io_sigma²/2), at least 2; 5 at io_sigma 0.5)",
    ),
    "style_loop_probability": ("probability", 0.3, "chance that style_validation sends the draft back"),
    "max_style_loops": ("int", 2, "most times style_validation may loop back to draft_generation"),
    "leak_mb_per_op": ("MB", 0.0, "memory each kickoff retains on purpose, to exercise leak detection"),
    "seed": ("int | none", None, "seed for reproducible failures, loops and waits (none: random)"),
    "async_io": ("bool", False, "the LLM waits are awaited (akickoff on async slots: thousands of sessions "
                 "in flight per worker; the CPU work still blocks, as in a real async service) and a stage's "
                 "working set is freed before its wait"),
}

_COERCE = {
    "processing_time_base": _seconds,
    "failure_rate": _probability,
    "stage_cpu_ms": lambda v, w: _per_stage(v, w, "ms"),
    "stage_memory_mb": lambda v, w: _per_stage(v, w, "MB"),
    "stage_io_ms": lambda v, w: _per_stage(v, w, "ms"),
    "io_sigma": lambda v, w: _number(v, w, hi=MAX_IO_SIGMA, expected=f"a number ≥ 0 and ≤ {MAX_IO_SIGMA:g}"),
    "stage_timeout_ms": _timeouts,
    "timeout_factor": _factor,
    "style_loop_probability": _probability,
    "max_style_loops": lambda v, w: check_int(v, w, 0, MAX_STYLE_LOOPS),
    "leak_mb_per_op": _mb,
    "seed": _seed,
    "async_io": lambda v, w: check_bool(v, w),
}


def build_flow(params=None):
    """A :class:`MockAIWritingFlowV2` from ``--flow-param KEY=VALUE`` pairs.

    ``params`` maps parameter names (see :data:`FLOW_PARAMS`) to strings as
    typed on the command line, or to already-typed values (from a TOML
    plan). Per-stage parameters take one number for every stage or
    ``STAGE:N,STAGE:N``. Raises :class:`UsageError` with one line naming the
    key and what it expects, for an unknown key or a bad value.
    """
    kwargs = {}
    for key, value in (params or {}).items():
        name = str(key).strip()
        if name not in _COERCE:
            raise UsageError(f"{name}: unknown parameter (known: {', '.join(FLOW_PARAMS)})")
        kwargs[name] = _COERCE[name](value, name)
    return MockAIWritingFlowV2(**kwargs)


# ------------------------------------------------------------------ the flow


class MockAIWritingFlowV2:
    """The AI Writing Flow V2 pipeline with real CPU, memory and I/O per stage.

    ``processing_time_base`` (s): mean simulated LLM wait of one kickoff
    without style loops, split over the stages by :data:`STAGE_IO_SHARE`.
    ``failure_rate``: probability that a kickoff fails at a random stage.
    ``stage_cpu_ms`` / ``stage_memory_mb`` / ``stage_io_ms``: a number for
    every stage or a dict ``{stage: number}`` overriding only those stages;
    CPU is thread CPU time in ms, memory in MB (2**20 bytes), I/O the mean
    wait in ms (lognormal, sigma ``io_sigma``).
    ``stage_timeout_ms``: each stage pass's deadline in ms of wall time;
    ``"auto"`` (default) derives every stage's from its cost, a number or
    ``{stage: ms}`` sets them (0 or None/``"none"``: no deadline), unset
    stages stay auto. ``timeout_factor``: the auto deadlines' multiple
    ``k`` of the mean wait (``"auto"``: ``exp(TIMEOUT_Z·σ − σ²/2)``, at
    least 2, 5 at σ = 0.5); the module docstring gives the quiet-machine
    miss rate.
    ``style_loop_probability`` / ``max_style_loops``: style_validation sends
    the flow back to draft_generation with that probability, at most that
    many times per kickoff.
    ``leak_mb_per_op`` (MB): retained on purpose by every kickoff
    (see :attr:`leaked_mb`, :meth:`release_leaks`).
    ``seed``: with a seed, call *i* of this instance makes the same choices
    (failure, stage, loops, waits) as call *i* of any instance with that
    seed; whether a stage misses its deadline depends on real time, so the
    waits drawn are reproducible but a starved machine's misses are not.
    Bad values raise :class:`UsageError`.

    One instance is shared by the slots (threads) of a worker: ``kickoff``
    is thread-safe.
    """

    def __init__(
        self,
        processing_time_base=0.1,
        failure_rate=0.05,
        *,
        stage_cpu_ms=None,
        stage_memory_mb=None,
        stage_io_ms=None,
        io_sigma=0.5,
        stage_timeout_ms="auto",
        timeout_factor="auto",
        style_loop_probability=0.3,
        max_style_loops=2,
        leak_mb_per_op=0.0,
        seed=None,
        async_io=False,
    ):
        self.processing_time_base = _seconds(processing_time_base, "processing_time_base")
        self.failure_rate = _probability(failure_rate, "failure_rate")
        self.io_sigma = _number(io_sigma, "io_sigma")
        self.style_loop_probability = _probability(style_loop_probability, "style_loop_probability")
        self.max_style_loops = _count(max_style_loops, "max_style_loops")
        self.leak_mb_per_op = _number(leak_mb_per_op, "leak_mb_per_op")
        self.seed = _seed(seed, "seed")
        self.async_io = check_bool(async_io, "async_io")

        base_io_ms = self.processing_time_base * 1000.0
        self.stage_cpu_ms = dict(DEFAULT_STAGE_CPU_MS)
        self.stage_memory_mb = dict(DEFAULT_STAGE_MEMORY_MB)
        self.stage_io_ms = {s: base_io_ms * STAGE_IO_SHARE[s] for s in STAGES}
        for target, given, name, unit in (
            (self.stage_cpu_ms, stage_cpu_ms, "stage_cpu_ms", "ms"),
            (self.stage_memory_mb, stage_memory_mb, "stage_memory_mb", "MB"),
            (self.stage_io_ms, stage_io_ms, "stage_io_ms", "ms"),
        ):
            if given is not None:
                target.update(_per_stage(given, name, unit))

        factor = _factor(timeout_factor, "timeout_factor")
        if factor is None:
            factor = round(max(TIMEOUT_MIN_FACTOR, math.exp(TIMEOUT_Z * self.io_sigma - self.io_sigma**2 / 2)), 9)
        self.timeout_factor = factor
        self.stage_timeout_ms = {
            s: float(math.ceil(
                factor * self.stage_io_ms[s] + TIMEOUT_CPU_FACTOR * self.stage_cpu_ms[s] + TIMEOUT_SLACK_MS
            ))
            for s in STAGES
        }
        self.stage_timeout_ms.update(_timeouts(stage_timeout_ms, "stage_timeout_ms"))

        # Without a seed, draw entropy once; kickoff mixes in the pid so
        # forked workers that inherit this instance do not repeat each other.
        self._entropy = self.seed if self.seed is not None else np.random.SeedSequence().entropy
        self._calls = itertools.count()  # next() is atomic under the GIL
        self._leaked = []  # list.append is atomic under the GIL

    # -- pickling (spawned workers): counters restart, leaks stay behind
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_calls"], state["_leaked"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._calls = itertools.count()
        self._leaked = []

    def __repr__(self):
        return (
            f"MockAIWritingFlowV2(processing_time_base={self.processing_time_base!r}, "
            f"failure_rate={self.failure_rate!r}, seed={self.seed!r})"
        )

    def to_dict(self):
        """The resolved parameters (per-stage dicts filled in), for reports."""
        return {
            "processing_time_base": self.processing_time_base,
            "failure_rate": self.failure_rate,
            "stage_cpu_ms": dict(self.stage_cpu_ms),
            "stage_memory_mb": dict(self.stage_memory_mb),
            "stage_io_ms": dict(self.stage_io_ms),
            "io_sigma": self.io_sigma,
            "stage_timeout_ms": dict(self.stage_timeout_ms),
            "timeout_factor": self.timeout_factor,
            "style_loop_probability": self.style_loop_probability,
            "max_style_loops": self.max_style_loops,
            "leak_mb_per_op": self.leak_mb_per_op,
            "seed": self.seed,
            "async_io": self.async_io,
        }

    @property
    def leaked_mb(self):
        """Memory retained so far by ``leak_mb_per_op``, in MB."""
        return sum(a.nbytes for a in list(self._leaked)) / _BYTES_PER_MB

    def release_leaks(self):
        """Drop the memory retained by ``leak_mb_per_op``."""
        self._leaked = []

    def _rng(self, call_index):
        if self.seed is not None:
            return np.random.default_rng([self._entropy, call_index])
        return np.random.default_rng([self._entropy, os.getpid(), call_index])

    def _run_stage(self, stage, rng, timings_us):
        """One pass of ``stage``: working set, CPU, then the LLM wait — yielded, in seconds, for the
        caller to sleep or await (see :meth:`_pipeline`); adds its wall µs.

        Each pass is a ``loadgen.measure`` of the stage's name (so a run's report shows each
        stage's latency, a style loop's second pass as a sample of its own). Returns None, or
        the timeout reason when the pass overran the stage's deadline. A wait that would end
        past the deadline is cut at it (the client gives up); CPU already burned is not
        interruptible.
        """
        deadline_ms = self.stage_timeout_ms[stage]
        cut = False
        with measure(stage) as timed:
            working_set = touch_memory(self.stage_memory_mb[stage])
            burn_cpu(self.stage_cpu_ms[stage])
            io_ms = self.stage_io_ms[stage]
            if io_ms > 0:
                sigma = self.io_sigma
                # mu chosen so the *mean* wait is io_ms, not the median
                wait_s = rng.lognormal(math.log(io_ms / 1000.0) - sigma * sigma / 2, sigma)
                if deadline_ms is not None:
                    left_s = deadline_ms / 1000.0 - (time.perf_counter_ns() - timed.t0_ns) / 1e9
                    if wait_s > left_s:
                        wait_s, cut = max(left_s, 0.0), True
                if self.async_io:
                    working_set = None  # an async session awaiting its LLM holds no buffers: thousands fit
                if wait_s > 0:
                    yield wait_s
            del working_set  # released at stage end, not at kickoff end
        wall_ns = timed.ns
        timings_us[stage] = timings_us.get(stage, 0) + wall_ns // 1000
        if deadline_ms is not None and (cut or wall_ns > deadline_ms * 1e6):
            return timeout_reason(wall_ns / 1e6, deadline_ms)
        return None

    def kickoff(self, inputs=None):
        """Run the pipeline once; blocks for its CPU and I/O (~0.12 s by default).

        ``inputs``: a mapping (topic_title, platform, …) or None for the
        defaults; anything else fails input_validation, as the real flow
        does. Returns a :class:`FlowResult`; failures — a stage past its
        deadline, injected, or input — are returned with ``state="failed"``,
        never raised; a deadline miss ends the kickoff at that stage.
        Thread-safe.
        """
        steps = self._pipeline(inputs)
        try:
            while True:
                time.sleep(next(steps))
        except StopIteration as done:
            return done.value

    async def akickoff(self, inputs=None, *, on_stage=None):
        """:meth:`kickoff` whose LLM waits are awaited (``asyncio.sleep``): thousands of kickoffs can
        wait at once on one event loop. The CPU and memory work of a stage runs as in ``kickoff``,
        blocking the loop while it lasts, as a real async service's Python code does.

        ``on_stage(stage, stage_timings_us)``, if given, is called (not awaited) after each stage
        pass with the stage's name and the timings so far (the dict the result will hold), e.g. to
        stream progress; it runs outside the stage's timing and changes nothing in the result."""
        import asyncio

        steps = self._pipeline(inputs, on_stage)
        try:
            while True:
                await asyncio.sleep(next(steps))
        except StopIteration as done:
            return done.value
        finally:
            steps.close()  # cancelled mid-wait: the kickoff's own clean-up (its leak, if any) runs now

    def _pipeline(self, inputs, on_stage=None):
        """The pipeline as a generator: yields each wait (s), returns the :class:`FlowResult`;
        ``on_stage``: see :meth:`akickoff`."""
        rng = self._rng(next(self._calls))
        # Every decision is drawn up front, in a fixed order, so that e.g.
        # changing failure_rate does not shift the waits of the same seed.
        fails = rng.random() < self.failure_rate
        failing_stage = STAGES[int(rng.integers(len(STAGES)))]
        loop_draws = rng.random(self.max_style_loops)
        word_count = int(rng.integers(600, 1400))
        quality_score = round(float(rng.uniform(7.0, 10.0)), 2)

        timings_us = {}
        style_loops = 0
        try:
            i = 0
            while i < len(STAGES):
                stage = STAGES[i]
                timed_out = yield from self._run_stage(stage, rng, timings_us)
                if on_stage is not None:
                    on_stage(stage, timings_us)
                if timed_out:
                    return FlowResult(FAILED, stage, timed_out, timings_us, style_loops)
                if stage == "input_validation" and not (inputs is None or isinstance(inputs, Mapping)):
                    reason = f"inputs must be a mapping, got {type(inputs).__name__}"
                    return FlowResult(FAILED, stage, reason, timings_us, style_loops)
                if fails and stage == failing_stage:
                    return FlowResult(FAILED, stage, _FAILURE_REASONS[stage], timings_us, style_loops)
                if (
                    stage == "style_validation"
                    and style_loops < self.max_style_loops
                    and loop_draws[style_loops] < self.style_loop_probability
                ):
                    style_loops += 1
                    i = STAGES.index("draft_generation")
                    continue
                i += 1
        finally:
            if self.leak_mb_per_op > 0:
                self._leaked.append(touch_memory(self.leak_mb_per_op))

        merged = {**_DEFAULT_INPUTS, **(inputs or {})}
        output = {
            "topic_title": str(merged.get("topic_title")),
            "word_count": word_count,
            "quality_score": quality_score,
        }
        return FlowResult(FINALIZED, None, None, timings_us, style_loops, output)

"""Run configuration: the one set of value checks, thresholds, stages and timing.

Everything here is plain data, validated on construction so that bad input
is rejected before any process starts (``UsageError``, exit 2). The checks
are the only ones in loadgen: options, plans, the flow's parameters, the
stressors and the thresholds all use them, so a value means the same and is
refused with the same words wherever it is given.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import re
from dataclasses import dataclass

from .errors import UsageError

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")  # one part of 1h15m30s
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_UNIT_ORDER = ("h", "m", "s", "ms")
MAX_SECONDS = 1e12  # a duration past this is a typo, and float() of a huge integer overflows


# ====================================================================== the one set of value checks
#
# Each check takes the value and ``what`` (the flag, variable, plan key or parameter it came from,
# named in the error) and returns the value normalised, or raises UsageError with one line:
# "WHAT: expected SUCH, got VALUE". ``strict``: the value came typed (TOML, the Python API), so a
# string is not parsed into a number; from the command line and the environment, strings are.


def show(value):
    """``value`` as an error message shows it: strings quoted, booleans as TOML writes them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return str(value)


def is_number(value):
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(value, what, low=0, high=None, *, strict=False):
    """``value`` as an int in [``low``, ``high``]; a float counts only when whole (2.0, not 2.5)."""
    expected = ("a whole number > 0" if low == 1 else f"a whole number ≥ {low}") + \
        (f" and ≤ {high}" if high is not None else "")
    if isinstance(value, bool) or (strict and not hasattr(value, "__index__")):  # ints, numpy ints
        raise UsageError(f"{what}: expected {expected}, got {show(value)}")
    try:
        if hasattr(value, "__index__"):
            n = operator.index(value)
        elif isinstance(value, float):
            if not value.is_integer():
                raise ValueError
            n = int(value)
        else:
            n = int(value) if isinstance(value, int) else int(str(value).strip())
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{what}: expected {expected}, got {show(value)}") from None
    if n < low or (high is not None and n > high):
        raise UsageError(f"{what}: expected {expected}, got {n}")
    return n


def check_number(value, what, low=0.0, high=math.inf, *, low_open=True, strict=False, expected=None):
    """``value`` as a finite float above ``low`` (or at it, unless ``low_open``) and ≤ ``high``."""
    if expected is None:
        expected = f"a number {'>' if low_open else '≥'} {low:g}" + (f" and ≤ {high:g}" if high != math.inf else "")
    if isinstance(value, bool) or (strict and not is_number(value)):
        raise UsageError(f"{what}: expected {expected}, got {show(value)}")
    try:
        x = float(value) if is_number(value) else float(str(value).strip())
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{what}: expected {expected}, got {show(value)}") from None
    if not math.isfinite(x) or x < low or (low_open and x == low) or x > high:
        raise UsageError(f"{what}: expected {expected}, got {value}")
    return x


def check_bool(value, what, *, strict=False):
    """A bool; unless ``strict``, also 1/0, true/false, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if not strict and isinstance(value, str):
        low = value.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    raise UsageError(f"{what}: expected true or false, got {show(value)}")


def check_text(value, what):
    """A non-empty string without NUL."""
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise UsageError(f"{what}: expected a non-empty string, got {show(value)}")
    return value


def check_choice(value, what, choices):
    """One of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        raise UsageError(f"{what}: expected one of {', '.join(choices)}, got {show(value)}" + did_you_mean(value, choices))
    return value


def did_you_mean(word, known):
    """`` (did you mean 'x'?)`` for the closest of ``known``, or ""."""
    import difflib

    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _compound_seconds(text):
    """Seconds of a compound duration such as ``1m30s`` or ``1h15m`` (units from the largest down,
    each at most once), or None when ``text`` is not one."""
    text, pos, total, rank = text.strip(), 0, 0.0, -1
    for m in _DURATION_PART_RE.finditer(text):
        unit_rank = _UNIT_ORDER.index(m.group(2))
        if m.start() != pos or unit_rank <= rank:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos, rank = m.end(), unit_rank
    return total if pos and pos == len(text) else None


def parse_duration(text, what="duration"):
    """Parse ``500ms``, ``10s``, ``5m``, ``1h``, compound ``1m30s`` / ``1h15m`` or plain seconds into
    seconds (float).

    Raises :class:`UsageError` naming ``what`` for anything else, zero and
    negative values included.
    """
    if isinstance(text, bool) or not (is_number(text) or isinstance(text, str)):
        raise UsageError(f"{what}: expected a duration (seconds, or a string such as \"500ms\", \"10s\", "
                         f"\"5m\"), got {show(text)}")
    if is_number(text):
        if abs(text) > MAX_SECONDS:  # float() of a huge integer overflows
            raise UsageError(f"{what}: expected a duration of at most {MAX_SECONDS:g} seconds, got {text}")
        seconds = float(text)
    else:
        m = _DURATION_RE.match(text)
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)] if m else _compound_seconds(text)
        if seconds is None:
            raise UsageError(f"{what}: {text!r} is not a duration (use e.g. 500ms, 10s, 5m, 1h, 1m30s)")
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_SECONDS:
        raise UsageError(f"{what}: must be greater than zero, got {text!r}")
    return seconds


@dataclass(frozen=True)
class ResourceThresholds:
    """Safety limits enforced by the monitor and the dispatcher.

    The first five fields and their defaults are the seed's. Memory is the
    pool's proportional set size (shared pages counted once) in MB; CPU is
    machine-wide percent (0–100, as ``psutil.cpu_percent()``) sustained
    over ``cpu_window_s``; ``max_cpu_percent=100`` turns the CPU guard off.
    ``min_available_memory_mb`` is the system floor: the pool is killed
    before the kernel's OOM killer would act.

    Guards in tiers: what endangers the machine or the run — the pool's
    memory, the system floor, ``max_execution_time_seconds`` — always acts
    (a kill; a graceful stop for the time). What a load test may do on
    purpose — machine CPU above ``max_cpu_percent``, memory growing faster
    than ``memory_growth_rate_mb_per_sec`` — is watched and reported
    (``threshold_exceeded``), and kills only for the guards named in
    ``kill_on`` (``"cpu"``, ``"growth"``).
    """

    max_memory_mb: float = 1024.0
    max_cpu_percent: float = 90.0
    max_execution_time_seconds: float = 300.0
    max_concurrent_operations: int = 50
    memory_growth_rate_mb_per_sec: float = 10.0
    min_available_memory_mb: float = 512.0
    cpu_window_s: float = 3.0
    growth_window_s: float = 30.0
    kill_on: tuple = ()  # report-only guards that kill instead: "cpu", "growth"

    def __post_init__(self):
        for f in dataclasses.fields(self):  # checked and normalised ("100" → 100.0, "5m" → 300.0)
            object.__setattr__(self, f.name, THRESHOLD_CHECKS[f.name](getattr(self, f.name), f.name))

    def to_dict(self):
        """The fields as a plain dict (as ``report.json`` carries them)."""
        return dataclasses.asdict(self)


def _duration_field(value, what, strict=False):
    return parse_duration(value, what)


#: How each threshold field is checked (plans, flags, the environment and the constructor alike).
THRESHOLD_CHECKS = {
    "max_memory_mb": lambda v, w, strict=False: check_number(v, w, 0, strict=strict),
    "max_cpu_percent": lambda v, w, strict=False: check_number(v, w, 0, 100, strict=strict),
    "max_execution_time_seconds": _duration_field,
    "max_concurrent_operations": lambda v, w, strict=False: check_int(v, w, 1, strict=strict),
    "memory_growth_rate_mb_per_sec": lambda v, w, strict=False: check_number(v, w, 0, strict=strict),
    "min_available_memory_mb": lambda v, w, strict=False: check_number(v, w, 0, low_open=False, strict=strict),
    "cpu_window_s": _duration_field,
    "growth_window_s": _duration_field,
    "kill_on": lambda v, w, strict=False: check_kill_on(v, w),
}


def check_kill_on(value, what):
    """``"cpu,growth"``, ``["cpu"]`` or ``()`` → a sorted tuple of guard names from :data:`KILLABLE`."""
    items = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)) or not all(isinstance(i, str) for i in items):
        raise UsageError(f"{what}: expected guard names among {', '.join(KILLABLE)}, got {show(value)}")
    for item in items:
        if item not in KILLABLE:
            raise UsageError(f"{what}: {item!r} is not a guard that can be told to kill (those that can: "
                             f"{', '.join(KILLABLE)}; memory, the system floor and the time limit always act)"
                             + did_you_mean(item, KILLABLE))
    return tuple(sorted(set(items)))


#: The report-only guards, and the ResourceThresholds field that sets each one's limit.
KILLABLE = {"cpu": "max_cpu_percent", "growth": "memory_growth_rate_mb_per_sec"}


@dataclass(frozen=True)
class Timing:
    """Every named interval and grace period of loadgen's processes, in seconds, in one place.

    Grouped by who waits: the master, a worker, the monitor, the stressors
    and the fleet. Limits that are not times (counts, shares, bytes) are
    named beside the code that applies them.
    """

    # -- the master (engine.runner)
    tick_s: float = 0.05  # the master's longest sleep: timeouts, stages, stop file
    drain_grace_s: float = 5.0  # drain time after a stop before the pool is killed
    kill_grace_s: float = 0.5  # TERM → KILL, for every process loadgen ends
    # A dead monitor is seen at once (its sentinel); this is for one that is alive but silent
    # (stopped, starved): a sample is due every interval, and the pool must not run unguarded for
    # long. At least MONITOR_SILENT_INTERVALS intervals (engine.faults) with a slow --sample-interval.
    monitor_silent_s: float = 1.0
    # ... when it is stopped (state T). One silent that long but runnable or asleep is starved (a loaded
    # machine) or hung: it is lost this much later.
    monitor_starved_s: float = 4.0
    # The master's heartbeat (engine.heartbeat): a worker that has not seen its master's loop turn for
    # this long (a stopped master) ends the pool; the master that finds itself that late ends the run.
    master_silent_s: float = 5.0
    # A spawned monitor imports for a second or more on a busy machine: the pool starts once it answered
    # (never unguarded), waiting this long at most; its silence counts from its first answer.
    monitor_start_s: float = 10.0
    second_grace_s: float = 2.0  # write a second this long after it ended even if a worker is silent
    schedule_lead_s: float = 0.1  # open model: arrivals start this long after the order, so all workers start together
    stressor_start_s: float = 5.0  # the master waits this long for its stressors to be under way
    stressor_stop_s: float = 1.0  # at teardown, a stressor's polite stop before terminate → kill
    teardown_s: float = 2.0  # at teardown, how long the master waits for killed workers to be reaped
    monitor_stop_s: float = 1.0  # at teardown, the monitor's polite stop before terminate → kill
    # -- a worker (engine.worker)
    worker_poll_s: float = 0.1  # the longest a worker's main thread or an idle slot waits before looking again
    drain_poll_s: float = 0.005  # while draining, how often the main thread checks whether the slots are done
    reject_pause_s: float = 0.01  # a slot whose call the breaker rejected waits at most this long before the next
    spin_s: float = 0.0002  # open model: below this much time to a due arrival, spin (sleep oversleeps ≈ 60 µs)
    # -- the monitor (engine.monitor) and the kill it does (engine._proc)
    pss_refresh_min_s: float = 1.0  # no process's PSS is re-read sooner than this
    io_refresh_s: float = 1.0  # disk/network counters and load average: slow to change, ≈0.2 ms to read
    # The hard growth limit looks at a short window so that a runaway allocation is stopped in seconds.
    growth_window_s: float = 5.0
    death_poll_s: float = 0.002  # polling step while waiting for killed processes to die (judged on it)
    # A master seen stopped (state T: SIGSTOP, a target that stops its parent) this long: the monitor
    # kills the pool (a Breach), never leaving it running unguarded. Ctrl-Z does not count: the master
    # then stops the pool and the monitor before itself (engine.signals).
    master_stopped_s: float = 2.0
    # Before killing the pool on a breach the monitor tells the master (so that the deaths are not
    # taken for crashes); it waits this long at most for its pipe to take the message.
    breach_notice_s: float = 0.2
    # After SIGKILL a process normally vanishes in milliseconds; one in uninterruptible sleep (D state,
    # NFS) may take longer. Bounded so that no wait on it hangs.
    kill_wait_s: float = 5.0
    # -- stressors (loadgen.stressors)
    # One duty cycle (busy then sleep): short enough that a 1 s reading holds many cycles, long enough
    # that the sleep's wake-up overshoot (~0.1 ms) is small against it.
    cpu_period_s: float = 0.05
    stressor_stop_grace_s: float = 2.0  # a stressor's polite stop → terminate
    ballast_check_s: float = 0.5  # the ballast holder: how often it checks its parent
    io_report_s: float = 0.5  # an I/O worker's stats message period
    io_socket_timeout_s: float = 1.0  # no socket call of the I/O stressor blocks longer than this
    io_thread_join_s: float = 2.0  # an I/O worker's wait for each of its threads at stop
    stressor_poll_s: float = 0.02  # a stressor's parent: its longest sleep while it waits on a child
    # -- the fleet (loadgen.fleet)
    fleet_connect_s: float = 10.0  # default --cluster-timeout: reach the scheduler, and find workers
    fleet_start_lead_s: float = 60.0  # default --start-lead: the longest wait for every shard's pool to be ready
    fleet_start_margin_s: float = 0.15  # the start instant: the last shard ready + this (or 3 round trips, if more)
    fleet_tick_s: float = 0.1  # the fleet master's loop wakes at least this often
    fleet_membership_s: float = 0.5  # how often the scheduler's worker list is read
    fleet_silence_s: float = 15.0  # default --silence-limit: a shard silent this long is lost (and stops itself)
    fleet_second_grace_s: float = 3.0  # a fleet line waits this long past its second for a slow shard
    fleet_stop_grace_s: float = 30.0  # after a stop request, wait this long for the shards' results
    fleet_drain_s: float = 0.3  # after the last result, late stream messages still merge
    shard_heartbeat_s: float = 1.0  # a shard's publisher: heartbeat, events tail, "still wanted?" check


TIMING = Timing()

# Defaults of run settings that the engine and the options table share (one declaration each).
DEFAULT_MAX_LATENESS_S = 1.0  # open model: an arrival no slot can start within this is dropped
DEFAULT_SAMPLE_INTERVAL_S = 0.1  # the monitor's sampling period
DEFAULT_MAX_OUTPUT_MB = 100  # workers.log's cap: what targets print past it is counted and dropped


def default_workers():
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Stage:
    """One ramp of a staged run: go linearly to ``target`` over ``duration_s``."""

    duration_s: float
    target: float


def parse_stages(text, what="--stages"):
    """``10s:50,30s:200,10s:0`` → list of :class:`Stage`; :class:`UsageError` naming ``what``."""
    stages = []
    for part in str(text).split(","):
        if not part.strip():
            continue
        dur, sep, target = part.rpartition(":")
        if not sep:
            raise UsageError(f"{what}: {part.strip()!r} is not DURATION:TARGET")
        try:
            t = float(target)
        except ValueError:
            raise UsageError(f"{what}: target {target!r} in {part.strip()!r} is not a number") from None
        if not math.isfinite(t) or t < 0:
            raise UsageError(f"{what}: target in {part.strip()!r} must be zero or more")
        stages.append(Stage(parse_duration(dur, f"{what} duration"), t))
    if not stages:
        raise UsageError(f"{what}: no stages given")
    return stages

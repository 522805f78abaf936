"""The CPU stressor: pinned duty-cycle burners holding a set share of each chosen core.

:class:`CpuStressor` (parent side) starts one :func:`_cpu_main` child per
core; each pins itself, sends one :class:`BurnStarted` and then burns
silently (:func:`_burn`) until SIGTERM (its polite stop) or its parent's
death.  The parent reads what the burners achieved from their CPU times.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

from ..config import TIMING, check_int, check_number
from ..errors import UsageError
from ._base import (
    Stressor,
    StressorState,
    child_setup,
    close,
    pipe,
    send,
)

# Each CPU burner period's length is drawn uniformly within ± this fraction of
# TIMING.cpu_period_s. Why: with tick-based accounting /proc/stat charges a whole tick (4 ms at
# HZ=250) to whatever runs when the tick fires; a fixed period keeps the busy window at a fixed
# phase of the tick grid, and at 50 % that read +1 point high on this machine.
CPU_PERIOD_JITTER = 0.25
# The burner's feedback may owe or be owed at most this many periods of CPU; beyond that the debt
# is written off, so a burst of contention from other processes is not "repaid" as a 100 % spike.
CPU_MAX_DEBT_PERIODS = 2.0


# ---------------------------------------------------------------- message (child → parent)


@dataclass(frozen=True)
class BurnStarted:
    """A CPU burner is pinned and burning: its clocks at that moment."""

    core: int | None
    monotonic_s: float
    cpu_s: float


# ---------------------------------------------------------------- child: CPU burner


def _cpu_main(conn, core, load_percent, period_s, jitter, max_debt_periods, parent_pid):
    """Child target: pin to ``core`` (None: no pinning), report :class:`BurnStarted`, burn."""
    if not child_setup(parent_pid):
        return
    if core is not None:
        os.sched_setaffinity(0, {core})
    send(conn, BurnStarted(core, time.monotonic(), time.process_time()))
    conn.close()
    _burn(load_percent / 100.0, period_s, jitter, period_s * max_debt_periods, parent_pid)


def _burn(load, period_s, jitter, max_debt_s, parent_pid):
    """Hold ``load`` (0–1] of one core until SIGTERM or the parent's death.

    Feedback on the process's own CPU time: at the start of each period the
    burner computes the CPU seconds it owes (load × wall time − CPU time,
    since its reference point), spins for load × period plus that debt,
    then sleeps to the end of the period.  Sleep overshoot, time slices
    lost to other processes and the cost of waking up all show up as debt
    and are repaid in the next periods; the debt is clamped to ±max_debt_s
    (anti-windup) by moving the reference.  Period lengths are drawn within
    ±``jitter`` of ``period_s`` (see :data:`CPU_PERIOD_JITTER`).
    """
    clock = time.monotonic
    cpu_clock = time.process_time  # user + system of this process, ns resolution on Linux
    sleep = time.sleep
    getppid = os.getppid
    draw = random.Random().random
    wall_ref = clock()
    cpu_ref = cpu_clock()
    period_start = wall_ref
    while True:
        if getppid() != parent_pid:
            return
        now = clock()
        cpu = cpu_clock()
        owed = load * (now - wall_ref) - (cpu - cpu_ref)
        if owed > max_debt_s:
            cpu_ref -= owed - max_debt_s
            owed = max_debt_s
        elif owed < -max_debt_s:
            cpu_ref += -max_debt_s - owed
            owed = -max_debt_s
        # Spin on the wall clock (vDSO, user mode: ~70 ns a call) rather than on
        # process_time (a real syscall here, ~700 ns, which turned most of the
        # burn into system time); a slice lost to preemption during the spin
        # is seen as debt at the next period.
        length = period_s * (1.0 + jitter * (2.0 * draw() - 1.0))
        until = now + load * length + owed
        while clock() < until:
            pass
        period_start += length
        rest = period_start - clock()
        if rest > 0:
            sleep(rest)
        else:  # fell behind (100 %, or starved): restart the grid from now
            period_start = clock()


def _usable_cores():
    """The CPU ids this process may run on, sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return list(range(os.cpu_count() or 1))


# ---------------------------------------------------------------- parent side


class CpuStressor(Stressor):
    """Hold ``load_percent`` of each chosen core busy with a duty-cycle burner.

    ``cores``: None → every usable core (``os.sched_getaffinity``); an int n →
    the first n usable cores; an iterable → those CPU ids (each must be
    usable).  One child per core, pinned to it.  Each child loops over
    ``period_s`` periods: busy for load % of it, asleep for the rest, with a
    feedback loop on its own CPU time that repays sleep overshoot and
    preemption (see :func:`_burn`).

    ``load_percent`` is the burners' own share of each core: on an idle
    machine that is what ``psutil.cpu_percent`` shows; other work on the
    same cores (the flows under test) comes on top of it rather than being
    absorbed, so the pressure applied does not depend on the workload.
    (stress-ng ``--cpu-load`` times its duty cycle on the wall clock and
    yields instead: 86 % of its own at 90 % with 4 points of other load.)
    """

    kind = "cpu"

    def __init__(self, load_percent, cores=None, *, period_s=TIMING.cpu_period_s):
        super().__init__()
        self.load_percent = check_number(load_percent, "cpu load_percent", 1, 100, low_open=False, strict=True)
        self.period_s = check_number(period_s, "cpu period_s", 0.001, 1.0, low_open=False, strict=True)
        usable = _usable_cores()
        if cores is None:
            self.cores = usable
        elif hasattr(cores, "__index__") and not isinstance(cores, bool):  # a count
            check_int(cores, "cpu cores", 1, len(usable), strict=True)
            self.cores = usable[:cores]
        else:
            try:
                chosen = sorted({check_int(c, "cpu core id", 0, strict=True) for c in cores})
            except TypeError:
                raise UsageError(f"cpu cores: expected None, a count or CPU ids, got {cores!r}") from None
            missing = [c for c in chosen if c not in usable]
            if not chosen or missing:
                raise UsageError(f"cpu cores: {missing or 'none'} not usable here (usable: {usable})")
            self.cores = chosen
        self._conns = []
        self._started = {}  # pid → BurnStarted
        self._last = {}  # pid → (cpu_s, monotonic_s) last seen by the parent

    def describe(self):
        """One line for reports: load, cores, duty-cycle period."""
        return (f"cpu: {self.load_percent:g}% of {len(self.cores)} core(s) {self.cores}, "
                f"{self.period_s * 1000:g} ms duty cycle")

    def _start(self, spawn):
        parent = os.getpid()
        for core in self.cores:
            here, there = pipe()
            self._conns.append(here)
            try:
                self._spawn(spawn, _cpu_main,
                            (there, core, self.load_percent, self.period_s, CPU_PERIOD_JITTER,
                             CPU_MAX_DEBT_PERIODS, parent),
                            f"loadgen-cpu-{core}")
            finally:
                close(there)

    def _poll(self):
        import psutil

        for proc, conn in zip(self._procs, self._conns):
            if proc.pid not in self._started:
                try:
                    if conn.poll(0):
                        self._started[proc.pid] = conn.recv()
                except (EOFError, OSError):
                    pass
            if proc.pid in self._started:
                try:
                    t = psutil.Process(proc.pid).cpu_times()
                    self._last[proc.pid] = (t.user + t.system, time.monotonic())
                except psutil.Error:
                    pass

    def wait_started(self, timeout_s):
        """Block until every burner is pinned and burning; True if so within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._poll()
            if len(self._started) == len(self._procs) or time.monotonic() >= deadline:
                return len(self._started) == len(self._procs)
            time.sleep(TIMING.stressor_poll_s)

    def stats(self):
        """What the burners achieved, from the parent's view of their CPU time.

        ``per_core_percent``: core → CPU time / wall time since that burner
        began burning (start-up excluded), in percent of one core;
        ``achieved_percent``: their mean.  Frozen at ``stop()``.
        """
        if self._state is StressorState.RUNNING:
            self._poll()
        per_core = {}
        for proc in self._procs:
            b, last = self._started.get(proc.pid), self._last.get(proc.pid)
            if b is None or last is None or last[1] <= b.monotonic_s:
                continue
            per_core[b.core] = round(100.0 * (last[0] - b.cpu_s) / (last[1] - b.monotonic_s), 2)
        return {
            "kind": self.kind,
            "state": self._state.value,
            "load_percent": self.load_percent,
            "cores": list(self.cores),
            "period_s": self.period_s,
            "per_core_percent": per_core,
            "achieved_percent": round(sum(per_core.values()) / len(per_core), 2) if per_core else None,
            "elapsed_s": round(self._elapsed_s(), 3),
            **self._proc_stats(),
        }

    def _before_stop(self):
        self._poll()  # last CPU-time reading while the burners still exist

    def _request_stop(self, deadline):
        for p in self._procs:  # a burner's SIGTERM is its polite stop: exit code 0
            if p.is_alive():
                try:
                    p.terminate()
                except (OSError, ValueError):
                    pass

    def _after_stop(self):
        for c in self._conns:
            close(c)


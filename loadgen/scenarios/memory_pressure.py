"""``memory_pressure``: flows while a resident ballast grows in steps and is held.

The ballast counts towards the pool's memory (it is watched as part of
the pool), sized at half of ``max_memory_mb`` so the flows run close to
the limit without the scenario breaching it by design.
"""

from ..stressors import MemoryStressor
from ._pressure import PressureScenario

STEPS = 4


class MemoryPressure(PressureScenario):
    """``memory_pressure``: the flows while a resident ballast of half ``max_memory_mb`` grows and is held."""

    name = "memory_pressure"
    summary = "flows under a stepped, resident memory ballast (half of max_memory_mb)"
    criteria = ("success_rate > 0.5",)

    def stressor(self, session):
        """A ballast of half ``max_memory_mb`` in ``STEPS`` steps, fully grown by half the main phase's
        :meth:`duration`. Raises :class:`UsageError` (exit 2) when that exceeds what the machine has
        available."""
        total = session.thresholds.max_memory_mb * 0.5
        interval = self.duration(session) / (2 * STEPS)  # fully grown by half-time
        return MemoryStressor(total, steps=STEPS, step_interval_s=interval)

    def stressor_metrics(self, stats):
        """``ballast_mb``: the planned size of the steps done (not the measured resident size), and
        ``ballast_time_to_resident_s`` (None until the whole ballast was resident)."""
        steps = stats.get("steps") or 1
        return {"ballast_mb": round(stats.get("total_mb", 0) * stats.get("steps_done", 0) / steps, 1),
                "ballast_time_to_resident_s": stats.get("time_to_resident_s")}


SCENARIO = MemoryPressure()

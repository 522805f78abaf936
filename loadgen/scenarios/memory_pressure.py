"""``memory_pressure``: flows while a resident ballast grows in steps and is held.

The ballast counts towards the pool's memory (it is watched as part of
the pool), sized at half of ``max_memory_mb`` so the flows run close to
the limit without the scenario breaching it by design.
"""

from ..stressors import MemoryStressor
from ._pressure import PressureScenario

STEPS = 4


class MemoryPressure(PressureScenario):
    name = "memory_pressure"
    summary = "flows under a stepped, resident memory ballast (half of max_memory_mb)"
    criteria = ("success_rate > 0.5",)

    def stressor(self, session):
        total = session.thresholds.max_memory_mb * 0.5
        interval = self.duration(session) / (2 * STEPS)  # fully grown by half-time
        return MemoryStressor(total, steps=STEPS, step_interval_s=interval)

    def stressor_metrics(self, stats):
        steps = stats.get("steps") or 1
        return {"ballast_mb": round(stats.get("total_mb", 0) * stats.get("steps_done", 0) / steps, 1),
                "ballast_time_to_resident_s": stats.get("time_to_resident_s")}


SCENARIO = MemoryPressure()

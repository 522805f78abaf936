"""``cpu_saturation``: flows while every core is burned at high load (90% by default).

Saturating the CPU is the point, so the machine-wide CPU guard is off for
the stressed phase (``max_cpu_percent=100``); memory guards stay on.
"""

import dataclasses

from ..stressors import CpuStressor
from ._pressure import PressureScenario

CPU_LOAD_PERCENT = 90


class CpuSaturation(PressureScenario):
    """``cpu_saturation``: the flows while every usable core burns at ``CPU_LOAD_PERCENT``."""

    name = "cpu_saturation"
    summary = f"flows while every core is burned at {CPU_LOAD_PERCENT}% (duty-cycle burners)"
    criteria = ("success_rate > 0.6",)

    def stressor(self, session):
        """Duty-cycle burners, one per usable core, at ``CPU_LOAD_PERCENT``."""
        return CpuStressor(CPU_LOAD_PERCENT)

    def thresholds(self, session):
        """The session's thresholds with the machine-wide CPU guard off (``max_cpu_percent=100``)."""
        return dataclasses.replace(session.thresholds, max_cpu_percent=100.0)

    def stressor_metrics(self, stats):
        """``burner_cpu_percent``: the burners' achieved load, mean over cores (None if unknown)."""
        return {"burner_cpu_percent": stats.get("achieved_percent")}


SCENARIO = CpuSaturation()

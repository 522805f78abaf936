"""``cpu_saturation``: flows while every core is burned at high load (90% by default).

Saturating the CPU is the point, so the machine-wide CPU guard is off for
the stressed phase, even with ``--kill-on cpu``: the report shows it passed
(a ``threshold_exceeded`` event); memory guards stay on.
"""


from ..stressors import CpuStressor
from ._base import report_cpu
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
        """The session's thresholds, but the machine-wide CPU guard never kills here: it is reported."""
        return report_cpu(session.thresholds)

    def stressor_metrics(self, stats):
        """``burner_cpu_percent``: the burners' achieved load, mean over cores (None if unknown)."""
        return {"burner_cpu_percent": stats.get("achieved_percent")}


SCENARIO = CpuSaturation()

"""``io_stress``: flows while files are written, fsynced, read back and removed, and
loopback TCP round trips run (127.0.0.1 only)."""

from ..stressors import IoStressor
from ._pressure import PressureScenario

MB = 2**20


class IoStress(PressureScenario):
    """``io_stress``: the flows under file-system and loopback TCP stress."""

    name = "io_stress"
    summary = "flows under file-system (write+fsync+read) and loopback TCP stress"
    criteria = ("success_rate > 0.6",)

    def stressor(self, session):
        """One I/O child: 4 MiB files written, fsynced, read back and removed (at most 64 MiB on disk),
        and loopback TCP round trips."""
        return IoStressor(file_bytes=4 * MB, max_total_bytes=64 * MB, tcp=True, workers=1)

    def stressor_metrics(self, stats):
        """The stressor's throughputs (MB/s, round trips/s) and p99s (ms) that it reported as numbers."""
        out = {}
        for key in ("disk_write_mb_s", "disk_read_mb_s", "fsync_write_p99_ms", "read_p99_ms",
                    "tcp_round_trips_per_s", "tcp_mb_s", "tcp_rtt_p99_ms"):
            if isinstance(stats.get(key), (int, float)):
                out[key] = stats[key]
        return out


SCENARIO = IoStress()

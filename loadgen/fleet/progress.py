"""A fleet run's status line (:class:`FleetProgress`), fed one merged line per second by the master."""

from __future__ import annotations

import sys
import time


class FleetProgress:
    """The status of a fleet run: a live line on a terminal, else (CI, a pipe) a plain timestamped line
    on stdout every ``interval`` seconds, as :class:`loadgen.cli.Progress`; ``enabled=False``: none."""

    def __init__(self, stream=None, enabled=None, interval=10.0):
        stream = stream if stream is not None else sys.stderr  # now, not at import (``2>&-`` made it None)
        self.stream = stream
        self.live = stream.isatty() if enabled is None else enabled
        self.plain = sys.stdout if enabled is None and not self.live else None
        self.interval = interval
        self._next_plain = time.time() + interval

    def __call__(self, line, running, total):
        p99 = (line.get("latency_ms") or {}).get("p99")
        sr = line.get("success_rate")
        text = (f"[fleet {running}/{total} running · {line.get('phase', '')}] "
                f"ops/s {line.get('throughput') or 0:>7}  ok {'—' if sr is None else f'{sr:6.1%}'}  "
                f"p99≤ {'—' if p99 is None else f'{p99:8.1f}ms'}  in flight {line.get('in_flight') or 0:>4}")
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
        elif self.plain is not None and time.time() >= self._next_plain:
            self._next_plain = time.time() + self.interval
            self.plain.write(time.strftime("%H:%M:%S ") + text + "\n")
            self.plain.flush()

    def done(self):
        """Clear the status line."""
        if self.live:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

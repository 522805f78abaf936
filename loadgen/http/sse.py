"""Server-Sent Events split into events as the body arrives, each stamped with its arrival time.

An event ends at a blank line (``\\n\\n``, ``\\r\\n\\r\\n`` or ``\\r\\r``, as the SSE format allows);
a block of comment lines only (``: keep-alive``) is no event. Only boundaries are found — the
fields are not parsed: a load test needs when each event came, not what it said.
"""

from __future__ import annotations

import re

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_FIELD_LINE = re.compile(rb"(?:^|[\r\n])[^:\r\n]")  # a line that is not a comment
MAX_PENDING = 1 << 20  # bytes of an unfinished event kept; a longer one is counted when it ends all the same


class EventSplitter:
    """Feed body bytes with their arrival time (ns); :attr:`times_ns` holds when each event ended."""

    __slots__ = ("pending", "times_ns", "has_data")

    def __init__(self):
        self.pending = b""
        self.times_ns = []
        self.has_data = False  # the unfinished event holds a line that is not a comment

    def feed(self, data, now_ns):
        buf = self.pending + data if self.pending else data
        start = 0
        for m in _BOUNDARY.finditer(buf):
            if self._is_event(buf[start:m.start()]):
                self.times_ns.append(now_ns)
            self.has_data = False
            start = m.end()
        rest = buf[start:]
        if len(rest) > MAX_PENDING:  # keep the tail only: a boundary may straddle the cut
            self.has_data = self.has_data or self._is_event(rest[:-4])
            rest = rest[-4:]
        self.pending = rest

    def _is_event(self, block):
        if self.has_data:
            return True
        # An event unless every line is a comment (":…"): one regex search, no list of lines (a stream
        # of events at 1,000 streams in flight must not feed the cyclic GC).
        return _FIELD_LINE.search(block) is not None

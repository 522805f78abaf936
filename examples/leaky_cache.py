"""A deliberately leaky flow: a response cache that never evicts, keyed by something unique.

``render`` builds a page (``kb`` KiB, touched: resident, not just reserved)
and memoises it under the request's id. Ids never repeat, so nothing is ever
served from the cache and nothing ever leaves it: memory grows by ``kb`` per
operation, a few MB/s at the plan's load — the classic unbounded-cache bug.

``sustained_load`` catches it: its leak verdict (a significant, well-fitted
slope of the pool's PSS, confirmed on RSS) says leak, so the criterion
``leak_detected == 0`` fails and the run exits 1::

    python -m loadgen run --config examples/leaky_cache.toml

The fix is a bound (``functools.lru_cache(maxsize=…)``) or a key that repeats.
"""

from __future__ import annotations

import itertools
import os
import time

_CACHE = {}  # the bug: unbounded, and keyed by an id that never repeats
_IDS = itertools.count()


def render(record=None, kb=16, ms=50):
    """One request: wait ``ms`` (the backend), build a ``kb`` KiB page, cache it for ever."""
    time.sleep(ms / 1000.0)
    request_id = f"{os.getpid()}-{next(_IDS)}"
    if request_id in _CACHE:  # never true: the ids are unique
        return _CACHE[request_id]
    line = f"<p>request {request_id}</p>\n".encode()
    page = line * (kb * 1024 // len(line) + 1)  # written byte by byte: every page resident
    _CACHE[request_id] = page
    return len(page)

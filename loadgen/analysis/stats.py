"""Measurements as plain data: HDR latency histograms and operation accounting.

Latencies are integer **microseconds** in HDR histograms from the
``hdrhistogram`` package (3 significant digits, 1 µs to 1 h). Workers
record in bulk (:meth:`Histogram.record_many`, vectorised with numpy over
the package's own counts array) because a per-value ``record_value`` costs
about a microsecond of Python — more than a no-op operation. Histograms
cross pipes and land in reports as the standard HDR base64 payload, so
runs, workers and machines merge exactly.

Rendering lives elsewhere (``report``); this module only counts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from hdrh.histogram import HdrHistogram

from . import PERCENTILES, STATISTICS  # declared once, in the light package module

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3


def _indices(h, values_us):
    """HDR counts indices of ``values_us`` (int64 array) for histogram ``h``: the arithmetic of
    ``HdrHistogram._counts_index_for``, vectorised (bit length via frexp, exact below 2**53)."""
    v = np.clip(np.asarray(values_us, dtype=np.int64), 0, HIGHEST_US)
    _, pow2ceiling = np.frexp((v | h.sub_bucket_mask).astype(np.float64))
    bucket = pow2ceiling.astype(np.int64) - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
    sub_bucket = v >> (bucket + h.unit_magnitude)
    return v, ((bucket + 1) << h.sub_bucket_half_count_magnitude) + sub_bucket - h.sub_bucket_half_count


class Sparse:
    """The non-empty buckets of an HDR histogram: what crosses a pipe once a second.

    A full histogram has 23,552 counters (184 KiB); a second of latencies
    touches a few hundred. Creating and freeing full histograms every second
    fragments the master's heap (its RSS crept up by tens of MB an hour), so
    workers ship ``Sparse`` and the master adds it into histograms it keeps.
    ``index``/``count``: int64 arrays; ``min_us``/``max_us``: exact extremes.
    """

    __slots__ = ("index", "count", "min_us", "max_us")

    def __init__(self, index, count, min_us, max_us):
        self.index, self.count, self.min_us, self.max_us = index, count, min_us, max_us

    @classmethod
    def of(cls, values_us):
        """From raw microsecond values (any sequence); None when empty."""
        if len(values_us) == 0:
            return None
        v, index = _indices(_REFERENCE._h, values_us)
        uniq, counts = np.unique(index, return_counts=True)
        return cls(uniq, counts.astype(np.int64), int(v.min()), int(v.max()))

    @property
    def total(self):
        """How many values: the sum of the counts."""
        return int(self.count.sum())

    def __reduce__(self):
        return (Sparse, (self.index, self.count, self.min_us, self.max_us))


class SecondHistogram:
    """Sparse parts of one second, merged only when its percentiles are read."""

    __slots__ = ("parts",)

    def __init__(self):
        self.parts = []

    def add(self, sparse):
        """Keep ``sparse`` (one worker's part of the second); None is ignored."""
        if sparse is not None:
            self.parts.append(sparse)

    def summary_ms(self):
        """``{p50, p90, p95, p99, p999, p9999, max}`` in ms (None when empty), as :meth:`Histogram.summary_ms`."""
        keys = [k for k, _ in PERCENTILES] + ["max"]
        if not self.parts:
            return dict.fromkeys(keys)
        index = np.concatenate([p.index for p in self.parts])
        count = np.concatenate([p.count for p in self.parts])
        order = np.argsort(index, kind="stable")
        index, count = index[order], count[order]
        cumsum = np.cumsum(count)
        total = int(cumsum[-1])
        h = _REFERENCE._h
        out = {}
        for k, p in PERCENTILES:
            target = max(int(p * total / 100 + 0.5), 1)
            i = int(index[int(np.searchsorted(cumsum, target))])
            out[k] = round(h.get_highest_equivalent_value(h.get_value_from_index(i)) / 1000, 3)
        out["max"] = round(h.get_highest_equivalent_value(max(p.max_us for p in self.parts)) / 1000, 3)
        return out


class Histogram:
    """An HDR histogram of microsecond values with bulk recording and exact merge."""

    __slots__ = ("_h", "_counts")

    def __init__(self, _hdr=None):
        self._h = _hdr if _hdr is not None else HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        # A numpy view of the package's counts (no copy): bulk adds go straight in.
        self._counts = np.ctypeslib.as_array(self._h.counts)

    # -- recording

    def record_many(self, values_us):
        """Record a sequence of microsecond values (ints ≥ 0; larger than 1 h are clamped)."""
        if len(values_us) == 0:
            return
        h = self._h
        v, index = _indices(h, values_us)
        if v.size < 4096:
            np.add.at(self._counts, index, 1)
        else:
            self._counts += np.bincount(index, minlength=h.counts_len).astype(self._counts.dtype)
        h.total_count += int(v.size)
        h.min_value = min(h.min_value, int(v.min()))
        h.max_value = max(h.max_value, int(v.max()))

    def add_sparse(self, sparse):
        """Add a :class:`Sparse` (exact; no temporary histogram); returns self."""
        if sparse is not None and len(sparse.index):
            h = self._h
            np.add.at(self._counts, sparse.index, sparse.count)
            h.total_count += sparse.total
            h.min_value = min(h.min_value, sparse.min_us)
            h.max_value = max(h.max_value, sparse.max_us)
        return self

    def record(self, value_us):
        """Record one value (µs), clamped to [0, 1 h]; for many, :meth:`record_many` is far cheaper."""
        self._h.record_value(min(max(int(value_us), 0), HIGHEST_US))

    # -- combining

    def merge(self, other):
        """Add ``other``'s counts into this histogram (exact); returns self."""
        if other is not None and other.count:
            self._h.add(other._h)
        return self

    def copy(self):
        """An independent histogram with the same counts."""
        return Histogram().merge(self)

    # -- reading

    @property
    def count(self):
        """How many values were recorded."""
        return int(self._h.total_count)

    def value_at(self, percentile, _cumsum=None):
        """Value (µs) at ``percentile`` (0–100), HDR convention: highest equivalent value."""
        total = self.count
        if not total:
            return 0
        target = max(int(percentile * total / 100 + 0.5), 1)
        cumsum = np.cumsum(self._counts) if _cumsum is None else _cumsum
        index = int(np.searchsorted(cumsum, target))
        value = self._h.get_value_from_index(index)
        return self._h.get_highest_equivalent_value(value) if percentile else value

    def counts_at_most(self, bounds_us):
        """How many values are at most each of ``bounds_us`` (µs, ascending), at the histogram's
        resolution (a bound's own bucket counts whole): the cumulative counts of Prometheus ``le``
        buckets."""
        cumsum = np.cumsum(self._counts)
        return [int(cumsum[min(self._h._counts_index_for(int(b)), len(cumsum) - 1)]) for b in bounds_us]

    def mean_us(self):
        """Mean (µs), HDR convention (each bucket at its median equivalent value).

        The package's ``get_mean_value`` walks every bucket in Python (≈ 0.3 s for
        a 1 µs–1 h histogram); only the non-empty buckets matter.
        """
        total = self.count
        if not total:
            return 0.0
        h = self._h
        nz = np.flatnonzero(self._counts)
        values = [h._hdr_median_equiv_value(h.get_value_from_index(int(i))) for i in nz]
        return float(np.dot(self._counts[nz].astype(np.float64), values)) / total

    def mean_sd_us(self):
        """``(mean, standard deviation)`` in µs, HDR convention as :meth:`mean_us`; (0.0, 0.0) when empty."""
        total = self.count
        if not total:
            return 0.0, 0.0
        h = self._h
        nz = np.flatnonzero(self._counts)
        values = np.array([h._hdr_median_equiv_value(h.get_value_from_index(int(i))) for i in nz], dtype=np.float64)
        counts = self._counts[nz].astype(np.float64)
        mean = float(np.dot(counts, values)) / total
        var = float(np.dot(counts, (values - mean) ** 2)) / max(1, total - 1)
        return mean, math.sqrt(var)

    def summary_ms(self):
        """``{p50, p90, p95, p99, p999, p9999, min, max, mean, count}`` in milliseconds (count as int;
        :data:`STATISTICS`)."""
        if not self.count:
            return dict.fromkeys(STATISTICS) | {"count": 0}
        cumsum = np.cumsum(self._counts)
        out = {k: round(self.value_at(p, cumsum) / 1000, 3) for k, p in PERCENTILES}
        out["min"] = round(self._h.get_min_value() / 1000, 3)
        out["max"] = round(self._h.get_max_value() / 1000, 3)
        out["mean"] = round(self.mean_us() / 1000, 3)
        out["count"] = self.count
        return out

    # -- serialising

    def to_payload(self):
        """The standard HDR compressed base64 payload (str); '' when empty."""
        return self._h.encode().decode("ascii") if self.count else ""

    @classmethod
    def from_payload(cls, payload):
        """A histogram from :meth:`to_payload`'s text (or bytes); empty for ``''`` or None."""
        if not payload:
            return cls()
        return cls(HdrHistogram.decode(payload.encode("ascii") if isinstance(payload, str) else payload))

    def __repr__(self):
        return f"Histogram(count={self.count})"


@dataclass
class Accounting:
    """Where every operation ended. ``dispatched`` = the four outcomes (:attr:`completed`) plus
    ``lost``; ``dropped`` operations (open model, no free slot) were never dispatched. ``lost``: a
    fleet's operations on a shard that was lost — they ran, but where they ended never reached the
    fleet (0 in a local run)."""

    dispatched: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    crashed: int = 0
    dropped: int = 0
    rejected: int = 0  # refused fast by an open circuit breaker (not dispatched)
    lost: int = 0  # on a fleet's lost shard: dispatched, outcome never delivered

    def merge(self, other):
        """Add ``other``'s counts to these, field by field; returns self."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def completed(self):
        """Operations that ended: succeeded + failed + timed out + crashed."""
        return self.succeeded + self.failed + self.timed_out + self.crashed

    @property
    def success_rate(self):
        """succeeded ÷ completed; 0.0 when none completed (check :attr:`completed` to tell "no data")."""
        done = self.completed
        return self.succeeded / done if done else 0.0

    def adds_up(self):
        """True when every dispatched operation is accounted for (``dispatched == completed + lost``)."""
        return self.dispatched == self.completed + self.lost

    def to_dict(self):
        """The counts by field name: a report's or an event's ``accounting``."""
        return asdict(self)


class CappedCounter:
    """Counts by key, keeping at most ``cap`` keys including ``other``, where the rest land."""

    OTHER = "other"

    def __init__(self, cap=50):
        self.cap = cap
        self.counts = {}

    def add(self, key, n=1):
        """Count ``n`` for ``key``; a new key once the cap is reached counts under ``other``."""
        c = self.counts
        if key not in c and len(c) >= self.cap - (self.OTHER not in c):
            key = self.OTHER
        c[key] = c.get(key, 0) + n

    def update(self, mapping):
        """:meth:`add` each ``key → n`` of ``mapping``."""
        for k, n in mapping.items():
            self.add(k, n)

    def to_dict(self):
        """key → count, most frequent first."""
        return dict(sorted(self.counts.items(), key=lambda kv: -kv[1]))


_REFERENCE = Histogram()  # the bucket layout every histogram here shares (index ↔ value)

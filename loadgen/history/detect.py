"""Change points of a night-by-night series, and the regression verdict on the newest night.

Method (README "History"): ruptures' PELT with a least-squares cost proposes
where the mean of a series changes; a significance test then keeps only the
changes the noise cannot explain, as E-Divisive implementations (Apache
Otava, MongoDB's signal-processing-algorithms) follow their split search with
a test:

1. the series' noise ``sigma`` is estimated robustly from the night-to-night
   differences (their MAD: a step moves one difference, not the scale), with a
   floor of :data:`NOISE_FLOOR_REL` of the level (a success rate of exactly 1.0
   every night is not infinitely precise);
2. PELT (ruptures' ``KernelCPD``, linear kernel; ``min_size`` 2: a single odd night is an outlier, not a segment)
   segments the series scaled by ``sigma`` with a penalty of
   :data:`PENALTY_PER_LOG_N` × ln(n);
3. the weakest boundary is removed while its two-sided t-test between the
   means of the segments on either side has p > :data:`ALPHA`, or its relative
   change is under :data:`MIN_CHANGE_PCT`; the test's per-night error is the
   pooled sd within the current segments (n − segments degrees of freedom, as
   an ANOVA's; never below ``sigma``), and means and sd are recomputed after
   each removal.

A series is judged once it has :data:`MIN_NIGHTS` usable nights (failed nights
are never part of it). The newest night is *regressed* when it lies in a last
segment that is worse (by the metric's direction, ``series.direction``) than
the segment before it.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np

# Tuned with benchmarks/history.py on the measured noise of `suite --profile ci` (README, History).
ALPHA = 3e-4  # per boundary of one figure; PELT picked the best-fitting split, so the nominal p is optimistic
FAMILY_ALPHA = 1e-2  # per night over all of a series' figures (Bonferroni): min(ALPHA, this / figures judged)
PENALTY_PER_LOG_N = 3.0  # PELT's penalty per ln(n), in units of sigma²: proposes; the test decides
MIN_CHANGE_PCT = 2.0  # a smaller move is not called a change, however significant
NOISE_FLOOR_REL = 0.003  # sigma is at least this share of the series' median level
MIN_NIGHTS = 6  # fewer usable nights: no verdict yet (a baseline is being built)
MIN_SEGMENT = 2  # nights; the newest change is found on its second night at the earliest
_MAD_TO_SD = 1.4826  # MAD × this = the sd of a normal distribution


@dataclass(frozen=True)
class Change:
    """A change of a series' mean at ``index`` (the first night of the new level, an index into the
    values judged). ``change_pct``: (after − before) / |before| × 100; ``p``: the z-test's two-sided
    p-value; ``worse``: the change goes the metric's bad way."""

    index: int
    before: float
    after: float
    change_pct: float
    p: float
    worse: bool


@dataclass(frozen=True)
class Segments:
    """A series cut at its changes: ``bounds`` [(start, end)) index pairs, their ``means``, the
    ``changes`` between them, and the ``sigma`` used."""

    bounds: list
    means: list
    changes: list
    sigma: float

    @property
    def regressed(self):
        """True when the last segment is worse than the one before it (the newest night is regressed)."""
        return bool(self.changes) and self.changes[-1].worse


def noise_sd(values):
    """A robust sd of one night's figure: from the MAD of consecutive differences (÷ √2: a difference
    holds two nights' noise), floored at :data:`NOISE_FLOOR_REL` of the median level and at a tiny
    absolute value (a constant series)."""
    x = np.asarray(values, dtype=float)
    floor = noise_floor(x)
    if len(x) < 3:
        return floor
    d = np.diff(x)
    mad = float(np.median(np.abs(d - np.median(d))))
    return max(_MAD_TO_SD * mad / math.sqrt(2.0), floor)


def noise_floor(x):
    """The least sigma of a series: :data:`NOISE_FLOOR_REL` of its median level, or a tiny absolute value."""
    return max(NOISE_FLOOR_REL * abs(float(np.median(x))), 1e-9)


def _candidates(x):
    """Boundaries (start indices of new segments) that ruptures' PELT proposes for ``x`` (scaled to unit
    noise), least-squares cost."""
    n = len(x)
    pen = PENALTY_PER_LOG_N * math.log(n)
    if n < 2 * MIN_SEGMENT:  # ruptures refuses a series too short for one change
        return []
    # KernelCPD with the linear kernel is PELT on the least-squares cost in ruptures' C code: 365 nights
    # take about a millisecond, where ruptures.Pelt(model="l2"), pure Python, took 0.7 s (benchmarks/history.py).
    pelt = _ruptures_pelt()
    if pelt is not None:
        path = pelt(np.ascontiguousarray(x, dtype=np.double).reshape(-1, 1), pen, MIN_SEGMENT)
        cuts, i = [], n
        while i > 0:  # the path matrix links each segment's end to its start (as KernelCPD.predict reads it)
            i = int(path[i])
            if i > 0:
                cuts.append(i)
        return cuts[::-1]
    import ruptures

    algo = ruptures.KernelCPD(kernel="linear", min_size=MIN_SEGMENT, jump=1).fit(x.reshape(-1, 1))
    return [b for b in algo.predict(pen=pen) if b < n]


@functools.cache
def _ruptures_pelt():
    """ruptures' C function behind ``KernelCPD(kernel="linear").predict(pen=…)``, loaded on its own, or None
    (then the public class is used). ``import ruptures`` imports every detector of the package, and one of
    them imports ``scipy.signal``: 1.1 s of a nightly call's 2 s budget; the C module alone loads in
    milliseconds."""
    try:
        import glob
        import importlib.machinery
        import importlib.util

        spec = importlib.util.find_spec("ruptures")
        folder = os.path.join(spec.submodule_search_locations[0], "detection", "_detection")
        suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
        (path,) = [f for f in glob.glob(os.path.join(folder, "ekcpd*")) if f.endswith(suffixes)]
        name = "ruptures.detection._detection.ekcpd"
        loader = importlib.machinery.ExtensionFileLoader(name, path)
        module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path, loader=loader))
        loader.exec_module(module)
        return module.ekcpd_pelt_L2
    except Exception:  # noqa: BLE001 - another layout of ruptures: its public API instead
        return None


def _p_two_sided(z, df):
    """Two-sided p of ``z`` under Student's t with ``df`` degrees of freedom: a short history's sigma is
    uncertain, and a normal z-test on it raised false alarms in the first weeks of a series."""
    from scipy.special import stdtr  # Student's t CDF; scipy.stats' t.sf costs 50 µs a call and 1 s to import

    return float(2.0 * stdtr(max(df, 1), -abs(z)))


def segment(values, direction, alpha=ALPHA, min_change_pct=MIN_CHANGE_PCT):
    """Cut ``values`` (a series' usable nights, oldest first) at its significant changes. ``direction``:
    +1 when higher is better, -1 when lower is. Returns :class:`Segments`; a series shorter than
    :data:`MIN_NIGHTS` is one segment."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    sigma = noise_sd(x)
    cuts = _candidates(x / sigma) if n >= MIN_NIGHTS else []
    while True:
        edges = [0, *cuts, n]
        means = [float(x[a:b].mean()) for a, b in zip(edges, edges[1:])]
        # The test's sigma: the pooled sd within the segments (an ANOVA's), with n − segments degrees of freedom;
        # the MAD-based sigma only scales the proposal.
        df = n - len(means)
        resid = sum(float(((x[a:b] - m) ** 2).sum()) for (a, b), m in zip(zip(edges, edges[1:]), means))
        # Never below the MAD-based sigma either: a series cut into many short segments fits its own noise and
        # its pooled sd reads low (A/A histories showed spurious "p 1e-8" changes without this).
        sd = max(math.sqrt(resid / df), sigma) if df > 0 else sigma
        tests = []
        for i, c in enumerate(cuts):
            nl, nr = edges[i + 1] - edges[i], edges[i + 2] - edges[i + 1]
            before, after = means[i], means[i + 1]
            z = (after - before) / (sd * math.sqrt(1.0 / nl + 1.0 / nr))
            pct = (after - before) / abs(before) * 100.0 if before else math.copysign(math.inf, after - before)
            p = _p_two_sided(z, df)
            keep = p <= alpha and abs(pct) >= min_change_pct
            tests.append((keep, p, c, Change(c, before, after, pct, p, (after - before) * direction < 0)))
        weak = [t for t in tests if not t[0]]
        if not weak:
            break
        cuts.remove(max(weak, key=lambda t: t[1])[2])
    bounds = list(zip(edges, edges[1:]))
    return Segments(bounds, means, [t[3] for t in tests], sigma)


# ====================================================================== the verdict over a history

NEW_WITHIN_NIGHTS = 2  # a change found again up to this many nights off is the same change, not a new one
# Only a change that began within this many usable nights can be new: an old boundary that a noisy series
# drops and finds again (it moves by a few nights) is not announced again (A/A histories announced such
# flickers up to 6 times in 100 nights). A drift is found mid-way, a few nights after its start.
NEW_MAX_AGE_NIGHTS = 14


@dataclass(frozen=True)
class Found:
    """A change of one component's metric in a series: at night ``night`` (a ``store.Night``, the first
    night of the new level), ``change`` its figures. ``current``: it starts the segment the newest
    night lies in; ``new``: it was not found without the newest night (this night revealed it)."""

    component: str
    metric: str
    night: object
    change: Change
    current: bool
    new: bool


@dataclass
class SeriesVerdict:
    """One series of a history: its nights (oldest first), what started it (``started_by``: what
    differs from the series before, None for the first), the changes found per component and metric,
    and the segments drawn on the page (``(component, metric)`` → ``(nights used, Segments)``)."""

    key: str
    nights: list
    started_by: str | None
    found: list
    segments: dict

    @property
    def regressions(self):
        """The changes the newest usable night is regressed by (its segment worse than the one before)."""
        return [f for f in self.found if f.current and f.change.worse]


def split_series(nights):
    """``[(key, nights, started_by)]`` in order of first night: a series is the nights with one key;
    ``started_by`` says what changed from the previous night's series (None for the first)."""
    from .series import describe_change

    order, members, started = [], {}, {}
    prev = None
    for n in nights:
        if n.series not in members:
            order.append(n.series)
            members[n.series] = []
            started[n.series] = describe_change(prev.series_fields, n.series_fields) if prev else None
        members[n.series].append(n)
        prev = n
    return [(k, members[k], started[k]) for k in order]


def series_alpha(n_figures):
    """The per-figure level that keeps a night's chance of any false alarm over ``n_figures`` figures at
    most :data:`FAMILY_ALPHA` (a suite judges about a hundred), and never above :data:`ALPHA`."""
    return min(ALPHA, FAMILY_ALPHA / max(1, n_figures))


def judge_series(key, nights, started_by, alpha=None):
    """The :class:`SeriesVerdict` of one series' nights: every (component, metric) of its usable nights
    segmented, the changes mapped to nights, each marked current and new. ``alpha``: per figure
    (default :func:`series_alpha` of the figures judged)."""
    from .series import direction

    metrics = sorted({k for n in nights for k in n.figures})
    columns = {}
    for comp, metric in metrics:
        used = [n for n in nights if (comp, metric) in n.figures and n.usable_for(comp)]
        if len(used) >= MIN_NIGHTS:
            columns[(comp, metric)] = used
    alpha = series_alpha(len(columns)) if alpha is None else alpha
    found, segs = [], {}
    for (comp, metric), used in columns.items():
        values = [n.figures[(comp, metric)][0] for n in used]
        sign = direction(metric)
        s = segment(values, sign, alpha)
        segs[(comp, metric)] = (used, s)
        if not s.changes:
            continue
        # New: not found the night before, i.e. without the newest night (when that one is usable and has
        # this figure); stateless, so a rebuilt store or a second look never announces a change again.
        revealed = used[-1] is nights[-1]
        before = segment(values[:-1], sign, alpha).changes if revealed else s.changes
        last = s.changes[-1].index
        for c in s.changes:
            new = revealed and len(used) - c.index <= NEW_MAX_AGE_NIGHTS and not any(
                abs(b.index - c.index) <= NEW_WITHIN_NIGHTS and b.worse == c.worse for b in before)
            found.append(Found(comp, metric, used[c.index], c, c.index == last, new))
    return SeriesVerdict(key, nights, started_by, found, segs)

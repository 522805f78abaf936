"""How noisy a measurement is, and whether a change between two runs is beyond that noise.

Pure functions, no processes: what a report keeps per metric to judge noise
(:func:`series_noise`, :func:`percentile_interval`, :func:`percentile_noise`)
and the tests ``loadgen compare`` runs on two reports — each a two-sided
p-value — with Holm–Bonferroni over all of them (:func:`holm`):

* throughput: Welch's t-test on the per-second completed counts
  (:func:`welch_p`; Student's t tail computed here, no scipy);
* success rate: the two-proportion z-test (:func:`proportions_p`);
* percentiles, peak memory, capacity, recovery time: a z-test on the
  difference with each side's standard error (:func:`z_p`) — from a 95 %
  interval's half-width ÷ 1.96 (:func:`interval_se`), a per-second standard
  deviation, or a resolution (:func:`resolution_se`).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile: a two-sided 95 % interval


# ====================================================================== what a report keeps


def series_noise(values):
    """``{n, mean, sd}`` of a series (sample standard deviation, n − 1); None with fewer than 2 values."""
    vals = [float(v) for v in values if v is not None]
    n = len(vals)
    if n < 2:
        return None
    mean = sum(vals) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return {"n": n, "mean": round(mean, 6), "sd": round(sd, 6)}


def rank_interval(n, q, z=Z95):
    """1-based ranks ``(lo, hi)`` between which the ``q``-quantile of ``n`` samples lies with the
    confidence of ``z`` (order statistics: the number of samples below the true quantile is
    Binomial(n, q), so its rank is n·q ± z·√(n·q·(1−q))); clamped to [1, n]."""
    centre = n * q
    half = z * math.sqrt(n * q * (1.0 - q))
    lo = max(1, min(n, math.floor(centre - half)))
    hi = max(1, min(n, math.ceil(centre + half)))
    return lo, hi


def percentile_interval(hist, q, z=Z95):
    """``[lo, hi]`` in ms: the 95 % confidence interval (``z``) of the ``q``-quantile (0 < q < 1) of
    the samples in ``hist`` (a :class:`~loadgen.analysis.stats.Histogram` of µs), read at the ranks of
    :func:`rank_interval` with the histogram's own convention (highest equivalent value, as its
    percentiles are reported, so the interval holds the reported percentile). None when empty.

    With few samples the ranks are clamped to the smallest and largest sample: the interval is then
    as wide as the data allows, not a full 95 % (p99 needs about 380 samples for a finite upper rank)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    n = hist.count
    if not n:
        return None
    # Histogram.value_at reads rank int(p·n/100 + 0.5): a percentile of (rank − 0.25)/n lands on ``rank``.
    return [round(hist.value_at((rank - 0.25) / n * 100.0) / 1000.0, 3) for rank in rank_interval(n, q, z)]


def percentile_noise(hist, keys=(("p50_ms", 0.5), ("p90_ms", 0.9), ("p95_ms", 0.95), ("p99_ms", 0.99))):
    """``{p50_ms: {n, ci95: [lo, hi]}, …}`` of ``hist`` (µs); {} when empty."""
    n = hist.count
    if not n:
        return {}
    return {key: {"n": n, "ci95": percentile_interval(hist, q)} for key, q in keys}


# ====================================================================== tests


def normal_p(z):
    """Two-sided p-value of a standard normal statistic ``z``: P(|Z| ≥ |z|)."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def z_p(diff, se):
    """Two-sided p-value of a difference ``diff`` with standard error ``se`` (a z-test). A zero ``se``
    gives 1.0 for no difference and 0.0 for any other (nothing but the difference to explain)."""
    if se is None or not math.isfinite(se):
        return None
    if se <= 0:
        return 1.0 if diff == 0 else 0.0
    return normal_p(diff / se)


def interval_se(lo, hi, z=Z95):
    """Standard error of an estimate from its confidence interval ``[lo, hi]``: the half-width ÷ ``z``."""
    return (hi - lo) / 2.0 / z


def resolution_se(resolution):
    """Standard error of a value read on a grid of ``resolution`` (uniform rounding: resolution / √12)."""
    return resolution / math.sqrt(12.0)


def combined_se(*ses):
    """√(Σ se²) of independent errors; None if any is unknown."""
    if any(s is None for s in ses):
        return None
    return math.sqrt(sum(s * s for s in ses))


def welch_p(mean_a, sd_a, n_a, mean_b, sd_b, n_b):
    """Two-sided p-value of Welch's t-test of two means (each with its sample sd and size); None
    when a side has fewer than two samples. Degrees of freedom by Welch–Satterthwaite."""
    if n_a is None or n_b is None or n_a < 2 or n_b < 2 or sd_a is None or sd_b is None:
        return None
    va, vb = sd_a * sd_a / n_a, sd_b * sd_b / n_b
    se = math.sqrt(va + vb)
    diff = mean_b - mean_a
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    df = (va + vb) ** 2 / ((va * va / (n_a - 1) if va else 0.0) + (vb * vb / (n_b - 1) if vb else 0.0))
    return t_p(diff / se, df)


def t_p(t, df):
    """Two-sided p-value of Student's t with ``df`` degrees of freedom: I_{df/(df+t²)}(df/2, 1/2),
    the regularized incomplete beta function; the normal tail when ``df`` is huge."""
    if not math.isfinite(df) or df > 1e7:
        return normal_p(t)
    x = df / (df + t * t)
    return min(1.0, max(0.0, _betai(df / 2.0, 0.5, x)))


def proportions_p(successes_a, trials_a, successes_b, trials_b):
    """Two-sided p-value of the two-proportion z-test (pooled); None without trials on a side.
    Successes may be fractional (a rate × its trials)."""
    if not trials_a or not trials_b:
        return None
    pa, pb = successes_a / trials_a, successes_b / trials_b
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se = math.sqrt(max(0.0, pooled * (1.0 - pooled)) * (1.0 / trials_a + 1.0 / trials_b))
    return z_p(pb - pa, se)


def holm(pvalues, alpha=0.01):
    """Holm–Bonferroni: which of ``pvalues`` are significant with a family-wise error rate ``alpha``.

    Sorted ascending, the i-th smallest (i = 0, 1, …) is rejected while p ≤ alpha / (m − i); the first
    that is not stops the procedure. ``None`` entries (no test) are never significant and are not part
    of the family. Returns a list of bool in the order given."""
    family = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(family)
    out = [False] * len(pvalues)
    for k, (p, i) in enumerate(family):
        if p > alpha / (m - k):
            break
        out[i] = True
    return out


def holm_thresholds(pvalues, alpha=0.01):
    """The threshold each of ``pvalues`` was held to by :func:`holm`: ``alpha / (m − i)`` for the i-th
    smallest (None for a None entry), in the order given — what a row must say so that "p 0.00045,
    within noise" does not read as a contradiction of α 0.01."""
    family = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(family)
    out = [None] * len(pvalues)
    for k, (_, i) in enumerate(family):
        out[i] = alpha / (m - k)
    return out


# ====================================================================== the incomplete beta function


def _betai(a, b, x):
    """Regularized incomplete beta I_x(a, b) (continued fraction, Numerical Recipes §6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _betacf(a, b, x, eps=1e-15, tiny=1e-300, max_iter=500):
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h

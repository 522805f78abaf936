"""The Universal Scalability Law, fitted to concurrency vs throughput.

X(N) = λ·N / (1 + σ·(N − 1) + κ·N·(N − 1))

σ (contention) and κ (coherency) are found by a coarse-to-fine grid
search; for each pair the best λ is the closed-form least-squares
solution, so the fit is deterministic and needs only numpy. The fitted
peak is at N* = √((1 − σ) / κ).
"""

from __future__ import annotations

import math

import numpy as np


def usl(n, lam, sigma, kappa):
    """X(N), the USL's throughput at concurrency ``n`` (a number or a sequence; returns numpy), for
    ``lam`` (λ, throughput at N = 1), ``sigma`` and ``kappa``."""
    n = np.asarray(n, dtype=float)
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


def fit(concurrency, throughput):
    """Fit the USL; returns {lambda, sigma, kappa, peak_concurrency, peak_throughput, r2} or None
    with fewer than three distinct points."""
    n = np.asarray(concurrency, dtype=float)
    x = np.asarray(throughput, dtype=float)
    ok = np.isfinite(n) & np.isfinite(x) & (n > 0)
    n, x = n[ok], x[ok]
    if len(np.unique(n)) < 3:
        return None

    def best(sigmas, kappas):
        top = None
        for s in sigmas:
            for k in kappas:
                shape = n / (1 + s * (n - 1) + k * n * (n - 1))
                denom = float(shape @ shape)
                if denom <= 0:
                    continue
                lam = float(shape @ x) / denom
                sse = float(((lam * shape - x) ** 2).sum())
                if top is None or sse < top[0]:
                    top = (sse, lam, s, k)
        return top

    sse, lam, s, k = best(np.linspace(0, 1, 101), np.concatenate([[0.0], np.geomspace(1e-6, 1.0, 120)]))
    for _ in range(3):  # refine around the best pair
        ds = 0.02
        s_grid = np.clip(np.linspace(s - ds, s + ds, 41), 0, 1)
        k_grid = np.unique(np.clip(np.concatenate([[0.0], np.geomspace(max(k, 1e-7) / 3, max(k, 1e-7) * 3, 41)]), 0, 1))
        sse, lam, s, k = best(s_grid, k_grid)
    sst = float(((x - x.mean()) ** 2).sum())
    r2 = 1 - sse / sst if sst > 0 else 1.0
    if k > 0:
        peak_n = math.sqrt(max(0.0, 1 - s) / k)
    else:
        peak_n = math.inf
    peak_x = float(usl(peak_n, lam, s, k)) if math.isfinite(peak_n) else lam / s if s > 0 else math.inf
    finite = lambda v: v if math.isfinite(v) else None  # noqa: E731 - no peak: the curve never turns
    return {"lambda": lam, "sigma": s, "kappa": k, "peak_concurrency": finite(peak_n),
            "peak_throughput": finite(peak_x), "r2": r2}

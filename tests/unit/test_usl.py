import numpy as np
import pytest

from loadgen.analysis.usl import fit, usl


@pytest.mark.parametrize("lam,sigma,kappa", [(100, 0.05, 0.002), (10, 0.2, 0.01), (50, 0.0, 0.0005)])
def test_fit_recovers_parameters_and_peak(lam, sigma, kappa):
    n = np.array([1, 2, 4, 8, 12, 16, 24, 32, 48])
    x = usl(n, lam, sigma, kappa)
    f = fit(n, x)
    assert f["r2"] > 0.999
    true_peak = np.sqrt((1 - sigma) / kappa)
    assert f["peak_concurrency"] == pytest.approx(true_peak, rel=0.1)
    assert f["lambda"] == pytest.approx(lam, rel=0.05)


def test_fit_needs_three_points():
    assert fit([1, 2], [10, 20]) is None
    assert fit([1, 1, 1], [10, 11, 12]) is None

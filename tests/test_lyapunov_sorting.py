"""Seed §5: the QR method's unsorted exponents are exactly Newman's at finite depth; sorted ones are not.

For Gaussian linear layers, $W Q_{\\ell-1}$ is again Gaussian, so $|(R_\\ell)_{ii}|$ is
$(σ_w/\\sqrt n)χ_{n-i+1}$, independent over ℓ and i: each sample's unsorted exponent
$\\hat λ_i = \\frac1L\\sum_\\ell\\ln|(R_\\ell)_{ii}|$ has mean exactly Newman's $λ_i$ at every L
(`theory.gaussian_lyapunov_spectrum`), while sorting each sample biases the top one upward
(8.8 SE at n = 50, L = 50, 400 samples).
"""

import numpy as np

import jaxgrad
from jaxgrad import stats, theory


def test_unsorted_lyapunov_matches_newman():
    n, L, samples = 50, 50, 400
    net = jaxgrad.mlp(width=n, depth=L, activation="linear", weights="gaussian", sigma_w=1.0)
    exponents = np.asarray(jaxgrad.lyapunov_spectrum(net, samples=samples, seed=0, sort=False), np.float64)
    assert exponents.shape == (samples, n)
    newman = np.asarray(theory.gaussian_lyapunov_spectrum(n), np.float64)
    mean, se = stats.mean_and_se(exponents)
    # 4 SE per exponent: a correct engine fails one of the 50 with probability ≈ 50 × 6e-5 = 3e-3.
    z = (mean - newman) / se
    far = np.nonzero(np.abs(z) > 4)[0] + 1
    assert np.all(np.abs(z) <= 4), f"exponents more than 4 SE from Newman's: i={far}, z={z}"
    # The exact per-sample variance ψ′((n−i+1)/2)/(4L) is a second check on the estimator.
    from scipy.special import polygamma

    var_exact = polygamma(1, (n - np.arange(1, n + 1) + 1) / 2) / (4 * L)
    var, var_se = stats.variance_and_se(exponents)
    assert np.all(np.abs(var - var_exact) <= 4 * var_se)
    # Sorting is what biases the top exponent: the sorted λ₁ lies well above Newman's.
    top = -np.sort(-exponents, axis=1)[:, 0]
    top_mean, top_se = stats.mean_and_se(top)
    assert (top_mean - newman[0]) / top_se > 4

"""The closed forms the studies use (`jaxgrad.theory`), each against an independent second method.

He-ReLU finite-width law (`relu_log_gain_density`, `relu_log_gain_moments`,
`relu_layer_characteristic_function`): numerical integration of the density against the
digamma moments of `relu_log_gain`, and NumPy draws of the exact product representation
$\\prod_\\ell (2/n_{\\ell-1})χ^2_{K_\\ell}$. Gaussian spectral norm (`marchenko_pastur_edge`,
`tracy_widom_mean_norm`): NumPy eigenvalues of $WW^\top$ for Gaussian matrices. Max-φ′ law
(`expected_max_derivative`, `input_norm_average`, `expected_mean_square_derivative`): NumPy draws
of n Gaussian pre-activations, and SciPy adaptive quadrature. Sorting bias
(`lyapunov_sorting_bias`): at width 2 the order statistic of two normals is closed form (Clark 1961).

Monte-Carlo tolerances are 4 standard errors from `jaxgrad.stats`; everything is NumPy (no
engine), well under 30 s together.
"""

import math

import numpy as np
import pytest
from scipy import integrate, special

from jaxgrad import stats, theory

K_SE = 4.0


def within(measured, se, predicted, allowance=0.0, what=""):
    c = stats.within_standard_errors(what, measured, se, predicted, k=K_SE, allowance=allowance)
    assert c.passed, f"{what}: measured {c.measured:.6g} vs predicted {c.predicted:.6g}, tolerance {c.tolerance:.3g}"


def relu_log_gain_draws(widths, draws, rng):
    """ln‖J_L⋯J₁u‖ = Σ_ℓ ½ ln((2/n_{ℓ−1}) χ²_{K_ℓ}), K_ℓ ~ Binomial(n_ℓ, ½) given K_ℓ ≥ 1, every depth (draws, L)."""
    widths = np.asarray(widths)
    terms = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        K = rng.binomial(n_out, 0.5, size=4 * draws)
        K = K[K > 0][:draws]  # rejection: conditional on a non-zero gain
        terms.append(0.5 * np.log(2.0 / n_in * rng.chisquare(K)))
    return np.cumsum(np.stack(terms, axis=1), axis=1)


# --------------------------------------------------------------------------- He-ReLU finite-width law


@pytest.mark.parametrize("widths", [np.full(9, 8), np.array([16, 16, 16, 4, 4, 4])], ids=["n8_L8", "mixed16to4"])
def test_relu_density_integrates_to_one_with_the_digamma_moments(widths):
    moments = theory.relu_log_gain_moments(widths)
    mean, var = float(moments.mean[-1]), float(moments.variance[-1])
    sd = math.sqrt(var)
    x = np.linspace(mean - 10 * sd, mean + 7 * sd, 1201)
    f = theory.relu_log_gain_density(widths, x)
    dx = x[1] - x[0]
    assert f.min() >= 0
    assert f.sum() * dx == pytest.approx(1.0, abs=1e-5)
    assert (x * f).sum() * dx == pytest.approx(mean, abs=1e-4)
    assert ((x - mean) ** 2 * f).sum() * dx == pytest.approx(var, rel=1e-4)


def test_relu_density_cdf_matches_draws_of_the_product_representation():
    widths, draws = np.array([32, 32, 8, 8, 8]), 40000
    sample = relu_log_gain_draws(widths, draws, np.random.default_rng(1))[:, -1]
    moments = theory.relu_log_gain_moments(widths)
    mean, sd = float(moments.mean[-1]), math.sqrt(float(moments.variance[-1]))
    x = np.linspace(mean - 10 * sd, mean + 7 * sd, 2001)
    f = theory.relu_log_gain_density(widths, x)
    cdf = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2 * np.diff(x))])
    for z in (-2.0, -1.0, 0.0, 1.0):  # P(X ≤ mean + z sd): a binomial proportion
        p = float(np.interp(mean + z * sd, x, cdf))
        within(np.mean(sample <= mean + z * sd), math.sqrt(p * (1 - p) / draws), p, what=f"CDF at {z:+g} sd")


def test_relu_moments_of_mixed_widths_add_layer_by_layer():
    mean, var, mean_limit, var_limit = theory.relu_log_gain_moments(np.array([16, 16, 4, 4]))
    per = {n: theory.relu_log_gain(n, 1) for n in (16, 4)}
    assert var[-1] == pytest.approx(float(per[16].variance) + 2 * float(per[4].variance), rel=1e-6)
    # the 16 → 4 layer draws W with variance 2/16 but masks 4 units: ½ ln(4/16) on top of the square law
    assert mean[-1] == pytest.approx(float(per[16].mean) + 2 * float(per[4].mean) + 0.5 * math.log(4 / 16), rel=1e-6)
    assert var_limit[-1] == pytest.approx(1.25 * (1 / 16 + 2 / 4))
    assert mean_limit[-1] == pytest.approx(0.5 * math.log(4 / 16) - 1.25 * (1 / 16 + 2 / 4))


def test_relu_moments_match_draws_at_every_depth():
    widths = np.array([8, 8, 8, 32, 32, 4])
    sample = relu_log_gain_draws(widths, 20000, np.random.default_rng(2))
    moments = theory.relu_log_gain_moments(widths)
    for ell in range(widths.size - 1):
        within(*stats.mean_and_se(sample[:, ell]), moments.mean[ell], what=f"E, ℓ = {ell + 1}")
        within(*stats.variance_and_se(sample[:, ell]), moments.variance[ell], what=f"Var, ℓ = {ell + 1}")


def test_relu_layer_characteristic_function_matches_draws():
    t = np.array([0.0, 0.5, 1.5, 4.0])
    phi = theory.relu_layer_characteristic_function(16, 8, t)
    assert phi[0] == pytest.approx(1.0, abs=1e-12)
    X = relu_log_gain_draws([16, 8], 40000, np.random.default_rng(3))[:, 0]
    for k, tk in enumerate(t[1:], 1):
        within(*stats.mean_and_se(np.cos(tk * X)), phi[k].real, what=f"Re φ({tk})")
        within(*stats.mean_and_se(np.sin(tk * X)), phi[k].imag, what=f"Im φ({tk})")


def test_relu_laws_reject_bad_widths():
    with pytest.raises(ValueError, match="widths"):
        theory.relu_log_gain_moments([8])
    with pytest.raises(ValueError, match="widths"):
        theory.relu_log_gain_density([8.5, 8], [0.0])


# --------------------------------------------------------------------------- spectral norm of a Gaussian matrix


@pytest.mark.parametrize("n_out, n_in", [pytest.param(96, 96, marks=pytest.mark.slow), (48, 192), (192, 48)])
def test_tracy_widom_mean_and_edge_against_numpy_eigenvalues(n_out, n_in):
    sigma_w, draws = 1.5, 300
    W = np.random.default_rng(n_out + n_in).normal(0.0, sigma_w / math.sqrt(n_in), (draws, n_out, n_in))
    gram = W @ W.transpose(0, 2, 1) if n_out <= n_in else W.transpose(0, 2, 1) @ W  # the smaller side
    norms = np.sqrt(np.linalg.eigvalsh(gram)[:, -1])  # ‖W‖₂ = √(largest eigenvalue of WWᵀ)
    mean, se = stats.mean_and_se(norms)
    tw_mean, tw_scale = theory.tracy_widom_mean_norm(n_out, n_in, sigma_w)
    edge = theory.marchenko_pastur_edge(n_out, n_in, sigma_w)
    # Johnstone's centring and scaling are approximations: the study's allowance, ¼ of a TW unit
    within(mean, se, tw_mean, allowance=0.25 * tw_scale, what="E‖W‖₂ vs Tracy–Widom mean")
    # the edge is the limit; at finite width the mean sits |E TW₁| = 1.21 TW units below it
    within(mean, se, edge, allowance=2 * tw_scale, what="E‖W‖₂ vs Marchenko–Pastur edge")
    assert mean < edge and tw_mean < edge
    assert np.std(norms, ddof=1) == pytest.approx(1.27 * tw_scale, rel=0.3)  # sd TW₁ = 1.27


def test_marchenko_pastur_edge_values():
    assert theory.marchenko_pastur_edge(100, 100, 1.0) == 2.0
    assert theory.marchenko_pastur_edge(25, 100, 2.0) == 3.0


# --------------------------------------------------------------------------- the law of max φ′


def _phi_prime(activation, z):
    return 1 - np.tanh(z) ** 2 if activation == "tanh" else 0.25 / np.cosh(z / 2) ** 2


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("q, width", [(0.1, 16), (5.0, 16), (100.0, 64)])
def test_expected_max_derivative_against_numpy_draws(activation, q, width):
    z = np.random.default_rng(4).normal(size=(20000, width)) * math.sqrt(q)
    draws = _phi_prime(activation, z).max(axis=1)
    within(*stats.mean_and_se(draws), theory.expected_max_derivative(activation, q, width), what="E max φ′")
    within(
        *stats.mean_and_se(draws**2), theory.expected_max_derivative(activation, q, width, power=2), what="E (max φ′)²"
    )


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_expected_mean_square_derivative_against_adaptive_quadrature(activation):
    q = np.array([0.02, 1.0, 30.0])
    got = theory.expected_mean_square_derivative(activation, q)
    for qk, g in zip(q, got):
        sd = math.sqrt(qk)
        exact, _ = integrate.quad(
            lambda z: _phi_prime(activation, z) ** 2 * math.exp(-z * z / (2 * qk)) / math.sqrt(2 * math.pi * qk),
            -40 * sd,
            40 * sd,
            points=[0.0],
            limit=200,
        )
        assert g == pytest.approx(exact, rel=1e-5)  # float32 nodes


def test_input_norm_average_is_exact_for_a_linear_function():
    sigma_w, sigma_b, q0 = np.array([0.5, 2.0]), np.array([0.0, 0.3]), np.array([1.0, 4.0])
    q = sigma_w**2 * q0
    # E s = 1 and E s² = 1 + 2/n for s ~ χ²_n/n; 1e-7: the trapezoid rule's error with 161 nodes
    got = theory.input_norm_average(lambda v: v, sigma_w, sigma_b, q0, 16)
    assert got == pytest.approx(q + sigma_b**2, rel=1e-7)
    got = theory.input_norm_average(lambda v: v**2, sigma_w, sigma_b, q0, 16)
    assert got == pytest.approx(q**2 * (1 + 2 / 16) + 2 * q * sigma_b**2 + sigma_b**4, rel=1e-7)


def test_input_norm_average_of_the_max_law_matches_a_dense_layer_drawn_in_numpy():
    n, sigma_w, sigma_b, q0, draws = 8, 1.0, 0.0, 5.0, 20000  # the study's input route: q = σ_w² q₀
    rng = np.random.default_rng(5)
    h = rng.normal(size=(draws, n)) * math.sqrt(q0)
    W = rng.normal(size=(draws, n, n)) * sigma_w / math.sqrt(n)
    z = np.einsum("sij,sj->si", W, h) + sigma_b * rng.normal(size=(draws, n))
    measured = stats.mean_and_se(_phi_prime("tanh", z).max(axis=1))
    mixed = theory.input_norm_average(
        lambda v: theory.expected_max_derivative("tanh", v, n), [sigma_w], [sigma_b], [q0], n
    )[0]
    within(*measured, mixed, what="E max φ′ with the input norm's χ² law")


# --------------------------------------------------------------------------- sorting bias of Lyapunov exponents


def test_sorting_bias_pushes_the_top_exponent_up_and_sums_to_zero():
    bias = theory.lyapunov_sorting_bias(16, 8)
    assert bias[0] == bias.max() > 0 > bias.min()
    assert abs(bias.sum()) < 1e-10  # sorting permutes each draw: the sum is invariant
    assert abs(theory.lyapunov_sorting_bias(16, 4096)[0]) < abs(bias[0]) / 5


@pytest.mark.parametrize("depth", [4, 64])
def test_sorting_bias_of_two_exponents_is_clarks_closed_form(depth):
    # sorted top − x₁ = max(0, x₂ − x₁) = Y⁺ with Y ~ N(−δ, θ²): E Y⁺ = θφ(δ/θ) − δΦ(−δ/θ) (Clark 1961)
    lam = np.asarray(theory.gaussian_lyapunov_spectrum(2), np.float64)
    var = special.polygamma(1, np.array([1.0, 0.5])) / (4 * depth)
    delta, theta = lam[0] - lam[1], math.sqrt(var.sum())
    a = delta / theta
    mean = theta * math.exp(-a * a / 2) / math.sqrt(2 * math.pi) - delta * special.ndtr(-a)
    second = (delta**2 + theta**2) * special.ndtr(-a) - delta * theta * math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    draws = 20000
    bias = theory.lyapunov_sorting_bias(2, depth, draws=draws)
    within(bias[0], math.sqrt((second - mean**2) / draws), mean, what="top exponent's sorting bias")
    assert bias[1] == pytest.approx(-bias[0], abs=1e-12)

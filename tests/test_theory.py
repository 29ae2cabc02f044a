"""The closed forms of `jaxgrad.theory` against known values, independent numerics and each other.

Accuracy claims are checked in float64 (``jax.enable_x64``); float32 is checked at the
documented ~1e-6 level. Monte-Carlo comparisons with the engine are in test_theory_mc.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate, stats

from jaxgrad import quadrature, theory
from jaxgrad.theory import mean_field

x64 = jax.enable_x64


def normal_expectation(f, q=1.0):
    """E[f(√q z)] by adaptive quadrature, split where features live (the reference)."""
    s = math.sqrt(q)
    g = lambda z: f(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cuts = sorted({0.0, *(c * t / s for t in (0.5, 1, 2, 4) for c in (-1, 1) if t / s < 30)})
    edges = [-40.0, *cuts, 40.0]
    return sum(integrate.quad(g, a, b, epsabs=1e-15, epsrel=1e-13, limit=400)[0] for a, b in zip(edges, edges[1:]))


# --------------------------------------------------------------------------- quadrature


@pytest.mark.parametrize(
    "rule", [quadrature.graded_legendre(), quadrature.gauss_hermite(64)], ids=["legendre", "hermite"]
)
def test_quadrature_moments_of_z(rule):
    with x64(True):
        for k in range(0, 13):
            exact = 0.0 if k % 2 else float(np.prod(np.arange(k - 1, 0, -2)))  # (k−1)!!
            got = float(quadrature.gaussian_expectation(lambda u: u**k, 1.0, rule=rule))
            assert got == pytest.approx(exact, rel=1e-12, abs=1e-10), k  # odd k: cancellation of ~10⁴ⁿ terms
        assert float(quadrature.gaussian_expectation(lambda u: u**2, 3.7, rule=rule)) == pytest.approx(3.7, rel=1e-13)


NUMPY_INTEGRANDS = {  # name: (JAX, NumPy) versions of the same integrand
    "tanh′": (lambda u: 1 - jnp.tanh(u) ** 2, lambda u: 1 - np.tanh(u) ** 2),
    "tanh²": (lambda u: jnp.tanh(u) ** 2, lambda u: np.tanh(u) ** 2),
    "sigmoid²": (lambda u: jax.nn.sigmoid(u) ** 2, lambda u: (0.5 + 0.5 * math.tanh(u / 2)) ** 2),
    "gelu²": (
        lambda u: jax.nn.gelu(u, approximate=False) ** 2,
        lambda u: (u * 0.5 * (1 + math.erf(u / math.sqrt(2)))) ** 2,
    ),
}


@pytest.mark.parametrize("name", list(NUMPY_INTEGRANDS))
def test_quadrature_against_adaptive_integration(name):
    jax_f, numpy_f = NUMPY_INTEGRANDS[name]
    qs = np.array([1e-4, 0.3, 1.0, 10.0, 100.0, 1e4])
    with x64(True):
        got = np.asarray(quadrature.gaussian_expectation(jax_f, jnp.asarray(qs)))
    np.testing.assert_allclose(got, [normal_expectation(numpy_f, q) for q in qs], rtol=1e-12)


def test_gauss_hermite_is_not_enough_for_wide_tanh():
    # Why the default rule is graded Gauss–Legendre (quadrature.py docstring).
    reference = normal_expectation(lambda u: np.tanh(u) ** 2, 100.0)
    with x64(True):
        hermite = quadrature.gaussian_expectation(lambda u: jnp.tanh(u) ** 2, 100.0, rule=quadrature.gauss_hermite(128))
    assert abs(float(hermite) - reference) > 1e-3


@pytest.mark.parametrize("a", [0.1, 0.7, 1.0, 3.0, 30.0])
def test_quadrature_erf_squared_closed_form(a):
    with x64(True):
        got = quadrature.gaussian_expectation(lambda u: jax.scipy.special.erf(u) ** 2, a * a)
    assert float(got) == pytest.approx(2 / np.pi * np.arcsin(2 * a * a / (1 + 2 * a * a)), rel=1e-12)


def test_quadrature_relu_halves():
    relu = lambda u: jnp.maximum(u, 0.0)  # noqa: E731  (a user function: no closed form)
    with x64(True):
        for q in (0.01, 1.0, 50.0):
            assert float(quadrature.gaussian_expectation(lambda u: relu(u) ** 2, q)) == pytest.approx(q / 2, rel=1e-13)
            mean = math.sqrt(q / (2 * math.pi))
            assert float(quadrature.gaussian_expectation(relu, q)) == pytest.approx(mean, rel=1e-13)
            step = quadrature.gaussian_expectation(lambda u: jnp.where(u > 0, 1.0, 0.0), q)
            assert float(step) == pytest.approx(0.5, rel=1e-14)


def test_quadrature_is_jit_vmap_and_grad_able():
    f = lambda q: quadrature.gaussian_expectation(jnp.tanh, q) + quadrature.gaussian_expectation(lambda u: u * u, q)  # noqa: E731
    qs = jnp.array([0.5, 1.0, 2.0])
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(qs), qs, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(jax.grad(f))(qs), 1.0, rtol=1e-5)


def test_tail_fraction_flags_infinite_moments():
    with x64(True):
        assert float(quadrature.tail_fraction(lambda u: jnp.tanh(u) ** 2, 4.0)) < 1e-12
        assert float(quadrature.tail_fraction(lambda u: jnp.exp(u), 4.0)) < 1e-8
        assert float(quadrature.tail_fraction(lambda u: jnp.exp(u * u), 1.0)) > 0.5


# --------------------------------------------------------------------------- closed-form moments


@pytest.mark.parametrize("name", ["relu", "linear", "leaky_relu", "erf", "hard_tanh"])
def test_closed_form_moments_match_quadrature_of_the_same_function(name):
    closed = theory.gaussian_moments(name)
    fn = jaxgrad_fn(name)
    quad = theory.gaussian_moments(lambda u: fn(u))  # a fresh callable: the quadrature path
    assert closed.exact and not quad.exact
    qs = jnp.array([1e-3, 0.2, 1.0, 4.0, 50.0])
    # hard tanh: φ² has kinks and φ′ jumps at u = ±1, off the rule's panel edges, so
    # quadrature is only ~1e-4 for φ² and ~1e-2 for φ′ (its slopes are checked against scipy below)
    rtol = 2e-4 if name == "hard_tanh" else 1e-11
    fields = ("second", "second_over_q") if name == "hard_tanh" else ("second", "second_over_q", "slope2", "slope4")
    with x64(True):
        qs = qs.astype(jnp.float64)
        for field in fields:
            np.testing.assert_allclose(getattr(closed, field)(qs), getattr(quad, field)(qs), rtol=rtol, err_msg=field)


def jaxgrad_fn(name):
    from jaxgrad.activations import ACTIVATIONS

    return ACTIVATIONS[name].fn


def test_hard_tanh_closed_form_against_adaptive_integration():
    with x64(True):
        m = theory.gaussian_moments("hard_tanh")
        for q in (0.1, 1.0, 7.0):
            second = normal_expectation(lambda u: np.clip(u, -1, 1) ** 2, q)
            assert float(m.second(q)) == pytest.approx(second, rel=1e-12)
            assert float(m.slope2(q)) == pytest.approx(normal_expectation(lambda u: float(abs(u) < 1), q), rel=1e-12)


# --------------------------------------------------------------------------- mean field: known values


@given(sigma_w=st.floats(0.1, 3.0), sigma_b=st.floats(0.0, 2.0))
def test_relu_chi1_is_half_sigma_w_squared(sigma_w, sigma_b):
    with x64(True):
        assert float(theory.chi1("relu", sigma_w, sigma_b)) == pytest.approx(sigma_w**2 / 2, rel=1e-13)
        user_relu = theory.chi1(RELU, sigma_w, sigma_b)  # quadrature path, kink on a panel edge
        assert float(user_relu) == pytest.approx(sigma_w**2 / 2, rel=1e-12)


def RELU(u):
    return jnp.maximum(u, 0.0)


def test_relu_q_star_cases():
    with x64(True):
        assert float(theory.q_star("relu", 1.0, 1.0)) == pytest.approx(1 / (1 - 0.5), rel=1e-13)
        assert float(theory.q_star("relu", 1.2, 0.5)) == pytest.approx(0.25 / (1 - 0.72), rel=1e-13)
        assert float(theory.q_star("relu", 1.0, 0.0)) == 0.0  # ordered, no bias: collapses
        assert float(theory.q_star("relu", 1.5, 0.1)) == np.inf  # chaotic: diverges
        # critical: every q is fixed, so q* = q⁽¹⁾ = σ_w² q0 (q0 is the input variance)
        assert float(theory.q_star("relu", math.sqrt(2), 0.0, q0=1.5)) == pytest.approx(3.0, rel=1e-15)
        assert float(theory.q_star("linear", 1.0, 0.0, q0=0.7)) == 0.7


@pytest.mark.parametrize("sigma_w", [0.3, 0.8, 1.0])
def test_tanh_without_bias_collapses_to_zero_below_one(sigma_w):
    with x64(True):
        assert float(theory.q_star("tanh", sigma_w, 0.0)) == 0.0
        assert float(theory.chi1("tanh", sigma_w, 0.0)) == pytest.approx(sigma_w**2, rel=1e-13)
        scales = theory.depth_scales("tanh", sigma_w, 0.0)
        expected = np.inf if sigma_w == 1.0 else -1 / math.log(sigma_w**2)
        assert float(scales.gradient) == pytest.approx(expected, rel=1e-10)
        assert float(scales.q) == pytest.approx(expected, rel=1e-10)


def test_tanh_just_above_one_has_small_positive_fixed_point():
    # σ_w² E[tanh²(√q z)] = q with E tanh² = q − 2q² + O(q³): q* ≈ (1 − 1/σ_w²)/2.
    with x64(True):
        q = float(theory.q_star("tanh", 1.001, 0.0))
    assert q == pytest.approx((1 - 1 / 1.001**2) / 2, rel=1e-2)


ACTIVATIONS = ["tanh", "sigmoid", "selu"]  # selu: a kink at 0, unbounded above


@given(activation=st.sampled_from(ACTIVATIONS), sigma_w=st.floats(0.3, 4.0), sigma_b=st.floats(0.05, 2.0))
def test_q_star_is_a_fixed_point_of_the_length_map(activation, sigma_w, sigma_b):
    with x64(True):
        q = float(theory.q_star(activation, sigma_w, sigma_b))
        if not 0 < q < np.inf:  # unbounded φ may diverge (q* = inf): check the map outruns q
            m = theory.gaussian_moments(activation)
            assert q == np.inf and sigma_w**2 * float(m.second(1e6)) + sigma_b**2 > 1e6
            return
        image = sigma_w**2 * float(theory.gaussian_moments(activation).second(q)) + sigma_b**2
    assert image == pytest.approx(q, rel=1e-12)  # the quadrature itself is tested above


@pytest.mark.parametrize(
    "activation,sigma_b,expected",
    [
        ("tanh", 0.0, 1.0),
        ("erf", 0.0, math.sqrt(math.pi) / 2),
        ("relu", 0.0, math.sqrt(2)),
        ("relu", 0.7, math.sqrt(2)),
        ("linear", 0.3, 1.0),
    ],
)
def test_critical_sigma_w_known_values(activation, sigma_b, expected):
    with x64(True):
        assert float(theory.critical_sigma_w(activation, sigma_b)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_critical_sigma_w_puts_chi1_at_one(activation):
    with x64(True):
        sigma_c = [float(theory.critical_sigma_w(activation, b)) for b in (0.05, 0.3, 1.0)]
        chi = [float(theory.chi1(activation, s, b)) for s, b in zip(sigma_c, (0.05, 0.3, 1.0))]
    np.testing.assert_allclose(chi, 1.0, rtol=1e-9)
    assert np.all(np.diff(sigma_c) > 0)  # the boundary rises with σ_b


def test_depth_scale_of_q_is_the_slope_of_the_length_map():
    with x64(True):
        for sigma_w, sigma_b in [(1.5, 0.3), (0.9, 0.5), (3.0, 1.0)]:
            q = float(theory.q_star("tanh", sigma_w, sigma_b))
            V = lambda x: sigma_w**2 * normal_expectation(lambda u: np.tanh(u) ** 2, x) + sigma_b**2  # noqa: E731
            h = 1e-4 * q
            chi_q = (V(q + h) - V(q - h)) / (2 * h)
            scales = theory.depth_scales("tanh", sigma_w, sigma_b)
            assert float(scales.q) == pytest.approx(-1 / math.log(chi_q), rel=1e-6)
            chi_1 = float(theory.chi1("tanh", sigma_w, sigma_b))
            assert float(scales.gradient) == pytest.approx(-1 / math.log(chi_1), rel=1e-12)


def test_length_map_iterates_relax_at_the_depth_scale():
    # q^(ℓ) − q* ∝ e^{−ℓ/ξ_q}: a small perturbation of the fixed point decays at ξ_q.
    with x64(True):
        sigma_w, sigma_b = 1.3, 0.4
        q_fixed = float(theory.q_star("tanh", sigma_w, sigma_b))
        xi_q = float(theory.depth_scales("tanh", sigma_w, sigma_b).q)
        q0 = (q_fixed * (1 + 1e-6) - sigma_b**2) / sigma_w**2  # q^(1) = q*(1 + 10⁻⁶)
        q = np.asarray(theory.signal_propagation("tanh", sigma_w, sigma_b, q0, 4).q)
    np.testing.assert_allclose((q[1:] - q_fixed) / (q[:-1] - q_fixed), math.exp(-1 / xi_q), rtol=1e-5)


def test_tanh_at_one_zero_decays_algebraically():
    # χ₁ = 1 at q* = 0, yet the transient q^(ℓ) ≈ 1/(2ℓ) makes E‖J u‖² ∝ 1/ℓ.
    with x64(True):
        prop = theory.signal_propagation("tanh", 1.0, 0.0, 1.0, 4000)
    q, log_gain = np.asarray(prop.q), np.asarray(prop.log_mean_squared_gain)
    ell = np.arange(1, 4001)
    assert 2 * ell[-1] * q[-1] == pytest.approx(1.0, rel=0.01)
    slope = (log_gain[-1] - log_gain[1999]) / (math.log(4000) - math.log(2000))
    assert slope == pytest.approx(-1.0, abs=0.01)


def test_signal_propagation_from_the_fixed_point_is_flat():
    with x64(True):
        sigma_w, sigma_b = 1.7, 0.2
        q_fixed = float(theory.q_star("erf", sigma_w, sigma_b))
        q0 = (q_fixed - sigma_b**2) / sigma_w**2
        prop = theory.signal_propagation("erf", sigma_w, sigma_b, q0, 10)
        chi = float(theory.chi1("erf", sigma_w, sigma_b))
    np.testing.assert_allclose(prop.q, q_fixed, rtol=1e-12)
    np.testing.assert_allclose(prop.log_mean_squared_gain, np.arange(1, 11) * math.log(chi), rtol=1e-12)


# --------------------------------------------------------------------------- mean field: JAX transformations


def test_mean_field_functions_vmap_broadcast_and_do_not_recompile():
    with x64(True):
        sigma_w = jnp.linspace(0.5, 3.0, 6)
        looped = np.array([float(theory.chi1("tanh", float(s), 0.3)) for s in sigma_w])
        np.testing.assert_allclose(jax.vmap(lambda s: theory.chi1("tanh", s, 0.3))(sigma_w), looped, rtol=1e-12)
        np.testing.assert_allclose(theory.chi1("tanh", sigma_w, 0.3), looped, rtol=1e-12)
        grid = jax.jit(lambda w, b: theory.q_star("tanh", w, b))(sigma_w[:, None], jnp.array([0.0, 0.5]))
        assert grid.shape == (6, 2) and np.all(np.isfinite(grid))
        before = mean_field._chi1._cache_size()
        theory.chi1("tanh", 1.234, 0.567)
        assert mean_field._chi1._cache_size() == before


def test_mean_field_derivatives_match_finite_differences():
    with x64(True):
        h = 1e-5
        cases = [
            (lambda s: theory.q_star("tanh", s, 0.3), 1.5),
            (lambda b: theory.chi1("tanh", 1.5, b), 0.3),
            (lambda b: theory.critical_sigma_w("tanh", b), 0.3),
        ]
        for f, x in cases:
            fd = (float(f(x + h)) - float(f(x - h))) / (2 * h)
            assert float(jax.grad(f)(x)) == pytest.approx(fd, rel=1e-5)


def test_float32_accuracy():
    sigma_w = (0.8, 1.5, 3.0)
    with x64(True):
        reference = [float(theory.chi1("tanh", s, 0.3)) for s in sigma_w]
    single = theory.chi1("tanh", jnp.array(sigma_w, jnp.float32), 0.3)
    assert single.dtype == jnp.float32
    np.testing.assert_allclose(single, reference, rtol=2e-6)
    # the kink of χ₁ at the σ_b = 0 critical point limits float32 to ~1e-3 there (docstring)
    assert float(theory.critical_sigma_w("tanh", 0.0)) == pytest.approx(1.0, abs=2e-3)


# --------------------------------------------------------------------------- random matrices


def test_newman_spectrum_small_cases_and_spacing():
    with x64(True):
        # n = 1: λ = ln σ_w + E ln|g| = ln σ_w − (γ + ln 2)/2.
        assert float(theory.gaussian_lyapunov_spectrum(1, 2.0)[0]) == pytest.approx(
            math.log(2.0) - (np.euler_gamma + math.log(2)) / 2, rel=1e-14
        )
        n = 12
        lam = np.asarray(theory.gaussian_lyapunov_spectrum(n, 1.3))
    assert np.all(np.diff(lam) < 0)
    # ψ(x + 1) − ψ(x) = 1/x: λ_i − λ_{i+2} = 1/(n − i − 1).
    i = np.arange(1, n - 1)
    np.testing.assert_allclose(lam[:-2] - lam[2:], 1 / (n - i - 1), rtol=1e-12)
    # λ₁ is the per-layer mean of ln‖W u‖: ½ E ln((σ²/n) χ²_n), by direct integration.
    direct = 0.5 * (math.log(1.3**2 / n) + stats.chi2(n).expect(np.log, epsabs=1e-13, epsrel=1e-12))
    assert lam[0] == pytest.approx(direct, rel=1e-10)


def test_newman_spectrum_sums_to_log_det():
    # Σ λ_i = E ln|det W| per layer; check against many determinants (numpy, independent of JAX).
    n, count = 6, 200_000
    rng = np.random.default_rng(0)
    logdet = np.linalg.slogdet(rng.standard_normal((count, n, n)) * 0.9 / math.sqrt(n))[1]
    with x64(True):
        total = float(jnp.sum(theory.gaussian_lyapunov_spectrum(n, 0.9)))
    assert abs(logdet.mean() - total) < 4 * logdet.std() / math.sqrt(count)


def test_gaussian_log_gain_against_chi_square_integrals():
    n, L, s = 5, 7, 0.8
    log_gain2 = stats.chi2(n).expect(np.log, epsabs=1e-13)
    var2 = stats.chi2(n).expect(lambda x: np.log(x) ** 2, epsabs=1e-13) - log_gain2**2
    with x64(True):
        gain = theory.gaussian_log_gain(n, L, s)
    assert float(gain.mean) == pytest.approx(L * (math.log(s) + 0.5 * (math.log(1 / n) + log_gain2)), rel=1e-10)
    assert float(gain.variance) == pytest.approx(L * var2 / 4, rel=1e-9)
    with x64(True):
        wide = theory.gaussian_log_gain(4096, jnp.arange(1, 4), 1.0)
    np.testing.assert_allclose(wide.mean, -np.arange(1, 4) / (2 * 4096), rtol=1e-3)
    np.testing.assert_allclose(wide.variance, np.arange(1, 4) / (2 * 4096), rtol=1e-3)


def test_relu_log_gain_by_brute_force_enumeration():
    n, L = 4, 3
    p = np.array([math.comb(n, k) for k in range(1, n + 1)]) / (2**n - 1)
    e1 = np.array([stats.chi2(k).expect(np.log, epsabs=1e-13) for k in range(1, n + 1)])
    e2 = np.array([stats.chi2(k).expect(lambda x: np.log(x) ** 2, epsabs=1e-13) for k in range(1, n + 1)])
    mean2 = (p * (math.log(2 / n) + e1)).sum()
    second2 = (p * (e2 + 2 * math.log(2 / n) * e1 + math.log(2 / n) ** 2)).sum()
    with x64(True):
        gain = theory.relu_log_gain(n, L)
        assert float(theory.relu_zero_gain_probability(n, L)) == pytest.approx(1 - (1 - 2.0**-n) ** L, rel=1e-14)
    assert float(gain.mean) == pytest.approx(L * mean2 / 2, rel=1e-9)
    assert float(gain.variance) == pytest.approx(L * (second2 - mean2**2) / 4, rel=1e-8)


def test_relu_log_gain_approaches_its_log_normal_limit():
    with x64(True):
        for n in (256, 2048):
            exact, limit = theory.relu_log_gain(n, 10), theory.relu_log_gain(n, 10, limit=True)
            # the limit is first order in 1/n: the relative gap shrinks like 1/n
            assert abs(float(exact.mean) / float(limit.mean) - 1) < 4 / n
            assert abs(float(exact.variance) / float(limit.variance) - 1) < 4 / n


def test_mean_field_log_gain_recovers_the_exact_first_order_terms():
    # η = 3μ₂/μ₁² − 1 is 2 for linear and 5 for ReLU: the O(1/n) terms of the exact laws.
    with x64(True):
        relu = theory.mean_field_log_gain("relu", math.sqrt(2), 0.0, 128, 10)
        limit = theory.relu_log_gain(128, 10, limit=True)
        assert float(relu.mean) == pytest.approx(float(limit.mean), rel=1e-12)
        assert float(relu.variance) == pytest.approx(float(limit.variance), rel=1e-12)
        n = 1e5
        linear, exact = theory.mean_field_log_gain("linear", 1.3, 0.0, n, 10), theory.gaussian_log_gain(n, 10, 1.3)
        assert float(linear.mean) == pytest.approx(float(exact.mean), abs=10 / n**2)
        assert float(linear.variance) == pytest.approx(float(exact.variance), rel=2 / n)


@pytest.mark.parametrize("L", [1, 2, 3, 5])
@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
def test_fuss_catalan_numbers(L, k):
    with x64(True):
        got = float(theory.product_moments_gaussian(L, k))
    assert got == pytest.approx(math.comb((L + 1) * k, k) / (L * k + 1), rel=1e-12)


def test_fuss_catalan_special_cases_and_finite_width():
    catalan = [1, 1, 2, 5, 14, 42, 132]
    with x64(True):
        np.testing.assert_allclose(theory.product_moments_gaussian(1, jnp.arange(7)), catalan, rtol=1e-12)
        np.testing.assert_allclose(theory.product_moments_gaussian(jnp.arange(1, 9), 2), np.arange(2, 10), rtol=1e-12)
        assert float(theory.product_moments_gaussian(3, 2, sigma_w=1.5)) == pytest.approx(4 * 1.5**12, rel=1e-12)
        # finite width: Wishart at L = 1, products of scalars at n = 1, Fuss–Catalan as n → ∞
        assert float(theory.product_moments_gaussian(1, 2, width=7)) == pytest.approx(2 + 1 / 7, rel=1e-14)
        assert float(theory.product_moments_gaussian(5, 2, width=1)) == pytest.approx(3.0**5, rel=1e-13)
        L, n = 6, 1e6
        expansion = L + 1 + L * (L + 1) / (2 * n)
        assert float(theory.product_moments_gaussian(L, 2, width=n)) == pytest.approx(expansion, rel=1e-10)
        assert float(theory.product_moments_gaussian(4, 1, width=9, sigma_w=1.1)) == pytest.approx(1.1**8, rel=1e-14)


def test_finite_width_second_moment_by_direct_simulation():
    # (1/n) E tr (P Pᵀ)² for n = 3, L = 4 with numpy: an independent check of the recursion.
    n, L, count = 3, 4, 100_000
    rng = np.random.default_rng(1)
    P = np.broadcast_to(np.eye(n), (count, n, n))
    for _ in range(L):
        P = rng.standard_normal((count, n, n)) / math.sqrt(n) @ P
    M = P @ P.transpose(0, 2, 1)
    m2 = np.einsum("sij,sji->s", M, M) / n
    with x64(True):
        predicted = float(theory.product_moments_gaussian(L, 2, width=n))
    assert abs(m2.mean() - predicted) < 4 * m2.std() / math.sqrt(count)


def test_jacobian_spectrum_variance_known_cases():
    L = 7
    with x64(True):
        v = theory.jacobian_spectrum_variance
        assert float(v("linear", "gaussian", 1.0, 0.0, L)) == pytest.approx(L, rel=1e-12)  # FC(L, 2) − 1
        assert float(v("linear", "orthogonal", 1.0, 0.0, L)) == pytest.approx(0.0, abs=1e-12)  # isometry
        assert float(v("relu", "he", 1.0, 0.0, L)) == pytest.approx(2 * L, rel=1e-12)  # μ₂/μ₁² = 2
        assert float(v("relu", "orthogonal", math.sqrt(2), 0.0, L)) == pytest.approx(L, rel=1e-12)
        assert float(v("tanh", "orthogonal", 1.0, 0.0, L)) == pytest.approx(0.0, abs=1e-12)  # q* = 0
        assert float(v("linear", "gaussian", 1.1, 0.0, L)) == pytest.approx(1.1 ** (4 * L) * L, rel=1e-12)
        # Near criticality orthogonal tanh is closer to isometry than Gaussian, by exactly L χ^{2L}.
        sb = 0.1
        sw = float(theory.critical_sigma_w("tanh", sb))
        gap = float(v("tanh", "gaussian", sw, sb, L)) - float(v("tanh", "orthogonal", sw, sb, L))
        assert gap == pytest.approx(L, rel=1e-8)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: theory.q_star("tanh", -1.0, 0.0), "sigma_w"),
        (lambda: theory.chi1("tanh", 1.0, float("nan")), "sigma_b"),
        (lambda: theory.q_star("tanh", 1.0, 0.0, q0=0.0), "q0"),
        (lambda: theory.critical_sigma_w("tanh", -0.1), "sigma_b"),
        (lambda: theory.depth_scales("nope", 1.0, 0.0), "activation"),
        (lambda: theory.chi1(lambda u: jnp.exp(u * u), 1.0, 0.0), "no finite Gaussian moment"),
        (lambda: theory.q_star(lambda u: jnp.exp(u * u / 3), 1.0, 0.5), "no finite Gaussian moment"),
        (lambda: theory.signal_propagation("tanh", 1.0, 0.0, 1.0, 0), "depth"),
        (lambda: theory.gaussian_lyapunov_spectrum(0), "width"),
        (lambda: theory.gaussian_lyapunov_spectrum(2.5), "width"),
        (lambda: theory.gaussian_lyapunov_spectrum(4, -1.0), "sigma_w"),
        (lambda: theory.gaussian_log_gain(-3, 5), "width"),
        (lambda: theory.gaussian_log_gain(8, 0), "depth"),
        (lambda: theory.gaussian_log_gain(8, jnp.array([1, 0])), "depth"),
        (lambda: theory.relu_log_gain(16, -1), "depth"),
        (lambda: theory.relu_log_gain(True, 3), "width"),
        (lambda: theory.relu_zero_gain_probability(0, 3), "width"),
        (lambda: theory.product_moments_gaussian(0, 2), "depth"),
        (lambda: theory.product_moments_gaussian(3, 3, width=8), "k"),
        (lambda: theory.product_moments_gaussian(3, 2, width=0), "width"),
        (lambda: theory.jacobian_spectrum_variance("tanh", "uniform", 1.0, 0.0, 3), "weights"),
        (lambda: theory.jacobian_spectrum_variance("tanh", "gaussian", 1.0, -2.0, 3), "sigma_b"),
    ],
)
def test_bad_input_raises_a_value_error_that_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_inside_jit_bad_values_do_not_raise():
    chi = jax.jit(lambda s: theory.chi1("tanh", s, 0.1))(-1.0)  # σ_w enters squared: no error, no check
    assert np.isfinite(chi)
    gain = jax.jit(lambda n: theory.gaussian_log_gain(n, 3).mean)(-2.0)
    assert np.isnan(gain)


def test_fixed_points_lists_every_fixed_point_with_its_stability():
    with x64(True):
        (relu,) = theory.fixed_points("relu", 1.2, 0.5)  # q* = σ_b²/(1 − σ_w²/2), stable
        assert relu.stable and relu.q == pytest.approx(0.25 / (1 - 0.72), rel=1e-12)
        zero, positive = theory.fixed_points("tanh", 1.5, 0.0)
        assert (zero.q, zero.stable) == (0.0, False) and positive.stable
        assert positive.q == pytest.approx(float(theory.q_star("tanh", 1.5, 0.0)), rel=1e-12)
        assert theory.fixed_points("relu", math.sqrt(2), 0.0) == []  # every q is fixed
        assert theory.fixed_points("relu", 1.5, 0.1) == [(math.inf, True)]  # diverges
        small, unstable, large = theory.fixed_points("gelu", 1.5, 0.1)
        assert (small.stable, unstable.stable, large) == (True, False, (math.inf, True))
        assert small.q == pytest.approx(0.02424, rel=1e-3) and unstable.q == pytest.approx(1.3154, rel=1e-3)
        for p in (small, unstable):  # V(q) = q: one step of the length map from q⁽¹⁾ = q leaves it there
            q = theory.signal_propagation("gelu", 1.5, 0.1, (p.q - 0.01) / 2.25, 2).q
            assert float(q[1]) == pytest.approx(p.q, rel=1e-10)


def test_q_star_follows_the_start_where_two_fixed_points_are_stable():
    # q0 is the input variance: q⁽¹⁾ = σ_w² q0 + σ_b² = 0.0325 (small basin) or 2.26 (above 1.315).
    with x64(True):
        assert float(theory.q_star("gelu", 1.5, 0.1, q0=0.01)) == pytest.approx(0.024244, rel=1e-4)
        assert float(theory.q_star("gelu", 1.5, 0.1)) == math.inf
        assert float(theory.chi1("gelu", 1.5, 0.1, q0=0.01)) == pytest.approx(0.5956, rel=1e-3)
        gain = theory.mean_field_log_gain("gelu", 1.5, 0.1, 64, 30, q0=0.01)
        assert float(gain.mean) == pytest.approx(-8.0825, abs=1e-3)
        # χ₁ jumps over 1 where q⁽¹⁾ crosses the unstable point: no critical line, NaN, not the jump
        assert math.isnan(float(theory.critical_sigma_w("gelu", 0.1)))

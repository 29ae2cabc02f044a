"""Seed §1: θ_t = (1 − ηa)ᵗθ₀, the threshold η < 2/a, momentum thresholds, SPD matrices.

Every optax run here goes through a handful of fixed shapes, so hypothesis examples
reuse one compiled function each instead of recompiling.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxgrad import quadratic

CURVATURES = st.floats(0.05, 20.0)
FRACTIONS = st.floats(0.02, 0.98)  # η as a fraction of 2/a
MOMENTA = st.floats(0.0, 0.95)


def _rates(a, lr, *, steps=600, momentum=None, nesterov=False, n=4):
    """Growth rates of optax runs on one fixed batch shape (n problems)."""
    a, lr = np.resize(np.asarray(a, float), n), np.resize(np.asarray(lr, float), n)
    mom = None if momentum is None else np.resize(np.asarray(momentum, float), n)
    return np.asarray(quadratic.sgd_growth_rates(a, np.ones(n), lr, steps=steps, momentum=mom, nesterov=nesterov))


# ----------------------------------------------------------------------------- closed form


def test_the_seed_examples_have_their_regimes():
    assert [quadratic.regime(r) for r in (0.5, -0.5, 1.2, -1.2, 1.0, -1.0)] == [
        "monotone_shrink",
        "oscillating_shrink",
        "monotone_growth",
        "oscillating_growth",
        "marginal",
        "marginal",
    ]
    assert set(quadratic.REGIMES) == {quadratic.regime(r) for r in (0.5, -0.5, 1.2, -1.2, 1.0)}


def test_closed_form_unrolls_the_multiplier():
    theta = quadratic.closed_form(2.0, a=3.0, lr=0.5, steps=3)  # r = 1 − 1.5 = −0.5
    np.testing.assert_allclose(theta, [2.0, -1.0, 0.5, -0.25])


@given(CURVATURES, FRACTIONS, st.floats(-10, 10).filter(lambda x: abs(x) > 1e-3))
def test_stable_steps_never_grow_and_tend_to_zero(a, fraction, theta0):
    lr = fraction * 2.0 / a
    theta = np.abs(quadratic.closed_form(theta0, a, lr, steps=4000))
    assert np.all(np.diff(theta) <= 0)
    assert theta[-1] <= 1e-6 * abs(theta0)
    assert _rates(a, lr)[0] < 0  # and optax agrees


@given(CURVATURES, st.one_of(st.floats(1.02, 3.0), st.floats(-3.0, -0.01)))
def test_steps_above_two_over_a_or_negative_grow(a, fraction):
    lr = fraction * 2.0 / a
    theta = np.abs(quadratic.closed_form(1.0, a, lr, steps=50))
    assert np.all(np.diff(theta) > 0)
    assert not quadratic.is_stable(a, lr)
    assert _rates(a, lr)[0] > 0


@given(
    st.lists(st.floats(0.1, 1.5), min_size=4, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.floats(0.1, 10.0),
)
def test_optax_sgd_equals_the_closed_form(sizes, negative, a):
    r = np.where(negative, -1.0, 1.0) * np.array(sizes)
    a32, lr32 = np.float32(a), ((1.0 - r) / a).astype(np.float32)  # what the float32 run sees
    theta = quadratic.sgd_trajectories(np.full(4, a32), np.ones(4), lr32, steps=30)
    closed = np.stack([quadratic.closed_form(1.0, float(a32), float(l), 30) for l in lr32])
    # |r| ≥ 0.1 keeps r³⁰θ₀ a normal float32. Rounding: each step θ − η(aθ) errs by about
    # ε(1 + 2|ηa|)|θ_t|, i.e. ε(1 + 2|ηa|)/|r| relative to θ_{t+1}.
    eps = np.finfo(np.float32).eps
    rtol = 30 * eps * (1 + 2 * np.abs(lr32 * a32)) / np.abs(1 - lr32.astype(float) * float(a32))
    assert np.all(np.abs(theta - closed) <= rtol[:, None] * np.abs(closed))


@pytest.mark.parametrize("nesterov", [False, True])
@given(MOMENTA, st.floats(0.1, 2.5))
def test_optax_momentum_equals_the_linear_recurrence(nesterov, beta, x):
    a = np.array([0.5, 1.0, 2.0, 4.0])
    theta = quadratic.sgd_trajectories(a, np.ones(4), x / a, steps=30, momentum=beta, nesterov=nesterov)
    closed = np.stack([quadratic.momentum_closed_form(1.0, ai, x / ai, 30, beta, nesterov) for ai in a])
    scale = np.maximum(np.abs(closed), np.max(np.abs(closed), axis=1, keepdims=True) * 1e-4)
    assert np.max(np.abs(theta - closed) / scale) < 5e-4


# ----------------------------------------------------------------------------- thresholds


def test_thresholds_are_the_closed_forms():
    assert quadratic.critical_learning_rate(4.0) == 0.5
    assert quadratic.critical_learning_rate(2.0, momentum=0.5) == pytest.approx(1.5)  # 2(1+β)/a
    assert quadratic.critical_learning_rate(2.0, 0.5, nesterov=True) == pytest.approx(0.75)  # 2(1+β)/((1+2β)a)
    assert quadratic.critical_learning_rate(1.0, 0.0, nesterov=True) == 2.0


@pytest.mark.parametrize("nesterov", [False, True])
@given(MOMENTA, st.floats(0.1, 10.0))
def test_spectral_radius_is_one_at_the_threshold(nesterov, beta, a):
    lr = quadratic.critical_learning_rate(a, beta, nesterov)
    assert quadratic.spectral_radius(a, lr, beta, nesterov) == pytest.approx(1.0, abs=1e-9)
    assert (
        quadratic.spectral_radius(a, 0.99 * lr, beta, nesterov)
        < 1
        < quadratic.spectral_radius(a, 1.01 * lr, beta, nesterov)
    )


@pytest.mark.parametrize("nesterov", [False, True])
@given(MOMENTA, CURVATURES)
def test_optax_converges_below_and_diverges_above_the_momentum_threshold(nesterov, beta, a):
    lr = quadratic.critical_learning_rate(a, beta, nesterov)
    low, high = _rates(a, [0.99 * lr, 1.01 * lr], steps=1000, momentum=beta, nesterov=nesterov)[:2]
    assert low < 0 < high
    theta = quadratic.sgd_trajectories(
        np.full(2, a), np.ones(2), np.array([0.99, 1.01]) * lr, steps=1000, momentum=beta, nesterov=nesterov
    )
    assert abs(theta[0, -1]) < 1e-3 and not abs(theta[1, -1]) < 1e3  # NaN/inf count as diverged


def test_one_compilation_serves_a_whole_grid():
    args = dict(steps=64, momentum=0.5, nesterov=True)
    quadratic.sgd_growth_rates(np.ones(512), np.ones(512), np.linspace(0.1, 3, 512), **args)
    before = quadratic._growth_rates_jit._cache_size()
    quadratic.sgd_growth_rates(np.full(512, 2.0), np.ones(512), np.linspace(0.2, 1, 512), **args)
    assert quadratic._growth_rates_jit._cache_size() == before


def test_bisection_finds_the_threshold():
    a = np.array([0.5, 1.0, 3.0, 7.0])
    low, high = quadratic.bisect_critical_learning_rate(a, np.ones(4), 1.0 / a, 3.0 / a, steps=400, iterations=20)
    np.testing.assert_allclose(0.5 * (low + high) * a, 2.0, rtol=1e-5)


# ----------------------------------------------------------------------------- n dimensions


def _spd(seed, n=4):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (Q * rng.uniform(0.1, 10.0, n)) @ Q.T


@given(st.integers(0, 2**16), st.one_of(st.floats(0.05, 0.98), st.floats(1.02, 1.6)))
def test_spd_quadratic_is_stable_exactly_below_two_over_lambda_max(seed, fraction):
    A = _spd(seed)
    lr = fraction * quadratic.critical_learning_rate_spd(A)
    assert quadratic.critical_learning_rate_spd(A) == pytest.approx(2.0 / np.linalg.eigvalsh(A)[-1])
    theta0 = np.random.default_rng(seed).normal(size=(2, 4))
    rate = np.asarray(quadratic.sgd_growth_rates(np.stack([A, A]), theta0, lr, steps=600))
    assert np.all((rate < 0) == (fraction < 1))


def test_spd_trajectory_is_the_matrix_power():
    A, theta0, lr = _spd(3), np.array([1.0, -2.0, 0.5, 3.0]), 0.05
    theta = quadratic.sgd_trajectories(A[None], theta0[None], lr, steps=20)[0]
    expected = np.linalg.matrix_power(np.eye(4) - lr * A, 20) @ theta0
    np.testing.assert_allclose(theta[-1], expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("a", [0.0, -1.0, float("nan"), float("inf"), "x"])
def test_non_positive_curvature_is_rejected(a):
    with pytest.raises(ValueError, match=r"curvature `a`.*got a="):
        quadratic.critical_learning_rate(a)


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5])
def test_momentum_outside_unit_interval_is_rejected(momentum):
    with pytest.raises(ValueError, match=r"`momentum` must lie in \[0, 1\).*got momentum="):
        quadratic.critical_learning_rate(1.0, momentum)


@pytest.mark.parametrize(
    "A, why",
    [
        (np.array([[1.0, 2.0], [0.0, 1.0]]), "symmetric"),
        (np.array([[1.0, 0.0], [0.0, -0.5]]), "positive definite"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive definite"),
        (np.ones((2, 3)), "square"),
    ],
)
def test_bad_matrices_are_rejected_by_name(A, why):
    with pytest.raises(ValueError, match=f"`A` must be (a )?{why}.*A="):
        quadratic.critical_learning_rate_spd(A)


def test_bad_run_arguments_are_rejected():
    with pytest.raises(ValueError, match="steps"):
        quadratic.sgd_trajectories(np.ones(2), np.ones(2), 0.1, steps=0)
    with pytest.raises(ValueError, match="nesterov=True needs a `momentum`"):
        quadratic.sgd_growth_rates(np.ones(2), np.ones(2), 0.1, steps=10, nesterov=True)
    with pytest.raises(ValueError, match="shape"):
        quadratic.sgd_growth_rates(np.ones((2, 3, 3)), np.ones(2), 0.1, steps=10)

"""Residual networks with depth-scaled branches (issue 14): the blocks against a plain reference,
one compile per structure, the exact linear-residual laws against Monte Carlo at 4 SE, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import ensemble, theory
from jaxgrad.stats import log_mean_exp, mean_and_se, variance_and_se
from tests.helpers import assert_within_se


def _ln(h, eps=1e-5):
    c = h - jnp.mean(h)
    return c / jnp.sqrt(jnp.mean(c * c) + eps)


def _reference_block(p, h, branch, norm, beta):
    """h + β f(h), h + β f(LN h) or LN(h + β f(h)) from the drawn parameters, by hand."""

    def f(x, q):
        if branch == "dense":
            return jax.nn.relu(q.W @ x + q.b)
        return q.second.W @ jax.nn.relu(q.first.W @ x + q.first.b) + q.second.b

    if norm == "pre":
        return h + beta * f(_ln(h), p.second)
    if norm == "post":
        return _ln(h + beta * f(h, p.first))
    return h + beta * f(h, p)


@pytest.mark.parametrize("norm", [None, "pre", "post"])
@pytest.mark.parametrize("branch", ["dense", "mlp"])
def test_blocks_match_a_reference_and_their_fast_jacobian_is_jacrev(branch, norm):
    n, L, alpha, a = 5, 16, 0.5, 1.5
    net = jaxgrad.resnet(width=n, depth=L, branch=branch, alpha=alpha, a=a, norm=norm, sigma_b=0.2)
    assert len(net.segments()) == 1  # L equal blocks: one lax.scan
    block = net.layers[0]
    p = block.init(jax.random.key(0))
    h = jax.random.normal(jax.random.key(1), (n,))
    beta = a * L**-alpha
    np.testing.assert_allclose(block.apply(p, h), _reference_block(p, h, branch, norm, beta), rtol=1e-5, atol=1e-6)
    J, out = block.jacobian(p, h)
    np.testing.assert_allclose(J, jax.jacrev(lambda x: _reference_block(p, x, branch, norm, beta))(h), atol=2e-5)
    np.testing.assert_allclose(out, block.apply(p, h), rtol=1e-6)


N, L, SAMPLES, ALPHAS = 16, 32, 1024, (0.0, 0.5, 1.0)
LAW_FIELDS = ["log_forward_gain", "log_backward_gain", "log_signal_norm"]


@pytest.fixture(scope="module")
def linear_sweep():
    """One compiled program for the module: a linear resnet swept over α (traced), every vector field."""
    return jaxgrad.sweep(
        jaxgrad.resnet(width=N, depth=L, activation="linear"),
        SAMPLES,
        1,
        grid={"alpha": list(ALPHAS)},
        method="vector",
        fields=LAW_FIELDS,
    )


@pytest.mark.slow
def test_a_sweep_over_alpha_and_a_compiles_once_and_equals_separately_built_networks(linear_sweep):
    before = ensemble.compile_count()
    again = jaxgrad.sweep(
        jaxgrad.resnet(width=N, depth=L, activation="linear", a=2.0),
        SAMPLES,
        1,
        grid={"alpha": [0.25, 0.75, 1.0]},
        method="vector",
        fields=LAW_FIELDS,
    )
    # a network built with α = 1, a = 2 directly (the grid is then over a value it already has)
    one = jaxgrad.sweep(
        jaxgrad.resnet(width=N, depth=L, activation="linear", alpha=1.0, a=2.0),
        SAMPLES,
        1,
        grid={"alpha": [1.0, 1.0, 1.0]},
        method="vector",
        fields=LAW_FIELDS,
    )
    assert ensemble.compile_count() == before and again.log_forward_gain.shape == (3, SAMPLES, L)
    np.testing.assert_allclose(again.log_forward_gain[2], one.log_forward_gain[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(again.log_forward_gain[2], linear_sweep.log_forward_gain[2])  # a = 2 ≠ a = 1


def test_linear_residual_laws_against_monte_carlo(linear_sweep):
    # Exact at every width and depth (theory.residual): the mean-square gain (1 + β²)^ℓ and the
    # law of ln‖·‖ (a sum of i.i.d. logs of noncentral χ²), forward and backward, α = 0, ½, 1, at
    # ℓ = L and (α = 0, where the log-normal tail makes the sample mean of ‖·‖² unreliable at
    # ℓ = L = 32) at ℓ = 8.
    for k, alpha in enumerate(ALPHAS):
        ell = 8 if alpha == 0 else L
        law = theory.linear_residual_log_gain(N, L, alpha, depth=ell)
        for name in ("log_forward_gain", "log_backward_gain"):
            x = np.asarray(getattr(linear_sweep, name), np.float64)[k, :, ell - 1]
            tag = f"α={alpha} {name} at ℓ={ell}"
            m, se = mean_and_se(x)
            assert_within_se(m, law.mean, se, what=f"{tag} E ln‖·‖")
            v, vse = variance_and_se(x)
            assert_within_se(v, law.variance, vse, what=f"{tag} Var ln‖·‖")
            lme, lse = log_mean_exp(2 * x)
            assert_within_se(
                lme, math.log(theory.linear_residual_gain(L, alpha, depth=ell)), lse, what=f"{tag} ln E‖·‖²"
            )


def test_alpha_half_spread_reaches_its_large_depth_limit(linear_sweep):
    # Var ln‖h_L‖² → 4a²σ_w²/n at α = ½; the exact finite-L value is within 1 % of it by L = 128
    # (theory alone), and the signal's measured spread at L = 32 agrees with the exact value at 4 SE.
    limit = theory.linear_residual_log_variance_limit(N, 1.0)
    assert limit == pytest.approx(0.25)
    assert abs(4 * theory.linear_residual_log_gain(N, 128, 0.5).variance - limit) < 0.01 * limit
    assert abs(4 * theory.linear_residual_log_gain(N, 10**6, 0.5).variance - limit) < 1e-4 * limit
    exact = 4 * theory.linear_residual_log_gain(N, L, 0.5).variance
    x = 2 * np.asarray(linear_sweep.log_signal_norm[1, :, -1], np.float64)  # ln‖h_L‖²; ‖h_0‖ varies, so
    x0 = 2 * np.log(
        np.linalg.norm(
            np.asarray(
                jax.vmap(lambda i: jax.random.normal(jaxgrad.sample_keys(1, i).input, (N,)))(jnp.arange(SAMPLES)),
                np.float64,
            ),
            axis=1,
        )
    )
    v, vse = variance_and_se(x - x0)  # the gain ln‖h_L‖²/‖h_0‖², whose law is exact
    assert_within_se(v, exact, vse, what="Var ln‖h_L‖²/‖h_0‖², α = ½")


def test_gain_limits():
    assert theory.residual_gain_limit(0.5, 1.0) == pytest.approx(math.e)
    assert theory.residual_gain_limit(1.0, 1.0) == 1.0 and theory.residual_gain_limit(0.0, 1.0) == math.inf
    assert theory.linear_residual_gain(10**7, 0.5) == pytest.approx(math.e, rel=1e-6)
    assert theory.linear_residual_gain(64, 0.0) == pytest.approx(2.0**64)
    assert theory.mean_field_residual_gain("relu", 10**7, 0.5) == pytest.approx(math.exp(0.5), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(a=-1.0), "`a`"),
        (dict(a=float("inf")), "`a`"),
        (dict(a=float("nan")), "`a`"),
        (dict(alpha=float("nan")), "`alpha`"),
        (dict(alpha="half"), "`alpha`"),
        (dict(norm="middle"), "norm"),
        (dict(branch="conv"), "branch"),
        (dict(norm_type="batch", norm="pre"), "norm_type"),
        (dict(width=1, norm="post"), "width"),
        (dict(depth=0), "depth"),
        (dict(weights="xavier"), "weights"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxgrad.resnet(**{"width": 4, "depth": 4, **kwargs})

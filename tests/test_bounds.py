"""Seed §3 and §4: submultiplicativity and ‖J‖ ≤ ‖diag φ′‖‖W‖, property-tested."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxgrad
from jaxgrad.activations import ACTIVATIONS

NETS = st.fixed_dictionaries(
    dict(
        depth=st.sampled_from([2, 5]),
        width=st.sampled_from([4, 8]),
        activation=st.sampled_from(sorted(ACTIVATIONS)),
        weights=st.sampled_from(list(jaxgrad.WEIGHT_SCHEMES)),
        sigma_w=st.floats(0.2, 3.0),
        sigma_b=st.floats(0.0, 1.0),
        seed=st.integers(0, 2**16),
    )
)
RTOL = 1e-5  # float32 rounding of SVD


def _jacobians(arch):
    net = jaxgrad.mlp(width=arch["width"], depth=arch["depth"], activation=arch["activation"],
                      weights=arch["weights"], sigma_w=arch["sigma_w"], sigma_b=arch["sigma_b"])
    k1, k2 = jax.random.split(jax.random.key(arch["seed"]))
    params = net.init(k1)
    x = jax.random.normal(k2, (arch["width"],))
    return net, params, x, jaxgrad.layer_jacobians(net, params, x)


@given(NETS)
def test_product_norm_is_at_most_product_of_norms(arch):
    _, _, _, Js = _jacobians(arch)
    backward = jaxgrad.product([J.T for J in reversed(Js)])  # J₁ᵀ J₂ᵀ ⋯ J_Lᵀ
    lhs = jaxgrad.spectral_norm(backward)
    rhs = np.prod([float(jaxgrad.spectral_norm(J)) for J in Js])
    assert lhs <= rhs * (1 + RTOL * arch["depth"]) + 1e-30


@given(NETS)
def test_layer_norm_is_at_most_activation_norm_times_weight_norm(arch):
    net, params, x, Js = _jacobians(arch)
    phi_prime = jax.vmap(jax.grad(ACTIVATIONS[arch["activation"]].fn))
    for J, p, h in zip(Js, params, jaxgrad.forward(net, params, x)):
        d = phi_prime(p.W @ h + p.b)
        bound = jnp.max(jnp.abs(d)) * jaxgrad.spectral_norm(p.W)  # ‖diag φ′‖₂ = max |φ′|
        assert jaxgrad.spectral_norm(J) <= bound * (1 + RTOL) + 1e-30


@pytest.mark.parametrize("sigma_w", [0.5, 1.0, 1.7])
def test_orthogonal_linear_network_attains_the_bound(sigma_w):
    depth = 6
    arch = dict(depth=depth, width=8, activation="linear", weights="orthogonal", sigma_w=sigma_w, sigma_b=0.0, seed=1)
    _, _, _, Js = _jacobians(arch)
    s = jnp.linalg.svd(jaxgrad.product(Js), compute_uv=False)
    np.testing.assert_allclose(s, sigma_w**depth, rtol=1e-5)  # every singular value is ∏σ_w
    np.testing.assert_allclose(np.prod([jaxgrad.spectral_norm(J) for J in Js]), sigma_w**depth, rtol=1e-5)


def test_log_product_norm_survives_products_that_overflow_float32():
    J = 10.0 * jnp.eye(4).at[0, 1].set(1.0)
    Js = [J] * 100  # ‖∏J‖ ≈ 10¹⁰⁰, far beyond float32
    got = jaxgrad.log_product_norm(Js)
    with jax.enable_x64(True):
        exact = jnp.log(jnp.linalg.svd(jnp.linalg.matrix_power(np.asarray(J, np.float64), 100), compute_uv=False)[0])
    np.testing.assert_allclose(got, exact, rtol=1e-5)


@pytest.mark.parametrize("reorthogonalise", [True, False])
@pytest.mark.parametrize("width,steps", [(16, 16), (64, 24), (128, 32)])
def test_lanczos_top_singular_value_matches_svd(width, steps, reorthogonalise):
    keys = jax.random.split(jax.random.key(0), 32)
    A = jax.vmap(lambda k: jax.random.normal(k, (width, width)) / jnp.sqrt(width))(keys)
    v0 = jax.random.normal(jax.random.key(1), (32, width))
    est = jax.vmap(lambda a, v: jaxgrad.lanczos_top_singular(a, v, steps, reorthogonalise=reorthogonalise))(A, v0)
    sigma = jaxgrad.spectral_norm(A)
    np.testing.assert_allclose(est.value, sigma, rtol=1e-5)
    if reorthogonalise:  # the Ritz vector is only meaningful with re-orthogonalisation
        np.testing.assert_allclose(jnp.linalg.norm(est.vector, axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(jnp.linalg.norm(jnp.einsum("bij,bj->bi", A, est.vector), axis=-1), sigma, rtol=1e-5)


def _breakdown_matrices(n=16):
    """Matrices on which the Krylov space of AᵀA becomes invariant early."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(2), 4)
    Q1, _ = jnp.linalg.qr(jax.random.normal(k1, (n, n)))
    Q2, _ = jnp.linalg.qr(jax.random.normal(k2, (n, n)))
    u, v = jax.random.normal(k3, (n,)), jax.random.normal(k4, (n,))
    s = jnp.linspace(1.0, 0.1, n).at[:3].set(2.0)  # top singular value repeated three times
    return dict(
        orthogonal=1.5 * Q1,                  # all σ equal: invariant after 1 step
        rank1=3.0 * jnp.outer(u, v) / n,      # invariant after 2 steps
        repeated_top=(Q1 * s) @ Q2.T,
    )


@pytest.mark.parametrize("reorthogonalise", [True, False])
@pytest.mark.parametrize("case", ["orthogonal", "rank1", "repeated_top"])
def test_lanczos_top_singular_survives_breakdown(case, reorthogonalise):
    n, steps = 16, 16
    A = _breakdown_matrices(n)[case]
    v0 = jax.random.normal(jax.random.key(1), (n,))
    est = jaxgrad.lanczos_top_singular(A, v0, steps, reorthogonalise=reorthogonalise)
    assert np.isfinite(est.value)
    np.testing.assert_allclose(est.value, jnp.linalg.svd(A, compute_uv=False)[0], rtol=1e-5)
    if reorthogonalise:
        assert np.all(np.isfinite(est.vector))
        np.testing.assert_allclose(jnp.linalg.norm(A @ est.vector), est.value, rtol=1e-5)

"""Seed §3 and §4: submultiplicativity and ‖J‖ ≤ ‖diag φ′‖‖W‖, property-tested."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import jaxgrad
from jaxgrad import testing


def _jacobians(arch):
    net = jaxgrad.mlp(
        width=arch["width"],
        depth=arch["depth"],
        activation=arch["activation"],
        weights=arch["weights"],
        sigma_w=arch["sigma_w"],
        sigma_b=arch["sigma_b"],
    )
    k1, k2 = jax.random.split(jax.random.key(arch["seed"]))
    params = net.init(k1)
    x = jax.random.normal(k2, (arch["width"],))
    return net, params, x, jaxgrad.layer_jacobians(net, params, x)


@settings(max_examples=10)  # each new activation × shape compiles once (~1 s)
@given(testing.network_examples())
def test_product_norm_is_at_most_product_of_norms_and_is_the_networks_jacobian(example):
    # ‖J₁ᵀ⋯J_Lᵀ‖ ≤ ∏‖J_ℓ‖ holds for any matrices; the helper also checks that the product
    # equals jax.jacrev of the whole network, entrywise within a derived rounding bound.
    testing.assert_submultiplicative(*example)


@settings(max_examples=10)  # each new activation × shape compiles once (~1 s)
@given(testing.network_examples(testing.networks(residual=False)))
def test_layer_jacobian_is_diag_phi_prime_W_and_obeys_the_norm_bound(example):
    testing.assert_layer_bound(*example)


def test_submultiplicativity_check_catches_a_product_that_drops_a_factor(monkeypatch):
    net = jaxgrad.mlp(width=4, depth=3, activation="tanh", sigma_w=0.9)
    params, x = net.init(jax.random.key(0)), jnp.linspace(-1, 1, 4)
    testing.assert_submultiplicative(net, params, x)
    true_product = jaxgrad.spectral.product
    monkeypatch.setattr(
        jaxgrad.spectral, "product", lambda Ms: true_product(Ms[:-1]) if len(Ms) > 1 else true_product(Ms)
    )
    with pytest.raises(AssertionError, match="jax.jacrev"):  # the inequality alone would still pass
        testing.assert_submultiplicative(net, params, x)


@pytest.mark.parametrize("sigma_w", [0.5, 1.0, 1.7])
def test_orthogonal_linear_network_attains_the_bound(sigma_w):
    depth = 6
    arch = dict(depth=depth, width=8, activation="linear", weights="orthogonal", sigma_w=sigma_w, sigma_b=0.0, seed=1)
    _, _, _, Js = _jacobians(arch)
    s = jnp.linalg.svd(jaxgrad.product(Js), compute_uv=False)
    # Rounding bound: Q is orthogonal to n·ε (Householder QR), the product of L factors adds
    # L·n·ε, the SVD n·ε, all relative: 2·(L + 1)·n·ε ≈ 1.3e-5 in float32.
    rtol = 2 * (depth + 1) * 8 * float(jnp.finfo(jnp.float32).eps)
    np.testing.assert_allclose(s, sigma_w**depth, rtol=rtol)  # every singular value is ∏σ_w
    np.testing.assert_allclose(np.prod([jaxgrad.spectral_norm(J) for J in Js]), sigma_w**depth, rtol=rtol)


def test_log_product_norm_survives_products_that_overflow_float32():
    J = 10.0 * jnp.eye(4).at[0, 1].set(1.0)
    Js = [J] * 100  # ‖∏J‖ ≈ 10¹⁰⁰, far beyond float32
    got = jaxgrad.log_product_norm(Js)
    with jax.enable_x64(True):
        exact = jnp.log(jnp.linalg.svd(jnp.linalg.matrix_power(np.asarray(J, np.float64), 100), compute_uv=False)[0])
    np.testing.assert_allclose(got, exact, rtol=1e-5)


@pytest.mark.parametrize(
    "width,steps,reorthogonalise",
    [
        pytest.param(16, 16, True, marks=pytest.mark.slow),
        (16, 16, False),
        pytest.param(64, 24, True, marks=pytest.mark.slow),
        (64, 24, False),
        pytest.param(128, 32, True, marks=pytest.mark.slow),
        pytest.param(128, 32, False, marks=pytest.mark.slow),
    ],
)
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
        orthogonal=1.5 * Q1,  # all σ equal: invariant after 1 step
        rank1=3.0 * jnp.outer(u, v) / n,  # invariant after 2 steps
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


@pytest.mark.slow
def test_adaptive_lanczos_reaches_the_top_of_a_clustered_spectrum():
    """tanh with orthogonal weights: the top relative gap of J = D W is about 1e-4 at n = 64, where 32
    plain steps stop short by more than the 1e-4 contract; the adaptive run (max_steps) reaches it, and
    stays exact on a Gaussian matrix (gap ≈ n^(-2/3))."""
    n = 64
    net = jaxgrad.mlp(width=n, depth=1, activation="tanh", weights="orthogonal", sigma_w=1.2)
    keys = jax.random.split(jax.random.key(3), 16)
    x = jax.random.normal(jax.random.key(4), (16, n))
    J = jax.vmap(lambda k, x: jaxgrad.layer_jacobians(net, net.init(k), x)[0])(keys, x)
    G = jax.random.normal(jax.random.key(5), (16, n, n)) / jnp.sqrt(n)
    v0 = jax.random.normal(jax.random.key(1), (16, n))

    def top(A, max_steps):
        return jax.vmap(
            lambda a, v: jaxgrad.lanczos_top_singular(a, v, 32, reorthogonalise=False, max_steps=max_steps).value
        )(A, v0)

    exact = np.linalg.svd(np.asarray(J, np.float64), compute_uv=False)[:, 0]
    plain, adaptive = (np.abs(np.log(np.asarray(top(J, m), np.float64) / exact)) for m in (None, 256))
    assert plain.max() > 1e-4 and adaptive.max() <= 1e-5
    exact_G = np.linalg.svd(np.asarray(G, np.float64), compute_uv=False)[:, 0]
    assert np.max(np.abs(np.log(np.asarray(top(G, 256), np.float64) / exact_G))) <= 1e-6
    with_basis = jax.vmap(lambda a, v: jaxgrad.lanczos_top_singular(a, v, 16, max_steps=64))(J, v0)
    np.testing.assert_allclose(np.asarray(with_basis.value, np.float64), exact, rtol=1e-5)
    np.testing.assert_allclose(
        jnp.linalg.norm(jnp.einsum("bij,bj->bi", J, with_basis.vector), axis=-1), with_basis.value, rtol=1e-4
    )

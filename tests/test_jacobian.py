"""Seed §2.2–2.5 and §4: J_ℓ = diag(φ′(z)) W, and δ⁽⁰⁾ = J₁ᵀ⋯J_Lᵀδ⁽ᴸ⁾ equals jax.grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxgrad
from jaxgrad import testing
from jaxgrad.activations import ACTIVATIONS


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_dense_jacobian_is_diag_phi_prime_times_W(activation):
    net = jaxgrad.mlp(widths=[5, 6, 6, 4], activation=activation, sigma_w=1.3, sigma_b=0.4)
    params = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (5,))
    hs = jaxgrad.forward(net, params, x)
    phi = ACTIVATIONS[activation].fn
    phi_prime = jax.vmap(jax.grad(phi))  # φ′ from autodiff of the scalar function, no table
    for J, p, h in zip(jaxgrad.layer_jacobians(net, params, x), params, hs[:-1]):
        z = p.W @ h + p.b
        np.testing.assert_allclose(J, phi_prime(z)[:, None] * p.W, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", lambda x: jnp.sin(x)])
@pytest.mark.parametrize("residual_alpha", [None, 0.5])
def test_fast_jacobian_path_equals_jacrev(activation, residual_alpha):
    net = jaxgrad.mlp(width=7, depth=2, activation=activation, sigma_b=0.3, residual_alpha=residual_alpha)
    params = net.init(jax.random.key(2))
    x = jax.random.normal(jax.random.key(3), (7,))
    hs, Js = jaxgrad.forward(net, params, x), jaxgrad.layer_jacobians(net, params, x)
    for layer, p, h, J in zip(net.layers, params, hs, Js):
        J_fast, h_next = layer.jacobian(p, h)
        np.testing.assert_allclose(J_fast, J, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(h_next, layer.apply(p, h), rtol=1e-6)


def test_residual_jacobian_is_identity_plus_alpha_J():
    block = jaxgrad.dense(5, 5, activation="tanh")
    layer = jaxgrad.residual(block, alpha=0.25)
    net = jaxgrad.serial(layer, layer)
    params = net.init(jax.random.key(5))
    x = jnp.arange(5.0) / 5
    J_block = jaxgrad.layer_jacobians(jaxgrad.serial(block), params[:1], x)[0]
    J = jaxgrad.layer_jacobians(net, params, x)[0]
    np.testing.assert_allclose(J, jnp.eye(5) + 0.25 * J_block, rtol=1e-6)


def _build(arch):
    net = jaxgrad.mlp(
        widths=arch["widths"],
        activation=arch["activation"],
        weights=arch["weights"],
        sigma_w=arch["sigma_w"],
        sigma_b=arch["sigma_b"],
    )
    k_params, k_x, k_y = jax.random.split(jax.random.key(arch["seed"]), 3)
    params = net.init(k_params)
    x = jax.random.normal(k_x, (arch["widths"][0],))
    y = jax.random.normal(k_y, (arch["widths"][-1],))
    return net, params, x, lambda out: 0.5 * jnp.sum((out - y) ** 2)


def _close(a, b, tol=1e-4):
    scale = max(float(jnp.max(jnp.abs(b))), 1e-3)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


@settings(max_examples=10)  # each new activation × shape compiles once (~1 s)
@given(testing.network_examples())
def test_error_signal_chain_equals_jax_grad_at_every_layer(example):
    testing.assert_chain_equals_grad(*example)


def test_chain_check_catches_a_chain_that_skips_a_layer(monkeypatch):
    net = jaxgrad.mlp(width=4, depth=3, activation="tanh", sigma_w=1.2, sigma_b=0.2)
    params, x = net.init(jax.random.key(0)), jnp.linspace(-1, 1, 4)
    testing.assert_chain_equals_grad(net, params, x)
    true_signals = jaxgrad.jacobian.error_signals

    def skipping(net, params, x, loss):  # δ⁽⁰⁾ = J₂ᵀJ₃ᵀδ⁽³⁾: J₁ᵀ is dropped
        deltas = true_signals(net, params, x, loss)
        return [deltas[1]] + deltas[1:]

    monkeypatch.setattr(jaxgrad.jacobian, "error_signals", skipping)
    with pytest.raises(AssertionError, match=r"δ\^\(0\)"):
        testing.assert_chain_equals_grad(net, params, x)


@settings(max_examples=10)  # each new activation × shape compiles once (~1 s)
@given(testing.network_examples(), st.integers(0, 2**16))
def test_weight_gradients_from_error_signals_equal_jax_grad(example, seed):
    net, params, x = example
    y = jax.random.normal(jax.random.key(seed), (net.widths[-1],))
    loss = lambda out: 0.5 * jnp.sum((out - y) ** 2)  # noqa: E731
    expected = jax.grad(lambda p: loss(net.apply(p, x)))(params)
    # Each entry is one product g_i h_j after the same δ chain as above: its error is the
    # chain's, 2(n+4)Lε ≤ 2·12·5·1.2e-7 ≈ 1.4e-5 relative to the largest entry, below 1e-4.
    for got, want in zip(jaxgrad.weight_gradients(net, params, x, loss), expected):
        _close(got.W, want.W)
        _close(got.b, want.b)


def test_error_signals_each_layer_equal_jax_grad_of_that_signal():
    net, params, x, loss = _build(
        dict(widths=[4, 5, 5, 3], activation="tanh", weights="gaussian", sigma_w=1.5, sigma_b=0.2, seed=7)
    )
    hs = jaxgrad.forward(net, params, x)
    deltas = jaxgrad.error_signals(net, params, x, loss)
    for ell in range(net.depth + 1):

        def loss_from(h, ell=ell):
            for layer, p in zip(net.layers[ell:], params[ell:]):
                h = layer.apply(p, h)
            return loss(h)

        _close(deltas[ell], jax.grad(loss_from)(hs[ell]))

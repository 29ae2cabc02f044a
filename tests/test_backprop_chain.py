"""The backprop_chain study's own machinery: its draws are `Network.init`'s, its chain is `jaxgrad.error_signals`'s.

The study draws each run of equal layers with one `jax.lax.map` and builds the chain with one
`jax.lax.scan` per run (a program that does not grow with depth); these tests tie both to the
library's per-layer functions, on networks with several runs (rectangular, square, residual,
orthogonal).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from experiments import backprop_chain as study

NETWORKS = {
    "runs_rect_square_rect": dict(widths=[3, 5, 5, 5, 2], activation="tanh", sigma_w=1.3, sigma_b=0.2),
    "orthogonal": dict(width=4, depth=3, activation="swish", weights="orthogonal", sigma_w=1.1),
    "residual": dict(width=4, depth=3, activation="gelu", residual_alpha=0.5, sigma_b=0.1),
}


def _library_draw(net, key):
    """The study's draw before the runs were stacked: `Network.init`, one call per layer."""
    k_params, k_x, k_y = jax.random.split(key, 3)
    dtype = jnp.result_type(float)
    return (
        net.init(k_params),
        jax.random.normal(k_x, (net.widths[0],), dtype),
        jax.random.normal(k_y, (net.widths[-1],), dtype),
    )


def _unstack(net, runs):
    """Per-layer params, as `Network.init` returns them (a leading sample axis kept)."""
    return tuple(
        jax.tree.map(lambda a, k=k: a[:, k], params)
        for (_, _, count), params in zip(net.segments(), runs)
        for k in range(count)
    )


@pytest.mark.parametrize("name", list(NETWORKS))
def test_draw_is_network_init_bit_for_bit(name):
    net = jaxgrad.mlp(**NETWORKS[name])
    keys = jax.random.split(jax.random.key(3), 5)
    want = jax.tree.leaves(jax.jit(jax.vmap(lambda k: _library_draw(net, k)))(keys))
    for loop in (True, False):  # a lax.map loop (CPU) or a vmap batch (accelerators)
        runs, x, y = study._per_sample(lambda k: study.draw(net, k), loop=loop)(keys)
        got = jax.tree.leaves((_unstack(net, runs), x, y))
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype and np.array_equal(a, b), f"loop={loop}"


@pytest.mark.parametrize("name", list(NETWORKS))
def test_chain_and_grad_is_the_library_chain_to_rounding(name):
    """δ⁽⁰⁾ equals `jaxgrad.error_signals`, grad `jax.grad` through `Network.apply`, and |J₁ᵀ|⋯|J_Lᵀ||δ⁽ᴸ⁾| the
    product of `jaxgrad.layer_jacobians`, in float64 to 1e-12 of each vector's largest entry (a few roundings of
    a chain of ≤ 4 products of length ≤ 5)."""
    with jax.enable_x64(True):
        net = jaxgrad.mlp(**NETWORKS[name])
        keys = jax.random.split(jax.random.key(4), 3)
        runs, x, y = study._per_sample(lambda k: study.draw(net, k))(keys)
        got = study._per_sample(lambda r, x, y: study.chain_and_grad(net, r, x, y))(runs, x, y)

        def library(params, x, y):
            def loss(out):
                return 0.5 * jnp.sum((out - y) ** 2)

            deltas = jaxgrad.error_signals(net, params, x, loss)
            abs_chain = jnp.abs(deltas[-1])
            for J in reversed(jaxgrad.layer_jacobians(net, params, x)):
                abs_chain = jnp.abs(J).T @ abs_chain
            grad = jax.grad(lambda x: loss(net.apply(params, x)))(x)
            return dict(chain=deltas[0], grad=grad, abs_chain=abs_chain)

        want = jax.jit(jax.vmap(library))(_unstack(net, runs), x, y)
    for k in ("chain", "grad", "abs_chain"):
        a, b = np.asarray(got[k]), np.asarray(want[k])
        assert a.dtype == np.float64 and a.shape == b.shape == (3, net.widths[0])
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.max(np.abs(b)), err_msg=k)


def test_the_chain_program_does_not_grow_with_depth():
    """One `lax.scan` per run of equal layers: 40 layers trace to the program 4 layers do."""

    def program_size(depth):
        net = jaxgrad.mlp(width=6, depth=depth, activation="tanh")
        keys = jax.random.split(jax.random.key(0), 2)
        runs, x, y = jax.eval_shape(study._per_sample(lambda k: study.draw(net, k)), keys)
        chain = study._per_sample(lambda r, x, y: study.chain_and_grad(net, r, x, y))
        return len(chain.lower(runs, x, y).as_text())

    assert program_size(40) <= 1.05 * program_size(4)

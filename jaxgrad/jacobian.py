r"""Per-layer Jacobians and backprop error signals (seed §2.2–2.5).

$J_\ell = \partial h^{(\ell)}/\partial h^{(\ell-1)}$ and
$δ^{(\ell)} = \partial \mathcal{L}/\partial h^{(\ell)}$ obey the vector chain rule
$δ^{(\ell-1)} = J_\ell^\top δ^{(\ell)}$, hence
$δ^{(0)} = J_1^\top J_2^\top \cdots J_L^\top δ^{(L)}$.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxgrad.layers import HIGHEST, DenseParams, Network, Params, forward

__all__ = ["error_signals", "layer_jacobians", "weight_gradients"]

Array = jax.Array


def layer_jacobians(net: Network, params: Sequence[Params], x: Array) -> list[Array]:
    r"""[J₁, …, J_L], $J_\ell$ = `jax.jacrev` of layer ℓ's apply at its actual input $h^{(\ell-1)}$.

    `params` as ``net.init`` returns them (for a tied network, the one layer's).

    Returns:
      A list of L arrays, $J_\ell$ of shape $(n_\ell, n_{\ell-1})$.
    """
    hs = forward(net, params, x)
    return [jax.jacrev(layer.apply, argnums=1)(p, h) for layer, p, h in zip(net.layers, net.per_layer(params), hs[:-1])]


def error_signals(net: Network, params: Sequence[Params], x: Array, loss: Callable[[Array], Array]) -> list[Array]:
    r"""[δ⁽⁰⁾, …, δ⁽ᴸ⁾] by the chain $δ^{(\ell-1)} = J_\ell^\top δ^{(\ell)}$.

    Arguments:
      loss: scalar function of the output $h^{(L)}$; $δ^{(L)}$ is its gradient.

    Returns:
      A list of L+1 arrays, $δ^{(\ell)}$ of shape $(n_\ell,)$.
    """
    hs = forward(net, params, x)
    jacobians = layer_jacobians(net, params, x)
    deltas = [jax.grad(loss)(hs[-1])]
    for J in reversed(jacobians):
        deltas.append(jnp.matmul(J.T, deltas[-1], precision=HIGHEST))
    return deltas[::-1]


def weight_gradients(net: Network, params: Sequence[Params], x: Array, loss: Callable[[Array], Array]) -> list[Params]:
    r"""∂loss/∂params of every layer, assembled from $δ^{(\ell)}$ and $h^{(\ell-1)}$.

    For a dense layer $h^{(\ell)} = φ(z)$, $z = W h^{(\ell-1)} + b$, the local error
    $g = \partial\mathcal{L}/\partial z = φ′(z) \odot δ^{(\ell)}$ gives
    $\partial\mathcal{L}/\partial W = g\, h^{(\ell-1)\top}$ (an outer product) and
    $\partial\mathcal{L}/\partial b = g$. For residual dense blocks the same holds with
    $g = α φ′(z) \odot δ^{(\ell)}$. Here g is the layer's pullback of $δ^{(\ell)}$ to
    b; other layer types use their full pullback.
    """
    hs = forward(net, params, x)
    deltas = error_signals(net, params, x, loss)
    grads = []
    for layer, p, h, delta in zip(net.layers, net.per_layer(params), hs[:-1], deltas[1:]):
        _, pullback = jax.vjp(lambda q: layer.apply(q, h), p)
        if isinstance(p, DenseParams):
            g = pullback(delta)[0].b
            grads.append(DenseParams(W=jnp.outer(g, h), b=g))
        else:
            grads.append(pullback(delta)[0])
    return grads

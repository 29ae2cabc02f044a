r"""Scalar activations φ and their derivatives φ′ (seed §4.1).

An activation is a scalar JAX function applied elementwise. Its derivative is
never tabulated by hand: φ′ is obtained from JAX's autodiff, so a user-supplied
function works exactly like a built-in one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erf

__all__ = ["ACTIVATIONS", "Activation", "derivative", "get_activation"]


class Activation(NamedTuple):
    r"""A scalar activation φ.

    `homogeneous` marks positively homogeneous φ (φ(ch) = cφ(h) for c > 0, hence
    φ′(ch) = φ′(h)): the engine may then carry the forward signal h⁽ℓ⁾ as a
    direction times a log-scale, so ReLU and linear networks never overflow.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    homogeneous: bool = False


def _linear(x):
    return x


def _leaky_relu(x):
    return jax.nn.leaky_relu(x, negative_slope=0.01)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("linear", _linear, homogeneous=True),
        Activation("tanh", jnp.tanh),
        Activation("relu", jax.nn.relu, homogeneous=True),
        Activation("leaky_relu", _leaky_relu, homogeneous=True),
        Activation("sigmoid", jax.nn.sigmoid),
        Activation("hard_tanh", jax.nn.hard_tanh),
        Activation("erf", erf),
        Activation("gelu", _gelu),
        Activation("selu", jax.nn.selu),
        Activation("softplus", jax.nn.softplus),
        Activation("swish", jax.nn.swish),
    )
}


def get_activation(activation: str | Callable | Activation) -> Activation:
    """Resolves a name, a scalar JAX function or an `Activation`.

    Raises:
      ValueError: for an unknown name or something that is not callable.
    """
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; valid choices are {sorted(ACTIVATIONS)} or any scalar JAX function"
            )
        return ACTIVATIONS[activation]
    if callable(activation):
        name = getattr(activation, "__name__", type(activation).__name__)
        return Activation(name, activation)
    raise ValueError(
        f"`activation` must be a name in {sorted(ACTIVATIONS)} or a scalar JAX function, got {activation!r}"
    )


def derivative(fn: Callable) -> Callable[[jax.Array], jax.Array]:
    r"""Elementwise φ′ of a scalar function φ, by `jax.grad`.

    Returns a function mapping an array z to φ′(z) of the same shape.
    """
    grad = jax.grad(fn)

    @functools.wraps(fn)
    def phi_prime(z):
        z = jnp.asarray(z)
        return jnp.vectorize(grad)(z)

    return phi_prime

r"""Gaussian moments of an activation: $E[φ(\sqrt q z)^2]$, $E[φ′(\sqrt q z)^{2k}]$, z ~ N(0, 1).

Closed forms where they exist (linear, ReLU, leaky ReLU, erf (Williams 1997), hard
tanh), matched by function identity so that a user's own ReLU still works (through
quadrature, exactly: its kink sits on a panel edge); graded Gauss–Legendre quadrature
(`jaxgrad.quadrature`) with φ′ by autodiff for everything else.

Reference:
  C. K. I. Williams, "Computing with infinite networks", NeurIPS 1996.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import erf, erfc

from jaxgrad.activations import ACTIVATIONS, Activation, derivative, get_activation
from jaxgrad.quadrature import gaussian_expectation

__all__ = ["CLOSED_FORMS", "ERF", "GaussianMoments", "HARD_TANH", "gaussian_moments"]

Array = jax.Array


class GaussianMoments(NamedTuple):
    r"""Gaussian expectations of φ at pre-activation variance q (functions of q).

    ``second``: $E[φ(\sqrt q z)^2]$; ``second_over_q``: the same divided by q, computed
    stably as q → 0; ``slope2``, ``slope4``: $E[φ′(\sqrt q z)^2]$, $E[φ′(\sqrt q z)^4]$.
    ``exact`` is True for closed forms, False for quadrature.
    """

    second: Callable[[Array], Array]
    second_over_q: Callable[[Array], Array]
    slope2: Callable[[Array], Array]
    slope4: Callable[[Array], Array]
    exact: bool


def _piecewise_linear(a: float) -> GaussianMoments:
    """φ(u) = max(u, a u): φ² averages to (1 + a²) q/2, φ′² to (1 + a²)/2."""
    c2, c4 = (1 + a * a) / 2, (1 + a**4) / 2
    return GaussianMoments(lambda q: c2 * q, lambda q: c2 + 0 * q, lambda q: c2 + 0 * q, lambda q: c4 + 0 * q, True)


def _erf_second(q):
    return 2 / jnp.pi * jnp.arcsin(2 * q / (1 + 2 * q))


ERF = GaussianMoments(  # Williams 1997: E[erf(√q z)²] = (2/π) arcsin(2q/(1 + 2q))
    _erf_second,
    lambda q: _erf_second(q) / q,
    lambda q: 4 / (jnp.pi * jnp.sqrt(1 + 4 * q)),  # φ′ = (2/√π) e^{-u²}
    lambda q: 16 / (jnp.pi**2 * jnp.sqrt(1 + 8 * q)),
    True,
)


def _hard_tanh_second(q):  # E[min(u², 1)], u ~ N(0, q); c = 1/√(2q)
    c = 1 / jnp.sqrt(2 * q)
    return q * (erf(c) - 2 / jnp.sqrt(jnp.pi) * c * jnp.exp(-c * c)) + erfc(c)


HARD_TANH = GaussianMoments(
    _hard_tanh_second,
    lambda q: _hard_tanh_second(q) / q,
    lambda q: erf(1 / jnp.sqrt(2 * q)),  # P(|u| < 1)
    lambda q: erf(1 / jnp.sqrt(2 * q)),
    True,
)

CLOSED_FORMS = {
    ACTIVATIONS["linear"].fn: _piecewise_linear(1.0),
    ACTIVATIONS["relu"].fn: _piecewise_linear(0.0),
    ACTIVATIONS["leaky_relu"].fn: _piecewise_linear(0.01),
    ACTIVATIONS["erf"].fn: ERF,
    ACTIVATIONS["hard_tanh"].fn: HARD_TANH,
}


@functools.lru_cache(maxsize=256)
def gaussian_moments(activation: str | Callable | Activation) -> GaussianMoments:
    """The `GaussianMoments` of an activation: a closed form for the built-ins that
    have one (matched by function, not name), quadrature with φ′ by autodiff otherwise."""
    act = get_activation(activation)
    if act.fn in CLOSED_FORMS:
        return CLOSED_FORMS[act.fn]
    phi, phi_prime = act.fn, derivative(act.fn)

    def second_over_q(q):
        s = jnp.sqrt(q)[..., None]
        return gaussian_expectation(lambda z: (phi(s * z) / s) ** 2, jnp.ones_like(q))

    return GaussianMoments(
        lambda q: gaussian_expectation(lambda u: phi(u) ** 2, q),
        second_over_q,
        lambda q: gaussian_expectation(lambda u: phi_prime(u) ** 2, q),
        lambda q: gaussian_expectation(lambda u: phi_prime(u) ** 4, q),
        False,
    )

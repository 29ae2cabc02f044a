r"""The correlation map of two inputs and its depth scale $ξ_c$ (Poole et al. 2016; Schoenholz et al. 2017).

Two inputs sent through the same random network $h^{(\ell)} = φ(W^{(\ell)}h^{(\ell-1)} + b^{(\ell)})$
have, at large width and with both signals at the length map's fixed point $q^*$,
jointly Gaussian pre-activations $(u_1, u_2)$ of variance $q^*$ and correlation
$c^{(\ell)}$, which follows the correlation map

$$c^{(\ell+1)} = C(c^{(\ell)}) = \frac{σ_w^2\,E[φ(u_1)φ(u_2)] + σ_b^2}{q^*}, \qquad
u_1 = \sqrt{q^*}\,z_1,\; u_2 = \sqrt{q^*}\,(c z_1 + \sqrt{1-c^2}\,z_2).$$

$C(1) = 1$ always. Its slope is, by Price's theorem,
$C′(c) = σ_w^2 E[φ′(u_1)φ′(u_2)]$; at $c = 1$ this is $χ_1$. In the ordered phase
($χ_1 < 1$) $c^* = 1$ is the stable fixed point: inputs become identical with depth.
In the chaotic phase ($χ_1 > 1$) it is unstable and the iterates settle at the largest
fixed point $c^* < 1$. Either way perturbations of $c^*$ decay as $e^{-\ell/ξ_c}$ with

$$χ_c = C′(c^*) = σ_w^2 E[φ′(u_1)φ′(u_2)]\big|_{c^*}, \qquad ξ_c = -1/\ln χ_c,$$

which diverges at the order/chaos boundary $χ_1 = 1$. Schoenholz et al. found that a
network trains only if its depth is below about $6ξ_c$ (`experiments/trainability.py`).

Numerics: the two-dimensional expectation is a tensor-product composite Gauss–Legendre
rule (`jaxgrad.quadrature.graded_legendre(order=10, levels=3, cutoff=8)`, 220 nodes per
axis), accurate to about 1e-12 relative in float64 for tanh-like φ at $q^* \lesssim 10$;
a kink of φ off the origin (e.g. ReLU's, along $c z_1 + \sqrt{1-c^2} z_2 = 0$) costs
accuracy, but in the ordered phase, where $c^* = 1$, $χ_c = χ_1$ comes from the 1-D
moments (`jaxgrad.theory.moments`, exact for ReLU). $c^*$ is found by locating the
largest point of a 65-point grid on $[-1, 1]$ where $C(c) > c$ and bisecting (64
halvings) up to the next grid point, with the implicit-function derivative. Everything
is a JAX function of σ_w, σ_b (broadcast elementwise; jit and vmap work); the
activation is static. $q^*$ is the length map's fixed point reached from $q = 1$
(`jaxgrad.theory.q_star`); it is unique for the bounded activations where this is used.

References:
  B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein, S. Ganguli, "Exponential
  expressivity in deep neural networks through transient chaos", NeurIPS 2016.
  S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, "Deep information
  propagation", ICLR 2017, eqs. (9)-(13).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxgrad.activations import Activation, derivative
from jaxgrad.quadrature import graded_legendre
from jaxgrad.theory._checks import check_positive_integer
from jaxgrad.theory.mean_field import (
    DepthScales,
    _clip_q,
    _depth,
    _depth_scales,
    _float,
    _q_star,
    _resolve,
    bisect,
    check_moments,
    implicit_root,
)
from jaxgrad.theory.moments import gaussian_moments

__all__ = ["c_star", "chi_c", "correlation_map", "correlation_transient", "xi_c"]

Array = jax.Array
GRID = 65  # grid on [-1, 1] that brackets the largest fixed point below 1


@functools.cache
def _rule_2d():
    rule = graded_legendre(order=10, levels=3, cutoff=8)
    return rule.nodes, rule.weights


def _pair_expectation(f, q, c):
    r"""$E[f(u_1)f(u_2)]$, $(u_1, u_2)$ of variance q and correlation c (scalars, or arrays broadcast)."""
    nodes, weights = _rule_2d()
    q, c = jnp.broadcast_arrays(*_float(q, c))
    z = jnp.asarray(nodes, q.dtype)
    w = jnp.asarray(weights, q.dtype)
    root_q = jnp.sqrt(q)[..., None, None]
    c_ = c[..., None, None]
    s = jnp.sqrt(jnp.clip((1 - c_) * (1 + c_), 0, None))
    u1 = root_q * z[:, None]
    u2 = root_q * (c_ * z[:, None] + s * z[None, :])
    return jnp.einsum("i,j,...ij->...", w, w, f(u1) * f(u2))


def _map(act: Activation, sw2, sb2, q, c):
    """The correlation map at variance q, normalised by its value at c = 1 (which is q at q = q*)."""
    phi = act.fn
    top = sw2 * _pair_expectation(phi, q, c) + sb2
    bottom = sw2 * _pair_expectation(phi, q, jnp.ones_like(c)) + sb2
    return top / bottom


def _slope(act: Activation, sw2, q, c):
    return sw2 * _pair_expectation(derivative(act.fn), q, c)


def _fixed_point(act: Activation, sigma_w, sigma_b):
    """(q*, c*, χ₁, χ_c) with q* from q0 = 1."""
    q = _clip_q(_q_star(act, sigma_w, sigma_b, 1.0))
    sigma_w, sigma_b, q = _float(sigma_w, sigma_b, q)
    sw2, sb2 = sigma_w**2, sigma_b**2
    chi_1 = sw2 * gaussian_moments(act).slope2(q)
    shape = q.shape

    def excess(c, sw2=sw2, sb2=sb2, q=q):  # C(c) − c; the stable c* < 1 is its largest + → − crossing
        extra = c.ndim - q.ndim  # a trailing grid axis on c
        sw2, sb2, q = (x.reshape(x.shape + (1,) * extra) for x in (sw2, sb2, q))
        return _map(act, sw2, sb2, q, c) - c

    def excess_value(c):
        return excess(c, *(jax.lax.stop_gradient(x) for x in (sw2, sb2, q)))

    grid = jnp.linspace(-1.0, 1.0, GRID, dtype=q.dtype)[:-1]
    above = excess_value(jnp.broadcast_to(grid, (*shape, GRID - 1))[..., :] + 0 * q[..., None]) > 0
    k = jnp.where(above.any(-1), GRID - 2 - jnp.argmax(above[..., ::-1], axis=-1), 0)
    grid = jnp.linspace(-1.0, 1.0, GRID, dtype=q.dtype)
    lo, hi = grid[k], grid[k + 1]
    ordered = chi_1 <= 1
    c = bisect(excess_value, lo, hi)
    c = implicit_root(excess, jnp.where(ordered, 0.5, c))  # (0.5: any finite point off the branch taken)
    c = jnp.where(ordered, 1.0, c)
    chi = jnp.where(ordered, chi_1, _slope(act, sw2, q, jnp.where(ordered, 0.0, c)))
    return q, c, chi_1, chi


_solve = jax.jit(_fixed_point, static_argnums=0)  # one compilation serves c_star, chi_c, xi_c and depth_scales


def xi_c_of(act: Activation, sigma_w, sigma_b):
    """$ξ_c$ for a resolved activation, traceable (used by `depth_scales`)."""
    return _depth(_solve(act, sigma_w, sigma_b)[3])


def _checked(activation, sigma_w, sigma_b) -> Activation:
    act = _resolve(activation, sigma_w, sigma_b)
    check_moments(act, 1.0)
    return act


def c_star(activation: str | Callable | Activation, sigma_w: ArrayLike, sigma_b: ArrayLike) -> Array:
    r"""The stable fixed point $c^*$ of the correlation map $C$ (Poole et al. 2016; Schoenholz et al. 2017).

    1 in the ordered phase ($χ_1 \le 1$); in the chaotic phase the largest fixed point
    below 1, the limit of the iterates $c^{(\ell)}$ from any $c^{(1)} \in (c^*, 1)$. The
    signals sit at $q^*$ (as `q_star` from q0 = 1). Example: tanh, σ_b² = 0.05,
    σ_w² = 2 gives $c^* \approx 0.744$.

    Arguments:
      activation: name, scalar JAX function or `Activation`.
      sigma_w, sigma_b: non-negative scalars or arrays (broadcast); note: not squared.

    Returns:
      $c^*$ with the broadcast shape of σ_w and σ_b.
    """
    return _solve(_checked(activation, sigma_w, sigma_b), sigma_w, sigma_b)[1]


def chi_c(activation: str | Callable | Activation, sigma_w: ArrayLike, sigma_b: ArrayLike) -> Array:
    r"""$χ_c = σ_w^2 E[φ′(u_1)φ′(u_2)]$ at $c^*$: the slope of the correlation map at its stable fixed point.

    Equal to $χ_1$ in the ordered phase ($c^* = 1$); below 1 on both sides of the
    order/chaos boundary, where it reaches 1 (Schoenholz et al. 2017, eq. 13).
    Arguments as in `c_star`.
    """
    return _solve(_checked(activation, sigma_w, sigma_b), sigma_w, sigma_b)[3]


def xi_c(activation: str | Callable | Activation, sigma_w: ArrayLike, sigma_b: ArrayLike) -> Array:
    r"""The correlation depth scale $ξ_c = -1/\ln χ_c$: $|c^{(\ell)} - c^*| \propto e^{-\ell/ξ_c}$.

    Schoenholz et al. 2017, eq. (13); inf at the order/chaos boundary. Also
    ``depth_scales(...).xi_c``. Arguments as in `c_star`.
    """
    return xi_c_of(_checked(activation, sigma_w, sigma_b), sigma_w, sigma_b)


@functools.partial(jax.jit, static_argnums=0)
def _correlation_map(act, sigma_w, sigma_b, c):
    q = _clip_q(_q_star(act, sigma_w, sigma_b, 1.0))
    sigma_w, sigma_b, q = _float(sigma_w, sigma_b, q)
    return _map(act, sigma_w**2, sigma_b**2, q, c)


def correlation_map(
    activation: str | Callable | Activation, sigma_w: ArrayLike, sigma_b: ArrayLike, c: ArrayLike
) -> Array:
    r"""One step of the correlation map, $C(c) = (σ_w^2 E[φ(u_1)φ(u_2)] + σ_b^2)/q^*$, at $q^*$.

    Arguments:
      activation, sigma_w, sigma_b: as in `c_star`.
      c: correlation(s) in [−1, 1] (broadcast with σ_w, σ_b).
    """
    act = _checked(activation, sigma_w, sigma_b)
    if not isinstance(c, jax.core.Tracer) and not np.all(np.abs(np.asarray(c, np.float64)) <= 1):
        raise ValueError(f"`c` must lie in [-1, 1], got c={c!r}")
    return _correlation_map(act, sigma_w, sigma_b, c)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _transient(act, sigma_w, sigma_b, c1, depth):
    q = _clip_q(_q_star(act, sigma_w, sigma_b, 1.0))
    sigma_w, sigma_b, q, c1 = _float(sigma_w, sigma_b, q, c1)

    def layer(c, _):
        return _map(act, sigma_w**2, sigma_b**2, q, c), c

    return jax.lax.scan(layer, c1, None, length=depth)[1]


def correlation_transient(
    activation: str | Callable | Activation, sigma_w: ArrayLike, sigma_b: ArrayLike, c1: ArrayLike, depth: int
) -> Array:
    r"""$c^{(\ell)}$ for ℓ = 1..depth from $c^{(1)}$ = `c1`, iterating $C$ at $q^*$ (shape (depth,)).

    The prediction for two inputs whose first-layer pre-activations both have variance
    $q^*$ and correlation c1. Arguments as in `correlation_map` (scalars); depth a
    positive Python int.
    """
    act = _checked(activation, sigma_w, sigma_b)
    depth = check_positive_integer("depth", depth, static=True)
    return _transient(act, sigma_w, sigma_b, c1, depth)


def depth_scales(
    activation: str | Callable | Activation, sigma_w: ArrayLike, sigma_b: ArrayLike, *, q0: ArrayLike = 1.0
) -> DepthScales:
    r"""$ξ_q = -1/\ln χ_q$, $ξ_∇ = -1/\ln χ_1$ and $ξ_c = -1/\ln χ_c$ (Schoenholz et al. 2017, eqs. 6, 13 and 15).

    $χ_q = V′(q^*) = σ_w^2\,\partial_q E[φ(\sqrt q z)^2]|_{q^*} = σ_w^2 E[φ′^2 + φφ″]$, the
    linearisation of the length map at the fixed point reached from input variance `q0`
    (by autodiff in q), and $χ_1$ as in `chi1`. For ReLU both are σ_w²/2. At tanh, σ_b = 0, σ_w = 1 both are 1
    (ξ = inf): the approach to q* = 0 is algebraic, not exponential.

    $ξ_c$ is `jaxgrad.theory.xi_c`: the slope $χ_c$ of the correlation map at its stable
    fixed point $c^*$, with the signals at the fixed point $q^*$ reached from q = 1 (not
    from `q0`); in the ordered phase $c^* = 1$ and $ξ_c = ξ_∇$.

    Returns:
      `DepthScales(q, gradient, xi_c)`.
    """
    act = _resolve(activation, sigma_w, sigma_b, q0)
    xi_q, xi_gradient = _depth_scales(act, sigma_w, sigma_b, q0)
    return DepthScales(xi_q, xi_gradient, xi_c_of(act, sigma_w, sigma_b))

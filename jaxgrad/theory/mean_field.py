r"""Mean-field signal propagation through $h^{(\ell)} = φ(W^{(\ell)} h^{(\ell-1)} + b^{(\ell)})$.

At large width the pre-activations $z^{(\ell)}_i$ are Gaussian with variance $q^{(\ell)}$,
which follows the length map (Poole et al. 2016)

$$q^{(\ell+1)} = V(q^{(\ell)}) = σ_w^2\,E[φ(\sqrt{q^{(\ell)}} z)^2] + σ_b^2, \qquad z \sim N(0, 1),$$

and a small error signal or input perturbation is multiplied in mean square by
$χ^{(\ell)} = σ_w^2 E[φ′(\sqrt{q^{(\ell)}} z)^2]$ per layer: $E\|δ^{(\ell-1)}\|^2 = χ\,E\|δ^{(\ell)}\|^2$
and $E\|J_\ell \cdots J_1 u\|^2 = \prod_\ell χ^{(\ell)}$ (Schoenholz et al. 2017). At the
fixed point $q^* = V(q^*)$ this is $χ_1$; χ₁ < 1 is the ordered phase (vanishing
gradients), χ₁ > 1 the chaotic one (exploding), χ₁ = 1 the critical line.

One convention for the start, everywhere in `jaxgrad.theory`: ``q0`` is the variance
per coordinate of the network's *input* $h^{(0)}$, exactly as in `jaxgrad.simulate`, so the
first pre-activations have $q^{(1)} = σ_w^2 q_0 + σ_b^2$ (and $q^{(\ell+1)} = V(q^{(\ell)})$).
Where the length map has several stable fixed points (GELU at σ_w = 1.5, σ_b = 0.1: one
at q ≈ 0.0242, and q = ∞ above an unstable one at q ≈ 1.315) every function evaluates at
the fixed point the iterates from that start converge to; `fixed_points` lists them all.

Gaussian expectations use `jaxgrad.quadrature` (1e-13 in float64), or exact closed
forms for linear, ReLU, leaky ReLU, erf and hard tanh. Everything here is a JAX
function of σ_w, σ_b (scalars or arrays, broadcast elementwise; jit, vmap and first
derivatives work); the activation is static.

References:
  B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein, S. Ganguli, "Exponential
  expressivity in deep neural networks through transient chaos", NeurIPS 2016.
  S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, "Deep information
  propagation", ICLR 2017.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxgrad.activations import Activation, derivative, get_activation
from jaxgrad.quadrature import tail_fraction
from jaxgrad.theory._checks import check_nonnegative, check_positive, check_positive_integer, concrete
from jaxgrad.theory.moments import gaussian_moments
from jaxgrad.theory.random_matrix import LogGain

__all__ = [
    "BISECTIONS",
    "DepthScales",
    "FIXED_POINT_GRID",
    "FixedPoint",
    "JUMP",
    "Propagation",
    "SCAN_POINTS",
    "bisect",
    "check_moments",
    "chi1",
    "critical_sigma_w",
    "fixed_points",
    "implicit_root",
    "mean_field_log_gain",
    "q_star",
    "signal_propagation",
]

Array = jax.Array
Q_MIN, Q_MAX = 1e-20, 1e20  # the solvers' range of q; q* outside it is reported as 0 or inf
BISECTIONS = 64  # halves a bracket of width 92 (in ln q) below float64 resolution


def _float(*values):
    dtype = jnp.result_type(*values, float)
    return [jnp.asarray(v, dtype) for v in values]


def bisect(fun: Callable[[ArrayLike], Array], lo: ArrayLike, hi: ArrayLike, steps: int = BISECTIONS) -> Array:
    """Midpoint of a bracket of a sign change of the elementwise `fun`, after `steps` halvings.

    Fixed iteration count in a `lax.fori_loop`: no data-dependent Python control flow.
    """
    f_lo = fun(lo)
    lo, hi = (jnp.broadcast_to(x, f_lo.shape).astype(f_lo.dtype) for x in (lo, hi))

    def halve(_, bracket):
        lo, hi = bracket
        mid = (lo + hi) / 2
        same = jnp.sign(fun(mid)) == jnp.sign(f_lo)
        return jnp.where(same, mid, lo), jnp.where(same, hi, mid)

    lo, hi = cast("tuple[Array, Array]", jax.lax.fori_loop(0, steps, halve, (lo, hi)))  # (fori_loop is unannotated)
    return (lo + hi) / 2


def implicit_root(fun: Callable[[Array], Array], x: Array) -> Array:
    r"""Returns the root x of `fun` unchanged in value, with the derivative of the
    implicit-function theorem, $\dot x = -\dot{\text{fun}}/\partial_x\text{fun}$ (exact to first order)."""
    x = jax.lax.stop_gradient(x)
    g, g_x = jax.jvp(fun, (x,), (jnp.ones_like(x),))
    g_x = jax.lax.stop_gradient(g_x)
    ok = jnp.isfinite(g) & jnp.isfinite(g_x) & (g_x != 0)
    g = jnp.where(ok, g, 0)
    return x - (g - jax.lax.stop_gradient(g)) / jnp.where(ok, g_x, 1)


SCAN_POINTS = 256  # grid from the start to the end of the range: a step of <= 0.36 in ln q


def _first_crossing(fun: Callable[[Array], Array], x0: Array, x_end: Array, g0: Array, tol):
    """(found, lo, hi): the first cell of the grid x0 + (x_end − x0)·k/K, k = 0..K, on which
    `fun` takes the sign opposite to ``g0 = fun(x0)`` by more than `tol` (values within `tol`
    of 0, e.g. tanh's ln(V/q) ≈ −2q as q → 0, are an asymptotic approach, not a crossing),
    scanned in a `lax.fori_loop` (O(1) memory in K)."""
    step = (x_end - x0) / SCAN_POINTS

    def scan(k, carry):
        found, lo, hi = carry
        x = x0 + step * k
        g = fun(x)
        cross = ~found & (jnp.sign(g) == -jnp.sign(g0)) & (jnp.abs(g) > tol)
        return found | cross, jnp.where(cross, x - step, lo), jnp.where(cross, x, hi)

    return jax.lax.fori_loop(1, SCAN_POINTS + 1, scan, (jnp.zeros(g0.shape, bool), x0, x_end))


def _log_ratio(m, sw2, sb2):
    """G(x) = ln(V(q)/q) at q = e^x: the fixed points of the length map are its roots."""
    return lambda x: jnp.log(sw2 * m.second_over_q(jnp.exp(x)) + sb2 * jnp.exp(-x))


def _first_layer(sigma_w, sigma_b, q0):
    r"""$q^{(1)} = σ_w^2 q_0 + σ_b^2$: the pre-activation variance of layer 1 for input variance q0."""
    return sigma_w**2 * q0 + sigma_b**2


@functools.partial(jax.jit, static_argnums=0)
def _q_star(act: Activation, sigma_w, sigma_b, q0):
    m = gaussian_moments(act)
    sigma_w, sigma_b, q0 = _float(sigma_w, sigma_b, q0)
    sw2, sb2 = sigma_w**2, sigma_b**2
    q1 = _first_layer(sigma_w, sigma_b, q0)
    log_ratio = _log_ratio(m, sw2, sb2)
    log_ratio_value = _log_ratio(m, jax.lax.stop_gradient(sw2), jax.lax.stop_gradient(sb2))  # bisection: no derivatives

    tol = 64 * jnp.finfo(q1.dtype).eps
    x1 = jnp.log(q1)
    g1 = log_ratio_value(x1)
    up = g1 > 0  # V(q1) > q1: the iterates grow towards the first fixed point above q1
    x_end = jnp.where(up, math.log(Q_MAX), math.log(Q_MIN))
    at_q1 = jnp.abs(g1) <= tol  # q1 itself is fixed (ReLU/linear at criticality)
    found, lo, hi = _first_crossing(log_ratio_value, x1, x_end, g1, tol)
    diverges = ~at_q1 & ~found & up
    collapses = ~at_q1 & ~found & ~up
    regular = ~(at_q1 | diverges | collapses)
    x = bisect(log_ratio_value, lo, hi)
    x = implicit_root(log_ratio, jnp.where(regular, x, x1))
    return jnp.where(at_q1, q1, jnp.where(diverges, jnp.inf, jnp.where(collapses, 0.0, jnp.exp(x))))


def _clip_q(q):
    return jnp.clip(q, Q_MIN, Q_MAX)


@functools.partial(jax.jit, static_argnums=0)
def _chi1(act: Activation, sigma_w, sigma_b, q0):
    q = _q_star(act, sigma_w, sigma_b, q0)
    sigma_w, q = _float(sigma_w, q)
    return sigma_w**2 * gaussian_moments(act).slope2(_clip_q(q))


@functools.partial(jax.jit, static_argnums=0)
def _tail_fractions(act: Activation, q):
    phi, phi_prime = act.fn, derivative(act.fn)
    return jnp.stack([tail_fraction(lambda u: phi(u) ** 2, q), tail_fraction(lambda u: phi_prime(u) ** 2, q)], -1)


def check_moments(act: Activation, q: ArrayLike) -> None:
    """Raises ValueError if $E[φ(u)^2]$ or $E[φ′(u)^2]$, u ~ N(0, q), is not finite (concrete q only)."""
    if gaussian_moments(act).exact or not concrete(q):
        return
    q = np.asarray(q, dtype=np.float64)
    q = q[np.isfinite(q) & (q > 0)]
    if q.size == 0:
        return
    with jax.ensure_compile_time_eval():  # concrete even when called while tracing
        fractions = np.asarray(_tail_fractions(act, jnp.asarray(np.clip(q, Q_MIN, Q_MAX))))
    bad = ~np.isfinite(fractions) | (fractions > 1e-6)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        which = ("E[φ(u)²]", "E[φ′(u)²]")[col]
        raise ValueError(
            f"`activation` {act.name!r} has no finite Gaussian moment {which} for u ~ N(0, q) at "
            f"q={q[row]:.4g}: the integrand does not decay (the tail |u| > 8√q carries a share "
            f"{fractions[row, col]:.3g} of it). Mean-field theory needs E[φ(u)²] < ∞."
        )


def _resolve(activation, sigma_w, sigma_b, q0=1.0) -> Activation:
    """The activation, after the eager checks of σ_w, σ_b, q0 and of φ's moments at $q^{(1)}$."""
    act = get_activation(activation)
    check_nonnegative("sigma_w", sigma_w)
    check_nonnegative("sigma_b", sigma_b)
    check_positive("q0", q0)
    if concrete(sigma_w, sigma_b, q0):
        check_moments(
            act,
            _first_layer(np.asarray(sigma_w, np.float64), np.asarray(sigma_b, np.float64), np.asarray(q0, np.float64)),
        )
    return act


def q_star(
    activation: str | Callable | Activation, sigma_w: ArrayLike, sigma_b: ArrayLike, *, q0: ArrayLike = 1.0
) -> Array:
    r"""Fixed point $q^*$ of the length map $q \mapsto σ_w^2 E[φ(\sqrt q z)^2] + σ_b^2$ (Poole et al. 2016).

    Defined as the limit of the iterates $q^{(\ell)}$ of a network whose input has variance
    `q0` per coordinate (the engine's ``q0``), i.e. started from $q^{(1)} = σ_w^2 q_0 + σ_b^2$.
    The length map is increasing, so they move monotonically to the nearest fixed point in
    the direction of $V(q^{(1)}) - q^{(1)}$; with several stable fixed points this is the one
    whose basin holds $q^{(1)}$ (`fixed_points` lists all). Found by scanning
    $\ln(V(q)/q)$ on 256 steps in $\ln q$ from $q^{(1)}$ towards the end of
    $[10^{-20}, 10^{20}]$ for its first sign change, then 64 bisections of that cell (all in
    `lax.fori_loop`), with derivatives by the implicit-function theorem. Two fixed points
    closer than a factor $e^{0.36}$ in q can be stepped over together.

    Example: GELU at (σ_w, σ_b) = (1.5, 0.1) has a stable fixed point at q ≈ 0.0242, an
    unstable one at q ≈ 1.315 and diverges above it: ``q_star("gelu", 1.5, 0.1, q0=0.01)``
    is 0.0242 ($q^{(1)} = 0.0325$) and ``q_star("gelu", 1.5, 0.1)`` (q0 = 1,
    $q^{(1)} = 2.26$) is inf.

    Special cases, handled and returned exactly:
      * q* = 0 when the iterates collapse, e.g. tanh or erf with σ_b = 0 and
        $σ_w φ′(0) \le 1$ (tanh: σ_w ≤ 1; at σ_w = 1 the approach is algebraic,
        $q^{(\ell)} \approx 1/(2\ell)$), and ReLU with σ_b = 0, σ_w² < 2.
      * q* = inf when they diverge: ReLU/linear above criticality (ReLU: σ_w² > 2; below
        it, with σ_b > 0, $q^* = σ_b^2/(1 - σ_w^2/2)$ is finite).
      * q* = $q^{(1)} = σ_w^2 q_0$ when every q is fixed: homogeneous φ with σ_b = 0 at
        criticality (ReLU σ_w² = 2, linear σ_w = 1). "Equal" means $|\ln(V(q)/q)| \le 64\,ε$.

    Arguments:
      activation: name, scalar JAX function or `Activation`.
      sigma_w, sigma_b: non-negative scalars or arrays (broadcast).
      q0: variance per coordinate of the input $h^{(0)}$, positive (as in `jaxgrad.simulate`).

    Returns:
      q* with the broadcast shape of the arguments.

    Raises:
      ValueError: (concrete arguments only) a negative or non-finite σ, q0 ≤ 0, or an
        activation with no finite Gaussian second moment.
    """
    act = _resolve(activation, sigma_w, sigma_b, q0)
    q = _q_star(act, sigma_w, sigma_b, q0)
    check_moments(act, q)
    return q


class FixedPoint(NamedTuple):
    """A fixed point $q = V(q)$ of the length map and whether the iterates near it converge to it."""

    q: float
    stable: bool


FIXED_POINT_GRID = 4097  # points on ln q ∈ [ln 1e-20, ln 1e20]: a step of 0.0225 (2.3 % in q)


@functools.partial(jax.jit, static_argnums=0)
def _log_ratio_on(act: Activation, sigma_w, sigma_b, x):
    sigma_w, sigma_b, x = _float(sigma_w, sigma_b, x)
    return _log_ratio(gaussian_moments(act), sigma_w**2, sigma_b**2)(x)


@functools.partial(jax.jit, static_argnums=0)
def _root_between(act: Activation, sigma_w, sigma_b, lo, hi):
    sigma_w, sigma_b, lo, hi = _float(sigma_w, sigma_b, lo, hi)
    return jnp.exp(bisect(_log_ratio(gaussian_moments(act), sigma_w**2, sigma_b**2), lo, hi))


def fixed_points(activation: str | Callable | Activation, sigma_w: float, sigma_b: float) -> list[FixedPoint]:
    r"""Every fixed point of the length map $V(q) = σ_w^2 E[φ(\sqrt q z)^2] + σ_b^2$, ascending, with its stability.

    A finite $q^* > 0$ is stable iff $V′(q^*) < 1$ ($χ_q < 1$, Schoenholz et al. 2017), i.e.
    iff $\ln(V(q)/q)$ falls through 0 there. The ends of the range are listed when the
    iterates can end there (what `q_star` reports as 0 or inf): q = 0 when it is a fixed
    point ($V(0) = 0$: σ_b = 0 and φ(0) = 0), stable iff the iterates below $10^{-20}$
    shrink; q = inf, stable, when they grow without bound above the last finite one. Which
    stable point a network reaches depends on its start: `q_star(..., q0=...)`.

    Found on a grid of 4097 points in ln q over $[10^{-20}, 10^{20}]$ (two fixed points
    within 2.3 % of each other can be missed together, as can a tangential one), each
    sign change refined by 64 bisections, in float64.

    Example: GELU at (σ_w, σ_b) = (1.5, 0.1) gives
    ``[FixedPoint(q=0.0242…, stable=True), FixedPoint(q=1.315…, stable=False), FixedPoint(q=inf, stable=True)]``.

    Arguments:
      activation: name, scalar JAX function or `Activation`.
      sigma_w, sigma_b: non-negative Python scalars (concrete; not traced).

    Returns:
      A list of `FixedPoint(q, stable)`. Empty when every q > 0 is fixed (positively
      homogeneous φ with σ_b = 0 at criticality: ReLU σ_w² = 2, linear σ_w = 1).
    """
    act = _resolve(activation, sigma_w, sigma_b)
    if not concrete(sigma_w, sigma_b) or np.ndim(sigma_w) or np.ndim(sigma_b):
        raise ValueError(f"`fixed_points` takes concrete scalars, got sigma_w={sigma_w!r}, sigma_b={sigma_b!r}")
    sigma_w, sigma_b = float(sigma_w), float(sigma_b)
    with jax.enable_x64(True):
        x = np.linspace(math.log(Q_MIN), math.log(Q_MAX), FIXED_POINT_GRID)
        g = np.asarray(_log_ratio_on(act, sigma_w, sigma_b, jnp.asarray(x)), np.float64)
        tol = 64 * np.finfo(np.float64).eps
        if np.all(np.abs(g) <= tol):
            return []
        points = []
        if sigma_b == 0.0 and float(act.fn(jnp.zeros(()))) == 0.0:
            points.append(FixedPoint(0.0, bool(g[0] < 0)))
        signed = np.nonzero(np.abs(g) > tol)[0]
        for i, j in zip(signed, signed[1:]):
            if np.sign(g[i]) != np.sign(g[j]):
                q = float(_root_between(act, sigma_w, sigma_b, x[i], x[j]))
                points.append(FixedPoint(q, bool(g[i] > 0)))
        if g[signed[-1]] > 0:
            points.append(FixedPoint(math.inf, True))
    return points


def chi1(
    activation: str | Callable | Activation, sigma_w: ArrayLike, sigma_b: ArrayLike, *, q0: ArrayLike = 1.0
) -> Array:
    r"""$χ_1 = σ_w^2 E[φ′(\sqrt{q^*} z)^2]$, the per-layer factor of $E\|δ\|^2$ (Schoenholz et al. 2017).

    Evaluated at the `q_star` fixed point reached from an input of variance `q0` (so at
    GELU (1.5, 0.1) it is 0.596 from q0 = 0.01 and σ_w²/2 = 1.125 from q0 = 1), as the limit
    q → q*: with q* = 0 this is
    $σ_w^2 φ′(0)^2$ (tanh: σ_w²), and for positively homogeneous φ, where
    $φ′(\sqrt q z) = φ′(z)$, it does not depend on q at all (ReLU: σ_w²/2, also when
    q* is 0 or ∞). Arguments and errors as in `q_star`.
    """
    act = _resolve(activation, sigma_w, sigma_b, q0)
    return _chi1(act, sigma_w, sigma_b, q0)


JUMP = 1e-2  # |ln χ₁| at the bisection's end above which χ₁ jumped over 1 (a change of branch)


@functools.partial(jax.jit, static_argnums=0)
def _critical_sigma_w(act: Activation, sigma_b, q0):
    sigma_b, q0 = _float(sigma_b, q0)

    def log_chi(y, sigma_b=sigma_b):
        return jnp.log(_chi1(act, jnp.exp(y), sigma_b, q0))

    def log_chi_value(y):
        return log_chi(y, jax.lax.stop_gradient(sigma_b))

    y_lo, y_hi = math.log(1e-3), math.log(1e3)
    bracketed = (log_chi_value(jnp.full_like(sigma_b, y_lo)) < 0) & (log_chi_value(jnp.full_like(sigma_b, y_hi)) > 0)
    y = bisect(log_chi_value, y_lo, y_hi)
    continuous = jnp.abs(log_chi_value(y)) <= JUMP
    y = implicit_root(log_chi, y)
    return jnp.where(bracketed & continuous, jnp.exp(y), jnp.nan)


def critical_sigma_w(activation: str | Callable | Activation, sigma_b: ArrayLike, *, q0: ArrayLike = 1.0) -> Array:
    r"""The σ_w with $χ_1(σ_w, σ_b) = 1$: the order-to-chaos boundary (Poole et al. 2016; Schoenholz et al. 2017).

    Bisection of $\ln χ_1$ in $\ln σ_w$ on $[10^{-3}, 10^3]$, assuming one crossing
    (true for the built-in activations), with χ₁ at the fixed point reached from an input of
    variance `q0` (as in `chi1`). NaN if χ₁ − 1 has no sign change there, or if it changes
    sign by a jump (|ln χ₁| > 0.01 at the end of the bisection): the fixed point reached
    switches branch, as for GELU at σ_b = 0.1, whose χ₁ jumps from 0.55 to 1.0 near
    σ_w = 1.42 when $q^{(1)}$ crosses the unstable fixed point; there is no critical line.
    Known values: ReLU √2 (any σ_b), linear 1, tanh 1 and erf √π/2 at σ_b = 0 (where
    $σ_w φ′(0) = 1$). At σ_b = 0 for odd φ, χ₁ − 1 leaves the critical point
    quadratically on the chaotic side, so float32 locates it only to about 1e-3
    (float64: 1e-7) and its derivative there is not defined.

    Arguments:
      activation: name, scalar JAX function or `Activation`.
      sigma_b: non-negative scalar or array.
      q0: input variance per coordinate, positive.
    """
    act = get_activation(activation)
    check_nonnegative("sigma_b", sigma_b)
    check_positive("q0", q0)
    check_moments(act, q0)
    return _critical_sigma_w(act, sigma_b, q0)


class DepthScales(NamedTuple):
    r"""Depth scales $ξ = -1/\ln χ$: perturbations of q decay as $e^{-\ell/ξ_q}$,
    $E\|δ^{(\ell)}\|^2$ as $e^{-(L-\ell)/ξ_∇}$, and the correlation of two inputs
    approaches $c^*$ as $e^{-\ell/ξ_c}$ (`jaxgrad.theory.correlation`). Negative values are
    growth lengths (χ > 1); inf marks χ = 1 to within $64\,ε$ of the float type."""

    q: Array
    gradient: Array
    xi_c: Array


def _depth(chi):
    log_chi = jnp.log(chi)
    critical = jnp.abs(log_chi) <= 64 * jnp.finfo(log_chi.dtype).eps
    return jnp.where(critical, jnp.inf, -1 / jnp.where(critical, 1, log_chi))


@functools.partial(jax.jit, static_argnums=0)
def _depth_scales(act: Activation, sigma_w, sigma_b, q0):
    m = gaussian_moments(act)
    q = _q_star(act, sigma_w, sigma_b, q0)
    sigma_w, q = _float(sigma_w, q)
    q = _clip_q(q)
    slope_of_length_map = jax.jvp(m.second, (q,), (jnp.ones_like(q),))[1]
    chi_q = sigma_w**2 * slope_of_length_map
    chi_1 = sigma_w**2 * m.slope2(q)
    return _depth(chi_q), _depth(chi_1)


class Propagation(NamedTuple):
    r"""Mean-field transient over depth, arrays of shape (depth,) (ℓ = 1..depth):
    ``q[ℓ-1]`` = $q^{(\ell)}$, the pre-activation variance of layer ℓ, and
    ``log_mean_squared_gain[ℓ-1]`` = $\sum_{k\le\ell}\ln χ^{(k)}$, the prediction of
    $\ln E\|J_\ell\cdots J_1 u\|^2$ for a unit u."""

    q: Array
    log_mean_squared_gain: Array


@functools.partial(jax.jit, static_argnums=(0, 4))
def _propagate(act: Activation, sigma_w, sigma_b, q0, depth: int):
    m = gaussian_moments(act)
    sigma_w, sigma_b, q0 = _float(sigma_w, sigma_b, q0)
    sw2, sb2 = sigma_w**2, sigma_b**2

    def layer(carry, _):
        q, log_gain = carry
        log_gain = log_gain + jnp.log(sw2 * m.slope2(_clip_q(q)))
        return (sw2 * m.second(q) + sb2, log_gain), (q, log_gain)

    _, (q, log_gain) = jax.lax.scan(layer, (sw2 * q0 + sb2, jnp.zeros_like(q0)), None, length=depth)
    return Propagation(q, log_gain)


def signal_propagation(
    activation: str | Callable | Activation, sigma_w: ArrayLike, sigma_b: ArrayLike, q0: ArrayLike, depth: int
) -> Propagation:
    r"""The length map and the mean squared gain along the transient from an input of
    variance q0 per coordinate (the engine's ``q0``): $q^{(1)} = σ_w^2 q_0 + σ_b^2$,
    $q^{(\ell+1)} = V(q^{(\ell)})$, and $\ln E\|J_\ell\cdots J_1 u\|^2 = \sum_{k\le\ell}\ln χ^{(k)}$
    with $χ^{(k)} = σ_w^2 E[φ′(\sqrt{q^{(k)}} z)^2]$ (Poole et al. 2016; Schoenholz et al. 2017).

    Unlike `chi1` this does not assume the signal sits at q*. It predicts, e.g., the
    algebraic decay at tanh (σ_w, σ_b) = (1, 0): $q^{(\ell)} \approx 1/(2\ell)$, so
    $χ^{(\ell)} \approx 1 - 1/\ell$ and $E\|J u\|^2 \propto 1/\ell$, although χ₁ = 1 at q* = 0.

    Arguments:
      activation, sigma_w, sigma_b: as in `q_star` (scalars).
      q0: input variance per coordinate, positive.
      depth: number of layers, a positive Python int.

    Returns:
      `Propagation(q, log_mean_squared_gain)`.
    """
    act = _resolve(activation, sigma_w, sigma_b, q0)
    depth = check_positive_integer("depth", depth, static=True)
    return _propagate(act, sigma_w, sigma_b, q0, depth)


@functools.partial(jax.jit, static_argnums=0)
def _log_gain(act: Activation, sigma_w, sigma_b, width, depth, q0):
    m = gaussian_moments(act)
    q = _clip_q(_q_star(act, sigma_w, sigma_b, q0))
    sigma_w, q, n, L = _float(sigma_w, q, width, depth)
    mu1, mu2 = m.slope2(q), m.slope4(q)
    eta = 3 * mu2 / mu1**2 - 1
    return LogGain(L * (jnp.log(sigma_w**2 * mu1) - eta / (2 * n)) / 2, L * eta / (4 * n))


def mean_field_log_gain(
    activation: str | Callable | Activation,
    sigma_w: ArrayLike,
    sigma_b: ArrayLike,
    width: ArrayLike,
    depth: ArrayLike,
    *,
    q0: ArrayLike = 1.0,
) -> LogGain:
    r"""Mean and variance of $\ln\|J_L\cdots J_1 u\|$ at the fixed point, to first order in 1/n.

    Mean field gives the mean *square* gain, $E\|J u\|^2 = χ_1^L$; the typical gain is
    smaller. With the signal at q* (the fixed point reached from input variance `q0`, as
    in `chi1`: the transient on the way there is not included, see `signal_propagation`), one layer multiplies
    $\|v\|^2$ by
    $\tfrac{σ_w^2}{n}\sum_i φ′(z_i)^2 g_i^2$ (g_i independent standard normals), a mean of n
    independent terms with relative variance $η/n$, $η = 3μ_2/μ_1^2 - 1$,
    $μ_k = E[φ′(\sqrt{q^*}z)^{2k}]$. By the delta method, per layer
    $E\ln\|\cdot\|^2 = \ln χ_1 - η/(2n)$ and $\mathrm{Var} = η/n$, so

    $$E\ln\|J u\| = \tfrac L2\left(\ln χ_1 - \tfrac{η}{2n}\right), \qquad \mathrm{Var} = \tfrac{Lη}{4n}.$$

    Linear (η = 2) and He-ReLU (η = 5) recover the O(1/n) terms of `gaussian_log_gain` and
    of Hanin & Nica's log-normal limit (`relu_log_gain(limit=True)`), which are exact at
    this order. For φ′ that depends on |z| (tanh) it omits terms of the same order: the
    fluctuations of $\|h^{(\ell)}\|^2/n$ about q* and the overlap of u with $h^{(\ell)}$
    (tests/test_theory_mc.py measures them at about $0.4 L/n$ in the mean).

    Arguments:
      activation, sigma_w, sigma_b, q0: as in `chi1`.
      width, depth: n and L, positive integers (arrays broadcast).

    Returns:
      `LogGain(mean, variance)` of the natural log of the norm.
    """
    act = _resolve(activation, sigma_w, sigma_b, q0)
    check_positive_integer("width", width)
    check_positive_integer("depth", depth)
    return _log_gain(act, sigma_w, sigma_b, width, depth, q0)

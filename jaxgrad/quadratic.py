r"""Gradient descent on a quadratic: the repeated multiplication of seed §1.

For $L(\theta) = \tfrac12 a\theta^2$ with $a > 0$, gradient descent with step η is
$\theta_{t+1} = \theta_t - \eta a\theta_t = r\,\theta_t$ with multiplier $r = 1 - \eta a$,
so $\theta_t = r^t\theta_0$: it shrinks iff $|r| < 1$, i.e. $0 < \eta < 2/a$.
In n dimensions, $L(\theta) = \tfrac12\theta^\top A\theta$ with A symmetric positive
definite gives $\theta_t = (I - \eta A)^t\theta_0$; each eigen-direction has its own
multiplier $1 - \eta\lambda_i$, so the iteration is stable iff $0 < \eta < 2/\lambda_{\max}(A)$.

The theory here (closed forms, thresholds, regimes) is NumPy; the measurements run the
real optimiser, `optax.sgd` (plain, heavy-ball or Nesterov), inside `lax.scan`, vmapped
over thousands of problems in one compiled call.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from numpy.typing import ArrayLike

from jaxgrad.layers import HIGHEST, float_dtype

__all__ = [
    "REGIMES",
    "bisect_critical_learning_rate",
    "check_spd",
    "closed_form",
    "critical_learning_rate",
    "critical_learning_rate_spd",
    "is_stable",
    "momentum_closed_form",
    "multiplier",
    "quadratic_loss",
    "regime",
    "sgd_growth_rates",
    "sgd_trajectories",
    "spectral_radius",
    "transition_matrix",
]

Array = jax.Array

REGIMES = ("monotone_shrink", "oscillating_shrink", "marginal", "monotone_growth", "oscillating_growth")


# --------------------------------------------------------------------------- theory


def _check_curvature(a) -> float:
    try:
        a = float(a)
    except (TypeError, ValueError):
        raise ValueError(f"curvature `a` must be a positive number, got {a=}") from None
    if not (a > 0 and math.isfinite(a)):
        raise ValueError(f"curvature `a` must be positive and finite (seed §1 assumes a > 0), got {a=}")
    return a


def _check_momentum(momentum) -> float:
    momentum = float(momentum)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"`momentum` must lie in [0, 1) (β ≥ 1 is never stable), got {momentum=}")
    return momentum


def multiplier(a: float, lr: float) -> float:
    r"""The multiplier $r = 1 - \eta a$ of one gradient-descent step on $\tfrac12 a\theta^2$."""
    return 1.0 - float(lr) * float(a)


def closed_form(theta0: float, a: float, lr: float, steps: int) -> np.ndarray:
    r"""$\theta_t = (1 - \eta a)^t \theta_0$ for $t = 0, …, $ `steps` (float64).

    Returns:
      Array of shape ``(steps + 1,)``.
    """
    return multiplier(a, lr) ** np.arange(steps + 1, dtype=np.float64) * float(theta0)


def regime(r: float) -> str:
    r"""How $\theta_t = r^t\theta_0$ behaves: one of `REGIMES`.

    Seed §1d: $r = 0.5$ monotone shrink, $r = -0.5$ oscillating shrink, $r = 1.2$
    monotone growth, $r = -1.2$ oscillating growth; $|r| = 1$ is marginal (the
    magnitude stays $|\theta_0|$; at $r = -1$, i.e. $\eta = 2/a$, the sign flips).
    """
    r = float(r)
    if not math.isfinite(r):
        raise ValueError(f"multiplier `r` must be finite, got {r=}")
    if abs(r) == 1.0:
        return "marginal"
    grows = abs(r) > 1.0
    if r >= 0:
        return "monotone_growth" if grows else "monotone_shrink"
    return "oscillating_growth" if grows else "oscillating_shrink"


def critical_learning_rate(a: float, momentum: float = 0.0, nesterov: bool = False) -> float:
    r"""Largest stable step for optax's SGD on $L(\theta) = \tfrac12 a\theta^2$.

    Plain gradient descent: $|1 - \eta a| < 1 \iff 0 < \eta < 2/a$ (seed §1f).

    With momentum, optax's state is $(\theta_t, m_t)$, $m_0 = 0$, $g_t = a\theta_t$.
    Write $x = \eta a$. Both roots of a monic $z^2 - Tz + D$ lie inside the unit disc
    iff $|D| < 1$, $p(1) = 1 - T + D > 0$ and $p(-1) = 1 + T + D > 0$ (Jury 1964).

    * Heavy ball (Polyak 1964; optax ``sgd(momentum=β)``): $m_{t+1} = g_t + βm_t$,
      $\theta_{t+1} = \theta_t - \eta m_{t+1}$, i.e.
      $M = \begin{pmatrix}1 - x & -\eta β\\ a & β\end{pmatrix}$, $T = 1 + β - x$,
      $D = β$. Then $p(1) = x > 0$ and $p(-1) = 2(1+β) - x > 0$:
      $0 < \eta < 2(1+β)/a$.
    * Nesterov (Nesterov 1983, in the form of Sutskever et al. 2013 that optax
      ``sgd(momentum=β, nesterov=True)`` uses): $m_{t+1} = g_t + βm_t$ and
      $\theta_{t+1} = \theta_t - \eta(g_t + βm_{t+1}) = \theta_t - \eta((1+β)g_t + β^2 m_t)$,
      i.e. $M = \begin{pmatrix}1 - (1+β)x & -\eta β^2\\ a & β\end{pmatrix}$,
      $T = (1+β)(1-x)$, $D = β(1-x)$. Then $p(1) = x > 0$ and
      $p(-1) = 1 + (1+2β)(1-x) > 0 \iff x < 2(1+β)/(1+2β)$; on that interval
      $|D| < β < 1$. So $0 < \eta < 2(1+β)/((1+2β)a)$, which falls from $2/a$ at β = 0
      to $4/(3a)$ as β → 1: Nesterov's look-ahead buys damping, not step size.

    Arguments:
      a: curvature, a > 0.
      momentum: β in [0, 1); 0 is plain gradient descent.
      nesterov: use the Nesterov threshold.

    Returns:
      The supremum of stable learning rates (the iteration is marginal there).
    """
    a, beta = _check_curvature(a), _check_momentum(momentum)
    if nesterov:
        return 2.0 * (1.0 + beta) / ((1.0 + 2.0 * beta) * a)
    return 2.0 * (1.0 + beta) / a


def is_stable(a: float, lr: float, momentum: float = 0.0, nesterov: bool = False) -> bool:
    """Whether optax's SGD contracts on $\\tfrac12 a\\theta^2$: $0 < η <$ `critical_learning_rate`."""
    return 0.0 < float(lr) < critical_learning_rate(a, momentum, nesterov)


def transition_matrix(a: ArrayLike, lr: ArrayLike, momentum: float = 0.0, nesterov: bool = False) -> np.ndarray:
    r"""The 2×2 matrix M with $(\theta_{t+1}, m_{t+1}) = M(\theta_t, m_t)$ (see
    `critical_learning_rate`); for β = 0 its eigenvalues are $r = 1 - \eta a$ and 0.

    Broadcasts over `a` and `lr`: returns shape ``broadcast(a, lr).shape + (2, 2)``.
    """
    a, lr = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(lr, np.float64))
    beta = _check_momentum(momentum)
    if nesterov:
        top = (1.0 - (1.0 + beta) * lr * a, -lr * beta**2)
    else:
        top = (1.0 - lr * a, -lr * beta)
    bottom = (a, np.full_like(a, beta))
    return np.stack([np.stack(top, -1), np.stack(bottom, -1)], -2)


def spectral_radius(a: ArrayLike, lr: ArrayLike, momentum: float = 0.0, nesterov: bool = False) -> float | np.ndarray:
    r"""$ρ(M) = \max_i |z_i|$: the asymptotic growth factor per step ($\ln ρ$ is the growth
    rate); broadcasts like `transition_matrix`."""
    rho = np.max(np.abs(np.linalg.eigvals(transition_matrix(a, lr, momentum, nesterov))), axis=-1)
    return float(rho) if rho.ndim == 0 else rho


def momentum_closed_form(
    theta0: float, a: float, lr: float, steps: int, momentum: float = 0.0, nesterov: bool = False
) -> np.ndarray:
    r"""$\theta_t = e_1^\top M^t (\theta_0, 0)^\top$ for t = 0, …, `steps` (float64).

    With β = 0 this is $(1 - \eta a)^t\theta_0$, the seed's closed form.
    """
    M = transition_matrix(a, lr, momentum, nesterov)
    state, out = np.array([float(theta0), 0.0]), [float(theta0)]
    for _ in range(steps):
        state = M @ state
        out.append(state[0])
    return np.array(out)


def check_spd(A: ArrayLike, name: str = "A") -> np.ndarray:
    """Return `A` as a float64 array, or raise ValueError naming `name` if it is not SPD."""
    A = np.asarray(A, dtype=np.float64)
    shown = np.array2string(A, precision=3, threshold=16, edgeitems=2)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.size == 0:
        raise ValueError(f"`{name}` must be a square matrix, got shape {A.shape}: {name}={shown}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"`{name}` must be finite, got {name}={shown}")
    asym = float(np.max(np.abs(A - A.T)))
    if asym > 1e-6 * max(1.0, float(np.max(np.abs(A)))):
        raise ValueError(f"`{name}` must be symmetric, got max|{name} − {name}ᵀ| = {asym:.3g} for {name}={shown}")
    lam_min = float(np.linalg.eigvalsh(A)[0])
    if lam_min <= 0:
        raise ValueError(
            f"`{name}` must be positive definite (the quadratic needs a minimum), "
            f"got smallest eigenvalue λ_min={lam_min:.4g} for {name}={shown}"
        )
    return A


def critical_learning_rate_spd(A: ArrayLike, momentum: float = 0.0, nesterov: bool = False) -> float:
    r"""Largest stable step on $L(\theta) = \tfrac12\theta^\top A\theta$, A SPD.

    In the eigenbasis of A the iteration (with or without momentum) splits into
    independent 1-D problems with $a = \lambda_i$; each needs η below its own
    `critical_learning_rate`, which decreases in a, so the binding one is $\lambda_{\max}$:
    $\eta < 2/\lambda_{\max}(A)$ for plain gradient descent.
    """
    A = check_spd(A)
    return critical_learning_rate(float(np.linalg.eigvalsh(A)[-1]), momentum, nesterov)


# --------------------------------------------------------------------------- optax runs


def quadratic_loss(theta: Array, A: Array) -> Array:
    r"""$L(\theta) = \tfrac12\theta^\top A\theta$ at highest matmul precision."""
    return 0.5 * jnp.dot(theta, jnp.matmul(A, theta, precision=HIGHEST), precision=HIGHEST)


def _sgd_step(opt, A, theta, state):
    grads = jax.grad(quadratic_loss)(theta, A)
    updates, state = opt.update(grads, state, theta)
    return optax.apply_updates(theta, updates), state


def _trajectory(A, theta0, lr, momentum, *, steps, nesterov):
    opt = optax.sgd(lr, momentum=momentum, nesterov=nesterov)

    def step(carry, _):
        theta, state = _sgd_step(opt, A, *carry)
        return (theta, state), theta

    _, thetas = jax.lax.scan(step, (theta0, opt.init(theta0)), length=steps)
    return jnp.concatenate([theta0[None], thetas])


def _growth_rate(A, theta0, lr, momentum, *, steps, burn_in, nesterov):
    # SGD on a quadratic is linear in (θ, optimiser state), so dividing both by the
    # same s > 0 changes nothing but the scale, which is accumulated as Σ ln s.
    opt = optax.sgd(lr, momentum=momentum, nesterov=nesterov)
    tiny = jnp.finfo(theta0.dtype).tiny

    def normalise(theta, state):
        leaves = [theta] + [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
        s = jnp.maximum(jnp.sqrt(sum(jnp.sum(x * x) for x in leaves)), tiny)

        def scale(x):
            return x / s if jnp.issubdtype(x.dtype, jnp.inexact) else x

        return theta / s, jax.tree.map(scale, state), jnp.log(s)

    def step(carry, t):
        theta, state, total, compensation = carry
        theta, state, log_s = normalise(*_sgd_step(opt, A, theta, state))
        # Kahan summation: a plain float32 sum of ~10³ logs would err by ~10³ε relative.
        y = jnp.where(t >= burn_in, log_s, 0.0) - compensation
        new_total = total + y
        return (theta, state, new_total, (new_total - total) - y), None

    theta, state, _ = normalise(theta0, opt.init(theta0))
    zero = jnp.zeros((), theta0.dtype)
    (_, _, total, _), _ = jax.lax.scan(step, (theta, state, zero, zero), jnp.arange(steps))
    return total / (steps - burn_in)


def _batched(fn, A, theta0, lr, momentum, **static):
    if momentum is None:
        return jax.vmap(lambda *args: fn(*args, None, **static))(A, theta0, lr)
    return jax.vmap(functools.partial(fn, **static))(A, theta0, lr, momentum)


_trajectories_jit = jax.jit(functools.partial(_batched, _trajectory), static_argnames=("steps", "nesterov"))
_growth_rates_jit = jax.jit(functools.partial(_batched, _growth_rate), static_argnames=("steps", "burn_in", "nesterov"))


def _prepare(A, theta0, lr, momentum, steps, nesterov):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"`steps` must be a positive integer, got {steps=}")
    if nesterov and momentum is None:
        raise ValueError("nesterov=True needs a `momentum`; got momentum=None (use momentum=0.9, say)")
    dtype = float_dtype()
    A, theta0 = jnp.asarray(A, dtype), jnp.asarray(theta0, dtype)
    scalar = A.ndim == 1
    if scalar:
        A, theta0 = A[:, None, None], theta0[:, None]
    if A.ndim != 3 or A.shape[1] != A.shape[2] or theta0.shape != A.shape[:2]:
        raise ValueError(
            "expected curvatures `A` of shape (N,) with `theta0` (N,), or (N, n, n) with "
            f"theta0 (N, n); got A.shape={A.shape}, theta0.shape={theta0.shape}"
        )
    n = A.shape[0]
    lr = jnp.broadcast_to(jnp.asarray(lr, dtype), (n,))
    if momentum is not None:
        momentum = jnp.broadcast_to(jnp.asarray(momentum, dtype), (n,))
    return A, theta0, lr, momentum, scalar


def sgd_trajectories(
    A: ArrayLike,
    theta0: ArrayLike,
    lr: ArrayLike,
    *,
    steps: int,
    momentum: ArrayLike | None = None,
    nesterov: bool = False,
) -> Array:
    r"""Iterates $\theta_0, …, \theta_{steps}$ of `optax.sgd` on a batch of quadratics.

    One compiled call: `lax.scan` over steps, `vmap` over the batch; the gradient is
    `jax.grad` of `quadratic_loss`. Unnormalised, so it overflows where the
    iteration explodes for long; use `sgd_growth_rates` for stability.

    Arguments:
      A: curvatures ``(N,)`` (1-D problems) or SPD matrices ``(N, n, n)``.
      theta0: starting points ``(N,)`` or ``(N, n)``.
      lr: learning rates, scalar or ``(N,)``.
      steps: number of steps.
      momentum: None (plain SGD), or β scalar or ``(N,)``.
      nesterov: Nesterov momentum (needs `momentum`).

    Returns:
      ``(N, steps + 1)`` for 1-D problems, else ``(N, steps + 1, n)``.
    """
    A, theta0, lr, momentum, scalar = _prepare(A, theta0, lr, momentum, steps, nesterov)
    out = _trajectories_jit(A, theta0, lr, momentum, steps=steps, nesterov=nesterov)
    return out[..., 0] if scalar else out


def sgd_growth_rates(
    A: ArrayLike,
    theta0: ArrayLike,
    lr: ArrayLike,
    *,
    steps: int,
    momentum: ArrayLike | None = None,
    nesterov: bool = False,
    burn_in: int | None = None,
) -> Array:
    r"""Measured growth rate per step of `optax.sgd` on a batch of quadratics.

    The state $s_t = (\theta_t, m_t)$ is renormalised every step (exact, the dynamics
    being linear) and the rate is $\frac{1}{T - T_0}\ln\|s_T\|/\|s_{T_0}\|$ after a
    burn-in $T_0$: a power-iteration estimate of $\ln ρ(M)$, negative iff the
    iteration contracts. Never overflows, whatever η.

    Arguments:
      as `sgd_trajectories`; burn_in: steps discarded first (default steps // 2).

    Returns:
      ``(N,)`` growth rates.
    """
    burn_in = steps // 2 if burn_in is None else burn_in
    A, theta0, lr, momentum, _ = _prepare(A, theta0, lr, momentum, steps, nesterov)
    if not 0 <= burn_in < steps:
        raise ValueError(f"`burn_in` must lie in [0, steps), got {burn_in=} with {steps=}")
    return _growth_rates_jit(A, theta0, lr, momentum, steps=steps, burn_in=burn_in, nesterov=nesterov)


def bisect_critical_learning_rate(
    A: ArrayLike,
    theta0: ArrayLike,
    low: ArrayLike,
    high: ArrayLike,
    *,
    steps: int,
    momentum: ArrayLike | None = None,
    nesterov: bool = False,
    iterations: int = 30,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Measured threshold by bisection on the sign of the optax growth rate.

    Starting from brackets with ``growth_rate(low) < 0 ≤ growth_rate(high)`` (e.g. two
    neighbours of a coarse grid), halves every bracket `iterations` times, all problems
    in one `sgd_growth_rates` call per halving (one compilation in all). NaN brackets
    stay NaN.

    Returns:
      ``(low, high)``: float64 arrays of shape ``(N,)``, ``high/low − 1 ≤ 2^{-iterations}``
      times the initial ratio's excess.
    """
    low, high = np.array(low, np.float64), np.array(high, np.float64)
    valid = np.isfinite(low) & np.isfinite(high)
    for _ in range(iterations):
        mid = np.where(valid, 0.5 * (low + high), 1.0)
        stable = np.asarray(sgd_growth_rates(A, theta0, mid, steps=steps, momentum=momentum, nesterov=nesterov)) < 0
        low, high = np.where(stable & valid, mid, low), np.where(~stable & valid, mid, high)
    return low, high

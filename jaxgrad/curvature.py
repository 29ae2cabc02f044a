r"""The top eigenvalue of a loss's Hessian, matrix-free: Lanczos on Hessian-vector products.

Seed §1: gradient descent on $L(θ) = \tfrac12 aθ^2$ is stable iff $η < 2/a$. Near a
minimum any loss is such a quadratic in each eigendirection of its Hessian
$H = ∇^2 L$, so the curvature that decides stability is $λ_{\max}(H)$ and the
threshold is $η < 2/λ_{\max}$ (with heavy-ball momentum β: $η < (2 + 2β)/λ_{\max}$).
Cohen et al. 2021 found that full-batch GD drives $λ_{\max}$ up to that threshold and
then hovers there: the edge of stability (`experiments/edge_of_stability.py`).

$Hv$ is `jax.jvp` of `jax.grad` (forward over reverse; Pearlmutter 1994), about the
cost of two gradients and never materialising H. The Lanczos recurrence
$β_{k+1} v_{k+1} = H v_k - α_k v_k - β_k v_{k-1}$ with full reorthogonalisation
(Paige 1972 showed why it is needed in finite precision) builds the tridiagonal
$T_k = V_k^\top H V_k$, whose largest eigenvalue converges to $λ_{\max}(H)$ from below.

References:
  J. Cullum, R. Willoughby, "Lanczos algorithms for large symmetric eigenvalue
  computations", 1985. B. Pearlmutter, "Fast exact multiplication by the Hessian",
  Neural Computation 1994. J. Cohen, S. Kaur, Y. Li, Z. Kolter, A. Talwalkar,
  "Gradient descent on neural networks typically occurs at the edge of stability", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

__all__ = ["hessian_vector_product", "top_hessian_eigenvalue"]

Array = jax.Array
Params = Any  # a pytree of float arrays


def hessian_vector_product(loss: Callable[[Params], Array], params: Params) -> Callable[[Array], Array]:
    r"""$v \mapsto ∇^2 L(θ)\,v$ on the flat parameter vector (``ravel_pytree(params)``), by `jax.jvp` of `jax.grad`."""
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda theta: loss(unravel(theta)))
    return lambda v: jax.jvp(grad, (flat,), (v.astype(flat.dtype),))[1]


def top_hessian_eigenvalue(loss: Callable[[Params], Array], params: Params, *, key: Array, steps: int = 32) -> Array:
    r"""$λ_{\max}(∇^2 L)$ at `params` by `steps` Lanczos iterations on Hessian-vector products.

    The largest (algebraic) eigenvalue, the one that sets gradient descent's threshold
    $η < 2/λ_{\max}$. With k = min(steps, number of parameters) iterations the Ritz value
    is exact for a Hessian with at most k distinct eigenvalues, e.g. $a$ for $\tfrac12 aθ^2$.
    Pure and fixed-size (a `lax.fori_loop` of k steps): jit it, or vmap it over keys and
    parameters (e.g. seeds). A Krylov space that closes early (β = 0) is handled: the
    remaining directions are zero and contribute nothing.

    Arguments:
      loss: ``params -> scalar``, twice differentiable.
      params: any pytree of float arrays.
      key: PRNG key for the random start vector.
      steps: Lanczos iterations, a positive Python int (32 resolves the top of a
        neural-network Hessian to about 1e-3 relative; check on your problem).

    Returns:
      A scalar in the parameters' float dtype.

    Example:
      >>> lam = top_hessian_eigenvalue(lambda p: 0.5 * 3.0 * p**2, jnp.ones(()), key=jax.random.key(0))  # 3.0
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive Python integer, got steps={steps!r}")
    hvp = hessian_vector_product(loss, params)
    flat, _ = ravel_pytree(params)
    n = flat.size
    k = min(steps, n)
    dtype = flat.dtype
    v0 = jax.random.normal(key, (n,), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    tiny = jnp.finfo(dtype).eps

    def body(i, carry):
        V, alpha, beta = carry
        v = V[i]
        w = hvp(v)
        a = jnp.vdot(v, w)
        scale = jnp.maximum(jnp.abs(a), jnp.linalg.norm(w))
        w = w - V.T @ (V @ w)  # full reorthogonalisation against every basis vector so far
        w = w - V.T @ (V @ w)  # twice is enough (Kahan–Parlett)
        b = jnp.linalg.norm(w)
        closed = b <= 64 * tiny * jnp.maximum(scale, tiny)
        v_next = jnp.where(closed, 0.0, w / jnp.where(closed, 1.0, b))
        V = V.at[i + 1].set(jnp.where(i + 1 < k, v_next, V[i + 1]))
        return V, alpha.at[i].set(a), beta.at[i].set(jnp.where(closed, 0.0, b))

    V = jnp.zeros((k + 1, n), dtype).at[0].set(v0)
    _, alpha, beta = jax.lax.fori_loop(0, k, body, (V, jnp.zeros(k, dtype), jnp.zeros(k, dtype)))
    live = jnp.concatenate([jnp.ones(1, bool), jnp.cumprod(beta[:-1] > 0).astype(bool)])
    off = jnp.where(live[1:], beta[:-1], 0.0)
    # Directions after an early close are zero vectors: decouple them and put them below every
    # live Ritz value (Gershgorin: those are ≥ −(max|α| + 2 max β)), so the top is the live one.
    floor = -(jnp.max(jnp.abs(alpha)) + 2 * jnp.max(beta) + 1)
    T = jnp.diag(jnp.where(live, alpha, floor)) + jnp.diag(off, 1) + jnp.diag(off, -1)
    return jnp.linalg.eigvalsh(T)[-1]

r"""Spectral norms, log-domain products and the bounds of seed §3–§4.

The spectral norm $\|A\|_2 = σ_{\max}(A)$ controls how much a Jacobian can stretch
an error signal. Seed §3: $\|J_1^\top \cdots J_L^\top\|_2 \le \prod_\ell \|J_\ell\|_2$
(submultiplicativity). Seed §4: $\|J_\ell\|_2 \le \|\mathrm{diag}\,φ′(z)\|_2\,\|W\|_2$.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jaxgrad.layers import HIGHEST

__all__ = ["TopSingular", "lanczos_top_singular", "lanczos_top_singular_operator", "log_product_norm",
           "log_singular_values", "log_spectral_norm", "product", "spectral_norm"]

Array = jax.Array


def spectral_norm(A: Array) -> Array:
    """Largest singular value $σ_{\\max}(A)$, exactly, by SVD."""
    return jnp.linalg.svd(A, compute_uv=False)[..., 0]


def log_spectral_norm(A: Array) -> Array:
    """$\\ln σ_{\\max}(A)$ by SVD."""
    return jnp.log(spectral_norm(A))


def log_singular_values(A: Array) -> Array:
    """$\\ln σ_i(A)$, descending, by SVD."""
    return jnp.log(jnp.linalg.svd(A, compute_uv=False))


def product(matrices: Sequence[Array]) -> Array:
    """$A_L \\cdots A_2 A_1$ for ``matrices = [A_1, …, A_L]``."""
    out = matrices[0]
    for A in matrices[1:]:
        out = jnp.matmul(A, out, precision=HIGHEST)
    return out


def log_product_norm(matrices: Sequence[Array]) -> Array:
    r"""$\ln\|A_L \cdots A_1\|_2$ without overflow: the product is renormalised after
    every factor and the log-scale accumulated."""
    log_scale = jnp.zeros((), matrices[0].dtype)
    P = None
    for A in matrices:
        P = A if P is None else jnp.matmul(A, P, precision=HIGHEST)
        s = jnp.linalg.norm(P)
        P, log_scale = P / s, log_scale + jnp.log(s)
    return log_scale + log_spectral_norm(P)


class TopSingular(NamedTuple):
    value: Array   # σ_max estimate
    vector: Array  # its right singular vector (Ritz vector), unit norm; unreliable unless reorthogonalised


def lanczos_top_singular(A: Array, v0: Array, steps: int, *, reorthogonalise: bool = True) -> TopSingular:
    r"""Top singular value of A by `steps` Lanczos steps on $A^\top A$ from $v_0$.

    Lanczos is the Krylov-space generalisation of the power iteration: after k
    steps it returns the best estimate of $σ_{\max}$ in the span of
    $\{v_0, A^\top A v_0, …, (A^\top A)^{k-1} v_0\}$, which contains the k-th
    power-iteration vector. Full re-orthogonalisation keeps it stable in float32.
    Warm-started from the previous top vector (a product $J_\ell \cdots J_1$ changes
    its top direction slowly) a few steps suffice; from a random start about
    25–35 steps give $10^{-6}$ relative accuracy at widths up to 256.

    Arguments:
      A: (m, n) matrix.
      v0: (n,) non-zero start vector.
      steps: number of Lanczos steps k ≤ n.
      reorthogonalise: full re-orthogonalisation (classical Gram–Schmidt, twice) against
        all previous Lanczos vectors; without it, only the three-term recurrence. In
        floating point the vectors then lose orthogonality as Ritz values converge, which
        adds spurious copies of converged values but leaves the top one accurate
        (Paige 1976); it saves the 4kn flops per step and, in the engine, a quarter of the
        time of the norm of each random $J_\ell$. The recurrence uses the modified ordering
        $w \leftarrow w - β_{j-1} v_{j-1}$, $α_j = v_j^\top w$, $w \leftarrow w - α_j v_j$.
        In this mode only `value` is meant to be used: `vector` is still returned (unit
        norm) but is unreliable, since $T$ may hold near-equal ghost copies of the top Ritz
        value whose eigenvectors mix, and $V$ is no longer orthonormal.

    Returns:
      `TopSingular(value, vector)`; `vector` is trustworthy only with `reorthogonalise=True`.
    """
    return lanczos_top_singular_operator(
        lambda v: jnp.matmul(A.T, jnp.matmul(A, v, precision=HIGHEST), precision=HIGHEST),
        v0.astype(A.dtype), steps, reorthogonalise=reorthogonalise)


def lanczos_top_singular_operator(gram: Callable[[Array], Array], v0: Array, steps: int, *,
                                  reorthogonalise: bool = True) -> TopSingular:
    r"""`lanczos_top_singular` matrix-free: A is known only through $v \mapsto A^\top A v$.

    For a Jacobian product $A = J_\ell\cdots J_1$, ``gram`` is a `jax.jvp` sweep forward
    through the chain followed by a `jax.vjp` sweep back, so A is never formed: k steps
    cost k JVPs and k VJPs of the chain and O(k n) memory for the Lanczos basis.

    Arguments:
      gram: ``v -> Aᵀ A v`` for v of the shape of `v0` (linear, symmetric positive semi-definite).
      v0, steps, reorthogonalise: as in `lanczos_top_singular` (n = ``v0.size``).

    Returns:
      `TopSingular(value, vector)`, as `lanczos_top_singular`.
    """
    n = v0.shape[0]
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).tiny ** 0.5
    breakdown = 1e3 * jnp.finfo(dtype).eps

    def body(j, carry):
        V, alpha, beta, v, v_prev, b_prev = carry
        V = V.at[j].set(v)
        w = gram(v)
        if reorthogonalise:  # (traced exactly as before: results are bit-identical)
            a = jnp.vdot(w, v)
            alpha = alpha.at[j].set(a)
            w_norm = jnp.linalg.norm(w)
            for _ in range(2):  # classical Gram–Schmidt, twice is enough
                w = w - jnp.matmul(V.T, jnp.matmul(V, w, precision=HIGHEST), precision=HIGHEST)
        else:
            # Modified ordering (Paige 1972/1976): remove β_{j-1} v_{j-1} first, then take
            # α_j from what is left, so α_j does not see the v_{j-1} component.
            w_norm = jnp.linalg.norm(w)
            w = w - b_prev * v_prev
            a = jnp.vdot(w, v)
            alpha = alpha.at[j].set(a)
            w = w - a * v
        b = jnp.linalg.norm(w)
        # Breakdown: the Krylov space is invariant (what is left of w is rounding
        # noise). Stop there; normalising noise would add a spurious direction.
        ok = (b > breakdown * w_norm) & (b > tiny)
        b = jnp.where(ok, b, 0.0)
        beta = beta.at[j].set(b)
        return V, alpha, beta, jnp.where(ok, w / jnp.where(ok, b, 1.0), 0.0), v, b

    v0 = v0 / jnp.linalg.norm(v0)
    V = jnp.zeros((steps, n), dtype)
    alpha = jnp.zeros((steps,), dtype)
    beta = jnp.zeros((steps,), dtype)
    carry = (V, alpha, beta, v0, jnp.zeros_like(v0), jnp.zeros((), dtype))
    V, alpha, beta, *_ = jax.lax.fori_loop(0, steps, body, carry)
    T = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    evals, evecs = jnp.linalg.eigh(T)
    ritz = jnp.matmul(V.T, evecs[:, -1], precision=HIGHEST)
    return TopSingular(jnp.sqrt(jnp.maximum(evals[-1], 0.0)), ritz / jnp.linalg.norm(ritz))

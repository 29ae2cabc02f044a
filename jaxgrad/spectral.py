r"""Spectral norms, log-domain products and the bounds of seed §3–§4.

The spectral norm $\|A\|_2 = σ_{\max}(A)$ controls how much a Jacobian can stretch
an error signal. Seed §3: $\|J_1^\top \cdots J_L^\top\|_2 \le \prod_\ell \|J_\ell\|_2$
(submultiplicativity). Seed §4: $\|J_\ell\|_2 \le \|\mathrm{diag}\,φ′(z)\|_2\,\|W\|_2$.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxgrad.layers import HIGHEST

__all__ = [
    "TopSingular",
    "lanczos_top_singular",
    "lanczos_top_singular_operator",
    "log_product_norm",
    "log_singular_values",
    "log_spectral_norm",
    "product",
    "spectral_norm",
]

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
    P = matrices[0]
    for i, A in enumerate(matrices):
        P = A if i == 0 else jnp.matmul(A, P, precision=HIGHEST)
        s = jnp.linalg.norm(P)
        P, log_scale = P / s, log_scale + jnp.log(s)
    return log_scale + log_spectral_norm(P)


class TopSingular(NamedTuple):
    value: Array  # σ_max estimate
    vector: Array  # its right singular vector (Ritz vector), unit norm; unreliable unless reorthogonalised


def lanczos_top_singular(
    A: Array, v0: Array, steps: int, *, reorthogonalise: bool = True, max_steps: int | None = None, tol: float = 2e-8
) -> TopSingular:
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
        In this mode only `value` is meant to be used: no basis is kept (the Ritz vector
        would be unreliable anyway: $T$ may hold near-equal ghost copies of the top Ritz
        value whose eigenvectors mix, and the basis loses orthonormality), and `vector` is
        the last Lanczos vector, of unit norm.
      max_steps: adaptive mode (None: exactly `steps` steps). Runs `steps` steps, then
        more in blocks of `steps` up to `max_steps` until the top Ritz value θ_k of
        $A^\top A$ has settled: from θ at k − 2m, k − m and k (m = steps // 4) the
        geometric (Aitken) extrapolation of the remaining rise, $Δ_2 q/(1-q)$ with
        $Δ_i$ the last two rises and $q = Δ_2/Δ_1$ (after the first block; later, the rises
        over the last two blocks), is at most ``tol·θ_k``. A stagnating run (a flat stretch
        before the Ritz value finds the top of a cluster) can pass this test early, so it is
        a heuristic: results/benchmarks/NOTES.md measures what it reaches. Only a sample
        that has not settled takes more steps (under `vmap`, a settled sample's state is
        frozen), so its result depends on its own data alone. Without re-orthogonalisation
        the extra steps cost matrix–vector products only; with it, the basis (and its
        Gram–Schmidt) is `max_steps` long.
      tol: the relative settling tolerance on σ² (σ to about tol/2) of the adaptive mode.

    Returns:
      `TopSingular(value, vector)`; `vector` is trustworthy only with `reorthogonalise=True`.
    """
    return lanczos_top_singular_operator(
        lambda v: jnp.matmul(A.T, jnp.matmul(A, v, precision=HIGHEST), precision=HIGHEST),
        v0.astype(A.dtype),
        steps,
        reorthogonalise=reorthogonalise,
        max_steps=max_steps,
        tol=tol,
    )


def lanczos_top_singular_operator(
    gram: Callable[[Array], Array],
    v0: Array,
    steps: int,
    *,
    reorthogonalise: bool = True,
    max_steps: int | None = None,
    tol: float = 2e-8,
) -> TopSingular:
    r"""`lanczos_top_singular` matrix-free: A is known only through $v \mapsto A^\top A v$.

    For a Jacobian product $A = J_\ell\cdots J_1$, ``gram`` is a `jax.jvp` sweep forward
    through the chain followed by a `jax.vjp` sweep back, so A is never formed: k steps
    cost k JVPs and k VJPs of the chain and O(k n) memory for the Lanczos basis.

    Arguments:
      gram: ``v -> Aᵀ A v`` for v of the shape of `v0` (linear, symmetric positive semi-definite).
      v0, steps, reorthogonalise, max_steps, tol: as in `lanczos_top_singular` (n = ``v0.size``).

    Returns:
      `TopSingular(value, vector)`, as `lanczos_top_singular`.
    """
    n = v0.shape[0]
    dtype = v0.dtype
    tiny = jnp.finfo(dtype).tiny ** 0.5
    breakdown = 1e3 * jnp.finfo(dtype).eps

    def body(j, carry):
        V, alpha, beta, v, v_prev, b_prev = carry
        w = gram(v)
        if reorthogonalise:  # (traced exactly as before: results are bit-identical)
            V = V.at[j].set(v)
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

    total = steps if max_steps is None else max(int(max_steps), steps)
    norm0 = jnp.linalg.norm(v0)
    # A zero start (at width 1 a warm start and a fresh one cancel half the time) starts from e₁.
    v0 = jnp.where(norm0 > 0, v0 / jnp.where(norm0 > 0, norm0, 1.0), jnp.zeros_like(v0).at[0].set(1.0))
    V = jnp.zeros((total, n) if reorthogonalise else (0, n), dtype)  # the basis is kept only to re-orthogonalise
    alpha = jnp.zeros((total,), dtype)
    beta = jnp.zeros((total,), dtype)
    carry = jax.lax.fori_loop(0, steps, body, (V, alpha, beta, v0, jnp.zeros_like(v0), jnp.zeros((), dtype)))
    top = None
    if total > steps:
        carry, top, k = _settle(body, carry, steps, total, tol)
        V, alpha, beta, *rest = carry
        carry = (V, alpha, jnp.where(jnp.arange(total) < k - 1, beta, 0.0), *rest)  # T_k: drop β_k
    V, alpha, beta, v, *_ = carry
    if not reorthogonalise:
        if top is None:
            top = _ritz_values(alpha, beta)[-1]
        return TopSingular(jnp.sqrt(jnp.maximum(top, 0.0)), v / jnp.maximum(jnp.linalg.norm(v), tiny))
    evals, evecs = jnp.linalg.eigh(_tridiagonal(alpha, beta))
    ritz = jnp.matmul(V.T, evecs[:, -1], precision=HIGHEST)
    # A zero operator (a dead ReLU layer, a product that reached exactly zero): value 0 and vector 0,
    # not 0/0, so that a warm start from it is the fresh start alone.
    return TopSingular(jnp.sqrt(jnp.maximum(evals[-1], 0.0)), ritz / jnp.maximum(jnp.linalg.norm(ritz), tiny))


def _tridiagonal(alpha, beta):
    return jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)


def _ritz_values(alpha, beta):
    """Eigenvalues (ascending) of the Lanczos tridiagonal T, diagonal α and off-diagonal β[:-1].

    LAPACK's symmetric eigensolver through XLA. A Sturm-count multisection in a `fori_loop`
    was tried in its place (results/benchmarks/NOTES.md): 20–30 µs faster per call, but
    1.5–2 s more compilation per program, more than it saves in every run measured.
    """
    return jnp.linalg.eigh(_tridiagonal(alpha, beta))[0]


def _settle(body, carry, steps: int, total: int, tol: float):
    """Lanczos steps beyond the first `steps`, in blocks of `steps`, until the top Ritz value settles.

    Returns (carry, θ, k): θ the top Ritz value after the k steps taken. The test after the first
    block uses static slices (cheap); only a sample still unsettled enters the while loop.
    """
    _, alpha, beta, *_ = carry
    m = max(1, steps // 4)
    index = jnp.arange(total)

    def settled(t0, t1, t2):
        d1, d2 = t1 - t0, t2 - t1
        q = jnp.clip(d2 / jnp.where(d1 > 0, d1, 1.0), 0.0, 0.999)
        return d2 * q / (1 - q) <= tol * t2

    first = [_ritz_values(alpha[:k], beta[:k])[-1] for k in (steps - 2 * m, steps - m, steps)]

    def block(state):
        k, carry, _, (_, t1, t2) = state
        carry = jax.lax.fori_loop(0, steps, lambda j, c: body(k + j, c), carry)
        _, alpha, beta, *_ = carry
        k = k + steps
        # T_k is the leading k × k block; the rest is zero (an eigenvalue 0 ≤ θ of a PSD operator).
        t3 = _top_eigenvalue_by_bisection(alpha, jnp.where(index < k - 1, beta, 0.0))
        return k, carry, settled(t1, t2, t3), (t1, t2, t3)

    def unsettled(state):
        k, _, done, _ = state
        return (k < total) & ~done

    state = (jnp.asarray(steps, jnp.int32), carry, settled(*first), tuple(first))
    k, carry, _, (_, _, top) = jax.lax.while_loop(unsettled, block, state)
    return carry, top, k


def _top_eigenvalue_by_bisection(alpha, beta, points: int = 15):
    r"""The largest eigenvalue of the tridiagonal (α, β[:-1]) by Sturm-count multisection.

    With $d_1 = α_1 - x$, $d_i = α_i - x - β_{i-1}^2/d_{i-1}$, the number of negative $d_i$ is
    the number of eigenvalues below x, a backward-stable count (Kahan 1966; Demmel 1997,
    §5.3.4). Each round counts at `points` points of the bracket
    $[\max_i α_i, \max_i (α_i + |β_{i-1}| + |β_i|)]$ (Rayleigh quotients of $e_i$; Gershgorin),
    which shrinks (points + 1)-fold, for as many rounds as the mantissa needs. Used for the long
    tridiagonals of the adaptive Lanczos run, where `eigh` of a 256 × 256 matrix per sample
    costs milliseconds; the recurrence is a loop (`lax.scan`), not unrolled, so compilation
    stays small.
    """
    k = alpha.shape[0]
    dtype = alpha.dtype
    finfo = jnp.finfo(dtype)
    off = jnp.abs(beta[: k - 1])
    beta2 = off * off
    zero = jnp.zeros((1,), dtype)
    radius = jnp.concatenate([off, zero]) + jnp.concatenate([zero, off])
    pivmin = finfo.tiny * jnp.maximum(1.0, jnp.max(beta2, initial=0.0)) / finfo.eps
    fractions = jnp.arange(1, points + 1, dtype=dtype) / (points + 1)

    def below(x):
        def step(carry, ab):
            d, count = carry
            a, b2 = ab
            d = a - x - b2 / d
            d = jnp.where(jnp.abs(d) < pivmin, -pivmin, d)
            return (d, count + (d < 0).astype(jnp.int32)), None

        d = alpha[0] - x
        d = jnp.where(jnp.abs(d) < pivmin, -pivmin, d)
        return jax.lax.scan(step, (d, (d < 0).astype(jnp.int32)), (alpha[1:], beta2))[0][1]

    def round_(_, bracket):
        lo, hi = bracket
        x = lo + (hi - lo) * fractions
        top_above = below(x) < k  # λ_max ≥ x
        return jnp.max(jnp.where(top_above, x, lo)), jnp.min(jnp.where(top_above, hi, x))

    rounds = math.ceil((finfo.nmant + 4) / math.log2(points + 1))
    lo, hi = jax.lax.fori_loop(0, rounds, round_, (jnp.max(alpha), jnp.max(alpha + radius)))
    return 0.5 * (lo + hi)

r"""Self-attention over T tokens as a jaxgrad `Layer` on a (tokens, width) state.

The state $X \in \mathbb{R}^{T\times d}$ (rows are tokens) is carried as the flat vector
$\mathrm{vec}(X) \in \mathbb{R}^{Td}$ (row-major, as `jaxgrad.adapters` does). With H heads of
width $d_h = d/H$ and the columns of $W_Q, W_K, W_V \in \mathbb{R}^{d\times d}$ split into H
blocks, head h computes

$$P_h = \mathrm{softmax}\!\Big(\frac{X W_Q^h (X W_K^h)^\top}{\sqrt{d_h}} + M\Big), \qquad
\mathrm{SA}(X) = \big[P_1 X W_V^1, \dots, P_H X W_V^H\big],$$

softmax along each row, M = 0 or the causal mask ($-\infty$ above the diagonal). The layer is
$X \mapsto \mathrm{SA}(X)$ (pure attention, Dong et al. 2021) or, with a branch scale α
(`residual_scale`), $X \mapsto X + α\,\mathrm{SA}(X)$ (Noci et al. 2022 take α = 1/√L). There
is no output projection (for one head it would fold into $W_V$) and no MLP: attention alone.
Weights are Gaussian, $(W_Q)_{ij}, (W_K)_{ij} \sim N(0, σ_{qk}^2/d)$ and
$(W_V)_{ij} \sim N(0, σ_w^2/d)$, so scores are O(1) for tokens of O(1) entries.

Token geometry, for one state (functions of X, usable inside any probe):

* `token_cosine`: the mean over pairs i ≠ j of $\cos(x_i, x_j)$; 1 at rank collapse;
* `token_residual`: $\|X - \mathbf 1\bar x^\top\|_F/\|X\|_F$, the relative distance from the
  nearest token-uniform state (every token equal; $\bar x$ the mean token);
* `rank_one_distance`: $\sqrt{1 - σ_1^2/\sum_i σ_i^2}$, the relative distance from the nearest
  rank-one matrix;
* `max_token_residual`: $ρ(X) = \max_i\|x_i - \bar x\|_2$, the norm of Dong et al.'s bound
  (`jaxgrad.theory.attention_residual_bound`), and `score_and_value_norms`, its weight terms.

References:
  Y. Dong, J.-B. Cordonnier, A. Loukas, "Attention is not all you need: pure attention loses
  rank doubly exponentially with depth", ICML 2021.
  L. Noci, S. Anagnostidis, L. Biggio, A. Orvieto, S. P. Singh, A. Lucchi, "Signal propagation in
  transformers: theoretical perspectives and the role of rank collapse", NeurIPS 2022.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxgrad.layers import (
    HIGHEST,
    Hyper,
    Layer,
    _check_float_dtype,
    _check_nonnegative,
    _check_positive_int,
    float_dtype,
    standard_normal,
)

__all__ = [
    "AttentionParams",
    "attention",
    "attention_weights",
    "max_token_residual",
    "rank_one_distance",
    "score_and_value_norms",
    "self_attention",
    "token_cosine",
    "token_residual",
]


class AttentionParams(NamedTuple):
    W_Q: jax.Array  # (d, d): columns h·d_h … (h+1)·d_h − 1 are head h's
    W_K: jax.Array  # (d, d)
    W_V: jax.Array  # (d, d)


def _mm(a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


def _heads(M, heads: int):
    """(d, d) → (H, d, d_h): head h's column block."""
    d = M.shape[0]
    return jnp.moveaxis(M.reshape(d, heads, d // heads), 1, 0)


def attention_weights(params: AttentionParams, X: jax.Array, heads: int, causal: bool) -> jax.Array:
    """The H attention matrices $P_h$, shape (H, T, T) (rows sum to 1)."""
    T, d = X.shape
    Q = jnp.einsum("td,hde->hte", X, _heads(params.W_Q, heads), precision=HIGHEST)
    K = jnp.einsum("td,hde->hte", X, _heads(params.W_K, heads), precision=HIGHEST)
    scores = jnp.einsum("hte,hse->hts", Q, K, precision=HIGHEST) / math.sqrt(d // heads)
    if causal:
        scores = jnp.where(jnp.tril(jnp.ones((T, T), bool)), scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)


def self_attention(params: AttentionParams, X: jax.Array, heads: int = 1, causal: bool = False) -> jax.Array:
    r"""$\mathrm{SA}(X) = [P_1 X W_V^1, …, P_H X W_V^H]$ for X of shape (T, d): see the module docstring."""
    P = attention_weights(params, X, heads, causal)
    V = jnp.einsum("td,hde->hte", X, _heads(params.W_V, heads), precision=HIGHEST)
    out = jnp.einsum("hts,hse->the", P, V, precision=HIGHEST)  # (T, H, d_h)
    return out.reshape(X.shape)


def token_cosine(X: jax.Array) -> jax.Array:
    r"""Mean over ordered pairs i ≠ j of $\cos(x_i, x_j)$, X of shape (T, d); 1 when every token is equal."""
    T = X.shape[0]
    norms = jnp.linalg.norm(X, axis=1)
    U = X / jnp.where(norms > 0, norms, 1.0)[:, None]
    G = _mm(U, U.T)
    return (jnp.sum(G) - jnp.trace(G)) / (T * (T - 1))


def token_residual(X: jax.Array) -> jax.Array:
    r"""$\|X - \mathbf 1\bar x^\top\|_F / \|X\|_F$: relative distance from the nearest token-uniform state."""
    R = X - jnp.mean(X, axis=0, keepdims=True)
    return jnp.linalg.norm(R) / jnp.linalg.norm(X)


def rank_one_distance(X: jax.Array) -> jax.Array:
    r"""$\sqrt{1 - σ_1^2/\sum_i σ_i^2}$ = $\min_{\mathrm{rank}\,Y \le 1}\|X - Y\|_F/\|X\|_F$ (Eckart–Young)."""
    s = jnp.linalg.svd(X, compute_uv=False)
    return jnp.sqrt(jnp.maximum(jnp.sum(s[1:] ** 2), 0.0) / jnp.sum(s**2))


def max_token_residual(X: jax.Array) -> jax.Array:
    r"""$ρ(X) = \max_i \|x_i - \bar x\|_2$, the residual norm of `jaxgrad.theory.attention_residual_bound`."""
    return jnp.max(jnp.linalg.norm(X - jnp.mean(X, axis=0, keepdims=True), axis=1))


def score_and_value_norms(params: AttentionParams, heads: int) -> tuple[jax.Array, jax.Array]:
    r"""Per head, $(\|W_Q^h W_K^{h\top}\|_2/\sqrt{d_h},\ \|W_V^h\|_2)$: the bound's weight terms, shape (H,) each."""
    Q, K, V = (_heads(M, heads) for M in params)
    d_h = Q.shape[-1]
    A = jnp.einsum("hde,hfe->hdf", Q, K, precision=HIGHEST) / math.sqrt(d_h)
    return jnp.linalg.norm(A, ord=2, axis=(1, 2)), jnp.linalg.norm(V, ord=2, axis=(1, 2))


def _check_residual_scale(residual_scale):
    if residual_scale is None:
        return None
    try:
        value = float(residual_scale)
    except (TypeError, ValueError):
        raise ValueError(
            f"`residual_scale` must be None (pure attention) or a finite number (the branch scale α), "
            f"got residual_scale={residual_scale!r}"
        ) from None
    if not math.isfinite(value) or isinstance(residual_scale, (bool, np.bool_)):
        raise ValueError(
            f"`residual_scale` must be None (pure attention) or a finite number (the branch scale α), "
            f"got residual_scale={residual_scale!r}"
        )
    return value


def attention(
    tokens: int = 16,
    width: int = 64,
    heads: int = 1,
    causal: bool = False,
    residual_scale: float | None = None,
    *,
    sigma_w: float = 1.0,
    sigma_qk: float = 1.0,
    dtype: DTypeLike | None = None,
) -> Layer:
    r"""A self-attention layer on a (tokens, width) state (flat, length tokens·width).

    $X \mapsto \mathrm{SA}(X)$, or $X \mapsto X + α\,\mathrm{SA}(X)$ with α = `residual_scale`
    (see the module docstring). σ_w (values), σ_qk (queries and keys) and α are data
    (`jaxgrad.layers.Hyper`): changing them does not recompile, and `jaxgrad.sweep` scans them
    by the names ``"sigma_w"``, ``"sigma_qk"``, ``"residual_scale"``.

    Arguments:
      tokens: T ≥ 2 (token similarity needs a pair).
      width: d ≥ 1, the model width.
      heads: H, dividing `width`.
      causal: mask token j > i out of token i's attention.
      residual_scale: None for pure attention; a finite α for the residual branch.
      sigma_w, sigma_qk: weight scales (non-negative); σ_qk = 0 gives uniform attention.
      dtype: parameter dtype; None is JAX's default float.

    Returns:
      A `Layer` with params `AttentionParams(W_Q, W_K, W_V)`; the engine differentiates it
      with `jax.jacrev` (the state is small: T·d).
    """
    if isinstance(tokens, (bool, np.bool_)) or not isinstance(tokens, (int, np.integer)) or tokens < 2:
        raise ValueError(f"`tokens` must be an integer ≥ 2 (the number of tokens T), got tokens={tokens!r}")
    tokens = int(tokens)
    width = _check_positive_int("width", width)
    heads = _check_positive_int("heads", heads)
    if width % heads:
        divisors = [h for h in range(1, width + 1) if width % h == 0]
        raise ValueError(f"`heads` must divide width={width} (valid: {divisors}), got heads={heads}")
    if not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"`causal` must be True or False, got causal={causal!r}")
    causal = bool(causal)
    alpha = _check_residual_scale(residual_scale)
    sigma_w = _check_nonnegative("sigma_w", sigma_w)
    sigma_qk = _check_nonnegative("sigma_qk", sigma_qk)
    dtype = _check_float_dtype(dtype)
    shape = (tokens, width)

    def build(c):
        def init(key) -> AttentionParams:
            dt = float_dtype(dtype)
            kq, kk, kv = (jax.random.fold_in(key, s) for s in range(3))
            qk = c["qk_scale"]
            return AttentionParams(
                qk * standard_normal(kq, (width, width), dt),
                qk * standard_normal(kk, (width, width), dt),
                c["v_scale"] * standard_normal(kv, (width, width), dt),
            )

        def apply(params: AttentionParams, h):
            X = h.reshape(shape)
            Y = self_attention(params, X, heads, causal)
            if alpha is not None:
                Y = X + c["alpha"] * Y
            return Y.reshape(-1)

        return init, apply, None

    values = {"sigma_w": sigma_w, "sigma_qk": sigma_qk}
    coeffs = {"v_scale": sigma_w / math.sqrt(width), "qk_scale": sigma_qk / math.sqrt(width)}
    if alpha is not None:
        values["residual_scale"] = alpha
        coeffs["alpha"] = alpha

    def rebuild(sigma_w=sigma_w, sigma_qk=sigma_qk, residual_scale=alpha):
        return attention(tokens, width, heads, causal, residual_scale, sigma_w=sigma_w, sigma_qk=sigma_qk, dtype=dtype)

    init, apply, _ = build(coeffs)
    kind = "pure" if alpha is None else f"residual α={alpha:g}"
    return Layer(
        init,
        apply,
        tokens * width,
        tokens * width,
        None,
        homogeneous=False,
        name=f"attention(T={tokens}, d={width}, H={heads}{', causal' if causal else ''}, {kind}, "
        f"σ_w={sigma_w:g}, σ_qk={sigma_qk:g})",
        hyper=Hyper(
            values, coeffs, ("attention", tokens, width, heads, causal, alpha is not None, dtype), build, rebuild
        ),
    )

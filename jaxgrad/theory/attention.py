r"""Rank collapse in self-attention and isometry of delta-orthogonal convolutions: closed forms.

**Pure attention loses rank (Dong, Cordonnier & Loukas 2021, Theorem 2.2).** Write a token state
as $X = \mathbf 1\bar x^\top + R$ ($\bar x$ the mean token, rows $r_i$ of R) and
$ρ(X) = \max_i\|r_i\|_2$. For one head, $A = W_Q W_K^\top/\sqrt{d_h}$, the scores are
$\bar x^\top A\bar x + r_i^\top A\bar x + \bar x^\top A r_j + r_i^\top A r_j$; the first two are
constant along each row and cancel in the softmax, so $P_i = \mathrm{softmax}(a + E_i)$ with
$a_j = \bar x^\top A r_j$ common to every row and $E_{ij} = r_i^\top A r_j$. Comparing with the
common row $p = \mathrm{softmax}(a)$: $P_{ij}/p_j \in [e^{-Δ_i}, e^{Δ_i}]$, $Δ_i = \max_j E_{ij} - \min_j E_{ij}
\le 2\|A\|_2 ρ^2$, so $\|P_i - p\|_1 \le e^{Δ_i} - 1$. Since $P X W_V = \mathbf 1(\bar x + R^\top p)^\top W_V
+ (P - \mathbf 1 p^\top) R W_V$ and re-centring on the mean token at most doubles a max-row residual,

$$ρ(\mathrm{SA}(X)) \le 2ρ(X)\Big(\sum_h \|W_V^h\|_2^2\,\big(e^{2\|A_h\|_2 ρ(X)^2} - 1\big)^2\Big)^{1/2}
\;\approx\; 4\,\|A\|_2\|W_V\|_2\,ρ(X)^3 \quad (\text{one head}, ρ \to 0),$$

Dong et al.'s cubic bound $\|\mathrm{res}\|\le (4γβ/\sqrt{d_{qk}})\|\mathrm{res}\|^3$ with their (1,∞)
norms replaced by row-ℓ2 and spectral norms and their γ made explicit, $γ = (e^u - 1)/u$,
$u = 2\|A\|_2ρ^2$ (derived here so the per-sample check is a true inequality; non-causal
attention only). Iterated, $\ln ρ_L \approx 3^L \ln ρ_0$: doubly exponential collapse. The
leading term of the residual, $\sum_j p_j (E_{ij} - \bar E_i) W_V^\top r_j$, is itself cubic and
generically non-zero, so the measured exponent $d\ln ρ_{\ell+1}/d\ln ρ_\ell$ tends to
`RANK_COLLAPSE_EXPONENT` = 3, the bound's.

**Uniform attention with a residual branch (Noci et al. 2022).** With $W_Q = W_K = 0$ every
$P_h = \mathbf 1\mathbf 1^\top/T$, so $X + α\,\mathrm{SA}(X) = X + α\mathbf 1\bar x^\top W_V$: the residual R
is unchanged, exactly, and the mean token is multiplied by $I + αW_V$; with $(W_V)_{ij} \sim N(0, σ_w^2/d)$,

$$E\,\|\bar x^{(L)}\|^2 = (1 + α^2σ_w^2)^L\,\|\bar x^{(0)}\|^2 \quad(\text{given } X^{(0)}).$$

Unscaled (α = 1) the mean token outgrows the residual like $2^{L/2}$ and the tokens align
(rank collapse); with α = 1/√L the growth is $(1 + σ_w^2/L)^L \to e^{σ_w^2}$, bounded as L doubles.
For i.i.d. $N(0, q_0)$ tokens at large width, $\|\bar x\|^2 \approx q_0 d/T$, $\|r_i\|^2 \approx q_0 d(1 - 1/T)$,
$\langle r_i, r_j\rangle \approx -q_0 d/T$, so the mean token cosine is
$(g - 1)/(g + T - 1)$ with g the growth factor (`uniform_attention_token_cosine`).

**Delta-orthogonal convolutions (Xiao et al. 2018).** A kernel with $σ_w H$ at the centre tap
(H orthogonal) and zeros elsewhere acts as $I \otimes σ_w H^\top$, so a linear network's
$J_L\cdots J_1$ has every singular value equal to $σ_w^L$ (`delta_orthogonal_log_singular_value`).

References:
  Y. Dong, J.-B. Cordonnier, A. Loukas, ICML 2021 (arXiv:2103.03404).
  L. Noci, S. Anagnostidis, L. Biggio, A. Orvieto, S. P. Singh, A. Lucchi, NeurIPS 2022 (arXiv:2206.03126).
  L. Xiao, Y. Bahri, J. Sohl-Dickstein, S. Schoenholz, J. Pennington, ICML 2018 (arXiv:1806.05393).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.typing import ArrayLike

from jaxgrad.theory._checks import check_positive_integer

__all__ = [
    "RANK_COLLAPSE_EXPONENT",
    "attention_residual_log_bound",
    "delta_orthogonal_log_singular_value",
    "uniform_attention_mean_growth",
    "uniform_attention_token_cosine",
]

RANK_COLLAPSE_EXPONENT = 3.0


def _log_expm1(log_u):
    """ln(e^u − 1) from ln u, without underflow for tiny u (ln(e^u − 1) = ln u + u/2 + O(u²))."""
    u = jnp.exp(jnp.minimum(log_u, 80.0))
    small = log_u < -8.0
    safe = jnp.where(small, 1.0, u)
    return jnp.where(small, log_u + 0.5 * u, jnp.log(jnp.expm1(safe)))


def attention_residual_log_bound(log_rho: ArrayLike, score_norms: ArrayLike, value_norms: ArrayLike) -> jax.Array:
    r"""ln of Dong et al.'s bound on $ρ(\mathrm{SA}(X))$ (module docstring), computed in the log domain.

    $$\ln\Big[2ρ\Big(\sum_h \|W_V^h\|_2^2(e^{2\|A_h\|_2ρ^2} - 1)^2\Big)^{1/2}\Big].$$

    Arguments:
      log_rho: $\ln ρ(X)$, $ρ(X) = \max_i\|x_i - \bar x\|_2$ (`jaxgrad.transformer.max_token_residual`).
      score_norms: per head $\|W_Q^h W_K^{h\top}\|_2/\sqrt{d_h}$, shape (H,) (`score_and_value_norms`).
      value_norms: per head $\|W_V^h\|_2$, shape (H,).

    Returns:
      The log of the bound (non-causal attention; it holds for every X and weights).
    """
    log_rho = jnp.asarray(log_rho)
    a, v = jnp.asarray(score_norms), jnp.asarray(value_norms)
    log_terms = 2 * jnp.log(v) + 2 * _log_expm1(jnp.log(2 * a) + 2 * log_rho[..., None])
    m = jnp.max(log_terms, axis=-1)
    m = jnp.where(jnp.isfinite(m), m, 0.0)  # ρ = 0: every term is −inf, so is the bound
    log_sum = m + jnp.log(jnp.sum(jnp.exp(log_terms - m[..., None]), axis=-1))
    return jnp.log(2.0) + log_rho + 0.5 * log_sum


def uniform_attention_mean_growth(
    residual_scale: npt.ArrayLike, sigma_w: npt.ArrayLike, depth: npt.ArrayLike
) -> np.ndarray | float:
    r"""$E\|\bar x^{(L)}\|^2/\|\bar x^{(0)}\|^2 = (1 + α^2σ_w^2)^L$ for uniform attention with a residual branch.

    (Noci et al. 2022; module docstring.) Broadcasts over its arguments.
    """
    check_positive_integer("depth", depth)
    alpha, sigma_w = np.asarray(residual_scale, np.float64), np.asarray(sigma_w, np.float64)
    return (1.0 + alpha**2 * sigma_w**2) ** np.asarray(depth, np.float64)


def uniform_attention_token_cosine(
    residual_scale: npt.ArrayLike, sigma_w: npt.ArrayLike, depth: npt.ArrayLike, tokens: int | np.ndarray
) -> np.ndarray | float:
    r"""Large-width mean token cosine $(g - 1)/(g + T - 1)$, g = `uniform_attention_mean_growth`,
    for i.i.d. Gaussian input tokens under uniform attention with a residual branch."""
    check_positive_integer("tokens", tokens)
    g = uniform_attention_mean_growth(residual_scale, sigma_w, depth)
    return (g - 1.0) / (g + tokens - 1.0)


def delta_orthogonal_log_singular_value(sigma_w: npt.ArrayLike, depth: npt.ArrayLike) -> np.ndarray | float:
    r"""$\ln σ_i(J_L\cdots J_1) = L\ln σ_w$ for every i: a linear network of delta-orthogonal convolutions
    (Xiao et al. 2018; module docstring)."""
    check_positive_integer("depth", depth)
    return np.asarray(depth, np.float64) * np.log(np.asarray(sigma_w, np.float64))

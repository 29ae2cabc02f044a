r"""Exact laws for products of random matrices $P_L = J_L \cdots J_1$ at finite width.

Gaussian linear layers, $J_\ell = W_\ell$ with $W_{ij} \sim N(0, σ_w^2/n)$: for any fixed unit
u, $\|W u\|^2 \sim (σ_w^2/n)\,χ^2_n$, independent of the direction $Wu/\|Wu\|$, which is
uniform; so $\ln\|P_L u\|$ is a sum of L independent $\tfrac12\ln((σ_w^2/n)χ^2_n)$ terms.
With $E\ln χ^2_k = \ln 2 + ψ(k/2)$ and $\mathrm{Var}\ln χ^2_k = ψ′(k/2)$ (ψ the digamma
function) the mean and variance are exact at every width and depth.

He-initialised ReLU layers, $J_\ell = \mathrm{diag}(\mathbb 1[z^{(\ell)} > 0]) W_\ell$,
$W_{ij} \sim N(0, 2/n)$, σ_b = 0: given $h^{(\ell-1)}$, the number of active units is
$K_\ell \sim \mathrm{Binomial}(n, \tfrac12)$ and each active coordinate of $W v$ squared
is $(2/n)χ^2_1$ whatever the angle between v and $h^{(\ell-1)}$ (the odd moments of the
component orthogonal to h vanish, so $(a|g| + b g′)^2$ has the moments of $(a g + b g′)^2$);
hence $\|J_\ell v\|^2 = (2/n)\,χ^2_{K_\ell}\,\|v\|^2$, independent over layers
(Hanin & Nica 2018).

References:
  G. Benettin, L. Galgani, A. Giorgilli, J.-M. Strelcyn, "Lyapunov characteristic exponents
  for smooth dynamical systems and for Hamiltonian systems", Meccanica 15, 1980.
  C. M. Newman, "The distribution of Lyapunov exponents: exact results for random
  matrices", Commun. Math. Phys. 103, 1986.
  B. Hanin, M. Nica, "Products of many large random matrices and gradients in deep
  neural networks", Commun. Math. Phys. 376, 2020 (arXiv:1812.05994).
  W. Młotkowski, "Fuss–Catalan numbers in noncommutative probability", Documenta
  Math. 15, 2010; K. Penson, K. Życzkowski, "Product of Ginibre matrices:
  Fuss–Catalan and Raney distributions", Phys. Rev. E 83, 2011.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln, polygamma

from jaxgrad.theory._checks import check_nonnegative, check_positive_integer

Array = jax.Array


class LogGain(NamedTuple):
    """Mean and variance of $\\ln\\|J_L\\cdots J_1 u\\|$ (natural log of the norm, not its square)."""

    mean: Array
    variance: Array


def _float(*values):
    dtype = jnp.result_type(*values, float)
    return [jnp.asarray(v, dtype) for v in values]


def gaussian_lyapunov_spectrum(width: int, sigma_w=1.0) -> Array:
    r"""Lyapunov exponents of products of n×n Gaussian matrices $N(0, σ_w^2/n)$ (Newman 1986).

    $$λ_i = \ln σ_w + \tfrac12\left[\ln\tfrac2n + ψ\!\left(\tfrac{n-i+1}2\right)\right], \qquad i = 1..n,$$

    the per-layer growth rates $\lim_L \tfrac1L\ln σ_i(P_L)$ of the singular values.

    Which estimator this describes, exactly: the **unsorted** diagonal of R in the QR method
    (Benettin et al. 1980) started from $Q_0 = I$, $J_\ell Q_{\ell-1} = Q_\ell R_\ell$,
    $\hat λ_i = \tfrac1L\sum_\ell \ln|(R_\ell)_{ii}|$ (``jaxgrad.lyapunov_spectrum(..., sort=False)``).
    Since W is rotation invariant, $WQ_{\ell-1}$ is again Gaussian and $|(R_\ell)_{ii}|$ is
    $(σ_w/\sqrt n)\,χ_{n-i+1}$, independent over ℓ and i (Newman 1986), so
    $E\hat λ_i = λ_i$ at **every** depth L and
    $\mathrm{Var}\,\hat λ_i = ψ′(\tfrac{n-i+1}2)/(4L)$. Sorting each sample's $\hat λ$ (the
    engine's default, ``sort=True``) replaces them by order statistics, which are biased
    wherever neighbouring exponents overlap at finite L: the top one upwards, the bottom one
    downwards (at n = 50, L = 50, 400 samples, the sorted λ₁ sits 8.8 SE above Newman's; the
    bias falls like $1/\sqrt L$; `experiments.lyapunov.sorting_bias` estimates it). Their sum,
    $\tfrac1L E\ln|\det P_L|$, is the same either way.

    Arguments:
      width: n, a positive Python int.
      sigma_w: non-negative scalar.

    Returns:
      (width,) exponents, descending.
    """
    n = check_positive_integer("width", width, static=True)
    check_nonnegative("sigma_w", sigma_w)
    (sigma_w,) = _float(sigma_w)
    i = jnp.arange(1, n + 1, dtype=sigma_w.dtype)
    return jnp.log(sigma_w) + (jnp.log(2.0 / n) + digamma((n - i + 1) / 2)) / 2


def gaussian_log_gain(width, depth, sigma_w=1.0) -> LogGain:
    r"""Exact mean and variance of $\ln\|W_L\cdots W_1 u\|$, $W_{ij} \sim N(0, σ_w^2/n)$, u a unit vector.

    $$E = L\left[\ln σ_w + \tfrac12\left(\ln\tfrac2n + ψ(\tfrac n2)\right)\right], \qquad
    \mathrm{Var} = \tfrac L4\,ψ′(\tfrac n2).$$

    The mean per layer is the top Lyapunov exponent λ₁ (Newman 1986): $\ln\|P_L u\|$ for a
    fixed u is the QR method's unsorted first exponent $L\hat λ_1$ started from $Q_0 e_1 = u$,
    so it is unbiased at every depth, unlike the top *sorted* exponent. At large n,
    $E \approx L(\ln σ_w - \tfrac1{2n})$ and $\mathrm{Var} \approx L/(2n)$.

    Arguments:
      width: n, positive integer(s).
      depth: L, positive integer(s), e.g. ``jnp.arange(1, L + 1)`` for every depth.
      sigma_w: non-negative.

    Returns:
      `LogGain(mean, variance)`, broadcast over the arguments.
    """
    check_positive_integer("width", width)
    check_positive_integer("depth", depth)
    check_nonnegative("sigma_w", sigma_w)
    n, L, sigma_w = _float(width, depth, sigma_w)
    mean = L * (jnp.log(sigma_w) + (jnp.log(2 / n) + digamma(n / 2)) / 2)
    return LogGain(mean, L * polygamma(1, n / 2) / 4)


def relu_log_gain(width, depth, *, limit: bool = False) -> LogGain:
    r"""Mean and variance of $\ln\|J_L\cdots J_1 u\|$ for He-ReLU layers ($W_{ij} \sim N(0, 2/n)$, σ_b = 0).

    Exact at finite width (Hanin & Nica 2018): $\|J_L\cdots J_1 u\|^2 = \prod_\ell (2/n)\,χ^2_{K_\ell}$
    with $K_\ell \sim \mathrm{Binomial}(n, \tfrac12)$ independent. With probability
    `relu_zero_gain_probability` some $K_\ell = 0$: every unit is off, the gain is exactly
    0 and its log is −inf (so the unconditional mean is −inf). The moments returned are
    conditional on a non-zero gain ($K_\ell \ge 1$ for all ℓ): per layer,
    $E\ln\|\cdot\|^2 = E_K[\ln\tfrac4n + ψ(\tfrac K2)]$ and
    $\mathrm{Var} = E_K[ψ′(\tfrac K2)] + \mathrm{Var}_K[ψ(\tfrac K2)]$.

    With ``limit=True``: the log-normal limit of Hanin & Nica, obtained by expanding the
    exact law to first order in 1/n: $\ln\|J u\|^2 \approx N(-\tfrac52 β, 5β)$,
    $β = L/n$, i.e. $\ln\|J u\| \approx N(-\tfrac54 β, \tfrac54 β)$ (the Gaussian linear
    product has $N(-β, 2β)$ for the square: ReLU's masks add $3β$ of variance).

    Arguments:
      width: n, a positive Python int (positive integer(s) when ``limit=True``).
      depth: L, positive integer(s).
      limit: return the large-width limit instead of the exact moments.

    Returns:
      `LogGain(mean, variance)`.
    """
    check_positive_integer("depth", depth)
    if limit:
        check_positive_integer("width", width)
        n, L = _float(width, depth)
        return LogGain(-5 * L / (4 * n), 5 * L / (4 * n))
    n = check_positive_integer("width", width, static=True)
    return _relu_log_gain(n, depth)


@functools.partial(jax.jit, static_argnums=0)
def _relu_log_gain(n: int, depth) -> LogGain:
    (L,) = _float(depth)
    K = jnp.arange(1, n + 1, dtype=L.dtype)
    log_p = gammaln(n + 1.0) - gammaln(K + 1) - gammaln(n - K + 1) - n * jnp.log(2.0)
    p = jnp.exp(log_p) / -jnp.expm1(-n * jnp.log(2.0))  # conditional on K ≥ 1
    log_gain2 = jnp.log(4.0 / n) + digamma(K / 2)
    mean2 = jnp.sum(p * log_gain2)
    var2 = jnp.sum(p * (polygamma(1, K / 2) + (log_gain2 - mean2) ** 2))
    return LogGain(L * mean2 / 2, L * var2 / 4)


def relu_zero_gain_probability(width, depth) -> Array:
    r"""$P(J_L\cdots J_1 = 0) = 1 - (1 - 2^{-n})^L$ for He-ReLU with σ_b = 0: some layer has
    all n units off ($K_\ell = 0$), after which $h^{(\ell)} = 0$ and every later mask is 0."""
    check_positive_integer("width", width)
    check_positive_integer("depth", depth)
    n, L = _float(width, depth)
    return -jnp.expm1(L * jnp.log1p(-jnp.exp2(-n)))


def product_moments_gaussian(depth, k, *, width: int | None = None, sigma_w=1.0) -> Array:
    r"""Moments $m_k = \lim \tfrac1n E\,\mathrm{tr}(P P^\top)^k$ of the squared singular values
    of $P = W_L\cdots W_1$, $W_{ij} \sim N(0, σ_w^2/n)$.

    Infinite width: the Fuss–Catalan numbers (Młotkowski 2010; Penson & Życzkowski 2011),
    $$m_k = σ_w^{2Lk}\,\mathrm{FC}(L, k) = σ_w^{2Lk}\,\frac{1}{Lk+1}\binom{(L+1)k}{k}.$$
    FC(1, k) are the Catalan numbers (Marchenko–Pastur), FC(L, 2) = L + 1.

    Finite width n (``width=n``, k ≤ 2 only): $m_1 = σ_w^{2L}$, and for k = 2 the exact
    recursion $E\,\mathrm{tr}(W M W^\top)^2 = (1+\tfrac1n)\mathrm{tr}M^2 + \tfrac1n(\mathrm{tr}M)^2$,
    $E(\mathrm{tr}\,W M W^\top)^2 = (\mathrm{tr}M)^2 + \tfrac2n\mathrm{tr}M^2$ (for σ_w = 1), solved:
    $$m_2 = σ_w^{4L}\,\frac{(n+2)(1+2/n)^L - (n-1)(1-1/n)^L}{3} = σ_w^{4L}\left(L + 1 + \frac{L(L+1)}{2n} + O(n^{-2})\right).$$

    Arguments:
      depth: L, positive integer(s).
      k: moment order, non-negative integer(s) (0, 1 or 2 with `width`).
      width: None for the limit, or n (positive integer(s)).
      sigma_w: non-negative.

    Returns:
      m_k, broadcast over the arguments.
    """
    check_positive_integer("depth", depth)
    check_nonnegative("k", k)
    check_nonnegative("sigma_w", sigma_w)
    if width is None:
        L, k, sigma_w = _float(depth, k, sigma_w)
        log_binom = gammaln((L + 1) * k + 1) - gammaln(k + 1) - gammaln(L * k + 1)
        return jnp.exp(log_binom) / (L * k + 1) * sigma_w ** (2 * L * k)
    check_positive_integer("width", width)
    if not (isinstance(k, int) and 0 <= k <= 2):
        raise ValueError(f"the exact finite-width moment is implemented for k in (0, 1, 2), got k={k!r}")
    n, L, sigma_w = _float(width, depth, sigma_w)
    if k < 2:
        return sigma_w ** (2 * L * k)
    m2 = ((n + 2) * (1 + 2 / n) ** L - (n - 1) * (1 - 1 / n) ** L) / 3
    return m2 * sigma_w ** (4 * L)

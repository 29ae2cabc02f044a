r"""Residual branches scaled with depth: $h_\ell = h_{\ell-1} + β f(h_{\ell-1})$, $β = a L^{-α}$.

**Linear branch, exact at every width and depth.** With $f(h) = Wh$, $W_{ij} \sim N(0, σ_w^2/n)$
drawn afresh in each of the L blocks, condition on $h = h_{\ell-1}$: $Wh \sim N(0, σ_w^2\|h\|^2 I/n)$,
so $E\|h + βWh\|^2 = (1 + β^2σ_w^2)\|h\|^2$ (the cross term has mean 0) and, block by block,

$$\frac{E\|h_\ell\|^2}{\|h_0\|^2} = (1 + a^2σ_w^2 L^{-2α})^\ell
\xrightarrow{\ \ell = L \to \infty\ } \begin{cases} ∞ & α < ½ \ (\text{as } (1 + a^2σ_w^2)^L \text{ for } α = 0),\\
e^{a^2σ_w^2} & α = ½,\\ 1 & α > ½. \end{cases}$$

The Jacobian of the block is $I + βW$ whatever h is, so the forward gain $\|J_\ell\cdots J_1 u\|$ of
a unit u and the backward gain $\|J_1^\top\cdots J_\ell^\top e\|$ ($W^\top$ has W's law) have the
same law as $\|h_\ell\|/\|h_0\|$.

**Its log-normal spread.** More is exact: the ratio $R_\ell = \|h_\ell\|^2/\|h_{\ell-1}\|^2 =
\|\hat h + s g\|^2$, $s = βσ_w/\sqrt n$, $g \sim N(0, I_n)$, has a law that does not depend on
$\hat h$, so the $R_\ell$ are i.i.d. and $\ln\|h_\ell\|^2/\|h_0\|^2 = \sum_{k\le\ell} \ln R_k$ is a sum of
i.i.d. terms. $R/s^2$ is noncentral $χ^2_n(λ)$ with $λ = 1/s^2$, a Poisson(λ/2) mixture of central
$χ^2_{n+2K}$ (whose log has mean $ψ(n/2 + K) + \ln 2$ and variance $ψ′(n/2 + K)$), hence

$$E\ln R = \ln 2s^2 + E_Kψ(\tfrac n2 + K), \qquad
\mathrm{Var}\ln R = E_Kψ′(\tfrac n2 + K) + \mathrm{Var}_Kψ(\tfrac n2 + K),$$

evaluated here by summing over K (`linear_residual_log_gain`). Expanding $\ln R = 2sg_1 +
s^2(\|g\|^2 - 2g_1^2) + O(s^3)$ with $g_1 = \hat h\cdot g$: $\mathrm{Var}\ln R = 4s^2 + O(β^4)$, so for
α = ½ ($β^2 = a^2/L$) the spread tends to a finite limit, the only assumption being that the
higher orders vanish, $L\,O(β^4) = O(a^4/L)$:

$$\mathrm{Var}\ln\|h_L\|^2 \to \frac{4a^2σ_w^2}{n}, \qquad E\ln\|h_L\|^2/\|h_0\|^2 \to a^2σ_w^2\Big(1 - \frac2n\Big)
\qquad (L \to \infty,\ α = ½)$$

(`linear_residual_log_variance_limit`; the mean sits below $\ln E = a^2σ_w^2$ by half the
variance, as for a log-normal). For α > ½ both vanish; for α < ½ both grow without bound.

**Homogeneous nonlinear branch, mean field.** For $f(h) = φ(Wh)$ with φ positively homogeneous
(ReLU: $E φ′^2 = ½$) the block's Jacobian is $I + βD W$, $D = \mathrm{diag}\,φ′(Wh)$; at large
width, treating W in the backward pass as independent of the forward one (Schoenholz et al.
2017), $E\|(I + βDW)v\|^2 \approx (1 + β^2 χ_f)\|v\|^2$ with $χ_f = σ_w^2 E[φ′(z)^2]$, so the
product's mean-square gain is $(1 + β^2χ_f)^\ell$ and the α = ½ plateau is $e^{a^2χ_f}$ (`mean_field_residual_gain`).
This drops a term first order in β: the tangent along h obeys $Jh = h + βf(h)$ (homogeneity), and
for ReLU $E f(h) = σ_w\|h\|/\sqrt{2πn}\,\mathbf 1 \ne 0$, so $E\|h + βf(h)\|^2 = (1 + β^2χ_f)\|h\|^2 +
2β\,σ_w\|h\|\sum_i h_i/\sqrt{2πn}$; once h has a mean component (each block adds one) the cross term
sums to $O(Lβ)$, unbounded for α ≤ ½. Measured (experiments/residual_scaling.py, n = 16): at α = ½
ln E‖J_L⋯J_1u‖² keeps growing with L instead of levelling at $a^2/2$; the law is good only while
$Lβ \ll 1$ (α = 1) or for a zero-mean branch (linear).

References: K. He et al., CVPR 2016 (residual networks); G. Yang and E. Littwin et al.,
"Tensor Programs VI: Feature learning in infinite-depth neural networks", ICLR 2024 (depth-μP,
β ∝ L^{-1/2}); B. Bordelon et al., "Depthwise hyperparameter transfer in residual networks",
ICLR 2024; S. Hayou et al., "Stable ResNet", AISTATS 2021 (the e^{a²}-type limits at α = ½).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import scipy.special
from numpy.typing import ArrayLike

from jaxgrad.activations import Activation, derivative, get_activation
from jaxgrad.theory._checks import check_nonnegative, check_positive_integer

__all__ = [
    "ResidualLogGain",
    "linear_residual_gain",
    "linear_residual_log_gain",
    "linear_residual_log_variance_limit",
    "mean_field_residual_gain",
    "residual_gain_limit",
]


class ResidualLogGain(NamedTuple):
    """Mean and variance of $\\ln\\|h_\\ell\\|/\\|h_0\\|$ (natural log of the norm; ×2, ×4 for the squared norm)."""

    mean: np.ndarray
    variance: np.ndarray


def _beta(blocks, alpha, a):
    check_positive_integer("blocks", blocks)
    check_nonnegative("a", a)
    if not np.all(np.isfinite(np.asarray(alpha, np.float64))):
        raise ValueError(f"`alpha` (the depth exponent) must be finite, got alpha={alpha!r}")
    return np.asarray(a, np.float64) * np.asarray(blocks, np.float64) ** (-np.asarray(alpha, np.float64))


def _depth(blocks, depth):
    if depth is None:
        return np.asarray(blocks, np.float64)
    check_positive_integer("depth", depth)
    return np.asarray(depth, np.float64)


def linear_residual_gain(
    blocks: ArrayLike, alpha: ArrayLike, a: ArrayLike = 1.0, sigma_w: ArrayLike = 1.0, depth: ArrayLike | None = None
) -> np.ndarray:
    r"""$E\|h_\ell\|^2/\|h_0\|^2 = (1 + a^2σ_w^2 L^{-2α})^\ell$ for linear branches, exact (module docstring).

    Arguments:
      blocks: L, the number of blocks (it sets β = a·L^(−α)).
      alpha, a: the branch scale's exponent (finite) and prefactor (≥ 0).
      sigma_w: the branch weights' scale, $W_{ij} \sim N(0, σ_w^2/n)$.
      depth: ℓ ≤ L at which to evaluate (default L); arrays broadcast.

    Returns:
      The mean-square gain; also that of the forward and backward Jacobian gains.
    """
    beta = _beta(blocks, alpha, a)
    check_nonnegative("sigma_w", sigma_w)
    return np.exp(_depth(blocks, depth) * np.log1p((beta * np.asarray(sigma_w, np.float64)) ** 2))


def residual_gain_limit(alpha: float, a: float = 1.0, sigma_w: float = 1.0) -> float:
    """$\\lim_{L\\to\\infty}(1 + a^2σ_w^2L^{-2α})^L$: ∞ for α < ½, $e^{a^2σ_w^2}$ for α = ½, 1 for α > ½."""
    check_nonnegative("a", a)
    check_nonnegative("sigma_w", sigma_w)
    c = float(a) ** 2 * float(sigma_w) ** 2
    if c == 0.0 or alpha > 0.5:
        return 1.0
    return math.exp(c) if alpha == 0.5 else math.inf


def _log_ratio_moments(n: int, s2: float) -> tuple[float, float]:
    """E and Var of ln R, R/s² ~ noncentral χ²_n(1/s²), by the Poisson mixture (module docstring)."""
    if s2 == 0.0:
        return 0.0, 0.0
    mu = 0.5 / s2
    sd = math.sqrt(mu)
    lo, hi = max(0.0, mu - 14 * sd - 40), mu + 14 * sd + 40
    # The summand is smooth on the scale √μ: a stride ≪ √μ sums it to machine precision
    # (Euler–Maclaurin with a Gaussian-shaped summand), and a stride of 1 is the plain sum.
    stride = max(1, int(sd / 64))
    K = np.arange(math.floor(lo / stride) * stride, hi + stride, stride, dtype=np.float64)
    # The Poisson(μ) pmf as scipy.stats.poisson.pmf computes it (bit for bit), without importing scipy.stats:
    # that import was a third of `import jaxgrad`'s time.
    w = np.exp(scipy.special.xlogy(K, mu) - scipy.special.gammaln(K + 1) - mu) * stride
    w = w / w.sum()
    psi = scipy.special.digamma(n / 2 + K)
    mean_psi = float(np.sum(w * psi))
    mean = math.log(2 * s2) + mean_psi
    var = float(np.sum(w * scipy.special.polygamma(1, n / 2 + K)) + np.sum(w * (psi - mean_psi) ** 2))
    return mean, var


def linear_residual_log_gain(
    width: int,
    blocks: int,
    alpha: float,
    a: float = 1.0,
    sigma_w: float = 1.0,
    depth: ArrayLike | None = None,
) -> ResidualLogGain:
    r"""Exact mean and variance of $\ln\|h_\ell\|/\|h_0\|$ for linear branches at width n.

    $\ln\|h_\ell\|^2/\|h_0\|^2$ is a sum of ℓ i.i.d. $\ln R$, $R = s^2χ'^2_n(1/s^2)$, $s^2 = β^2σ_w^2/n$
    (module docstring); the forward and backward Jacobian gains have the same law.

    Arguments:
      width: n (a positive integer); blocks, alpha, a, sigma_w, depth: as in
      `linear_residual_gain` (scalars; depth may be an array of ℓ).

    Returns:
      `ResidualLogGain(mean, variance)` of the log of the norm (not squared).
    """
    n = check_positive_integer("width", width, static=True)
    beta = float(_beta(blocks, alpha, a))
    check_nonnegative("sigma_w", sigma_w)
    ell = _depth(blocks, depth)
    mean, var = _log_ratio_moments(n, (beta * float(sigma_w)) ** 2 / n)
    return ResidualLogGain(ell * mean / 2, ell * var / 4)


def linear_residual_log_variance_limit(width: int, a: float = 1.0, sigma_w: float = 1.0) -> float:
    r"""$\lim_{L\to\infty}\mathrm{Var}\ln\|h_L\|^2 = 4a^2σ_w^2/n$ for α = ½ (module docstring)."""
    n = check_positive_integer("width", width, static=True)
    check_nonnegative("a", a)
    check_nonnegative("sigma_w", sigma_w)
    return 4.0 * float(a) ** 2 * float(sigma_w) ** 2 / n


def mean_field_residual_gain(
    activation: str | Callable | Activation,
    blocks: ArrayLike,
    alpha: ArrayLike,
    a: ArrayLike = 1.0,
    sigma_w: float = 1.0,
    depth: ArrayLike | None = None,
) -> np.ndarray:
    r"""Mean field $(1 + β^2σ_w^2E[φ′(z)^2])^\ell$ for a positively homogeneous branch $φ(Wh)$ (module docstring).

    Exact for ``"linear"`` (`linear_residual_gain`); for ReLU ($E φ′^2 = ½$) it omits the drift of the
    branch's non-zero mean (module docstring) and fails at α ≤ ½ beyond small depth (measured).
    """
    act = get_activation(activation)
    if not act.homogeneous:
        raise ValueError(
            f"`activation` must be positively homogeneous (linear, relu, leaky_relu) for this closed "
            f"form, got activation={act.name!r}"
        )
    slope2 = float(np.mean(np.asarray(_derivative_squared(act))))
    return linear_residual_gain(blocks, alpha, a, float(sigma_w) * math.sqrt(slope2), depth)


def _derivative_squared(act):
    """φ′(1)², φ′(−1)²: for a positively homogeneous φ, φ′ is constant on each half-line, so E φ′(z)² is their mean."""
    return np.asarray(derivative(act.fn)(jnp.asarray([1.0, -1.0])), np.float64) ** 2

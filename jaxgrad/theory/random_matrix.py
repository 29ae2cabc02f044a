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
  S. Geman, "A limit theorem for the norm of random matrices", Ann. Probab. 8, 1980;
  Z. D. Bai, Y. Q. Yin, "Limit of the smallest eigenvalue of a large dimensional sample
  covariance matrix", Ann. Probab. 21, 1993 (the Marchenko–Pastur edge of ‖W‖₂).
  C. A. Tracy, H. Widom, "On orthogonal and symplectic matrix ensembles", Commun. Math.
  Phys. 177, 1996; I. M. Johnstone, "On the distribution of the largest eigenvalue in
  principal components analysis", Ann. Statist. 29, 2001.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import scipy.special
from jax.scipy.special import digamma, gammaln, polygamma
from jax.typing import ArrayLike

from jaxgrad.theory._checks import check_nonnegative, check_positive_integer

__all__ = [
    "LogGain",
    "ReluLogGainMoments",
    "TW1_MEAN",
    "critical_sigma_w_typical",
    "gaussian_log_gain",
    "gaussian_lyapunov_spectrum",
    "lyapunov_sorting_bias",
    "marchenko_pastur_edge",
    "product_moments_gaussian",
    "relu_layer_characteristic_function",
    "relu_log_gain",
    "relu_log_gain_density",
    "relu_log_gain_moments",
    "relu_zero_gain_probability",
    "tracy_widom_mean_norm",
]

Array = jax.Array


class LogGain(NamedTuple):
    """Mean and variance of $\\ln\\|J_L\\cdots J_1 u\\|$ (natural log of the norm, not its square)."""

    mean: Array
    variance: Array


def _float(*values) -> list[Array]:
    dtype = jnp.result_type(*values, float)
    return [jnp.asarray(v, dtype) for v in values]


def gaussian_lyapunov_spectrum(width: int, sigma_w: ArrayLike = 1.0) -> Array:
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
    bias falls like $1/\sqrt L$; `lyapunov_sorting_bias` computes it). Their sum,
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


def gaussian_log_gain(width: ArrayLike, depth: ArrayLike, sigma_w: ArrayLike = 1.0) -> LogGain:
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


def relu_log_gain(width: ArrayLike, depth: ArrayLike, *, limit: bool = False) -> LogGain:
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


def critical_sigma_w_typical(activation: str, width: int) -> float:
    r"""The σ_w at which the *typical* gain per layer, $E\ln\|J_\ell v\|$, is zero at width n (σ_b = 0).

    For the mean square, $E\|J_\ell v\|^2 = σ_w^2$ (linear) or $σ_w^2/2$ (ReLU) at every width, so
    the mean-square critical point is exactly 1 or √2. The typical rate is lower by the Jensen gap
    of the laws above, so the typical critical point is higher:

    * ``"linear"``: $\ln σ_w + \tfrac12(\ln\tfrac2n + ψ(\tfrac n2)) = 0$, i.e.
      $σ_w^* = \exp(-\tfrac12(\ln\tfrac2n + ψ(\tfrac n2))) \approx 1 + \tfrac1{2n}$ (Newman 1986);
    * ``"relu"``: $σ_w^* = \sqrt2\,\exp(-m)$ with m the exact mean per layer of
      `relu_log_gain` at σ_w² = 2 (conditional on a non-zero gain, Hanin & Nica 2020),
      $\approx \sqrt2\,(1 + \tfrac5{4n})$.

    Both networks are positively homogeneous, so the rate is $\ln σ_w$ plus a constant and the
    zero is exact at every depth (`jaxgrad.critical_point` with ``criterion="typical"`` measures it).
    """
    n = check_positive_integer("width", width, static=True)
    if activation == "linear":
        return float(math.exp(-0.5 * (math.log(2.0 / n) + scipy.special.digamma(n / 2))))
    if activation == "relu":
        with jax.enable_x64(True):  # in float64 whatever the caller's mode: the effect is 5/(4n)
            mean = float(_relu_log_gain(n, np.float64(1.0)).mean)
        return float(math.sqrt(2.0) * math.exp(-mean))
    raise ValueError(
        f"unknown `activation`={activation!r} for an exact finite-width law; valid choices are "
        f"['linear', 'relu'] (others: mean field, `critical_sigma_w`)"
    )


def relu_zero_gain_probability(width: ArrayLike, depth: ArrayLike) -> Array:
    r"""$P(J_L\cdots J_1 = 0) = 1 - (1 - 2^{-n})^L$ for He-ReLU with σ_b = 0: some layer has
    all n units off ($K_\ell = 0$), after which $h^{(\ell)} = 0$ and every later mask is 0."""
    check_positive_integer("width", width)
    check_positive_integer("depth", depth)
    n, L = _float(width, depth)
    return -jnp.expm1(L * jnp.log1p(-jnp.exp2(-n)))


def product_moments_gaussian(
    depth: ArrayLike, k: ArrayLike, *, width: ArrayLike | None = None, sigma_w: ArrayLike = 1.0
) -> Array:
    r"""Moments $m_k = \lim \tfrac1n E\,\mathrm{tr}(P P^\top)^k$ of the squared singular values
    of $P = W_L\cdots W_1$, $W_{ij} \sim N(0, σ_w^2/n)$.

    Infinite width: the Fuss–Catalan numbers (Młotkowski 2010; Penson & Życzkowski 2011),
    $$m_k = σ_w^{2Lk}\,\mathrm{FC}(L, k) = σ_w^{2Lk}\,\frac{1}{Lk+1}\binom{(L+1)k}{k}.$$
    FC(1, k) are the Catalan numbers (Marchenko–Pastur), FC(L, 2) = L + 1.

    Finite width n (``width=n``, k ≤ 2 only): $m_1 = σ_w^{2L}$, and for k = 2 the exact
    recursion $E\,\mathrm{tr}(W M W^\top)^2 = (1+\tfrac1n)\mathrm{tr}M^2 + \tfrac1n(\mathrm{tr}M)^2$,
    $E(\mathrm{tr}\,W M W^\top)^2 = (\mathrm{tr}M)^2 + \tfrac2n\mathrm{tr}M^2$ (for σ_w = 1), solved:
    $$m_2 = σ_w^{4L}\,\frac{(n+2)(1+2/n)^L - (n-1)(1-1/n)^L}{3}
          = σ_w^{4L}\left(L + 1 + \frac{L(L+1)}{2n} + O(n^{-2})\right).$$

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


# --------------------------------------------------------------------------- the exact He-ReLU law at finite width
# NumPy/SciPy, not JAX: the characteristic function needs the complex log-gamma function.


class ReluLogGainMoments(NamedTuple):
    """Per depth ℓ = 1..L: exact and log-normal-limit mean and variance of $\\ln\\|J_\\ell\\cdots J_1 u\\|$."""

    mean: np.ndarray
    variance: np.ndarray
    limit_mean: np.ndarray
    limit_variance: np.ndarray


@functools.lru_cache(maxsize=64)
def _active_law(n: int) -> tuple[np.ndarray, np.ndarray]:
    """K = 1..n and P(K | K ≥ 1) for K ~ Binomial(n, ½)."""
    K = np.arange(1, n + 1, dtype=np.float64)
    log_p = (
        scipy.special.gammaln(n + 1.0)
        - scipy.special.gammaln(K + 1)
        - scipy.special.gammaln(n - K + 1)
        - n * math.log(2.0)
    )
    return K, np.exp(log_p) / -math.expm1(-n * math.log(2.0))


def _check_widths(widths) -> np.ndarray:
    widths = np.asarray(widths)
    if widths.ndim != 1 or widths.size < 2 or not np.issubdtype(widths.dtype, np.integer) or widths.min() < 1:
        raise ValueError(f"`widths` must be [n_0, …, n_L], L ≥ 1, of positive integers, got widths={widths!r}")
    return widths


def relu_layer_characteristic_function(n_in: int, n_out: int, t: npt.ArrayLike) -> np.ndarray:
    r"""$φ(t) = E\,e^{itX}$ of one He-ReLU layer's log-gain term $X = \tfrac12\ln(\tfrac{2}{n_{in}}χ^2_K)$.

    K ~ Binomial(n_out, ½) conditioned on K ≥ 1 (a non-zero gain); from
    $E(χ^2_K)^s = 2^sΓ(K/2+s)/Γ(K/2)$ at $s = it/2$ (Hanin & Nica 2018):

    $$φ(t) = \Big(\frac{4}{n_{in}}\Big)^{it/2}\sum_{K=1}^{n_{out}} p_K\,\frac{Γ(K/2 + it/2)}{Γ(K/2)}, \qquad
    p_K = \binom{n_{out}}{K}\frac{2^{-n_{out}}}{1 - 2^{-n_{out}}}.$$

    Arguments:
      n_in, n_out: the layer's fan-in and width, positive ints.
      t: real frequencies, a 1-D array.

    Returns:
      complex128 array, the shape of t.
    """
    n_in = check_positive_integer("n_in", n_in, static=True)
    n_out = check_positive_integer("n_out", n_out, static=True)
    K, p = _active_law(n_out)
    s = 0.5j * np.atleast_1d(np.asarray(t, np.float64))[:, None]
    return np.exp(s[:, 0] * math.log(4.0 / n_in)) * (
        p * np.exp(scipy.special.loggamma(K / 2 + s) - scipy.special.gammaln(K / 2))
    ).sum(axis=1)


def relu_log_gain_density(widths: npt.ArrayLike, x: npt.ArrayLike, *, nodes: int = 4096) -> np.ndarray:
    r"""Exact density of $\ln\|J_L\cdots J_1 u\|$ for He-ReLU layers of widths $[n_0, …, n_L]$, given a non-zero gain.

    $\ln\|J u\| = \sum_\ell X_\ell$ with independent $X_\ell = \tfrac12\ln(\tfrac{2}{n_{\ell-1}}χ^2_{K_\ell})$,
    $K_\ell \sim \mathrm{Binomial}(n_\ell, ½)$ given $K_\ell \ge 1$ (Hanin & Nica 2018; see
    `relu_log_gain`), so its density is the inverse Fourier transform of the product of the
    per-layer characteristic functions (`relu_layer_characteristic_function`), the L-fold
    convolution done in Fourier space:

    $$f(x) = \frac1π\int_0^∞ \mathrm{Re}\Big[e^{-itx}\prod_\ell φ_\ell(t)\Big]\,dt,$$

    by the trapezoidal rule on $t \in [0, 40/\mathrm{sd}]$ with `nodes` nodes, sd the exact
    standard deviation (`relu_log_gain_moments`); values below 0 (quadrature ripple in the
    far tails) are clipped to 0. At small width the law is far from the log-normal limit
    (n = 8: variance 0.31 per layer against 5/(4n) = 0.16).

    Arguments:
      widths: [n_0, …, n_L], positive integers, L ≥ 1.
      x: points at which to evaluate, any 1-D array.
      nodes: trapezoid nodes in t.

    Returns:
      float64 array, the shape of x.
    """
    widths = _check_widths(widths)
    variance = sum(float(relu_log_gain(int(n), 1).variance) for n in widths[1:])
    t = np.linspace(0.0, 40.0 / math.sqrt(variance), nodes)
    phi = np.ones_like(t, dtype=np.complex128)
    for (n_in, n_out), count in zip(*np.unique(np.stack([widths[:-1], widths[1:]], 1), axis=0, return_counts=True)):
        phi *= relu_layer_characteristic_function(int(n_in), int(n_out), t) ** int(count)
    integrand = np.real(np.exp(-1j * np.outer(np.asarray(x, np.float64), t)) * phi)
    return np.maximum(np.trapezoid(integrand, t, axis=1) / np.pi, 0.0)


def relu_log_gain_moments(widths: npt.ArrayLike) -> ReluLogGainMoments:
    r"""Exact and limiting mean and variance of $\ln\|J_\ell\cdots J_1 u\|$, every depth ℓ = 1..L, He-ReLU.

    For a network of widths $[n_0, …, n_L]$ (mixed widths allowed): the per-layer terms of
    `relu_log_gain` (square layers of width $n_\ell$) add layer by layer, each shifted by
    $\tfrac12\ln(n_\ell/n_{\ell-1})$ since layer ℓ's weights are $N(0, 2/n_{\ell-1})$, not
    $N(0, 2/n_\ell)$. The limit columns are the log-normal limit
    $N(\tfrac12\ln\tfrac{n_\ell}{n_0} - \tfrac54β_\ell,\ \tfrac54β_\ell)$, $β_\ell = \sum_{k\le\ell}1/n_k$.
    Conditional on a non-zero gain, like `relu_log_gain`.

    Returns:
      `ReluLogGainMoments(mean, variance, limit_mean, limit_variance)`, each (L,) float64.
    """
    widths = _check_widths(widths)
    per_layer = {int(n): relu_log_gain(int(n), 1) for n in np.unique(widths[1:])}
    limit = {int(n): relu_log_gain(int(n), 1, limit=True) for n in per_layer}
    shift = 0.5 * np.log(widths[1:] / widths[:-1])  # ½ ln(n_ℓ/n_{ℓ−1}): 2/n_{ℓ−1} against 4/n_ℓ

    def take(table, field):
        return np.array([float(getattr(table[int(n)], field)) for n in widths[1:]])

    return ReluLogGainMoments(
        np.cumsum(take(per_layer, "mean") + shift),
        np.cumsum(take(per_layer, "variance")),
        np.cumsum(take(limit, "mean") + shift),
        np.cumsum(take(limit, "variance")),
    )


# --------------------------------------------------------------------------- the spectral norm of one Gaussian matrix

TW1_MEAN = -1.2065  # mean of the Tracy–Widom (β = 1) law (Tracy & Widom 1996)


def marchenko_pastur_edge(n_out: int, n_in: int, sigma_w: float = 1.0) -> float:
    r"""The limit $σ_w(1 + \sqrt{n_{out}/n_{in}})$ of $\|W\|_2$, $W_{ij} \sim N(0, σ_w^2/n_{in})$ ($n_{out}$ rows).

    The upper edge of the Marchenko–Pastur law of $W^\top W$, reached by the largest singular
    value as both widths grow at a fixed ratio (Geman 1980; Bai & Yin 1993): ≈ 2σ_w for a
    square matrix, although $E\|Wu\|^2 = σ_w^2$ for each unit vector u.
    """
    return float(sigma_w) * (1 + math.sqrt(n_out / n_in))


def tracy_widom_mean_norm(n_out: int, n_in: int, sigma_w: float = 1.0) -> tuple[float, float]:
    r"""(Johnstone's approximation of $E\|W\|_2$, the Tracy–Widom scale of $\|W\|_2$) for Gaussian W.

    $W_{ij} \sim N(0, σ_w^2/n_{in})$, shape $n_{out}\times n_{in}$. Johnstone (2001): with
    $a = \sqrt{n_{out}-1}$, $b = \sqrt{n_{in}}$, $μ = (a+b)^2$, $s = (a+b)(1/a + 1/b)^{1/3}$,
    $n_{in}\|W\|_2^2/σ_w^2 \approx μ + s\,\mathrm{TW}_1$ with $E\,\mathrm{TW}_1 = -1.2065$
    (`TW1_MEAN`), so

    $$E\|W\|_2 \approx σ_w\sqrt{(μ + s\,E\,\mathrm{TW}_1)/n_{in}}, \qquad
    \text{scale} = σ_w\,\frac{s}{2\sqrt{μ\,n_{in}}}$$

    (the scale is $d\|W\|_2/d\mathrm{TW}_1$ at μ: one Tracy–Widom unit in units of the norm).
    An approximation with an O(scale) error at small widths; $n_{out} - 1$ is floored at 1.
    """
    a, b = math.sqrt(max(n_out - 1, 1)), math.sqrt(n_in)
    mu, s = (a + b) ** 2, (a + b) * (1 / a + 1 / b) ** (1 / 3)
    mean = float(sigma_w) * math.sqrt((mu + s * TW1_MEAN) / n_in)
    scale = float(sigma_w) * s / (2 * math.sqrt(mu * n_in))  # d‖W‖/dλ · s
    return mean, scale


# --------------------------------------------------------------------------- the bias of sorted Lyapunov exponents


def lyapunov_sorting_bias(width: int, depth: int, *, draws: int = 20000, seed: int = 0) -> np.ndarray:
    r"""E[sorted per-sample QR exponents] − Newman's $λ_i$, Gaussian linear layers $N(0, 1/n)$, depth L.

    Each sample's **unsorted** QR exponent i is a mean of L independent
    $\tfrac12\ln(χ^2_{n-i+1}/n)$ (`gaussian_lyapunov_spectrum`), approximately
    $N(λ_i, ψ′(\tfrac{n-i+1}2)/(4L))$, independent over i. Sorting each sample (the engine's
    ``lyapunov_spectrum(..., sort=True)``) replaces them by order statistics, biased wherever
    neighbouring exponents overlap: the top upwards, the bottom downwards, falling like
    $1/\sqrt L$. The order-statistics mean has no closed form, so this draws `draws` samples of
    that independent normal law with NumPy (no engine, deterministic: a fixed seed) and returns
    $E[\mathrm{sort}(x)_i - x_i]$ over the same draws ($E x_i = λ_i$): the draws' own noise largely
    cancels, and the biases sum to exactly 0 (the sum of the exponents is sort-invariant).

    Arguments:
      width: n, a positive int.
      depth: L, a positive int.
      draws: Monte-Carlo draws of the independent law.
      seed: the NumPy seed.

    Returns:
      (width,) float64, indexed like the descending exponents.
    """
    width = check_positive_integer("width", width, static=True)
    depth = check_positive_integer("depth", depth, static=True)
    lam = np.asarray(gaussian_lyapunov_spectrum(width), np.float64)
    sd = np.sqrt(scipy.special.polygamma(1, (width - np.arange(width)) / 2) / (4 * depth))
    x = lam + sd * np.random.default_rng(seed).standard_normal((draws, width))
    return (-np.sort(-x, axis=1) - x).mean(axis=0)

r"""Statistics shared by the studies and the tests: one formula for each standard error.

Monte-Carlo checks in jaxgrad compare a measured statistic with a closed form at a
tolerance derived from its standard error (about 4 SE), never a guessed rtol. The
formulas live here once:

* mean: $\hat\mu = \bar x$, $\mathrm{SE} = s/\sqrt N$;
* variance: $\hat\sigma^2 = s^2$, $\mathrm{SE}^2 \approx (m_4 - \hat\sigma^4 (N-3)/(N-1))/N$
  (the exact large-sample variance of $s^2$, Cramér 1946 §27.4);
* log-mean-exp: $\ln\frac1N\sum_i e^{y_i}$, SE by the delta method
  (the relative standard error of the mean of $e^{y}$);
* two samples from one distribution? `ks_two_sample` (Kolmogorov–Smirnov, with its critical value);
* `Comparison`, the measured-vs-predicted record the gallery prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, SupportsFloat

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Comparison",
    "KolmogorovSmirnov",
    "ks_two_sample",
    "log_mean_exp",
    "mean_and_se",
    "pooled_variance",
    "quantiles",
    "slope",
    "variance_and_se",
    "within_standard_errors",
]


def mean_and_se(x: ArrayLike, axis: int = 0) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Sample mean and its standard error along `axis` (non-finite values are not dropped)."""
    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    return x.mean(axis), x.std(axis, ddof=1) / np.sqrt(n)


def variance_and_se(x: ArrayLike, axis: int = 0) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Sample variance (ddof=1) and its standard error, SE² ≈ (m₄ − σ⁴(n−3)/(n−1))/n."""
    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    d = x - x.mean(axis, keepdims=True)
    var = (d**2).sum(axis) / (n - 1)
    m4 = (d**4).mean(axis)
    return var, np.sqrt(np.maximum(m4 - var**2 * (n - 3) / (n - 1), 0.0) / n)


def pooled_variance(x: ArrayLike) -> tuple[float, float]:
    r"""Variance of x (samples, k) pooled over both axes, $\overline{x^2} - \bar x^2$, and its delta-method
    standard error over the per-sample moments (the samples, rows, are the independent units)."""
    x = np.asarray(x, np.float64)
    a, b = (x**2).mean(axis=1), x.mean(axis=1)
    cov = np.cov(np.stack([a, b])) / a.size
    grad = np.array([1.0, -2.0 * b.mean()])
    return float(a.mean() - b.mean() ** 2), float(np.sqrt(max(grad @ cov @ grad, 0.0)))


def log_mean_exp(y: ArrayLike, axis: int = 0) -> tuple[np.ndarray | float, np.ndarray | float]:
    r"""$\ln \frac1N\sum_i e^{y_i}$ and its delta-method standard error.

    SE ≈ sd(e^{y − m}) / (√N · mean(e^{y − m})): the relative error of the mean.
    """
    y = np.asarray(y, np.float64)
    m = y.max(axis, keepdims=True)
    w = np.exp(y - m)
    mean = w.mean(axis)
    n = y.shape[axis]
    return np.log(mean) + np.squeeze(m, axis), w.std(axis, ddof=1) / np.sqrt(n) / mean


def quantiles(x: ArrayLike, qs: Sequence[float] | np.ndarray = (5, 50, 95), axis: int = 0) -> np.ndarray:
    """Percentiles along `axis`, stacked on a leading axis of len(qs)."""
    return np.percentile(np.asarray(x, np.float64), qs, axis=axis)


def slope(depths: ArrayLike, y: ArrayLike) -> float:
    """Least-squares slope of y against depth."""
    depths = np.asarray(depths, np.float64)
    return float(np.polyfit(depths, np.asarray(y, np.float64), 1)[0])


class KolmogorovSmirnov(NamedTuple):
    statistic: float  # D = sup_x |F_x(x) − F_y(x)|
    critical: float  # D is below this with probability 1 − alpha when both samples share one distribution


def ks_two_sample(x: ArrayLike, y: ArrayLike, alpha: float = 1e-3) -> KolmogorovSmirnov:
    r"""Two-sample Kolmogorov–Smirnov statistic and its critical value at level `alpha`.

    $D = \sup_t |\hat F_x(t) - \hat F_y(t)|$; under the null (one continuous distribution)
    $P(D > c(α)\sqrt{(n+m)/(nm)}) \to α$ with $c(α) = \sqrt{-\tfrac12\ln(α/2)}$ (Smirnov 1948,
    the leading term of the Kolmogorov distribution's tail, accurate for n, m ≳ 50).
    """
    x = np.sort(np.asarray(x, np.float64).ravel())
    y = np.sort(np.asarray(y, np.float64).ravel())
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must lie in (0, 1), got alpha={alpha!r}")
    if x.size < 2 or y.size < 2:
        raise ValueError(f"each sample needs at least 2 values, got {x.size} and {y.size}")
    t = np.concatenate([x, y])
    D = np.max(np.abs(np.searchsorted(x, t, side="right") / x.size - np.searchsorted(y, t, side="right") / y.size))
    n, m = x.size, y.size
    return KolmogorovSmirnov(float(D), float(np.sqrt(-0.5 * np.log(alpha / 2)) * np.sqrt((n + m) / (n * m))))


class Comparison(NamedTuple):
    """One measured-vs-predicted record: passes iff ``|measured − predicted| ≤ tolerance``.

    Say in ``quantity`` where the tolerance comes from (standard errors, a grid step, a
    rounding bound); `within_standard_errors` builds the common 4-SE case.
    """

    quantity: str
    measured: float
    predicted: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(abs(float(self.measured) - float(self.predicted)) <= float(self.tolerance))

    def row(self) -> dict:
        return dict(
            quantity=self.quantity,
            measured=float(self.measured),
            predicted=float(self.predicted),
            tolerance=float(self.tolerance),
            passed=self.passed,
        )


def within_standard_errors(
    quantity: str,
    measured: SupportsFloat,
    se: SupportsFloat,
    predicted: SupportsFloat,
    *,
    k: float = 4.0,
    allowance: SupportsFloat = 0.0,
) -> Comparison:
    """`Comparison` at tolerance ``k·SE + allowance`` (a stated finite-size allowance, default 0)."""
    se, allowance = float(se), float(allowance)
    if not (np.isfinite(se) and se >= 0):
        raise ValueError(f"`se` must be a finite non-negative standard error, got se={se!r}")
    text = f"{quantity} (tolerance {k:g} SE" + (f" + {allowance:.3g} allowance)" if allowance else ")")
    return Comparison(text, float(measured), float(predicted), k * se + allowance)

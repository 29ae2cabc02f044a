"""Small statistics shared by the studies (not an experiment: no NAME)."""
from __future__ import annotations

import jax
import numpy as np


def require_integers(config, names, minimum: int = 2) -> None:
    """Raises ValueError naming the field unless each of `names` on `config` is an int ≥ `minimum`."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {name}={value!r}")


def engine_seed(key: jax.Array) -> int:
    """An integer seed for `jaxgrad.simulate` from a point's PRNG key."""
    return int(jax.random.bits(key, dtype=np.uint32))


def mean_and_se(x, axis=0):
    """Sample mean and its standard error along `axis` (non-finite values are not dropped)."""
    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    return x.mean(axis), x.std(axis, ddof=1) / np.sqrt(n)


def variance_and_se(x, axis=0):
    """Sample variance and its standard error, SE² ≈ (m₄ − σ⁴(n−3)/(n−1))/n."""
    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    d = x - x.mean(axis, keepdims=True)
    var = (d**2).sum(axis) / (n - 1)
    m4 = (d**4).mean(axis)
    return var, np.sqrt(np.maximum(m4 - var**2 * (n - 3) / (n - 1), 0.0) / n)


def log_mean_exp(y, axis=0):
    r"""$\ln \frac1N\sum_i e^{y_i}$ and its delta-method standard error.

    SE ≈ sd(e^{y − m}) / (√N · mean(e^{y − m})): the relative error of the mean.
    """
    y = np.asarray(y, np.float64)
    m = y.max(axis, keepdims=True)
    w = np.exp(y - m)
    mean = w.mean(axis)
    n = y.shape[axis]
    return np.log(mean) + np.squeeze(m, axis), w.std(axis, ddof=1) / np.sqrt(n) / mean


def quantiles(x, qs=(5, 50, 95), axis=0):
    """Percentiles along `axis`, stacked on a leading axis of len(qs)."""
    return np.percentile(np.asarray(x, np.float64), qs, axis=axis)


def slope(depths, y):
    """Least-squares slope of y against depth."""
    depths = np.asarray(depths, np.float64)
    return float(np.polyfit(depths, np.asarray(y, np.float64), 1)[0])

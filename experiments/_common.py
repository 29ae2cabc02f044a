"""Helpers shared by the studies (not an experiment: no NAME); statistics live in `jaxgrad.stats`."""

from __future__ import annotations

import jax
import numpy as np

from jaxgrad.stats import log_mean_exp, mean_and_se, quantiles, slope, variance_and_se  # noqa: F401 (re-exported to studies)


def require_integers(config, names, minimum: int = 2) -> None:
    """Raises ValueError naming the field unless each of `names` on `config` is an int ≥ `minimum`."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {name}={value!r}")


def engine_seed(key: jax.Array) -> int:
    """An integer seed for `jaxgrad.simulate` from a point's PRNG key."""
    return int(jax.random.bits(key, dtype=np.uint32))

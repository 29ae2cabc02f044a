"""Eager argument checks shared by the theory modules.

Arguments are checked only when they are concrete (Python numbers, NumPy or
committed JAX arrays). Under `jit`/`vmap` they are tracers: nothing is checked and
nothing raises, and invalid values propagate as NaN.
"""

from __future__ import annotations

import jax
import numpy as np


def concrete(*values) -> bool:
    return not any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(values))


def check_nonnegative(name: str, value):
    if concrete(value):
        v = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(v) & (v >= 0)):
            raise ValueError(f"`{name}` must be finite and non-negative, got {name}={value!r}")
    return value


def check_positive(name: str, value):
    if concrete(value):
        v = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"`{name}` must be finite and positive, got {name}={value!r}")
    return value


def check_positive_integer(name: str, value, *, static: bool = False):
    """Positive integer(s). With ``static=True`` a Python int is required (it sets a shape)."""
    if static:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(
                f"`{name}` must be a positive Python integer (it sets an array shape), got {name}={value!r}"
            )
        return int(value)
    if concrete(value):
        if isinstance(value, bool):
            raise ValueError(f"`{name}` must be a positive integer, got {name}={value!r}")
        v = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(v) & (v > 0) & (v == np.round(v))):
            raise ValueError(f"`{name}` must be a positive integer (or an array of them), got {name}={value!r}")
    return value

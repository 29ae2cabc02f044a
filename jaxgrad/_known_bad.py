"""jax/jaxlib versions known to compute what jaxgrad runs wrongly, with the evidence.

The project's dependencies exclude them (pyproject.toml); `jaxgrad info` says when one is
installed anyway, and tests/test_canary.py runs each bug's pure-JAX reproduction so that a
future version with the same bug fails CI.
"""

from __future__ import annotations

import importlib.metadata

KNOWN_BAD = {
    "0.10.2": (
        "XLA:CPU miscompiles jit(vmap(jacrev(f))) of a LayerNorm vmapped over rows (max error 0.54 on the "
        "pure-JAX reproduction in tests/test_canary.py, 0.0 on 0.10.1; issue 27): simulate measured an "
        "Equinox pre-LN transformer block 2-4 % wrong. jax-ml/jax#39103 is another 0.10.2 CPU miscompilation"
    ),
}


def jaxlib_version() -> str | None:
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None


def known_bad(version: str | None = None) -> str | None:
    """Why jaxlib `version` (default: the installed one) is known to be bad, or None."""
    version = jaxlib_version() if version is None else version
    return KNOWN_BAD.get(version) if version is not None else None

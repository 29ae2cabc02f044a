"""Workarounds for XLA bugs that jaxgrad's programs hit, applied when jaxgrad is imported.

XLA:CPU's concurrency-optimised scheduler (the default in jaxlib 0.10) can deadlock a
program that runs LAPACK custom calls (``jnp.linalg.qr``, as Haar-orthogonal weights
need) beside other operations: every thread waits and the call never returns (load 0).
A pure-JAX reproduction, no jaxgrad involved, on a 2-core CPU with jax 0.10.2::

    def f(k):
        h = jnp.ones(32)
        for kk in jax.random.split(k, 2):
            h = jnp.tanh(jnp.linalg.qr(jax.random.normal(kk, (32, 32)))[0] @ h)
        return h.sum()
    jax.jit(jax.vmap(f))(jax.random.split(jax.random.key(0), 64))   # never returns

With ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` it returns in a second.
The flag only changes the order in which XLA:CPU schedules independent operations, not
their arithmetic. XLA reads ``XLA_FLAGS`` when the backend starts (the first
computation), so setting it at import works unless JAX already computed something; a
user who sets the flag (either way) keeps their choice.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
# XLA aborts at start-up on a flag it does not know, so the flag is only set for jaxlib
# versions known to have it (the versions jaxgrad is tested with).
MIN_JAXLIB = (0, 10)


def _jaxlib_version() -> tuple[int, ...]:
    try:
        text = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return ()
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def apply() -> bool:
    """Adds ``FLAG=false`` to ``XLA_FLAGS`` unless the user set it; returns whether it did.

    Warns if JAX has already started its backends (then XLA has read its flags and the
    workaround cannot take effect in this process).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags or _jaxlib_version() < MIN_JAXLIB:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}=false".strip()
    if _backends_started():
        warnings.warn(
            f"JAX computed something before jaxgrad was imported, so XLA did not see {FLAG}=false; "
            "QR beside matmuls can then deadlock on CPU (jaxgrad/_xla_workarounds.py). "
            "Import jaxgrad first, or set the flag in XLA_FLAGS yourself.",
            RuntimeWarning,
            stacklevel=3,
        )
    return True


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # JAX internals moved, or JAX not imported yet
        return False

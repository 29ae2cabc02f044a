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

import os

FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def apply() -> bool:
    """Adds ``FLAG=false`` to ``XLA_FLAGS`` unless the user set it; returns whether it did."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags:
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}=false".strip()
    return True

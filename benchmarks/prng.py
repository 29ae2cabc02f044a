"""Drawing the weights: JAX's PRNG implementations on this machine, and the (seed, i) invariant.

    PYTHONPATH=. python -m benchmarks.prng IMPL PARTITIONABLE     # e.g. threefry2x32 1, threefry2x32 0, rbg 1

A jitted, vmapped `lax.scan` draws 16 samples × 64 layers of Gaussian 128 × 128 matrices, layer ℓ
of sample i from ``fold_in(fold_in(key(0, impl), i), ℓ)`` as the engine does, and sums their squares
(so no draw is dead code). Prints the backend compile time, µs per matrix, and whether sample 3's
result is the same drawn alone as in the batch of 16, and the first 8 of 16 the same as a batch of 8.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.monitoring as mon
import jax.numpy as jnp
import numpy as np

N, SAMPLES, DEPTH = 128, 16, 64


def _program(impl: str):
    """jit(vmap over samples of a scan over layers drawing N × N Gaussians, as the engine keys them)."""

    def sample(seed, i):
        key = jax.random.fold_in(jax.random.key(seed, impl=impl), i)

        def layer(total, ell):
            W = jax.random.normal(jax.random.fold_in(key, ell), (N, N), jnp.float32)
            return total + jnp.sum(W * W), None

        return jax.lax.scan(layer, jnp.float32(0.0), jnp.arange(DEPTH))[0]

    return jax.jit(lambda seed, idx: jax.vmap(lambda i: sample(seed, i))(idx), static_argnums=0)


def main(impl: str, partitionable: bool) -> None:
    jax.config.update("jax_threefry_partitionable", partitionable)  # a separate process: global is fine here
    compile_s = []
    mon.register_event_duration_secs_listener(
        lambda name, secs, **_: compile_s.append(secs) if name == "/jax/core/compile/backend_compile_duration" else None
    )
    draw = _program(impl)
    batch = jnp.arange(SAMPLES)
    full = np.asarray(draw(0, batch))
    compiled = sum(compile_s)
    t = time.perf_counter()
    for _ in range(5):
        draw(0, batch).block_until_ready()
    per_draw = (time.perf_counter() - t) / 5 / (SAMPLES * DEPTH)
    alone = np.asarray(draw(0, jnp.arange(3, 4)))[0]
    first8 = np.asarray(draw(0, jnp.arange(8)))
    print(
        f"{impl} partitionable={partitionable}: compile {compiled:.2f} s, {per_draw * 1e6:.1f} µs per {N}×{N} draw; "
        f"sample 3 alone = in the batch: {alone == full[3]}; first 8 of 16 = a batch of 8: "
        f"{np.array_equal(full[:8], first8)}"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] == "1")

"""The engine's full-work program at several micro-batch sizes (issue 30, results/benchmarks/NOTES.md).

    python -m benchmarks.micro_batch [WIDTH] [SAMPLES] [SIZES]   # default 64 256 16,32,64,128

`simulate`'s own program (``engine._simulation_program``, method power, every field, tanh, depth 64), compiled
once per micro-batch size and run over all samples; prints the median of 3 runs after a warm-up, µs per
sample-layer, and whether the results equal the first size's bit for bit (a sample's result must not depend on
the batch it runs in).
"""

from __future__ import annotations

import statistics
import sys
import time


def main(argv: list[str]) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxgrad
    from jaxgrad import probes
    from jaxgrad.engine import _check_fields, _simulation_program

    n = int(argv[0]) if argv else 64
    samples = int(argv[1]) if len(argv) > 1 else 256
    sizes = [int(m) for m in argv[2].split(",")] if len(argv) > 2 else [16, 32, 64, 128]
    depth = 64
    net = jaxgrad.mlp(width=n, depth=depth, activation="tanh", weights="gaussian")
    measure, _, _ = _simulation_program(net, "power", (), _check_fields(None, "power"), "float32", False)
    coefficients = probes.coefficient_arrays(net, "float32")
    base = jax.random.key(0)
    program = jax.jit(jax.vmap(lambda i, c, q0: measure(jax.random.fold_in(base, i), c, q0), in_axes=(0, None, None)))
    first = None
    for size in sizes:
        batches = [jnp.arange(c * size, (c + 1) * size, dtype=jnp.int32) for c in range(-(-samples // size))]
        compiled = program.lower(batches[0], coefficients, jnp.float32(1)).compile()
        outs = jax.block_until_ready([compiled(b, coefficients, jnp.float32(1)) for b in batches])
        times = []
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready([compiled(b, coefficients, jnp.float32(1)) for b in batches])
            times.append(time.perf_counter() - t)
        joined = {k: np.concatenate([o[k] for o in outs])[:samples] for k in outs[0]}
        first = first or joined
        same = all(np.array_equal(first[k], joined[k], equal_nan=True) for k in first)
        us = statistics.median(times) / (len(batches) * size * depth) * 1e6
        print(f"width {n}, micro-batch {size}: {us:.1f} µs per sample-layer; bit-identical to the first size: {same}")


if __name__ == "__main__":
    main(sys.argv[1:])

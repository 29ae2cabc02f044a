"""The cost of an adapter: an Equinox dense tanh block against the same block as a plain jaxgrad Layer.

    PYTHONPATH=. python -m benchmarks.adapters [--width 128] [--depth 16] [--samples 256] [--repeats 5]

Both networks draw the same weights (`eqx.nn.Linear`'s initialiser) and compute
$\\tanh(Wh + b)$; the only difference is that one recombines an `eqx.Module` while tracing.
Reported: the engine's execution time after compilation (its program for one micro-batch,
run over all samples; median and best of `repeats`, the programs interleaved), the ratio (target
≤ 1.2), and whether the optimised programs are equal once names and metadata are stripped
(then the adapter adds no work inside the compiled program). `jaxgrad.dense` (its
analytic Jacobian, Gaussian weights) is shown for reference. Takes about a minute on a CPU.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxgrad
from jaxgrad import ensemble, probes
from jaxgrad.adapters import from_equinox


def _networks(width: int, depth: int):
    import equinox as eqx

    class TanhBlock(eqx.Module):
        linear: eqx.nn.Linear

        def __init__(self, key):
            self.linear = eqx.nn.Linear(width, width, key=key)

        def __call__(self, h):
            return jnp.tanh(self.linear(h))

    def make(key):
        return TanhBlock(key)

    def init(key):
        linear = make(key).linear
        return linear.weight, linear.bias

    def apply(params, h):
        W, b = params
        return jnp.tanh(W @ h + b)

    plain = jaxgrad.Layer(init, apply, width, width, name="plain tanh")
    return {
        "equinox": jaxgrad.serial(*[from_equinox(make)] * depth),
        "plain": jaxgrad.serial(*[plain] * depth),
        "dense": jaxgrad.mlp(width, depth, activation="tanh"),
    }


def _compiled(net, samples: int):
    """The engine's program for one micro-batch of `samples`, compiled, and its arguments."""
    probe = probes.product_norms(net, dtype=jnp.float32, method="power")
    coefficients = probes.coefficient_arrays(net, np.float32)
    base = jax.random.key(0)
    program = jax.jit(jax.vmap(lambda i, c, q0: probe(jax.random.fold_in(base, i), c, q0), in_axes=(0, None, None)))
    args = (jnp.arange(samples, dtype=jnp.int32), coefficients, jnp.float32(1.0))
    t = time.perf_counter()
    compiled = program.lower(*args).compile()
    return compiled, args, time.perf_counter() - t


def _canonical_hlo(compiled) -> list[str]:
    """The optimised program's instructions without metadata and names (not its debug tables)."""
    lines = [line for line in compiled.as_text().splitlines() if " = " in line]
    lines = [re.sub(r", metadata=\{[^}]*\}", "", line) for line in lines]
    return [re.sub(r"[%\w.-]+\.\d+", "x", line) for line in lines]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    nets = _networks(args.width, args.depth)
    micro = min(args.samples, ensemble.micro_batch_size(4 * 8 * args.width**2, jax.devices()[0].platform))
    programs = {name: _compiled(net, micro) for name, net in nets.items()}
    times = {name: [] for name in nets}
    for _ in range(args.repeats):  # interleaved, so a change of load on a shared machine hits every program
        for name, (compiled, a, _) in programs.items():
            jax.block_until_ready(compiled(*a))  # warm
            t = time.perf_counter()
            for _ in range(-(-args.samples // micro)):
                jax.block_until_ready(compiled(*a))
            times[name].append(time.perf_counter() - t)
    out = {"settings": vars(args), "micro_batch": micro, "device": jax.devices()[0].device_kind}
    for name, (compiled, _, compile_s) in programs.items():
        hlo = _canonical_hlo(compiled)
        out[name] = dict(
            execute_s=statistics.median(times[name]),
            best_s=min(times[name]),
            all_s=times[name],
            compile_s=compile_s,
            hlo_instructions=len(hlo),
        )
    out["equinox_hlo_equals_plain"] = _canonical_hlo(programs["equinox"][0]) == _canonical_hlo(programs["plain"][0])
    out["equinox_over_plain"] = out["equinox"]["execute_s"] / out["plain"]["execute_s"]
    out["equinox_over_dense"] = out["equinox"]["execute_s"] / out["dense"]["execute_s"]
    # The best of the repeats is the least disturbed by other work on a shared machine (as `timeit` reports).
    out["best_equinox_over_plain"] = out["equinox"]["best_s"] / out["plain"]["best_s"]
    out["best_equinox_over_dense"] = out["equinox"]["best_s"] / out["dense"]["best_s"]
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()

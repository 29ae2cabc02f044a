"""What `simulate(..., norms_at=...)` saves: ln‖J_ℓ⋯J₁‖₂ at chosen depths only.

    PYTHONPATH=. python -m benchmarks.norms_at [--widths 64,128,256] [--depth 64] [--samples 512]
                                               [--count 12] [--repeats 3]

For each width: `jaxgrad.simulate` of a tanh MLP (σ_w = 1.2, Gaussian weights, float32) with the
product's norm at every depth, and with it at `log_spaced_depths` (depth, count) only (every other
field, the per-layer bound included, still at every depth). Times are end-to-end `simulate` calls
after a warm-up call (so without compilation), median of `repeats`, the two interleaved. Also
checks that the recorded columns agree with the every-depth run (max |Δ ln‖P‖|) and that the other
fields are bit-identical. Prints one JSON line per width.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import jaxgrad


def measure(width: int, depth: int, samples: int, count: int, repeats: int) -> dict:
    net = jaxgrad.mlp(width=width, depth=depth, activation="tanh", sigma_w=1.2)
    depths = jaxgrad.log_spaced_depths(depth, count)
    runs = {"every": {}, "some": dict(norms_at=depths)}
    results = {name: jaxgrad.simulate(net, samples, 0, **kw) for name, kw in runs.items()}  # warm-up: compiles
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, kw in runs.items():
            t = time.perf_counter()
            jaxgrad.simulate(net, samples, 0, **kw)
            times[name].append(time.perf_counter() - t)
    every, some = results["every"], results["some"]
    columns = np.asarray(depths) - 1
    same = all(
        np.array_equal(getattr(every, f), getattr(some, f))
        for f in ("log_norm_product", "log_forward_gain", "log_backward_gain", "log_signal_norm")
    )
    t_every, t_some = statistics.median(times["every"]), statistics.median(times["some"])
    return dict(
        width=width,
        depth=depth,
        samples=samples,
        norms_at=list(depths),
        every_s=t_every,
        some_s=t_some,
        speedup=t_every / t_some,
        other_fields_identical=same,
        max_abs_diff=float(np.max(np.abs(some.log_spectral_norm - every.log_spectral_norm[:, columns]))),
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="64,128,256")
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for width in (int(w) for w in args.widths.split(",")):
        print(json.dumps(measure(width, args.depth, args.samples, args.count, args.repeats)), flush=True)


if __name__ == "__main__":
    main()

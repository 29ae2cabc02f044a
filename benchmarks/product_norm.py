"""The warm-started ‖P_ℓ‖₂ run: the fixed 32 steps (`probes.product_lanczos_steps`) against adaptive blocks.

    PYTHONPATH=. python -m benchmarks.product_norm MODE WIDTH SAMPLES     # MODE: adaptive | fixed

One process per mode (the engine caches compiled programs per network, so the two must not share
one). ``adaptive`` replaces `probes.product_lanczos_steps` by the schedule the engine ran before
issue 27 (blocks of 8 steps until the Ritz value settles): faster on MLPs, but it stops on
stagnating runs (up to 0.35 low on residual token-state networks, `benchmarks.accuracy`).
Prints one JSON line: the median of 3 end-to-end `simulate` calls after a
warm-up (tanh, σ_w = 1.2, depth 64) and the largest |Δ ln‖P_ℓ‖₂| against ``method="svd"`` over
32 samples and every depth.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

import jaxgrad
from jaxgrad import probes


def main(mode: str, width: int, samples: int) -> None:
    if mode not in ("adaptive", "fixed"):
        raise SystemExit(f"MODE must be 'adaptive' or 'fixed', got {mode!r}")
    if mode == "adaptive":  # the schedule the engine used before issue 27 (blocks of 8 up to the fixed length)
        probes.product_lanczos_steps = lambda n: (min(8, probes.lanczos_steps(n)), probes.lanczos_steps(n))
    net = jaxgrad.mlp(width=width, depth=64, activation="tanh", sigma_w=1.2)
    power = jaxgrad.simulate(net, samples, 0, method="power")  # warm-up: compiles
    times = []
    for _ in range(3):
        t = time.perf_counter()
        jaxgrad.simulate(net, samples, 0, method="power")
        times.append(time.perf_counter() - t)
    exact = jaxgrad.simulate(net, 32, 0, method="svd")
    error = np.max(np.abs(power.log_spectral_norm[:32] - exact.log_spectral_norm))
    print(
        json.dumps(
            dict(mode=mode, width=width, samples=samples, seconds=statistics.median(times), max_abs_error=float(error))
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

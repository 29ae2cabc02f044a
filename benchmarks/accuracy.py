"""The `power` method's accuracy contract (1e-4 relative against SVD) over widths and hard cases.

    PYTHONPATH=. python -m benchmarks.accuracy [--widths 16,32,64,128,256,512] [--depth 8] [--samples 8]

For each width and case, `jaxgrad.simulate(method="power")` against ``method="svd"`` on the same
samples (same weights, inputs and probes): the largest |Δ ln‖J_ℓ⋯J₁‖₂| over samples and depths, and
the largest |Δ ln‖J_ℓ‖₂| of a single layer (from the bound's increments). Cases: tanh with Gaussian
weights (σ_w = 1), ReLU with Gaussian weights at σ_w = √2 (rank-deficient J_ℓ: about half the rows
zero), tanh with orthogonal weights at σ_w = 1.2 (a clustered top spectrum: `clustered_spectrum`),
linear with orthogonal weights at σ_w = 1 (every singular value equal: Lanczos breaks down at once).
Widths above 256 use a quarter of the samples. Prints one JSON line per (width, case).
"""
from __future__ import annotations

import argparse
import json

import numpy as np

import jaxgrad

CASES = {
    "tanh-gaussian": dict(activation="tanh", weights="gaussian", sigma_w=1.0),
    "relu-gaussian": dict(activation="relu", weights="gaussian", sigma_w=2 ** 0.5),
    "tanh-orthogonal": dict(activation="tanh", weights="orthogonal", sigma_w=1.2),
    "linear-orthogonal": dict(activation="linear", weights="orthogonal", sigma_w=1.0),
}


def measure(width: int, case: str, depth: int, samples: int) -> dict:
    net = jaxgrad.mlp(width=width, depth=depth, **CASES[case])
    samples = max(2, samples // 4) if width > 256 else samples
    p = jaxgrad.simulate(net, samples, 3, method="power")
    s = jaxgrad.simulate(net, samples, 3, method="svd")
    layer = np.abs(np.diff(p.log_norm_product, axis=1, prepend=0) - np.diff(s.log_norm_product, axis=1, prepend=0))
    return dict(width=width, case=case, depth=depth, samples=samples,
                product=float(np.max(np.abs(p.log_spectral_norm - s.log_spectral_norm))), layer=float(np.max(layer)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="16,32,64,128,256,512")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    for width in (int(w) for w in args.widths.split(",")):
        for case in CASES:
            print(json.dumps(measure(width, case, args.depth, args.samples)), flush=True)


if __name__ == "__main__":
    main()

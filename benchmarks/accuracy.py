"""The `power` method's accuracy contract (1e-4 relative against SVD) over widths and hard cases.

    PYTHONPATH=. python -m benchmarks.accuracy [--widths 16,32,64,128,256,512] [--depth 8] [--samples 8]

For each width and case, `jaxgrad.simulate(method="power")` against ``method="svd"`` on the same
samples (same weights, inputs and probes): the largest |Δ ln‖J_ℓ⋯J₁‖₂| over samples and depths, and
the largest |Δ ln‖J_ℓ‖₂| of a single layer (from the bound's increments). Cases: tanh with Gaussian
weights (σ_w = 1), ReLU with Gaussian weights at σ_w = √2 (rank-deficient J_ℓ: about half the rows
zero), tanh with orthogonal weights at σ_w = 1.2 (a clustered top spectrum: `clustered_spectrum`),
linear with orthogonal weights at σ_w = 1 (every singular value equal: Lanczos breaks down at once);
and structured networks (`STRUCTURED`): a residual block on a token state whose Jacobian is
block-diagonal (one block per token), a pre-LN residual network, residual self-attention and a
residual MLP.
Widths above 256 use a quarter of the samples. Prints one JSON line per (width, case).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import jaxgrad

CASES = {
    "tanh-gaussian": dict(activation="tanh", weights="gaussian", sigma_w=1.0),
    "relu-gaussian": dict(activation="relu", weights="gaussian", sigma_w=2**0.5),
    "tanh-orthogonal": dict(activation="tanh", weights="orthogonal", sigma_w=1.2),
    "linear-orthogonal": dict(activation="linear", weights="orthogonal", sigma_w=1.0),
}


def token_rms_residual(width: int, depth: int, tokens: int = 6):
    """X + tanh(RMS(X) Wᵀ) on a (tokens, width/tokens) state, W ~ N(0, 1.5²/features): a block-diagonal
    Jacobian (one block per token) with many singular values near 1, where a warm start alone
    loses the other tokens' directions (issue 27, item 2)."""
    import jax
    import jax.numpy as jnp

    features = max(2, width // tokens)

    def init(key):
        return {"W": 1.5 / features**0.5 * jax.random.normal(key, (features, features), jnp.float32)}

    def apply(p, X):
        r = X * jax.lax.rsqrt(jnp.mean(X * X, axis=-1, keepdims=True) + 1e-6)
        return X + jnp.tanh(jnp.matmul(r, p["W"].T, precision=jax.lax.Precision.HIGHEST))

    block = jaxgrad.adapters.from_functions(init, apply, shape=(tokens, features), name="token-rms-residual")
    return jaxgrad.serial(*[block] * depth)


# Structured networks: residual, normalised, attention and token states (the contract was first measured on MLPs).
STRUCTURED = {
    "token-rms-residual": token_rms_residual,
    "resnet-pre-ln": lambda width, depth: jaxgrad.resnet(width, depth, activation="tanh", alpha=0.0, norm="pre"),
    "attention-residual": lambda width, depth: jaxgrad.serial(
        *[jaxgrad.attention(tokens=4, width=max(2, width // 4), residual_scale=1.0)] * depth
    ),
    "mlp-residual": lambda width, depth: jaxgrad.mlp(width=width, depth=depth, residual_alpha=0.5),
}


def network(width: int, case: str, depth: int):
    if case in STRUCTURED:
        return STRUCTURED[case](width, depth)
    return jaxgrad.mlp(width=width, depth=depth, **CASES[case])


def measure(width: int, case: str, depth: int, samples: int) -> dict:
    net = network(width, case, depth)
    samples = max(2, samples // 4) if width > 256 else samples
    p = jaxgrad.simulate(net, samples, 3, method="power")
    s = jaxgrad.simulate(net, samples, 3, method="svd")
    layer = np.abs(np.diff(p.log_norm_product, axis=1, prepend=0) - np.diff(s.log_norm_product, axis=1, prepend=0))
    return dict(
        width=width,
        case=case,
        depth=depth,
        samples=samples,
        product=float(np.max(np.abs(p.log_spectral_norm - s.log_spectral_norm))),
        layer=float(np.max(layer)),
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="16,32,64,128,256,512")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    for width in (int(w) for w in args.widths.split(",")):
        for case in (*CASES, *STRUCTURED):
            print(json.dumps(measure(width, case, args.depth, args.samples)), flush=True)


if __name__ == "__main__":
    main()

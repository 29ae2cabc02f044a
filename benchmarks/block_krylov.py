"""Block Krylov for ‖J_ℓ‖₂ (issue 19, item 1): measured against the engine's cold 32-step Lanczos.

    PYTHONPATH=. python -m benchmarks.block_krylov [WIDTH ...]

J = diag(φ′(z)) W as in a tanh layer at σ_w = 1.5, σ_b = 0.3 (W Gaussian, z ~ N(0, q*)), 16 per batch
(the engine's micro-batch). Each method runs vmapped over the batch in one jitted program:

* ``lanczos32``: `jaxgrad.spectral.lanczos_top_singular(J, v0, 32, reorthogonalise=False)`, what the
  engine runs for the cold ‖J_ℓ‖₂ of a Gaussian layer;
* ``block b×q``: randomised block Krylov (Musco & Musco 2015): Y₀ = Ω (n × b Gaussian),
  Y_i = orth(JᵀJ Y_{i-1}) for i = 1..q, K = orth([Y₁ … Y_q]), σ₁ = √λ_max(Kᵀ JᵀJ K), with orth a
  Householder QR or Cholesky QR2 (GEMMs and a b × b Cholesky); each step is two n × n × b GEMMs
  instead of two matrix–vector products.

Prints, per method: µs per matrix (median of 5 calls after compilation), the compile time, and the
worst relative error of σ₁ against `jnp.linalg.svd` over 64 matrices.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad import spectral
from jaxgrad.layers import HIGHEST

BATCH, CHECK = 16, 64


def _matrices(key, n, count):
    kw, kz = jax.random.split(key)
    W = jax.random.normal(kw, (count, n, n)) * (1.5 / np.sqrt(n))
    z = jax.random.normal(kz, (count, n)) * 0.8
    return (1 - jnp.tanh(z) ** 2)[:, :, None] * W


def lanczos32(J, key):
    v0 = jax.random.normal(key, (J.shape[-1],), J.dtype)
    return spectral.lanczos_top_singular(J, v0, 32, reorthogonalise=False).value


def _cholesky_qr2(Y):
    """Orthonormal columns spanning Y by Cholesky QR, twice (GEMMs and a b × b Cholesky, no Householder)."""
    for _ in range(2):
        L = jnp.linalg.cholesky(jnp.matmul(Y.T, Y, precision=HIGHEST))
        Y = jax.scipy.linalg.solve_triangular(L, Y.T, lower=True).T
    return Y


def block(b, q, orth=None):
    qr = orth or (lambda Y: jnp.linalg.qr(Y)[0])

    def top(J, key):
        n = J.shape[-1]
        Y = jax.random.normal(key, (n, b), J.dtype)
        blocks = []
        for _ in range(q):
            Y = jnp.matmul(J.T, jnp.matmul(J, Y, precision=HIGHEST), precision=HIGHEST)
            Y = qr(Y)
            blocks.append(Y)
        K = qr(jnp.concatenate(blocks, axis=1))
        B = jnp.matmul(J, K, precision=HIGHEST)
        gram = jnp.matmul(B.T, B, precision=HIGHEST)
        return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], 0.0))

    top.__name__ = f"block {b}×{q}" + (" (Cholesky QR2)" if orth else "")
    return top


def measure(method, n):
    program = jax.jit(jax.vmap(method))
    keys = jax.random.split(jax.random.key(1), CHECK)
    J = _matrices(jax.random.key(0), n, CHECK)
    t0 = time.perf_counter()
    program(J[:BATCH], keys[:BATCH]).block_until_ready()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        program(J[:BATCH], keys[:BATCH]).block_until_ready()
        times.append(time.perf_counter() - t0)
    got = np.concatenate([np.asarray(program(J[i : i + BATCH], keys[i : i + BATCH])) for i in range(0, CHECK, BATCH)])
    exact = np.linalg.svd(np.asarray(J, np.float64), compute_uv=False)[:, 0]
    return 1e6 * np.median(times) / BATCH, compile_s, float(np.max(np.abs(got / exact - 1)))


def main(widths):
    methods = [lanczos32] + [
        block(b, q, orth) for orth in (None, _cholesky_qr2) for b, q in ((4, 6), (8, 4), (8, 5), (16, 3), (16, 4))
    ]
    print("| n | method | µs per matrix | compile s | worst rel. error |\n|---:|---|---:|---:|---:|")
    for n in widths:
        for method in methods:
            us, c, err = measure(method, n)
            print(f"| {n} | {method.__name__} | {us:.0f} | {c:.2f} | {err:.1e} |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [64, 128, 256])

"""A fused CPU kernel for the cold Lanczos run of ‖J_ℓ‖₂, measured against the engine's JAX one (issue 30).

Not used by jaxgrad: the record of a candidate (results/benchmarks/NOTES.md, "Issue 30"). Under `vmap`,
XLA:CPU runs each of the 32 Lanczos steps batch-major over a micro-batch of matrices, so every matrix is
re-read from L2 64 times; ``ffi_lanczos.cc`` runs all steps on one matrix before the next (it stays in
L1) and, in its fused form, also finds the top eigenvalue of the 32 × 32 tridiagonal (float64 Sturm
bisection) instead of a LAPACK ``eigh`` per sample. It needs a C++ compiler and jaxlib's FFI headers.

    python -m benchmarks.ffi_lanczos [WIDTHS…]   # default 32 64 128 256; builds into a temporary folder

prints, per width, µs per matrix (16 samples × a `lax.scan` over 64 layers, each drawing W, forming
J = diag(tanh(z)) W and taking its top singular value; medians of 5 alternating runs after a warm-up) for:
drawing alone (``none``), the engine's `lanczos_top_singular(…, reorthogonalise=False)` (``jax``), the
same on an explicit Gram matrix JᵀJ (``gram``), the kernel's recurrence + JAX ``eigh`` (``ffi``), the fused
kernel (``fused``); and the largest relative difference of each from a float64 SVD.
"""

from __future__ import annotations

import ctypes
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

SOURCE = pathlib.Path(__file__).with_suffix(".cc")
STEPS, BATCH, DEPTH, RUNS = 32, 16, 64, 5


def build(folder: pathlib.Path) -> pathlib.Path:
    import jax.ffi

    lib = folder / "liblanczos_ffi.so"
    include = jax.ffi.include_dir()
    subprocess.run(
        ["g++", "-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", f"-I{include}"]
        + [str(SOURCE), "-o", str(lib)],
        check=True,
        capture_output=True,
    )
    return lib


def register(lib_path: pathlib.Path):
    """The two kernels as JAX functions ``(J, v0) -> σ_max`` (vmap-able: ``vmap_method="broadcast_all"``)."""
    import jax
    import jax.numpy as jnp

    from jaxgrad.spectral import _tridiagonal

    lib = ctypes.cdll.LoadLibrary(str(lib_path))
    jax.ffi.register_ffi_target("jaxgrad_lanczos_f32", jax.ffi.pycapsule(lib.LanczosTopSingularF32), platform="cpu")
    jax.ffi.register_ffi_target(
        "jaxgrad_lanczos_value_f32", jax.ffi.pycapsule(lib.LanczosTopSingularValueF32), platform="cpu"
    )

    def ffi(J, v0):  # the kernel's α, β; the top Ritz value by LAPACK eigh, as the engine does
        out = jax.ShapeDtypeStruct(J.shape[:-2] + (STEPS,), jnp.float32)
        alpha, beta = jax.ffi.ffi_call("jaxgrad_lanczos_f32", (out, out), vmap_method="broadcast_all")(
            J,
            v0,
            steps=STEPS,  # a Python int attribute arrives as int64
        )
        return jnp.sqrt(jnp.maximum(jnp.linalg.eigh(_tridiagonal(alpha, beta))[0][-1], 0.0))

    def fused(J, v0):
        out = jax.ShapeDtypeStruct(J.shape[:-2], jnp.float32)
        return jax.ffi.ffi_call("jaxgrad_lanczos_value_f32", out, vmap_method="broadcast_all")(J, v0, steps=STEPS)

    return ffi, fused


def main(argv: list[str]) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxgrad.layers import HIGHEST
    from jaxgrad.spectral import lanczos_top_singular, lanczos_top_singular_operator

    def gram(J, v):  # JᵀJ formed once (a GEMM), then one matrix–vector product per step instead of two
        G = jnp.matmul(J.T, J, precision=HIGHEST)
        return lanczos_top_singular_operator(
            lambda x: jnp.matmul(G, x, precision=HIGHEST), v, STEPS, reorthogonalise=False
        ).value

    widths = [int(a) for a in argv] or [32, 64, 128, 256]
    with tempfile.TemporaryDirectory() as folder:
        ffi, fused = register(build(pathlib.Path(folder)))
        top = dict(
            none=lambda J, v: jnp.linalg.norm(J),
            jax=lambda J, v: lanczos_top_singular(J, v, STEPS, reorthogonalise=False).value,
            gram=gram,
            ffi=ffi,
            fused=fused,
        )

        def program(n, how, keep=False):  # keep: also return every J (the accuracy check, not timed)
            def one(key):
                def layer(acc, ell):
                    kW, kz, kv = jax.random.split(jax.random.fold_in(key, ell), 3)
                    W = jax.random.normal(kW, (n, n), jnp.float32) / np.sqrt(n)
                    J = jnp.tanh(jax.random.normal(kz, (n,), jnp.float32))[:, None] * W
                    s = top[how](J, jax.random.normal(kv, (n,), jnp.float32))
                    return acc + s, (s, J) if keep else s

                return jax.lax.scan(layer, jnp.zeros((), jnp.float32), jnp.arange(DEPTH))

            return jax.jit(jax.vmap(one))

        keys = jax.random.split(jax.random.key(0), BATCH)
        print(
            f"{'n':>4} "
            + " ".join(f"{h + ' µs':>10}" for h in top)
            + "   max rel. error vs float64 SVD (jax, gram, ffi, fused)"
        )
        for n in widths:
            compiled = {h: program(n, h).lower(keys).compile() for h in top}
            outs = {h: jax.block_until_ready(f(keys)) for h, f in compiled.items()}  # warm-up
            times: dict[str, list[float]] = {h: [] for h in top}
            for r in range(RUNS):
                for h in list(top) if r % 2 == 0 else list(top)[::-1]:
                    t = time.perf_counter()
                    jax.block_until_ready(compiled[h](keys))
                    times[h].append(time.perf_counter() - t)
            J = np.asarray(program(n, "none", keep=True)(keys[:4])[1][1], np.float64)  # 4 samples × 64 layers
            exact = np.linalg.svd(J, compute_uv=False)[..., 0]
            errors = [np.max(np.abs(np.asarray(outs[h][1])[:4] - exact) / exact) for h in list(top)[1:]]
            us = [statistics.median(times[h]) / (BATCH * DEPTH) * 1e6 for h in top]
            print(f"{n:4d} " + " ".join(f"{u:10.1f}" for u in us) + "   " + ", ".join(f"{e:.1e}" for e in errors))


if __name__ == "__main__":
    main(sys.argv[1:])

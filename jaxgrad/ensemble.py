r"""Running a per-sample function over many samples: micro-batches, devices, chunks.

The result for sample i must be a function of (seed, i) alone. XLA may round
differently for different batch shapes, so every sample is computed inside a
micro-batch of a fixed size `micro_batch` (a function of the problem and the
backend, never of `chunk_size` or the device count). A call of the compiled program
runs one micro-batch on every device of a `jax.sharding.Mesh` (`jax.shard_map`);
chunking and sharding change only how many such calls run, never their arithmetic.
Calls are dispatched asynchronously and read back once per chunk, so the host
waits once per chunk, not per layer or per sample.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SampleFn = Callable[[jax.Array], dict]  # sample index (int32 scalar) -> dict of arrays


def micro_batch_size(bytes_per_sample: int, platform: str) -> int:
    """Samples per micro-batch: small on CPU (cache-friendly), large on accelerators.

    Depends only on the per-sample working set and the platform, so it is the same on
    every machine of a platform whatever its memory, chunk size or device count.
    """
    budget = (64 << 20) if platform == "cpu" else (2 << 30)
    cap = 16 if platform == "cpu" else 1024
    fit = max(1, budget // max(1, bytes_per_sample))
    return int(min(cap, 2 ** int(math.log2(fit))))


def available_memory_bytes(device) -> int:
    """Free memory of a device (its allocator's view) or of the host for CPU."""
    try:
        stats = device.memory_stats()
        if stats and "bytes_limit" in stats:
            return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    except Exception:  # CPU devices have no memory_stats
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return 4 << 30


class Progress:
    """A minimal progress bar on stderr, shown only for work longer than a few seconds."""

    def __init__(self, total: int, label: str, enabled: bool = True):
        self.total, self.label, self.done = total, label, 0
        self.enabled = enabled and total > 1
        self.start = time.perf_counter()

    def update(self, n: int) -> None:
        self.done += n
        elapsed = time.perf_counter() - self.start
        if not self.enabled or elapsed < 2.0:
            return
        frac = self.done / self.total
        bar = "#" * int(30 * frac)
        eta = elapsed / max(frac, 1e-9) - elapsed
        sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} ({elapsed:.0f}s, eta {eta:.0f}s)")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_samples(
    sample_fn: SampleFn,
    samples: int,
    *,
    micro_batch: int,
    devices: Sequence[jax.Device],
    chunk_size: int | None = None,
    sample_offset: int = 0,
    progress: str | None = None,
) -> dict[str, np.ndarray]:
    """Evaluates ``sample_fn(i)`` for i in [offset, offset + samples), stacked on axis 0.

    Arguments:
      sample_fn: traceable function of an int32 sample index returning a dict of arrays.
      samples: how many samples.
      micro_batch: samples per device per call (fixes the compiled arithmetic).
      devices: devices to shard over (a 1-D mesh named "samples").
      chunk_size: samples read back per host round trip; rounded up to a multiple of
        ``micro_batch × len(devices)``. ``None``: as many as fit in a quarter of memory.
      sample_offset: first sample index (a process of a multi-process run starts here).
      progress: label for a progress bar, or None for none.

    Returns:
      Dict of NumPy arrays with leading axis `samples`.
    """
    mesh = Mesh(np.asarray(devices), ("samples",))
    spec = PartitionSpec("samples")
    per_call = micro_batch * len(devices)
    batched = jax.jit(jax.shard_map(jax.vmap(sample_fn), mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False))
    sharding = NamedSharding(mesh, spec)
    calls = -(-samples // per_call)
    if chunk_size is None:
        calls_per_chunk = calls
    else:
        calls_per_chunk = max(1, -(-int(chunk_size) // per_call))
    bar = Progress(samples, progress or "", enabled=progress is not None)
    pieces: list[dict[str, np.ndarray]] = []
    for first_call in range(0, calls, calls_per_chunk):
        pending = []
        for c in range(first_call, min(calls, first_call + calls_per_chunk)):
            idx = sample_offset + c * per_call + np.arange(per_call, dtype=np.int32)
            pending.append(batched(jax.device_put(idx, sharding)))
        for out in pending:  # one host sync per chunk
            pieces.append(jax.tree.map(np.asarray, out))
            bar.update(min(per_call, samples - (len(pieces) - 1) * per_call))
    stacked = {k: np.concatenate([p[k] for p in pieces])[:samples] for k in pieces[0]}
    return stacked

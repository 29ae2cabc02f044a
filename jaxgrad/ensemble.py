r"""The ensemble runner: any per-sample function over many samples, compiled once.

`run` owns everything about *where* samples run; a probe (`jaxgrad.probes`) or a user's
own function says *what* is computed for one sample:

    fn(key_i, *args) -> pytree of arrays        (or fn(key_i, data_i, *args) with `per_sample`)

with ``key_i = fold_in(key(seed), i)``. The result for sample i is a function of
(seed, i, args) alone:

* **micro-batches**: every sample is computed inside a micro-batch of a fixed size
  (`micro_batch_size`: a function of the per-sample working set and the platform,
  never of the chunk size or the device count), because XLA may round differently for
  different batch shapes;
* **chunks**: calls are dispatched asynchronously and read back once per chunk, so the
  host waits once per chunk, never per layer or per sample;
* **devices**: a call runs one micro-batch on every local device of a 1-D
  `jax.sharding.Mesh` (`jax.shard_map`);
* **processes**: on a `jax.distributed` run (`jaxgrad.cluster`) process p computes the
  contiguous block `cluster.sample_block` of the samples on its local devices and the
  blocks are gathered bit-exactly on every process, so any function, a user's too,
  runs unchanged on N processes with results identical to one process;
* **grids**: ``grid_size=G`` makes every leaf of `args` carry a leading axis G; the
  G × samples items run in the same program and the result gains a leading axis G;
  `seed` may then hold one seed or key per grid point.

**Compile once.** The compiled program is cached per (function, cache key, micro-batch,
devices, argument structure); seeds, keys and `args` are traced inputs, so a new seed or
hyperparameter value reuses it. `compile_count` reads JAX's own backend-compile events.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxgrad import cluster
from jaxgrad.progress import Progress

__all__ = ["compile_count", "count_nonfinite", "micro_batch_size", "run"]

PyTree = Any  # a pytree of arrays

_CACHE_SIZE = 64
_programs: collections.OrderedDict[Hashable, Callable] = collections.OrderedDict()
_compiles = [0]


def _on_event(event: str, duration_secs: float, **kwargs: str | int) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        _compiles[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


def compile_count() -> int:
    """Backend compilations in this process so far (JAX's ``backend_compile`` events).

    Two calls that should share a program: ``before = compile_count(); …; assert
    compile_count() == before``.
    """
    return _compiles[0]


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


def count_nonfinite(tree: PyTree) -> dict[str, int]:
    """Per leaf (by its path), the number of samples (rows) with any non-finite value.

    Floating leaves only; rows are the leading axis (after any grid axes, pass the
    result of one grid point or flatten first).
    """
    counts = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        leaf = np.asarray(leaf)
        if leaf.ndim and np.issubdtype(leaf.dtype, np.floating):
            bad = ~np.isfinite(leaf.reshape(leaf.shape[0], -1))
            counts[jax.tree_util.keystr(path)] = int(bad.any(axis=1).sum())
    return counts


# --------------------------------------------------------------------------- checks


def _check_count(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}, got {name}={value!r}")
    return int(value)


def _base_keys(seed, key, grid: int | None) -> tuple[np.ndarray, str]:
    """(G, k) uint32 key data and the PRNG implementation's name, from seed(s) or key(s)."""
    if key is not None:
        key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.dtype == jnp.uint32 and key.shape[-1:] == (2,):
                key = jax.random.wrap_key_data(key)
            else:
                raise ValueError(
                    f"`key` must be a JAX PRNG key (jax.random.key(…)), got dtype={key.dtype}, shape={key.shape}"
                )
        impl = str(jax.random.key_impl(key))
        data = np.asarray(jax.random.key_data(key))
        if grid is None and data.ndim != 1:
            raise ValueError(f"`key` must be a single key without a grid, got a key array of shape {key.shape}")
        data = data.reshape(-1, data.shape[-1])
    else:
        seeds = np.atleast_1d(np.asarray(seed))
        if (
            seeds.dtype == bool
            or not np.issubdtype(seeds.dtype, np.integer)
            or seeds.ndim != 1
            or (seeds < 0).any()
            or (seeds >= 2**32).any()
        ):
            raise ValueError(
                f"`seed` must be an integer in [0, 2**32) (or, with a grid, one per grid point), got seed={seed!r}"
            )
        if grid is None and np.ndim(seed) != 0:
            raise ValueError(f"`seed` must be one integer without a grid, got seed={seed!r}")
        impl = str(jax.random.key_impl(jax.random.key(0)))
        data = np.stack([np.asarray(jax.random.key_data(jax.random.key(int(s)))) for s in seeds])
    g = 1 if grid is None else grid
    if data.shape[0] not in (1, g):
        raise ValueError(f"`seed`/`key` must give one key or one per grid point ({g}), got {data.shape[0]}")
    return np.broadcast_to(data, (g, data.shape[1])).astype(np.uint32), impl


def _check_tree_of_arrays(name: str, tree) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, int, float)) or isinstance(leaf, bool):
            raise ValueError(
                f"`{name}` must be a pytree of arrays; its leaf {jax.tree_util.keystr(path) or '(root)'} "
                f"is {type(leaf).__name__}"
            )


def _grid_args(args, grid: int | None):
    """`args` with a leading grid axis on every leaf (G = 1 without a grid)."""
    _check_tree_of_arrays("args", args)
    if grid is None:
        return jax.tree.map(lambda a: np.asarray(a)[None], args)
    for path, leaf in jax.tree_util.tree_flatten_with_path(args)[0]:
        shape = np.shape(leaf)
        if not shape or shape[0] != grid:
            raise ValueError(
                f"with grid_size={grid} every leaf of `args` needs a leading axis of {grid}; "
                f"{jax.tree_util.keystr(path) or 'args'} has shape {shape}"
            )
    return jax.tree.map(np.asarray, args)


def _check_per_sample(per_sample, samples: int):
    _check_tree_of_arrays("per_sample", per_sample)
    for path, leaf in jax.tree_util.tree_flatten_with_path(per_sample)[0]:
        shape = np.shape(leaf)
        if not shape or shape[0] != samples:
            raise ValueError(
                f"every leaf of `per_sample` needs a leading axis of samples={samples}; "
                f"{jax.tree_util.keystr(path) or 'per_sample'} has shape {shape}"
            )
    return jax.tree.map(np.asarray, per_sample)


def _check_outputs(fn, shapes) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            raise ValueError(
                f"the per-sample function {getattr(fn, '__name__', fn)!r} must return a pytree of "
                f"arrays; its output {jax.tree_util.keystr(path) or '(root)'} is {type(leaf).__name__}"
            )


# --------------------------------------------------------------------------- the program


def _program(fn, impl: str, index: bool, with_data: bool, micro: int, devices: tuple, cache_key) -> Callable:
    key = (
        fn if cache_key is None else cache_key,
        impl,
        index,
        with_data,
        micro,
        devices,
        jax.config.read("jax_enable_x64"),
    )
    try:
        program = _programs.pop(key)
    except KeyError:
        mesh = Mesh(np.asarray(devices), ("samples",))
        shard, rep = PartitionSpec("samples"), PartitionSpec()

        def item(i, g, base_keys, grid_args, data):
            first = i if index else jax.random.fold_in(jax.random.wrap_key_data(base_keys[g], impl=impl), i)
            args = jax.tree.map(lambda a: a[g], grid_args)
            return fn(first, data, *args) if with_data else fn(first, *args)

        batched = jax.vmap(item, in_axes=(0, 0, None, None, 0))
        program = jax.jit(
            jax.shard_map(
                batched, mesh=mesh, in_specs=(shard, shard, rep, rep, shard), out_specs=shard, check_vma=False
            )
        )
    _programs[key] = program
    while len(_programs) > _CACHE_SIZE:
        _programs.popitem(last=False)
    return program


def run(
    fn: Callable[..., Any],
    samples: int,
    *,
    seed: int | Sequence[int] | np.ndarray = 0,
    key: jax.Array | None = None,
    args: Sequence = (),
    grid_size: int | None = None,
    per_sample: PyTree | None = None,
    index: bool = False,
    sample_offset: int = 0,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    bytes_per_sample: int | None = None,
    progress: str | None = None,
    cache_key: Hashable | None = None,
) -> PyTree:
    r"""Evaluates ``fn`` for samples i = offset … offset + samples − 1, stacked on axis 0.

    Arguments:
      fn: traceable ``fn(key_i, *args)`` returning a pytree of arrays, with
        ``key_i = fold_in(key(seed), i)``; ``fn(i, *args)`` (an int32 index) if `index`;
        ``fn(key_i, data_i, *args)`` if `per_sample` is given.
      samples: how many samples.
      seed: integer seed (or, with `grid_size`, an array of one per grid point).
      key: a `jax.random.key` instead of `seed` (or a key array, one per grid point).
      args: tuple of traced arguments, the same for every sample (new values do not
        recompile); with `grid_size`, each leaf has a leading grid axis.
      grid_size: G: run every grid point of `args` (and of `seed`) in one program.
      per_sample: pytree whose leaves have leading axis `samples`; sample i gets row i
        (given parameters, per-sample inputs).
      index: pass the sample index instead of its key.
      sample_offset: index of the first sample.
      chunk_size: samples read back per host round trip (default: from free memory).
      devices: local devices to shard over (default: all local devices, and on a
        multi-process run every process's, via `jaxgrad.cluster`).
      bytes_per_sample: working set of one sample, for the micro-batch size
        (default: 16 × the output size).
      progress: a label for a progress bar on stderr, or None for none.
      cache_key: hashable identity of what `fn` computes; calls with equal keys share a
        compiled program even if `fn` is a new closure (default: `fn` itself).

    Returns:
      The pytree `fn` returns, as NumPy arrays with leading axis `samples` (after a
      leading axis G with `grid_size`).

    Example:
      >>> def gain(key, sigma):
      ...     W = sigma * jax.random.normal(key, (64, 64)) / 8.0
      ...     return {"log_norm": jnp.log(jnp.linalg.norm(W @ jnp.ones(64)))}
      >>> out = jaxgrad.ensemble.run(gain, 1024, seed=0, args=(jnp.float32(1.5),))
      >>> out["log_norm"].shape
      (1024,)
    """
    if not callable(fn):
        raise ValueError(f"`fn` must be a per-sample function key -> pytree of arrays, got {type(fn).__name__}")
    samples = _check_count("samples", samples)
    sample_offset = _check_count("sample_offset", sample_offset, minimum=0)
    if grid_size is not None:
        grid_size = _check_count("grid_size", grid_size)
    if chunk_size is not None:
        chunk_size = _check_count("chunk_size", chunk_size)
    if not isinstance(args, (tuple, list)):
        raise ValueError(f"`args` must be a tuple of arguments for `fn`, got {type(args).__name__}")
    base_keys, impl = _base_keys(seed, key, grid_size)
    grid_args = _grid_args(tuple(args), grid_size)
    data = None if per_sample is None else _check_per_sample(per_sample, samples)

    if devices is None and sample_offset == 0:
        me, n = cluster.process_index_and_count()
        if n > 1:
            return _run_on_processes(
                fn,
                samples,
                me,
                n,
                base_keys,
                impl,
                grid_args,
                grid_size,
                data,
                index,
                chunk_size,
                bytes_per_sample,
                progress,
                cache_key,
            )
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` must name at least one device, got an empty list")
    return _run_local(
        fn,
        samples,
        sample_offset,
        base_keys,
        impl,
        grid_args,
        grid_size,
        data,
        index,
        devices,
        chunk_size,
        bytes_per_sample,
        progress,
        cache_key,
    )


def _run_local(
    fn,
    samples,
    offset,
    base_keys,
    impl,
    grid_args,
    grid_size,
    data,
    index,
    devices,
    chunk_size,
    bytes_per_sample,
    progress,
    cache_key,
):
    G = base_keys.shape[0]
    with_data = data is not None
    example_key = jnp.int32(0) if index else jax.random.wrap_key_data(jnp.asarray(base_keys[0]), impl=impl)
    example_args = jax.tree.map(lambda a: a[0], grid_args)
    example_data = jax.tree.map(lambda a: a[0], data) if with_data else None
    try:
        shapes = jax.eval_shape(
            lambda k, d, a: fn(k, d, *a) if with_data else fn(k, *a), example_key, example_data, example_args
        )
    except (TypeError, ValueError) as error:
        if "is not a valid JAX type" in str(error):
            raise ValueError(
                f"the per-sample function {getattr(fn, '__name__', fn)!r} must return a pytree of arrays: {error}"
            ) from None
        raise
    _check_outputs(fn, shapes)
    out_bytes = sum(int(np.prod(s.shape)) * s.dtype.itemsize for s in jax.tree.leaves(shapes))
    work = bytes_per_sample if bytes_per_sample is not None else 16 * max(out_bytes, 1024)
    micro = micro_batch_size(work, devices[0].platform)
    per_call = micro * len(devices)
    if chunk_size is None:  # as many samples as a quarter of memory holds, for outputs and work
        free = available_memory_bytes(devices[0])
        chunk_size = max(per_call, free // 4 // max(1, out_bytes + work // 64))
    calls_per_chunk = max(1, -(-chunk_size // per_call))

    # On the CPU, several host devices run one program each, one after another: XLA:CPU deadlocks
    # when two host devices run a program with LAPACK custom calls (eigh, SVD) at the same time
    # (jaxlib 0.10, see `_xla_workarounds`); their threads share one pool, so nothing is lost.
    # Elsewhere one call runs a micro-batch on every device through `jax.shard_map`.
    one_at_a_time = devices[0].platform == "cpu" and len(devices) > 1
    groups = [(d,) for d in devices] if one_at_a_time else [devices]
    placed = []
    for group in groups:
        mesh = Mesh(np.asarray(group), ("samples",))
        replicated = NamedSharding(mesh, PartitionSpec())
        placed.append(
            (
                _program(fn, impl, index, with_data, micro, group, cache_key),
                NamedSharding(mesh, PartitionSpec("samples")),
                jax.device_put(base_keys, replicated),
                jax.device_put(grid_args, replicated),
            )
        )
    items = G * samples
    # Item j is sample j mod samples of grid point j // samples; the last call is padded
    # with the samples that follow (computed and dropped), as a shorter run would compute them.
    calls = -(-items // per_call)
    per_group = per_call // len(groups)
    pieces = []
    with Progress(items, progress or "", enabled=progress is not None) as bar:
        for first_call in range(0, calls, calls_per_chunk):
            pending = []
            for c in range(first_call, min(calls, first_call + calls_per_chunk)):
                for k, (program, sharding, base_keys_d, grid_args_d) in enumerate(placed):
                    j = c * per_call + k * per_group + np.arange(per_group)
                    g = np.minimum(j // samples, G - 1)
                    local = j - g * samples
                    i = (offset + local).astype(np.int32)
                    d = None
                    if with_data:
                        rows = np.minimum(local, samples - 1)
                        d = jax.device_put(jax.tree.map(lambda a: a[rows], data), sharding)
                    out = program(
                        jax.device_put(i, sharding),
                        jax.device_put(g.astype(np.int32), sharding),
                        base_keys_d,
                        grid_args_d,
                        d,
                    )
                    if one_at_a_time:
                        jax.block_until_ready(out)
                    pending.append(out)
            for out in pending:  # one host sync per chunk
                pieces.append(jax.tree.map(np.asarray, out))
                bar.advance(n=per_group)
    stacked = jax.tree.map(lambda *p: np.concatenate(p)[:items], *pieces)
    if grid_size is None:
        return stacked
    return jax.tree.map(lambda a: a.reshape(G, samples, *a.shape[1:]), stacked)


def _run_on_processes(
    fn,
    samples,
    me,
    n,
    base_keys,
    impl,
    grid_args,
    grid_size,
    data,
    index,
    chunk_size,
    bytes_per_sample,
    progress,
    cache_key,
):
    """Process `me` computes its `cluster.sample_block`; every process gets all blocks."""
    first, count = cluster.sample_block(samples, me, n)
    computed = max(count, 1)  # a process with no samples computes one, for the shapes, and drops it
    local_data = None if data is None else jax.tree.map(lambda a: a[first : first + computed] if count else a[:1], data)
    local = _run_local(
        fn,
        computed,
        first,
        base_keys,
        impl,
        grid_args,
        grid_size,
        local_data,
        index,
        tuple(jax.local_devices()),
        chunk_size,
        bytes_per_sample,
        progress,
        cache_key,
    )
    leaves, treedef = jax.tree.flatten(local)
    if grid_size is not None:  # gather along the sample axis: move it first
        leaves = [np.moveaxis(a, 1, 0) for a in leaves]
    gathered = _gather_samples(leaves, samples, me, n)
    if grid_size is not None:
        gathered = [np.ascontiguousarray(np.moveaxis(a, 0, 1)) for a in gathered]
    return jax.tree.unflatten(treedef, gathered)


_GATHER_BYTES = 256 << 20  # bytes per collective: bounds the device memory a gather needs


def _gather_samples(arrays: Sequence[np.ndarray], samples: int, me: int, n: int) -> list[np.ndarray]:
    """Concatenates every process's block of each array along axis 0, in process order.

    This process's arrays hold the samples of its `cluster.sample_block` (more rows are
    ignored). The bytes travel unchanged (one uint8 buffer, padded to the largest
    block), so the result is bit-exact whatever the dtypes; the collective is
    `process_allgather`, in pieces whose gathered size is at most 256 MiB.
    """
    from jax.experimental.multihost_utils import process_allgather

    per = -(-samples // n)
    count = cluster.sample_block(samples, me, n)[1]
    padded = [np.zeros((per, *a.shape[1:]), a.dtype) for a in arrays]
    for pad, a in zip(padded, arrays):
        pad[:count] = a[:count]
    buffer = np.concatenate([np.frombuffer(p.tobytes(), np.uint8) for p in padded])
    step = max(1, _GATHER_BYTES // n)  # each collective's output, n pieces, stays within _GATHER_BYTES
    pieces = [process_allgather(buffer[s : s + step]) for s in range(0, buffer.size, step)]
    rows = np.concatenate(pieces, axis=1) if pieces else np.zeros((n, 0), np.uint8)
    out = []
    offset = 0
    for pad in padded:
        blocks = []
        for p in range(n):
            block = rows[p, offset : offset + pad.nbytes].view(pad.dtype).reshape(pad.shape)
            blocks.append(block[: cluster.sample_block(samples, p, n)[1]])
        out.append(np.concatenate(blocks))
        offset += pad.nbytes
    return out

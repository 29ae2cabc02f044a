r"""The ensemble engine: thousands of random initialisations, every depth, one program.

For each sample i (weights, input and probe vectors drawn from keys derived from
(seed, i, ℓ)) the engine runs the chain of seed §5,
$P_\ell = J_\ell P_{\ell-1}$, $P_0 = I$, inside one `lax.scan` over depth and records

* ``log_spectral_norm``  $\ln\|J_\ell\cdots J_1\|_2$ (seed §3),
* ``log_norm_product``   $\sum_{k\le\ell}\ln\|J_k\|_2$, the submultiplicative bound,
* ``log_forward_gain``   $\ln\|J_\ell\cdots J_1 u\|$, u a random unit vector,
* ``log_backward_gain``  $\ln\|J_1^\top\cdots J_\ell^\top e_\ell\|$, $e_\ell$ a random unit
  error signal at depth ℓ (the backprop chain of seed §2.5),
* ``log_signal_norm``    $\ln\|h^{(\ell)}\|$.

Numerics: $P_\ell$ is kept with unit Frobenius norm and its log-scale accumulated,
so products of thousands of Jacobians neither overflow nor underflow. For positively
homogeneous layers (ReLU, linear, leaky ReLU, no bias) $h^{(\ell)}$ is also carried
as direction × log-scale ($φ′(ch) = φ′(h)$ for c > 0); for other layers the depth
at which $h^{(\ell)}$ leaves the float range is reported.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad import ensemble
from jaxgrad.layers import HIGHEST, Layer, Network, float_dtype
from jaxgrad.spectral import lanczos_top_singular

METHODS = ("power", "svd", "vector")
DTYPES = ("float32", "float64")
FIELDS = ("log_spectral_norm", "log_norm_product", "log_forward_gain", "log_backward_gain", "log_signal_norm")


class SimulationResult(NamedTuple):
    """Per-sample measurements; arrays are (samples, depth) unless noted.

    ``log_singular_values[d]`` is (samples, min width) for each d in ``spectrum_at``.
    ``signal_exit_depth`` is (samples,): the first ℓ at which $h^{(\\ell)}$ left the
    float range (overflowed to inf/NaN or underflowed to 0; carried in the log domain
    for homogeneous layers, it never does), 0 if never. ``nonfinite`` counts, per field, the
    samples with any non-finite value (they are kept, not dropped).
    Fields a method does not compute are None (``vector`` has no matrix norms).
    """

    log_spectral_norm: np.ndarray | None
    log_norm_product: np.ndarray | None
    log_forward_gain: np.ndarray
    log_backward_gain: np.ndarray
    log_signal_norm: np.ndarray
    log_singular_values: dict[int, np.ndarray]
    signal_exit_depth: np.ndarray
    nonfinite: dict[str, int]
    config: dict


class SampleKeys(NamedTuple):
    weights: jax.Array  # layer ℓ (1-based) uses fold_in(weights, ℓ − 1), as Network.init does
    input: jax.Array
    forward_probe: jax.Array
    backward_probe: jax.Array  # e_ℓ from fold_in(backward_probe, ℓ − 1)
    lanczos: jax.Array


def sample_keys(seed: int, i) -> SampleKeys:
    """The keys of sample i: a function of (seed, i) only."""
    key = jax.random.fold_in(jax.random.key(seed), i)
    return SampleKeys(*(jax.random.fold_in(key, s) for s in range(5)))


def unit_vector(key, n, dtype):
    v = jax.random.normal(key, (n,), jnp.float32).astype(dtype)
    return v / jnp.linalg.norm(v)


def sample_input(keys: SampleKeys, n0: int, q0: float, dtype) -> jax.Array:
    """$h^{(0)} \\sim N(0, q_0 I)$."""
    return jnp.sqrt(q0).astype(dtype) * jax.random.normal(keys.input, (n0,), jnp.float32).astype(dtype)


def _safe_log_normalise(x):
    """(x / ‖x‖, ln ‖x‖), with 0 → (0, −inf) rather than NaN."""
    n = jnp.linalg.norm(x)
    return x / jnp.where(n > 0, n, 1.0), jnp.log(n)


def layer_jacobian(layer: Layer, params, h):
    """(J, apply(params, h)): the layer's fast path, or `jax.jacrev` of its apply."""
    if layer.jacobian is not None:
        return layer.jacobian(params, h)
    return jax.jacrev(layer.apply, argnums=1)(params, h), layer.apply(params, h)


class Signal(NamedTuple):
    h: jax.Array          # h⁽ℓ⁾, or its direction for homogeneous layers
    log_scale: jax.Array  # ln of the factor carried outside h (0 when not homogeneous)
    exit_depth: jax.Array


def advance_signal(layer: Layer, signal: Signal, h_next, ell) -> tuple[Signal, jax.Array]:
    """The signal after layer ℓ (0-based `ell`) given its raw output; also ln ‖h⁽ℓ⁾‖."""
    if layer.homogeneous:  # apply(p, c h) = c apply(p, h): carry direction × log-scale
        h_next, log_n = _safe_log_normalise(h_next)
        log_scale = signal.log_scale + log_n
        log_norm = log_scale
    else:
        log_scale = signal.log_scale
        log_norm = log_scale + jnp.log(jnp.linalg.norm(h_next))
    in_range = jnp.isfinite(log_norm)  # not overflowed to inf/NaN, not underflowed to 0
    exit_depth = jnp.where((signal.exit_depth == 0) & ~in_range, ell + 1, signal.exit_depth)
    return Signal(h_next, log_scale, exit_depth), log_norm


def signal_step(layer: Layer, signal: Signal, params, ell):
    """One layer of the forward pass: returns (J_ℓ, next signal, ln ‖h⁽ℓ⁾‖)."""
    J, h_next = layer_jacobian(layer, params, signal.h)
    signal, log_norm = advance_signal(layer, signal, h_next, ell)
    return J, signal, log_norm


def scan_layers(body, carry, layer: Layer, start: int, count: int, xs=None, reverse=False):
    """`lax.scan` of `body` over layers start..start+count−1 (0-based ℓ).

    A non-square layer changes the carry's shape, so it cannot repeat inside a scan;
    a network's runs of non-square layers have length one and are applied directly.
    """
    ells = jnp.arange(start, start + count, dtype=jnp.int32)
    xs = ells if xs is None else (ells, xs)
    if layer.n_in == layer.n_out:
        return jax.lax.scan(body, carry, xs, reverse=reverse)
    outs = []
    for k in (reversed(range(count)) if reverse else range(count)):
        carry, out = body(carry, jax.tree.map(lambda x: x[k], xs))
        outs.append(out)
    outs = outs[::-1] if reverse else outs
    return carry, jax.tree.map(lambda *o: jnp.stack(o), *outs) if outs[0] is not None else None


def _runs(net: Network, cuts: Sequence[int]) -> list[tuple[Layer, int, int]]:
    """Segments of identical layers, also split after each depth in `cuts`."""
    runs = []
    for layer, start, count in net.segments():
        edges = [start] + [d for d in sorted(cuts) if start < d < start + count] + [start + count]
        runs += [(layer, a, b - a) for a, b in zip(edges, edges[1:])]
    return runs


def _prepare(signal: Signal, layer: Layer) -> Signal:
    """Switches the signal's representation at a run boundary (direction × scale or plain)."""
    if layer.homogeneous:
        h, log_n = _safe_log_normalise(signal.h)
        return Signal(h, signal.log_scale + log_n, signal.exit_depth)
    return Signal(signal.h * jnp.exp(signal.log_scale), jnp.zeros_like(signal.log_scale), signal.exit_depth)


def lanczos_steps(n: int) -> int:
    """Lanczos steps for a top singular value at width n (1e-6 relative or better, tested)."""
    return min(n, 32)


def _matrix_sample_fn(net: Network, seed: int, q0: float, dtype, method: str, spectrum_at: Sequence[int]):
    n0 = net.widths[0]

    def top(A, v, steps, reorthogonalise=True):
        if method == "svd":
            return jnp.linalg.svd(A, compute_uv=False)[0], v
        t = lanczos_top_singular(A, v, steps, reorthogonalise=reorthogonalise)
        return t.value, t.vector

    def sample(i):
        keys = sample_keys(seed, i)
        u = unit_vector(keys.forward_probe, n0, dtype)
        signal = Signal(sample_input(keys, n0, q0, dtype), jnp.zeros((), dtype), jnp.zeros((), jnp.int32))
        P, log_c, cum = jnp.eye(n0, dtype=dtype), jnp.zeros((), dtype), jnp.zeros((), dtype)
        v = unit_vector(jax.random.fold_in(keys.lanczos, 1 << 30), n0, dtype)
        outputs, spectra = [], {}
        for layer, start, count in _runs(net, spectrum_at):
            signal = _prepare(signal, layer)

            def body(carry, ell, layer=layer):
                signal, P, log_c, v, cum = carry
                params = layer.init(jax.random.fold_in(keys.weights, ell))
                J, signal, log_h = signal_step(layer, signal, params, ell)
                J = J.astype(dtype)
                P, log_s = _safe_log_normalise(jnp.matmul(J, P, precision=HIGHEST))
                log_c = log_c + log_s
                s_P, v = top(P, v, lanczos_steps(n0))
                # ‖J_ℓ‖₂ from a random start; only the value is used, for which the
                # three-term recurrence suffices (no re-orthogonalisation).
                v_J = unit_vector(jax.random.fold_in(keys.lanczos, ell), J.shape[1], dtype)
                s_J, _ = top(J, v_J, lanczos_steps(J.shape[1]), reorthogonalise=False)
                cum = cum + jnp.log(s_J)
                e = unit_vector(jax.random.fold_in(keys.backward_probe, ell), J.shape[0], dtype)
                out = (
                    log_c + jnp.log(s_P),
                    cum,
                    log_c + jnp.log(jnp.linalg.norm(jnp.matmul(P, u, precision=HIGHEST))),
                    log_c + jnp.log(jnp.linalg.norm(jnp.matmul(P.T, e, precision=HIGHEST))),
                    log_h,
                )
                return (signal, P, log_c, v, cum), out

            (signal, P, log_c, v, cum), out = scan_layers(body, (signal, P, log_c, v, cum), layer, start, count)
            outputs.append(out)
            if start + count in spectrum_at:
                spectra[f"sv{start + count}"] = log_c + jnp.log(jnp.linalg.svd(P, compute_uv=False))
        stacked = [jnp.concatenate(parts) for parts in zip(*outputs)]
        result = dict(zip(FIELDS, stacked), overflow=signal.exit_depth, **spectra)
        return result

    return sample


def _vector_sample_fn(net: Network, seed: int, q0: float, dtype):
    """Matrix-free gains: a forward sweep with `jax.jvp`, a backward sweep with `jax.vjp`.

    The backward sweep starts from a random unit $e_L$ at depth L and redraws each
    layer's weights from its key, so no weights are stored; the inputs $h^{(\\ell-1)}$ of
    the layers are stored (O(depth × width) memory, no width² term). Here
    ``log_backward_gain[ℓ]`` is $\\ln\\|J_1^\\top\\cdots J_\\ell^\\top e_\\ell\\|$ with $e_\\ell$ the
    normalised error signal backpropagated from $e_L$ (not independent across ℓ).
    """
    n0 = net.widths[0]
    runs = _runs(net, ())

    def sample(i):
        keys = sample_keys(seed, i)
        f, log_f = unit_vector(keys.forward_probe, n0, dtype), jnp.zeros((), dtype)
        signal = Signal(sample_input(keys, n0, q0, dtype), jnp.zeros((), dtype), jnp.zeros((), jnp.int32))
        fwd_out, inputs = [], []
        for layer, start, count in runs:
            signal = _prepare(signal, layer)

            def fbody(carry, ell, layer=layer):
                signal, f, log_f = carry
                params = layer.init(jax.random.fold_in(keys.weights, ell))
                h_in = signal.h
                h_next, f_next = jax.jvp(lambda h: layer.apply(params, h), (h_in,), (f,))
                signal, log_h = advance_signal(layer, signal, h_next, ell)
                f_next, log_s = _safe_log_normalise(f_next)
                return (signal, f_next, log_f + log_s), (log_f + log_s, log_h, h_in)

            (signal, f, log_f), (gain, log_h, h_in) = scan_layers(fbody, (signal, f, log_f), layer, start, count)
            fwd_out.append((gain, log_h))
            inputs.append(h_in)
        # Backward sweep from depth L to 1: δ ← J_ℓᵀ δ, tracking ln ‖δ⁽ℓ⁾‖.
        e = unit_vector(jax.random.fold_in(keys.backward_probe, net.depth - 1), net.widths[-1], dtype)
        delta, log_d = e, jnp.zeros((), dtype)
        log_delta = []
        for (layer, start, count), h_in in reversed(list(zip(runs, inputs))):
            def bbody(carry, xs, layer=layer):
                delta, log_d = carry
                ell, h = xs
                params = layer.init(jax.random.fold_in(keys.weights, ell))
                _, pullback = jax.vjp(lambda x: layer.apply(params, x), h)
                delta, log_s = _safe_log_normalise(pullback(delta)[0])
                return (delta, log_d + log_s), log_d
            (delta, log_d), logs = scan_layers(bbody, (delta, log_d), layer, start, count, xs=h_in, reverse=True)
            log_delta.insert(0, logs)
        # log_delta[ℓ−1] = ln‖δ⁽ℓ⁾‖ (relative to ‖e_L‖ = 1); log_d = ln‖δ⁽⁰⁾‖.
        backward = log_d - jnp.concatenate(log_delta)
        gain, log_h = (jnp.concatenate(parts) for parts in zip(*fwd_out))
        return dict(log_forward_gain=gain, log_backward_gain=backward, log_signal_norm=log_h,
                    overflow=signal.exit_depth)

    return sample


def _lyapunov_sample_fn(net: Network, seed: int, q0: float, dtype):
    r"""QR method (Benettin et al. 1980): $J_\ell Q_{\ell-1} = Q_\ell R_\ell$,
    $λ_i = \frac1L \sum_\ell \ln|(R_\ell)_{ii}|$."""
    n0, k = net.widths[0], min(net.widths)

    def sample(i):
        keys = sample_keys(seed, i)
        signal = Signal(sample_input(keys, n0, q0, dtype), jnp.zeros((), dtype), jnp.zeros((), jnp.int32))
        Q = jnp.eye(n0, k, dtype=dtype)
        acc = jnp.zeros((k,), dtype)
        for layer, start, count in _runs(net, ()):
            signal = _prepare(signal, layer)

            def body(carry, ell, layer=layer):
                signal, Q, acc = carry
                params = layer.init(jax.random.fold_in(keys.weights, ell))
                J, signal, _ = signal_step(layer, signal, params, ell)
                Q, R = jnp.linalg.qr(jnp.matmul(J.astype(dtype), Q, precision=HIGHEST))
                return (signal, Q, acc + jnp.log(jnp.abs(jnp.diagonal(R)))), None

            (signal, Q, acc), _ = scan_layers(body, (signal, Q, acc), layer, start, count)
        return dict(exponents=-jnp.sort(-acc / net.depth))

    return sample


def _validate(net, samples, seed, q0, dtype, method, chunk_size, devices):
    if not isinstance(net, Network):
        raise ValueError(f"`net` must be a jaxgrad Network (e.g. jaxgrad.mlp(...)), got {type(net).__name__}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples <= 0:
        raise ValueError(f"`samples` must be a positive integer, got samples={samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be an integer in [0, 2**32), got seed={seed!r}")
    if not (isinstance(q0, (int, float, np.floating)) and q0 > 0 and np.isfinite(q0)):
        raise ValueError(f"`q0` (input variance per coordinate) must be a positive number, got q0={q0!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method={method!r}; valid choices are {list(METHODS)}")
    name = np.dtype(dtype).name if dtype is not None else "float32"
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype={dtype!r}; valid choices are {list(DTYPES)}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0):
        raise ValueError(f"`chunk_size` must be a positive integer or None, got chunk_size={chunk_size!r}")
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` must name at least one device, got an empty list")
    return name, devices


def _run(sample_fn, samples, dtype_name, devices, chunk_size, bytes_per_sample, out_bytes_per_sample, sample_offset, progress):
    micro = ensemble.micro_batch_size(bytes_per_sample, devices[0].platform)
    if chunk_size is None:  # as many samples as a quarter of memory holds, for outputs and work
        free = ensemble.available_memory_bytes(devices[0])
        chunk_size = max(micro * len(devices), free // 4 // max(1, out_bytes_per_sample + bytes_per_sample // 64))
    with jax.enable_x64(dtype_name == "float64"):
        return ensemble.run_samples(sample_fn, samples, micro_batch=micro, devices=devices,
                                    chunk_size=chunk_size, sample_offset=sample_offset,
                                    progress=progress)


def simulate(
    net: Network,
    samples: int,
    seed: int = 0,
    *,
    q0: float = 1.0,
    spectrum_at: Sequence[int] = (),
    method: str = "power",
    dtype=None,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    sample_offset: int = 0,
    progress: bool | None = None,
) -> SimulationResult:
    r"""Measures the Jacobian products of `samples` independent initialisations of `net`.

    Sample i (i = sample_offset, …) draws its weights, its input $h^{(0)} \sim N(0, q_0 I)$
    and its probe vectors from keys derived from (seed, i) alone (`sample_keys`), so its
    result is bit-identical whatever `chunk_size` or `devices`. Its weights are exactly
    ``net.init(sample_keys(seed, i).weights)``.

    Arguments:
      net: a `Network` (any layers: dense, residual, rectangular, user activations).
      samples: number of initialisations.
      seed: integer seed.
      q0: input variance per coordinate.
      spectrum_at: depths (1..depth) at which to record every $\ln σ_i(J_\ell\cdots J_1)$.
      method: ``"power"`` (default; warm-started Lanczos, the Krylov form of the power
        iteration, ≤ 1e-4 relative to SVD), ``"svd"`` (exact, slower), or ``"vector"``
        (matrix-free gains only, for wide networks).
      dtype: ``"float32"`` (default) or ``"float64"``.
      chunk_size: samples per host round trip (default: from available memory).
      devices: devices to shard samples over (default: all local devices; in a
        multi-process run, every process's, via `jaxgrad.cluster.distributed_simulate`).
      sample_offset: index of the first sample (used by multi-process runs).
      progress: show a progress bar (default: when stderr is a terminal).

    Returns:
      A `SimulationResult`; logarithms are natural, of norms.
    """
    if devices is None and sample_offset == 0 and _multi_process():
        from jaxgrad.cluster import distributed_simulate

        return distributed_simulate(net, samples, seed, q0=q0, spectrum_at=spectrum_at, method=method, dtype=dtype,
                                    chunk_size=chunk_size, progress=progress)
    dtype_name, devices = _validate(net, samples, seed, q0, dtype, method, chunk_size, devices)
    spectrum_at = tuple(sorted(set(spectrum_at)))
    for d in spectrum_at:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 1 <= d <= net.depth:
            raise ValueError(f"`spectrum_at` depths must be integers in 1..{net.depth}, got {d!r}")
    if method == "vector" and spectrum_at:
        raise ValueError("`spectrum_at` needs the product matrix; use method='power' or 'svd', not 'vector'")
    item = np.dtype(dtype_name).itemsize
    n_max = max(net.widths)
    if method == "vector":
        fn = _vector_sample_fn(net, seed, float(q0), jnp.dtype(dtype_name))
        work = item * (4 * n_max * n_max + 2 * net.depth * n_max)
    else:
        fn = _matrix_sample_fn(net, seed, float(q0), jnp.dtype(dtype_name), method, spectrum_at)
        work = item * 8 * n_max * n_max
    out_bytes = item * (len(FIELDS) * net.depth + len(spectrum_at) * n_max)
    if progress is None:
        progress = _stderr_is_tty()
    raw = _run(fn, int(samples), dtype_name, devices, chunk_size, work, out_bytes, int(sample_offset),
               "simulate" if progress else None)
    return _result(raw, method, spectrum_at, dict(
        net=[layer.name for layer in net.layers], samples=int(samples), seed=int(seed), q0=float(q0),
        method=method, dtype=dtype_name, spectrum_at=list(spectrum_at)))


def _result(raw: dict, method: str, spectrum_at, config: dict) -> SimulationResult:
    fields = {f: raw.get(f) for f in FIELDS}
    nonfinite = {f: int((~np.isfinite(a)).any(axis=1).sum()) for f, a in fields.items() if a is not None}
    spectra = {d: raw[f"sv{d}"] for d in spectrum_at}
    nonfinite.update({f"log_singular_values[{d}]": int((~np.isfinite(a)).any(axis=1).sum()) for d, a in spectra.items()})
    return SimulationResult(**fields, log_singular_values=spectra,
                            signal_exit_depth=raw["overflow"], nonfinite=nonfinite, config=config)


def lyapunov_spectrum(
    net: Network,
    samples: int,
    seed: int = 0,
    *,
    q0: float = 1.0,
    dtype=None,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    sample_offset: int = 0,
    progress: bool | None = None,
) -> np.ndarray:
    r"""Per-layer Lyapunov exponents of $J_L\cdots J_1$ by the QR method, natural log.

    $λ_i = \frac1L\sum_{\ell=1}^L \ln|(R_\ell)_{ii}|$ with $J_\ell Q_{\ell-1} = Q_\ell R_\ell$,
    $Q_0 = I$ (Benettin et al. 1980); as L → ∞ these converge to the exponents of
    Oseledets' theorem. Samples use the same keys as `simulate`.

    Returns:
      (samples, min width) array, each row in descending order.
    """
    if devices is None and sample_offset == 0 and _multi_process():
        from jaxgrad.cluster import distributed_lyapunov_spectrum

        return distributed_lyapunov_spectrum(net, samples, seed, q0=q0, dtype=dtype, chunk_size=chunk_size,
                                             progress=progress)
    dtype_name, devices = _validate(net, samples, seed, q0, dtype, "power", chunk_size, devices)
    item = np.dtype(dtype_name).itemsize
    n_max = max(net.widths)
    fn = _lyapunov_sample_fn(net, seed, float(q0), jnp.dtype(dtype_name))
    if progress is None:
        progress = _stderr_is_tty()
    raw = _run(fn, int(samples), dtype_name, devices, chunk_size, item * 8 * n_max * n_max,
               item * n_max, int(sample_offset), "lyapunov" if progress else None)
    return raw["exponents"]


def _multi_process() -> bool:
    """Whether this is one process of a multi-process run (`jaxgrad.cluster`)."""
    from jaxgrad.cluster import process_index_and_count

    return process_index_and_count()[1] > 1


def _stderr_is_tty() -> bool:
    import sys
    return sys.stderr.isatty()

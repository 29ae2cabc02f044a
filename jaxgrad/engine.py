r"""The ensemble engine: thousands of random initialisations, every depth, one program.

`simulate`, `lyapunov_spectrum` and `sweep` are short compositions of a probe
(`jaxgrad.probes`: what is measured for one sample) with the runner
(`jaxgrad.ensemble.run`: where samples run: micro-batches, chunks, devices, processes).

For each sample i (weights, input and probe vectors drawn from keys derived from
(seed, i, ℓ)) the engine runs the chain of seed §5, $P_\ell = J_\ell P_{\ell-1}$,
$P_0 = I$, inside one `lax.scan` over depth and records

* ``log_spectral_norm``  $\ln\|J_\ell\cdots J_1\|_2$ (seed §3),
* ``log_norm_product``   $\sum_{k\le\ell}\ln\|J_k\|_2$, the submultiplicative bound,
* ``log_forward_gain``   $\ln\|J_\ell\cdots J_1 u\|$, u a random unit vector,
* ``log_backward_gain``  $\ln\|J_1^\top\cdots J_\ell^\top e_\ell\|$, $e_\ell$ a random unit
  error signal at depth ℓ (the backprop chain of seed §2.5),
* ``log_signal_norm``    $\ln\|h^{(\ell)}\|$.

``method="matrix_free"`` records the same quantities without forming any Jacobian (Lanczos
on Jacobian-vector products, $\|J_d\cdots J_1\|_2$ at the depths asked for: `probes.matrix_free`);
``method="auto"`` chooses it above a state size of `AUTO_MATRIX_FREE_ABOVE`.

Numerics: $P_\ell$ is kept with unit Frobenius norm and its log-scale accumulated,
so products of thousands of Jacobians neither overflow nor underflow. For positively
homogeneous layers (ReLU, linear, leaky ReLU, no bias) $h^{(\ell)}$ is also carried
as direction × log-scale ($φ′(ch) = φ′(h)$ for c > 0); for other layers the depth
at which $h^{(\ell)}$ leaves the float range is reported.

**One compile per structure.** The compiled program is cached per network structure
(`Network.structure`: shapes, activations, schemes), method, dtype and fields; the
seed (or key), σ_w, σ_b, every other `jaxgrad.layers.Hyper` value and q0 are traced
inputs, so calls that differ only in them do not recompile. `sweep` runs a whole grid of
hyperparameters as one program.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.typing import DTypeLike

from jaxgrad import ensemble, probes
from jaxgrad import verify as _verify
from jaxgrad.layers import Network, Params, as_key
from jaxgrad.layers import state_shape as layer_state_shape
from jaxgrad.probes import FIELDS, SampleKeys, sample_keys

__all__ = [
    "AUTO_MATRIX_FREE_ABOVE",
    "DTYPES",
    "FIELDS",
    "METHODS",
    "NonFiniteWarning",
    "SampleKeys",
    "SimulationResult",
    "choose_method",
    "draw_inputs",
    "draw_params",
    "log_spaced_depths",
    "lyapunov_spectrum",
    "sample_keys",
    "simulate",
    "sweep",
    "state_shape",
]

METHODS = ("power", "svd", "vector", "matrix_free", "auto")
DTYPES = ("float32", "float64")
_VECTOR_FIELDS = ("log_forward_gain", "log_backward_gain", "log_signal_norm")
_METHOD_FIELDS = {"vector": _VECTOR_FIELDS, "matrix_free": probes.MATRIX_FREE_FIELDS}
AUTO_MATRIX_FREE_ABOVE = 1024
"""``method="auto"`` materialises Jacobians (``"power"``) up to this state size and goes
matrix-free above it. At state size n the matrix probe holds O(n²) per sample and costs
about n VJPs (the Jacobian) plus an n³ product per layer; the matrix-free probe costs
2k + 2 JVPs/VJPs per layer (k = 32) plus 2kd per requested depth d, and holds O(L n)."""


class NonFiniteWarning(RuntimeWarning):
    """Some samples of a result hold NaN or +∞ (counted in ``nonfinite``, never dropped).

    −∞, the logarithm of an exact zero (a dead ReLU layer, a rank-deficient product), is counted
    in ``nonfinite`` but not warned about: it is a value, not a failure."""


class SimulationResult(NamedTuple):
    """Per-sample measurements; arrays are (samples, depth) unless noted.

    ``log_singular_values[d]`` is (samples, min width) for each d in ``spectrum_at``.
    ``signal_exit_depth`` is (samples,): the first ℓ at which $h^{(\\ell)}$ left the
    float range (overflowed to inf/NaN or underflowed to 0; carried in the log domain
    for homogeneous layers, it never does), 0 if never. ``nonfinite`` counts, per field, the
    samples with any non-finite value (they are kept, not dropped).
    Fields a method does not compute, or that were not asked for, are None (``vector``
    has no matrix norms; ``matrix_free`` has no ``log_spectral_norm`` at every depth, and its
    ``log_singular_values[d]`` is (samples, 1), the largest only). From `sweep`, every array
    has the grid's axes in front and ``nonfinite`` counts over the whole grid. ``config``
    records the call, including ``method`` (the one run), ``requested_method`` (``"auto"``
    resolves by state size) and ``state_shape`` (the input block's declared state shape).
    """

    log_spectral_norm: np.ndarray | None
    log_norm_product: np.ndarray | None
    log_forward_gain: np.ndarray | None
    log_backward_gain: np.ndarray | None
    log_signal_norm: np.ndarray | None
    log_singular_values: dict[int, np.ndarray]
    signal_exit_depth: np.ndarray
    nonfinite: dict[str, int]
    config: dict


# --------------------------------------------------------------------------- checks


def _check_int(name, value, low, high=None):
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < low
        or (high is not None and value >= high)
    ):
        valid = f"in [{low}, {high})" if high is not None else f"≥ {low}"
        raise ValueError(f"`{name}` must be an integer {valid}, got {name}={value!r}")
    return int(value)


def _check_q0(q0):
    if (
        isinstance(q0, (bool, np.bool_))
        or not isinstance(q0, (int, float, np.integer, np.floating))
        or not (np.isfinite(q0) and q0 > 0)
    ):
        raise ValueError(f"`q0` (input variance per coordinate) must be a positive finite number, got q0={q0!r}")
    return float(q0)


def _check_common(net, samples, seed, key, dtype, chunk_size, devices, sample_offset) -> tuple[int, int, str]:
    if not isinstance(net, Network):
        raise ValueError(f"`net` must be a jaxgrad Network (e.g. jaxgrad.mlp(...)), got {type(net).__name__}")
    samples = _check_int("samples", samples, 1)
    if key is None:
        seed = _check_int("seed", seed, 0, 2**32)
    name = "float32"
    if dtype is not None:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = repr(dtype)
    if name not in DTYPES:
        extra = (
            (
                " (bfloat16/float16 are not supported: products of many Jacobians need float32's "
                "exponent and mantissa; run in float32 and cast your own results)"
            )
            if "16" in name
            else ""
        )
        raise ValueError(f"unsupported dtype={dtype!r}; valid choices are {list(DTYPES)}{extra}")
    if chunk_size is not None:
        _check_int("chunk_size", chunk_size, 1)
    _check_int("sample_offset", sample_offset, 0)
    if devices is not None and not list(devices):
        raise ValueError("`devices` must name at least one device, got an empty list")
    return samples, seed, name


def _seed_repr(seed, key):
    if key is None:
        return int(seed)
    return [int(x) for x in np.asarray(jax.random.key_data(key)).ravel()]


def _given_params(net: Network, params, samples: int, dtype_name: str):
    """Validates `params` against ``jax.vmap(net.init)`` and stacks them per segment (host arrays)."""
    # abstract keys: drawing real ones would compile a split, and a bad `params` must cost no compile
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), samples))
    with jax.enable_x64(dtype_name == "float64"):
        expected = jax.eval_shape(jax.vmap(net.init), keys)
    want, got = jax.tree.structure(expected), jax.tree.structure(params)
    if want != got:  # type: ignore[operator]  # (PyTreeDef defines ==)
        raise ValueError(
            f"`params` must have the structure jax.vmap(net.init)(keys) returns: expected {want}, got {got}"
        )
    leaves = []
    for (path, leaf), spec in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(expected)):
        where = jax.tree_util.keystr(path)
        shape = np.shape(leaf)
        if shape != spec.shape:
            raise ValueError(
                f"`params`{where} must have shape {spec.shape} (leading axis samples={samples}), got {shape}"
            )
        leaf = np.asarray(leaf)
        if not np.issubdtype(leaf.dtype, np.floating):
            raise ValueError(f"`params`{where} must be a floating array, got dtype {leaf.dtype}")
        if not np.isfinite(leaf).all():
            bad = int((~np.isfinite(leaf.reshape(samples, -1))).any(axis=1).sum())
            raise ValueError(f"`params`{where} has non-finite entries in {bad} of {samples} samples")
        leaves.append(leaf.astype(spec.dtype, copy=False))
    params = jax.tree.unflatten(want, leaves)
    if net.tied:
        return params
    per_layer = tuple(params)
    return tuple(
        jax.tree.map(lambda *xs: np.stack(xs, axis=1), *per_layer[start : start + count])
        for _, start, count in net.segments()
    )


def _given_inputs(net: Network, inputs, samples: int, dtype_name: str) -> np.ndarray:
    """Validates `inputs` (samples × the state's shape, or samples × n₀) and returns them flat, (samples, n₀)."""
    n0 = net.widths[0]
    shape = state_shape(net)
    try:
        array = np.asarray(inputs)
    except Exception as error:
        raise ValueError(
            f"`inputs` must be an array of shape ({samples}, {n0}) or ({samples}, *{shape}), got "
            f"{type(inputs).__name__}"
        ) from error
    if array.shape not in ((samples, n0), (samples, *shape)):
        raise ValueError(
            f"`inputs` must have shape ({samples}, {n0})"
            + (f" or ({samples}, *{shape})" if shape != (n0,) else "")
            + f" (samples × the input state), got {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"`inputs` must be a floating array, got dtype {array.dtype}")
    array = array.reshape(samples, n0)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise ValueError(f"`inputs` has non-finite entries in {bad} of {samples} samples; give finite inputs")
    return array.astype(dtype_name)


def _per_sample(given, inputs):
    if given is None and inputs is None:
        return None
    data = {}
    if given is not None:
        data["params"] = given
    if inputs is not None:
        data["inputs"] = inputs
    return data


def _check_verify(verify):
    if isinstance(verify, _verify.Plan):
        return verify
    if not isinstance(verify, (bool, np.bool_)):
        raise ValueError(f"`verify` must be True or False, got verify={verify!r}")
    return bool(verify)


def _plan(verify, net, method, fields, norms_at, spectrum_at):
    if isinstance(verify, _verify.Plan):
        return verify
    return _verify.plan(net, method, fields, norms_at, spectrum_at) if verify else None


def _platform(devices) -> str:
    return list(devices)[0].platform if devices is not None else jax.default_backend()


def _check_sample(net, row, grid, base_key, offset, given, inputs, q0):
    """One sample for `jaxgrad.verify`: its key, given data and float64 coefficients."""
    pick = lambda tree: None if tree is None else jax.tree.map(lambda a: np.asarray(a)[row], tree)  # noqa: E731
    return _verify._Sample(
        row=row,
        grid=grid,
        key=jax.random.fold_in(base_key, offset + row),
        params=pick(given),
        inputs=None if inputs is None else np.asarray(inputs[row], np.float64),
        coefficients=probes.coefficient_arrays(net, np.float64),
        q0=float(q0),
        names=tuple(layer.name for layer in net.layers),
    )


def _run_verified(net, execute, samples_of, *, plan, method, dtype_name, source, norms_at):
    """Runs ``execute(jacobian_mode)`` and, with a `plan`, checks its result (`jaxgrad.verify`); on a
    miscompiled batched jacrev, runs again with jacfwd. Returns (raw, verification record, jacobian mode)."""
    raw = execute("rev")
    if plan is None:
        return raw, None, "rev"
    check = dict(plan_=plan, method=method, dtype_name=dtype_name, source=source, norms_at=norms_at)
    try:
        return raw, _verify.verify(net, raw, samples_of(raw), jacobian_mode="rev", **check), "rev"
    except _verify._JacobianMismatch as mismatch:
        raw = execute("fwd")
        record = _verify.verify(net, raw, samples_of(raw), jacobian_mode="fwd", **check)
        _verify.fallback_warning(mismatch)
        return raw, record, "fwd"


def _strip_checks(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if not k.startswith("check_")}


def _unexpected(arrays: Mapping[str, np.ndarray | None]) -> dict[str, int]:
    """Per field, the samples holding NaN or +∞ (rows: the last axis is the sample's own).

    Every field is a logarithm of a norm or a gain, so −∞ is the logarithm of an exact zero (dead
    ReLU units, a rank-deficient product, a linear network's zero exponents' limit): a value, counted
    in ``nonfinite`` but not warned about. NaN and +∞ are never values: an overflow or an invalid
    operation.
    """
    out = {}
    for name, a in arrays.items():
        if a is not None:
            a = np.asarray(a)
            rows = a.reshape(-1, a.shape[-1]) if a.ndim > 1 else a.reshape(-1, 1)
            out[name] = int((np.isnan(rows) | (rows == np.inf)).any(axis=1).sum())
    return out


def _result_arrays(result: SimulationResult) -> dict[str, np.ndarray | None]:
    arrays = {f: getattr(result, f) for f in FIELDS}
    arrays.update({f"log_singular_values[{d}]": a for d, a in result.log_singular_values.items()})
    return arrays


def _warn_nonfinite(unexpected: Mapping[str, int], samples: int, where: str) -> None:
    bad = {k: v for k, v in unexpected.items() if v}
    if bad:
        listing = ", ".join(f"{k}: {v}" for k, v in bad.items())
        warnings.warn(
            f"{where}: NaN or +inf in {listing} (of {samples} samples; kept, not dropped; see the "
            f"result's `nonfinite`, which also counts the −inf that are logarithms of exact zeros)",
            NonFiniteWarning,
            stacklevel=3,
        )


def _progress(progress, label):
    if progress is None:
        progress = sys.stderr.isatty()
    return label if progress else None


# --------------------------------------------------------------------------- simulate


def choose_method(net: Network, method: str = "auto") -> str:
    """The method `simulate` runs for `method`: itself, or for ``"auto"``, ``"power"`` when the largest
    state of `net` has at most `AUTO_MATRIX_FREE_ABOVE` entries and ``"matrix_free"`` above."""
    if method not in METHODS:
        raise ValueError(f"unknown method={method!r}; valid choices are {list(METHODS)}")
    if method != "auto":
        return method
    return "power" if max(net.widths) <= AUTO_MATRIX_FREE_ABOVE else "matrix_free"


def state_shape(net: Network) -> tuple[int, ...]:
    """The shape of the network's input state h⁽⁰⁾: a block's declared shape (adapters), else (n₀,)."""
    return layer_state_shape(net.layers[0])


def _check_fields(fields, method):
    available = _METHOD_FIELDS.get(method, FIELDS)
    if fields is None:
        return tuple(available)
    if isinstance(fields, str):
        fields = (fields,)
    fields = tuple(fields)
    for f in fields:
        if f not in available:
            raise ValueError(f"unknown field {f!r} for method={method!r}; valid choices are {list(available)}")
    if not fields:
        raise ValueError(f"`fields` must name at least one of {list(available)}, got an empty list")
    return tuple(f for f in available if f in fields)


def _check_depths(name, depths, net):
    for d in depths:
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or not 1 <= d <= net.depth:
            raise ValueError(
                f"`{name}` depths must be integers in 1..{net.depth} (the network's depth), got {name}={d!r}"
            )


def _check_spectrum_at(spectrum_at, net, method):
    if isinstance(spectrum_at, (int, np.integer)):
        spectrum_at = (spectrum_at,)
    spectrum_at = tuple(sorted(set(spectrum_at)))
    _check_depths("spectrum_at", spectrum_at, net)
    if method == "vector" and spectrum_at:
        raise ValueError(
            "`spectrum_at` needs the product's singular values; use method='power', 'svd' or "
            "'matrix_free' (the top one only), not 'vector'"
        )
    return tuple(int(d) for d in spectrum_at)


def _check_norms_at(norms_at, net, method, fields):
    if norms_at is None:
        return None
    if isinstance(norms_at, (int, np.integer)):
        norms_at = (norms_at,)
    norms_at = tuple(norms_at)
    _check_depths("norms_at", norms_at, net)
    if not norms_at:
        raise ValueError("`norms_at` must name at least one depth (or be None: every depth), got an empty list")
    if method not in ("power", "svd"):
        raise ValueError(
            f"`norms_at` selects the depths of log_spectral_norm, which method={method!r} does not "
            "record at every depth; use method='power' or 'svd' (matrix_free: `spectrum_at`)"
        )
    if "log_spectral_norm" not in fields:
        raise ValueError(f"`norms_at` selects the depths of log_spectral_norm, which fields={list(fields)} leaves out")
    return tuple(sorted({int(d) for d in norms_at}))


def log_spaced_depths(depth: int, count: int = 16) -> tuple[int, ...]:
    """About `count` depths from 1 to `depth`, evenly spaced in log depth (always 1 and `depth`):
    a `norms_at` for growth laws that are exponential in depth."""
    _check_int("depth", depth, 1)
    _check_int("count", count, 1)
    return tuple(sorted({int(round(d)) for d in np.geomspace(1, depth, min(count, depth))} | {depth}))


def _simulation_program(
    net,
    method,
    spectrum_at,
    fields,
    dtype_name,
    params_given,
    norms_at=None,
    inputs_given=False,
    keep_at=(),
    jacobian_mode="rev",
):
    """(probe, cache key, bytes per sample) for `simulate` and `sweep`.

    ``keep_at``: layers whose inputs the probe also returns for the self-check (`jaxgrad.verify`),
    which also reads ``log_norm_product`` whenever the method computes it."""
    dtype = jnp.dtype(dtype_name)
    item = dtype.itemsize
    n_max = max(net.widths)
    if method == "vector":
        probe = probes.gains(net, dtype=dtype, params_given=params_given, inputs_given=inputs_given, keep_at=keep_at)
        work = item * (4 * n_max * n_max + 2 * net.depth * n_max)
    elif method == "matrix_free":
        inner = tuple(fields) if not keep_at or "log_norm_product" in fields else (*fields, "log_norm_product")
        probe = probes.matrix_free(
            net,
            dtype=dtype,
            spectrum_at=spectrum_at,
            fields=inner,
            params_given=params_given,
            inputs_given=inputs_given,
            keep_at=keep_at,
        )
        k = probes.lanczos_steps(n_max)
        work = item * (2 * net.depth * n_max + 2 * (k + 8) * n_max) + 4 * _param_bytes(net)
    else:
        probe = probes.product_norms(
            net,
            dtype=dtype,
            method=method,
            spectrum_at=spectrum_at,
            params_given=params_given,
            norms_at=norms_at,
            inputs_given=inputs_given,
            keep_at=keep_at,
            jacobian_mode=jacobian_mode,
        )
        work = item * 8 * n_max * n_max
    wanted = set(fields) | {"overflow"} | {f"sv{d}" for d in spectrum_at}
    if keep_at:
        wanted |= {f"check_{x}{c}" for c in keep_at for x in "hs"} | {"log_norm_product", "log_forward_gain"}

    def measure(*a):
        return {k: v for k, v in probe(*a).items() if k in wanted}

    key = (
        "simulate",
        net.structure(),
        method,
        spectrum_at,
        fields,
        dtype_name,
        params_given,
        norms_at,
        inputs_given,
        tuple(keep_at),
        jacobian_mode,
    )
    return measure, key, work


def _param_bytes(net: Network) -> int:
    """Bytes of the largest layer's parameters (abstractly: nothing is drawn)."""
    sizes = []
    for layer, _, _ in net.segments():
        shapes = jax.eval_shape(layer.init, jax.random.key(0))
        sizes.append(
            sum(np.prod(a.shape, dtype=np.int64) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(shapes))
        )
    return int(max(sizes))


def _method_config(net: Network, requested: str, method: str) -> dict:
    return dict(method=method, requested_method=requested, state_shape=list(state_shape(net)))


def _result(raw: dict, fields, spectrum_at, config: dict) -> SimulationResult:
    values = {f: raw.get(f) if f in fields else None for f in FIELDS}
    rows = lambda a: a.reshape(-1, *a.shape[-1:]) if a.ndim > 1 else a.reshape(-1, 1)  # noqa: E731
    nonfinite = {f: int((~np.isfinite(rows(a))).any(axis=1).sum()) for f, a in values.items() if a is not None}
    spectra = {d: raw[f"sv{d}"] for d in spectrum_at}
    nonfinite.update(
        {f"log_singular_values[{d}]": int((~np.isfinite(rows(a))).any(axis=1).sum()) for d, a in spectra.items()}
    )
    return SimulationResult(
        **values, log_singular_values=spectra, signal_exit_depth=raw["overflow"], nonfinite=nonfinite, config=config
    )


def simulate(
    net: Network,
    samples: int,
    seed: int = 0,
    *,
    key: jax.Array | None = None,
    params: Params | None = None,
    q0: float = 1.0,
    spectrum_at: Sequence[int] = (),
    method: str = "power",
    fields: Sequence[str] | None = None,
    norms_at: Sequence[int] | None = None,
    dtype: DTypeLike | None = None,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    sample_offset: int = 0,
    progress: bool | None = None,
    inputs: npt.ArrayLike | None = None,
    verify: bool | _verify.Plan = True,
) -> SimulationResult:
    r"""Measures the Jacobian products of `samples` independent initialisations of `net`.

    Sample i (i = sample_offset, …) draws its weights, its input $h^{(0)} \sim N(0, q_0 I)$
    and its probe vectors from keys derived from (seed, i) alone (`sample_keys`), so its
    result is bit-identical whatever `chunk_size`, `devices` or the number of processes.
    Its weights are exactly ``net.init(sample_keys(seed, i).weights)``.

    Arguments:
      net: a `Network` (any layers: dense, residual, rectangular, user activations; a
        tied network uses one parameter set at every layer).
      samples: number of initialisations.
      seed: integer seed; or
      key: a `jax.random.key` in place of `seed`.
      params: given parameters instead of drawn ones: the structure
        ``jax.vmap(net.init)(keys)`` returns, leading axis `samples` (trained or
        hand-made weights). Sample i uses row i; inputs and probes still come from (seed, i).
      q0: input variance per coordinate.
      spectrum_at: depths (1..depth) at which to record every $\ln σ_i(J_\ell\cdots J_1)$
        (``"matrix_free"``: the largest only, shape (samples, 1)).
      method: ``"power"`` (default; warm-started Lanczos, the Krylov form of the power
        iteration, ≤ 1e-4 relative to SVD), ``"svd"`` (exact, slower), ``"vector"``
        (matrix-free gains only, for wide networks), ``"matrix_free"`` (no Jacobian is
        formed: gains, ``log_norm_product`` and $\ln\|J_d\cdots J_1\|_2$ at the depths
        `spectrum_at`, by Lanczos on JVPs/VJPs; ``log_spectral_norm`` is None; costs in
        `jaxgrad.probes.matrix_free`), or ``"auto"``: ``"power"`` up to a state size of
        `AUTO_MATRIX_FREE_ABOVE`, ``"matrix_free"`` above (`choose_method`). The config
        records the method run (``method``), the one asked for (``requested_method``) and
        the input state's shape (``state_shape``).
      fields: the fields to record (default: all the method computes); the others are
        None and their work is not compiled in.
      norms_at: depths (1..depth) at which to compute ``log_spectral_norm``, the one field
        that needs a Lanczos run on the product at every depth (``"power"``, ``"svd"``);
        it is then (samples, len(norms_at)), in increasing depth, and the config records
        the depths. Every other field, the bound included, is still recorded at every depth.
        `log_spaced_depths` (depth) gives a log-spaced choice. Default None: every depth.
      dtype: ``"float32"`` (default) or ``"float64"``.
      chunk_size: samples per host round trip (default: from available memory).
      devices: devices to shard samples over (default: all local devices; in a
        multi-process run, every process's: see `jaxgrad.ensemble.run`).
      sample_offset: index of the first sample.
      progress: show a progress bar (default: when stderr is a terminal).
      inputs: given inputs $h^{(0)}$ instead of drawn ones, shape (samples, n₀) or (samples,
        *state shape) (`draw_inputs` returns the drawn ones); weights and probes still come
        from (seed, i).
      verify: recompute two samples by an independent path and compare (`jaxgrad.verify`:
        per-layer Jacobians by unbatched `jax.jacfwd` and `jax.jacrev`, the product by a dense
        float64 SVD at a shallow, a middle and the last depth). A mismatch beyond the derived
        tolerance raises `jaxgrad.verify.VerificationError`; a miscompiled batched `jax.jacrev`
        is replaced by `jax.jacfwd` with a warning. The config records ``verified`` and the
        check (``verification``: samples, layers, depths, worst error, depths skipped where
        a chaotic network separated the two forward passes). False skips it (the numbers are
        then unchecked).

    Returns:
      A `SimulationResult`; logarithms are natural, of norms. Non-finite values are
      counted in ``nonfinite``; a `NonFiniteWarning` names the fields holding NaN or +∞
      (−∞ is the logarithm of an exact zero, a value, and is not warned about).

    Compiles once per structure: a second call that differs only in seed, key, q0 or
    the hyperparameters of the layers (σ_w, σ_b, α …) reuses the program (and the
    self-check's reference programs).
    """
    samples, seed, dtype_name = _check_common(net, samples, seed, key, dtype, chunk_size, devices, sample_offset)
    q0 = _check_q0(q0)
    verify = _check_verify(verify)
    requested, method = method, choose_method(net, method)
    fields = _check_fields(fields, method)
    spectrum_at = _check_spectrum_at(spectrum_at, net, method)
    norms_at = _check_norms_at(norms_at, net, method, fields)
    given = None if params is None else _given_params(net, params, samples, dtype_name)
    h0 = None if inputs is None else _given_inputs(net, inputs, samples, dtype_name)
    plan = _plan(verify, net, method, fields, norms_at, spectrum_at)
    np_dtype = np.dtype(dtype_name)
    args = (probes.coefficient_arrays(net, np_dtype), np.asarray(q0, np_dtype))
    work = _simulation_program(net, method, spectrum_at, fields, dtype_name, False, norms_at)[2]

    def execute(mode):
        probe, cache_key, work = _simulation_program(
            net,
            method,
            spectrum_at,
            fields,
            dtype_name,
            given is not None,
            norms_at,
            h0 is not None,
            plan.keep_at if plan else (),
            mode,
        )
        with jax.enable_x64(dtype_name == "float64"):
            return ensemble.run(
                probe,
                samples,
                seed=seed,
                key=key,
                args=args,
                per_sample=_per_sample(given, h0),
                sample_offset=sample_offset,
                chunk_size=chunk_size,
                devices=devices,
                bytes_per_sample=work,
                progress=_progress(progress, "simulate"),
                cache_key=cache_key,
            )

    base = as_key(key) if key is not None else jax.random.key(seed)
    rows = _verify.check_samples(samples, ensemble.micro_batch_size(work, _platform(devices)))
    if plan is not None and plan.rows is not None:
        rows = tuple(i for i in plan.rows if i < samples)
    raw, record, mode = _run_verified(
        net,
        execute,
        lambda raw: [_check_sample(net, i, None, base, sample_offset, given, h0, q0) for i in rows],
        plan=plan,
        method=method,
        dtype_name=dtype_name,
        source=probes._source(net, given is not None),
        norms_at=norms_at,
    )
    result = _result(
        _strip_checks(raw),
        fields,
        spectrum_at,
        dict(
            net=[layer.name for layer in net.layers],
            tied=net.tied,
            samples=samples,
            seed=_seed_repr(seed, key),
            q0=q0,
            **_method_config(net, requested, method),
            dtype=dtype_name,
            spectrum_at=list(spectrum_at),
            fields=list(fields),
            norms_at=None if norms_at is None else list(norms_at),
            params="given" if given is not None else ("tied" if net.tied else "drawn"),
            inputs="given" if h0 is not None else "drawn",
            verified=record is not None,
            verification=record,
            jacobian=mode,
        ),
    )
    _warn_nonfinite(_unexpected(_result_arrays(result)), samples, "jaxgrad.simulate")
    return result


def draw_inputs(
    net: Network,
    samples: int,
    seed: int = 0,
    *,
    key: jax.Array | None = None,
    q0: float = 1.0,
    dtype: DTypeLike | None = None,
    sample_offset: int = 0,
) -> np.ndarray:
    r"""The inputs $h^{(0)}$ `simulate(net, samples, seed, q0=q0)` uses, bit for bit: (samples, n₀).

    Sample i's is $\sqrt{q_0}\,z$ with z ~ N(0, I) drawn in float32 from ``sample_keys(seed, i).input``
    and cast to `dtype`. Reshape to ``(samples, *jaxgrad.state_shape(net))`` for a token state; pass
    changed ones back with ``simulate(..., inputs=...)``.
    """
    samples, seed, dtype_name = _check_common(net, samples, seed, key, dtype, None, None, sample_offset)
    q0 = _check_q0(q0)
    n0, dt = net.widths[0], jnp.dtype(dtype_name)

    def probe(key, q0):
        return probes._input(probes._split(key), n0, q0, dt)

    np_dtype = np.dtype(dtype_name)
    with jax.enable_x64(dtype_name == "float64"):
        return ensemble.run(
            probe,
            samples,
            seed=seed,
            key=key,
            args=(np.asarray(q0, np_dtype),),
            sample_offset=sample_offset,
            bytes_per_sample=8 * n0,
            cache_key=("draw_inputs", n0, dtype_name),
        )


def draw_params(
    net: Network,
    samples: int,
    seed: int = 0,
    *,
    key: jax.Array | None = None,
    dtype: DTypeLike | None = None,
    method: str = "power",
) -> Params:
    """The parameters `simulate(net, samples, seed, method=method)` draws, bit for bit.

    Returns the structure ``jax.vmap(net.init)(keys)`` returns (leading axis `samples`);
    sample i's are ``net.init(sample_keys(seed, i).weights)`` up to the last bit (computed
    here exactly as the engine computes them). Pass them back with ``simulate(...,
    params=...)`` after changing them (training, pruning, hand-made edits).
    """
    samples, seed, dtype_name = _check_common(net, samples, seed, key, dtype, None, None, 0)
    method = choose_method(net, method)
    _, _, work = _simulation_program(net, method, (), _check_fields(None, method), dtype_name, False)
    np_dtype = np.dtype(dtype_name)
    with jax.enable_x64(dtype_name == "float64"):
        raw = ensemble.run(
            probes.parameters(net, dtype=jnp.dtype(dtype_name)),
            samples,
            seed=seed,
            key=key,
            args=(probes.coefficient_arrays(net, np_dtype), np.asarray(1.0, np_dtype)),
            bytes_per_sample=work,
            cache_key=("draw_params", net.structure(), dtype_name),
        )
    if net.tied:
        return raw
    per_layer = []
    for stacked, (_, _start, count) in zip(raw, net.segments()):
        per_layer += [jax.tree.map(lambda a, k=k: a[:, k], stacked) for k in range(count)]
    return tuple(per_layer)


# --------------------------------------------------------------------------- sweep


def _grid_points(net: Network, grid: Mapping[str, Sequence[float]]):
    """(names, axis lengths, [(net_g, q0_g or None)]) for the outer product of `grid`."""
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"`grid` must be a non-empty dict of hyperparameter name -> values, got grid={grid!r}")
    known = set().union(*(layer.hyper.values for layer in net.layers if layer.hyper is not None)) | {"q0"}
    axes = []
    for name, values in grid.items():
        if name not in known:
            raise ValueError(f"unknown grid axis {name!r}; this network's hyperparameters are {sorted(known)}")
        array = np.asarray(values, np.float64).ravel() if np.ndim(values) else np.asarray([values], np.float64)
        if array.size == 0:
            raise ValueError(f"grid axis {name!r} has no values (length 0); give at least one")
        if not np.isfinite(array).all():
            raise ValueError(f"grid axis {name!r} must hold finite numbers, got {array.tolist()}")
        axes.append((name, array))
    points = []
    cache = {}
    for combo in itertools.product(*(v for _, v in axes)):
        overrides = {name: float(x) for (name, _), x in zip(axes, combo)}
        q0 = overrides.pop("q0", None)

        def rebuild(layer):
            if layer.hyper is None:
                return layer
            mine = {k: v for k, v in overrides.items() if k in layer.hyper.values}
            if not mine:
                return layer
            ident = (id(layer), tuple(sorted(mine.items())))
            if ident not in cache:
                cache[ident] = layer.hyper.rebuild(**mine)
            return cache[ident]

        points.append((Network(tuple(rebuild(layer) for layer in net.layers), net.tied), q0))
    return [n for n, _ in axes], tuple(len(v) for _, v in axes), points


def _representative(nets: Sequence[Network]) -> Network:
    """One network for the whole grid: equal structure, and homogeneous only where every grid point is."""
    first = nets[0]
    strip = lambda s: (s[0], tuple(r[:3] for r in s[1]))  # noqa: E731  (structure without homogeneity)
    for other in nets[1:]:
        if strip(other.structure()) != strip(first.structure()):
            raise ValueError(
                "every grid point must give a network of the same structure; "
                f"{[l.name for l in first.layers][:2]} vs {[l.name for l in other.layers][:2]}"
            )
    homogeneous = [all(n.layers[i].homogeneous for n in nets) for i in range(first.depth)]
    return Network(tuple(layer._replace(homogeneous=h) for layer, h in zip(first.layers, homogeneous)), first.tied)


def sweep(
    net: Network,
    samples: int,
    seed: int | npt.ArrayLike = 0,
    *,
    grid: Mapping[str, Sequence[float]],
    key: jax.Array | None = None,
    q0: float = 1.0,
    spectrum_at: Sequence[int] = (),
    method: str = "power",
    fields: Sequence[str] | None = None,
    norms_at: Sequence[int] | None = None,
    dtype: DTypeLike | None = None,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: bool | None = None,
    verify: bool = True,
) -> SimulationResult:
    r"""`simulate` over the outer product of hyperparameter values, as one compiled program.

    ``grid={"sigma_w": [1.0, 1.5, 2.0], "sigma_b": [0.0, 0.3]}`` sets σ_w, σ_b of every
    layer that has them (any `jaxgrad.layers.Hyper` value, and ``"q0"``) and returns
    arrays of shape ``(3, 2, samples, depth)``. By default every grid point sees the
    same samples (common random numbers: sample i uses keys from (seed, i)); `seed` may
    instead be an integer array of the grid's shape (one seed per grid point), and then
    grid point g equals ``simulate(net_g, samples, seed[g])`` bit for bit.

    ``verify`` (default True): the self-check of `simulate`, on the first grid point's first
    sample and on a sample inside a micro-batch of the last grid point.

    Returns:
      A `SimulationResult` whose arrays carry the grid's axes in front; its config
      records the grid.
    """
    samples, _, dtype_name = _check_common(net, samples, 0, key, dtype, chunk_size, devices, 0)
    q0 = _check_q0(q0)
    verify = _check_verify(verify)
    requested, method = method, choose_method(net, method)
    fields = _check_fields(fields, method)
    spectrum_at = _check_spectrum_at(spectrum_at, net, method)
    norms_at = _check_norms_at(norms_at, net, method, fields)
    names, shape, points = _grid_points(net, grid)
    G = len(points)
    if key is None:
        seeds = np.asarray(seed)
        if seeds.ndim not in (0, len(shape)) or (seeds.ndim and seeds.shape != shape):
            raise ValueError(
                f"`seed` must be one integer or an integer array of the grid's shape {shape}, got shape {seeds.shape}"
            )
        seed = np.broadcast_to(seeds, shape).reshape(G)
    rep = _representative([n for n, _ in points])
    plan = _plan(verify, rep, method, fields, norms_at, spectrum_at)
    np_dtype = np.dtype(dtype_name)
    coeffs = jax.tree.map(lambda *xs: np.stack(xs), *[probes.coefficient_arrays(n, np_dtype) for n, _ in points])
    q0_values = [q0 if g_q0 is None else _check_q0(g_q0) for _, g_q0 in points]
    q0s = np.asarray(q0_values, np_dtype)
    work = _simulation_program(rep, method, spectrum_at, fields, dtype_name, False, norms_at)[2]

    def execute(mode):
        probe, cache_key, work = _simulation_program(
            rep, method, spectrum_at, fields, dtype_name, False, norms_at, False, plan.keep_at if plan else (), mode
        )
        with jax.enable_x64(dtype_name == "float64"):
            return ensemble.run(
                probe,
                samples,
                seed=seed,
                key=key,
                args=(coeffs, q0s),
                grid_size=G,
                chunk_size=chunk_size,
                devices=devices,
                bytes_per_sample=work,
                progress=_progress(progress, "sweep"),
                cache_key=cache_key,
            )

    def base(g):
        if key is not None:
            keys = as_key(key)
            return keys if keys.ndim == 0 else keys.reshape(-1)[g]
        return jax.random.key(int(np.asarray(seed).reshape(-1)[g]))

    rows = _verify.check_samples(samples, ensemble.micro_batch_size(work, _platform(devices)))
    checks = [(0, rows[0]), (G - 1, rows[-1])]
    raw, record, mode = _run_verified(
        rep,
        execute,
        lambda raw: [_check_sample(points[g][0], i, g, base(g), 0, None, None, q0_values[g]) for g, i in checks],
        plan=plan,
        method=method,
        dtype_name=dtype_name,
        source=probes._source(rep, False),
        norms_at=norms_at,
    )
    raw = {k: v.reshape(*shape, *v.shape[1:]) for k, v in _strip_checks(raw).items()}
    result = _result(
        raw,
        fields,
        spectrum_at,
        dict(
            net=[layer.name for layer in net.layers],
            tied=net.tied,
            samples=samples,
            seed=_seed_repr(0, key) if key is not None else np.asarray(seed).reshape(shape).tolist(),
            q0=q0,
            grid={n: [float(x) for x in np.asarray(grid[n], np.float64).ravel()] for n in names},
            **_method_config(net, requested, method),
            dtype=dtype_name,
            spectrum_at=list(spectrum_at),
            fields=list(fields),
            norms_at=None if norms_at is None else list(norms_at),
            verified=record is not None,
            verification=record,
            jacobian=mode,
        ),
    )
    _warn_nonfinite(_unexpected(_result_arrays(result)), samples * G, "jaxgrad.sweep")
    return result


# --------------------------------------------------------------------------- Lyapunov


def lyapunov_spectrum(
    net: Network,
    samples: int,
    seed: int = 0,
    *,
    key: jax.Array | None = None,
    params: Params | None = None,
    q0: float = 1.0,
    sort: bool = True,
    dtype: DTypeLike | None = None,
    chunk_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    sample_offset: int = 0,
    progress: bool | None = None,
) -> np.ndarray:
    r"""Per-layer Lyapunov exponents of $J_L\cdots J_1$ by the QR method, natural log.

    $λ_i = \frac1L\sum_{\ell=1}^L \ln|(R_\ell)_{ii}|$ with $J_\ell Q_{\ell-1} = Q_\ell R_\ell$,
    $Q_0 = I$ (Benettin et al. 1980); as L → ∞ these converge to the exponents of
    Oseledets' theorem. Samples use the same keys (and `params` the same form) as `simulate`.

    Arguments:
      sort: True (default): each sample's exponents in descending order (order
        statistics: at finite depth the sorted top exponent is biased upward);
        False: the unsorted diagonal of R, in QR order, the estimator for which Newman's
        Gaussian formula (`jaxgrad.theory.gaussian_lyapunov_spectrum`) is exact at every depth.

    Returns:
      (samples, min width) array.
    """
    samples, seed, dtype_name = _check_common(net, samples, seed, key, dtype, chunk_size, devices, sample_offset)
    q0 = _check_q0(q0)
    if not isinstance(sort, (bool, np.bool_)):
        raise ValueError(f"`sort` must be True or False, got sort={sort!r}")
    given = None if params is None else _given_params(net, params, samples, dtype_name)
    dtype = jnp.dtype(dtype_name)
    probe = probes.lyapunov(net, dtype=dtype, sort=bool(sort), params_given=given is not None)
    n_max = max(net.widths)
    np_dtype = np.dtype(dtype_name)
    args = (probes.coefficient_arrays(net, np_dtype), np.asarray(q0, np_dtype))
    with jax.enable_x64(dtype_name == "float64"):
        raw = ensemble.run(
            probe,
            samples,
            seed=seed,
            key=key,
            args=args,
            per_sample=_per_sample(given, None),
            sample_offset=sample_offset,
            chunk_size=chunk_size,
            devices=devices,
            bytes_per_sample=dtype.itemsize * 8 * n_max * n_max,
            progress=_progress(progress, "lyapunov"),
            cache_key=("lyapunov", net.structure(), bool(sort), dtype_name, given is not None),
        )
    exponents = raw["exponents"]
    _warn_nonfinite(_unexpected({"exponents": exponents}), samples, "jaxgrad.lyapunov_spectrum")
    return exponents

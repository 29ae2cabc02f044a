r"""Per-sample measurements: what is computed for one random initialisation.

A probe is built once per network *structure* and returns a function

    probe(key_i, [params_i], coefficients, q0) -> dict of arrays

that `jaxgrad.ensemble.run` maps over samples. ``key_i`` is the sample's key
(`SampleKeys` derives the weight, input and probe keys from it), ``coefficients`` holds
every layer's hyperparameters as traced data (`jaxgrad.layers.Hyper`), ``q0`` the input
variance; ``params_i`` is present when parameters are given rather than drawn.

Where parameters come from (`ParamSource`):

* ``"drawn"``: layer ℓ (1-based) draws from ``fold_in(keys.weights, ℓ − 1)`` inside the
  scan (no weights stored: memory does not grow with depth), exactly as `Network.init`;
* ``"tied"``: one draw, ``fold_in(keys.weights, 0)``, used at every layer;
* ``"given"``: the caller's parameters, one set per sample (trained or hand-made).

Probes here:

* `product_norms` (seed §3, §5): the chain $P_\ell = J_\ell P_{\ell-1}$, $P_0 = I$, in one
  `lax.scan`, kept at unit Frobenius norm with its log-scale accumulated, recording
  ``log_spectral_norm`` $\ln\|P_\ell\|_2$, ``log_norm_product`` $\sum_{k\le\ell}\ln\|J_k\|_2$,
  ``log_forward_gain`` $\ln\|P_\ell u\|$, ``log_backward_gain`` $\ln\|P_\ell^\top e_\ell\|$ and
  ``log_signal_norm`` $\ln\|h^{(\ell)}\|$;
* `gains`: the same vector fields matrix-free (`jax.jvp` forward, `jax.vjp` backward);
* `matrix_free`: the gains, $\|J_\ell\|_2$ and $\|J_\ell\cdots J_1\|_2$ at chosen depths by
  Lanczos on Jacobian-vector products, for blocks too large to materialise;
* `lyapunov`: the QR method (Benettin et al. 1980).

A new architecture needs a layer (`jaxgrad.layers.Layer`) and, if it measures something
new, a probe of this shape; the runner and the engine do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxgrad.layers import HIGHEST, Layer, Network, Params, functions_of
from jaxgrad.spectral import lanczos_top_singular, lanczos_top_singular_operator

__all__ = [
    "FIELDS",
    "JACOBIAN_MODES",
    "MATRIX_FREE_FIELDS",
    "PARAM_SOURCES",
    "SampleKeys",
    "clustered_spectrum",
    "coefficient_arrays",
    "gains",
    "lanczos_max_steps",
    "lanczos_steps",
    "lyapunov",
    "matrix_free",
    "parameters",
    "product_lanczos_steps",
    "product_norms",
    "sample_keys",
]

FIELDS = ("log_spectral_norm", "log_norm_product", "log_forward_gain", "log_backward_gain", "log_signal_norm")
MATRIX_FREE_FIELDS = ("log_norm_product", "log_forward_gain", "log_backward_gain", "log_signal_norm")
PARAM_SOURCES = ("drawn", "tied", "given")

Probe = Callable[..., dict[str, jax.Array]]  # ``probe(key, *args) -> {field: array}``, for `jaxgrad.ensemble.run`


class SampleKeys(NamedTuple):
    weights: jax.Array  # layer ℓ (1-based) uses fold_in(weights, ℓ − 1), as Network.init does
    input: jax.Array
    forward_probe: jax.Array
    backward_probe: jax.Array  # e_ℓ from fold_in(backward_probe, ℓ − 1)
    lanczos: jax.Array


def sample_keys(seed: int | jax.Array, i: int | jax.Array) -> SampleKeys:
    """The keys of sample i: a function of (seed, i) only (`seed` an integer or a key)."""
    base = (
        seed
        if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key)
        else jax.random.key(seed)
    )
    return _split(jax.random.fold_in(base, i))


def _split(key) -> SampleKeys:
    return SampleKeys(*(jax.random.fold_in(key, s) for s in range(5)))


def _unit_vector(key, n, dtype):
    v = jax.random.normal(key, (n,), jnp.float32).astype(dtype)
    return v / jnp.linalg.norm(v)


def _input(keys: SampleKeys, n0: int, q0, dtype) -> jax.Array:
    """$h^{(0)} \\sim N(0, q_0 I)$."""
    return jnp.sqrt(q0).astype(dtype) * jax.random.normal(keys.input, (n0,), jnp.float32).astype(dtype)


def _unpack(rest, params_given: bool, inputs_given: bool):
    """(params, inputs, coefficients, q0) from a probe's arguments after the key.

    With given parameters or inputs the first argument is the sample's data, a dict with
    ``"params"`` and/or ``"inputs"`` (`jaxgrad.ensemble.run`'s ``per_sample``)."""
    if params_given or inputs_given:
        data, (coefficients, q0) = rest[0], rest[1:]
        return data.get("params"), data.get("inputs"), coefficients, q0
    coefficients, q0 = rest
    return None, None, coefficients, q0


def _start(keys: SampleKeys, n0: int, q0, dtype, inputs) -> _Signal:
    """The signal at depth 0: the given input, or h⁽⁰⁾ ~ N(0, q₀ I) drawn from the sample's key."""
    h = _input(keys, n0, q0, dtype) if inputs is None else inputs.astype(dtype)
    return _Signal(h, jnp.zeros((), dtype), jnp.zeros((), jnp.int32))


def _kept_start(run, keep_at, dtype):
    """The layer inputs kept for the self-check (`jaxgrad.verify`): h⁽ℓ⁻¹⁾ and its log-scale for
    the 1-based layers ℓ of `keep_at` in `run`."""
    return {
        c: (jnp.zeros((run.layer.n_in,), dtype), jnp.zeros((), dtype))
        for c in keep_at
        if run.start < c <= run.start + run.count
    }


def _keep(kept, ell, signal):
    """Keeps the input of layer ``ell + 1`` (0-based ``ell``) if it is one of `kept`'s layers."""
    return {
        c: (
            jnp.where(ell == c - 1, signal.h.astype(h.dtype), h),
            jnp.where(ell == c - 1, signal.log_scale.astype(s.dtype), s),
        )
        for c, (h, s) in kept.items()
    }


def _kept_out(kept) -> dict:
    out = {}
    for c, (h, s) in kept.items():
        out[f"check_h{c}"], out[f"check_s{c}"] = h, s
    return out


def _safe_log_normalise(x):
    """(x / ‖x‖, ln ‖x‖), with 0 → (0, −inf) rather than NaN."""
    n = jnp.linalg.norm(x)
    return x / jnp.where(n > 0, n, 1.0), jnp.log(n)


JACOBIAN_MODES = ("rev", "fwd")


def _layer_jacobian(jacobian, apply, params, h, mode: str = "rev"):
    """(J, apply(params, h)): the layer's fast path `jacobian`, or `jax.jacrev` (``mode="rev"``)
    or `jax.jacfwd` (``"fwd"``) of `apply`."""
    if jacobian is not None:
        return jacobian(params, h)
    differentiate = jax.jacfwd if mode == "fwd" else jax.jacrev
    return differentiate(apply, argnums=1)(params, h), apply(params, h)


def lanczos_steps(n: int) -> int:
    """Lanczos steps for a top singular value at width n (1e-6 relative or better, tested)."""
    return min(n, 32)


def product_lanczos_steps(n: int) -> tuple[int, int | None]:
    """(steps, max_steps) of the warm-started Lanczos run for ‖P_ℓ‖₂ = ‖J_ℓ⋯J₁‖₂ at width n: the fixed
    `lanczos_steps` (n), never adaptive.

    An adaptive run (blocks of 8 steps until the top Ritz value settles) was 7–13 % faster on MLPs,
    but its settling test stops on a stagnating run: where many singular values sit near the top
    (a residual identity puts them near 1) the Ritz value can stay flat for a block before the
    Krylov space finds the top of the cluster, and the run stopped up to 0.35 low in ln‖P_ℓ‖₂
    (issue 27; `benchmarks/accuracy.py`, cases ``token-rms-residual`` and ``mlp-residual``). No
    test on Ritz values can tell a stagnating run from a converged one, so the run is fixed.
    """
    return lanczos_steps(n), None


def lanczos_max_steps(n: int) -> int:
    """The cap of the adaptive Lanczos run for ‖J_ℓ‖₂ (`jaxgrad.spectral.lanczos_top_singular`,
    ``max_steps``) in networks with a clustered top spectrum (`clustered_spectrum`)."""
    return 8 * lanczos_steps(n)


def clustered_spectrum(net: Network) -> bool:
    r"""Whether the layers' Jacobians may have a clustered top spectrum: any orthogonal weights.

    With Gaussian weights the top of $J_\ell$'s singular spectrum has the Marchenko–Pastur
    edge's relative gap, about $n^{-2/3}$, and 32 Lanczos steps from a random start reach
    1e-7 relative. With orthogonal weights the singular values of $J_\ell = D W$ are those of
    $σ_w D$ up to mixing: φ′ values packed near their maximum, a relative top gap of about
    1e-4 at n = 64 and 1e-6 at n = 512 (tanh), where 32 steps leave up to 1.3e-3 relative
    error. For such networks the engine runs ‖J_ℓ‖₂ adaptively, up to `lanczos_max_steps`
    (results/benchmarks/NOTES.md). Residual layers $I + αJ_f$ pack their singular values
    near 1 the same way: at n = 192 the fixed 32 steps left 2.7e-4 relative error on
    ``mlp(residual_alpha=0.5)`` (`benchmarks/accuracy.py`, issue 27), so they run adaptively too.
    A user layer is detected by the word "orthogonal" or "residual" in its `Hyper.structure`;
    others run the fixed `lanczos_steps` (and the self-check, `jaxgrad.verify`, compares them).
    """
    return any(
        layer.hyper is not None
        and ("orthogonal" in repr(layer.hyper.structure) or "residual" in repr(layer.hyper.structure))
        for layer in net.layers
    )


class _Signal(NamedTuple):
    h: jax.Array  # h⁽ℓ⁾, or its direction for homogeneous layers
    log_scale: jax.Array  # ln of the factor carried outside h (0 when not homogeneous)
    exit_depth: jax.Array


def _advance(homogeneous: bool, signal: _Signal, h_next, ell) -> tuple[_Signal, jax.Array]:
    """The signal after layer ℓ (0-based `ell`) given its raw output; also ln ‖h⁽ℓ⁾‖."""
    if homogeneous:  # apply(p, c h) = c apply(p, h): carry direction × log-scale
        h_next, log_n = _safe_log_normalise(h_next)
        log_scale = signal.log_scale + log_n
        log_norm = log_scale
    else:
        log_scale = signal.log_scale
        log_norm = log_scale + jnp.log(jnp.linalg.norm(h_next))
    in_range = jnp.isfinite(log_norm)  # not overflowed to inf/NaN, not underflowed to 0
    exit_depth = jnp.where((signal.exit_depth == 0) & ~in_range, ell + 1, signal.exit_depth)
    return _Signal(h_next, log_scale, exit_depth), log_norm


def _prepare(signal: _Signal, homogeneous: bool) -> _Signal:
    """Switches the signal's representation at a run boundary (direction × scale or plain)."""
    if homogeneous:
        h, log_n = _safe_log_normalise(signal.h)
        return _Signal(h, signal.log_scale + log_n, signal.exit_depth)
    return _Signal(signal.h * jnp.exp(signal.log_scale), jnp.zeros_like(signal.log_scale), signal.exit_depth)


class _Run(NamedTuple):
    layer: Layer
    start: int
    count: int  # type: ignore[assignment]  # (a field, shadowing tuple.count)
    homogeneous: bool


def _scan(body, carry, run: _Run, xs, reverse=False):
    """`lax.scan` of `body` over the layers of `run` (xs: (ℓ, coefficients, params) per layer).

    A non-square layer changes the carry's shape, so it cannot repeat inside a scan;
    a network's runs of non-square layers have length one and are applied directly.
    """
    if run.layer.n_in == run.layer.n_out:
        return jax.lax.scan(body, carry, xs, reverse=reverse)
    outs = []
    for k in reversed(range(run.count)) if reverse else range(run.count):
        carry, out = body(carry, jax.tree.map(lambda x: x[k], xs))
        outs.append(out)
    outs = outs[::-1] if reverse else outs
    return carry, jax.tree.map(lambda *o: jnp.stack(o), *outs) if outs[0] is not None else None


class _Layers:
    """Where each layer's functions and parameters come from, for one sample."""

    def __init__(self, net: Network, source: str, cuts: Sequence[int] = ()):
        if source not in PARAM_SOURCES:
            raise ValueError(f"unknown parameter source {source!r}; valid choices are {list(PARAM_SOURCES)}")
        self.source, self.tied = source, net.tied
        # id(run) -> that run's given parameters, stacked over its layers (set while tracing)
        self._given: dict[int, object] = {}
        self.runs = []
        for layer, start, count, homogeneous in net.runs():
            edges = [start] + [d for d in sorted(cuts) if start < d < start + count] + [start + count]
            self.runs += [_Run(layer, a, b - a, homogeneous) for a, b in zip(edges, edges[1:])]
        self.segments = [(layer, start, count) for layer, start, count, _ in net.runs()]

    def xs(self, r: int, coefficients, params):
        """The scan inputs of run `r`: (ℓ, that run's coefficients, its given params or None)."""
        run = self.runs[r]
        ells = jnp.arange(run.start, run.start + run.count, dtype=jnp.int32)
        coeffs = self._slice(coefficients, run)
        if self.source == "given" and not self.tied:
            # Indexed inside the body (`params`), not scanned over: a scanned input is transposed to
            # (depth, batch, …) under vmap, and XLA then multiplies it in another memory layout,
            # which rounds differently from drawn parameters.
            self._given[id(run)] = self._slice(params, run)
        return ells, coeffs, None

    def _slice(self, per_segment, run: _Run):
        """Rows of `run` from arrays stacked per segment of the network."""
        for s, (_, start, count) in enumerate(self.segments):
            if start <= run.start < start + count:
                lo = run.start - start
                return jax.tree.map(lambda a: a[lo : lo + run.count], per_segment[s])
        raise AssertionError("run outside every segment")

    def functions(self, run: _Run, coeffs):
        return functions_of(run.layer, coeffs if run.layer.hyper is not None else None)

    def tied_params(self, keys: SampleKeys, coefficients, params):
        """The one parameter set of a tied network (given, or drawn once); None if untied."""
        if not self.tied:
            return None
        if self.source == "given":
            return jax.lax.optimization_barrier(params)
        run = self.runs[0]
        init, _, _ = self.functions(run, jax.tree.map(lambda a: a[0], coefficients[0]))
        return jax.lax.optimization_barrier(_draw(run.layer, init, jax.random.fold_in(keys.weights, 0)))

    def params(self, run: _Run, ell, coeffs, given, keys: SampleKeys, tied):
        # The barrier makes the layer's parameters an opaque buffer whether drawn here or given, so XLA
        # fuses the layer's arithmetic the same way in both cases: drawn and given are bit-identical.
        if self.tied:
            return tied
        if self.source == "given":
            stacked = self._given[id(run)]
            return jax.lax.optimization_barrier(
                jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, ell - run.start, keepdims=False), stacked)
            )
        init, _, _ = self.functions(run, coeffs)
        return jax.lax.optimization_barrier(_draw(run.layer, init, jax.random.fold_in(keys.weights, ell)))


def _draw(layer: Layer, init, key):
    """``init(key)``: one network per seed whatever the dtype. jaxgrad's layers (and the adapters) draw in
    float32 and cast themselves; a hand-written layer (no `Hyper`) may draw in JAX's default float, so its
    ``init`` runs with 64-bit mode off and its floating leaves are cast to the run's default float."""
    if layer.hyper is not None:
        return init(key)
    with jax.enable_x64(False):
        params = init(key)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)


def _source(net: Network, params_given: bool) -> str:
    if params_given:
        return "given"
    return "tied" if net.tied else "drawn"


def product_norms(
    net: Network,
    *,
    dtype: DTypeLike,
    method: str = "power",
    spectrum_at: Sequence[int] = (),
    params_given: bool = False,
    norms_at: Sequence[int] | None = None,
    inputs_given: bool = False,
    keep_at: Sequence[int] = (),
    jacobian_mode: str = "rev",
) -> Probe:
    r"""The matrix probe: every field of `FIELDS` at every depth, and spectra at `spectrum_at`.

    ``method="power"``: warm-started Lanczos for $\|P_\ell\|_2$ (``product_lanczos_steps``) and
    a cold one without re-orthogonalisation for $\|J_\ell\|_2$; ``"svd"``: exact SVDs.
    Memory: O(width²) per sample, independent of depth (for drawn or tied parameters).

    ``norms_at``: depths (1-based, sorted) at which to compute $\|P_\ell\|_2$; the field
    ``log_spectral_norm`` then has one entry per depth in `norms_at`, and the other depths
    skip its Lanczos run (a `lax.cond` on the unbatched depth; the warm start carries over
    from the last computed depth). The chain itself, the vector fields and the bound
    $\sum\ln\|J_k\|_2$ are still computed at every depth.

    ``inputs_given``: the sample's $h^{(0)}$ is given (``data["inputs"]``), not drawn.
    ``keep_at``: 1-based layers whose input $h^{(\ell-1)}$ is returned (``check_h{ℓ}``, with its
    log-scale ``check_s{ℓ}``) for the self-check (`jaxgrad.verify`). ``jacobian_mode``: ``"rev"``
    (`jax.jacrev`, default) or ``"fwd"`` (`jax.jacfwd`) for layers without a fast path.
    """
    layers = _Layers(net, _source(net, params_given), spectrum_at)
    n0 = net.widths[0]
    tied_given = params_given and net.tied
    adaptive = clustered_spectrum(net)
    product_steps = product_lanczos_steps(n0)  # fixed length, never adaptive (issue 27)
    wanted = None
    if norms_at is not None:
        wanted = np.zeros(net.depth, bool)
        wanted[np.asarray(norms_at, int) - 1] = True
        picked = np.asarray(norms_at, int) - 1

    def top(A, v, steps, reorthogonalise=True, max_steps=None):
        if method == "svd":
            return jnp.linalg.svd(A, compute_uv=False)[0], v
        t = lanczos_top_singular(A, v, steps, reorthogonalise=reorthogonalise, max_steps=max_steps)
        return t.value, t.vector

    def probe(key, *rest):
        params, inputs, coefficients, q0 = _unpack(rest, params_given, inputs_given)
        keys = _split(key)
        tied = layers.tied_params(keys, coefficients, params)
        given = None if tied_given else params
        u = _unit_vector(keys.forward_probe, n0, dtype)
        signal = _start(keys, n0, q0, dtype, inputs)
        P, log_c, cum = jnp.eye(n0, dtype=dtype), jnp.zeros((), dtype), jnp.zeros((), dtype)
        v = jnp.zeros((n0,), dtype)  # the previous depth's top vector (none before depth 1)
        outputs, spectra, checks = [], {}, {}
        for r, run in enumerate(layers.runs):
            signal = _prepare(signal, run.homogeneous)

            def body(carry, xs, run=run):
                signal, P, log_c, v, cum, kept = carry
                ell, coeffs, p_given = xs
                kept = _keep(kept, ell, signal)
                _, apply, jacobian = layers.functions(run, coeffs)
                p = layers.params(run, ell, coeffs, p_given, keys, tied)
                J, h_next = _layer_jacobian(jacobian, apply, p, signal.h, jacobian_mode)
                signal, log_h = _advance(run.homogeneous, signal, h_next, ell)
                J = J.astype(dtype)
                P, log_s = _safe_log_normalise(jnp.matmul(J, P, precision=HIGHEST))
                log_c = log_c + log_s
                # The warm start plus a fresh random unit vector of the same norm (`product_start`).
                restart = _unit_vector(jax.random.fold_in(keys.lanczos, (1 << 30) + ell), n0, dtype)
                if wanted is None:
                    s_P, v = top(P, v + restart, product_steps[0], max_steps=product_steps[1])
                    log_P = log_c + jnp.log(s_P)
                else:

                    def norm(v, P=P):
                        s, v = top(P, v + restart, product_steps[0], max_steps=product_steps[1])
                        return jnp.log(s).astype(dtype), v

                    log_P, v = jax.lax.cond(jnp.asarray(wanted)[ell], norm, lambda v: (jnp.zeros((), dtype), v), v)
                    log_P = log_c + log_P
                # ‖J_ℓ‖₂ from a random start; only the value is used, for which the
                # three-term recurrence suffices (no re-orthogonalisation).
                v_J = _unit_vector(jax.random.fold_in(keys.lanczos, ell), J.shape[1], dtype)
                if adaptive and J.shape[1] <= lanczos_steps(J.shape[1]):  # a full Krylov space: exact
                    s_J, _ = top(J, v_J, J.shape[1])
                else:
                    s_J, _ = top(
                        J,
                        v_J,
                        lanczos_steps(J.shape[1]),
                        reorthogonalise=False,
                        max_steps=lanczos_max_steps(J.shape[1]) if adaptive else None,
                    )
                cum = cum + jnp.log(s_J)
                if adaptive:  # P₁ = J₁ (P₀ = I): the adaptive run's norm, not the warm-started one's
                    log_P = jnp.where(ell == 0, cum, log_P)  # (whose start at ℓ = 1 is random)
                e = _unit_vector(jax.random.fold_in(keys.backward_probe, ell), J.shape[0], dtype)
                out = (
                    log_P,
                    cum,
                    log_c + jnp.log(jnp.linalg.norm(jnp.matmul(P, u, precision=HIGHEST))),
                    log_c + jnp.log(jnp.linalg.norm(jnp.matmul(P.T, e, precision=HIGHEST))),
                    log_h,
                )
                return (signal, P, log_c, v, cum, kept), out

            carry, out = _scan(
                body,
                (signal, P, log_c, v, cum, _kept_start(run, keep_at, dtype)),
                run,
                layers.xs(r, coefficients, given),
            )
            signal, P, log_c, v, cum, kept = carry
            checks.update(_kept_out(kept))
            outputs.append(out)
            if run.start + run.count in spectrum_at:
                spectra[f"sv{run.start + run.count}"] = log_c + jnp.log(jnp.linalg.svd(P, compute_uv=False))
        stacked = [jnp.concatenate(parts) for parts in zip(*outputs)]
        if wanted is not None:
            stacked[0] = stacked[0][picked]
        return dict(zip(FIELDS, stacked), overflow=signal.exit_depth, **spectra, **checks)

    return probe


def gains(
    net: Network,
    *,
    dtype: DTypeLike,
    params_given: bool = False,
    inputs_given: bool = False,
    keep_at: Sequence[int] = (),
) -> Probe:
    """Matrix-free gains: a forward sweep with `jax.jvp`, a backward sweep with `jax.vjp`.

    The backward sweep starts from a random unit $e_L$ at depth L and redraws each
    layer's weights from its key, so no weights are stored; the inputs $h^{(\\ell-1)}$ of
    the layers are stored (O(depth × width) memory, no width² term). Here
    ``log_backward_gain[ℓ]`` is $\\ln\\|J_1^\\top\\cdots J_\\ell^\\top e_\\ell\\|$ with $e_\\ell$ the
    normalised error signal backpropagated from $e_L$ (not independent across ℓ). Where a
    layer maps the error signal to exactly zero, the gain below it is 0/0, NaN (and warned about).
    Cost per sample: one JVP and one VJP per layer.
    """
    layers = _Layers(net, _source(net, params_given))
    n0 = net.widths[0]
    tied_given = params_given and net.tied

    def probe(key, *rest):
        params, h0, coefficients, q0 = _unpack(rest, params_given, inputs_given)
        keys = _split(key)
        tied = layers.tied_params(keys, coefficients, params)
        given = None if tied_given else params
        f, log_f = _unit_vector(keys.forward_probe, n0, dtype), jnp.zeros((), dtype)
        signal = _start(keys, n0, q0, dtype, h0)
        fwd_out, inputs, checks = [], [], {}
        for r, run in enumerate(layers.runs):
            signal = _prepare(signal, run.homogeneous)

            def fbody(carry, xs, run=run):
                signal, f, log_f, kept = carry
                ell, coeffs, p_given = xs
                kept = _keep(kept, ell, signal)
                _, apply, _ = layers.functions(run, coeffs)
                p = layers.params(run, ell, coeffs, p_given, keys, tied)
                h_in = signal.h
                h_next, f_next = jax.jvp(lambda h: apply(p, h), (h_in,), (f,))
                signal, log_h = _advance(run.homogeneous, signal, h_next, ell)
                f_next, log_s = _safe_log_normalise(f_next)
                return (signal, f_next, log_f + log_s, kept), (log_f + log_s, log_h, h_in)

            (signal, f, log_f, kept), (gain, log_h, h_in) = _scan(
                fbody, (signal, f, log_f, _kept_start(run, keep_at, dtype)), run, layers.xs(r, coefficients, given)
            )
            checks.update(_kept_out(kept))
            fwd_out.append((gain, log_h))
            inputs.append(h_in)
        # Backward sweep from depth L to 1: δ ← J_ℓᵀ δ, tracking ln ‖δ⁽ℓ⁾‖.
        e = _unit_vector(jax.random.fold_in(keys.backward_probe, net.depth - 1), net.widths[-1], dtype)
        delta, log_d = e, jnp.zeros((), dtype)
        log_delta = []
        for r in reversed(range(len(layers.runs))):
            run, h_in = layers.runs[r], inputs[r]

            def bbody(carry, xs, run=run):
                delta, log_d = carry
                (ell, coeffs, p_given), h = xs
                _, apply, _ = layers.functions(run, coeffs)
                p = layers.params(run, ell, coeffs, p_given, keys, tied)
                _, pullback = jax.vjp(lambda x: apply(p, x), h)
                delta, log_s = _safe_log_normalise(pullback(delta)[0])
                return (delta, log_d + log_s), log_d

            (delta, log_d), logs = _scan(
                bbody, (delta, log_d), run, (layers.xs(r, coefficients, given), h_in), reverse=True
            )
            log_delta.insert(0, logs)
        # log_delta[ℓ−1] = ln‖δ⁽ℓ⁾‖ (relative to ‖e_L‖ = 1); log_d = ln‖δ⁽⁰⁾‖.
        backward = log_d - jnp.concatenate(log_delta)
        gain, log_h = (jnp.concatenate(parts) for parts in zip(*fwd_out))
        return dict(
            log_forward_gain=gain,
            log_backward_gain=backward,
            log_signal_norm=log_h,
            overflow=signal.exit_depth,
            **checks,
        )

    return probe


def matrix_free(
    net: Network,
    *,
    dtype: DTypeLike,
    spectrum_at: Sequence[int] = (),
    fields: Sequence[str] = MATRIX_FREE_FIELDS,
    params_given: bool = False,
    inputs_given: bool = False,
    keep_at: Sequence[int] = (),
) -> Probe:
    r"""The matrix probe without matrices: every quantity from Jacobian-vector products.

    No Jacobian is formed; each layer is used only through $v \mapsto J_\ell v$ (`jax.jvp`,
    or `jax.linearize` once per layer) and $w \mapsto J_\ell^\top w$ (`jax.vjp` or its
    transpose). With k = `lanczos_steps` (n) = min(n, 32), the cost per sample, in
    Jacobian-vector products (JVP: $J v$; VJP: $J^\top w$; each about one forward pass of
    the layer), is:

    * ``log_forward_gain``, ``log_signal_norm``: one JVP per layer (L in all), as `gains`;
    * ``log_backward_gain``: one VJP per layer (L), with `gains`' definition: one error
      signal $e_L$ backpropagated, ``[ℓ]`` $= \ln\|J_1^\top\cdots J_\ell^\top ê_\ell\|$, $ê_\ell$ its
      normalised value at depth ℓ. At ℓ = L it is the matrix probe's value (both start from
      the same random $e_L$); the matrix probe draws a fresh $e_\ell$ at every ℓ, which
      matrix-free would cost ℓ VJPs per depth, L(L+1)/2 in all;
    * ``log_norm_product`` $\sum_{k\le\ell}\ln\|J_k\|_2$: k JVPs and k VJPs per layer (2kL), by
      Lanczos on $J_\ell^\top J_\ell / c_\ell^2$ (below) of the layer alone at its input
      $h^{(\ell-1)}$, from the random start and with the recurrence the matrix probe uses (no
      re-orthogonalisation);
    * ``sv{d}`` for the depths d in `spectrum_at`: $\ln\|J_d\cdots J_1\|_2$ (the top singular
      value only), by re-orthogonalised Lanczos on $P_d^\top P_d$ (k steps from a random
      start) whose matvec runs `jax.jvp` forward through the chain and `jax.vjp` back. The
      m requested depths share one sweep: each Lanczos step carries the m vectors together
      through layers 1..D, D = max(spectrum_at), keeping vector j's value at depth $d_j$ on the
      way forward and injecting it at $d_j$ on the way back (a zero cotangent stays zero above
      it), so each step redraws each layer once for all m: k·m·D JVPs and k·m·D VJPs in all
      (k·Σd would be the minimum, at m times the program size).

    Numerics: the chain's matvec divides the vector after layer ℓ by a fixed
    $c_\ell = \|J_\ell \hat f_{\ell-1}\|$, the forward probe's gain at ℓ (the same number for
    every Lanczos vector, so the map stays linear), and adds $\sum_{\ell\le d}\ln c_\ell$
    back: products of thousands of layers neither overflow nor underflow. The layer's own
    Lanczos is scaled the same way, so tiny or huge layers (σ_w = 1e-9) keep their accuracy.

    Memory per sample: the layer inputs $h^{(0)},…,h^{(L-1)}$ (O(L n): the chain's
    linearisation points; the parameters are redrawn from their keys at every pass through
    a layer, as in `gains`, so none are stored for drawn or tied parameters), the Lanczos
    bases (O(k m n)), and one layer's parameters and linearisation at a time: no n² term
    unless a layer's own parameters have one, nothing else that grows with depth.

    Arguments:
      net: the network.
      dtype: float dtype of the computation.
      spectrum_at: depths (1..L) at which to record ``sv{d}``, shape (1,).
      fields: which of `MATRIX_FREE_FIELDS` to compute (the others' work is not traced).
      params_given: parameters are an argument (one set per sample), not drawn.
    """
    spectrum_at = tuple(sorted(set(spectrum_at)))
    layers = _Layers(net, _source(net, params_given))
    n0 = net.widths[0]
    tied_given = params_given and net.tied
    want_norms = "log_norm_product" in fields
    adaptive = clustered_spectrum(net)
    want_backward = "log_backward_gain" in fields

    def layer_map(run, x, keys, tied):
        """(h ↦ f⁽ℓ⁾(h)) for the layer of scan input x = (ℓ, coefficients, given params)."""
        ell, coeffs, p_given = x
        _, apply, _ = layers.functions(run, coeffs)
        p = layers.params(run, ell, coeffs, p_given, keys, tied)
        return lambda h: apply(p, h)

    def chain(xs, inputs, scales, keys, tied, depth):
        """Runs (sliced to layers 1..depth) and v, d ↦ (P_d/C_d)ᵀ(P_d/C_d) v, C_d = Π_{ℓ≤d} c_ℓ (d traced ≤ depth)."""
        parts = []
        for r, run in enumerate(layers.runs):
            count = min(run.count, depth - run.start)
            if count > 0:
                cut = lambda a, count=count: a[:count]  # noqa: E731
                parts.append((run, run._replace(count=count), jax.tree.map(cut, (xs[r], inputs[r], scales[r]))))

        def gram(v, d):
            t, stash = v, []
            for run, sliced, data in parts:  # forward: t ← J_ℓ t / c_ℓ; keep t at depth d

                def fbody(carry, x, run=run):
                    t, kept = carry
                    x, h, log_c = x
                    _, t = jax.jvp(layer_map(run, x, keys, tied), (h,), (t,))
                    t = t * jnp.exp(-log_c)
                    return (t, jnp.where(x[0] + 1 == d, t, kept)), None

                (t, kept), _ = _scan(fbody, (t, jnp.zeros((run.layer.n_out,), dtype)), sliced, data)
                stash.append(kept)
            u = jnp.zeros((parts[-1][0].layer.n_out,), dtype)
            for (run, sliced, data), kept in reversed(list(zip(parts, stash))):  # back: inject at d, u ← J_ℓᵀ u / c_ℓ

                def bbody(u, x, run=run, kept=kept):
                    x, h, log_c = x
                    u = u + jnp.where(x[0] + 1 == d, kept, jnp.zeros_like(kept))
                    _, pullback = jax.vjp(layer_map(run, x, keys, tied), h)
                    return pullback(u * jnp.exp(-log_c))[0], None

                u, _ = _scan(bbody, u, sliced, data, reverse=True)
            return u

        return gram

    def probe(key, *rest):
        params, h0, coefficients, q0 = _unpack(rest, params_given, inputs_given)
        keys = _split(key)
        tied = layers.tied_params(keys, coefficients, params)
        given = None if tied_given else params
        xs = [layers.xs(r, coefficients, given) for r in range(len(layers.runs))]
        f, log_f, cum = _unit_vector(keys.forward_probe, n0, dtype), jnp.zeros((), dtype), jnp.zeros((), dtype)
        signal = _start(keys, n0, q0, dtype, h0)
        fwd_out, inputs, scales, checks = [], [], [], {}
        for r, run in enumerate(layers.runs):
            signal = _prepare(signal, run.homogeneous)

            def fbody(carry, x, run=run):
                signal, f, log_f, cum, kept = carry
                kept = _keep(kept, x[0], signal)
                h_in = signal.h
                h_next, linear = jax.linearize(layer_map(run, x, keys, tied), h_in)
                signal, log_h = _advance(run.homogeneous, signal, h_next, x[0])
                f_next, log_s = _safe_log_normalise(linear(f))
                log_c = jnp.where(jnp.isfinite(log_s), log_s, 0.0)  # c_ℓ of the chain's matvec
                if want_norms:  # ‖J_ℓ‖₂ = c_ℓ ‖J_ℓ/c_ℓ‖₂, Lanczos on (J_ℓ/c_ℓ)ᵀ(J_ℓ/c_ℓ) = transpose ∘ linearisation
                    transpose = jax.linear_transpose(linear, h_in)
                    inverse_square = jnp.exp(-2 * log_c)
                    v_J = _unit_vector(jax.random.fold_in(keys.lanczos, x[0]), run.layer.n_in, dtype)
                    s_J = lanczos_top_singular_operator(
                        lambda v: transpose(linear(v))[0] * inverse_square,
                        v_J,
                        lanczos_steps(run.layer.n_in),
                        reorthogonalise=False,
                        max_steps=lanczos_max_steps(run.layer.n_in) if adaptive else None,
                    ).value
                    cum = cum + log_c + jnp.log(s_J)
                return (signal, f_next, log_f + log_s, cum, kept), (log_f + log_s, cum, log_h, h_in, log_c)

            (signal, f, log_f, cum, kept), (gain, norms, log_h, h_in, log_c) = _scan(
                fbody, (signal, f, log_f, cum, _kept_start(run, keep_at, dtype)), run, xs[r]
            )
            checks.update(_kept_out(kept))
            fwd_out.append((gain, norms, log_h))
            inputs.append(h_in)
            scales.append(log_c)
        gain, norms, log_h = (jnp.concatenate(parts) for parts in zip(*fwd_out))
        out = dict(log_forward_gain=gain, log_signal_norm=log_h, overflow=signal.exit_depth, **checks)
        if want_norms:
            out["log_norm_product"] = norms
        if want_backward:  # as `gains`: δ ← J_ℓᵀ δ from a random unit e_L, tracking ln ‖δ⁽ℓ⁾‖
            delta = _unit_vector(jax.random.fold_in(keys.backward_probe, net.depth - 1), net.widths[-1], dtype)
            log_d, log_delta = jnp.zeros((), dtype), []
            for r in reversed(range(len(layers.runs))):

                def bbody(carry, x, run=layers.runs[r]):
                    delta, log_d = carry
                    x, h = x
                    _, pullback = jax.vjp(layer_map(run, x, keys, tied), h)
                    delta, log_s = _safe_log_normalise(pullback(delta)[0])
                    return (delta, log_d + log_s), log_d

                (delta, log_d), logs = _scan(bbody, (delta, log_d), layers.runs[r], (xs[r], inputs[r]), reverse=True)
                log_delta.insert(0, logs)
            out["log_backward_gain"] = log_d - jnp.concatenate(log_delta)
        if spectrum_at:
            gram = chain(xs, inputs, scales, keys, tied, max(spectrum_at))
            starts = jnp.stack(
                [_unit_vector(jax.random.fold_in(keys.lanczos, (1 << 30) + d), n0, dtype) for d in spectrum_at]
            )

            def top(v0, d):
                return lanczos_top_singular_operator(lambda v: gram(v, d), v0, lanczos_steps(n0)).value

            values = jax.vmap(top)(starts, jnp.asarray(spectrum_at, jnp.int32))
            log_scale = jnp.cumsum(jnp.concatenate(scales))
            for j, d in enumerate(spectrum_at):
                out[f"sv{d}"] = (log_scale[d - 1] + jnp.log(values[j]))[None]
        return out

    return probe


def lyapunov(
    net: Network, *, dtype: DTypeLike, sort: bool = True, params_given: bool = False, inputs_given: bool = False
) -> Probe:
    r"""QR method (Benettin et al. 1980): $J_\ell Q_{\ell-1} = Q_\ell R_\ell$,
    $λ_i = \frac1L \sum_\ell \ln|(R_\ell)_{ii}|$; sorted descending per sample if `sort`."""
    layers = _Layers(net, _source(net, params_given))
    n0, k = net.widths[0], min(net.widths)
    tied_given = params_given and net.tied

    def probe(key, *rest):
        params, inputs, coefficients, q0 = _unpack(rest, params_given, inputs_given)
        keys = _split(key)
        tied = layers.tied_params(keys, coefficients, params)
        given = None if tied_given else params
        signal = _start(keys, n0, q0, dtype, inputs)
        Q = jnp.eye(n0, k, dtype=dtype)
        acc = jnp.zeros((k,), dtype)
        for r, run in enumerate(layers.runs):
            signal = _prepare(signal, run.homogeneous)

            def body(carry, xs, run=run):
                signal, Q, acc = carry
                ell, coeffs, p_given = xs
                _, apply, jacobian = layers.functions(run, coeffs)
                p = layers.params(run, ell, coeffs, p_given, keys, tied)
                J, h_next = _layer_jacobian(jacobian, apply, p, signal.h)
                signal, _ = _advance(run.homogeneous, signal, h_next, ell)
                Q, R = jnp.linalg.qr(jnp.matmul(J.astype(dtype), Q, precision=HIGHEST))
                return (signal, Q, acc + jnp.log(jnp.abs(jnp.diagonal(R)))), None

            (signal, Q, acc), _ = _scan(body, (signal, Q, acc), run, layers.xs(r, coefficients, given))
        exponents = acc / net.depth
        return dict(exponents=-jnp.sort(-exponents) if sort else exponents)

    return probe


def parameters(net: Network, *, dtype: DTypeLike) -> Callable[..., Params]:
    """The probe that returns the parameters the other probes draw, per segment stacked over depth.

    Each layer's draw happens inside a `lax.scan` behind the same optimisation barrier as in
    `product_norms`, so the values are bit-identical to the engine's (an eager
    ``jax.vmap(net.init)`` may round the last bit differently: it is not fused the same way).
    """
    layers = _Layers(net, "drawn")
    del dtype  # the layers' own dtype decides

    def probe(key, coefficients, q0):
        del q0
        keys = _split(key)
        if net.tied:
            return layers.tied_params(keys, coefficients, None)
        out = []
        for r, run in enumerate(layers.runs):

            def body(carry, xs, run=run):
                ell, coeffs, _ = xs
                return carry, layers.params(run, ell, coeffs, None, keys, None)

            out.append(_scan(body, None, run, layers.xs(r, coefficients, None))[1])
        return tuple(out)

    return probe


def coefficient_arrays(net: Network, dtype: DTypeLike) -> tuple[Mapping[str, object], ...]:
    """Per segment of `net`, each coefficient as a host array over the segment's layers (float64 → dtype)."""
    import numpy as np

    out: list[Mapping[str, object]] = []
    for layer, start, count in net.segments():
        members = net.layers[start : start + count]
        if layer.hyper is None:
            out.append({})
            continue
        names = list(layer.hyper.coefficients)
        hypers = [m.hyper for m in members if m.hyper is not None]  # a segment's layers share one structure
        out.append(
            {
                name: np.asarray([float(h.coefficients[name]) for h in hypers], np.float64).astype(dtype)
                for name in names
            }
        )
    return tuple(out)

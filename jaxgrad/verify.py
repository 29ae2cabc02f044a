r"""The engine's self-check: a few samples again, by an independent path, on every call.

Compilers miscompile and iterative methods stagnate (issue 27: `jit(vmap(jacrev))` of a
LayerNorm vmapped over rows on jaxlib 0.10.2; a warm-started Lanczos that settled 0.35 low on
residual token-state blocks), so `jaxgrad.simulate` and `jaxgrad.sweep` do not return a number
that only one path computed. After the batched program has run, two samples (the first, and
one from inside a micro-batch) are recomputed, unbatched and in float64:

* **per layer**, at a shallow, a middle and the last layer, at the layer input $h^{(\ell-1)}$ the
  engine itself saw (the probe returns it for these layers): $J_\ell$ by `jax.jacfwd` and by
  `jax.jacrev` in two separate programs, which must agree to float64 rounding, and
  $\ln\|J_\ell\|_2$ by numpy's dense SVD (LAPACK, outside XLA) against the engine's
  ``log_norm_product`` increment;
* **the product** $\ln\|J_d\cdots J_1\|_2$ at a shallow, a middle and the last depth of those
  recorded: the chain from the same $h^{(0)}$ and weights in float64 (`jax.jacfwd`), its dense
  SVD by numpy, against ``log_spectral_norm`` (``"power"``, ``"svd"``) or
  ``log_singular_values[d]`` (``"matrix_free"``); ``"vector"`` compares ``log_forward_gain``;
* states above `DENSE_MAX` entries are checked matrix-free: $\langle u, J v\rangle$ by `jax.jvp`
  against $\langle J^\top u, v\rangle$ by `jax.vjp` at the same layers, and the forward gain.

Tolerances are derived, not tuned: the method's contract (`CONTRACT`: the Lanczos runs are
accurate to 1e-4 relative, SVD exactly) plus the rounding of the engine's own dtype,
$2(n+4)\,d\,ε$ for a product of d factors of inner dimension n (Higham 2002, §3.5, as
`jaxgrad.testing`), plus the rounding of the running sums the fields are kept in ($(d-1)ε\sum|x_k|$
for a sum of d logarithms, Higham 2002, §4.2), plus the
separation of the two forward passes: the reference recomputes $h^{(\ell)}$ in float64, and
where the engine's float32 trajectory has moved away from it by a relative ρ (measured at the
kept layers), each Jacobian may move by about ρ, the product of d of them by $4dρ$. Depths
where the two trajectories have separated by more than `TRAJECTORY_LIMIT` (chaotic networks
amplify rounding exponentially) cannot be compared and are listed in the result's config as
skipped, never silently passed.

A mismatch of a layer's Jacobian whose engine path is the batched `jax.jacrev` while the two
unbatched references agree is a miscompilation of that path: the engine reruns with
`jax.jacfwd` (``jacobian_mode="fwd"``), checks again, warns (`JacobianFallbackWarning`) and
records ``jacobian="fwd"`` in the config. Any other mismatch raises `VerificationError`,
naming the sample, layer or depth, both values, the tolerance and the ways out.

The reference programs are compiled once per network structure, like the engine's; the
check then costs two unbatched float64 forward passes with dense Jacobians and a few SVDs.
"""

from __future__ import annotations

import collections
import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad import probes
from jaxgrad.layers import HIGHEST, Network

__all__ = [
    "CONTRACT",
    "DENSE_MAX",
    "TRAJECTORY_LIMIT",
    "JacobianFallbackWarning",
    "Plan",
    "VerificationError",
    "check_layers",
    "check_samples",
    "plan",
    "verify",
]

DENSE_MAX = 2048
"""Largest state size checked with dense Jacobians and SVDs (n² float64 per matrix); above it the
check is matrix-free (JVP against VJP, forward gains)."""

CONTRACT = {"power": 1e-4, "matrix_free": 1e-4, "svd": 0.0, "vector": 0.0}
"""Relative accuracy each method promises for a top singular value (Lanczos: 1e-4, tested in
`benchmarks/accuracy.py`; SVD and the gains: exact up to rounding)."""

TRAJECTORY_LIMIT = 1e-4
"""Largest relative separation of the engine's and the reference's layer inputs at which a
product is still compared (beyond it the product check at that depth is skipped and recorded)."""


class VerificationError(RuntimeError):
    """The engine's result disagrees with an independent recomputation beyond the derived tolerance."""


class JacobianFallbackWarning(RuntimeWarning):
    """The batched `jax.jacrev` path disagreed with two unbatched references; the engine used `jax.jacfwd`."""


class Plan(NamedTuple):
    """What the self-check compares, fixed by the network's structure and the call (static).

    `plan` makes the default (two samples, three layers, three depths); `jaxgrad.testing`'s
    `assert_engine_matches_reference` passes one with every sample, layer and depth and no fallback
    (``simulate(..., verify=plan)``).
    """

    layers: tuple[int, ...]  # 1-based layers whose Jacobians are checked
    depths: tuple[int, ...]  # depths whose product norm (or forward gain) is checked
    keep_at: tuple[int, ...]  # layers whose input the engine's probe returns
    dense: bool  # dense references (state ≤ DENSE_MAX) or matrix-free ones
    rows: tuple[int, ...] | None = None  # sample rows to check (None: `check_samples`)
    fallback: bool = True  # rerun with jax.jacfwd when only the batched jacrev path is wrong


def _spread(values: Sequence[int]) -> tuple[int, ...]:
    """A shallow, a middle and the last of `values` (sorted, unique)."""
    values = sorted(set(values))
    if not values:
        return ()
    return tuple(sorted({values[0], values[(len(values) - 1) // 2], values[-1]}))


def check_layers(net: Network) -> tuple[int, ...]:
    """The 1-based layers whose Jacobians the self-check recomputes: the first, a middle one, the last."""
    return _spread(range(1, net.depth + 1))


def check_samples(samples: int, micro_batch: int) -> tuple[int, ...]:
    """The sample rows the self-check recomputes: the first, and one inside a micro-batch (not a first row)."""
    if samples == 1:
        return (0,)
    for i in (samples - 1, samples // 2, 1):
        if i % micro_batch:
            return (0, i)
    return (0, samples - 1)


def plan(
    net: Network,
    method: str,
    fields: Sequence[str],
    norms_at: Sequence[int] | None,
    spectrum_at: Sequence[int],
    *,
    everything: bool = False,
) -> Plan:
    """The layers, depths and kept layer inputs for a `simulate` call with these options: a shallow, a
    middle and the last of each (``everything``: all of them, for `jaxgrad.testing`)."""
    spread = (lambda values: tuple(sorted(set(values)))) if everything else _spread
    layers = spread(range(1, net.depth + 1))
    if method in ("power", "svd") and "log_spectral_norm" in fields:
        depths = spread(norms_at if norms_at is not None else range(1, net.depth + 1))
    elif method == "matrix_free":
        depths = spread(spectrum_at)
    elif "log_forward_gain" in fields:
        depths = spread(range(1, net.depth + 1))
    else:
        depths = ()
    keep_at = tuple(sorted(set(layers) | set(depths)))
    return Plan(layers, depths, keep_at, max(net.widths) <= DENSE_MAX)


# --------------------------------------------------------------------------- reference programs

# The most recently used reference programs, at most _CACHE_SIZE of them: a long session (a test suite, a
# notebook trying many networks) would otherwise keep every compiled reference alive.
_CACHE_SIZE = 32
_programs: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()


def _reference_chain(net: Network, source: str, depths: tuple[int, ...], keep_at: tuple[int, ...], dense: bool):
    """One sample in float64: the forward pass from h⁽⁰⁾, the kept layer inputs, and at each depth d of
    `depths` the normalised product P_d (dense: by `jax.jacfwd`) with its log-scale and the forward gain."""
    layers = probes._Layers(net, source)
    n0 = net.widths[0]
    dtype = jnp.float64
    tied_given = source == "given" and net.tied
    last = max(depths + keep_at)

    def program(key, params, inputs, coefficients, q0):
        keys = probes._split(key)
        tied = layers.tied_params(keys, coefficients, params)
        given = None if tied_given else params
        signal = probes._start(keys, n0, q0, dtype, inputs)
        u = probes._unit_vector(keys.forward_probe, n0, dtype)
        P = jnp.eye(n0, dtype=dtype) if dense else u
        log_c, total = jnp.zeros((), dtype), jnp.zeros((), dtype)  # total: Σ|ln scale|, for the rounding bound
        kept, products, gains = {}, {}, {}
        for r, run in enumerate(layers.runs):
            if run.start >= last:
                break
            signal = probes._prepare(signal, run.homogeneous)
            sliced = run._replace(count=min(run.count, last - run.start))
            ells, coeffs_run, _ = layers.xs(r, coefficients, given)
            xs = jax.tree.map(lambda a: a[: sliced.count], (ells, coeffs_run))
            mine = [d for d in depths if run.start < d <= run.start + sliced.count]
            n_out = run.layer.n_out

            def body(carry, x, run=run, mine=mine):
                signal, P, log_c, total, kept, products, gains = carry
                ell, coeffs = x
                kept = probes._keep(kept, ell, signal)
                _, apply, _ = layers.functions(run, coeffs)
                p = layers.params(run, ell, coeffs, None, keys, tied)
                h_in = signal.h
                signal, _ = probes._advance(run.homogeneous, signal, apply(p, h_in), ell)
                if dense:
                    J = jax.jacfwd(lambda h: apply(p, h))(h_in)
                    P, log_s = probes._safe_log_normalise(jnp.matmul(J, P, precision=HIGHEST))
                    gain = log_c + log_s + jnp.log(jnp.linalg.norm(jnp.matmul(P, u, precision=HIGHEST)))
                else:  # P is the forward probe's direction
                    _, P = jax.jvp(lambda h: apply(p, h), (h_in,), (P,))
                    P, log_s = probes._safe_log_normalise(P)
                    gain = log_c + log_s
                log_c, total = log_c + log_s, total + jnp.abs(log_s)
                at = {d: ell + 1 == d for d in mine}
                products = {
                    d: tuple(jnp.where(at[d], new, old) for new, old in zip((P, log_c, total), v))
                    for d, v in products.items()
                }
                gains = {
                    d: tuple(jnp.where(at[d], new, old) for new, old in zip((gain, total), v)) for d, v in gains.items()
                }
                return (signal, P, log_c, total, kept, products, gains), None

            scalar = jnp.zeros((), dtype)
            zeros = {d: (jnp.zeros((n_out,) + P.shape[1:], dtype), scalar, scalar) for d in mine}
            carry = (
                signal,
                P,
                log_c,
                total,
                probes._kept_start(sliced, keep_at, dtype),
                zeros,
                {d: (scalar, scalar) for d in mine},
            )
            (signal, P, log_c, total, k, pr, g), _ = probes._scan(body, carry, sliced, xs)
            kept.update(k)
            gains.update(g)
            if dense:
                products.update(pr)
        return kept, products, gains

    return program


def _run_of(net: Network, source: str, layer: int) -> int:
    """The index of the run (`jaxgrad.probes._Layers`) holding 1-based `layer`."""
    runs = probes._Layers(net, source).runs
    return next(r for r, run in enumerate(runs) if run.start < layer <= run.start + run.count)


def _reference_layer(net: Network, source: str, run_index: int, dense: bool):
    """A layer of run `run_index` at a given input, in float64: its Jacobian by `jax.jacfwd` and by `jax.jacrev`
    (dense), or ⟨u, J v⟩ by `jax.jvp` against ⟨Jᵀu, v⟩ by `jax.vjp` and ‖J‖₂ by Lanczos (matrix-free).
    The layer's position in the run, k, is traced: one program serves every layer of the run."""
    from jaxgrad.spectral import lanczos_top_singular_operator

    layers = probes._Layers(net, source)
    run = layers.runs[run_index]

    def program(key, params, coefficients, k, h):
        keys = probes._split(key)
        tied = layers.tied_params(keys, coefficients, params)
        ells, coeffs_run, _ = layers.xs(run_index, coefficients, None if (source == "given" and net.tied) else params)
        coeffs = jax.tree.map(lambda a: a[k], coeffs_run)
        _, apply, _ = layers.functions(run, coeffs)
        p = layers.params(run, ells[k], coeffs, None, keys, tied)
        f = lambda x: apply(p, x)  # noqa: E731
        if dense:  # both modes in one program: the parameters are drawn, and the program compiled, once
            return jax.jacfwd(f)(h), jax.jacrev(f)(h)
        u = probes._unit_vector(jax.random.fold_in(keys.lanczos, 7 << 20), run.layer.n_out, h.dtype)
        v = probes._unit_vector(jax.random.fold_in(keys.lanczos, 7 << 21), run.layer.n_in, h.dtype)
        _, Jv = jax.jvp(f, (h,), (v,))
        _, pullback = jax.vjp(f, h)
        JTu = pullback(u)[0]
        w = probes._unit_vector(jax.random.fold_in(keys.lanczos, 7 << 22), run.layer.n_in, h.dtype)
        top = lanczos_top_singular_operator(
            lambda x: pullback(jax.jvp(f, (h,), (x,))[1])[0], w, min(run.layer.n_in, 96)
        ).value
        return jnp.vdot(u, Jv), jnp.vdot(JTu, v), top

    return program


def _compiled(kind: str, key: Hashable, build):
    full = (kind, key)
    program = _programs.pop(full, None)
    if program is None:
        program = jax.jit(build())
    _programs[full] = program
    while len(_programs) > _CACHE_SIZE:
        _programs.popitem(last=False)
    return program


# --------------------------------------------------------------------------- the check


def _eps(dtype_name: str) -> float:
    return float(np.finfo(np.dtype(dtype_name)).eps)


def _direction_gap(h_engine, s_engine, h_ref, s_ref) -> float:
    """Relative separation of two layer inputs given as (vector, log-scale): direction and log-norm."""
    h_engine, h_ref = np.asarray(h_engine, np.float64), np.asarray(h_ref, np.float64)
    n_e, n_r = np.linalg.norm(h_engine), np.linalg.norm(h_ref)
    if n_e == 0 or n_r == 0 or not (np.isfinite(n_e) and np.isfinite(n_r)):
        return 0.0 if n_e == n_r else math.inf
    direction = np.linalg.norm(h_engine / n_e - h_ref / n_r)
    log_norm = abs((math.log(n_e) + float(s_engine)) - (math.log(n_r) + float(s_ref)))
    return max(float(direction), log_norm)


def _log_top(M) -> float:
    s = np.linalg.svd(np.asarray(M, np.float64), compute_uv=False)
    return float(np.log(s[0])) if s[0] > 0 else -math.inf


class _Sample(NamedTuple):
    row: int  # row in the result (after the grid axes)
    grid: int | None  # grid point (sweep) or None
    key: jax.Array  # the sample's key, fold_in(key(seed), i)
    params: object  # its given parameters (stacked per segment) or None
    inputs: object  # its given input or None
    coefficients: tuple  # the layers' coefficients (float64 host arrays)
    q0: float
    names: tuple[str, ...] = ()  # its layers' names (a sweep's grid point has its own hyperparameter values)


def _layer_name(s: _Sample, layer: int) -> str:
    """Layer `layer`'s (1-based) name as this sample's network has it (a sweep's grid point: its values)."""
    return s.names[layer - 1] if s.names else ""


def verify(
    net: Network,
    raw: Mapping[str, np.ndarray],
    samples_: Sequence[_Sample],
    *,
    plan_: Plan,
    method: str,
    dtype_name: str,
    source: str,
    norms_at: Sequence[int] | None,
    jacobian_mode: str,
) -> dict:
    """Compares `raw` (the engine's arrays, grid axes flattened in front of the samples when a grid ran)
    with the references for each sample of `samples_`. Returns the record for the config; raises
    `VerificationError`, or `_JacobianMismatch` when the batched jacrev path alone is wrong."""
    eps = _eps(dtype_name)
    n = max(net.widths)
    contract = CONTRACT[method]
    chain_key = (net.structure(), source, plan_.depths, plan_.keep_at, plan_.dense)
    worst, skipped, compared = 0.0, [], 0
    from jaxgrad import ensemble

    compiles_before = ensemble.compile_count()
    # (overflowing signals are compared as non-finite values, not warned about twice)
    with jax.enable_x64(True), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        chain = _compiled(
            "chain", chain_key, lambda: _reference_chain(net, source, plan_.depths, plan_.keep_at, plan_.dense)
        )
        for s in samples_:
            where = f"sample {s.row}" + (f" of grid point {s.grid}" if s.grid is not None else "")

            def field(name, s=s):
                a = raw.get(name)
                return None if a is None else np.asarray(a[s.grid] if s.grid is not None else a)[s.row]

            kept_ref, products, gains = jax.device_get(
                chain(s.key, s.params, s.inputs, s.coefficients, np.float64(s.q0))
            )
            gaps = {}
            for c in plan_.keep_at:
                h_e, s_e = field(f"check_h{c}"), field(f"check_s{c}")
                gaps[c] = _direction_gap(h_e, s_e, *kept_ref[c]) if c in kept_ref else 0.0
            # ---- per layer, at the engine's own layer inputs
            lnp = field("log_norm_product")
            for c in plan_.layers:
                h = np.asarray(field(f"check_h{c}"), np.float64)
                width = net.layers[c - 1].n_in
                if not np.isfinite(h).all():  # the engine's signal left the float range (signal_exit_depth)
                    skipped.append(dict(sample=s.row, layer=c, reason="non-finite layer input"))
                    continue
                r = _run_of(net, source, c)
                k = np.int32(c - 1 - probes._Layers(net, source).runs[r].start)
                reference_layer = _compiled(
                    "layer",
                    (net.structure(), source, r, plan_.dense),
                    lambda r=r: _reference_layer(net, source, r, plan_.dense),
                )
                if plan_.dense:
                    J_fwd, J_rev = (np.asarray(J) for J in reference_layer(s.key, s.params, s.coefficients, k, h))
                    if not (np.isfinite(J_fwd).all() and np.isfinite(J_rev).all()):
                        skipped.append(dict(sample=s.row, layer=c, reason="non-finite Jacobian"))
                        continue
                    scale = max(np.linalg.norm(J_fwd), np.finfo(np.float64).tiny)
                    gap = np.linalg.norm(J_fwd - J_rev) / scale
                    # a layer may compute in float32 inside (its own dtype= choices) even in a float64
                    # run: the two modes' rounding is bounded with float32's ε, 2(n+4)ε (Higham §3.5)
                    if not gap <= 2 * (width + 4) * np.finfo(np.float32).eps:
                        raise VerificationError(
                            f"{where}, layer {c} ({_layer_name(s, c)}): jax.jacfwd and jax.jacrev of the layer "
                            f"disagree by {gap:.2e} (relative, Frobenius) in float64, unbatched, at an input of norm "
                            f"{np.linalg.norm(h):.3g}: a differentiation or compiler bug in this layer's arithmetic "
                            f"(jax {jax.__version__}), or arithmetic too ill-conditioned at this input for either "
                            "to be trusted (e.g. the tanh-approximate GELU's derivative at |z| ~ 1e6, where "
                            "rounding in 1 − tanh² is multiplied by z³). Ways out: another jax/jaxlib, a layer "
                            "written without the offending operation, or a network whose signal stays in range; "
                            "verify=False skips the check and leaves the numbers unchecked"
                        )
                    reference = _log_top(J_fwd)
                else:
                    uJv, JTuv, top = (float(x) for x in reference_layer(s.key, s.params, s.coefficients, k, h))
                    if not abs(uJv - JTuv) <= 2 * (width + 4) * np.finfo(np.float32).eps * (abs(uJv) + abs(JTuv) + top):
                        raise VerificationError(
                            f"{where}, layer {c} ({_layer_name(s, c)}): ⟨u, J v⟩ by jax.jvp = {uJv:.9g} but "
                            f"⟨Jᵀu, v⟩ by jax.vjp = {JTuv:.9g} (float64, unbatched): a differentiation or compiler "
                            "bug in this layer. Ways out: another jax/jaxlib; verify=False skips the check"
                        )
                    reference = math.log(top) if top > 0 else -math.inf
                if lnp is None:
                    continue
                engine = float(lnp[c - 1] - (lnp[c - 2] if c > 1 else 0.0))
                if not np.isfinite(engine):  # counted in the result's `nonfinite`
                    skipped.append(dict(sample=s.row, layer=c, reason="non-finite in the engine's result"))
                    continue
                sums = 2 * eps * (abs(float(lnp[c - 1])) + (abs(float(lnp[c - 2])) if c > 1 else 0.0))
                tol = contract + 2 * (width + 4) * eps + sums
                err = abs(engine - reference) if np.isfinite(reference) or np.isfinite(engine) else 0.0
                if not np.isfinite(reference) and not np.isfinite(engine) and reference == engine:
                    err = 0.0
                compared += 1
                if not err <= tol:
                    if (
                        method in ("power", "svd")
                        and net.layers[c - 1].jacobian is None
                        and jacobian_mode == "rev"
                        and plan_.fallback
                    ):
                        raise _JacobianMismatch(where, c, engine, reference, tol)
                    fast = net.layers[c - 1].jacobian is not None
                    raise VerificationError(
                        f"{where}, layer {c} ({_layer_name(s, c)}): the engine's ln‖J_{c}‖₂ = {engine:.7g}, "
                        f"an independent float64 recomputation (jax.jacfwd, numpy SVD) gives {reference:.7g}: "
                        f"|Δ| = {err:.2e} > tolerance {tol:.1e}. "
                        + ("The layer's fast-path `jacobian` differs from its apply's derivative. " if fast else "")
                        + "Ways out: method='svd' or 'matrix_free' (another path), another jax/jaxlib "
                        "(`jaxgrad info` names known-bad ones); verify=False skips the check and leaves the numbers "
                        "unchecked"
                    )
                worst = max(worst, err)
            # ---- the product (or the forward gain) at a shallow, a middle and the last depth
            for d in plan_.depths:
                separation = max(g for c, g in gaps.items() if c <= d)
                if not separation <= TRAJECTORY_LIMIT:  # chaos (or a non-finite signal) separated the passes
                    skipped.append(dict(sample=s.row, depth=d, separation=separation))
                    continue
                if method in ("power", "svd") and d in products and field("log_spectral_norm") is not None:
                    P, log_c, total = products[d]
                    reference = float(log_c) + _log_top(P)
                    values = field("log_spectral_norm")
                    column = d - 1 if norms_at is None else list(norms_at).index(d)
                    engine, what = float(values[column]), f"ln‖J_{d}⋯J_1‖₂"
                elif method == "matrix_free" and d in products and field(f"sv{d}") is not None:
                    P, log_c, total = products[d]
                    reference = float(log_c) + _log_top(P)
                    engine, what = float(field(f"sv{d}")[0]), f"ln‖J_{d}⋯J_1‖₂"
                elif field("log_forward_gain") is not None and d in gains:
                    reference, total = (float(x) for x in gains[d])
                    engine, what = float(field("log_forward_gain")[d - 1]), f"the forward gain ln‖J_{d}⋯J_1 u‖"
                else:
                    continue
                if not np.isfinite(engine) and engine != reference:  # counted in the result's `nonfinite`
                    skipped.append(dict(sample=s.row, depth=d, reason="non-finite in the engine's result"))
                    continue
                # the method's contract, the product's rounding, the running log-scale's (a sum of d terms:
                # (d - 1) ε Σ|term|, Higham 2002 §4.2) and the two trajectories' separation
                tol = (
                    (contract if "‖₂" in what else 0.0)
                    + 2 * (n + 4) * d * eps
                    + d * eps * float(total)
                    + 2 * eps * abs(engine)
                    + 4 * d * separation
                )
                err = abs(engine - reference)
                if not (np.isfinite(engine) or np.isfinite(reference)):
                    err = 0.0 if engine == reference else math.inf
                compared += 1
                if not err <= tol:
                    raise VerificationError(
                        f"{where}, depth {d}: the engine's {what} = {engine:.7g}, an independent float64 "
                        f"recomputation (the whole chain by jax.jacfwd, numpy SVD) gives {reference:.7g}: "
                        f"|Δ| = {err:.2e} > tolerance {tol:.1e}. Ways out: method='svd' (exact SVDs) or "
                        "'matrix_free', another jax/jaxlib (`jaxgrad info` names known-bad ones); verify=False "
                        "skips the check and leaves the numbers unchecked"
                    )
                worst = max(worst, err)
    return dict(
        samples=[s.row for s in samples_],
        layers=list(plan_.layers),
        depths=list(plan_.depths),
        dense=plan_.dense,
        compared=compared,
        worst_abs_error=worst,
        skipped=skipped,
        compiles=ensemble.compile_count() - compiles_before,
    )


class _JacobianMismatch(Exception):
    """The engine's per-layer norm differs while the unbatched references agree (the batched jacrev path)."""

    def __init__(self, where, layer, engine, reference, tol):
        super().__init__(where, layer, engine, reference, tol)
        self.where, self.layer, self.engine, self.reference, self.tol = where, layer, engine, reference, tol


def fallback_warning(mismatch: _JacobianMismatch) -> None:
    warnings.warn(
        f"jaxgrad: the batched jax.jacrev of layer {mismatch.layer} gave ln‖J‖₂ = {mismatch.engine:.7g} at "
        f"{mismatch.where} where unbatched jax.jacfwd and jax.jacrev agree on {mismatch.reference:.7g} "
        f"(tolerance {mismatch.tol:.1e}): a miscompilation of jit(vmap(jacrev)) (jax {jax.__version__}); "
        "this result was computed with jax.jacfwd instead and checked again (config['jacobian'] == 'fwd')",
        JacobianFallbackWarning,
        stacklevel=4,
    )

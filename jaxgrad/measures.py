r"""Measurements of the signal and of the weight gradients at every depth, as per-sample functions.

Each builder here returns ``probe(key_i, coefficients, q0) -> dict of arrays`` for a network,
the form `jaxgrad.ensemble.run` maps over samples (and `jaxgrad.probes` uses): sample i draws
layer ℓ's parameters from ``fold_in(keys.weights, ℓ − 1)`` and its input
$h^{(0)} \sim N(0, q_0 I)$ from ``keys.input``, with the keys of `jaxgrad.probes.sample_keys`, so
a measurement here sees exactly the networks `jaxgrad.simulate` sees. `measure` runs one:

    >>> net = jaxgrad.serial(*[jaxgrad.attention(tokens=8, width=8)] * 6)
    >>> out = measures.measure(measures.token_similarity, net, 256, seed=0, tokens=8)
    >>> out["token_cosine"].shape          # (samples, depth + 1): h⁽⁰⁾ … h⁽ᴸ⁾
    (256, 7)

Builders:

* `layerwise`: any function of the state $h^{(\ell)}$ (ℓ = 0..L) and of each layer
  $(θ_\ell, h^{(\ell-1)}, h^{(\ell)})$, in one `lax.scan` per segment;
* `token_similarity`: `jaxgrad.transformer.token_cosine`, `token_residual`, `rank_one_distance`
  of a (tokens, width) state at every depth;
* `fourier_modes`: `jaxgrad.convolution.fourier_mode_power` of a (*spatial, channels) state at every depth;
* `weight_gradient_norms`: $\ln\|∂\mathcal L/∂θ_\ell\|_F$ for every named parameter of every
  layer (``W_Q``, ``W_K``, ``W_V`` of an attention block), with $\mathcal L = \langle e, h^{(L)}\rangle$,
  e a random unit error signal: the backward pass of seed §2.5, by `jax.vjp`;
* `product_spectrum`: every $\ln σ_i(J_\ell\cdots J_1)$ at chosen depths from the explicit product,
  kept at unit Frobenius norm with its log-scale summed with Kahan compensation (so a float32
  run at depth 10,000 loses no more than the product itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxgrad import ensemble, probes
from jaxgrad.convolution import fourier_mode_power
from jaxgrad.layers import HIGHEST, Network, functions_of
from jaxgrad.transformer import rank_one_distance, token_cosine, token_residual

__all__ = [
    "fourier_modes",
    "layerwise",
    "measure",
    "product_spectrum",
    "qr_log_stretches",
    "token_similarity",
    "weight_gradient_norms",
]


def _keys(key) -> probes.SampleKeys:
    """The keys of sample i from its key ``fold_in(key(seed), i)``: as `probes.sample_keys` splits them."""
    return probes.SampleKeys(*(jax.random.fold_in(key, s) for s in range(5)))


def _check_square(net: Network, where: str) -> int:
    if not isinstance(net, Network):
        raise ValueError(f"{where}: `net` must be a jaxgrad Network (jaxgrad.serial(...)), got {type(net).__name__}")
    widths = set(net.widths)
    if len(widths) != 1:
        raise ValueError(
            f"{where}: states are stacked over depth, so every layer must keep the width; got widths {net.widths}"
        )
    return net.widths[0]


class _Chain:
    """Layer ℓ's functions and parameters for one sample, as the engine draws them."""

    def __init__(self, net: Network):
        self.net = net
        self.segments = net.segments()

    def xs(self, s: int, coefficients):
        layer, start, count = self.segments[s]
        return jnp.arange(start, start + count, dtype=jnp.int32), coefficients[s]

    def layer(self, s: int, ell, coeffs, keys, tied):
        layer = self.segments[s][0]
        init, apply, jacobian = functions_of(layer, coeffs if layer.hyper is not None else None)
        if tied is not None:
            return tied, apply, jacobian
        # The barrier, as in the engine: the drawn parameters are one opaque buffer, bit-identical to its draw.
        return jax.lax.optimization_barrier(init(jax.random.fold_in(keys.weights, ell))), apply, jacobian

    def tied(self, keys, coefficients):
        if not self.net.tied:
            return None
        layer = self.segments[0][0]
        init, _, _ = functions_of(
            layer, jax.tree.map(lambda a: a[0], coefficients[0]) if layer.hyper is not None else None
        )
        return jax.lax.optimization_barrier(init(jax.random.fold_in(keys.weights, 0)))


def _input(keys, n, q0, dtype):
    return jnp.sqrt(q0).astype(dtype) * jax.random.normal(keys.input, (n,), jnp.float32).astype(dtype)


def layerwise(
    net: Network, *, dtype: DTypeLike, state: Callable | None = None, layer: Callable | None = None
) -> probes.Probe:
    r"""A probe recording ``state(h)`` for $h^{(0)}, …, h^{(L)}$ and ``layer(θ_ℓ, h^{(ℓ-1)}, h^{(ℓ)})`` for ℓ = 1..L.

    Both return dicts of arrays; the probe returns their union, stacked over depth (L + 1 rows
    for `state`, L for `layer`). Memory: O(depth × outputs), not O(depth × width).
    """
    n = _check_square(net, "layerwise")
    chain = _Chain(net)

    def probe(key, coefficients, q0):
        keys = _keys(key)
        tied = chain.tied(keys, coefficients)
        h = _input(keys, n, q0, dtype)
        first = state(h) if state is not None else {}
        outs = []
        for s in range(len(chain.segments)):

            def body(h, xs, s=s):
                ell, coeffs = xs
                p, apply, _ = chain.layer(s, ell, coeffs, keys, tied)
                h_next = apply(p, h)
                out = dict(state(h_next)) if state is not None else {}
                if layer is not None:
                    out.update(layer(p, h, h_next))
                return h_next, out

            h, out = jax.lax.scan(body, h, chain.xs(s, coefficients))
            outs.append(out)
        result = {k: jnp.concatenate([o[k] for o in outs]) for k in outs[0]}
        for k, v in first.items():
            result[k] = jnp.concatenate([jnp.asarray(v)[None], result[k]])
        return result

    return probe


def token_similarity(net: Network, *, dtype: DTypeLike, tokens: int) -> probes.Probe:
    """`layerwise` with token cosine, token residual and rank-one distance of the (tokens, width) state."""
    n = _check_square(net, "token_similarity")
    if isinstance(tokens, bool) or not isinstance(tokens, (int, np.integer)) or tokens < 2 or n % tokens:
        raise ValueError(f"`tokens` must be an integer ≥ 2 dividing the state size {n}, got tokens={tokens!r}")
    shape = (int(tokens), n // int(tokens))

    def state(h):
        X = h.reshape(shape)
        return {
            "token_cosine": token_cosine(X),
            "token_residual": token_residual(X),
            "rank_one_distance": rank_one_distance(X),
            "log_state_norm": jnp.log(jnp.linalg.norm(h)),
        }

    return layerwise(net, dtype=dtype, state=state)


def fourier_modes(net: Network, *, dtype: DTypeLike, spatial: tuple[int, ...], channels: int) -> probes.Probe:
    """`layerwise` with `jaxgrad.convolution.fourier_mode_power` of the (*spatial, channels) state, flat over modes."""
    n = _check_square(net, "fourier_modes")
    spatial = tuple(spatial)
    if math.prod(spatial) * channels != n:
        raise ValueError(f"`spatial`={spatial} × `channels`={channels} must give the state size {n}")
    return layerwise(
        net, dtype=dtype, state=lambda h: {"mode_power": fourier_mode_power(h, spatial, channels).reshape(-1)}
    )


def _named_leaves(params) -> list[tuple[str, jax.Array]]:
    if hasattr(params, "_fields"):
        return [(name, getattr(params, name)) for name in params._fields]
    return [
        (jax.tree_util.keystr(path) or "params", leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    ]


def weight_gradient_norms(net: Network, *, dtype: DTypeLike) -> probes.Probe:
    r"""A probe of $\ln\|∂\mathcal L/∂θ_\ell\|_F$ per named parameter (``log_grad_<name>``, (L,) each) and
    $\ln\|δ^{(\ell)}\|$ (``log_error_norm``, ℓ = 0..L−1), for $\mathcal L = \langle e, h^{(L)}\rangle$.

    e is a random unit vector from ``fold_in(keys.backward_probe, L − 1)`` (the engine's $e_L$).
    The forward sweep stores the layers' inputs (O(depth × width)); the backward sweep redraws
    each layer's parameters from its key and pulls $δ^{(\ell)}$ back with `jax.vjp`, which also
    gives the parameter cotangent. Every layer must have parameters of one structure.
    """
    n = _check_square(net, "weight_gradient_norms")
    chain = _Chain(net)

    def probe(key, coefficients, q0):
        keys = _keys(key)
        tied = chain.tied(keys, coefficients)
        h = _input(keys, n, q0, dtype)
        inputs = []
        for s in range(len(chain.segments)):

            def fbody(h, xs, s=s):
                ell, coeffs = xs
                p, apply, _ = chain.layer(s, ell, coeffs, keys, tied)
                return apply(p, h), h

            h, h_in = jax.lax.scan(fbody, h, chain.xs(s, coefficients))
            inputs.append(h_in)
        e = jax.random.normal(jax.random.fold_in(keys.backward_probe, net.depth - 1), (n,), jnp.float32).astype(dtype)
        delta = e / jnp.linalg.norm(e)
        outs = []
        for s in reversed(range(len(chain.segments))):

            def bbody(delta, xs, s=s):
                (ell, coeffs), h = xs
                p, apply, _ = chain.layer(s, ell, coeffs, keys, tied)
                _, pullback = jax.vjp(apply, p, h)
                grad_p, delta_in = pullback(delta)
                out = {f"log_grad_{name}": jnp.log(jnp.linalg.norm(g.ravel())) for name, g in _named_leaves(grad_p)}
                out["log_error_norm"] = jnp.log(jnp.linalg.norm(delta_in))
                return delta_in, out

            delta, out = jax.lax.scan(bbody, delta, (chain.xs(s, coefficients), inputs[s]), reverse=True)
            outs.insert(0, out)
        return {k: jnp.concatenate([o[k] for o in outs]) for k in outs[0]}

    return probe


def _check_depths(net: Network, depths, where: str) -> tuple[int, ...]:
    depths = tuple(sorted(set(int(d) for d in depths)))
    if not depths or depths[0] < 1 or depths[-1] > net.depth:
        raise ValueError(f"{where}: `depths` must be integers in 1..{net.depth}, got depths={depths!r}")
    return depths


def _jacobian_step(chain: _Chain, s: int, ell, coeffs, keys, tied, h, dtype):
    """Layer ℓ's Jacobian at h (its fast path, else `jax.jacrev`) and its output."""
    p, apply, jacobian = chain.layer(s, ell, coeffs, keys, tied)
    if jacobian is not None:
        J, h_next = jacobian(p, h)
    else:
        J, h_next = jax.jacrev(apply, argnums=1)(p, h), apply(p, h)
    return J.astype(dtype), h_next


def _kahan_add(total, comp, x):
    """Kahan summation: (total, comp) ← total + x, with total − comp the running sum to rounding."""
    y = x - comp
    new = total + y
    return new, (new - total) - y


def product_spectrum(net: Network, *, dtype: DTypeLike, depths: Sequence[int]) -> probes.Probe:
    r"""A probe of every $\ln σ_i(J_\ell\cdots J_1)$ (descending) at each ℓ in `depths`: ``log_singular_values``
    of shape (len(depths), n).

    $P_\ell = J_\ell P_{\ell-1}$ is kept at unit Frobenius norm; its log-scale is a Kahan-compensated
    sum, so in float32 the scale at depth 10,000 carries no accumulated rounding of its own.
    """
    n = _check_square(net, "product_spectrum")
    depths = _check_depths(net, depths, "product_spectrum")
    chain = _Chain(net)
    wanted = jnp.asarray(np.isin(np.arange(1, net.depth + 1), depths))

    def probe(key, coefficients, q0):
        keys = _keys(key)
        tied = chain.tied(keys, coefficients)
        h = _input(keys, n, q0, dtype)
        P = jnp.eye(n, dtype=dtype)
        log_c, comp = jnp.zeros((), dtype), jnp.zeros((), dtype)
        spectra = jnp.zeros((len(depths), n), dtype)
        slot = jnp.zeros((), jnp.int32)
        for s in range(len(chain.segments)):

            def body(carry, xs, s=s):
                h, P, log_c, comp, spectra, slot = carry
                ell, coeffs = xs
                J, h_next = _jacobian_step(chain, s, ell, coeffs, keys, tied, h, dtype)
                P = jnp.matmul(J, P, precision=HIGHEST)
                norm = jnp.linalg.norm(P)
                P = P / norm
                log_c, comp = _kahan_add(log_c, comp, jnp.log(norm))

                def record(spectra):
                    sv = jnp.linalg.svd(P, compute_uv=False)
                    return spectra.at[slot].set(log_c - comp + jnp.log(sv))

                spectra = jax.lax.cond(wanted[ell], record, lambda x: x, spectra)
                return (h_next, P, log_c, comp, spectra, slot + wanted[ell].astype(jnp.int32)), None

            (h, P, log_c, comp, spectra, slot), _ = jax.lax.scan(
                body, (h, P, log_c, comp, spectra, slot), chain.xs(s, coefficients)
            )
        return {"log_singular_values": spectra}

    return probe


def qr_log_stretches(net: Network, *, dtype: DTypeLike, depths: Sequence[int]) -> probes.Probe:
    r"""A probe of the QR method's $\sum_{k\le\ell}\ln|(R_k)_{ii}|$, sorted descending, at each ℓ in `depths`
    (``log_stretches``, shape (len(depths), n)), with $J_k Q_{k-1} = Q_k R_k$, $Q_0 = I$.

    ℓ times the finite-depth Lyapunov exponents of `jaxgrad.lyapunov_spectrum` (Benettin et al. 1980),
    recorded at several depths in one pass (the sums Kahan-compensated, as in `product_spectrum`):
    they approach $\ln σ_i(J_\ell\cdots J_1)$ as ℓ grows and
    resolve every exponent whatever the spread (no product is formed).
    """
    n = _check_square(net, "qr_log_stretches")
    depths = _check_depths(net, depths, "qr_log_stretches")
    chain = _Chain(net)
    wanted = jnp.asarray(np.isin(np.arange(1, net.depth + 1), depths))

    def probe(key, coefficients, q0):
        keys = _keys(key)
        tied = chain.tied(keys, coefficients)
        h = _input(keys, n, q0, dtype)
        Q, acc, comp = jnp.eye(n, dtype=dtype), jnp.zeros((n,), dtype), jnp.zeros((n,), dtype)
        out = jnp.zeros((len(depths), n), dtype)
        slot = jnp.zeros((), jnp.int32)
        for s in range(len(chain.segments)):

            def body(carry, xs, s=s):
                h, Q, acc, comp, out, slot = carry
                ell, coeffs = xs
                J, h_next = _jacobian_step(chain, s, ell, coeffs, keys, tied, h, dtype)
                Q, R = jnp.linalg.qr(jnp.matmul(J, Q, precision=HIGHEST))
                acc, comp = _kahan_add(acc, comp, jnp.log(jnp.abs(jnp.diagonal(R))))
                out = jax.lax.cond(wanted[ell], lambda o: o.at[slot].set(-jnp.sort(-(acc - comp))), lambda o: o, out)
                return (h_next, Q, acc, comp, out, slot + wanted[ell].astype(jnp.int32)), None

            (h, Q, acc, comp, out, slot), _ = jax.lax.scan(
                body, (h, Q, acc, comp, out, slot), chain.xs(s, coefficients)
            )
        return {"log_stretches": out}

    return probe


def measure(
    builder: Callable,
    net: Network,
    samples: int,
    seed: int = 0,
    *,
    q0: float = 1.0,
    dtype: str = "float32",
    chunk_size: int | None = None,
    cache_key: Hashable | None = None,
    **options: Any,
) -> dict[str, np.ndarray]:
    """Runs ``builder(net, dtype=…, **options)`` over `samples` initialisations with `jaxgrad.ensemble.run`.

    The compiled program is cached per (builder, network structure, dtype, options): networks
    that differ only in hyperparameter values (σ_w, the branch scale …) share it. The builder is
    identified by the function object itself (two lambdas or two closures of one factory are two
    builders, even with one ``__qualname__``), or by `cache_key` when given: a hashable that says
    what the builder computes, so that equal builders made anew (in a loop) share one program.

    Returns:
      The probe's arrays with a leading axis `samples`, as NumPy arrays.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"`dtype` must be 'float32' or 'float64', got dtype={dtype!r}")
    if not (isinstance(q0, (int, float)) and math.isfinite(q0) and q0 > 0):
        raise ValueError(f"`q0` must be a positive finite number, got q0={q0!r}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    np_dtype = np.dtype(dtype)
    what = builder if cache_key is None else ("key", cache_key)
    cache_key = ("measures", what, net.structure(), dtype, tuple(sorted(options.items())))
    with jax.enable_x64(dtype == "float64"):
        probe = builder(net, dtype=jnp.dtype(dtype), **options)
        n = max(net.widths)
        return ensemble.run(
            probe,
            samples,
            seed=seed,
            args=(probes.coefficient_arrays(net, np_dtype), np.asarray(q0, np_dtype)),
            chunk_size=chunk_size,
            bytes_per_sample=np_dtype.itemsize * 8 * n * n,
            cache_key=cache_key,
        )

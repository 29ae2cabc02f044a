r"""Real models as tests: blocks built only from Equinox's and Flax's own components, measured by the engine
and by an independent reference.

Each block is stacked a few layers deep through `serial_from_equinox` / `serial_from_flax`. The reference
never calls the engine: it takes the parameters `jaxgrad.draw_params` returns, composes the blocks by hand,
draws sample i's input $h^{(0)} = \sqrt{q_0}\,\mathcal N(0, I)$ from ``sample_keys(seed, i).input`` exactly
as the engine does, differentiates the whole flattened network up to depth d with unbatched `jax.jacrev`,
and takes $\ln\|J_d\cdots J_1\|_2$ by a float64 numpy SVD. The engine's ``log_spectral_norm`` (methods
"power", the default, and "svd") and ``log_singular_values[d]`` ("matrix_free") must agree at a shallow, a
middle and the last depth.

Tolerance, from rounding (the derivation of `jaxgrad.testing`, Higham 2002 §3.5). A float32 computation of
$P_d = J_d\cdots J_1$ makes two kinds of error at each layer ℓ: the layer's own Jacobian, $|E_\ell| \le fε|J_\ell|$
entrywise with f = n + 4 roundings per entry (as `jaxgrad.testing`), and the product's matrix multiply,
$|ΔC_\ell| \le nε|J_\ell||P_{\ell-1}|$. Two bounds follow, both valid to first order in ε; the test takes the
smaller for each sample and depth:

* componentwise: $|\hat P_d - P_d| \le (n+4)\,d\,ε\,M_d$ with $M_d = |J_d|\cdots|J_1|$, so relative to
  $σ_{\max}$ (which moves by at most $\|E\|_2 \le \|E\|_F$) the error is $\le (n+4)\,d\,ε\,\|M_d\|_F/\|P_d\|_2$;
* normwise, each layer's error carried to depth d by $J_d\cdots J_{\ell+1}$:
  $\le (2n+4)\,ε\,\sum_{\ell\le d}\|J_d\cdots J_{\ell+1}\|_2\,\|\,|J_\ell|\,\|_2\,\|P_{\ell-1}\|_F\,/\,\|P_d\|_2$
  (tighter on deep residual stacks, where $M_d$ grows much faster than $P_d$).

The engine's product and the reference's are two such computations (×2), each along its own forward
trajectory, which differ by rounding of the same first order and move each $J_\ell$ by as much (×2): the
tolerance is 4 × the bound, plus nε for a backward-stable SVD in float32, plus, for the Lanczos methods
("power", "matrix_free"), the engine's documented accuracy contract (1e-4 relative to SVD:
`jaxgrad.simulate`). The bounds are computed from the reference's own per-layer Jacobians, in float64.

`python -m pytest tests/test_zoo.py -s` prints each model's worst relative error per method.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad.adapters import serial_from_equinox, serial_from_flax
from jaxgrad.probes import sample_keys

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")

EPS = float(np.finfo(np.float32).eps)
LANCZOS_CONTRACT = 1e-4  # simulate's documented accuracy of method="power" relative to SVD
METHODS = ("power", "svd", "matrix_free")
TOKENS, FEATURES, HEADS = 4, 16, 2
CHANNELS, LENGTH = 4, 8  # Equinox convolution: a (channels, length) state
BATCH, POSITIONS, BN_CHANNELS = 4, 6, 3  # Flax BatchNorm: a batch state (B, length, channels)
GRU_INPUT = np.linspace(-1.0, 1.0, 8, dtype=np.float32)  # the fixed input of every GRU step
GRU_HIDDEN = 16


# --------------------------------------------------------------------------- Equinox blocks


class EquinoxPreLNTransformer(eqx.Module):
    """x + MHA(LN(x)), then x + MLP(LN(x)); LayerNorm and the MLP vmapped over tokens."""

    norm1: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __init__(self, key):
        k_attention, k_mlp = jax.random.split(key)
        self.norm1 = eqx.nn.LayerNorm(FEATURES)
        self.attention = eqx.nn.MultiheadAttention(HEADS, FEATURES, key=k_attention)
        self.norm2 = eqx.nn.LayerNorm(FEATURES)
        self.mlp = eqx.nn.MLP(FEATURES, FEATURES, 2 * FEATURES, depth=1, activation=jax.nn.gelu, key=k_mlp)

    def __call__(self, x):
        y = jax.vmap(self.norm1)(x)
        x = x + self.attention(y, y, y)
        return x + jax.vmap(self.mlp)(jax.vmap(self.norm2)(x))


class EquinoxGRUStep(eqx.Module):
    """One step h ↦ GRU(x, h) of a recurrent network with a fixed input x."""

    cell: eqx.nn.GRUCell

    def __init__(self, key):
        self.cell = eqx.nn.GRUCell(GRU_INPUT.size, GRU_HIDDEN, key=key)

    def __call__(self, h):
        return self.cell(jnp.asarray(GRU_INPUT), h)


class EquinoxConvGroupNorm(eqx.Module):
    """x + Conv(gelu(GroupNorm(x))) on a (channels, length) state."""

    norm: eqx.nn.GroupNorm
    conv: eqx.nn.Conv1d

    def __init__(self, key):
        self.norm = eqx.nn.GroupNorm(2, CHANNELS)
        self.conv = eqx.nn.Conv1d(CHANNELS, CHANNELS, kernel_size=3, padding=1, key=key)

    def __call__(self, x):
        return x + self.conv(jax.nn.gelu(self.norm(x)))


RMS_TOKENS, RMS_FEATURES = 6, 24


class RMSResidual(eqx.Module):
    """X + tanh(RMS(X) Wᵀ), the RMS norm over each token's features, W ~ N(0, 1.5²/24) (issue 27, item 2)."""

    norm: eqx.nn.RMSNorm
    linear: eqx.nn.Linear

    def __init__(self, key):
        linear = eqx.nn.Linear(RMS_FEATURES, RMS_FEATURES, use_bias=False, key=key)
        W = 1.5 / np.sqrt(RMS_FEATURES) * jax.random.normal(key, (RMS_FEATURES, RMS_FEATURES), jnp.float32)
        self.linear = eqx.tree_at(lambda m: m.weight, linear, W)
        self.norm = eqx.nn.RMSNorm(RMS_FEATURES)

    def __call__(self, x):
        return x + jnp.tanh(jax.vmap(self.linear)(jax.vmap(self.norm)(x)))


# --------------------------------------------------------------------------- Flax NNX blocks


class FlaxPreNormTransformer(nnx.Module):
    """x + MHA(RMSNorm(x)), then x + W₂ gelu(W₁ LN(x)); both norms vmapped over tokens."""

    def __init__(self, rngs):
        self.norm1 = nnx.RMSNorm(FEATURES, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(num_heads=HEADS, in_features=FEATURES, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(FEATURES, rngs=rngs)
        self.up = nnx.Linear(FEATURES, 2 * FEATURES, rngs=rngs)
        self.down = nnx.Linear(2 * FEATURES, FEATURES, rngs=rngs)

    def __call__(self, x):
        x = x + self.attention(jax.vmap(self.norm1)(x), deterministic=True)
        return x + self.down(nnx.gelu(self.up(jax.vmap(self.norm2)(x))))


class FlaxConvBatchNorm(nnx.Module):
    """X + tanh(BN(Conv(X))) on a batch state X of (B, length, channels)."""

    def __init__(self, rngs, *, train: bool):
        self.conv = nnx.Conv(BN_CHANNELS, BN_CHANNELS, kernel_size=(3,), padding="SAME", rngs=rngs)
        self.norm = nnx.BatchNorm(BN_CHANNELS, use_running_average=not train, rngs=rngs)

    def __call__(self, x):
        return x + jnp.tanh(self.norm(self.conv(x)))


def make_batch_norm_train(rngs):
    return FlaxConvBatchNorm(rngs, train=True)


def make_batch_norm_eval(rngs):
    return FlaxConvBatchNorm(rngs, train=False)


def _conv_batch_norm_by_hand(train: bool):
    """The Conv + BatchNorm block written out from its parameters: training mode normalises each channel
    with the mean and biased variance over the batch and positions of the state; eval mode with the stored
    averages. Independent of the adapter's functional application of the module."""

    def block(p, h):
        X = h.reshape(BATCH, POSITIONS, BN_CHANNELS)
        Z = (
            jax.lax.conv_general_dilated(
                X, p["conv"]["kernel"].get_value(), (1,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")
            )
            + p["conv"]["bias"].get_value()
        )
        if train:
            mean, var = Z.mean(axis=(0, 1)), ((Z - Z.mean(axis=(0, 1))) ** 2).mean(axis=(0, 1))
        else:
            mean, var = p["norm"]["mean"].get_value(), p["norm"]["var"].get_value()
        norm = p["norm"]
        Y = (Z - mean) / jnp.sqrt(var + 1e-5) * norm["scale"].get_value() + norm["bias"].get_value()
        return (X + jnp.tanh(Y)).reshape(-1)

    return block


# --------------------------------------------------------------------------- the zoo


class Case(NamedTuple):
    net: jaxgrad.Network
    block: Callable  # (one layer's params of one sample, flat h) -> flat h, by the module or by hand
    depths: tuple[int, ...]
    samples: int
    seed: int


def _equinox(make, shape, depth, samples=3, seed=0, depths=None):
    static = eqx.partition(make(jax.random.key(0)), eqx.is_inexact_array)[1]

    def block(p, h):
        return eqx.combine(p, static)(h.reshape(shape)).reshape(-1)

    net = serial_from_equinox([make] * depth, shape=shape)
    return Case(net, block, depths or (1, depth // 2, depth), samples, seed)


def _flax(make, shape, depth, block=None, samples=3, seed=0):
    graphdef, _, rest = nnx.split(make(nnx.Rngs(0)), (nnx.Param, nnx.BatchStat), ...)

    def by_module(p, h):
        return nnx.merge(graphdef, p, rest, copy=True)(h.reshape(shape)).reshape(-1)

    net = serial_from_flax([make] * depth, shape=shape)
    return Case(net, block or by_module, (1, depth // 2, depth), samples, seed)


ZOO = {
    "equinox pre-LN transformer": lambda: _equinox(EquinoxPreLNTransformer, (TOKENS, FEATURES), 4),
    "equinox GRU step": lambda: _equinox(EquinoxGRUStep, (GRU_HIDDEN,), 6),
    "equinox conv + GroupNorm": lambda: _equinox(EquinoxConvGroupNorm, (CHANNELS, LENGTH), 4),
    "flax pre-norm transformer": lambda: _flax(FlaxPreNormTransformer, (TOKENS, FEATURES), 4),
    "flax conv + BatchNorm, train": lambda: _flax(
        make_batch_norm_train, (BATCH, POSITIONS, BN_CHANNELS), 4, _conv_batch_norm_by_hand(train=True)
    ),
    "flax conv + BatchNorm, eval": lambda: _flax(
        make_batch_norm_eval, (BATCH, POSITIONS, BN_CHANNELS), 4, _conv_batch_norm_by_hand(train=False)
    ),
    # issue 27, item 2: the default method's warm-started Lanczos settles low on this one
    "equinox RMS residual (issue 27)": lambda: _equinox(
        RMSResidual, (RMS_TOKENS, RMS_FEATURES), 8, samples=16, seed=3, depths=(1, 4, 8)
    ),
}


@functools.cache
def case(name) -> Case:
    return ZOO[name]()


@functools.cache
def reference(name):
    """(ln ‖J_d⋯J_1‖₂, the rounding bound), each (samples, depths): eager jacrev of the whole network up to d
    and a float64 SVD; the bound (see the module) from the per-layer Jacobians along the same trajectory."""
    c = case(name)
    n, q0 = c.net.widths[0], 1.0
    params = jaxgrad.draw_params(c.net, c.samples, c.seed)
    layer_jacobian = jax.jit(jax.jacrev(c.block, argnums=1))  # for the bound only
    log_norms, bounds = np.zeros((c.samples, len(c.depths))), np.zeros((c.samples, len(c.depths)))
    for i in range(c.samples):
        p = [jax.tree.map(lambda a, i=i: a[i], layer) for layer in params]
        h0 = jnp.sqrt(jnp.float32(q0)) * jax.random.normal(sample_keys(c.seed, i).input, (n,), jnp.float32)

        def network(h, p=p):
            """h⁽ᵈ⁾ at each depth d of `c.depths`, composed by hand."""
            out = []
            for ell in range(max(c.depths)):
                h = c.block(p[ell], h)
                out += [h] if ell + 1 in c.depths else []
            return out

        wholes = jax.jacrev(network)(h0)  # not jitted: no compiled program shared with the engine's
        h, Js = h0, []
        for ell in range(max(c.depths)):
            Js.append(np.asarray(layer_jacobian(p[ell], h), np.float64))
            h = c.block(p[ell], h)
        for k, d in enumerate(c.depths):
            top = np.linalg.svd(np.asarray(wholes[k], np.float64), compute_uv=False)[0]
            log_norms[i, k], bounds[i, k] = np.log(top), rounding_bound(Js[:d], top)
    return log_norms, bounds


def rounding_bound(Js, top):
    """The smaller of the componentwise and the normwise first-order bounds on one float32 computation of
    ‖J_d⋯J_1‖₂, relative to its value `top` (the module's derivation)."""
    n, d = Js[0].shape[0], len(Js)
    M, forward = np.eye(n), [np.eye(n)]  # M_d = |J_d|⋯|J_1|; forward[ℓ] = J_ℓ⋯J_1
    for J in Js:
        M, forward = np.abs(J) @ M, forward + [J @ forward[-1]]
    componentwise = (n + 4) * d * EPS * np.linalg.norm(M) / top
    carried, normwise = np.eye(n), 0.0  # carried = J_d⋯J_{ℓ+1}
    for ell in range(d, 0, -1):
        normwise += (
            np.linalg.norm(carried, 2) * np.linalg.norm(np.abs(Js[ell - 1]), 2) * np.linalg.norm(forward[ell - 1])
        )
        carried = carried @ Js[ell - 1]
    return min(componentwise, (2 * n + 4) * EPS * normwise / top)


def engine(name, method):
    c = case(name)
    if method == "matrix_free":
        result = jaxgrad.simulate(
            c.net, c.samples, c.seed, method=method, spectrum_at=c.depths, fields=("log_signal_norm",)
        )
        return np.stack([result.log_singular_values[d][:, 0] for d in c.depths], axis=1)
    result = jaxgrad.simulate(c.net, c.samples, c.seed, method=method, fields=("log_spectral_norm",))
    return result.log_spectral_norm[:, np.asarray(c.depths) - 1]


def tolerance(name, method, bounds):
    """Relative, per sample and depth: 4 × the rounding bound + nε (+ the Lanczos contract); see the module."""
    n = case(name).net.widths[0]
    return 4 * bounds + n * EPS + (LANCZOS_CONTRACT if method != "svd" else 0.0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(ZOO))
def test_engine_matches_jacrev_of_the_whole_network(name, method):
    want, bounds = reference(name)
    got = engine(name, method)
    relative = np.abs(np.expm1(got - want))
    bound = tolerance(name, method, bounds)
    worst = np.unravel_index(np.argmax(relative / bound), relative.shape)
    print(
        f"\nzoo: {name}, method={method}: worst relative error {relative.max():.2e} "
        f"(tolerance there {bound[np.unravel_index(np.argmax(relative), relative.shape)]:.2e})"
    )
    i, k = worst
    assert np.all(relative <= bound), (
        f"{name}, method={method}: ln‖J_d⋯J_1‖₂ at depth d={case(name).depths[k]}, sample {i}: engine "
        f"{got[i, k]:.6f}, jacrev + float64 SVD {want[i, k]:.6f} (relative error {relative[i, k]:.2e}, "
        f"tolerance {bound[i, k]:.2e}); {int((relative > bound).sum())} of {relative.size} beyond"
    )

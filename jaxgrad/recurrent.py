r"""Recurrent networks: backpropagation through time as a product of tied Jacobians.

A recurrent cell maps the state and the input of step t to the next state,
$h_t = F(h_{t-1}, x_t; θ)$, with **one** parameter set θ for every step. Backpropagation
through time multiplies $J_t = ∂h_t/∂h_{t-1}$, so the gradient at lag k is
$J_t J_{t-1}\cdots J_{t-k+1}$: the product of seed §5 with tied weights and fresh inputs.

Cells (n = `width`, d = `input_dim`, σ the logistic sigmoid, φ the `activation`):

* ``vanilla`` (Elman 1990): $h_t = φ(W h_{t-1} + U x_t + b)$, $J_t = \mathrm{diag}(φ′(z_t))\,W$;
  $W_{ij} \sim N(0, σ_w^2/n)$ (so the gain g = σ_w), $U_{ij} \sim N(0, 1/d)$, $b_i \sim N(0, σ_b^2)$.
* ``gru`` (Cho et al. 2014): $r = σ(W_r h + U_r x + b_r)$, $u = σ(W_u h + U_u x + b_u)$,
  $\tilde h = φ(W_h (r⊙h) + U_h x + b_h)$, $h_t = (1-u)⊙\tilde h + u⊙h$.
* ``lstm`` (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000): state
  $s = (h, c)$ flattened to one vector of size 2n; $i, f, o = σ(\cdot)$, $g = φ(\cdot)$ of
  $W_\cdot h + U_\cdot x + b_\cdot$; $c_t = f⊙c + i⊙g$, $h_t = o⊙φ(c_t)$. $J_t$ is 2n × 2n.

Gated cells use the common default initialisation (Keras' ``GRU``/``LSTM`` defaults):
recurrent weights orthogonal, $W_\cdot = σ_w Q$ with Q Haar-random per gate (Saxe et al. 2014;
σ_w = 1 is the default gain); input weights Gaussian with Glorot's variance 2/(d + n) per gate
(Glorot & Bengio 2010; Keras draws them uniform with that variance); biases $σ_b N(0, 1)$
(zero by default) plus 1 on the LSTM forget gate (Gers et al. 2000; Jozefowicz et al. 2015).

Design: T steps are T layers of one structure (one `lax.scan` segment, one compiled
program) in a **tied** `jaxgrad.Network`, so the engine draws θ once per sample and uses
the same W at every step, literally. Each step-layer knows its index t as a `Hyper`
coefficient (``"step"``: traced data like σ_w, so T layers share one program), and the
parameters carry a per-sample input seed (two float32 numbers in [1, 2) whose bits form a
PRNG key: floats, so parameters can also be given to `jaxgrad.simulate`). Step t draws
$x_t = σ_x ξ_t$, $ξ_t \sim N(0, I_d)$ from ``fold_in(key, t)``: independent across steps and
samples, identical in every probe. σ_w, σ_b and σ_x (`input_std`) are `Hyper` values: a new
value does not recompile, and `jaxgrad.sweep` scans them. The initial state is the
engine's input $h_0 \sim N(0, q_0 I)$. With σ_x = 0 the vanilla cell is exactly
``mlp(..., tied=True)``'s iterated map (same W and b, bit for bit).

Each cell has a closed-form Jacobian (the engine's fast path, O(gates·m²) per step for the
vanilla and LSTM cells, one m³ product for the GRU's reset gate); `unroll` is a plain reference
(explicit inputs, `jax.jacrev`) that tests hold the engine and the fast paths to.

References: J. L. Elman, Cogn. Sci. 14 (1990); K. Cho et al., EMNLP 2014; S. Hochreiter and
J. Schmidhuber, Neural Comput. 9 (1997); F. Gers et al., Neural Comput. 12 (2000);
R. Jozefowicz et al., ICML 2015; A. Saxe et al., ICLR 2014; X. Glorot and Y. Bengio, AISTATS
2010; R. Pascanu, T. Mikolov and Y. Bengio, ICML 2013.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

from jaxgrad.activations import Activation, derivative, get_activation
from jaxgrad.layers import (
    HIGHEST,
    Hyper,
    Layer,
    Network,
    _check_float_dtype,
    _check_nonnegative,
    _check_positive_int,
    float_dtype,
    haar_orthogonal,
    serial,
    standard_normal,
)

__all__ = ["CELLS", "CellParams", "cell_jacobian", "inputs", "rnn", "unroll"]

CELLS = ("vanilla", "gru", "lstm")
_GATES = {"vanilla": 1, "gru": 3, "lstm": 4}
_FORGET = 1  # index of the LSTM forget gate in (i, f, g, o)


class CellParams(NamedTuple):
    """One cell's parameters, shared by every step (gates stacked on the leading axis)."""

    W: jax.Array  # vanilla (n, n); gated (gates, n, n): recurrent weights
    b: jax.Array  # vanilla (n,); gated (gates, n)
    U: jax.Array  # vanilla (n, d); gated (gates, n, d): input weights
    input_seed: jax.Array  # (2,) float32 in [1, 2): its bits are the key of the input sequence


class _Spec(NamedTuple):
    cell: str
    width: int
    input_dim: int
    act: Activation
    dtype: str | None

    @property
    def state_size(self) -> int:
        return 2 * self.width if self.cell == "lstm" else self.width


def _mm(A, x):
    return jnp.matmul(A, x, precision=HIGHEST)


@functools.cache
def _step_function(spec: _Spec) -> Callable:
    """``(params, s, x) -> s'``: one step of the cell with an explicit input x."""
    phi, n = spec.act.fn, spec.width
    sig = jax.nn.sigmoid

    if spec.cell == "vanilla":

        def step(p, h, x):
            return phi(_mm(p.W, h) + p.b + _mm(p.U, x))
    elif spec.cell == "gru":

        def step(p, h, x):
            r = sig(_mm(p.W[0], h) + p.b[0] + _mm(p.U[0], x))
            u = sig(_mm(p.W[1], h) + p.b[1] + _mm(p.U[1], x))
            candidate = phi(_mm(p.W[2], r * h) + p.b[2] + _mm(p.U[2], x))
            return (1 - u) * candidate + u * h
    else:

        def step(p, s, x):
            h, c = s[:n], s[n:]
            pre = [_mm(p.W[k], h) + p.b[k] + _mm(p.U[k], x) for k in range(4)]
            i, f, g, o = sig(pre[0]), sig(pre[1]), phi(pre[2]), sig(pre[3])
            c = f * c + i * g
            return jnp.concatenate([o * phi(c), c])

    return step


@functools.cache
def _fast_jacobian(spec: _Spec) -> Callable:
    r"""``(params, s, x) -> (J, s')`` in closed form (tests hold it to `jax.jacrev` of the step).

    vanilla: $J = \mathrm{diag}(φ′(z))W$. GRU, with $a_\cdot$ the pre-activations and $D(v) = \mathrm{diag}(v)$:
    $∂h'/∂h = D(1-u)D(φ′(a_h))W_h[D(r) + D(h)D(σ′(a_r))W_r] + D(h - \tilde h)D(σ′(a_u))W_u + D(u)$.
    LSTM: $∂c'/∂h = \sum_k D(\cdot)W_k$ over the gates i, f, g, $∂c'/∂c = D(f)$,
    $∂h'/∂· = D(φ(c')σ′(a_o))W_o[·] + D(oφ′(c'))\,∂c'/∂·$.
    """
    phi, n = spec.act.fn, spec.width
    dphi = derivative(phi)
    sig = jax.nn.sigmoid

    def dsig(a):
        y = sig(a)
        return y * (1 - y)

    if spec.cell == "vanilla":

        def jacobian(p, h, x):
            z = _mm(p.W, h) + p.b + _mm(p.U, x)
            return dphi(z)[:, None] * p.W, phi(z)
    elif spec.cell == "gru":

        def jacobian(p, h, x):
            a_r = _mm(p.W[0], h) + p.b[0] + _mm(p.U[0], x)
            a_u = _mm(p.W[1], h) + p.b[1] + _mm(p.U[1], x)
            r, u = sig(a_r), sig(a_u)
            a_h = _mm(p.W[2], r * h) + p.b[2] + _mm(p.U[2], x)
            candidate = phi(a_h)
            d_rh = jnp.diag(r) + (h * dsig(a_r))[:, None] * p.W[0]  # ∂(r⊙h)/∂h
            J = (
                ((1 - u) * dphi(a_h))[:, None] * _mm(p.W[2], d_rh)
                + ((h - candidate) * dsig(a_u))[:, None] * p.W[1]
                + jnp.diag(u)
            )
            return J, (1 - u) * candidate + u * h
    else:

        def jacobian(p, s, x):
            h, c = s[:n], s[n:]
            a = [_mm(p.W[k], h) + p.b[k] + _mm(p.U[k], x) for k in range(4)]
            i, f, g, o = sig(a[0]), sig(a[1]), phi(a[2]), sig(a[3])
            c_next = f * c + i * g
            dc_dh = (
                (g * dsig(a[0]))[:, None] * p.W[0]
                + (c * dsig(a[1]))[:, None] * p.W[1]
                + (i * dphi(a[2]))[:, None] * p.W[2]
            )
            out = o * dphi(c_next)
            dh_dh = (phi(c_next) * dsig(a[3]))[:, None] * p.W[3] + out[:, None] * dc_dh
            J = jnp.block([[dh_dh, jnp.diag(out * f)], [dc_dh, jnp.diag(f)]])
            return J, jnp.concatenate([o * phi(c_next), c_next])

    return jacobian


def _init_function(spec: _Spec, w_scale, b_scale) -> Callable:
    n, d = spec.width, spec.input_dim

    def init(key) -> CellParams:
        dt = float_dtype(spec.dtype)
        key_w, key_b = jax.random.split(key)  # as `dense`, so σ_x = 0 is mlp(tied=True) exactly
        key_u, key_x = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
        seed = jax.random.uniform(key_x, (2,), jnp.float32, 1.0, 2.0)
        if spec.cell == "vanilla":
            W = w_scale * standard_normal(key_w, (n, n), dt)
            b = b_scale * standard_normal(key_b, (n,), dt)
            U = standard_normal(key_u, (n, d), dt) / math.sqrt(d)
            return CellParams(W, b, U, seed)
        k = _GATES[spec.cell]
        W = w_scale * jnp.stack([haar_orthogonal(jax.random.fold_in(key_w, g), n, n, dt) for g in range(k)])
        b = b_scale * standard_normal(key_b, (k, n), dt)
        if spec.cell == "lstm":
            b = b.at[_FORGET].add(1.0)
        U = math.sqrt(2.0 / (d + n)) * standard_normal(key_u, (k, n, d), dt)
        return CellParams(W, b, U, seed)

    return init


def _input_key(params: CellParams):
    bits = jax.lax.bitcast_convert_type(jnp.asarray(params.input_seed, jnp.float32), jnp.uint32)
    return jax.random.wrap_key_data(bits)


def _draw_input(params: CellParams, t, x_scale, input_dim: int, dtype):
    """$x_t = σ_x ξ_t$, ξ_t ~ N(0, I) from ``fold_in(input key, t)`` (t 0-based)."""
    xi = jax.random.normal(jax.random.fold_in(_input_key(params), t), (input_dim,), jnp.float32).astype(dtype)
    return jnp.asarray(x_scale, dtype) * xi


def _step_layer(spec: _Spec, t: int, sigma_w: float, sigma_b: float, input_std: float) -> Layer:
    """Time step t (0-based) as a `Layer`: the cell with x_t drawn inside apply."""
    step = _step_function(spec)

    def build(c):
        init = _init_function(spec, c["w_scale"], c["b_scale"])

        def x_of(p):
            return _draw_input(p, jnp.asarray(c["step"]).astype(jnp.int32), c["x_scale"], spec.input_dim, p.W.dtype)

        def apply(p, h):
            return step(p, h, x_of(p))

        fast = _fast_jacobian(spec)

        def jacobian(p, h):
            return fast(p, h, x_of(p))

        return init, apply, jacobian

    w_scale = sigma_w / math.sqrt(spec.width) if spec.cell == "vanilla" else sigma_w
    coeffs = {"w_scale": w_scale, "b_scale": sigma_b, "x_scale": input_std, "step": float(t)}
    hyper = Hyper(
        values={"sigma_w": sigma_w, "sigma_b": sigma_b, "input_std": input_std},
        coefficients=coeffs,
        structure=("rnn",) + tuple(spec),
        build=build,
        rebuild=lambda sigma_w=sigma_w, sigma_b=sigma_b, input_std=input_std: _step_layer(
            spec,
            t,
            _check_nonnegative("sigma_w", sigma_w),
            _check_nonnegative("sigma_b", sigma_b),
            _check_nonnegative("input_std", input_std),
        ),
    )
    init, apply, jacobian = build(coeffs)
    homogeneous = spec.cell == "vanilla" and spec.act.homogeneous and sigma_b == 0.0 and input_std == 0.0
    m = spec.state_size
    return Layer(
        init,
        apply,
        m,
        m,
        jacobian,
        homogeneous=homogeneous,
        name=f"{spec.cell}({spec.width}, {spec.act.name}, σ_w={sigma_w:g}, σ_b={sigma_b:g}, "
        f"σ_x={input_std:g}) step {t + 1}",
        hyper=hyper,
    )


def rnn(
    width: int = 128,
    steps: int = 1000,
    *,
    cell: str = "vanilla",
    activation: str | Callable | Activation = "tanh",
    sigma_w: float | None = None,
    sigma_b: float = 0.0,
    input_std: float = 0.0,
    input_dim: int | None = None,
    dtype: DTypeLike | None = None,
) -> Network:
    r"""A recurrent network unrolled over `steps` time steps, one parameter set for all of them.

    ``jaxgrad.simulate(net, samples)`` then records every field per time step (depth =
    t); ``log_norm_product`` increments are $\ln\|J_t\|_2$ and ``log_spectral_norm`` is
    $\ln\|J_t\cdots J_1\|_2$, the gradient norm at lag t; ``jaxgrad.lyapunov_spectrum``
    gives the exponents of the tied product.

    Arguments:
      width: hidden size n (the state has size 2n for ``lstm``).
      steps: number of time steps T ≥ 1.
      cell: one of `CELLS`.
      activation: φ (the vanilla nonlinearity; the candidate and cell output of gated cells).
      sigma_w: vanilla: $W_{ij} \sim N(0, σ_w^2/n)$ (default 1.5); gated: gain of the
        orthogonal recurrent weights (default 1).
      sigma_b: standard deviation of the Gaussian biases (added to the LSTM forget bias 1).
      input_std: σ_x, the standard deviation of each coordinate of $x_t$ (0: no input).
      input_dim: d, the size of $x_t$ (default `width`).
      dtype: parameter dtype; ``None`` is JAX's default float.

    Returns:
      A tied `Network` of `steps` layers of one structure; ``net.init(key)`` returns the
      one `CellParams`.
    """
    if cell not in CELLS:
        raise ValueError(f"unknown cell={cell!r}; valid choices are {list(CELLS)}")
    width = _check_positive_int("width", width)
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps <= 0:
        raise ValueError(f"`steps` (the number of time steps T) must be a positive integer, got steps={steps!r}")
    input_dim = width if input_dim is None else _check_positive_int("input_dim", input_dim)
    if sigma_w is None:
        sigma_w = 1.5 if cell == "vanilla" else 1.0
    sigma_w = _check_nonnegative("sigma_w", sigma_w)
    sigma_b = _check_nonnegative("sigma_b", sigma_b)
    try:
        input_std = float(input_std)
    except (TypeError, ValueError):
        raise ValueError(f"`input_std` must be a finite non-negative number, got input_std={input_std!r}") from None
    if not (math.isfinite(input_std) and input_std >= 0):
        raise ValueError(
            f"`input_std` (the input standard deviation; its square is the input variance) must be "
            f"a finite non-negative number, got input_std={input_std!r}"
        )
    spec = _Spec(cell, width, input_dim, get_activation(activation), _check_float_dtype(dtype))
    return serial(*(_step_layer(spec, t, sigma_w, sigma_b, input_std) for t in range(int(steps))), tied=True)


def _hyper_of(net: Network) -> Hyper:
    hyper = net.layers[0].hyper if isinstance(net, Network) else None
    if hyper is None or not isinstance(hyper.structure, tuple) or hyper.structure[0] != "rnn":
        raise ValueError(f"`net` must be a network built by jaxgrad.rnn, got {type(net).__name__}")
    return hyper


def _spec_of(net: Network) -> _Spec:
    structure = _hyper_of(net).structure
    assert isinstance(structure, tuple)  # _hyper_of checked it
    return _Spec(*structure[1:])


def inputs(net: Network, params: CellParams) -> jax.Array:
    """The input sequence $x_1, …, x_T$ (shape (T, d)) that the engine feeds `net` with `params`."""
    spec = _spec_of(net)
    x_scale = _hyper_of(net).values["input_std"]
    dtype = jnp.asarray(params.W).dtype
    return _inputs_program(spec.input_dim, net.depth)(params, jnp.asarray(x_scale, dtype))


@functools.cache
def _inputs_program(input_dim: int, steps: int):
    def draw(params, x_scale):
        return jax.vmap(lambda t: _draw_input(params, t, x_scale, input_dim, x_scale.dtype))(jnp.arange(steps))

    return jax.jit(draw)


def cell_jacobian(net: Network, params: CellParams, h: ArrayLike, x: ArrayLike) -> jax.Array:
    r"""$∂h_t/∂h_{t-1}$ at state `h` and input `x`, by `jax.jacrev` of the cell."""
    return jax.jacrev(_step_function(_spec_of(net)), argnums=1)(params, jnp.asarray(h), jnp.asarray(x))


def unroll(net: Network, params: CellParams, h0: ArrayLike, xs: ArrayLike | None = None) -> tuple[jax.Array, jax.Array]:
    r"""Reference forward pass: states $h_0, …, h_T$ (T+1, m) and Jacobians $J_1, …, J_T$ (T, m, m).

    Arguments:
      net: from `rnn`.
      params: one sample's `CellParams` (``net.init(key)``).
      h0: the initial state, shape (m,) (m = n, or 2n for ``lstm``).
      xs: the inputs, shape (T, d); default `inputs(net, params)` (what the engine uses).
    """
    spec = _spec_of(net)
    m, T = spec.state_size, net.depth
    h0 = jnp.asarray(h0)
    if h0.shape != (m,):
        raise ValueError(f"`h0` must have shape ({m},) for this {spec.cell} cell, got h0.shape={h0.shape}")
    xs = inputs(net, params) if xs is None else jnp.asarray(xs)
    if xs.shape != (T, spec.input_dim):
        raise ValueError(
            f"`xs` (the input sequence) must have shape (steps, input_dim) = ({T}, {spec.input_dim}), "
            f"got xs.shape={xs.shape}"
        )
    dtype = jnp.asarray(params.W).dtype
    return _unroll_program(spec)(params, h0.astype(dtype), xs.astype(dtype))


@functools.cache
def _unroll_program(spec: _Spec):
    step = _step_function(spec)
    jac = jax.jacrev(step, argnums=1)

    def run(params, h0, xs):
        def body(h, x):
            h_next = step(params, h, x)
            return h_next, (h_next, jac(params, h, x))

        _, (hs, Js) = jax.lax.scan(body, h0, xs)
        return jnp.concatenate([h0[None], hs]), Js

    return jax.jit(run)

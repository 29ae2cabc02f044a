r"""Normalisation layers: RMSNorm, LayerNorm and BatchNorm as jaxgrad `Layer`\ s.

For a state $h \in \mathbb{R}^n$ with $c = h - \bar h\,\mathbf 1$ (LayerNorm; RMSNorm takes
$c = h$) and $s = \sqrt{\|c\|^2/n + ε}$,

$$\mathrm{LN}(h) = γ \odot c/s + β, \qquad
J = \frac{\mathrm{diag}(γ)}{s}\Big(P - \frac{c\,c^\top}{n s^2}\Big),$$

$P = I - \mathbf 1\mathbf 1^\top/n$ (LayerNorm) or $P = I$ (RMSNorm). At initialisation
(γ = 1, β = 0) J is a scaled projection: its singular values are $1/s$ on the complement
of $\{\mathbf 1, c\}$ ($n - 2$ of them; $n - 1$ for RMSNorm), $ε/(\|c\|^2/n + ε)^{3/2}$
along c (0 when ε = 0) and 0 along $\mathbf 1$ (LayerNorm): `jaxgrad.theory.normalisation`.

BatchNorm (Ioffe & Szegedy 2015) normalises each feature over a batch of B inputs: the
state is the flat $\mathrm{vec}(H)$ of $H \in \mathbb{R}^{B\times n}$ (row b is input b), so
its Jacobian, $Bn \times Bn$, couples the batch. `batch_norm_mlp` is the network of Yang et
al. (2019), $H^{(\ell)} = φ(\mathrm{BN}(H^{(\ell-1)} W^{(\ell)\top} + \mathbf 1 b^\top))$, whose
gradients explode with depth at initialisation (`jaxgrad.theory.batch_norm_gradient_rate`).

Every layer has learnable gain (and bias, except RMSNorm) at their initial values 1 and 0
unless ``learnable=False``; ε is a traced `Hyper` value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxgrad.activations import Activation, get_activation
from jaxgrad.layers import (
    WEIGHT_SCHEMES,
    Hyper,
    Layer,
    Network,
    _check_float_dtype,
    _check_nonnegative,
    _check_positive_int,
    dense,
    float_dtype,
    serial,
)

__all__ = ["NormParams", "batch_norm", "batch_norm_mlp", "layer_norm", "rms_norm"]

Array = jax.Array
DEFAULT_EPS = 1e-5


class NormParams(NamedTuple):
    gain: Array  # (n,), 1 at initialisation
    bias: Array  # (n,), 0 at initialisation (RMSNorm: (0,), no bias)


def _check_width(width, where: str) -> int:
    width = _check_positive_int("width", width)
    if width < 2:
        raise ValueError(
            f"{where} needs a state of width ≥ 2: a width-1 state normalises to a constant "
            f"(its Jacobian is 0), got width={width}"
        )
    return width


def _check_bool(name, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {name}={value!r}")
    return bool(value)


def _normalise(h, eps, centre: bool, axis: int = -1):
    """(h − mean)/√(mean square + ε) along `axis` (no centring for RMSNorm)."""
    c = h - jnp.mean(h, axis=axis, keepdims=True) if centre else h
    return c * jax.lax.rsqrt(jnp.mean(c * c, axis=axis, keepdims=True) + eps)


def _vector_norm(kind: str, width: int, eps: float, learnable: bool, dtype) -> Layer:
    centre = kind == "layer_norm"
    bias_width = width if centre else 0

    def build(c):
        eps_c = c["eps"]

        def init(key):
            del key
            dt = float_dtype(dtype)
            if not learnable:
                return ()
            return NormParams(jnp.ones((width,), dt), jnp.zeros((bias_width,), dt))

        def apply(params, h):
            y = _normalise(h, eps_c, centre)
            if learnable:
                y = params.gain * y + (params.bias if centre else 0.0)
            return y

        def jacobian(params, h):
            x = h - jnp.mean(h) if centre else h
            s2 = jnp.mean(x * x) + eps_c
            r = jax.lax.rsqrt(s2)
            eye = jnp.eye(width, dtype=h.dtype)
            P = eye - 1.0 / width if centre else eye
            J = r * (P - jnp.outer(x, x) / (width * s2))
            if learnable:
                J = params.gain[:, None] * J
            return J, apply(params, h)

        return init, apply, jacobian

    def constructor(**kw):
        return (layer_norm if centre else rms_norm)(width, **kw)

    coeffs = {"eps": eps}
    hyper = Hyper(
        values={"eps": eps},
        coefficients=coeffs,
        structure=(kind, width, learnable, dtype),
        build=build,
        rebuild=lambda eps=eps: constructor(eps=eps, learnable=learnable, dtype=dtype),
    )
    init, apply, jacobian = build(coeffs)
    label = "LayerNorm" if centre else "RMSNorm"
    return Layer(
        init,
        apply,
        width,
        width,
        jacobian,
        homogeneous=False,
        name=f"{label}({width}, ε={eps:g}{'' if learnable else ', no gain'})",
        hyper=hyper,
    )


def rms_norm(width: int, *, eps: float = DEFAULT_EPS, learnable: bool = True, dtype: DTypeLike | None = None) -> Layer:
    r"""RMSNorm (Zhang & Sennrich 2019): $h \mapsto γ \odot h/\sqrt{\|h\|^2/n + ε}$.

    Arguments:
      width: n ≥ 2.
      eps: ε ≥ 0 (a traced value).
      learnable: keep a gain γ (1 at initialisation) as a parameter; False: no parameters.
      dtype: parameter dtype (None: JAX's default float).

    Returns:
      A `Layer` with the exact Jacobian $\frac{\mathrm{diag}γ}{s}(I - hh^\top/(ns^2))$ as fast path.
    """
    width = _check_width(width, "rms_norm")
    return _vector_norm(
        "rms_norm",
        width,
        _check_nonnegative("eps", eps),
        _check_bool("learnable", learnable),
        _check_float_dtype(dtype),
    )


def layer_norm(
    width: int, *, eps: float = DEFAULT_EPS, learnable: bool = True, dtype: DTypeLike | None = None
) -> Layer:
    r"""LayerNorm (Ba, Kiros & Hinton 2016): $h \mapsto γ \odot (h - \bar h)/\sqrt{\mathrm{var}(h) + ε} + β$.

    Arguments and returns as in `rms_norm`; the parameters are a gain (1) and a bias (0),
    and the Jacobian's projection also removes the mean direction $\mathbf 1$.
    """
    width = _check_width(width, "layer_norm")
    return _vector_norm(
        "layer_norm",
        width,
        _check_nonnegative("eps", eps),
        _check_bool("learnable", learnable),
        _check_float_dtype(dtype),
    )


def _check_batch(batch) -> int:
    if isinstance(batch, (bool, np.bool_)) or not isinstance(batch, (int, np.integer)) or batch < 2:
        raise ValueError(
            f"`batch` must be an integer ≥ 2 (BatchNorm's variance over one input is undefined), got batch={batch!r}"
        )
    return int(batch)


def _batch_normalise(params, H, eps, learnable: bool):
    """BN over the batch axis of H (B, n), biased variance (training mode)."""
    y = _normalise(H, eps, True, axis=0)
    return params.gain * y + params.bias if learnable else y


def batch_norm(
    width: int, batch: int = 32, *, eps: float = DEFAULT_EPS, learnable: bool = True, dtype: DTypeLike | None = None
) -> Layer:
    r"""BatchNorm on a batch: $H_{bi} \mapsto γ_i (H_{bi} - μ_i)/\sqrt{σ_i^2 + ε} + β_i$.

    $μ_i, σ_i^2$ are the mean and (biased) variance of feature i over the B rows of
    $H \in \mathbb{R}^{B\times n}$; the state is the flat $\mathrm{vec}(H)$ of length $Bn$ (row-major),
    so ``n_in = n_out = batch * width`` and the Jacobian couples the inputs of the batch.

    Arguments:
      width: features n ≥ 1.
      batch: B ≥ 2 (the variance over one input is undefined).
      eps, learnable, dtype: as in `layer_norm` (γ = 1, β = 0 at initialisation).
    """
    width = _check_positive_int("width", width)
    batch = _check_batch(batch)
    eps = _check_nonnegative("eps", eps)
    learnable = _check_bool("learnable", learnable)
    dtype = _check_float_dtype(dtype)
    n = batch * width

    def build(c):
        def init(key):
            del key
            dt = float_dtype(dtype)
            return NormParams(jnp.ones((width,), dt), jnp.zeros((width,), dt)) if learnable else ()

        def apply(params, h):
            return _batch_normalise(params, h.reshape(batch, width), c["eps"], learnable).reshape(-1)

        return init, apply, None

    coeffs = {"eps": eps}
    hyper = Hyper(
        values={"eps": eps},
        coefficients=coeffs,
        structure=("batch_norm", width, batch, learnable, dtype),
        build=build,
        rebuild=lambda eps=eps: batch_norm(width, batch, eps=eps, learnable=learnable, dtype=dtype),
    )
    init, apply, jacobian = build(coeffs)
    return Layer(
        init, apply, n, n, jacobian, homogeneous=False, name=f"BatchNorm({batch}×{width}, ε={eps:g})", hyper=hyper
    )


class BatchNormDenseParams(NamedTuple):
    dense: object  # DenseParams(W, b) of the shared dense layer
    norm: object  # NormParams of the BatchNorm


def _batch_norm_dense(width, batch, activation: Activation, weights, sigma_w, sigma_b, eps, dtype) -> Layer:
    """One layer of `batch_norm_mlp`: $H \\mapsto φ(\\mathrm{BN}(H W^\\top + \\mathbf 1 b^\\top))$."""
    linear = dense(width, width, activation="linear", weights=weights, sigma_w=sigma_w, sigma_b=sigma_b, dtype=dtype)
    norm = batch_norm(width, batch, eps=eps, dtype=dtype)
    phi = activation.fn

    def build(c):
        dense_init, dense_apply, _ = linear.hyper.build(c)
        norm_init, _, _ = norm.hyper.build(c)

        def init(key):
            key_dense, key_norm = jax.random.split(key)
            return BatchNormDenseParams(dense_init(key_dense), norm_init(key_norm))

        def apply(params, h):
            Z = jax.vmap(dense_apply, in_axes=(None, 0))(params.dense, h.reshape(batch, width))
            return phi(_batch_normalise(params.norm, Z, c["eps"], True)).reshape(-1)

        return init, apply, None

    assert linear.hyper is not None and norm.hyper is not None  # dense and batch_norm always carry one
    coeffs = {**linear.hyper.coefficients, **norm.hyper.coefficients}
    values = {"sigma_w": sigma_w, "sigma_b": sigma_b, "eps": eps}
    hyper = Hyper(
        values=values,
        coefficients=coeffs,
        structure=("batch_norm_dense", width, batch, activation, weights, dtype),
        build=build,
        rebuild=lambda sigma_w=sigma_w, sigma_b=sigma_b, eps=eps: _batch_norm_dense(
            width, batch, activation, weights, sigma_w, sigma_b, eps, dtype
        ),
    )
    init, apply, jacobian = build(coeffs)
    return Layer(
        init,
        apply,
        batch * width,
        batch * width,
        jacobian,
        homogeneous=False,
        name=f"{activation.name}(BN(dense({width}), batch {batch}), {weights}, σ_w={sigma_w:g})",
        hyper=hyper,
    )


def batch_norm_mlp(
    width: int,
    depth: int,
    batch: int = 32,
    *,
    activation: str | Callable | Activation = "relu",
    weights: str = "gaussian",
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
    eps: float = DEFAULT_EPS,
    dtype: DTypeLike | None = None,
) -> Network:
    r"""Yang et al. (2019)'s batch-normalised network on a batch of B inputs.

    $$H^{(\ell)} = φ\big(\mathrm{BN}(H^{(\ell-1)} W^{(\ell)\top} + \mathbf 1 b^{(\ell)\top})\big),
    \qquad H \in \mathbb{R}^{B\times n},$$

    one weight matrix per layer shared by the batch (drawn as in `jaxgrad.dense`), BN with
    γ = 1, β = 0; the state is vec(H), length Bn, so the engine's input is B independent
    $N(0, q_0 I_n)$ inputs. BN removes the bias and (up to ε) the scale σ_w exactly:
    $\mathrm{BN}(σ_w H W^\top) = \mathrm{BN}(H W^\top)$. Use ``method="vector"`` in
    `jaxgrad.simulate` for large B·n (no $Bn\times Bn$ matrix is formed).

    Arguments:
      width: n; depth: L; batch: B ≥ 2.
      activation, weights, sigma_w, sigma_b, dtype: as in `jaxgrad.mlp`; eps: BN's ε.

    Returns:
      A `Network` of L equal layers (one `lax.scan`).
    """
    width = _check_positive_int("width", width)
    depth = _check_positive_int("depth", depth)
    batch = _check_batch(batch)
    if weights not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown weight scheme weights={weights!r}; valid choices are {list(WEIGHT_SCHEMES)}")
    layer = _batch_norm_dense(
        width,
        batch,
        get_activation(activation),
        weights,
        _check_nonnegative("sigma_w", sigma_w),
        _check_nonnegative("sigma_b", sigma_b),
        _check_nonnegative("eps", eps),
        _check_float_dtype(dtype),
    )
    return serial(*[layer] * depth)

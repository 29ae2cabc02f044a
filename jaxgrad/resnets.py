r"""Residual networks with a depth-scaled branch, without normalisation or with pre-/post-norm.

Block ℓ of L computes, with branch scale $β = a L^{-α}$,

$$\text{none: } h + β f(h), \qquad \text{pre: } h + β f(\mathrm{N}(h)), \qquad
\text{post: } \mathrm{N}(h + β f(h)),$$

N a LayerNorm or RMSNorm (`jaxgrad.normalisation`), f a dense layer $φ(Wh + b)$
(``branch="dense"``) or a two-layer MLP $W_2 φ(W_1 h + b_1) + b_2$ (``branch="mlp"``). Its
Jacobian is $I + β J_f$, $I + β J_f J_N$ or $J_N (I + β J_f)$. α = 0 is the plain ResNet,
α = ½ the depth-μP scaling (Yang et al. 2023; Bordelon et al. 2023), α = 1 the
"CompleteP"/ODE-like limit; the closed forms for a linear branch are in
`jaxgrad.theory.residual`.

The residual sum is `jaxgrad.residual` (its scale coefficient is β); a block's scalars
(a, α, σ_w, σ_b) are `Hyper` values, so a sweep over them compiles once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxgrad.activations import Activation, get_activation
from jaxgrad.layers import (
    HIGHEST,
    WEIGHT_SCHEMES,
    Hyper,
    Layer,
    Network,
    _check_float_dtype,
    _check_nonnegative,
    _check_positive_int,
    dense,
    residual,
    serial,
    structure_of,
)
from jaxgrad.normalisation import DEFAULT_EPS, layer_norm, rms_norm

__all__ = ["BRANCHES", "NORMS", "NORM_TYPES", "branch_scale", "resnet"]

BRANCHES = ("dense", "mlp")
NORMS = (None, "pre", "post")
NORM_TYPES = ("layer", "rms")


class PairParams(NamedTuple):
    first: object
    second: object


def _prefixed(coefficients, prefix):
    return {f"{prefix}.{k}": v for k, v in coefficients.items()}


def _unprefixed(coefficients, prefix):
    start = f"{prefix}."
    return {k[len(start) :]: v for k, v in coefficients.items() if k.startswith(start)}


def _then(first: Layer, second: Layer, name: str) -> Layer:
    """The composite $h \\mapsto g(f(h))$ (f = `first`), Jacobian $J_g J_f$; coefficients prefixed "0."/"1."."""
    assert first.hyper is not None and second.hyper is not None  # jaxgrad's dense and norm layers carry one

    def build(c):
        init_f, apply_f, jac_f = first.hyper.build(_unprefixed(c, "0"))
        init_g, apply_g, jac_g = second.hyper.build(_unprefixed(c, "1"))

        def init(key):
            key_f, key_g = jax.random.split(key)
            return PairParams(init_f(key_f), init_g(key_g))

        def apply(params, h):
            return apply_g(params.second, apply_f(params.first, h))

        jacobian = None
        if jac_f is not None and jac_g is not None:

            def jacobian(params, h):
                J_f, y = jac_f(params.first, h)
                J_g, out = jac_g(params.second, y)
                return jnp.matmul(J_g, J_f, precision=HIGHEST), out

        return init, apply, jacobian

    coeffs = {**_prefixed(first.hyper.coefficients, "0"), **_prefixed(second.hyper.coefficients, "1")}
    hyper = Hyper({}, coeffs, ("then", structure_of(first), structure_of(second)), build, lambda: layer)
    init, apply, jacobian = build(coeffs)
    layer = Layer(
        init,
        apply,
        first.n_in,
        second.n_out,
        jacobian,
        homogeneous=first.homogeneous and second.homogeneous,
        name=name,
        hyper=hyper,
    )
    return layer


def branch_scale(depth: int, alpha: float, a: float = 1.0) -> float:
    """β = a·depth^(−α), the branch scale of a `resnet` of `depth` blocks."""
    return float(a) * float(depth) ** (-float(alpha))


def _check_scale(name, value, what) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` ({what}) must be a finite number, got {name}={value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"`{name}` ({what}) must be a finite number, got {name}={value!r}")
    return value


def _block(width, depth, branch, act, alpha, a, norm, norm_type, weights, sigma_w, sigma_b, eps, dtype) -> Layer:
    beta = branch_scale(depth, alpha, a)
    if branch == "dense":
        f = dense(width, width, activation=act, weights=weights, sigma_w=sigma_w, sigma_b=sigma_b, dtype=dtype)
    else:
        f = _then(
            dense(width, width, activation=act, weights=weights, sigma_w=sigma_w, sigma_b=sigma_b, dtype=dtype),
            dense(width, width, activation="linear", weights=weights, sigma_w=sigma_w, sigma_b=sigma_b, dtype=dtype),
            f"mlp({width}, {act.name})",
        )
    if norm is None:
        inner = residual(f, beta)
    else:
        N = (layer_norm if norm_type == "layer" else rms_norm)(width, eps=eps, dtype=dtype)
        if norm == "pre":
            inner = residual(_then(N, f, f"{f.name} ∘ {N.name}"), beta)
        else:  # "post" (`resnet` checked `norm`)
            inner = _then(residual(f, beta), N, f"{N.name} ∘ residual")
    values = {"a": a, "alpha": alpha, "sigma_w": sigma_w, "sigma_b": sigma_b}

    def rebuild(a=a, alpha=alpha, sigma_w=sigma_w, sigma_b=sigma_b):
        return _block(
            width,
            depth,
            branch,
            act,
            _check_scale("alpha", alpha, "the depth exponent"),
            _check_branch_a(a),
            norm,
            norm_type,
            weights,
            _check_nonnegative("sigma_w", sigma_w),
            _check_nonnegative("sigma_b", sigma_b),
            eps,
            dtype,
        )

    structure = ("resnet_block", width, branch, act, norm, norm_type, weights, eps, dtype)
    assert inner.hyper is not None  # residual and _then always carry one
    hyper = Hyper(values, dict(inner.hyper.coefficients), structure, inner.hyper.build, rebuild)
    where = "" if norm is None else f", {norm}-{norm_type}norm"
    return inner._replace(
        name=f"resnet block({branch}, {act.name}, β={beta:.4g} = {a:g}·{depth}^-{alpha:g}{where}, σ_w={sigma_w:g})",
        hyper=hyper,
    )


def _check_branch_a(a) -> float:
    a = _check_scale("a", a, "the prefactor of the branch scale β = a·depth^(−alpha)")
    if a < 0:
        raise ValueError(f"`a` (the branch scale β = a·depth^(−alpha)) must be non-negative, got a={a!r}")
    return a


def resnet(
    width: int = 64,
    depth: int = 256,
    branch: str = "dense",
    activation: str | Callable | Activation = "relu",
    alpha: float = 0.5,
    a: float = 1.0,
    norm: str | None = None,
    weights: str = "gaussian",
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
    *,
    norm_type: str = "layer",
    eps: float = DEFAULT_EPS,
    dtype: DTypeLike | None = None,
) -> Network:
    r"""A residual network of `depth` blocks with branch scale $β = a\,\mathrm{depth}^{-α}$.

    Arguments:
      width: n (≥ 2 with a norm).
      depth: L, the number of blocks (it sets β).
      branch: ``"dense"`` ($f = φ(Wh + b)$) or ``"mlp"`` ($f = W_2φ(W_1h + b_1) + b_2$).
      activation: φ, as in `jaxgrad.dense` (``"linear"`` gives the exactly solvable case).
      alpha: the depth exponent α (finite); a: the scale's prefactor (finite, ≥ 0).
      norm: None, ``"pre"`` or ``"post"``; norm_type: ``"layer"`` (LayerNorm) or ``"rms"``.
      weights, sigma_w, sigma_b, dtype: every dense layer's, as in `jaxgrad.dense`.
      eps: the norm's ε.

    Returns:
      A `Network` of L equal blocks (one `lax.scan`); the blocks' Hyper values are
      a, alpha, sigma_w, sigma_b (`jaxgrad.sweep` over any of them compiles once).

    Example:
      >>> net = resnet(width=64, depth=256, activation="linear", alpha=0.5)  # E‖h_L‖²/‖h_0‖² = (1 + 1/256)^256
    """
    depth = _check_positive_int("depth", depth)
    if branch not in BRANCHES:
        raise ValueError(f"unknown branch={branch!r}; valid choices are {list(BRANCHES)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm={norm!r}; valid choices are {list(NORMS)}")
    if norm_type not in NORM_TYPES:
        raise ValueError(f"unknown norm_type={norm_type!r}; valid choices are {list(NORM_TYPES)}")
    if weights not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown weight scheme weights={weights!r}; valid choices are {list(WEIGHT_SCHEMES)}")
    width = _check_positive_int("width", width)
    if norm is not None and width < 2:
        raise ValueError(
            f"a {norm}-norm resnet needs width ≥ 2: a width-1 state normalises to a constant, got width={width}"
        )
    block = _block(
        width,
        depth,
        branch,
        get_activation(activation),
        _check_scale("alpha", alpha, "the depth exponent"),
        _check_branch_a(a),
        norm,
        norm_type,
        weights,
        _check_nonnegative("sigma_w", sigma_w),
        _check_nonnegative("sigma_b", sigma_b),
        _check_nonnegative("eps", eps),
        _check_float_dtype(dtype),
    )
    return serial(*[block] * depth)

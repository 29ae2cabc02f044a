r"""Circular convolutions as jaxgrad `Layer`s on a (*spatial, channels) state.

The state $h \in \mathbb{R}^{N_1\times\cdots\times N_D\times C}$ (D = 1 or 2 spatial axes, C
channels) is carried flat (row-major, length $n = C\prod_a N_a$). With kernel taps
$t \in \{0,\dots,k-1\}^D$, centre $c = \lfloor (k-1)/2 \rfloor$ per axis and circular
(periodic) padding,

$$z[x, o] = \sum_t \sum_{i=1}^{C} W[t, i, o]\, h[(x + t - c) \bmod N, i] + b[o], \qquad h' = φ(z),$$

so $J = \mathrm{diag}(φ′(z))\,K_W$ with $K_W$ the block-circulant matrix of the kernel (`conv_matrix`;
its entries are the kernel's, so it is exact).

Kernels:

* ``gaussian``: $W[t, i, o] \sim N(0, σ_w^2/(k^D C))$ (fan-in), bias $b_o \sim N(0, σ_b^2)$;
* ``delta_orthogonal`` (Xiao et al. 2018, the delta-orthogonal initialisation): $W[c] = σ_w H$
  with H a Haar-random orthogonal C × C matrix, and $W[t] = 0$ at every other tap. Then
  $K_W = I_{\text{pixels}} \otimes σ_w H^\top$: every pixel is an orthogonal fully connected layer of
  width C with the same H and b, and a linear network's $J_L\cdots J_1$ has every singular value
  exactly $σ_w^L$ (`jaxgrad.theory.delta_orthogonal_log_singular_value`).

`fourier_mode_power` measures the fraction of a signal's power in each spatial Fourier mode,
the Fourier transform of its spatial correlation function (Wiener–Khinchin).

Reference: L. Xiao, Y. Bahri, J. Sohl-Dickstein, S. Schoenholz, J. Pennington, "Dynamical
isometry and a mean field theory of CNNs: how to train 10,000-layer vanilla convolutional neural
networks", ICML 2018.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxgrad.activations import Activation, derivative, get_activation
from jaxgrad.layers import (
    HIGHEST,
    Hyper,
    Layer,
    _check_float_dtype,
    _check_nonnegative,
    _check_positive_int,
    float_dtype,
    haar_orthogonal,
    standard_normal,
)

__all__ = ["CONV_WEIGHTS", "ConvParams", "conv", "conv_matrix", "convolve", "fourier_mode_power"]

CONV_WEIGHTS = ("gaussian", "delta_orthogonal")
_LETTERS = "DHW"


class ConvParams(NamedTuple):
    W: jax.Array  # (*kernel, C_in, C_out)
    b: jax.Array  # (C_out,)


def _centre(k: int) -> int:
    return (k - 1) // 2


def convolve(W: jax.Array, h: jax.Array, spatial: tuple[int, ...]) -> jax.Array:
    r"""$\sum_t W[t]^\top h[x + t - c]$ with circular padding; h of shape (*spatial, C), no bias."""
    kernel = W.shape[:-2]
    pad = [(_centre(k), k - 1 - _centre(k)) for k in kernel] + [(0, 0)]
    padded = jnp.pad(h, pad, mode="wrap")[None]
    letters = _LETTERS[-len(spatial) :]
    numbers = (f"N{letters}C", f"{letters}IO", f"N{letters}C")
    out = jax.lax.conv_general_dilated(
        padded, W, (1,) * len(spatial), "VALID", dimension_numbers=numbers, precision=HIGHEST
    )
    return out[0]


def conv_matrix(W: jax.Array, spatial: tuple[int, ...]) -> jax.Array:
    r"""The n × n matrix $K_W$ of `convolve` (row (x, o), column (x′, i)); its entries are W's, exactly."""
    kernel, (C_in, C_out) = W.shape[:-2], W.shape[-2:]
    pixels = math.prod(spatial)
    K = jnp.zeros((pixels, C_out, pixels, C_in), W.dtype)
    for t in itertools.product(*(range(k) for k in kernel)):
        shift: np.ndarray = np.eye(1, dtype=np.float64)
        for ta, k, N in zip(t, kernel, spatial):
            one = np.roll(np.eye(N), ta - _centre(k), axis=1)  # one[x, x'] = 1 iff x' = x + t − c (mod N)
            shift = np.kron(shift, one)
        K = K + jnp.asarray(shift, W.dtype)[:, None, :, None] * W[t].T[None, :, None, :]
    return K.reshape(pixels * C_out, pixels * C_in)


def fourier_mode_power(h: jax.Array, spatial: Sequence[int], channels: int) -> jax.Array:
    r"""Fraction of the signal's power in each spatial Fourier mode, shape `spatial` (sums to 1).

    $p_k = \sum_c |\hat h[k, c]|^2 / \sum_{k′,c} |\hat h[k′, c]|^2$ with $\hat h$ the DFT over the
    spatial axes: $p_k = \frac{1}{\prod N}\sum_Δ ρ(Δ)\,e^{-2πi\,k\cdot Δ/N}$, the DFT of the spatial
    correlation function $ρ(Δ) = \sum_{x,c} h[x,c]\,h[x+Δ,c] / \|h\|^2$ (Wiener–Khinchin), so $p_k$
    is the correlation of the signal carried by mode k. White noise has $p_k = 1/\prod N$; a
    spatially uniform signal has all its power in k = 0.
    """
    spatial = tuple(spatial)
    x = h.reshape(*spatial, channels)
    power = jnp.sum(jnp.abs(jnp.fft.fftn(x, axes=tuple(range(len(spatial))))) ** 2, axis=-1)
    return power / jnp.sum(power)


def _check_spatial(spatial) -> tuple[int, ...]:
    try:
        spatial = tuple(spatial) if np.ndim(spatial) else (spatial,)
    except TypeError:
        raise ValueError(
            f"`spatial` must be a tuple of 1 or 2 positive integers (the image size), got spatial={spatial!r}"
        ) from None
    if not 1 <= len(spatial) <= 3 or any(
        isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n <= 0 for n in spatial
    ):
        raise ValueError(
            f"`spatial` must be a tuple of 1 to 3 positive integers (the image size), got spatial={spatial!r}"
        )
    return tuple(int(n) for n in spatial)


def _check_kernel(kernel, spatial, weights) -> tuple[int, ...]:
    kernel = tuple(kernel) if np.ndim(kernel) else (kernel,) * len(spatial)
    if len(kernel) != len(spatial) or any(
        isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k <= 0 for k in kernel
    ):
        raise ValueError(
            f"`kernel` must be a positive integer or one per spatial axis ({len(spatial)}), got kernel={kernel!r}"
        )
    for k, N in zip(kernel, spatial):
        if k > N:
            raise ValueError(
                f"`kernel` size {k} is larger than the image (spatial={spatial}); valid sizes are "
                f"1..{N} along that axis"
            )
        if weights == "delta_orthogonal" and k % 2 == 0:
            raise ValueError(
                f"`kernel` size {k} is even, so it has no centre tap for weights='delta_orthogonal'; "
                f"use an odd size (1, 3, 5, …) or weights='gaussian'"
            )
    return tuple(int(k) for k in kernel)


def conv(
    channels: int = 8,
    spatial: Sequence[int] = (32,),
    kernel: int | Sequence[int] = 3,
    weights: str = "delta_orthogonal",
    activation: str | Callable | Activation = "tanh",
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
    *,
    dtype: DTypeLike | None = None,
) -> Layer:
    r"""A circular convolution $h \mapsto φ(W \star h + b)$ on a (*spatial, channels) state.

    See the module docstring for the kernels. σ_w and σ_b are data (`jaxgrad.layers.Hyper`):
    new values do not recompile, and `jaxgrad.sweep` scans them.

    Arguments:
      channels: C ≥ 1 (input = output channels).
      spatial: the image size, e.g. ``(32,)`` or ``(8, 8)``.
      kernel: the kernel size k (every axis) or one per axis, 1 ≤ k ≤ N; odd for delta-orthogonal.
      weights: ``"gaussian"`` or ``"delta_orthogonal"``.
      activation, sigma_w, sigma_b, dtype: as in `jaxgrad.dense`.

    Returns:
      A `Layer` of width $C\prod N$ with params `ConvParams(W, b)` and a closed-form Jacobian
      $\mathrm{diag}(φ′(z)) K_W$ (`conv_matrix`).
    """
    channels = _check_positive_int("channels", channels)
    spatial = _check_spatial(spatial)
    if weights not in CONV_WEIGHTS:
        raise ValueError(f"unknown kernel scheme weights={weights!r}; valid choices are {list(CONV_WEIGHTS)}")
    kernel = _check_kernel(kernel, spatial, weights)
    sigma_w = _check_nonnegative("sigma_w", sigma_w)
    sigma_b = _check_nonnegative("sigma_b", sigma_b)
    dtype = _check_float_dtype(dtype)
    act = get_activation(activation)
    phi, phi_prime = act.fn, derivative(act.fn)
    shape = (*spatial, channels)
    taps = math.prod(kernel)

    def build(c):
        def init(key) -> ConvParams:
            key_w, key_b = jax.random.split(key)
            dt = float_dtype(dtype)
            if weights == "delta_orthogonal":
                W = jnp.zeros((*kernel, channels, channels), dt)
                W = W.at[tuple(_centre(k) for k in kernel)].set(
                    c["w_scale"] * haar_orthogonal(key_w, channels, channels, dt)
                )
            else:
                W = c["w_scale"] * standard_normal(key_w, (*kernel, channels, channels), dt)
            return ConvParams(W, c["b_scale"] * standard_normal(key_b, (channels,), dt))

        def pre(params: ConvParams, h):
            return (convolve(params.W, h.reshape(shape), spatial) + params.b).reshape(-1)

        def apply(params: ConvParams, h):
            return phi(pre(params, h))

        def jacobian(params: ConvParams, h):
            z = pre(params, h)
            return phi_prime(z)[:, None] * conv_matrix(params.W, spatial), phi(z)

        return init, apply, jacobian

    def coefficients(sigma_w, sigma_b):
        scale = sigma_w if weights == "delta_orthogonal" else sigma_w / math.sqrt(taps * channels)
        return {"w_scale": scale, "b_scale": sigma_b}

    coeffs = coefficients(sigma_w, sigma_b)
    init, apply, jacobian = build(coeffs)
    n = channels * math.prod(spatial)
    return Layer(
        init,
        apply,
        n,
        n,
        jacobian,
        homogeneous=act.homogeneous and sigma_b == 0.0,
        name=f"conv(C={channels}, spatial={spatial}, k={kernel}, {weights}, {act.name}, σ_w={sigma_w:g}, "
        f"σ_b={sigma_b:g})",
        hyper=Hyper(
            {"sigma_w": sigma_w, "sigma_b": sigma_b},
            coeffs,
            ("conv", channels, spatial, kernel, weights, act, dtype),
            build,
            lambda sigma_w=sigma_w, sigma_b=sigma_b: conv(
                channels, spatial, kernel, weights, act, sigma_w, sigma_b, dtype=dtype
            ),
        ),
    )

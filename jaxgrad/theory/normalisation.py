r"""Normalisation layers: the exact spectrum of the LayerNorm/RMSNorm Jacobian and BatchNorm's gradient explosion.

**LayerNorm and RMSNorm (exact).** With $c = h - \bar h\mathbf 1$ (RMSNorm: $c = h$), $v = \|c\|^2/n$
and $s = \sqrt{v + ε}$, the normalisation $y = c/s$ (gain 1, bias 0) has Jacobian

$$J = \frac1s\Big(P - \frac{c c^\top}{n s^2}\Big), \qquad
  P = I - \tfrac1n\mathbf 1\mathbf 1^\top \ (\text{RMSNorm: } P = I).$$

J is symmetric; since $c \perp \mathbf 1$ (LayerNorm), $\mathbf 1$, $\hat c$ and their orthogonal
complement are its eigenspaces: eigenvalue 0 on $\mathbf 1$, $\frac1s(1 - \frac{v}{v+ε}) = ε/(v+ε)^{3/2}$ on
$\hat c$, and $1/s$ on the remaining $n-2$ directions (RMSNorm: $n-1$). A normalisation layer is
therefore a scaled projection: it divides every direction by the signal's r.m.s. $s ≈ \|c\|/\sqrt n$ and
removes the radial one (and the mean). In a product this means: **post-norm** $J_N(I + βJ_f)$ resets the
scale at every block (the factor $1/s$ undoes the growth of $\|h + βf\|$), **pre-norm**
$I + βJ_fJ_N(h)$ adds a branch whose weight $β/s_\ell$ falls as the residual stream grows.

**Pre-norm residual stream (exact for odd φ).** For the pre-norm block $h + βφ(W\,\mathrm{LN}(h))$,
$W_{ij}\sim N(0, σ_w^2/n)$ fresh per block, no bias, condition on h: $x = \mathrm{LN}(h)$ has
$\|x\|^2 = n\,v/(v+ε)$, so $z = Wx \sim N(0, σ_w^2\frac{v}{v+ε}I)$ whatever h is, and for odd φ the cross term
$E\,h\cdot φ(Wx)$ vanishes (W and −W have one law). Hence, up to the relative ε/v,

$$E\|h_\ell\|^2/n = q_0 + \ell\,β^2\,E[φ(σ_w z)^2], \quad z\sim N(0,1)$$

(`pre_norm_signal_variance`): the stream grows linearly, so the branch's weight β/s_ℓ in the
Jacobian $I + βJ_fJ_N$ falls as $1/\sqrt{\ell}$. For ReLU the cross term is not zero (mean drift); not closed here.

**BatchNorm (mean field, Yang et al. 2019).** For $H^{(\ell)} = φ(\mathrm{BN}(H^{(\ell-1)}W^\top))$ on a batch
of B inputs at width n → ∞, the batch Gram matrix converges to a permutation-symmetric fixed point
(BSB1) and $E\|δ\|^2$ grows backwards by a factor $λ_G$ per layer; σ_w and σ_b cancel exactly
($\mathrm{BN}(σ_w HW^\top + \mathbf 1b^\top) = \mathrm{BN}(HW^\top)$ up to ε). Two cases are closed here:

* ReLU, B → ∞: $λ_G = π/(π-1) ≈ 1.467$, i.e. $\tfrac12\ln\frac{π}{π-1} = 0.1916$ per layer in $\ln\|δ\|$
  (Yang et al. 2019). Heuristically: $E\|φ′ \odot δ\|^2 = \tfrac12\|δ\|^2$ while BN divides by the
  batch standard deviation of the next pre-activation,
  $σ_w^2\,\mathrm{Var}[\mathrm{relu}(z)] = σ_w^2(\tfrac12 - \tfrac1{2π})$.
* linear φ, finite B ≥ 4: $λ_G = (B-2)/(B-3)$ (our derivation). At the fixed point each feature's
  normalised pre-activation is $y = \sqrt B u$, u uniform on the unit sphere of $\mathbf 1^\perp$, and the
  feature's BN Jacobian is $\frac{\sqrt B}{r}(P - uu^\top)$ with $r^2 = \|Pz\|^2 = σ_w^2\frac{B}{B-1}χ^2_{B-1}$
  independent of u. With W in the backward pass independent of the forward one, the gradient
  covariance G ∝ P maps to $σ_w^2 B\,E[r^{-2}]\,E[(P-uu^\top)G(P-uu^\top)] = \frac{B-1}{B-3}\cdot\frac{B-2}{B-1}\,G$:
  $E\,r^{-2} \propto 1/(B-3)$ (Jensen: more than $1/(B-1)$) outweighs the projection's loss of one
  direction in B − 1. So even a linear batch-normalised network explodes, at
  $\tfrac12\ln\frac{B-2}{B-3} ≈ 1/(2B)$ per layer, which vanishes only as B → ∞; orthogonal weights do
  not change this (they change only $\|δ W\| = \|δ\|$'s fluctuations).

References: J. L. Ba, J. R. Kiros, G. E. Hinton, "Layer normalization", 2016; B. Zhang and R. Sennrich,
"Root mean square layer normalization", NeurIPS 2019; S. Ioffe and C. Szegedy, ICML 2015; G. Yang,
J. Pennington, V. Rao, J. Sohl-Dickstein, S. S. Schoenholz, "A mean field theory of batch
normalization", ICLR 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from jaxgrad.activations import Activation, get_activation
from jaxgrad.quadrature import gaussian_expectation

__all__ = [
    "NORM_KINDS",
    "batch_norm_gradient_factor",
    "batch_norm_gradient_rate",
    "norm_jacobian_singular_values",
    "pre_norm_signal_variance",
]

NORM_KINDS = ("layer", "rms")


def norm_jacobian_singular_values(h: ArrayLike, kind: str = "layer", eps: float = 1e-5) -> np.ndarray:
    r"""The singular values of the LayerNorm/RMSNorm Jacobian at input h, gain 1, in descending order (exact).

    $1/s$ (n − 2 times; RMSNorm n − 1), $ε/(v + ε)^{3/2}$ once, and 0 once (LayerNorm only),
    with $v = \|c\|^2/n$, $s = \sqrt{v + ε}$ (module docstring).

    Arguments:
      h: the input, shape (n,), n ≥ 2.
      kind: ``"layer"`` or ``"rms"``.
      eps: ε ≥ 0.
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"unknown kind={kind!r}; valid choices are {list(NORM_KINDS)}")
    h = np.asarray(h, np.float64)
    if h.ndim != 1 or h.size < 2:
        raise ValueError(f"`h` must be a vector of length ≥ 2, got shape {h.shape}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"`eps` must be finite and non-negative, got eps={eps!r}")
    n = h.size
    c = h - h.mean() if kind == "layer" else h
    v = float(c @ c) / n
    s = math.sqrt(v + eps)
    bulk = n - 2 if kind == "layer" else n - 1
    radial = eps / (v + eps) ** 1.5 if v + eps > 0 else 0.0
    values = [1.0 / s] * bulk + [radial] + ([0.0] if kind == "layer" else [])
    return np.sort(np.asarray(values))[::-1]


def batch_norm_gradient_factor(activation: str | Callable | Activation = "relu", batch: int | None = None) -> float:
    r"""$λ_G$: the factor by which $E\|δ\|^2$ grows per layer backwards in a batch-normalised network (n → ∞).

    ``batch=None``: the large-batch limit, π/(π−1) for ReLU (Yang et al. 2019) and 1 for the linear
    activation; a finite ``batch`` B ≥ 4, linear activation: $(B-2)/(B-3)$ (module docstring).
    Other cases are not closed here (a ValueError says so); σ_w and σ_b do not enter.
    """
    name = get_activation(activation).name
    if name not in ("relu", "linear"):
        raise ValueError(
            f"the BatchNorm gradient factor is closed here for activation 'relu' or 'linear', got {name!r}"
        )
    if batch is None:
        return math.pi / (math.pi - 1) if name == "relu" else 1.0
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 4:
        raise ValueError(f"`batch` must be an integer ≥ 4 (E 1/χ²_(B−1) is finite for B > 3), got batch={batch!r}")
    if name != "linear":
        raise ValueError(
            "the finite-batch factor is closed only for activation='linear'; use batch=None for "
            "ReLU's large-batch limit (the finite-batch correction is measured: experiments/"
            "batchnorm_explosion.py)"
        )
    return (batch - 2) / (batch - 3)


def batch_norm_gradient_rate(activation: str | Callable | Activation = "relu", batch: int | None = None) -> float:
    """½ ln λ_G: the growth of ln‖δ‖ per layer, backwards (ReLU, B → ∞: ½ ln(π/(π−1)) = 0.19159)."""
    return 0.5 * math.log(batch_norm_gradient_factor(activation, batch))


_ODD = ("linear", "tanh", "erf")


def pre_norm_signal_variance(
    activation: str | Callable | Activation, depth: ArrayLike, beta: float, sigma_w: float = 1.0, q0: float = 1.0
) -> np.ndarray:
    r"""$E\|h_\ell\|^2/n = q_0 + \ell β^2 E[φ(σ_w z)^2]$ for pre-norm blocks $h + βφ(W\,\mathrm{LN}(h))$.

    Exact in expectation (up to ε/v) for an odd φ and no bias, at every width.

    Arguments:
      activation: an odd activation: ``"linear"``, ``"tanh"`` or ``"erf"``.
      depth: ℓ (array allowed); beta: the branch scale β ≥ 0; sigma_w: σ_w ≥ 0; q0: $E h_{0,i}^2$ > 0.
    """
    act = get_activation(activation)
    if act.name not in _ODD:
        raise ValueError(
            f"`activation` must be odd ({', '.join(_ODD)}) for this closed form (the cross term "
            f"vanishes only then), got activation={act.name!r}"
        )
    for name, value in (("beta", beta), ("sigma_w", sigma_w)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"`{name}` must be finite and non-negative, got {name}={value!r}")
    if not (math.isfinite(q0) and q0 > 0):
        raise ValueError(f"`q0` must be finite and positive, got q0={q0!r}")
    second = float(gaussian_expectation(lambda z: act.fn(float(sigma_w) * z) ** 2))
    return float(q0) + np.asarray(depth, np.float64) * float(beta) ** 2 * second

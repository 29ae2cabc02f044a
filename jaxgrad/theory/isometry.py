r"""Dynamical isometry: the spread of the singular values of $J = J_L\cdots J_1$ at large width.

With $J_\ell = D_\ell W_\ell$, $D_\ell = \mathrm{diag}\,φ′(z^{(\ell)})$, and the signal at the
fixed point q*, the matrices $D_\ell^2$ and $W_\ell^\top W_\ell$ are asymptotically free, so
the S-transform of $JJ^\top$ is the product of theirs (Pennington, Schoenholz & Ganguli
2017). A spectrum with moments $m_1, m_2$ has $S(z) = m_1^{-1}(1 - z(m_2/m_1^2 - 1) + O(z^2))$,
so the normalised variances $v = m_2/m_1^2 - 1$ of the factors add:

$$E[λ] = χ_1^L, \qquad \mathrm{Var}[λ] = χ_1^{2L}\, L\left(\frac{μ_2}{μ_1^2} - 1 + v_W\right),$$

λ an eigenvalue of $JJ^\top$ (a squared singular value of J), $μ_k = E[φ′(\sqrt{q^*}z)^{2k}]$,
$v_W = 1$ for Gaussian weights (Marchenko–Pastur, $S = 1/(σ_w^2(1+z))$, i.e. $s_1 = -1$) and
$v_W = 0$ for orthogonal ones. At criticality this is PSG's $σ^2_{JJ^\top} = L(μ_2/μ_1^2 - 1 - s_1)$;
Pennington et al. 2018 give the full spectrum. Linear orthogonal networks are exact
isometries (variance 0); ReLU has $μ_2/μ_1^2 = 2$ and can never reach one.

References:
  J. Pennington, S. Schoenholz, S. Ganguli, "Resurrecting the sigmoid in deep learning
  through dynamical isometry: theory and practice", NeurIPS 2017.
  J. Pennington, S. Schoenholz, S. Ganguli, "The emergence of spectral universality in
  deep networks", AISTATS 2018.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
from jax.typing import ArrayLike

from jaxgrad.activations import Activation
from jaxgrad.layers import WEIGHT_SCHEMES
from jaxgrad.theory._checks import check_positive_integer
from jaxgrad.theory.mean_field import _clip_q, _float, _q_star, _resolve
from jaxgrad.theory.moments import gaussian_moments

__all__ = ["SCHEME_SCALE", "jacobian_spectrum_variance"]

Array = jax.Array
# Square layers: the factor turning each scheme's gain σ_w into the entries' σ_w·√n.
SCHEME_SCALE = {"gaussian": 1.0, "lecun": 1.0, "glorot": 1.0, "he": math.sqrt(2.0), "orthogonal": 1.0}


@functools.partial(jax.jit, static_argnums=0)
def _variance(act: Activation, free_variance_w, sigma_w, sigma_b, depth, q0):
    m = gaussian_moments(act)
    q = _clip_q(_q_star(act, sigma_w, sigma_b, q0))
    sigma_w, q, depth = _float(sigma_w, q, depth)
    mu1, mu2 = m.slope2(q), m.slope4(q)
    chi = sigma_w**2 * mu1
    return chi ** (2 * depth) * depth * (mu2 / mu1**2 - 1 + free_variance_w)


def jacobian_spectrum_variance(
    activation: str | Callable | Activation,
    weights: str,
    sigma_w: ArrayLike,
    sigma_b: ArrayLike,
    depth: ArrayLike,
    *,
    q0: ArrayLike = 1.0,
) -> Array:
    r"""Variance of the eigenvalues of $JJ^\top$ at large width, signal at q*
    (Pennington, Schoenholz & Ganguli 2017; Pennington et al. 2018).

    $$\mathrm{Var}[λ] = χ_1^{2L} L\,(μ_2/μ_1^2 - 1 + v_W), \quad v_W = 1 \text{ (Gaussian)},\ 0 \text{ (orthogonal)};$$
    the mean is $χ_1^L$ (`chi1` to the power L). See the module docstring.

    Arguments:
      activation: name, scalar JAX function or `Activation`.
      weights: a scheme of `jaxgrad.layers.WEIGHT_SCHEMES`, as in `jaxgrad.mlp`, for
        square layers: ``"he"`` means entries of variance $2σ_w^2/n$.
      sigma_w, sigma_b: non-negative scalars or arrays.
      depth: L, positive integer(s).
      q0: input variance per coordinate (the engine's ``q0``); q* is the fixed point the
        length map reaches from $q^{(1)} = σ_{\rm eff}^2 q_0 + σ_b^2$, with $σ_{\rm eff}$ the
        entries' scale times √n (√2 σ_w for ``"he"``), as in `mean_field.q_star`.

    Returns:
      The variance, broadcast over σ_w, σ_b and depth. For the finite-width simulation
      start the signal at q* (engine ``q0 = (q* - σ_b²)/σ_w²``); finite width adds a
      relative bias of order L/n (`product_moments_gaussian(..., width=n)` has it exactly
      for linear Gaussian layers).
    """
    if weights not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown weight scheme weights={weights!r}; valid choices are {list(WEIGHT_SCHEMES)}")
    act = _resolve(activation, sigma_w, sigma_b, q0)
    check_positive_integer("depth", depth)
    free_variance_w = 0.0 if weights == "orthogonal" else 1.0
    return _variance(act, free_variance_w, sigma_w * SCHEME_SCALE[weights], sigma_b, depth, q0)

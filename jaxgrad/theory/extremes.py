r"""The largest activation derivative of a layer: the law of $\max_i φ′(z_i)$, and E[φ′²], at finite width.

A dense layer's Jacobian is $J = \mathrm{diag}(φ′(z))W$ and the seed's bound
$\|J\|_2 \le \|\mathrm{diag}\,φ′(z)\|_2\|W\|_2$ carries the factor
$\|\mathrm{diag}\,φ′(z)\|_2 = \max_i|φ′(z_i)|$. For φ′ even and decreasing in |z| (tanh,
sigmoid) it is $φ′(\min_i|z_i|)$, and for n iid $z_i \sim N(0, q)$ the law of the minimum is
exact (order statistics, David & Nagaraja 2003):

$$P\big(\min_i|z_i| > \sqrt q\,u\big) = \mathrm{erfc}(u/\sqrt2)^n,$$

so the factor stays near φ′(0) until q is of order n² (one of n units is almost always
unsaturated), while the mean-field factor $E[φ′(z)^2]$ decays (for tanh like
$\tfrac43\sqrt{2/(πq)}$).

At finite width the pre-activations of one layer are not exactly $N(0, q)$: given the input h,
$z_i \sim N(0, q_s)$ iid with $q_s = σ_w^2 q_0 s + σ_b^2$, $s = \|h\|^2/(n q_0) \sim χ^2_n/n$ shared by
the n units; `input_norm_average` averages any such expectation over that scale mixture.

References: H. A. David, H. N. Nagaraja, "Order Statistics", 3rd ed., Wiley 2003.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from jaxgrad.activations import Activation, derivative, get_activation
from jaxgrad.quadrature import gaussian_expectation
from jaxgrad.theory._checks import check_nonnegative, check_positive_integer

__all__ = ["expected_max_derivative", "expected_mean_square_derivative", "input_norm_average"]


def expected_mean_square_derivative(activation: str | Activation, q: ArrayLike) -> np.ndarray:
    r"""$E[φ′(z)^2]$, $z \sim N(0, q)$, by Gaussian quadrature (`quadrature.gaussian_expectation`, float32 nodes).

    Returns:
      float64 array, the shape of q.
    """
    check_nonnegative("q", q)
    phi_prime = derivative(get_activation(activation).fn)
    return np.asarray(gaussian_expectation(lambda u: phi_prime(u) ** 2, np.asarray(q, np.float32)), np.float64)


def expected_max_derivative(
    activation: str | Activation, q: ArrayLike, width: int, *, nodes: int = 4001, power: int = 1
) -> np.ndarray:
    r"""$E\max_i φ′(z_i)$, or $E[(\max_i φ′(z_i))^p]$ for ``power`` p, over n iid $z_i \sim N(0, q)$.

    For φ′ even and decreasing in |z| (tanh, sigmoid), $\max_i φ′(z_i) = φ′(\sqrt q\,m)$ with
    $m = \min_i|z_i|/\sqrt q$, $P(m > u) = \mathrm{erfc}(u/\sqrt2)^n$ (order statistics, David &
    Nagaraja 2003), whose density is $n\,\mathrm{erfc}(u/\sqrt2)^{n-1}\sqrt{2/π}\,e^{-u^2/2}$:

    $$E\max_i φ′(z_i)^p = \int_0^\infty φ′(\sqrt q\,u)^p\; n\,\mathrm{erfc}(u/\sqrt2)^{n-1}\sqrt{2/π}\,e^{-u^2/2}\,du,$$

    by the trapezoid rule on [0, 12] with `nodes` nodes, normalised by the rule's integral of
    the density (φ′ evaluated in float32). ``power=2`` gives the second moment, hence the SE
    of a mean of max φ′ under this law.

    Arguments:
      activation: a name or `Activation` whose φ′ is even and decreasing in |z|.
      q: pre-activation variance(s), non-negative; any shape.
      width: n, the number of units.

    Returns:
      float64 array, the shape of q.
    """
    check_nonnegative("q", q)
    width = check_positive_integer("width", width, static=True)
    u = np.linspace(0.0, 12.0, nodes)
    erfc = np.array([math.erfc(x / math.sqrt(2)) for x in u])
    density = width * erfc ** (width - 1) * math.sqrt(2 / math.pi) * np.exp(-(u**2) / 2)
    q = np.asarray(q, np.float64)
    phi_prime = derivative(get_activation(activation).fn)
    values = np.asarray(phi_prime(jnp.asarray(np.sqrt(q)[..., None] * u, jnp.float32)), np.float64)
    return np.asarray(np.trapezoid(values**power * density, u, axis=-1) / np.trapezoid(density, u))


def input_norm_average(
    g: Callable[[np.ndarray], np.ndarray],
    sigma_w: ArrayLike,
    sigma_b: ArrayLike,
    q0: ArrayLike,
    width: int,
    *,
    nodes: int = 161,
) -> np.ndarray:
    r"""$E_s[g(q_s)]$, $q_s = σ_w^2 q_0 s + σ_b^2$, $s = \|h\|^2/(n q_0) \sim χ^2_n/n$, for $h \sim N(0, q_0 I_n)$.

    Given the input h of a dense layer, its pre-activations are iid $N(0, q_s)$; s is shared by
    the n units of a sample, so at finite width z is a Gaussian scale mixture, not exactly
    $N(0, σ_w^2 q_0 + σ_b^2)$. s has the Gamma(n/2, 2/n) density; the average is the trapezoid
    rule on $s \in [1 - 10\sqrt{2/n}, 1 + 10\sqrt{2/n}]$ (floored at 1e-9), normalised by the
    rule's integral of the density.

    Arguments:
      g: maps an array of variances to an array of expectations (e.g. `expected_max_derivative`
        at a fixed activation and width).
      sigma_w, sigma_b, q0: 1-D arrays of one length (or scalars), one average each.
      width: n.

    Returns:
      float64 array, one value per (σ_w, σ_b, q₀).
    """
    width = check_positive_integer("width", width, static=True)
    sigma_w, sigma_b, q0 = (np.atleast_1d(np.asarray(v, np.float64)) for v in (sigma_w, sigma_b, q0))
    half_width = 10.0 * math.sqrt(2.0 / width)
    s = np.linspace(max(1e-9, 1.0 - half_width), 1.0 + half_width, nodes)
    k = width / 2.0  # s ~ Gamma(shape n/2, scale 2/n)
    density = np.exp((k - 1) * np.log(s) - s * k + k * math.log(k) - math.lgamma(k))
    values = g(sigma_w[:, None] ** 2 * q0[:, None] * s + sigma_b[:, None] ** 2)  # (q, s)
    return np.trapezoid(values * density, s, axis=-1) / np.trapezoid(density, s)

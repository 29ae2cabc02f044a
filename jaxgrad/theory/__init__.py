r"""Closed-form predictions for products of layer Jacobians, each with its citation.

Mean field (`jaxgrad.theory.mean_field`): the length map and its fixed point
`q_star` (all of them, with their stability: `fixed_points`), the gradient factor `chi1`,
the order/chaos boundary `critical_sigma_w`, `depth_scales`, the transient
`signal_propagation` and the typical (log) gain `mean_field_log_gain`.

One convention: ``q0`` is always the variance per coordinate of the network's *input*, as
in `jaxgrad.simulate` (layer 1 has pre-activation variance $σ_w^2 q_0 + σ_b^2$), and every
fixed-point quantity is evaluated at the fixed point the iterates from there converge to.

Correlations (`jaxgrad.theory.correlation`): the correlation map of two inputs
`correlation_map`, its stable fixed point `c_star`, its slope there `chi_c` and the
depth scale `xi_c` (also ``depth_scales(...).xi_c``), and `correlation_transient`.

Random matrices (`jaxgrad.theory.random_matrix`): exact laws of $\ln\|J_L\cdots J_1 u\|$
for Gaussian linear (`gaussian_log_gain`, `gaussian_lyapunov_spectrum`) and He-ReLU
networks (`relu_log_gain`; every depth of a mixed-width network `relu_log_gain_moments`,
the exact density `relu_log_gain_density` by Fourier inversion of
`relu_layer_characteristic_function`), the Fuss–Catalan moments `product_moments_gaussian`,
the spectral norm of one Gaussian matrix (`marchenko_pastur_edge`, `tracy_widom_mean_norm`)
and the order-statistics bias of sorted Lyapunov exponents `lyapunov_sorting_bias`.

Extremes (`jaxgrad.theory.extremes`): the bound's factor $E\max_i φ′(z_i)$ at width n
(`expected_max_derivative`), the mean-field $E[φ′(z)^2]$ (`expected_mean_square_derivative`)
and the average over a finite-width input norm's χ² law (`input_norm_average`).

Residual branches (`jaxgrad.theory.residual`): the exact mean-square and log-normal laws of a
linear residual network with branch scale a·L^(−α) (`linear_residual_gain`, `linear_residual_log_gain`),
their depth limits (`residual_gain_limit`: e^{a²} for α = ½; `linear_residual_log_variance_limit`) and
the mean field of a ReLU branch (`mean_field_residual_gain`). Normalisation
(`jaxgrad.theory.normalisation`): the exact singular values of the LayerNorm/RMSNorm Jacobian
(`norm_jacobian_singular_values`) and BatchNorm's gradient explosion (`batch_norm_gradient_factor`,
`batch_norm_gradient_rate`: π/(π−1) for ReLU, Yang et al. 2019).

Dynamical isometry (`jaxgrad.theory.isometry`): `jacobian_spectrum_variance`, the
spread of the singular values of $J$ at large width, Gaussian vs orthogonal weights.

Attention and convolution (`jaxgrad.theory.attention`): Dong et al.'s bound on the residual from
token uniformity `attention_residual_log_bound` (cubic: `RANK_COLLAPSE_EXPONENT`), the uniform-attention
growth of the mean token with a residual branch `uniform_attention_mean_growth` and its token cosine
`uniform_attention_token_cosine` (Noci et al. 2022), and `delta_orthogonal_log_singular_value`
(Xiao et al. 2018).

The library never imports the engine; tests put each prediction beside
`jaxgrad.simulate` (tests/test_theory_mc.py) or beside an independent NumPy/SciPy
computation (tests/test_theory_laws.py).
"""

from jaxgrad.theory.attention import (
    RANK_COLLAPSE_EXPONENT,
    attention_residual_log_bound,
    delta_orthogonal_log_singular_value,
    uniform_attention_mean_growth,
    uniform_attention_token_cosine,
)
from jaxgrad.theory.correlation import c_star, chi_c, correlation_map, correlation_transient, depth_scales, xi_c
from jaxgrad.theory.extremes import expected_max_derivative, expected_mean_square_derivative, input_norm_average
from jaxgrad.theory.isometry import jacobian_spectrum_variance
from jaxgrad.theory.mean_field import (
    DepthScales,
    FixedPoint,
    Propagation,
    chi1,
    critical_sigma_w,
    fixed_points,
    mean_field_log_gain,
    q_star,
    signal_propagation,
)
from jaxgrad.theory.moments import GaussianMoments, gaussian_moments
from jaxgrad.theory.normalisation import (
    batch_norm_gradient_factor,
    batch_norm_gradient_rate,
    norm_jacobian_singular_values,
    pre_norm_signal_variance,
)
from jaxgrad.theory.random_matrix import (
    TW1_MEAN,
    LogGain,
    ReluLogGainMoments,
    critical_sigma_w_typical,
    gaussian_log_gain,
    gaussian_lyapunov_spectrum,
    lyapunov_sorting_bias,
    marchenko_pastur_edge,
    product_moments_gaussian,
    relu_layer_characteristic_function,
    relu_log_gain,
    relu_log_gain_density,
    relu_log_gain_moments,
    relu_zero_gain_probability,
    tracy_widom_mean_norm,
)
from jaxgrad.theory.residual import (
    ResidualLogGain,
    linear_residual_gain,
    linear_residual_log_gain,
    linear_residual_log_variance_limit,
    mean_field_residual_gain,
    residual_gain_limit,
)

__all__ = [
    "RANK_COLLAPSE_EXPONENT",
    "attention_residual_log_bound",
    "delta_orthogonal_log_singular_value",
    "uniform_attention_mean_growth",
    "uniform_attention_token_cosine",
    "DepthScales",
    "FixedPoint",
    "GaussianMoments",
    "LogGain",
    "Propagation",
    "ReluLogGainMoments",
    "ResidualLogGain",
    "TW1_MEAN",
    "batch_norm_gradient_factor",
    "batch_norm_gradient_rate",
    "pre_norm_signal_variance",
    "c_star",
    "chi1",
    "chi_c",
    "correlation_map",
    "correlation_transient",
    "critical_sigma_w",
    "critical_sigma_w_typical",
    "depth_scales",
    "expected_max_derivative",
    "expected_mean_square_derivative",
    "fixed_points",
    "gaussian_log_gain",
    "gaussian_lyapunov_spectrum",
    "gaussian_moments",
    "input_norm_average",
    "jacobian_spectrum_variance",
    "linear_residual_gain",
    "linear_residual_log_gain",
    "linear_residual_log_variance_limit",
    "lyapunov_sorting_bias",
    "marchenko_pastur_edge",
    "mean_field_log_gain",
    "mean_field_residual_gain",
    "norm_jacobian_singular_values",
    "product_moments_gaussian",
    "q_star",
    "relu_layer_characteristic_function",
    "relu_log_gain",
    "relu_log_gain_density",
    "relu_log_gain_moments",
    "relu_zero_gain_probability",
    "residual_gain_limit",
    "signal_propagation",
    "tracy_widom_mean_norm",
    "xi_c",
]

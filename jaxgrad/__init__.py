"""jaxgrad: vanishing and exploding gradients as products of Jacobians.

Backpropagation computes $δ^{(0)} = J_1^\\top \\cdots J_L^\\top δ^{(L)}$ with
$J_\\ell = \\mathrm{diag}(φ′(z^{(\\ell)}))\\,W^{(\\ell)}$; whether that product vanishes or
explodes is the many-dimensional version of $θ_t = (1-ηa)^t θ_0$.
"""
from jaxgrad import _xla_workarounds

_xla_workarounds.apply()  # before any JAX computation: see the module

from jaxgrad.activations import ACTIVATIONS, Activation, derivative, get_activation
from jaxgrad.jacobian import error_signals, layer_jacobians, weight_gradients
from jaxgrad.layers import (
    WEIGHT_SCHEMES,
    DenseParams,
    Layer,
    Network,
    dense,
    forward,
    mlp,
    residual,
    serial,
)
from jaxgrad.spectral import (
    lanczos_top_singular,
    log_product_norm,
    log_singular_values,
    log_spectral_norm,
    product,
    spectral_norm,
)

__version__ = "0.1.0"
from jaxgrad.engine import SimulationResult, lyapunov_spectrum, sample_keys, simulate
from jaxgrad import quadrature, theory, training
from jaxgrad.curvature import hessian_vector_product, top_hessian_eigenvalue

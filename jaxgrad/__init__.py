"""jaxgrad: vanishing and exploding gradients as products of Jacobians.

Backpropagation computes $δ^{(0)} = J_1^\\top \\cdots J_L^\\top δ^{(L)}$ with
$J_\\ell = \\mathrm{diag}(φ′(z^{(\\ell)}))\\,W^{(\\ell)}$; whether that product vanishes or
explodes is the many-dimensional version of $θ_t = (1-ηa)^t θ_0$.

The public API is listed in ``__all__``; modules: `layers` (pure layers and networks),
`jacobian`, `spectral`, `probes` (per-sample measurements), `ensemble` (the runner),
`engine` (`simulate`, `sweep`, `lyapunov_spectrum`), `theory`, `stats`, `store`,
`plotting`, `cluster` (multi-process control plane), `quadratic`, `recurrent` (RNN, GRU and
LSTM cells unrolled in time with tied weights), `normalisation` (RMSNorm, LayerNorm, BatchNorm),
`resnets` (residual networks with depth-scaled branches and pre-/post-norm), `transformer`
(self-attention on token states), `convolution` (circular convolutions, delta-orthogonal kernels),
`measures` (token similarity, Fourier modes, weight-gradient norms and product spectra at every depth).
"""

from jaxgrad import _xla_workarounds

_xla_workarounds.apply()  # before any JAX computation: see the module

from jaxgrad.activations import ACTIVATIONS, Activation, derivative, get_activation  # noqa: E402
from jaxgrad.jacobian import error_signals, layer_jacobians, weight_gradients  # noqa: E402
from jaxgrad.layers import (  # noqa: E402
    WEIGHT_SCHEMES,
    DenseParams,
    Hyper,
    Layer,
    Network,
    dense,
    forward,
    mlp,
    residual,
    serial,
)
from jaxgrad.spectral import (  # noqa: E402
    lanczos_top_singular,
    log_product_norm,
    log_singular_values,
    log_spectral_norm,
    product,
    spectral_norm,
)
from jaxgrad import ensemble, probes, verify  # noqa: E402
from jaxgrad.engine import (  # noqa: E402
    AUTO_MATRIX_FREE_ABOVE,
    NonFiniteWarning,
    SimulationResult,
    choose_method,
    draw_inputs,
    draw_params,
    log_spaced_depths,
    lyapunov_spectrum,
    sample_keys,
    simulate,
    sweep,
)
from jaxgrad.ensemble import run as run_ensemble  # noqa: E402
from jaxgrad import adapters, quadrature, stats, theory, training  # noqa: E402
from jaxgrad.curvature import hessian_vector_product, top_hessian_eigenvalue  # noqa: E402
from jaxgrad import recurrent  # noqa: E402
from jaxgrad.recurrent import rnn  # noqa: E402
from jaxgrad import normalisation, resnets  # noqa: E402
from jaxgrad.normalisation import batch_norm, batch_norm_mlp, layer_norm, rms_norm  # noqa: E402
from jaxgrad.resnets import resnet  # noqa: E402
from jaxgrad import convolution, measures, transformer  # noqa: E402
from jaxgrad.convolution import conv  # noqa: E402
from jaxgrad.transformer import attention  # noqa: E402
from jaxgrad import critical  # noqa: E402
from jaxgrad.critical import CriticalPoint, critical_point  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "AUTO_MATRIX_FREE_ABOVE",
    "Activation",
    "CriticalPoint",
    "critical",
    "critical_point",
    "adapters",
    "attention",
    "batch_norm",
    "batch_norm_mlp",
    "DenseParams",
    "Hyper",
    "Layer",
    "Network",
    "NonFiniteWarning",
    "SimulationResult",
    "WEIGHT_SCHEMES",
    "choose_method",
    "conv",
    "convolution",
    "dense",
    "derivative",
    "draw_inputs",
    "draw_params",
    "ensemble",
    "error_signals",
    "forward",
    "get_activation",
    "hessian_vector_product",
    "lanczos_top_singular",
    "layer_jacobians",
    "layer_norm",
    "log_product_norm",
    "log_singular_values",
    "log_spaced_depths",
    "log_spectral_norm",
    "lyapunov_spectrum",
    "measures",
    "mlp",
    "normalisation",
    "probes",
    "product",
    "quadrature",
    "recurrent",
    "residual",
    "resnet",
    "resnets",
    "rms_norm",
    "rnn",
    "run_ensemble",
    "sample_keys",
    "serial",
    "simulate",
    "spectral_norm",
    "stats",
    "sweep",
    "theory",
    "transformer",
    "top_hessian_eigenvalue",
    "training",
    "verify",
    "weight_gradients",
]

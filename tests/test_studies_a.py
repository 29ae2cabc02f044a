"""Smoke runs of the §2–§4 studies at tiny sizes: the whole protocol, figures included."""

import numpy as np
import pytest

from experiments import backprop_chain, bound_tightness, depth_sweep, saturation, weight_norm
from tests.helpers import run_study_at_a_tiny_size

TINY = {
    backprop_chain: backprop_chain.Config(samples=4, architectures=("tanh_d4_w16", "gelu_d8_rect")),
    depth_sweep: depth_sweep.Config(width=8, depth=6, samples=32, histogram_depths=(3, 6)),
    bound_tightness: bound_tightness.Config(width=8, depth=12, samples=16),
    saturation: saturation.Config(width=8, samples=16, n_q=3, histogram_q=(0.1, 10.0)),
    # 8 compiles, not 16
    weight_norm: weight_norm.Config(widths=(4,), rectangular_in=4, rectangular_out=(8,), samples=16),
}


@pytest.mark.slow
@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_study_runs_end_to_end_at_a_tiny_size(module, tmp_path):
    run_study_at_a_tiny_size(module, TINY[module], tmp_path)


def test_depth_sweep_theory_is_exact_where_claimed():
    config = depth_sweep.Config.quick()
    n, eps = config.width, float(np.finfo(np.float32).eps)
    linear = depth_sweep.predictions(config, "linear")
    # Newman's λ₁ = ½(ln(2/n) + ψ(n/2)); with ψ(x) = ln x − 1/(2x) − 1/(12x²) + 1/(120x⁴) − …
    # it is −1/(2n) − 1/(6n²) + 1/(15n⁴) − …: the next term, 1.8e-9 at n = 64, bounds the
    # truncation. In float32, ln(2/n) + ψ(n/2) cancels two numbers of size ln(n/2) = 3.47:
    # a few roundings of that, 8ε·ln(n/2) ≈ 3.3e-6, bound the computed value's error.
    expansion = -1 / (2 * n) - 1 / (6 * n**2)
    assert linear["lyapunov"] == pytest.approx(expansion, abs=8 * eps * np.log(n / 2) + 1 / (15 * n**4))
    assert linear["lyapunov"] != pytest.approx(-1 / (2 * n), abs=1 / (12 * n**2))  # the 1/n² term is there
    # critical_sigma_w bisects ln χ₁ to the last float32 bit of σ_w; χ₁ is linear in σ_w there
    # (σ_b > 0) and its quadrature rounds to a few ε: |½ ln χ₁| ≤ 32ε (theory's 64ε "equal").
    assert depth_sweep.predictions(config, "tanh_critical")["half_log_chi1"] == pytest.approx(0.0, abs=32 * eps)


# saturation's max-φ′ law and weight_norm's Tracy–Widom mean are tested in tests/test_theory_laws.py.


@pytest.mark.parametrize(
    "module,field,value",
    [
        (depth_sweep, "width", 1),
        (bound_tightness, "samples", 0),
        (saturation, "q_max", -1.0),
        (weight_norm, "sigma_w", 0.0),
        (backprop_chain, "architectures", ("nope",)),
    ],
)
def test_bad_config_values_are_value_errors_naming_the_field(module, field, value):
    import dataclasses

    with pytest.raises(ValueError, match=field):
        dataclasses.replace(module.Config.quick(), **{field: value})

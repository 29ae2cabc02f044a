"""Smoke runs of the training studies (trainability, edge of stability) at tiny sizes, and their config checks."""

import dataclasses

import numpy as np
import pytest

from experiments import edge_of_stability, trainability
from tests.helpers import run_study_at_a_tiny_size

TINY = {
    edge_of_stability: edge_of_stability.Config(
        n_images=32,
        width=8,
        depth=1,
        steps=20,
        record_every=10,
        lanczos_steps=4,
        learning_rates=(0.1,),
        momentum_learning_rates=(0.1,),
        seeds=2,
    ),
    # depth 2 trains in 40 steps, depth 40 does not: every column has a closed bracket, so comparisons exist
    trainability: trainability.Config(
        width=8,
        depths=(2, 40),
        sigma_w2=(1.0, 1.761, 4.0),
        steps=40,
        batch_size=64,
        learning_rate=1e-2,
        theory_points=5,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_study_runs_end_to_end_at_a_tiny_size(module, tmp_path):
    config = TINY[module]
    data, comparisons = run_study_at_a_tiny_size(module, config, tmp_path)
    assert all(c.tolerance > 0 for c in comparisons)
    if module is trainability:
        assert data["accuracy"].shape == (2, 3) and np.all((data["accuracy"] >= 0) & (data["accuracy"] <= 1))
        assert data["xi_c"][1] > 100 * data["xi_c"][0]  # the middle column sits at the order/chaos boundary
    else:
        assert data["gd_sharpness"].shape == (1, 2, 3) and np.all(np.isfinite(data["gd_sharpness"]))


@pytest.mark.parametrize(
    "module,field,value",
    [
        (trainability, "depths", (9, 6)),
        (trainability, "threshold", 0.05),
        (trainability, "learning_rate", 0.0),
        (edge_of_stability, "record_every", 7),
        (edge_of_stability, "learning_rates", (0.1, -1.0)),
        (edge_of_stability, "momentum", 1.0),
    ],
)
def test_bad_config_values_are_value_errors_naming_the_field(module, field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(module.Config.quick(), **{field: value})


@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_presets_are_valid_and_full_is_larger(module):
    quick, full = module.Config.quick(), module.Config.full()
    assert quick != full and len(module.points(full)) >= len(module.points(quick))


def test_shape_fit_recovers_the_constant_of_a_boundary_proportional_to_xi_c():
    xi = np.array([1.8, 3.6, 7.0, 12.0])
    fit = trainability.fit_constant(np.log(8.0 * xi), xi, ceiling=np.inf, tolerance=np.log(1.46))
    assert fit.k == pytest.approx(8.0, rel=1e-3) and np.all(np.abs(fit.deviation) < 1e-3) and fit.xi_bound.all()
    lo, hi = fit.consistent
    assert lo < 8.0 < hi and hi / lo == pytest.approx(1.46**2, rel=1e-3)


def test_shape_fit_caps_at_the_budget_ceiling_and_fails_where_no_constant_fits():
    xi = np.array([1.84, 3.63, 6.98])
    capped = trainability.fit_constant(np.log([11.0, 21.8, 32.0]), xi, ceiling=32.0, tolerance=np.log(1.46))
    assert capped.k == pytest.approx(6.0, rel=2e-2) and list(capped.xi_bound) == [True, True, False]
    # width 32's boundaries (ordered side at ~10ξ_c, chaotic side at ~3ξ_c): no one k within one grid step
    width_32 = trainability.fit_constant(np.log([22.6, 32.0, 22.6]), xi, ceiling=45.3, tolerance=np.log(1.46))
    assert np.isnan(width_32.consistent[0]) and np.abs(width_32.deviation).max() > np.log(1.46)
    # a boundary flat in σ_w² (no ξ_c dependence) does not fit either
    xi_wide = np.array([1.84, 7.83, 25.2])
    flat = trainability.fit_constant(np.log([20.0, 20.0, 20.0]), xi_wide, ceiling=np.inf, tolerance=np.log(1.46))
    assert np.isnan(flat.consistent[0])


def test_shape_fit_names_bad_shapes():
    with pytest.raises(ValueError, match="log_depth"):
        trainability.fit_constant(np.zeros(3), np.ones(2), ceiling=np.inf, tolerance=0.3)

"""Smoke runs of the training studies (trainability, edge of stability) at tiny sizes, and their config checks."""
import dataclasses

import numpy as np
import pytest

from experiments import edge_of_stability, trainability
from tests.helpers import run_study_at_a_tiny_size

TINY = {
    edge_of_stability: edge_of_stability.Config(n_images=32, width=8, depth=1, steps=20, record_every=10,
                                                lanczos_steps=4, learning_rates=(0.1,),
                                                momentum_learning_rates=(0.1,), seeds=2),
    # depth 2 trains in 40 steps, depth 40 does not: every column has a closed bracket, so comparisons exist
    trainability: trainability.Config(width=8, depths=(2, 40), sigma_w2=(1.0, 1.761, 4.0), steps=40, batch_size=64,
                                      learning_rate=1e-2, theory_points=5),
}


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


@pytest.mark.parametrize("module,field,value", [
    (trainability, "depths", (9, 6)), (trainability, "threshold", 0.05), (trainability, "learning_rate", 0.0),
    (edge_of_stability, "record_every", 7), (edge_of_stability, "learning_rates", (0.1, -1.0)),
    (edge_of_stability, "momentum", 1.0)])
def test_bad_config_values_are_value_errors_naming_the_field(module, field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(module.Config.quick(), **{field: value})


@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_presets_are_valid_and_full_is_larger(module):
    quick, full = module.Config.quick(), module.Config.full()
    assert quick != full and len(module.points(full)) >= len(module.points(quick))

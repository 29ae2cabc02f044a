"""Smoke runs of the rank_collapse and delta_orthogonal studies (issue 15) at tiny sizes."""

import dataclasses

import numpy as np
import pytest

from experiments import delta_orthogonal, rank_collapse
from tests.helpers import run_study_at_a_tiny_size

TINY = {
    rank_collapse: rank_collapse.Config(tokens=4, width=4, samples=32, pure_depth=4, depths=(2, 4)),
    delta_orthogonal: delta_orthogonal.Config(
        channels=2, deep_pixels=3, depths=(10, 1000), deep_samples=2, pixels=4, product_depths=(2,), samples=16
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_study_runs_end_to_end_at_a_tiny_size(module, tmp_path):
    config = TINY[module]
    data, comparisons = run_study_at_a_tiny_size(module, config, tmp_path)
    assert all(c.tolerance > 0 for c in comparisons)
    if module is delta_orthogonal:
        assert data["deep_linear_delta_orthogonal_log_stretches"].shape == (2, 2, 6)
        assert data["isometry_svd_deviation"].shape == (1,) and data["isometry_svd_deviation"][0] < 1e-4 * 1000
    else:
        assert data["token_cosine"].shape == (32, 5) and np.all(data["token_cosine"][:, 0] < 1)
        assert data["L4_softmax_scaled_cosine"].shape == (32, 5)


@pytest.mark.parametrize(
    "module,field,value",
    [
        (rank_collapse, "depths", (4, 6)),
        (rank_collapse, "heads", 3),
        (rank_collapse, "tokens", 1),
        (delta_orthogonal, "depths", (10, 100)),
        (delta_orthogonal, "sigma_b", 0.0),
        (delta_orthogonal, "channels", 0),
    ],
)
def test_bad_config_values_are_value_errors_naming_the_field(module, field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(module.Config.quick(), **{field: value})


@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_presets_are_valid_and_full_is_larger(module):
    quick, full = module.Config.quick(), module.Config.full()
    expected = (lambda c: 1 + len(c.depths)) if module is rank_collapse else (lambda c: 8)
    for config in (quick, full):
        points = module.points(config)
        assert len(points) == expected(config) and len({repr(sorted(p.items())) for p in points}) == len(points)
    for field in ("samples", "channels", "tokens", "width"):
        if hasattr(quick, field):
            assert getattr(full, field) > getattr(quick, field), field

"""Smoke runs of the §3/§5 studies (phase diagram, dynamical isometry, finite width, Lyapunov) at tiny sizes."""

import dataclasses

import numpy as np
import pytest

from experiments import dynamical_isometry, finite_width, lyapunov, phase_diagram
from tests.helpers import run_study_at_a_tiny_size

# Each distinct network compiles once (seconds on a CPU), so every tiny config builds two.
TINY = {
    phase_diagram: phase_diagram.Config(
        sigma_w=(0.8, 1.6), sigma_b=(0.3,), width=8, depth=8, fit_start=3, samples=16, theory_points=9
    ),
    dynamical_isometry: dynamical_isometry.Config(width=8, depths=(1, 3), samples=8, activations=("linear",)),
    finite_width: finite_width.Config(
        widths=(4,), mixed_widths=(), depth=4, density_depths=(2, 4), samples=64, grid_points=101
    ),
    lyapunov: lyapunov.Config(
        linear_widths=(4,),
        linear_depth=8,
        linear_samples=16,
        tanh_width=4,
        tanh_depth=8,
        tanh_samples=16,
        tanh_sigma_w=(1.0,),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_study_runs_end_to_end_at_a_tiny_size(module, tmp_path):
    config = TINY[module]
    data, comparisons = run_study_at_a_tiny_size(module, config, tmp_path)
    assert all(c.tolerance > 0 for c in comparisons)
    SHAPES[module](config, data)


def _phase_diagram_shapes(config, data):
    shape = (len(config.sigma_b), len(config.sigma_w))
    for key in ("grid_slope", "grid_rate_ms", "grid_predicted_rate", "grid_correction", "grid_compile_seconds"):
        assert data[key].shape == shape and np.all(np.isfinite(data[key])), key
    assert data["mean_log_backward_gain"].shape == shape + (config.depth,)
    assert np.all(data["grid_correction"] < 0)  # Jensen: E ln sits below ½ ln E


def _dynamical_isometry_shapes(config, data):
    for w in dynamical_isometry.WEIGHTS:
        log10_sv = data[f"log10_sv_linear_{w}"]
        assert log10_sv.shape == (config.samples, len(config.depths), config.width) and np.all(np.isfinite(log10_sv))
    assert np.allclose(data["log10_sv_linear_orthogonal"], 0.0, atol=1e-5)  # σ_w = 1: every σ_i = 1


def _finite_width_shapes(config, data):
    for d in config.density_depths:
        density = data[f"net0_L{d}_density"]
        assert density.shape == (config.grid_points,) and np.all(np.isfinite(density)) and density.min() >= 0
    assert data["net0_variance"].shape == (config.depth,) and np.all(np.isfinite(data["net0_variance"]))


def _lyapunov_shapes(config, data):
    n = config.linear_widths[0]
    assert data[f"gaussian_{n}_mean"].shape == (n,) and np.all(np.diff(data[f"gaussian_{n}_mean"]) <= 0)
    assert data["tanh_spectra"].shape == (len(config.tanh_sigma_w), config.tanh_width)
    assert np.all(np.isfinite(data["tanh_top"]))


SHAPES = {
    phase_diagram: _phase_diagram_shapes,
    dynamical_isometry: _dynamical_isometry_shapes,
    finite_width: _finite_width_shapes,
    lyapunov: _lyapunov_shapes,
}


# The closed forms these studies use (the He-ReLU law, the sorting bias) are tested in
# tests/test_theory_laws.py.


@pytest.mark.parametrize(
    "module,field,value",
    [
        (phase_diagram, "fit_start", 1),
        (phase_diagram, "sigma_w", (1.0, 0.5)),
        (dynamical_isometry, "depths", (4, 2)),
        (dynamical_isometry, "activations", ("gelu",)),
        (finite_width, "mixed_widths", (8,)),
        (finite_width, "density_depths", (999,)),
        (lyapunov, "tanh_sigma_b", 0.0),
        (lyapunov, "linear_depth", 1),
    ],
)
def test_bad_config_values_are_value_errors_naming_the_field(module, field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(module.Config.quick(), **{field: value})


# What each study's points are: its grid, counted from the config (a `points` that drops or
# repeats a point fails this, which a `>=` between presets would not catch).
EXPECTED_POINTS = {
    phase_diagram: lambda c: len(c.sigma_b),  # one point per σ_b row: its σ_w values are one jaxgrad.sweep
    dynamical_isometry: lambda c: len(c.activations) * len(dynamical_isometry.WEIGHTS),
    finite_width: lambda c: len(c.widths) + (1 if c.mixed_widths else 0),
    lyapunov: lambda c: len(c.linear_widths) + len(c.tanh_sigma_w),
}


def _largest(config, word):
    """The largest integer in the config fields whose name contains `word` (samples, width, depth)."""
    values = []
    for field in dataclasses.fields(config):
        if word in field.name:
            v = getattr(config, field.name)
            values += [x for x in (v if isinstance(v, tuple) else (v,)) if isinstance(x, int)]
    return max(values)


@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_presets_are_valid_and_full_is_larger(module):
    quick, full = module.Config.quick(), module.Config.full()
    for config in (quick, full):
        points = module.points(config)
        assert len(points) == EXPECTED_POINTS[module](config)
        assert len({repr(sorted(p.items())) for p in points}) == len(points)  # no point twice
    for word in ("samples", "width", "depth"):  # full runs more samples on bigger, deeper networks
        assert _largest(full, word) > _largest(quick, word), word

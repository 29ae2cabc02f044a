"""Smoke runs of the issue-14 studies (residual_scaling, normalisation, batchnorm_explosion) at tiny sizes,
their bad-config errors and their presets."""

import dataclasses

import numpy as np
import pytest

from experiments import batchnorm_explosion, normalisation, residual_scaling
from tests.helpers import run_study_at_a_tiny_size

TINY = {
    residual_scaling: residual_scaling.Config(width=4, samples=16, depths=(2, 8), activations=("linear",)),
    normalisation: normalisation.Config(width=4, depth=4, samples=8, activations=("tanh",), norms=("pre", "post")),
    batchnorm_explosion: batchnorm_explosion.Config(
        batches=(4, 5, 6),
        width_per_batch=1,
        min_width=4,
        depth=6,
        fit_start=1,
        samples=4,
        sigma_ws=(1.0, 2.0),
        linear_batches=(),
        linear_width=4,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_study_runs_end_to_end_at_a_tiny_size(module, tmp_path):
    config = TINY[module]
    data, comparisons = run_study_at_a_tiny_size(module, config, tmp_path)
    assert comparisons and all(c.tolerance > 0 for c in comparisons)
    if module is residual_scaling:
        x = data["linear_log_forward_gain"]
        assert x.shape == (len(config.alphas), len(config.depths), config.samples) and np.all(np.isfinite(x))
    if module is batchnorm_explosion:
        assert data["fit"].shape == (3,) and np.all(np.isfinite(data["fit_se"]))
        assert data["rate_relu_gaussian_4"].shape == (len(config.sigma_ws), config.samples)
    if module is normalisation:  # the post-LN stream has ‖h‖ = √n exactly (up to ε)
        np.testing.assert_allclose(data["tanh_post_log_signal_norm"], 0.5 * np.log(config.width), atol=1e-4)


@pytest.mark.parametrize(
    "module,field,value",
    [
        (residual_scaling, "depths", (8, 4)),
        (residual_scaling, "a", -1.0),
        (residual_scaling, "activations", ("gelu",)),
        (residual_scaling, "alphas", (-0.5,)),
        (normalisation, "activations", ("sigmoid",)),
        (normalisation, "a", 0.0),
        (normalisation, "width", 1),
        (normalisation, "norms", ("layer",)),
        (batchnorm_explosion, "batches", (2, 8, 16)),
        (batchnorm_explosion, "batches", (8, 16)),
        (batchnorm_explosion, "sigma_ws", (0.5, 2.0)),
        (batchnorm_explosion, "fit_start", 39),
        (batchnorm_explosion, "linear_weights", ("xavier",)),
    ],
)
def test_bad_config_values_are_value_errors_naming_the_field(module, field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(module.Config.quick(), **{field: value})


def test_residual_scaling_reads_every_depth_from_one_sweep_of_the_deepest_network():
    config = residual_scaling.Config.quick()
    betas, index = residual_scaling._scales(config)
    # α = 0 has one β = a for every depth, and equal β are shared (α = 1, L = 4 and α = ½, L = 16: ¼)
    assert len(betas) == len(set(betas)) == 9 and betas[index[(1.0, 4)]] == betas[index[(0.5, 16)]]
    assert betas[index[(0.5, 64)]] == pytest.approx(1 / 8) and betas[index[(1.0, 4)]] == pytest.approx(0.25)


@pytest.mark.parametrize("module", list(TINY), ids=lambda m: m.NAME)
def test_presets_are_valid_and_full_is_larger(module):
    quick, full = module.Config.quick(), module.Config.full()
    assert len(module.points(full)) >= len(module.points(quick))
    assert full.samples > quick.samples


def test_residual_scaling_figures_draw_without_warnings_at_the_quick_depths(tmp_path):
    """α = 0's law (1 + a²)^L reaches ~1e308 at L = 1,024; drawing it must not overflow matplotlib's
    autoscaling (it warned during every `reproduce`; warnings are errors in this suite)."""
    config = residual_scaling.Config.quick()
    assert max(config.depths) == 1024
    rng = np.random.default_rng(0)
    shape = (len(config.alphas), len(config.depths), 8)
    fields = ("log_spectral_norm", "log_forward_gain", "log_backward_gain")
    results = [({"activation": act}, {f: rng.normal(size=shape) for f in fields}) for act in config.activations]
    _, data = residual_scaling.summarize(config, results)
    figures = residual_scaling.plot(data, config, tmp_path)
    assert [f.stem for f in figures] == ["norms_vs_depth", "plateau"]

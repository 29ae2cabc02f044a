"""The critical_init study: its training loop, its mean field, its config checks, and a smoke run at a tiny size."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from jaxgrad import theory
from experiments import critical_init
from tests.helpers import run_study_at_a_tiny_size

pytest.importorskip("equinox")

# A few steps of a tiny model: enough for the loss to fall, small enough for the fast tier.
TINY_TRAINING = critical_init.Config(
    width=8, depth=4, steps=30, record_every=10, batch_size=32, learning_rate=1e-2, seeds=3, test_size=200
)

TINY = critical_init.Config(
    width=8,
    depth=8,
    samples=16,
    bracket_points=5,
    steps=40,
    record_every=20,
    batch_size=32,
    learning_rate=3e-3,
    seeds=2,
    test_size=200,
    powers=(-1, 0, 1),
    residual_gelu_bracket=(1.0, 2.5),
)  # away from s → 0, where the rate's noise can cross 0


@pytest.mark.parametrize("model", ["tanh_mlp", pytest.param("residual_gelu", marks=pytest.mark.slow)])
def test_training_lowers_the_test_loss_and_a_seed_does_not_depend_on_its_neighbours(model):
    key = jax.random.key(3)
    three = critical_init.train(model, TINY_TRAINING, key, [0.7, 1.0])
    loss = three["loss"]  # (scales, seeds, records)
    assert loss.shape == (2, 3, 4) and np.all(np.isfinite(loss)) and np.all(three["diverged_at"] == -1)
    assert np.all(loss[..., -1] < loss[..., 0] - 0.1)  # every run learns something in 30 Adam steps at η = 1e-2
    assert np.all((three["accuracy"] >= 0) & (three["accuracy"] <= 1))
    # other scales are other traced values, not another program
    program = critical_init._program(model, 8, 4, 30, 10, 32, 1e-2)
    compiled = program._cache_size()
    other = critical_init.train(model, TINY_TRAINING, key, [1.0, 2.0])
    assert program._cache_size() == compiled
    # seed i's run is fold_in(key, i) alone: the same with fewer seeds and another scale beside it
    two = critical_init.train(model, TINY_TRAINING, key, [1.0, 3.0], seeds=2)
    for runs in (two, other):
        np.testing.assert_allclose(runs["loss"][0, :2], three["loss"][1, :2], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(
            runs["accuracy"][0, :2], three["accuracy"][1, :2], atol=1.5 / TINY_TRAINING.test_size
        )


def test_scale_one_is_equinox_default_initialisation():
    import equinox as eqx

    make = critical_init.blocks(8)["tanh_mlp"]
    block, reference = make(jax.random.key(5), 1.0), eqx.nn.Linear(8, 8, key=jax.random.key(5))
    np.testing.assert_array_equal(block.linear.weight, reference.weight)
    np.testing.assert_array_equal(make(jax.random.key(5), 2.5).linear.bias, 2.5 * reference.bias)


def test_mean_field_rate_of_the_tanh_mlp_is_half_log_chi1_of_theory():
    # an independent path: jaxgrad.theory's χ₁ at the fixed point (σ_w² = s²/3, σ_b² = s²/(3n)) vs the study's
    # recursion, far past its transient
    width, scales = 32, np.array([1.0, 1.8, 2.6])
    recursion = critical_init.mean_field_rate("tanh_mlp", scales, width, depth=120, discard=100)
    closed = 0.5 * np.log(
        np.asarray(theory.chi1("tanh", scales / math.sqrt(3), scales / math.sqrt(3 * width)), np.float64)
    )
    np.testing.assert_allclose(recursion, closed, atol=2e-4)


def test_mean_field_rate_of_the_residual_block_matches_a_monte_carlo_of_the_block():
    # E‖J u‖² = 1 + σ_w⁴ E[gelu′(z)²] for one wide block at input variance q: check against sampled blocks
    width, scale, q = 512, 1.5, 1.0
    make = critical_init.blocks(width)["residual_gelu"]
    keys = jax.random.split(jax.random.key(0), 64)

    def gain2(key):
        k_block, k_h, k_u = jax.random.split(key, 3)
        block = make(k_block, scale)
        h = math.sqrt(q) * jax.random.normal(k_h, (width,))
        u = jax.random.normal(k_u, (width,))
        _, Ju = jax.jvp(block, (h,), (u / jax.numpy.linalg.norm(u),))
        return (Ju**2).sum()

    samples = np.asarray(jax.vmap(gain2)(keys), np.float64)
    predicted = math.exp(2 * float(critical_init.mean_field_rate("residual_gelu", scale, width, depth=1, discard=0)))
    assert abs(samples.mean() - predicted) <= 4 * samples.std(ddof=1) / math.sqrt(samples.size) + 1 / width


@pytest.mark.parametrize(
    "field,value",
    [
        ("depth", 3),
        ("width", 1),
        ("tanh_mlp_bracket", (2.0, 1.0)),
        ("residual_gelu_bracket", (0.0, 1.0)),
        ("factor", 1.0),
        ("powers", (1, 2)),
        ("powers", (0, 0)),
        ("record_every", 7),
        ("test_size", 5),
        ("learning_rate", 0.0),
        ("seeds", 0),
        ("interval_se", -1.0),
        ("batch_size", 1700),
    ],
)
def test_bad_config_values_are_value_errors_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(critical_init.Config.quick(), **{field: value})


def test_presets_are_valid_and_full_is_larger():
    quick, full = critical_init.Config.quick(), critical_init.Config.full()
    assert quick.depth >= 50 and full.depth >= quick.depth and full.steps > quick.steps and full.seeds > quick.seeds


def test_trained_scales_hold_the_default_and_the_anchor_times_the_factor():
    config = critical_init.Config.quick()
    np.testing.assert_allclose(
        critical_init.trained_scales(config, 2.0, True), [1.0, 2 / 1.5, 2.0, 3.0, 4.5], rtol=1e-6
    )
    np.testing.assert_allclose(
        critical_init.trained_scales(config, math.nan, False), [1 / 1.5, 1.0, 1.5, 2.25], rtol=1e-6
    )


@pytest.mark.slow
def test_study_runs_end_to_end_at_a_tiny_size(tmp_path):
    data, comparisons = run_study_at_a_tiny_size(critical_init, TINY, tmp_path)
    assert all(c.tolerance > 0 for c in comparisons)
    for model in critical_init.MODELS:
        scales = data[f"{model}_scales"]
        assert 1.0 in scales and data[f"{model}_accuracy"].shape == (scales.size, TINY.seeds, 3)
        assert data[f"{model}_rates"].shape == scales.shape and np.all(np.isfinite(data[f"{model}_rates"]))
    # the residual block's rate is positive for every s > 0 (χ_ℓ > 1): no critical point in its bracket
    assert not bool(data["residual_gelu_found"]) and np.all(data["residual_gelu_bracket_rates"] > 0)

"""`jaxgrad.training` (optax loops vmapped over seeds and hyperparameters) and `jaxgrad.curvature` (Lanczos on HVPs)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import jaxgrad
from jaxgrad import quadratic, training

DIGITS = training.load_digits(256)
LINEAR = jaxgrad.mlp(widths=[64, 16, 16], activation="linear")  # explodes at a large step: divergence tests
TANH = jaxgrad.mlp(widths=[64, 16, 16], activation="tanh", sigma_w=1.0, sigma_b=1.0)
KEYS = jax.random.split(jax.random.key(0), 2)


def clipped(lr):
    return optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr))


def test_digits_ship_with_scikit_learn_and_are_standardised():
    full = training.load_digits()
    assert full.x.shape == (1797, 64) and full.y.shape == (1797,) and set(np.unique(full.y)) == set(range(10))
    np.testing.assert_allclose(np.asarray(full.x).mean(0), 0.0, atol=1e-5)
    assert float(jnp.mean(full.x**2)) == pytest.approx(61 / 64, abs=1e-5)  # 3 of the 64 pixels are constant


def test_first_record_is_the_loss_and_per_layer_gradient_norms_of_the_initial_classifier():
    h = training.train(
        TANH,
        optax.sgd,
        DIGITS.x,
        DIGITS.y,
        keys=KEYS,
        steps=100,
        learning_rate=0.1,
        weight_scale=1.3,
        bias_scale=0.2,
        record_every=50,
    )  # (the program of the next test)
    init_key = jax.random.split(KEYS[1], 3)[0]  # train splits each seed key into (init, data, curvature)
    params = training.init_classifier(TANH, init_key, weight_scale=1.3, bias_scale=0.2)
    value, grads = jax.value_and_grad(lambda p: training.classifier_loss(TANH, p, DIGITS.x, DIGITS.y))(params)
    norms = [float(jnp.linalg.norm(g.W)) for g in grads[0]] + [float(jnp.linalg.norm(grads[1].W))]
    np.testing.assert_allclose(h.gradient_norms[0, 1, 0], norms, rtol=1e-5)  # float32 reassociation
    assert float(h.loss[0, 1, 0]) == pytest.approx(float(value), rel=1e-6)
    assert h.loss.shape == (1, 2, 3) and h.step_loss.shape == (1, 2, 100) and list(h.record_steps) == [0, 50, 100]


@pytest.mark.parametrize("weights", ["gaussian", pytest.param("orthogonal", marks=pytest.mark.slow)])
def test_the_program_draws_init_classifier_bit_for_bit(weights):
    """`train`'s program draws each run of equal layers in one vmapped draw (so that it does not grow with
    depth): in a compiled program, the numbers of `init_classifier`, stacked per run, to the last bit."""
    net = jaxgrad.mlp(widths=[64, 16, 16, 16, 8, 8], weights=weights, activation="tanh", sigma_b=0.1)

    def reference(key, ws, bs):
        body, readout = training.init_classifier(net, key, weight_scale=ws, bias_scale=bs)
        return training._stack(net, body), readout

    args = (jax.random.key(3), jnp.float32(1.3), jnp.float32(0.2))
    got = jax.jit(lambda key, ws, bs: training._init_stacked(net, key, 10, ws, bs))(*args)
    want = jax.jit(reference)(*args)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="DenseParams bodies only"):
        training._init_stacked(jaxgrad.mlp(width=8, depth=2, tied=True), jax.random.key(0), 10, 1.0, 1.0)


def test_training_learns_the_digits():
    h = training.train(
        TANH,
        optax.sgd,
        DIGITS.x,
        DIGITS.y,
        keys=KEYS,
        steps=100,
        learning_rate=0.5,
        record_every=50,
        weight_scale=1.0,
        bias_scale=0.1,
    )
    assert np.all(h.accuracy[:, :, -1] > 0.9) and np.all(h.loss[:, :, -1] < h.loss[:, :, 0] / 4)


@pytest.mark.slow
def test_a_divergent_member_is_masked_and_the_others_are_unchanged():
    grid = training.train(
        LINEAR,
        optax.sgd,
        DIGITS.x,
        DIGITS.y,
        keys=KEYS,
        steps=40,
        learning_rate=[0.01, 1.0],
        loss="mse",
        record_every=10,
    )
    calm = training.train(
        LINEAR,
        optax.sgd,
        DIGITS.x,
        DIGITS.y,
        keys=KEYS,
        steps=40,
        learning_rate=[0.01, 0.02],
        loss="mse",
        record_every=10,
    )
    alone = training.train(
        LINEAR, optax.sgd, DIGITS.x, DIGITS.y, keys=KEYS, steps=40, learning_rate=0.01, loss="mse", record_every=10
    )
    assert np.all(grid.diverged_at[0] == -1) and np.all(grid.diverged_at[1] > 0)
    # a member does not see its neighbours: bit for bit the same beside a divergent or a calm one (one program) …
    for field in ("loss", "step_loss", "gradient_norms"):
        np.testing.assert_array_equal(getattr(grid, field)[0], getattr(calm, field)[0], err_msg=field)
    # … and, to float32 rounding, the same as alone: a grid of 1 is another program, which XLA may vectorise
    # differently (on some CPUs the last bit differs)
    np.testing.assert_allclose(grid.loss[0], alone.loss[0], rtol=4 * np.finfo(np.float32).eps)
    for s in range(2):
        t = int(grid.diverged_at[1, s])
        assert np.all(np.isfinite(grid.step_loss[1, s, :t])) and np.all(np.isnan(grid.step_loss[1, s, t + 1 :]))
        assert np.all(np.isnan(grid.loss[1, s, grid.record_steps > t]))
    assert all(np.all(np.isfinite(leaf[1])) for leaf in jax.tree.leaves(grid.params))  # frozen before the blow-up


@pytest.mark.slow
def test_clip_by_global_norm_bounds_the_first_step_and_prevents_the_divergence():
    tight = lambda lr: optax.chain(optax.clip_by_global_norm(0.1), optax.sgd(lr))  # noqa: E731
    h = training.train(TANH, tight, DIGITS.x, DIGITS.y, keys=KEYS, steps=1, learning_rate=0.5, weight_scale=3.0)
    init_key = jax.random.split(KEYS[0], 3)[0]
    start = training.init_classifier(TANH, init_key, weight_scale=3.0)
    g = jax.grad(lambda p: training.classifier_loss(TANH, p, DIGITS.x, DIGITS.y))(start)
    gnorm = float(optax.tree.norm(g))
    assert gnorm > 0.1  # so the clip is active
    step = ravel_pytree(jax.tree.map(lambda p: p[0, 0], h.params))[0] - ravel_pytree(start)[0]
    rounding = 2 * np.finfo(np.float32).eps * float(jnp.max(jnp.abs(ravel_pytree(start)[0])))  # θ₁ − θ₀ in float32
    np.testing.assert_allclose(step, -0.5 * 0.1 / gnorm * ravel_pytree(g)[0], rtol=1e-4, atol=rounding)
    plain = training.train(
        LINEAR, optax.sgd, DIGITS.x, DIGITS.y, keys=KEYS, steps=40, learning_rate=0.3, loss="mse", record_every=10
    )
    clip = training.train(
        LINEAR, clipped, DIGITS.x, DIGITS.y, keys=KEYS, steps=40, learning_rate=0.3, loss="mse", record_every=10
    )
    assert np.all(plain.diverged_at >= 0) and np.all(clip.diverged_at == -1)
    assert np.all(clip.loss[..., -1] < clip.loss[..., 0])


def test_new_seeds_and_learning_rates_reuse_the_compiled_program():
    momentum = functools.partial(optax.sgd, momentum=0.9)
    run = functools.partial(training.train, LINEAR, momentum, DIGITS.x, DIGITS.y, steps=3, loss="mse")
    run(keys=KEYS, learning_rate=[0.01, 0.02])
    program = training._program.cache_info()
    run(keys=jax.random.split(jax.random.key(7), 2), learning_rate=[0.03, 0.001])
    assert training._program.cache_info().misses == program.misses
    compiled = training._program(LINEAR, momentum, True, 10, 3, 1, None, "mse", 0)
    assert compiled._cache_size() == 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(learning_rate=float("nan")), "learning_rate"),
        (dict(learning_rate=[0.1, float("inf")]), "learning_rate"),
        (dict(steps=0), "steps"),
        (dict(record_every=3), "record_every"),
        (dict(batch_size=0), "batch_size"),
        (dict(labels=10), r"\[0, 9\]"),
        (dict(labels=-1), r"\[0, 9\]"),
    ],
)
def test_bad_arguments_are_value_errors_naming_them(kwargs, match):
    y = DIGITS.y
    if "labels" in kwargs:
        y = y.at[5].set(kwargs.pop("labels"))
    args = dict(keys=KEYS, steps=4, learning_rate=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        training.train(LINEAR, optax.sgd, DIGITS.x, y, **args)


# --------------------------------------------------------------------------- curvature


@pytest.mark.parametrize("a", [0.3, 1.0, 7.5])
def test_top_hessian_eigenvalue_of_the_seed_quadratic_is_a(a):
    """Seed §1: L = ½aθ², GD stable iff η < 2/a; the Lanczos curvature is a to float32 rounding."""
    lam = float(jaxgrad.top_hessian_eigenvalue(lambda theta: 0.5 * a * theta**2, jnp.float32(1.7), key=KEYS[0]))
    assert lam == pytest.approx(a, rel=4 * float(np.finfo(np.float32).eps))
    assert quadratic.critical_learning_rate(lam) == pytest.approx(2 / a, rel=1e-6)


@pytest.mark.slow
def test_top_hessian_eigenvalue_matches_the_exact_hessian_of_a_tiny_network():
    with jax.enable_x64(True):
        net = jaxgrad.mlp(widths=[8, 6, 6], activation="tanh", sigma_w=1.5, sigma_b=0.3)
        x = jax.random.normal(jax.random.key(1), (20, 8), jnp.float64)
        y = jnp.arange(20) % 3
        params = training.init_classifier(net, jax.random.key(2), 3)
        loss = functools.partial(training.classifier_loss, net, x=x, y=y)
        flat, unravel = ravel_pytree(params)
        exact = np.linalg.eigvalsh(np.asarray(jax.hessian(lambda t: loss(unravel(t)))(flat)))[-1]
        assert flat.size == 117  # so 32 Lanczos steps are a proper Krylov subspace
        seeds = jax.vmap(lambda k: jaxgrad.top_hessian_eigenvalue(loss, params, key=k, steps=32))(KEYS)
        # Ritz values converge from below; with the top separated (1.070 vs 0.919) 32 steps reach float64 rounding
        assert np.all(np.asarray(seeds) <= exact * (1 + 1e-12))
        np.testing.assert_allclose(seeds, exact, rtol=1e-8)


def test_top_hessian_eigenvalue_is_the_largest_algebraic_one():
    A = jnp.diag(jnp.array([-9.0, 1.0, 2.0]))
    lam = jaxgrad.top_hessian_eigenvalue(lambda p: 0.5 * p @ A @ p, jnp.ones(3), key=KEYS[0], steps=3)
    assert float(lam) == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match="steps"):
        jaxgrad.top_hessian_eigenvalue(lambda p: p @ p, jnp.ones(3), key=KEYS[0], steps=0)

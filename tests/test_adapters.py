"""Equinox and Flax NNX modules as jaxgrad layers: the same numbers as the module itself, or as jaxgrad's own."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import ensemble
from jaxgrad.adapters import from_equinox, from_flax, from_functions, serial_from_equinox
from jaxgrad.layers import structure_of

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")

WIDTH = 16
FIELDS = ("log_spectral_norm", "log_norm_product", "log_forward_gain", "log_backward_gain", "log_signal_norm")


class TanhBlock(eqx.Module):
    linear: eqx.nn.Linear

    def __init__(self, key):
        self.linear = eqx.nn.Linear(WIDTH, WIDTH, key=key)

    def __call__(self, h):
        return jnp.tanh(self.linear(h))


class PreNormResidual(eqx.Module):
    """h + W₂ gelu(W₁ LN(h) + b₁) + b₂."""

    norm: eqx.nn.LayerNorm
    up: eqx.nn.Linear
    down: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.norm = eqx.nn.LayerNorm(WIDTH)
        self.up = eqx.nn.Linear(WIDTH, 2 * WIDTH, key=k1)
        self.down = eqx.nn.Linear(2 * WIDTH, WIDTH, key=k2)

    def __call__(self, h):
        return h + self.down(jax.nn.gelu(self.up(self.norm(h))))


class FlaxTanh(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)

    def __call__(self, h):
        return jnp.tanh(self.linear(h))


class FlaxSelfAttention(nnx.Module):
    """x + MHA(x), one head over 16 tokens × 8 features (dropout kept, deterministic: RNG state in the module)."""

    def __init__(self, rngs):
        self.attention = nnx.MultiHeadAttention(1, 8, decode=False, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, x):
        return x + self.dropout(self.attention(x, deterministic=True), deterministic=True)


def make_tanh(key):
    return TanhBlock(key)


def make_residual(key):
    return PreNormResidual(key)


def assert_same_results(a, b, rtol=1e-5, atol=1e-5):
    for field in FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=field)


@pytest.mark.slow
def test_equinox_tanh_block_equals_jaxgrad_dense_on_the_same_weights():
    net = serial_from_equinox([make_tanh] * 6)
    dense = jaxgrad.mlp(WIDTH, 6, activation="tanh")
    drawn = jaxgrad.draw_params(net, 16, seed=3)
    as_dense = tuple(jaxgrad.DenseParams(p.linear.weight, p.linear.bias) for p in drawn)
    ours = jaxgrad.simulate(net, 16, seed=3)  # every field; the matrix-free path is tested below
    assert_same_results(ours, jaxgrad.simulate(dense, 16, seed=3, params=as_dense))
    assert np.isfinite(ours.log_forward_gain).all()


class ScaledTanh(eqx.Module):
    """tanh(W h + b), W ~ N(0, σ_w²/n), b ~ N(0, σ_b²): drawn exactly as jaxgrad.dense draws them."""

    linear: eqx.nn.Linear

    def __init__(self, key, sigma_w, sigma_b):
        k_w, k_b = jax.random.split(key)
        linear = eqx.nn.Linear(WIDTH, WIDTH, key=k_w)
        W = sigma_w / np.sqrt(WIDTH) * jax.random.normal(k_w, (WIDTH, WIDTH), jnp.float32)
        b = sigma_b * jax.random.normal(k_b, (WIDTH,), jnp.float32)
        self.linear = eqx.tree_at(lambda m: (m.weight, m.bias), linear, (W, b))

    def __call__(self, h):
        return jnp.tanh(self.linear(h))


def make_scaled(key, sigma_w, sigma_b):
    return ScaledTanh(key, sigma_w, sigma_b)


@pytest.mark.slow
def test_traced_hyperparameters_of_a_block_sweep_as_one_program_and_are_used():
    """`hyper=`: make(key, sigma_w=…, sigma_b=…) with traced values; a σ_w grid is one program and each
    point equals jaxgrad.mlp at that σ_w (the block draws its weights as jaxgrad.dense does)."""
    net = serial_from_equinox([make_scaled] * 4, hyper={"sigma_w": 1.0, "sigma_b": 0.2})
    assert net.layers[0].hyper.values == {"sigma_w": 1.0, "sigma_b": 0.2} and len(net.segments()) == 1
    grid = {"sigma_w": [0.7, 1.9]}
    ours = jaxgrad.sweep(net, 4, 5, grid=grid, method="vector")
    before = ensemble.compile_count()
    again = jaxgrad.sweep(net, 4, 6, grid={"sigma_w": [1.2, 2.5], "sigma_b": [0.05]}, method="vector")
    assert ensemble.compile_count() == before, "new hyperparameter values recompiled the block's program"
    assert not np.allclose(again.log_forward_gain[0, 0], ours.log_forward_gain[0])
    theirs = jaxgrad.sweep(jaxgrad.mlp(WIDTH, 4, activation="tanh", sigma_b=0.2), 4, 5, grid=grid, method="vector")
    assert_same_results(ours, theirs)
    assert (
        from_equinox(make_scaled, hyper={"sigma_w": 2.0, "sigma_b": 0.0}).hyper.structure
        == net.layers[0].hyper.structure
    )


def test_adapters_of_one_constructor_are_one_segment_and_one_program():
    first, second = from_equinox(make_tanh), from_equinox(make_tanh)
    assert structure_of(first) == structure_of(second)
    net = jaxgrad.serial(first, second, first, second)
    assert [(start, count) for _, start, count in net.segments()] == [(0, 4)]
    jaxgrad.simulate(net, 4, seed=0, method="vector")
    before = ensemble.compile_count()
    jaxgrad.simulate(jaxgrad.serial(second, first, second, first), 4, seed=1, method="vector")
    assert ensemble.compile_count() == before, "an equal network of adapters recompiled"
    assert structure_of(from_equinox(lambda key: TanhBlock(key))) != structure_of(first)


@pytest.mark.slow
def test_equinox_residual_block_follows_the_module_itself():
    """log ‖h⁽ℓ⁾‖ from the engine equals the module applied by hand to the engine's input."""
    depth, samples, seed = 4, 2, 5
    net = serial_from_equinox([make_residual] * depth)
    result = jaxgrad.simulate(net, samples, seed=seed)
    assert np.isfinite(result.log_spectral_norm).all()
    step = jax.jit(lambda key, h: make_residual(key)(h))  # the module itself, not the adapter
    for i in range(samples):
        keys = jaxgrad.sample_keys(seed, i)
        h = jax.random.normal(keys.input, (WIDTH,), jnp.float32)  # q0 = 1
        for ell in range(depth):
            h = step(jax.random.fold_in(keys.weights, ell), h)
            np.testing.assert_allclose(result.log_signal_norm[i, ell], np.log(np.linalg.norm(h)), rtol=1e-5)


def _flax_linear_values(state):
    return state["linear"]["kernel"].get_value(), state["linear"]["bias"].get_value()


@pytest.mark.slow
def test_flax_tanh_block_jacobian_and_simulate_match_the_plain_function():
    layer = from_flax(FlaxTanh)
    assert (layer.n_in, layer.n_out) == (WIDTH, WIDTH)
    params = layer.init(jax.random.key(1))
    kernel, bias = _flax_linear_values(params)
    plain = lambda h: jnp.tanh(h @ kernel + bias)  # noqa: E731
    h = jax.random.normal(jax.random.key(2), (WIDTH,))
    np.testing.assert_allclose(
        jax.jacrev(layer.apply, argnums=1)(params, h), jax.jacrev(plain)(h), rtol=1e-6, atol=1e-7
    )

    net = jaxgrad.serial(*[layer] * 5)
    given = jax.vmap(net.init)(jax.random.split(jax.random.key(7), 8))
    pair = jaxgrad.Layer(
        lambda key: (jnp.zeros((WIDTH, WIDTH)), jnp.zeros(WIDTH)), lambda p, h: jnp.tanh(h @ p[0] + p[1]), WIDTH, WIDTH
    )
    as_pair = tuple(_flax_linear_values(p) for p in given)
    assert_same_results(
        jaxgrad.simulate(net, 8, seed=0, params=given),
        jaxgrad.simulate(jaxgrad.serial(*[pair] * 5), 8, seed=0, params=as_pair),
    )


def _attention_by_hand(state, x):
    """Single-head self-attention x + softmax(q kᵀ/√d) v W_o, written out from the Flax parameters."""
    p = {
        name: (state["attention"][name]["kernel"].get_value(), state["attention"][name]["bias"].get_value())
        for name in ("query", "key", "value", "out")
    }
    project = lambda name: jnp.einsum("ti,ihd->thd", x, p[name][0]) + p[name][1]  # noqa: E731
    q, k, v = project("query"), project("key"), project("value")
    weights = jax.nn.softmax(jnp.einsum("qhd,khd->hqk", q, k) / jnp.sqrt(q.shape[-1]), axis=-1)
    mixed = jnp.einsum("hqk,khd->qhd", weights, v)
    return x + jnp.einsum("qhd,hdo->qo", mixed, p["out"][0]) + p["out"][1]


@pytest.mark.slow
def test_flax_self_attention_over_tokens_is_a_flattened_block():
    layer = from_flax(FlaxSelfAttention, shape=(16, 8))
    assert (layer.n_in, layer.n_out) == (128, 128) and "(16, 8)" in layer.name
    params = layer.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 8))
    np.testing.assert_allclose(
        layer.apply(params, x.reshape(-1)), _attention_by_hand(params, x).reshape(-1), rtol=1e-5, atol=1e-5
    )
    J = jax.jacrev(layer.apply, argnums=1)(params, x.reshape(-1))
    by_hand = jax.jacrev(lambda h: _attention_by_hand(params, h.reshape(16, 8)).reshape(-1))(x.reshape(-1))
    np.testing.assert_allclose(J, by_hand, rtol=1e-5, atol=1e-5)
    result = jaxgrad.simulate(jaxgrad.serial(*[layer] * 3), 2, seed=0)
    assert result.log_spectral_norm.shape == (2, 3) and np.isfinite(result.log_spectral_norm).all()


def test_a_plain_pair_on_a_matrix_state_flattens_row_major():
    """X ↦ A X on (tokens, features) has the flattened Jacobian A ⊗ I, so ‖J‖₂ = ‖A‖₂."""
    tokens, features = 6, 4
    mix = from_functions(
        lambda key: jax.random.normal(key, (tokens, tokens)) / np.sqrt(tokens),
        lambda A, X: A @ X,
        shape=(tokens, features),
    )
    assert (mix.n_in, mix.n_out) == (24, 24)
    A = mix.init(jax.random.key(0))
    J = jax.jacrev(mix.apply, argnums=1)(A, jnp.ones(24))
    np.testing.assert_allclose(J, np.kron(A, np.eye(features)), rtol=1e-6, atol=1e-7)
    given = jax.vmap(mix.init)(jax.random.split(jax.random.key(1), 3))
    result = jaxgrad.simulate(jaxgrad.serial(mix), 3, seed=0, method="svd", params=(given,))
    np.testing.assert_allclose(
        result.log_spectral_norm[:, 0], np.log(np.linalg.norm(given, ord=2, axis=(1, 2))), rtol=1e-5
    )


@pytest.mark.slow
def test_float64_runs_draw_float64_parameters():
    layer = from_flax(FlaxTanh)
    result = jaxgrad.simulate(jaxgrad.serial(layer, layer), 2, seed=0, dtype="float64", method="vector")
    assert result.log_forward_gain.dtype == np.float64
    with jax.enable_x64(True):
        assert {a.dtype for a in jax.tree.leaves(layer.init(jax.random.key(0)))} == {jnp.dtype("float64")}


# --------------------------------------------------------------------------- bad blocks, named at build time


class Narrowing(eqx.Module):
    linear: eqx.nn.Linear

    def __init__(self, key):
        self.linear = eqx.nn.Linear(WIDTH, 8, key=key)

    def __call__(self, h):
        return self.linear(h)


class IntegerOnly(eqx.Module):
    table: jax.Array
    in_features: int = WIDTH

    def __init__(self, key):
        del key
        self.table = jnp.arange(WIDTH)

    def __call__(self, h):
        return h[self.table]


class Shapeless(eqx.Module):
    scale: jax.Array

    def __init__(self, key):
        self.scale = jax.random.normal(key, ())

    def __call__(self, h):
        return self.scale * h


class EquinoxDropout(eqx.Module):
    """tanh(W h) then dropout, left in training mode (inference=False)."""

    linear: eqx.nn.Linear
    dropout: eqx.nn.Dropout

    def __init__(self, key):
        self.linear = eqx.nn.Linear(WIDTH, WIDTH, key=key)
        self.dropout = eqx.nn.Dropout(0.1)

    def __call__(self, h, *, key=None):
        return self.dropout(jnp.tanh(self.linear(h)), key=key)


class NeedsKey(eqx.Module):
    linear: eqx.nn.Linear

    def __init__(self, key):
        self.linear = eqx.nn.Linear(WIDTH, WIDTH, key=key)

    def __call__(self, h, *, key):
        return jnp.tanh(self.linear(h))


class LSTMStep(eqx.Module):
    """Returns the cell's (h, c), not a state."""

    cell: eqx.nn.LSTMCell

    def __init__(self, key):
        self.cell = eqx.nn.LSTMCell(WIDTH, WIDTH, key=key)

    def __call__(self, h):
        return self.cell(jnp.zeros(WIDTH), (h, h))


class AttentionWithWeights(eqx.Module):
    """x + softmax(x xᵀ) x W, returning the attention weights too."""

    linear: eqx.nn.Linear

    def __init__(self, key):
        self.linear = eqx.nn.Linear(8, 8, key=key)

    def __call__(self, x):
        weights = jax.nn.softmax(x @ x.T, axis=-1)
        return x + jax.vmap(self.linear)(weights @ x), weights


class FlaxDropout(nnx.Module):
    """Dropout left in training mode, with an RNG stream to draw from."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
        self.dropout = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, h):
        return self.dropout(jnp.tanh(self.linear(h)))


class FlaxDropoutWithoutRngs(FlaxDropout):
    def __init__(self, rngs):
        self.linear = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
        self.dropout = nnx.Dropout(0.1)


class FlaxHalf(nnx.Module):
    """float32 parameters, computing in bfloat16."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(WIDTH, WIDTH, dtype=jnp.bfloat16, rngs=rngs)

    def __call__(self, h):
        return self.linear(h)


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: from_equinox(lambda key: Narrowing(key)), ValueError, "same shape"),
        (lambda: from_equinox(lambda: TanhBlock(jax.random.key(0))), TypeError, "one positional argument, the key"),
        (lambda: from_equinox(lambda key: IntegerOnly(key)), ValueError, "no floating-point arrays"),
        (lambda: from_equinox(lambda key: Shapeless(key)), ValueError, "cannot infer the state's shape"),
        (lambda: from_equinox(make_tanh, shape=(8,)), ValueError, "declared state shape"),
        (lambda: from_equinox(make_tanh, shape=(0, 3)), ValueError, "positive integers"),
        (lambda: from_equinox(lambda key: jnp.zeros(3)), TypeError, "must return an equinox.Module"),
        (lambda: from_equinox("TanhBlock"), TypeError, "must be a constructor"),
        (lambda: from_flax(lambda: FlaxTanh(nnx.Rngs(0))), TypeError, "the rngs"),
        (lambda: from_flax(FlaxSelfAttention), ValueError, "cannot infer|state shape"),
        (lambda: from_functions(lambda key: jnp.arange(3), lambda p, x: x, shape=(3,)), ValueError, "floating"),
        (lambda: from_functions(lambda key: jnp.ones(3), lambda p, x: x[:2], shape=(3,)), ValueError, "same shape"),
        (lambda: from_equinox(make_tanh, hyper={"sigma_w": 1.0}), TypeError, "keyword arguments sigma_w"),
        (lambda: from_equinox(make_scaled, hyper={"sigma_w": "big", "sigma_b": 0.0}), ValueError, "hyper.*finite"),
        (lambda: from_equinox(make_scaled, hyper={"sigma_w": float("nan"), "sigma_b": 0.0}), ValueError, "finite"),
        # the real cause, not "pass the module's state shape" (issue 27, item 10)
        (
            lambda: from_equinox(lambda key: EquinoxDropout(key)),
            ValueError,
            r"EquinoxDropout is in training mode: eqx.nn.Dropout at .dropout .*eqx.nn.inference_mode",
        ),
        (
            lambda: from_equinox(
                lambda key: eqx.nn.Sequential([eqx.nn.Linear(WIDTH, WIDTH, key=key), eqx.nn.Dropout(0.5)])
            ),
            ValueError,
            r"Dropout at .layers\[1\] .*wants `key=`.*inference_mode",
        ),
        (
            lambda: from_equinox(lambda key: NeedsKey(key)),
            TypeError,
            r"NeedsKey.__call__\(self, h, \*, key\)` needs `key=`",
        ),
        (
            lambda: from_equinox(lambda key: eqx.nn.GRUCell(WIDTH, WIDTH, key=key), shape=(WIDTH,)),
            TypeError,
            "also requires hidden.*h ↦ cell",
        ),
        (
            lambda: from_equinox(lambda key: LSTMStep(key), shape=(WIDTH,)),
            ValueError,
            r"returned a tuple of 2 arrays .*Return the state",
        ),
        (
            lambda: from_equinox(lambda key: AttentionWithWeights(key), shape=(4, 8)),
            ValueError,
            r"returned a tuple of 2 arrays \(\(4, 8\), \(4, 4\)\).*Return the state",
        ),
        (
            lambda: from_flax(FlaxDropout),
            ValueError,
            (
                r"FlaxDropout is in training mode: nnx.Dropout at dropout is not deterministic .*RNG stream"
                r".*deterministic=True.*model.eval\(\)"
            ),
        ),
        (lambda: from_flax(FlaxDropoutWithoutRngs), ValueError, "nnx.Dropout at dropout is not deterministic"),
        # half precision is refused, not upcast silently (issue 27, item 5)
        (
            lambda: from_equinox(lambda key: eqx.nn.Linear(WIDTH, WIDTH, dtype=jnp.bfloat16, key=key)),
            ValueError,
            r"Linear's parameters .weight \(bfloat16\), .bias \(bfloat16\) are half precision.*float32",
        ),
        (lambda: from_flax(FlaxHalf), ValueError, "FlaxHalf returns bfloat16.*float32"),
    ],
)
def test_bad_blocks_are_refused_when_built_with_the_fix(build, error, message):
    with pytest.raises(error, match=message) as info:
        build()
    assert "from_" in str(info.value)  # names the block


def test_shapeless_block_works_once_its_shape_is_given():
    layer = from_equinox(lambda key: Shapeless(key), shape=(WIDTH,))
    assert layer.n_in == WIDTH


def test_the_advised_switches_out_of_training_mode_are_accepted():
    """eqx.nn.inference_mode and nnx.view(deterministic=True): the block is then the deterministic map."""
    layer = from_equinox(lambda key: eqx.nn.inference_mode(EquinoxDropout(key)))
    params, h = layer.init(jax.random.key(0)), jnp.linspace(-1.0, 1.0, WIDTH)
    np.testing.assert_allclose(
        layer.apply(params, h), jnp.tanh(params.linear.weight @ h + params.linear.bias), rtol=1e-6
    )
    layer = from_flax(lambda rngs: nnx.view(FlaxDropout(rngs), deterministic=True))
    params = layer.init(jax.random.key(0))
    kernel, bias = _flax_linear_values(params)
    np.testing.assert_allclose(layer.apply(params, h), jnp.tanh(h @ kernel + bias), rtol=1e-6)


BN_BATCH, BN_WIDTH = 4, 6


def _flax_batch_norm(train: bool):
    return lambda rngs: nnx.BatchNorm(BN_WIDTH, use_running_average=not train, rngs=rngs)


def test_flax_batch_norm_in_training_mode_is_jaxgrad_batch_norm_and_writes_nothing_back():
    """Training mode normalises with the batch statistics of the (B, n) state, as `jaxgrad.batch_norm`; the
    running averages it updates go to a copy that is discarded (the given params are not mutated)."""
    ours = from_flax(_flax_batch_norm(train=True), shape=(BN_BATCH, BN_WIDTH))
    theirs = jaxgrad.batch_norm(BN_WIDTH, BN_BATCH)
    params = ours.init(jax.random.key(0))
    h = jax.random.normal(jax.random.key(1), (BN_BATCH * BN_WIDTH,)) * 2.0 + 0.5
    np.testing.assert_allclose(ours.apply(params, h), theirs.apply(theirs.init(None), h), rtol=1e-5, atol=1e-5)
    assert np.all(params["mean"].get_value() == 0) and np.all(params["var"].get_value() == 1), (
        "applying the block wrote its running averages back"
    )
    np.testing.assert_allclose(
        jax.jacrev(ours.apply, argnums=1)(params, h),
        jax.jacrev(theirs.apply, argnums=1)(theirs.init(None), h),
        rtol=1e-4,
        atol=1e-5,
    )
    result = jaxgrad.simulate(jaxgrad.serial(ours, ours), 3, seed=0, method="svd", fields=("log_spectral_norm",))
    expected = jaxgrad.simulate(jaxgrad.serial(theirs, theirs), 3, seed=0, method="svd", fields=("log_spectral_norm",))
    np.testing.assert_allclose(result.log_spectral_norm, expected.log_spectral_norm, rtol=1e-5, atol=1e-5)


def test_flax_batch_norm_in_eval_mode_with_fresh_statistics_is_an_affine_map():
    """Stored mean 0, variance 1: x ↦ γ x/√(1 + ε) + β, the same Jacobian at every state."""
    layer = from_flax(_flax_batch_norm(train=False), shape=(BN_BATCH, BN_WIDTH))
    params = layer.init(jax.random.key(0))
    jacobian = jax.jacrev(layer.apply, argnums=1)
    expected = np.eye(BN_BATCH * BN_WIDTH) / np.sqrt(1.0 + 1e-5)
    for key in (1, 2):
        h = 3.0 * jax.random.normal(jax.random.key(key), (BN_BATCH * BN_WIDTH,))
        np.testing.assert_allclose(jacobian(params, h), expected, rtol=1e-6, atol=1e-7)


def _float32_rounding(a32, a64):
    a32, a64 = np.asarray(a32), np.asarray(a64)
    assert a32.dtype == np.float32 and a64.dtype == np.float64
    np.testing.assert_allclose(a64, a32.astype(np.float64), rtol=2 * np.finfo(np.float32).eps, atol=0)


@pytest.mark.parametrize(
    "net",
    [
        lambda: serial_from_equinox([make_tanh] * 3),
        lambda: serial_from_equinox([make_scaled] * 2, hyper={"sigma_w": 1.3, "sigma_b": 0.1}),
        lambda: jaxgrad.serial(*[from_flax(FlaxTanh)] * 3),
    ],
    ids=["equinox", "equinox with traced hyperparameters", "flax"],
)
def test_one_network_per_seed_whatever_the_dtype(net):
    """A float64 run draws the float32 run's weights (eqx.nn.Linear draws in the default float; the adapter
    runs the constructor with 64-bit mode off, inside the engine's jit/vmap/scan, and casts)."""
    net = net()
    single, double = jaxgrad.draw_params(net, 4, seed=0), jaxgrad.draw_params(net, 4, seed=0, dtype="float64")
    assert jax.tree.structure(single) == jax.tree.structure(double)
    for a32, a64 in zip(jax.tree.leaves(single), jax.tree.leaves(double)):
        _float32_rounding(a32, a64)


@pytest.mark.parametrize(
    "blocked, adapter, extra",
    [
        (("equinox",), lambda: from_equinox(make_tanh), "jaxgrad[equinox]"),
        (("flax", "flax.nnx"), lambda: from_flax(FlaxTanh), "jaxgrad[flax]"),
    ],
)
def test_missing_framework_says_which_extra_to_install(monkeypatch, blocked, adapter, extra):
    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=extra.replace("[", r"\[").replace("]", r"\]")):
        adapter()


@pytest.mark.slow  # a subprocess
def test_jaxgrad_imports_without_equinox_or_flax():
    code = (
        "import sys; sys.modules.update(equinox=None, flax=None); import jaxgrad, jaxgrad.adapters; "
        "assert 'equinox' not in [m for m in sys.modules if sys.modules[m] is not None]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"JAX_PLATFORMS": "cpu", **_path_env()})


def _path_env():
    import os

    return {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME")}


def test_a_hyperparameter_that_would_be_frozen_in_a_sweep_is_refused_and_a_stored_one_is_traced():
    """A value a constructor keeps as static structure (a plain Flax attribute, a static Equinox field) would
    be frozen at its build value inside a sweep's one program: refused when the adapter is built."""
    eqx = pytest.importorskip("equinox")
    nnx = pytest.importorskip("flax.nnx")
    width = 8

    class PlainFlax(nnx.Module):
        def __init__(self, rngs, branch, stored=False):
            self.linear = nnx.Linear(width, width, rngs=rngs)
            self.branch = nnx.Variable(jnp.asarray(branch)) if stored else branch

        def __call__(self, h):
            return h + self.branch * jnp.tanh(self.linear(h))

    class StaticEquinox(eqx.Module):
        linear: eqx.nn.Linear
        branch: float = eqx.field(static=True)

        def __init__(self, key, branch):
            self.linear, self.branch = eqx.nn.Linear(width, width, key=key), branch

        def __call__(self, h):
            return h + self.branch * jnp.tanh(self.linear(h))

    def plain(rngs, branch):
        return PlainFlax(rngs, branch)

    def static(key, branch):
        return StaticEquinox(key, branch)

    with pytest.raises(ValueError, match=r"'branch' does not reach only .*frozen at 1 .*nnx.Variable"):
        from_flax(plain, shape=width, hyper={"branch": 1.0})
    with pytest.raises(ValueError, match=r"'branch' does not reach only .*not `eqx.field\(static=True\)`"):
        from_equinox(static, shape=width, hyper={"branch": 1.0})

    class ScaledAndStatic(eqx.Module):  # scales a weight (traced) and keeps a static copy (frozen): refused too
        linear: eqx.nn.Linear
        gain: float = eqx.field(static=True)

        def __init__(self, key, branch):
            linear = eqx.nn.Linear(width, width, key=key)
            self.linear, self.gain = eqx.tree_at(lambda m: m.weight, linear, branch * linear.weight), branch

        def __call__(self, h):
            return self.gain * jnp.tanh(self.linear(h))

    def partly(key, branch):
        return ScaledAndStatic(key, branch)

    with pytest.raises(ValueError, match=r"'branch' does not reach only"):
        from_equinox(partly, shape=width, hyper={"branch": 1.0})

    def branching(key, branch):  # a Python branch on the value: it cannot be traced
        return StaticEquinox(key, 2.0) if branch > 1 else StaticEquinox(key, 1.0)

    with pytest.raises(ValueError, match=r"uses the hyperparameter 'branch' as a Python value"):
        from_equinox(branching, shape=width, hyper={"branch": 1.0})

    def stored(rngs, branch):
        return PlainFlax(rngs, branch, stored=True)

    layer = from_flax(stored, shape=width, hyper={"branch": 1.0})
    swept = jaxgrad.sweep(
        jaxgrad.serial(*[layer] * 3), 8, 0, grid={"branch": [1.0, 3.0]}, method="vector", fields=["log_forward_gain"]
    )
    alone = jaxgrad.simulate(
        jaxgrad.serial(*[layer.hyper.rebuild(branch=3.0)] * 3), 8, 0, method="vector", fields=["log_forward_gain"]
    )
    np.testing.assert_array_equal(swept.log_forward_gain[1], alone.log_forward_gain)
    assert not np.array_equal(swept.log_forward_gain[0], swept.log_forward_gain[1])

"""Seed §2.1 and §4: pure layers, weight schemes, networks, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import stats
from jaxgrad.layers import haar_orthogonal, weight_std
from tests.helpers import assert_within_se


@pytest.mark.parametrize("weights", ["gaussian", "he", "glorot", "lecun"])
@pytest.mark.parametrize("n_in,n_out", [(64, 64), (32, 96)])
def test_gaussian_schemes_have_the_stated_variance(weights, n_in, n_out):
    layer = jaxgrad.dense(n_in, n_out, weights=weights, sigma_w=1.5, sigma_b=0.5)
    params = jax.vmap(layer.init)(jax.random.split(jax.random.key(0), 20))
    W = np.asarray(params.W, np.float64).ravel()
    var = weight_std(weights, n_in, n_out, 1.5) ** 2
    # The sample variance of N Gaussian entries has standard error var·√(2/(N−1)).
    assert_within_se(W.var(), var, var * np.sqrt(2 / (W.size - 1)), what="Var W")
    assert_within_se(W.mean(), 0.0, np.sqrt(var / W.size), what="mean W")
    b = np.asarray(params.b, np.float64).ravel()
    assert_within_se(b.var(), 0.25, 0.25 * np.sqrt(2 / (b.size - 1)), what="Var b")


@pytest.mark.parametrize("shape", [(16, 16), (24, 8), (8, 24)])
def test_orthogonal_weights_have_all_singular_values_sigma_w(shape):
    n_out, n_in = shape
    layer = jaxgrad.dense(n_in, n_out, weights="orthogonal", sigma_w=0.7)
    W = layer.init(jax.random.key(1)).W
    assert W.shape == shape
    # Householder QR is orthogonal to n·ε, the SVD accurate to n·ε relative: 2·n·ε (n = max(shape)).
    rtol = 2 * max(shape) * float(jnp.finfo(W.dtype).eps)
    np.testing.assert_allclose(jnp.linalg.svd(W, compute_uv=False), 0.7, rtol=rtol)


def test_haar_orthogonal_is_haar_distributed():
    # For Haar Q ∈ O(n), the entries satisfy E[Q_11²] = 1/n and the trace has mean 0, variance 1.
    n, count = 8, 4000
    Q = jax.vmap(lambda k: haar_orthogonal(k, n, n))(jax.random.split(jax.random.key(2), count))
    traces = np.asarray(jnp.trace(Q, axis1=1, axis2=2), np.float64)
    mean, se = stats.mean_and_se(traces)
    assert_within_se(mean, 0.0, se, what="E tr Q")
    var, var_se = stats.variance_and_se(traces)  # SE from the fourth moment, not a guessed factor
    assert_within_se(var, 1.0, var_se, what="Var tr Q")


def test_mlp_init_accepts_typed_and_legacy_keys():
    net = jaxgrad.mlp(width=5, depth=3)
    a = net.init(jax.random.key(3))
    b = net.init(jax.random.PRNGKey(3))
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.W, pb.W)
    assert net.apply(a, jnp.ones(5)).shape == (5,)


def test_layer_weights_do_not_depend_on_network_depth():
    shallow, deep = jaxgrad.mlp(width=4, depth=2), jaxgrad.mlp(width=4, depth=6)
    key = jax.random.key(4)
    for ps, pd in zip(shallow.init(key), deep.init(key)):
        np.testing.assert_array_equal(ps.W, pd.W)


def test_rectangular_mlp():
    net = jaxgrad.mlp(widths=[3, 7, 5, 2], activation="relu")
    params = net.init(jax.random.key(0))
    assert [p.W.shape for p in params] == [(7, 3), (5, 7), (2, 5)]
    assert net.apply(params, jnp.ones(3)).shape == (2,)
    assert net.widths == (3, 7, 5, 2)


def test_residual_block_applies_h_plus_alpha_f():
    block = jaxgrad.dense(6, 6, activation="tanh")
    layer = jaxgrad.residual(block, alpha=0.3)
    p = layer.init(jax.random.key(0))
    h = jnp.linspace(-1, 1, 6)
    # The same formula evaluated twice (matmul orders may differ): ≤ (n + 3)ε relative per entry, n = 6.
    np.testing.assert_allclose(layer.apply(p, h), h + 0.3 * jnp.tanh(p.W @ h + p.b), rtol=9 * 1.2e-7)


def test_user_supplied_activation():
    net = jaxgrad.mlp(width=4, depth=2, activation=lambda x: jnp.sin(x) + 0.1 * x)
    params = net.init(jax.random.key(0))
    h1 = jnp.sin(params[0].W @ jnp.ones(4) + params[0].b) + 0.1 * (params[0].W @ jnp.ones(4) + params[0].b)
    # Same formula, possibly another summation order in W @ 1: ≤ (n + 3)ε relative, n = 4.
    np.testing.assert_allclose(jaxgrad.forward(net, params, jnp.ones(4))[1], h1, rtol=7 * 1.2e-7)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(width=0, depth=3), r"width.*width=0"),
        (dict(width=-2, depth=3), r"width.*width=-2"),
        (dict(width=4, depth=0), r"depth.*depth=0"),
        (dict(width=4, depth=2, activation="tanhh"), r"activation 'tanhh'.*'relu'"),
        (dict(width=4, depth=2, weights="xavier"), r"weights='xavier'.*'orthogonal'"),
        (dict(width=4, depth=2, sigma_w=-1.0), r"sigma_w.*-1.0"),
        (dict(width=4, depth=2, sigma_b=float("nan")), r"sigma_b.*nan"),
        (dict(widths=[4, 0, 3]), r"widths.*0"),
        (dict(widths=[4]), r"widths"),
    ],
)
def test_bad_network_arguments_name_the_argument_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxgrad.mlp(**kwargs)


def test_wrong_input_shape_is_a_clear_error():
    net = jaxgrad.mlp(width=4, depth=2)
    params = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"x.shape=\(5,\)"):
        net.apply(params, jnp.ones(5))
    with pytest.raises(ValueError, match=r"x.shape=\(2, 4\)"):
        jaxgrad.layer_jacobians(net, params, jnp.ones((2, 4)))


def test_bad_key_is_a_clear_error():
    with pytest.raises(ValueError, match="PRNG key"):
        jaxgrad.mlp(width=3, depth=1).init(jnp.zeros(3))


def test_numpy_integers_are_accepted_as_sizes_and_bools_are_not():
    """Issue 20 item 6: np.int64(8) was refused for width/depth but accepted for samples."""
    import numpy as np

    net = jaxgrad.mlp(width=np.int64(4), depth=np.int32(3))
    assert net.widths == (4, 4, 4, 4) and all(isinstance(n, int) for n in net.widths)
    assert jaxgrad.mlp(widths=[np.int64(3), 5, np.int16(2)]).widths == (3, 5, 2)
    res = jaxgrad.simulate(net, samples=np.int64(3), seed=np.uint32(1), chunk_size=np.int64(2))
    assert res.log_spectral_norm.shape == (3, 3)
    for bad in (True, np.bool_(True), 2.0):
        with pytest.raises(ValueError, match="width"):
            jaxgrad.mlp(width=bad, depth=2)


@pytest.mark.parametrize("dtype", ["int32", "complex64", "bool", "float16"])
def test_non_float_parameter_dtypes_are_refused(dtype):
    with pytest.raises(ValueError, match=rf"`dtype` must be None, 'float32' or 'float64', got dtype='{dtype}'"):
        jaxgrad.mlp(width=4, depth=2, dtype=dtype)


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), "half"])
def test_non_finite_residual_scales_are_refused(alpha):
    with pytest.raises(ValueError, match="alpha.*finite"):
        jaxgrad.mlp(width=4, depth=2, residual_alpha=alpha)

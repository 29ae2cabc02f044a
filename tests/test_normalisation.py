"""RMSNorm, LayerNorm and BatchNorm (issue 14): each layer against a plain per-sample reference,
the exact Jacobian spectrum, BatchNorm's batch coupling and σ_w invariance, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import theory


def _reference_norm(h, kind, eps):
    c = h - jnp.mean(h) if kind == "layer" else h
    return c / jnp.sqrt(jnp.mean(c * c) + eps)


@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_vector_norms_match_reference_and_their_jacobian_is_the_exact_scaled_projection(kind):
    n, eps = 7, 1e-3
    make = jaxgrad.layer_norm if kind == "layer" else jaxgrad.rms_norm
    layer = make(n, eps=eps)
    p = layer.init(jax.random.key(0))
    np.testing.assert_array_equal(p.gain, np.ones(n))  # gain 1 (and bias 0) at initialisation
    assert p.bias.shape == ((n,) if kind == "layer" else (0,)) and not np.any(p.bias)
    h = 0.3 + 0.5 * jax.random.normal(jax.random.key(1), (n,))
    np.testing.assert_allclose(layer.apply(p, h), _reference_norm(h, kind, eps), rtol=1e-6)
    J, out = layer.jacobian(p, h)
    J_ref = jax.jacrev(lambda x: _reference_norm(x, kind, eps))(h)
    np.testing.assert_allclose(J, J_ref, atol=1e-5)
    np.testing.assert_allclose(J, jax.jacrev(layer.apply, argnums=1)(p, h), atol=1e-5)
    np.testing.assert_allclose(out, layer.apply(p, h), rtol=1e-6)
    sv = np.linalg.svd(np.asarray(J_ref, np.float64), compute_uv=False)
    np.testing.assert_allclose(sv, theory.norm_jacobian_singular_values(np.asarray(h), kind, eps), atol=2e-5)
    bare = make(n, eps=eps, learnable=False)
    assert bare.init(jax.random.key(0)) == ()
    np.testing.assert_allclose(bare.apply((), h), layer.apply(p, h), rtol=1e-6)


def test_layer_norm_spectrum_at_eps_zero_is_a_projection_scaled_by_root_n_over_norm():
    h = np.array([1.0, -2.0, 0.5, 3.0, 0.0])
    c = h - h.mean()
    sv = theory.norm_jacobian_singular_values(h, "layer", 0.0)
    np.testing.assert_allclose(sv, [np.sqrt(5) / np.linalg.norm(c)] * 3 + [0.0, 0.0])


def _reference_batch_norm(H, eps):
    mu = H.mean(axis=0)
    var = ((H - mu) ** 2).mean(axis=0)
    return (H - mu) / jnp.sqrt(var + eps)


def test_batch_norm_normalises_each_feature_over_the_batch_and_its_jacobian_couples_the_batch():
    B, n, eps = 3, 2, 1e-5
    layer = jaxgrad.batch_norm(n, batch=B, eps=eps)
    assert layer.n_in == B * n
    p = layer.init(jax.random.key(0))
    h = jax.random.normal(jax.random.key(1), (B * n,))
    ref = lambda x: _reference_batch_norm(x.reshape(B, n), eps).reshape(-1)  # noqa: E731
    np.testing.assert_allclose(layer.apply(p, h), ref(h), rtol=1e-5, atol=1e-6)
    J = jax.jacrev(layer.apply, argnums=1)(p, h)
    np.testing.assert_allclose(J, jax.jacrev(ref)(h), atol=1e-5)
    blocks = np.asarray(J).reshape(B, n, B, n)
    assert np.abs(blocks[0, :, 1, :]).max() > 0.1  # input 1 moves output 0: the batch is coupled
    assert np.abs(blocks[:, 0, :, 1]).max() < 1e-6  # features are not


@pytest.mark.slow
def test_batch_norm_mlp_matches_a_plain_unroll_and_does_not_depend_on_sigma_w():
    B, n, L = 4, 3, 5
    with jax.enable_x64(True):
        # ε = 0: BN(σ_w z + b) = BN(z) exactly, so σ_w and σ_b drop out (with ε > 0 only up to ε/Var z).
        nets = [
            jaxgrad.batch_norm_mlp(n, L, batch=B, sigma_w=s, sigma_b=b, eps=0.0, dtype="float64")
            for s, b in ((0.5, 0.3), (2.0, 0.0))
        ]
        results = [jaxgrad.simulate(net, 2, seed=3, method="svd", dtype="float64") for net in nets]
        params = jaxgrad.draw_params(nets[0], 2, seed=3, dtype="float64")
        keys = jaxgrad.sample_keys(3, 0)
        h = jax.random.normal(keys.input, (B * n,), jnp.float32).astype(jnp.float64)
        P = np.eye(B * n)
        for ell in range(L):
            W, b = params[ell].dense.W[0], params[ell].dense.b[0]
            f = lambda x, W=W, b=b: jax.nn.relu(_reference_batch_norm(x.reshape(B, n) @ W.T + b, 0.0)).reshape(-1)  # noqa: E731
            P = np.asarray(jax.jacrev(f)(h)) @ P
            h = f(h)
            np.testing.assert_allclose(results[0].log_spectral_norm[0, ell], np.log(np.linalg.norm(P, 2)), atol=1e-8)
        for field in ("log_spectral_norm", "log_forward_gain", "log_backward_gain"):
            np.testing.assert_allclose(getattr(results[0], field), getattr(results[1], field), atol=1e-9)


def test_batch_norm_gradient_factor_closed_forms():
    assert theory.batch_norm_gradient_rate("relu") == pytest.approx(0.5 * np.log(np.pi / (np.pi - 1)))
    assert theory.batch_norm_gradient_rate("relu") == pytest.approx(0.19159, abs=1e-5)
    assert theory.batch_norm_gradient_factor("linear", 8) == pytest.approx(6 / 5)
    assert theory.batch_norm_gradient_factor("linear") == 1.0


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (jaxgrad.layer_norm, dict(width=1), "width ≥ 2"),
        (jaxgrad.rms_norm, dict(width=1), "width ≥ 2"),
        (jaxgrad.layer_norm, dict(width=4, eps=-1.0), "eps"),
        (jaxgrad.rms_norm, dict(width=4, learnable="yes"), "learnable"),
        (jaxgrad.batch_norm, dict(width=4, batch=1), "batch"),
        (jaxgrad.batch_norm, dict(width=4, batch=2.5), "batch"),
        (jaxgrad.batch_norm_mlp, dict(width=4, depth=3, batch=1), "batch"),
        (jaxgrad.batch_norm_mlp, dict(width=4, depth=3, weights="xavier"), "weights"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(activation="tanh"), "relu"),
        (dict(activation="relu", batch=16), "linear"),
        (dict(activation="linear", batch=3), "batch"),
    ],
)
def test_batch_norm_theory_refuses_cases_it_does_not_close(kwargs, match):
    with pytest.raises(ValueError, match=match):
        theory.batch_norm_gradient_factor(**kwargs)


def test_pre_norm_signal_variance_closed_form_and_refusals():
    # linear: E φ(σ_w z)² = σ_w², so q₀ + ℓβ²σ_w²; tanh: below it (|tanh x| < |x|); ReLU is refused (mean drift)
    assert theory.pre_norm_signal_variance("linear", 10, 0.5, sigma_w=2.0, q0=3.0) == pytest.approx(3.0 + 10 * 0.25 * 4)
    assert 1.0 < theory.pre_norm_signal_variance("tanh", 1, 1.0) < 2.0
    with pytest.raises(ValueError, match="odd"):
        theory.pre_norm_signal_variance("relu", 1, 1.0)
    with pytest.raises(ValueError, match="beta"):
        theory.pre_norm_signal_variance("tanh", 1, -1.0)

"""The ensemble engine against a plain per-sample computation, and its invariants."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad.probes import _input as sample_input
from jaxgrad.probes import _unit_vector as unit_vector
from jaxgrad.probes import sample_keys


def reference(net, seed, i, q0=1.0, spectrum_at=()):
    """Sample i the slow, obvious way: Network.init, layer_jacobians, NumPy SVD in float64."""
    keys = sample_keys(seed, i)
    params = net.init(keys.weights)
    x = sample_input(keys, net.widths[0], q0, jnp.float32)
    Js = [np.asarray(J, np.float64) for J in jaxgrad.layer_jacobians(net, params, x)]
    hs = jaxgrad.forward(net, params, x)
    u = np.asarray(unit_vector(keys.forward_probe, net.widths[0], jnp.float32), np.float64)
    fields = ("log_spectral_norm", "log_norm_product", "log_forward_gain", "log_backward_gain", "log_signal_norm")
    out = {k: [] for k in fields}
    P, bound, spectra = np.eye(net.widths[0]), 0.0, {}
    for ell, J in enumerate(Js):
        P = J @ P
        bound += np.log(np.linalg.svd(J, compute_uv=False)[0])
        e = np.asarray(unit_vector(jax.random.fold_in(keys.backward_probe, ell), J.shape[0], jnp.float32), np.float64)
        out["log_spectral_norm"].append(np.log(np.linalg.svd(P, compute_uv=False)[0]))
        out["log_norm_product"].append(bound)
        out["log_forward_gain"].append(np.log(np.linalg.norm(P @ u)))
        out["log_backward_gain"].append(np.log(np.linalg.norm(P.T @ e)))
        out["log_signal_norm"].append(np.log(np.linalg.norm(np.asarray(hs[ell + 1], np.float64))))
        if ell + 1 in spectrum_at:
            spectra[ell + 1] = np.linalg.svd(P, compute_uv=False)
    lyap = None
    if len(set(net.widths)) == 1:
        Q, acc = np.eye(net.widths[0]), 0.0
        for J in Js:
            Q, R = np.linalg.qr(J @ Q)
            with np.errstate(divide="ignore"):  # a dead ReLU unit makes the product singular
                acc = acc + np.log(np.abs(np.diag(R)))
        lyap = np.sort(acc / len(Js))[::-1]
    return {k: np.array(v) for k, v in out.items()}, spectra, lyap


NETWORKS = {
    "tanh": lambda: jaxgrad.mlp(width=6, depth=7, activation="tanh", sigma_w=1.4, sigma_b=0.3),
    "leaky_relu_he": lambda: jaxgrad.mlp(width=6, depth=7, activation="leaky_relu", weights="he"),
    "rectangular": lambda: jaxgrad.mlp(widths=[5, 8, 8, 3, 6], activation="gelu", sigma_w=1.2),
    "residual": lambda: jaxgrad.mlp(width=5, depth=6, activation="tanh", residual_alpha=0.5),
    "user_activation": lambda: jaxgrad.mlp(width=5, depth=5, activation=lambda x: jnp.sin(2 * x), weights="orthogonal"),
    "linear_orthogonal": lambda: jaxgrad.mlp(width=6, depth=7, activation="linear", weights="orthogonal", sigma_w=1.1),
}


@pytest.mark.parametrize(
    "name,method",
    [
        pytest.param(
            name,
            method,
            marks=() if (name, method) in {("tanh", "power"), ("linear_orthogonal", "svd")} else pytest.mark.slow,
        )
        for name in sorted(NETWORKS)
        for method in ("power", "svd")
    ],
)
def test_simulate_equals_the_per_sample_reference(name, method):
    net = NETWORKS[name]()
    spectrum_at = (2, net.depth)
    res = jaxgrad.simulate(net, samples=3, seed=11, method=method, spectrum_at=spectrum_at)
    lyap = jaxgrad.lyapunov_spectrum(net, samples=3, seed=11) if len(set(net.widths)) == 1 else None
    for i in range(3):
        ref, spectra, ref_lyap = reference(net, 11, i, spectrum_at=spectrum_at)
        for field, want in ref.items():
            np.testing.assert_allclose(getattr(res, field)[i], want, atol=2e-5 * net.depth, err_msg=field)
        for d in spectrum_at:
            k = min(net.widths)
            # compare σ_i/σ_1 linearly: rank-deficient products (dead ReLUs) have σ_i = 0
            got = np.exp(res.log_singular_values[d][i][:k] - res.log_singular_values[d][i][0])
            np.testing.assert_allclose(got, spectra[d][:k] / spectra[d][0], atol=1e-4, err_msg=f"sv{d}")
            np.testing.assert_allclose(res.log_singular_values[d][i][0], np.log(spectra[d][0]), atol=1e-4)
        if ref_lyap is not None:
            finite = np.isfinite(ref_lyap)  # −∞ exponents of a singular product: rounding noise in float32
            np.testing.assert_allclose(lyap[i][finite], ref_lyap[finite], atol=1e-3)
    assert all(v == 0 for v in res.nonfinite.values())


def test_vector_method_matches_the_matrix_forward_gain_and_its_backward_definition():
    net = jaxgrad.mlp(width=6, depth=8, activation="tanh", sigma_w=1.5)
    res = jaxgrad.simulate(net, samples=4, seed=3, method="vector")
    full = jaxgrad.simulate(net, samples=4, seed=3, method="svd")
    np.testing.assert_allclose(res.log_forward_gain, full.log_forward_gain, atol=1e-4)
    np.testing.assert_allclose(res.log_signal_norm, full.log_signal_norm, atol=1e-5)
    assert res.log_spectral_norm is None and res.log_norm_product is None
    # Backward: ln‖J₁ᵀ⋯J_ℓᵀ ê_ℓ‖ with ê_ℓ = δ⁽ℓ⁾/‖δ⁽ℓ⁾‖, δ backpropagated from a unit e_L.
    keys = sample_keys(3, 0)
    params = net.init(keys.weights)
    x = sample_input(keys, 6, 1.0, jnp.float32)
    Js = [np.asarray(J, np.float64) for J in jaxgrad.layer_jacobians(net, params, x)]
    delta = np.asarray(unit_vector(jax.random.fold_in(keys.backward_probe, net.depth - 1), 6, jnp.float32), np.float64)
    deltas = [delta]
    for J in reversed(Js):
        deltas.insert(0, J.T @ deltas[0])
    want = [np.log(np.linalg.norm(deltas[0]) / np.linalg.norm(deltas[ell])) for ell in range(1, net.depth + 1)]
    np.testing.assert_allclose(res.log_backward_gain[0], want, atol=1e-4)


@pytest.mark.parametrize("method", [pytest.param("power", marks=pytest.mark.slow), "vector"])
def test_results_do_not_depend_on_chunk_size(method):
    net = jaxgrad.mlp(width=8, depth=5, activation="tanh", sigma_w=2.0)
    a = jaxgrad.simulate(net, samples=37, seed=5, method=method, chunk_size=16)
    b = jaxgrad.simulate(net, samples=37, seed=5, method=method)
    c = jaxgrad.simulate(net, samples=40, seed=5, method=method, chunk_size=1)
    for field in ("log_forward_gain", "log_backward_gain", "log_spectral_norm"):
        if getattr(a, field) is None:
            continue
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        np.testing.assert_array_equal(getattr(a, field), getattr(c, field)[:37])
    offset = jaxgrad.simulate(net, samples=7, seed=5, method=method, sample_offset=30)
    np.testing.assert_array_equal(offset.log_forward_gain, a.log_forward_gain[30:37])


@pytest.mark.slow
@pytest.mark.parametrize("devices", [2])  # 8 devices: the next test
def test_several_host_devices_do_not_hang_and_match_one_device_bit_for_bit(devices):
    """Issue 20 item 1: with ≥ 2 host devices, widths ≥ 16 used to hang forever (LAPACK calls of two
    devices' programs at once); the runner now runs the host devices' programs one at a time."""
    script = textwrap.dedent(f"""
        import jax, numpy as np, jaxgrad
        assert len(jax.devices()) == {devices}, jax.devices()
        for width, method in ((16, "power"), (64, "svd")):
            net = jaxgrad.mlp(width=width, depth=4, activation="tanh", sigma_w=1.3)
            many = jaxgrad.simulate(net, samples=40, seed=1, method=method)
            one = jaxgrad.simulate(net, samples=40, seed=1, method=method, devices=jax.devices()[:1])
            for f in ("log_spectral_norm", "log_norm_product", "log_forward_gain", "log_backward_gain"):
                np.testing.assert_array_equal(getattr(many, f), getattr(one, f))
        print("identical")
    """)
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "identical" in out.stdout


@pytest.mark.slow
def test_eight_devices_give_bit_identical_results_to_one():
    script = textwrap.dedent("""
        import jax, numpy as np, jaxgrad
        assert len(jax.devices()) == 8, jax.devices()
        net = jaxgrad.mlp(width=8, depth=6, activation="tanh", sigma_w=1.7)
        many = jaxgrad.simulate(net, samples=150, seed=2, spectrum_at=(3,))
        one = jaxgrad.simulate(net, samples=150, seed=2, spectrum_at=(3,), devices=jax.devices()[:1])
        for f in ("log_spectral_norm", "log_norm_product", "log_forward_gain", "log_backward_gain"):
            np.testing.assert_array_equal(getattr(many, f), getattr(one, f))
        np.testing.assert_array_equal(many.log_singular_values[3], one.log_singular_values[3])
        l8 = jaxgrad.lyapunov_spectrum(net, samples=20, seed=2)
        l1 = jaxgrad.lyapunov_spectrum(net, samples=20, seed=2, devices=jax.devices()[:1])
        np.testing.assert_array_equal(l8, l1)
        print("identical")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "identical" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "activation,weights,sigma_w",
    [("tanh", "gaussian", 3.0), ("relu", "gaussian", 2.5), ("tanh", "gaussian", 0.3), ("linear", "orthogonal", 0.3)],
)
def test_ten_thousand_layers_in_float32_stay_finite_and_match_float64(activation, weights, sigma_w):
    # width 32: a ReLU layer kills every unit with probability 2⁻ⁿ, which over 10⁴ layers
    # is a real (not numerical) death of the signal at small n.
    net = jaxgrad.mlp(
        width=32 if activation == "relu" else 4, depth=10_000, activation=activation, weights=weights, sigma_w=sigma_w
    )
    r32 = jaxgrad.simulate(net, samples=4, seed=0)
    r64 = jaxgrad.simulate(net, samples=4, seed=0, dtype="float64")
    for field in ("log_spectral_norm", "log_norm_product", "log_forward_gain", "log_backward_gain"):
        assert r32.nonfinite[field] == 0, r32.nonfinite
    for field in ("log_spectral_norm", "log_norm_product", "log_forward_gain"):
        slope32 = getattr(r32, field)[:, -1] / net.depth
        slope64 = getattr(r64, field)[:, -1] / net.depth
        np.testing.assert_allclose(slope32, slope64, atol=1e-3, err_msg=field)
    if activation != "tanh":  # homogeneous: ‖h‖ itself is carried in the log domain
        assert np.all(np.isfinite(r32.log_signal_norm)) and np.all(r32.signal_exit_depth == 0)
        assert abs(r32.log_signal_norm[0, -1]) > 100  # far outside float32's range of e^±88
    elif sigma_w < 1:  # tanh: h underflows to 0; the depth is reported, the Jacobians stay exact
        assert np.all(r32.signal_exit_depth > 0) and r32.nonfinite["log_signal_norm"] == 4


@pytest.mark.parametrize("activation,sigma_w", [("tanh", 1.0), pytest.param("relu", 1.5, marks=pytest.mark.slow)])
def test_power_method_agrees_with_svd_to_1e4(activation, sigma_w):
    net = jaxgrad.mlp(width=64, depth=12, activation=activation, sigma_w=sigma_w)
    p = jaxgrad.simulate(net, samples=16, seed=1, method="power")
    s = jaxgrad.simulate(net, samples=16, seed=1, method="svd")
    # relative agreement of the norms, |Δ ln σ| ≈ |Δσ|/σ ≤ 1e-4, at every depth; the bound
    # Σ_k ln‖J_k‖ sums ℓ such norms
    assert np.max(np.abs(p.log_spectral_norm - s.log_spectral_norm)) <= 1e-4
    assert np.all(np.abs(p.log_norm_product - s.log_norm_product) <= 1e-4 * np.arange(1, 13))


def test_product_norm_runs_the_fixed_lanczos_length():
    from jaxgrad import probes

    # a stagnating adaptive run stopped up to 0.35 low (issue 27): the product's run is never adaptive
    for n in (4, 8, 64, 512):
        assert probes.product_lanczos_steps(n) == (probes.lanczos_steps(n), None)


@pytest.mark.slow
@pytest.mark.parametrize(
    "width,depth,activation,weights,sigma_w",
    [
        (16, 12, "tanh", "gaussian", 1.0),
        (512, 3, "tanh", "gaussian", 1.0),  # the widest: the smallest relative gap of a random J_ℓ
        (64, 8, "relu", "gaussian", 2.0**0.5),  # rank-deficient J_ℓ (about half the rows zero)
        (64, 8, "tanh", "orthogonal", 1.2),  # orthogonal W: J_ℓ's spectrum is φ′'s, clustered near σ_w
        (32, 8, "linear", "orthogonal", 1.0),  # every singular value 1: no gap at all (Lanczos breaks down)
    ],
)
def test_power_meets_the_1e4_contract_on_hard_cases(width, depth, activation, weights, sigma_w):
    net = jaxgrad.mlp(width=width, depth=depth, activation=activation, weights=weights, sigma_w=sigma_w)
    samples = 2 if width > 256 else 8
    p = jaxgrad.simulate(net, samples=samples, seed=4, method="power")
    s = jaxgrad.simulate(net, samples=samples, seed=4, method="svd")
    assert np.max(np.abs(p.log_spectral_norm - s.log_spectral_norm)) <= 1e-4
    per_layer = np.abs(np.diff(p.log_norm_product, axis=1, prepend=0) - np.diff(s.log_norm_product, axis=1, prepend=0))
    assert np.max(per_layer) <= 1e-4


@pytest.mark.slow
def test_norms_at_records_the_product_norm_at_those_depths_only_and_everything_else_as_before():
    net = jaxgrad.mlp(width=24, depth=20, activation="tanh", sigma_w=1.5, sigma_b=0.1)
    depths = jaxgrad.log_spaced_depths(20, 6)
    assert depths[0] == 1 and depths[-1] == 20 and list(depths) == sorted(set(depths))
    every = jaxgrad.simulate(net, samples=16, seed=2)
    some = jaxgrad.simulate(net, samples=16, seed=2, norms_at=depths)
    exact = jaxgrad.simulate(net, samples=16, seed=2, method="svd")
    assert some.log_spectral_norm.shape == (16, len(depths)) and some.config["norms_at"] == list(depths)
    columns = np.asarray(depths) - 1
    assert np.max(np.abs(some.log_spectral_norm - exact.log_spectral_norm[:, columns])) <= 1e-4
    for field in ("log_norm_product", "log_forward_gain", "log_backward_gain", "log_signal_norm"):
        np.testing.assert_array_equal(getattr(some, field), getattr(every, field), err_msg=field)
    assert every.config["norms_at"] is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(norms_at=(0,)), r"norms_at.*1\.\.5.*norms_at=0"),
        (dict(norms_at=(6,)), r"norms_at.*1\.\.5.*norms_at=6"),
        (dict(norms_at=()), r"norms_at.*at least one"),
        (dict(norms_at=(2,), method="vector"), r"norms_at.*method='vector'"),
        (dict(norms_at=(2,), method="matrix_free"), r"norms_at.*method='matrix_free'.*spectrum_at"),
        (dict(norms_at=(2,), fields=("log_norm_product",)), r"norms_at.*leaves out"),
    ],
)
def test_bad_norms_at(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxgrad.simulate(jaxgrad.mlp(width=4, depth=5), samples=4, **kwargs)


def test_signal_overflow_is_reported_not_dropped():
    net = jaxgrad.mlp(width=4, depth=40, activation=lambda x: jnp.exp(x), sigma_w=2.0, sigma_b=1.0)
    res = jaxgrad.simulate(net, samples=8, seed=0)
    assert res.log_signal_norm.shape == (8, 40)
    assert np.all(res.signal_exit_depth > 0) and np.all(res.signal_exit_depth <= 40)
    assert res.nonfinite["log_signal_norm"] == 8


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(samples=0), r"samples=0"),
        (dict(samples=-3), r"samples=-3"),
        (dict(samples=4, spectrum_at=(0,)), r"spectrum_at.*1\.\.5"),
        (dict(samples=4, spectrum_at=(6,)), r"spectrum_at.*1\.\.5"),
        (dict(samples=4, method="qr"), r"method='qr'.*'power'"),
        (dict(samples=4, dtype="float16"), r"dtype='float16'.*'float64'"),
        (dict(samples=4, q0=-1.0), r"q0=-1.0"),
        (dict(samples=4, chunk_size=0), r"chunk_size=0"),
    ],
)
def test_bad_simulate_arguments(kwargs, match):
    net = jaxgrad.mlp(width=4, depth=5)
    with pytest.raises(ValueError, match=match):
        jaxgrad.simulate(net, **kwargs)

"""Attention and convolution layers (issue 15): references, exact facts and their theory.

Each layer is pinned to a plain jnp reference before any statistic is trusted; each closed form
of `jaxgrad.theory.attention` is checked per sample (bounds, exact identities) or against Monte
Carlo at 4 standard errors. Small sizes (8 tokens × 8 features, 4 channels × 4–8 pixels).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import convolution, ensemble, measures, stats, theory, transformer

EPS32 = float(np.finfo(np.float32).eps)
T, D = 8, 8


def _reference_attention(params, X, heads, causal):
    """Per head, explicit exp / row sums: the textbook formula."""
    d_h = X.shape[1] // heads
    outs = []
    for h in range(heads):
        cols = slice(h * d_h, (h + 1) * d_h)
        Q, K, V = X @ params.W_Q[:, cols], X @ params.W_K[:, cols], X @ params.W_V[:, cols]
        S = Q @ K.T / math.sqrt(d_h)
        if causal:
            S = np.where(np.tril(np.ones_like(S)) > 0, S, -np.inf)
        E = np.exp(S - S.max(axis=1, keepdims=True))
        outs.append((E / E.sum(axis=1, keepdims=True)) @ V)
    return np.concatenate(outs, axis=1)


@pytest.mark.parametrize("heads, causal, alpha", [(1, False, None), (2, True, 0.5)])
def test_attention_matches_the_reference(heads, causal, alpha):
    with jax.enable_x64(True):
        layer = jaxgrad.attention(tokens=T, width=D, heads=heads, causal=causal, residual_scale=alpha)
        p = layer.init(jax.random.key(1))
        h = jnp.asarray(np.random.default_rng(2).standard_normal(T * D))
        X = np.asarray(h).reshape(T, D)
        want = _reference_attention(jax.tree.map(np.asarray, p), X, heads, causal)
        if alpha is not None:
            want = X + alpha * want
        got = jax.jit(layer.apply)(p, h)
        np.testing.assert_allclose(np.asarray(got).reshape(T, D), want, rtol=1e-12, atol=1e-12)


def _reference_conv(W, b, h, spatial):
    """Σ_t W[t]ᵀ h[x + t − c] with np.roll, tap by tap."""
    kernel = W.shape[:-2]
    out = np.zeros_like(h)
    for t in np.ndindex(*kernel):
        shifted = h
        for axis, (ta, k) in enumerate(zip(t, kernel)):
            shifted = np.roll(shifted, -(ta - (k - 1) // 2), axis=axis)
        out = out + shifted @ W[t]
    return out + b


@pytest.mark.parametrize("spatial, kernel, weights", [((8,), 2, "gaussian"), ((4, 4), 3, "delta_orthogonal")])
def test_conv_matches_the_reference_and_its_jacobian_is_exact(spatial, kernel, weights):
    C = 4
    with jax.enable_x64(True):
        layer = jaxgrad.conv(C, spatial, kernel, weights, "tanh", sigma_w=1.3, sigma_b=0.2)
        rng = np.random.default_rng(3)
        if weights == "delta_orthogonal":  # its structure is the point; Gaussian draws are any numbers
            p = layer.init(jax.random.key(3))
        else:
            p = convolution.ConvParams(
                jnp.asarray(rng.standard_normal((kernel, C, C)) / 3), jnp.asarray(0.2 * rng.standard_normal(C))
            )
        h = jnp.asarray(rng.standard_normal(layer.n_in))
        W, b = np.asarray(p.W), np.asarray(p.b)
        want = np.tanh(_reference_conv(W, b, np.asarray(h).reshape(*spatial, C), spatial)).reshape(-1)
        apply, J, out, J_rev, K = jax.jit(
            lambda p, h: (
                layer.apply(p, h),
                *layer.jacobian(p, h),
                jax.jacrev(layer.apply, argnums=1)(p, h),
                convolution.conv_matrix(p.W, spatial),
            )
        )(p, h)
        np.testing.assert_allclose(apply, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(J, J_rev, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    if weights == "delta_orthogonal":  # σ_w H at the centre tap, zeros elsewhere: K_W = I ⊗ σ_w Hᵀ exactly
        H = W[1, 1] / 1.3
        np.testing.assert_allclose(H.T @ H, np.eye(C), atol=1e-12)
        assert np.count_nonzero(W) == np.count_nonzero(W[1, 1])
        np.testing.assert_array_equal(np.asarray(K), np.kron(np.eye(math.prod(spatial)), W[1, 1].T))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jaxgrad.attention(tokens=0), "tokens"),
        (lambda: jaxgrad.attention(tokens=-3), "tokens"),
        (lambda: jaxgrad.attention(width=0), "width"),
        (lambda: jaxgrad.attention(width=12, heads=5), r"heads.*divide width=12.*\[1, 2, 3, 4, 6, 12\]"),
        (lambda: jaxgrad.attention(residual_scale=float("inf")), "residual_scale"),
        (lambda: jaxgrad.conv(channels=0), "channels"),
        (lambda: jaxgrad.conv(spatial=(4,), kernel=5), r"kernel.*larger than the image.*1\.\.4"),
        (lambda: jaxgrad.conv(kernel=4, weights="delta_orthogonal"), r"kernel.*even.*centre"),
        (lambda: jaxgrad.conv(weights="orthogonal"), "weights"),
        (lambda: jaxgrad.conv(spatial=(0,)), "spatial"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_even_gaussian_kernels_are_fine():
    assert jaxgrad.conv(4, (8,), kernel=4, weights="gaussian").n_in == 32


# --------------------------------------------------------------------------- exact facts
#
# The suite budget allows few compiled programs (each distinct structure, depth, probe and dtype
# compiles, seconds each on 2 cores), so the tests share networks: one residual attention stack
# for the gradients, one of depth 16 for the residual-branch facts, one per kernel for the CNNs.

GRAD_NET = jaxgrad.serial(*[jaxgrad.attention(tokens=T, width=D, heads=2, residual_scale=0.5)] * 3)


@jax.jit
def _loss_grad(params, h, e):
    """Plain jax.grad of ⟨e, net(h)⟩ through `Network.apply`: the reference of the gradient probe."""
    return jax.grad(lambda ps: jnp.vdot(e, GRAD_NET.apply(ps, h)))(params)


def test_identical_tokens_give_exactly_zero_query_and_key_gradients():
    """X = 1xᵀ: every score of a row is equal, whatever W_Q and W_K, so the softmax does not move
    (and X + α SA(X) keeps the tokens identical, so this holds at every layer)."""
    params = GRAD_NET.init(jax.random.key(0))
    rng = np.random.default_rng(1)
    X = jnp.asarray(np.tile(rng.standard_normal(D), (T, 1)).reshape(-1), jnp.float32)
    E = jnp.asarray(rng.standard_normal(T * D), jnp.float32)
    grads = _loss_grad(params, X, E)
    for g in grads:
        scale = float(jnp.linalg.norm(g.W_V))
        assert scale > 0.1
        for W in (g.W_Q, g.W_K):
            assert float(jnp.linalg.norm(W)) <= 4 * EPS32 * scale


@pytest.mark.slow
def test_weight_gradient_norms_probe_equals_jax_grad():
    """Per sample and layer, ln‖∂L/∂W‖ of the probe's scan and vjp equals plain jax.grad of the same sample.

    Float32 both; the tolerance, 1e-5 on the log (≈ 84 ε₃₂), is rounding of two summation orders.
    """
    from jaxgrad.probes import sample_keys

    samples = 2
    out = measures.measure(measures.weight_gradient_norms, GRAD_NET, samples, seed=3)
    for i in range(samples):  # sample i's weights, input and error signal as the engine draws them
        keys = sample_keys(3, i)
        params = tuple(GRAD_NET.layers[l].init(jax.random.fold_in(keys.weights, l)) for l in range(3))
        h0 = jax.random.normal(keys.input, (T * D,), jnp.float32)
        e = jax.random.normal(jax.random.fold_in(keys.backward_probe, 2), (T * D,), jnp.float32)
        grads = _loss_grad(params, h0, e / jnp.linalg.norm(e))
        for name in ("W_Q", "W_K", "W_V"):
            want = [np.log(np.linalg.norm(np.asarray(getattr(g, name), np.float64))) for g in grads]
            np.testing.assert_allclose(out[f"log_grad_{name}"][i], want, rtol=0, atol=1e-5)


def test_token_geometry_equals_numpy():
    X = np.random.default_rng(5).standard_normal((T, D))
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    G = U @ U.T
    s = np.linalg.svd(X, compute_uv=False)
    R = X - X.mean(axis=0)
    geometry = jax.jit(
        lambda X: jnp.stack(
            [
                f(X)
                for f in (
                    transformer.token_cosine,
                    transformer.rank_one_distance,
                    transformer.token_residual,
                    transformer.max_token_residual,
                )
            ]
        )
    )
    with jax.enable_x64(True):
        got = geometry(jnp.asarray(X))
        ones = geometry(jnp.ones((T, D)))
    want = [
        (G.sum() - np.trace(G)) / (T * (T - 1)),
        np.sqrt(1 - s[0] ** 2 / (s**2).sum()),
        np.linalg.norm(R) / np.linalg.norm(X),
        np.linalg.norm(R, axis=1).max(),
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert float(ones[0]) == pytest.approx(1.0) and float(ones[2]) == 0.0


def test_pure_attention_never_beats_dong_bound_and_collapses_cubically():
    r"""Per sample and depth ρ_ℓ ≤ bound(ρ_{ℓ−1}) + rounding floor, and ln ρ_{ℓ+1} ≈ 3 ln ρ_ℓ + c.

    Float64; the floor is 2(T + d)√d ε times the largest token norm (Higham's γ_n for the T×d
    products), which matters only once ρ has collapsed to rounding. The exponent is the pooled
    least-squares slope over (sample, layer) pairs well above the floor; its SE is a jackknife
    over groups of samples.
    """
    depth, samples, heads = 5, 128, 1
    net = jaxgrad.serial(*[jaxgrad.attention(tokens=T, width=D, heads=heads)] * depth)

    def dong(p, h_in, h_out):
        a, v = transformer.score_and_value_norms(p, heads)
        log_in = jnp.log(transformer.max_token_residual(h_in.reshape(T, D)))
        Y = h_out.reshape(T, D)
        return {
            "log_in": log_in,
            "log_out": jnp.log(transformer.max_token_residual(Y)),
            "log_bound": theory.attention_residual_log_bound(log_in, a, v),
            "log_scale": jnp.log(jnp.max(jnp.linalg.norm(Y, axis=1))),
        }

    out = measures.measure(measures.layerwise, net, samples, seed=0, dtype="float64", layer=dong)
    eps = float(np.finfo(np.float64).eps)
    log_floor = np.log(2 * (T + D) * math.sqrt(D) * eps) + out["log_scale"]
    excess = out["log_out"] - np.logaddexp(out["log_bound"], log_floor)
    assert np.nanmax(excess) <= 0.0
    x, y, rel = out["log_in"], out["log_out"], out["log_out"] - out["log_scale"]
    clean = (rel > -28) & (x - out["log_scale"] < -1.5)  # collapsing, and well above the rounding floor
    assert clean.sum() > samples // 2
    assert np.median(out["log_bound"][clean] - y[clean]) < 10  # the bound is not vacuous where it matters
    slope = np.polyfit(x[clean], y[clean], 1)[0]
    groups = np.array_split(np.arange(samples), 16)
    jack = np.array(
        [
            np.polyfit(
                x[np.isin(np.arange(samples), g, invert=True)[:, None] & clean],
                y[np.isin(np.arange(samples), g, invert=True)[:, None] & clean],
                1,
            )[0]
            for g in groups
        ]
    )
    se = math.sqrt((len(groups) - 1) / len(groups) * ((jack - jack.mean()) ** 2).sum())
    assert abs(slope - theory.RANK_COLLAPSE_EXPONENT) <= 4 * se, (slope, se)


# One residual stack of depth 16, one compiled program (float64): layer ℓ of sample i is drawn from
# (seed, i, ℓ) whatever the depth, so column L of a run with branch scale α is the output of the
# depth-L network with that α. Every fact below reads its depth from these runs.
RES_DEPTH = 16
RES_NET = jaxgrad.serial(*[jaxgrad.attention(tokens=T, width=D, residual_scale=1.0)] * RES_DEPTH)


def _residual_geometry(h):
    X = h.reshape(T, D)
    m = jnp.mean(X, axis=0)
    return {"token_cosine": transformer.token_cosine(X), "mean_sq": jnp.sum(m**2), "residual": (X - m).reshape(-1)}


def _residual_run(samples, **hyper):
    net = jaxgrad.serial(*[layer.hyper.rebuild(**hyper) for layer in RES_NET.layers])
    return measures.measure(measures.layerwise, net, samples, seed=0, dtype="float64", state=_residual_geometry)


@pytest.fixture(scope="module")
def residual_runs():
    runs = {
        "unscaled": _residual_run(128, residual_scale=1.0),
        "uniform": _residual_run(512, residual_scale=0.7, sigma_qk=0.0, sigma_w=1.2),
    }
    for L in (4, RES_DEPTH):
        runs["scaled", L] = _residual_run(128, residual_scale=1.0 / math.sqrt(L))
    return runs


def test_uniform_attention_keeps_the_residual_and_grows_the_mean_token_as_predicted(residual_runs):
    """σ_qk = 0: R_L = R_0 exactly (to rounding) and E‖x̄_L‖²/‖x̄_0‖² = (1 + α²σ_w²)^L (Noci et al. 2022), L = 6."""
    depth, alpha, sigma_w = 6, 0.7, 1.2
    out = residual_runs["uniform"]
    R = out["residual"]
    assert np.max(np.abs(R[:, RES_DEPTH] - R[:, 0])) <= 1e-12 * np.max(np.abs(R))
    ratio = out["mean_sq"][:, depth] / out["mean_sq"][:, 0]
    mean, se = stats.mean_and_se(ratio)
    predicted = float(theory.uniform_attention_mean_growth(alpha, sigma_w, depth))
    assert abs(mean - predicted) <= 4 * se, (mean, se, predicted)


def test_scaled_residual_attention_keeps_tokens_apart_as_depth_doubles_unscaled_collapses(residual_runs):
    """Softmax attention, α = 1/√L vs α = 1, L = 4 → 16 (Noci et al. 2022)."""
    lo, hi = (stats.mean_and_se(residual_runs["scaled", L]["token_cosine"][:, L]) for L in (4, RES_DEPTH))
    assert hi[0] < 0.3 and abs(hi[0] - lo[0]) <= 4 * math.hypot(lo[1], hi[1]) + 0.05
    unscaled = residual_runs["unscaled"]["token_cosine"]
    assert np.mean(1 - unscaled[:, RES_DEPTH]) < 0.25 * np.mean(1 - unscaled[:, 4])


def test_new_branch_scales_and_sigmas_do_not_recompile(residual_runs):
    before = ensemble.compile_count()  # the fixture compiled the structure; new α, σ_w reuse it
    out = _residual_run(2, residual_scale=0.3, sigma_w=2.0)
    assert ensemble.compile_count() == before and np.all(np.isfinite(out["token_cosine"]))


# --------------------------------------------------------------------------- delta-orthogonal convolutions


def test_linear_delta_orthogonal_product_is_an_exact_isometry_at_depth_1000_in_float32():
    """Every σ_i(J_L⋯J_1) = σ_w^L: max |ln σ_i − L ln σ_w| ≤ 1e-4·L at L = 1,000, float32 (explicit product;
    the QR path is checked at depth 1,000 and 10,000 by the delta_orthogonal study)."""
    L, sigma_w = 1000, 1.05
    net = jaxgrad.serial(*[jaxgrad.conv(4, (4,), 3, "delta_orthogonal", "linear", sigma_w)] * L)
    predicted = float(theory.delta_orthogonal_log_singular_value(sigma_w, L))
    svd = measures.measure(measures.product_spectrum, net, 4, seed=0, depths=(L,))["log_singular_values"]
    assert svd.shape == (4, 1, 16) and np.max(np.abs(svd - predicted)) <= 1e-4 * L


@pytest.mark.slow
def test_delta_orthogonal_tanh_cnn_has_the_orthogonal_mlp_spectrum_per_pixel_gaussian_spreads_it():
    r"""At χ₁ = 1 each pixel of a delta-orthogonal CNN is an orthogonal MLP of width C in law, so the
    spectrum's linear statistics (mean of λ = σ², of λ²) match (two-sample test, 4 SE); Gaussian
    kernels spread it: the spread of ln σ_i exceeds the delta kernels' by many SE."""
    C, N, L, samples, sigma_b = 4, 4, 8, 256, 0.05
    sigma_w = float(theory.critical_sigma_w("tanh", sigma_b))
    q_star = float(theory.q_star("tanh", sigma_w, sigma_b))
    q0 = (q_star - sigma_b**2) / sigma_w**2
    nets = {
        w: jaxgrad.serial(*[jaxgrad.conv(C, (N,), 3, w, "tanh", sigma_w, sigma_b)] * L)
        for w in ("delta_orthogonal", "gaussian")
    }
    nets["mlp"] = jaxgrad.mlp(width=C, depth=L, weights="orthogonal", sigma_w=sigma_w, sigma_b=sigma_b)
    lam = {
        k: np.exp(
            2.0
            * measures.measure(measures.product_spectrum, net, samples, seed=int(k == "mlp"), q0=q0, depths=(L,))[
                "log_singular_values"
            ][:, 0]
        )
        for k, net in nets.items()
    }
    for power in (1, 2):
        (a, sa), (b, sb) = (stats.mean_and_se((lam[k] ** power).mean(axis=1)) for k in ("delta_orthogonal", "mlp"))
        assert abs(a - b) <= 4 * math.hypot(sa, sb), (power, a, sa, b, sb)
    # the spread of ln σ_i within a sample (λ itself is too heavy-tailed for a quick test)
    (g, sg), (d, sd) = (stats.mean_and_se(np.log(lam[k]).std(axis=1)) for k in ("gaussian", "delta_orthogonal"))
    assert g - d > 10 * math.hypot(sg, sd), (g, sg, d, sd)


def test_fourier_mode_power():
    spatial, C = (4,), 4
    p = convolution.fourier_mode_power(jnp.ones(4 * C), spatial, C)
    np.testing.assert_allclose(p, np.eye(4)[0], atol=1e-7)
    x = np.random.default_rng(0).standard_normal((4, C))
    rho = np.array([np.sum(x * np.roll(x, -k, axis=0)) for k in range(4)]) / np.sum(x * x)
    np.testing.assert_allclose(
        convolution.fourier_mode_power(jnp.asarray(x.reshape(-1), jnp.float32), spatial, C),
        np.fft.fft(rho).real / 4,
        atol=1e-5,
    )


@pytest.mark.slow
def test_fourier_modes_probe_keeps_mode_powers_through_delta_orthogonal_kernels_gaussian_moves_them():
    """Linear, three delta-orthogonal layers then three Gaussian ones, one program: every pixel turned by
    the same σ_w Hᵀ keeps the mode powers exactly (to float32 rounding); Gaussian kernels weigh each
    Fourier mode by its own matrix Ŵ(k) and move them."""
    spatial, C = (4,), 4
    net = jaxgrad.serial(
        *[jaxgrad.conv(C, spatial, 3, "delta_orthogonal", "linear", 1.0)] * 3,
        *[jaxgrad.conv(C, spatial, 3, "gaussian", "linear", 1.0)] * 3,
    )
    out = measures.measure(measures.fourier_modes, net, 4, seed=0, spatial=spatial, channels=C)["mode_power"]
    assert out.shape == (4, 7, 4)
    np.testing.assert_allclose(out[:, 3], out[:, 0], atol=1e-5)
    assert np.min(np.max(np.abs(out[:, -1] - out[:, 3]), axis=1)) > 0.05

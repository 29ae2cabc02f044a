"""method="matrix_free" against the materialised Jacobians (method="svd"), method="auto", and its validation.

Each claim compares a number computed without any matrix (JVPs/VJPs, Lanczos) with the same
number from the materialised Jacobians and exact SVDs: equal to 1e-4 relative (measured: a
few 1e-7 at these sizes, float32 rounding).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import ensemble, probes

eqx = pytest.importorskip("equinox")

RTOL = 1e-4  # relative, on norms (not their logs): |exp(Δ ln) − 1|
TOKENS, FEATURES = 5, 8


class TokenMixing(eqx.Module):
    """X ↦ X + tanh(A X W): a block on a (tokens, features) state, mixing both axes."""

    A: jax.Array
    W: jax.Array

    def __init__(self, key):
        k_a, k_w = jax.random.split(key)
        self.A = 1.2 * jax.random.normal(k_a, (TOKENS, TOKENS)) / np.sqrt(TOKENS)
        self.W = 1.2 * jax.random.normal(k_w, (FEATURES, FEATURES)) / np.sqrt(FEATURES)

    def __call__(self, X):
        return X + jnp.tanh(self.A @ X @ self.W)


def make_mixing(key):
    return TokenMixing(key)


SAMPLES, SEED = 2, 2
TANH_DEPTHS, RECTANGULAR_DEPTHS, MIXING_DEPTHS = (1, 3, 6), (1, 2, 3), (1, 3, 5)


def tanh_mlp(sigma_w=1.5):
    # width 40 > 32 Lanczos steps: the Krylov space is a proper subspace, as at large widths
    return jaxgrad.mlp(width=40, depth=6, activation="tanh", sigma_w=sigma_w, sigma_b=0.3)


def reference(net, params, i, depths):
    """Sample i the slow, obvious way, in float64: its Jacobians (jax.jacrev, eager), products and SVDs."""
    keys = jaxgrad.sample_keys(SEED, i)
    x = probes._input(keys, net.widths[0], 1.0, jnp.float32)
    with jax.enable_x64(True):  # the float32 weights, computed in float64 (a forward pass cannot overflow)
        params64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        Js = [np.asarray(J) for J in jaxgrad.layer_jacobians(net, params64, jnp.asarray(x, jnp.float64))]
    u = np.asarray(probes._unit_vector(keys.forward_probe, net.widths[0], jnp.float32), np.float64)
    e = np.asarray(
        probes._unit_vector(jax.random.fold_in(keys.backward_probe, net.depth - 1), net.widths[-1], jnp.float32),
        np.float64,
    )
    P, out = np.eye(net.widths[0]), {"norms": [], "forward": [], "product": {}}
    for ell, J in enumerate(Js, 1):
        P = J @ P
        out["norms"].append(np.linalg.norm(J, 2))
        out["forward"].append(np.linalg.norm(P @ u))
        if ell in depths:
            out["product"][ell] = np.linalg.norm(P, 2)
    deltas = [e]  # δ backpropagated from e_L: backward gain ℓ = ‖δ⁽⁰⁾‖ / ‖δ⁽ℓ⁾‖ (the vector method's definition)
    for J in reversed(Js):
        deltas.insert(0, J.T @ deltas[0])
    out["backward"] = [np.linalg.norm(deltas[0]) / np.linalg.norm(deltas[ell]) for ell in range(1, net.depth + 1)]
    return out


def _relative(log_measured, value):
    """max |measured/value − 1|, the measured norm given as its log."""
    return float(np.max(np.abs(np.exp(np.asarray(log_measured, np.float64) - np.log(value)) - 1)))


def assert_equals_reference(free, net, params_of, depths):
    """Every matrix-free field within RTOL of the float64 reference; `params_of(i)` gives sample i's parameters."""
    worst = {}
    for i in range(SAMPLES):
        ref = reference(net, params_of(i), i, depths)
        checks = {  # ‖J_d⋯J₁‖₂ by Lanczos on jvp/vjp through the chain; ‖J_ℓ‖₂ by Lanczos on the layer alone
            "product": (
                np.array([free.log_singular_values[d][i, 0] for d in depths]),
                np.array([ref["product"][d] for d in depths]),
            ),
            "per_layer": (np.diff(free.log_norm_product[i], prepend=0.0), np.array(ref["norms"])),
            "forward": (free.log_forward_gain[i], np.array(ref["forward"])),
            "backward": (free.log_backward_gain[i], np.array(ref["backward"])),
        }
        for name, (measured, want) in checks.items():
            worst[name] = max(worst.get(name, 0.0), _relative(measured, want))
    assert all(v <= RTOL for v in worst.values()), worst
    assert all(d in free.log_singular_values and free.log_singular_values[d].shape == (SAMPLES, 1) for d in depths)
    assert free.log_spectral_norm is None and free.config["method"] == "matrix_free"
    return worst


def _stacked(params, i):
    return jax.tree.map(lambda a: a[i], params)


def drawn(net, i):
    """The weights sample i draws (eagerly: equal to the engine's up to the last bit)."""
    return net.init(jaxgrad.sample_keys(SEED, i).weights)


@pytest.mark.slow
def test_tanh_mlp_equals_the_materialised_values_inside_and_far_outside_the_float32_range():
    """Drawn weights; σ_w = 1e-9 puts ln‖J_6⋯J₁‖ near −120 (float32 holds e^±88). One program for the grid."""
    grid = [1.5, 1e-9]
    free = jaxgrad.sweep(
        tanh_mlp(), SAMPLES, SEED, grid={"sigma_w": grid}, method="matrix_free", spectrum_at=TANH_DEPTHS
    )
    assert np.all(free.log_singular_values[6][1] < -90)
    for g, sigma_w in enumerate(grid):
        net = tanh_mlp(sigma_w)
        point = free._replace(
            **{f: getattr(free, f)[g] for f in ("log_norm_product", "log_forward_gain", "log_backward_gain")},
            log_singular_values={d: v[g] for d, v in free.log_singular_values.items()},
        )
        assert_equals_reference(point, net, lambda i: drawn(net, i), TANH_DEPTHS)


@pytest.mark.slow
def test_rectangular_homogeneous_layers_equal_the_materialised_values():
    """A non-square layer before a square run (the chain changes width; depth 2 lies inside the run), leaky ReLU
    without bias (the signal is carried as direction × log-scale); given weights, also scaled by 1e14 (ln‖P‖ > 90;
    float32 holds e^88)."""
    net = jaxgrad.mlp(widths=[5, 8, 8, 8], activation="leaky_relu", weights="he")
    rng = np.random.default_rng(0)
    base = tuple(
        jaxgrad.DenseParams(
            rng.normal(size=(SAMPLES, m, n)).astype(np.float32) * np.float32(np.sqrt(2 / n)),
            np.zeros((SAMPLES, m), np.float32),
        )
        for n, m in zip(net.widths, net.widths[1:])
    )
    before = None
    for scale in (1.0, 1e14):
        params = tuple(jaxgrad.DenseParams(p.W * np.float32(scale), p.b) for p in base)
        free = jaxgrad.simulate(
            net, SAMPLES, seed=SEED, method="matrix_free", params=params, spectrum_at=RECTANGULAR_DEPTHS
        )
        assert_equals_reference(free, net, lambda i: tuple(_stacked(p, i) for p in params), RECTANGULAR_DEPTHS)
        if before is None:
            before = ensemble.compile_count()
        else:
            assert ensemble.compile_count() == before  # given parameters are data
    assert np.all(free.log_singular_values[3] > 90)


@pytest.mark.slow
def test_an_adapter_block_with_a_matrix_state_equals_the_materialised_values():
    """Given (eagerly drawn) parameters: drawn ones are the tanh MLP's case, and given ones compile faster."""
    net = jaxgrad.adapters.serial_from_equinox([make_mixing] * 5, shape=(TOKENS, FEATURES))
    params = jax.vmap(net.init)(jax.random.split(jax.random.key(1), SAMPLES))
    free = jaxgrad.simulate(net, SAMPLES, seed=SEED, method="matrix_free", params=params, spectrum_at=MIXING_DEPTHS)
    assert_equals_reference(free, net, lambda i: tuple(_stacked(p, i) for p in params), MIXING_DEPTHS)
    assert free.config["state_shape"] == [TOKENS, FEATURES] and net.widths[0] == TOKENS * FEATURES


def test_auto_picks_materialised_for_small_states_and_matrix_free_above_and_says_so():
    n = jaxgrad.AUTO_MATRIX_FREE_ABOVE
    small, wide = jaxgrad.mlp(width=8, depth=2), jaxgrad.mlp(width=n + 1, depth=1, activation="linear")
    assert jaxgrad.choose_method(small) == "power" and jaxgrad.choose_method(wide) == "matrix_free"
    assert jaxgrad.choose_method(jaxgrad.mlp(width=n, depth=1)) == "power"
    rng = np.random.default_rng(1)
    given = tuple(
        jaxgrad.DenseParams(
            rng.normal(size=(2, 8, 8)).astype(np.float32) / np.float32(np.sqrt(8)), np.zeros((2, 8), np.float32)
        )
        for _ in range(2)
    )
    res = jaxgrad.simulate(small, 2, seed=0, method="auto", params=given, fields=["log_spectral_norm"])
    assert (res.config["method"], res.config["requested_method"]) == ("power", "auto")
    assert res.log_spectral_norm is not None
    W = np.random.default_rng(0).normal(size=(1, n + 1, n + 1)).astype(np.float32) / np.float32(np.sqrt(n + 1))
    params = (jaxgrad.DenseParams(W, np.zeros((1, n + 1), np.float32)),)
    res = jaxgrad.simulate(wide, 1, seed=0, method="auto", params=params, fields=["log_forward_gain"])
    assert (res.config["method"], res.config["requested_method"]) == ("matrix_free", "auto")
    assert res.config["state_shape"] == [n + 1]
    u = np.asarray(probes._unit_vector(jaxgrad.sample_keys(0, 0).forward_probe, n + 1, jnp.float32), np.float64)
    assert _relative(res.log_forward_gain[0, 0], np.linalg.norm(W[0].astype(np.float64) @ u)) <= RTOL
    with pytest.raises(ValueError, match=r"'log_spectral_norm' for method='matrix_free'"):
        jaxgrad.simulate(wide, 1, method="auto", fields=["log_spectral_norm"])


@pytest.mark.parametrize(
    "call",
    [
        lambda net: jaxgrad.simulate(net, 2, method="matrix_free", spectrum_at=(7,)),
        lambda net: jaxgrad.simulate(net, 2, method="auto", spectrum_at=(2, 7)),
        lambda net: jaxgrad.sweep(net, 2, grid={"sigma_w": [1.0, 2.0]}, method="matrix_free", spectrum_at=7),
        lambda net: jaxgrad.simulate(net, 2, method="matrix_free", spectrum_at=(0,)),
    ],
)
def test_a_depth_beyond_the_model_is_refused_before_any_compile(call):
    net = jaxgrad.mlp(width=3, depth=6)
    before = ensemble.compile_count()
    with pytest.raises(ValueError, match=r"`spectrum_at`.*1\.\.6.*spectrum_at=[07]"):
        call(net)
    assert ensemble.compile_count() == before


def test_new_seed_and_sigma_do_not_recompile():
    args = dict(method="matrix_free", spectrum_at=TANH_DEPTHS)
    first = jaxgrad.sweep(tanh_mlp(), SAMPLES, SEED, grid={"sigma_w": [1.5, 1e-9]}, **args)  # the program above
    before = ensemble.compile_count()
    second = jaxgrad.sweep(tanh_mlp(0.7), SAMPLES, 9, grid={"sigma_w": [2.0, 1.0], "sigma_b": [0.05]}, **args)
    assert ensemble.compile_count() == before, "a new seed, σ_w or σ_b recompiled the matrix-free program"
    assert not np.array_equal(first.log_singular_values[6][0], second.log_singular_values[6][0, 0])
    assert second.config["method"] == "matrix_free"


def test_fields_left_out_are_not_traced():
    """Only the work of the fields asked for is traced (counted in scans: a fixed-length Lanczos loop is one)."""
    net = jaxgrad.mlp(width=4, depth=3)
    coefficients = probes.coefficient_arrays(net, np.float32)

    def jaxpr(**kwargs):
        probe = probes.matrix_free(net, dtype=jnp.float32, **kwargs)
        return str(jax.make_jaxpr(probe)(jax.random.key(0), coefficients, jnp.float32(1.0)))

    scans = lambda text: text.count("scan[")  # noqa: E731
    assert scans(jaxpr(fields=["log_forward_gain"])) == 1  # the forward sweep
    assert scans(jaxpr(fields=["log_norm_product"])) == 2  # + the layer's Lanczos inside it
    assert scans(jaxpr(fields=["log_backward_gain"])) == 2  # + the backward sweep
    assert scans(jaxpr(fields=[], spectrum_at=(2,))) == 4  # + the chain's Lanczos: forward and backward

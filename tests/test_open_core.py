"""The open core: the public runner, one compile per structure, tied and given parameters, sweeps."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import ensemble, probes

FIELDS = ("log_spectral_norm", "log_norm_product", "log_forward_gain", "log_backward_gain", "log_signal_norm")


def _same(a, b, fields=FIELDS):
    for f in fields:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    np.testing.assert_array_equal(a.signal_exit_depth, b.signal_exit_depth)


def _draw(net, keys):
    """The weights the engine draws, as a user would make them: jit(vmap(net.init)).

    (Eager `jax.vmap(net.init)` runs op by op, without XLA's fusion, and may round the
    last bit of a weight differently; the engine's draws are compiled.)
    """
    return jax.jit(jax.vmap(net.init))(keys)


def _rounding_close(a, b, fields=FIELDS):
    """Equal up to float32 rounding of the layers' arithmetic: |Δ| ≤ 8 ε ℓ (1 + |value|) at depth ℓ.

    Given and drawn parameters enter XLA's program differently (an input buffer vs a value made
    in the loop), and XLA:CPU fuses, and so rounds, the layer's matrix-vector product
    differently; each layer adds at most a few ulps (measured: ≤ 2e-6 relative at depth 4).
    """
    for f in fields:
        x, y = getattr(a, f), getattr(b, f)
        depth = np.arange(1, x.shape[-1] + 1)
        assert np.all(np.abs(x - y) <= 8 * np.finfo(np.float32).eps * depth * (1 + np.abs(y))), f


def _weight_keys(seed, samples):
    return jax.vmap(lambda i: jaxgrad.sample_keys(seed, i).weights)(jnp.arange(samples, dtype=jnp.int32))


# --------------------------------------------------------------------------- compile once


def test_seed_sigma_and_q0_are_traced_one_compile_for_two_calls():
    net = jaxgrad.mlp(width=6, depth=5, activation="tanh", sigma_w=1.1, sigma_b=0.2)
    jaxgrad.simulate(net, 9, seed=0)
    before = ensemble.compile_count()
    other = jaxgrad.mlp(width=6, depth=5, activation="tanh", sigma_w=1.7, sigma_b=0.05)  # new closures, new values
    changed = jaxgrad.simulate(other, 9, seed=12345, q0=0.3)
    assert ensemble.compile_count() == before, "a new seed, σ_w, σ_b or q0 recompiled the program"
    # … and the numbers did change (the values are used, not the first call's constants).
    assert not np.array_equal(changed.log_spectral_norm, jaxgrad.simulate(net, 9, seed=12345, q0=0.3).log_spectral_norm)
    assert ensemble.compile_count() == before


@pytest.mark.slow
def test_the_cached_program_uses_each_calls_values():
    """The second call reuses the first call's program, yet equals a fresh process's answer for its own net."""
    a = jaxgrad.mlp(width=5, depth=4, activation="tanh", sigma_w=0.9)
    b = jaxgrad.mlp(width=5, depth=4, activation="tanh", sigma_w=2.0, sigma_b=0.4)
    jaxgrad.simulate(a, 6, seed=1)
    got = jaxgrad.simulate(b, 6, seed=4)
    params = _draw(b, _weight_keys(4, 6))  # b's own weights, given explicitly
    _rounding_close(got, jaxgrad.simulate(b, 6, seed=4, params=params))
    W = np.asarray(params[0].W)
    assert np.std(W) > 1.5 / np.sqrt(5)  # σ_w = 2, not the cached 0.9


def test_lyapunov_compiles_once_for_new_seeds_and_scales():
    jaxgrad.lyapunov_spectrum(jaxgrad.mlp(width=4, depth=6, activation="linear", sigma_w=1.0), 5, seed=0)
    before = ensemble.compile_count()
    jaxgrad.lyapunov_spectrum(jaxgrad.mlp(width=4, depth=6, activation="linear", sigma_w=3.0), 5, seed=7, q0=2.0)
    assert ensemble.compile_count() == before


def test_a_key_is_the_same_as_its_integer_seed():
    net = jaxgrad.mlp(width=4, depth=3)
    _same(jaxgrad.simulate(net, 5, seed=11), jaxgrad.simulate(net, 5, key=jax.random.key(11)))


# --------------------------------------------------------------------------- structure, not identity


def test_equal_layers_built_separately_are_one_segment_and_one_program_size():
    deep = jaxgrad.serial(*[jaxgrad.dense(8, 8, activation="tanh") for _ in range(32)])
    assert len(deep.segments()) == 1 and deep.structure() != jaxgrad.mlp(width=8, depth=8).structure()
    shallow = jaxgrad.serial(*[jaxgrad.dense(8, 8, activation="tanh") for _ in range(4)])

    def size(net):
        probe = probes.product_norms(net, dtype=jnp.float32)
        jaxpr = jax.make_jaxpr(probe)(jax.random.key(0), probes.coefficient_arrays(net, np.float32), jnp.float32(1))
        return re.sub(r"\d+", "#", str(jaxpr))  # layer indices aside, the same program

    assert size(deep) == size(shallow)  # the scan body is traced once whatever the depth
    _same(jaxgrad.simulate(deep, 4, seed=2), jaxgrad.simulate(jaxgrad.mlp(width=8, depth=32), 4, seed=2))


@pytest.mark.slow
def test_layers_that_differ_in_sigma_scan_together_and_use_their_own_values():
    layers = [jaxgrad.dense(6, 6, activation="tanh", sigma_w=s) for s in (0.5, 1.0, 2.0, 4.0)]
    net = jaxgrad.serial(*layers)
    assert len(net.segments()) == 1
    params = _draw(net, _weight_keys(3, 5))
    assert [float(np.std(np.asarray(p.W)) * np.sqrt(6)) for p in params] == pytest.approx([0.5, 1, 2, 4], rel=0.3)
    _rounding_close(jaxgrad.simulate(net, 5, seed=3), jaxgrad.simulate(net, 5, seed=3, params=params))


# --------------------------------------------------------------------------- where parameters come from


@pytest.mark.slow
@pytest.mark.parametrize("method", ["power", "svd", "vector"])
def test_given_parameters_equal_to_the_drawn_ones_give_the_same_results(method):
    net = jaxgrad.mlp(widths=[6, 6, 6, 4, 4], activation="tanh", sigma_w=1.3, sigma_b=0.1)
    params = jaxgrad.draw_params(net, 7, seed=8, method=method)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(_draw(net, _weight_keys(8, 7)))):
        np.testing.assert_array_equal(got, want)  # draw_params: the engine's own draws, bit for bit
    fields = FIELDS[2:] if method == "vector" else FIELDS
    _rounding_close(
        jaxgrad.simulate(net, 7, seed=8, method=method),
        jaxgrad.simulate(net, 7, seed=8, method=method, params=params),
        fields,
    )


def test_given_parameters_equal_to_the_drawn_ones_give_the_same_lyapunov_spectrum():
    # (once: the Lyapunov probe has no method; it ran inside each method's case above before)
    lyap = jaxgrad.lyapunov_spectrum(jaxgrad.mlp(width=5, depth=6), 4, seed=2)
    given = jaxgrad.lyapunov_spectrum(
        jaxgrad.mlp(width=5, depth=6), 4, seed=2, params=_draw(jaxgrad.mlp(width=5, depth=6), _weight_keys(2, 4))
    )
    np.testing.assert_allclose(given, lyap, rtol=0, atol=8 * np.finfo(np.float32).eps * 6)


def test_given_parameters_are_used():
    """Orthogonal weights given to a Gaussian-declared linear net: every layer is an isometry."""
    net = jaxgrad.mlp(width=5, depth=6, activation="linear")
    ortho = jaxgrad.mlp(width=5, depth=6, activation="linear", weights="orthogonal")
    params = _draw(ortho, _weight_keys(0, 4))
    res = jaxgrad.simulate(net, 4, seed=0, params=params, method="svd")
    np.testing.assert_allclose(res.log_spectral_norm, 0.0, atol=2e-6)
    np.testing.assert_allclose(res.log_norm_product, 0.0, atol=1e-5)


@pytest.mark.slow
def test_tied_network_uses_one_matrix_at_every_layer():
    net = jaxgrad.mlp(width=5, depth=7, activation="tanh", sigma_w=1.5, tied=True)
    params = net.init(jax.random.key(0))
    assert isinstance(params, jaxgrad.DenseParams)  # one set, not one per layer
    res = jaxgrad.simulate(net, 3, seed=1, method="svd")
    for i in range(3):
        keys = jaxgrad.sample_keys(1, i)
        p = net.init(keys.weights)
        x = probes._input(keys, 5, 1.0, jnp.float32)
        Js = jaxgrad.layer_jacobians(net, p, x)
        P = np.eye(5)
        for ell, J in enumerate(Js):
            P = np.asarray(J, np.float64) @ P
            np.testing.assert_allclose(res.log_spectral_norm[i, ell], np.log(np.linalg.svd(P)[1][0]), atol=2e-5)
    # the tied chain differs from the untied one drawn from the same keys (which redraws per layer)
    untied = jaxgrad.simulate(jaxgrad.mlp(width=5, depth=7, activation="tanh", sigma_w=1.5), 3, seed=1, method="svd")
    assert not np.allclose(untied.log_spectral_norm[:, 1:], res.log_spectral_norm[:, 1:])
    np.testing.assert_array_equal(untied.log_spectral_norm[:, 0], res.log_spectral_norm[:, 0])  # layer 1: same draw
    given = _draw(net, _weight_keys(1, 3))
    _rounding_close(res, jaxgrad.simulate(net, 3, seed=1, method="svd", params=given))


def test_tied_needs_a_square_network_of_one_structure():
    with pytest.raises(ValueError, match="tied.*one width"):
        jaxgrad.mlp(widths=[4, 4, 3], tied=True)
    with pytest.raises(ValueError, match="tied"):
        jaxgrad.serial(jaxgrad.dense(4, 4), jaxgrad.dense(4, 4, activation="relu"), tied=True)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda P: P[:2], r"structure"),
        (lambda P: jax.tree.map(lambda a: a[:3], P), r"shape \(4, 5, 5\).*\(3, 5, 5\)"),
        (lambda P: jax.tree.map(lambda a: a.at[1].set(jnp.nan), P), r"non-finite entries in 1 of 4"),
        (lambda P: {"W": 1}, r"structure"),
    ],
)
def test_bad_params_are_a_clear_error_before_any_compile(bad, match):
    net = jaxgrad.mlp(width=5, depth=3)
    params = bad(_draw(net, _weight_keys(0, 4)))
    before = ensemble.compile_count()
    with pytest.raises(ValueError, match=match):
        jaxgrad.simulate(net, 4, seed=0, params=params)
    assert ensemble.compile_count() == before


# --------------------------------------------------------------------------- sweeps


def test_a_grid_is_one_program_and_each_point_equals_its_own_simulate():
    net = jaxgrad.mlp(width=5, depth=4, activation="tanh")
    seeds = np.array([[3, 4], [5, 6], [7, 8]])
    sw, sb = [0.8, 1.3, 2.0], [0.0, 0.4]
    jaxgrad.sweep(net, 6, seeds, grid={"sigma_w": sw, "sigma_b": sb})
    before = ensemble.compile_count()
    res = jaxgrad.sweep(net, 6, seeds + 10, grid={"sigma_w": sw, "sigma_b": sb})
    assert ensemble.compile_count() == before
    assert res.log_spectral_norm.shape == (3, 2, 6, 4) and res.config["grid"] == {"sigma_w": sw, "sigma_b": sb}
    for a, w in enumerate(sw):
        for b, s in enumerate(sb):
            one = jaxgrad.simulate(
                jaxgrad.mlp(width=5, depth=4, activation="tanh", sigma_w=w, sigma_b=s), 6, int(seeds[a, b]) + 10
            )
            for f in FIELDS:
                np.testing.assert_array_equal(getattr(res, f)[a, b], getattr(one, f), err_msg=f"{f} at {w}, {s}")


@pytest.mark.slow
def test_a_grid_over_q0_with_common_samples():
    net = jaxgrad.mlp(width=4, depth=3, activation="tanh")
    res = jaxgrad.sweep(net, 5, 2, grid={"q0": [0.5, 2.0]}, method="vector")
    np.testing.assert_array_equal(
        res.log_forward_gain[1], jaxgrad.simulate(net, 5, 2, q0=2.0, method="vector").log_forward_gain
    )
    assert res.log_spectral_norm is None


@pytest.mark.parametrize(
    "grid, match",
    [
        ({"sigma_w": []}, r"'sigma_w' has no values \(length 0\)"),
        ({"gain": [1.0]}, r"unknown grid axis 'gain'.*sigma_b.*sigma_w"),
        ({}, r"non-empty dict"),
        ({"sigma_w": [1.0, np.inf]}, r"finite"),
    ],
)
def test_bad_grids(grid, match):
    with pytest.raises(ValueError, match=match):
        jaxgrad.sweep(jaxgrad.mlp(width=4, depth=2), 3, grid=grid)


# --------------------------------------------------------------------------- the public runner


def _user_probe(key, scale):
    W = scale * jax.random.normal(key, (6, 6)) / jnp.sqrt(6.0)
    return {"log_norm": jnp.log(jnp.linalg.norm(W @ jnp.ones(6))), "diag": jnp.diagonal(W)}


def test_a_users_own_measurement_runs_through_the_runner_and_depends_only_on_seed_and_index():
    full = ensemble.run(_user_probe, 37, seed=4, args=(jnp.float32(1.5),))
    assert full["log_norm"].shape == (37,) and full["diag"].shape == (37, 6)
    chunked = ensemble.run(_user_probe, 37, seed=4, args=(jnp.float32(1.5),), chunk_size=5)
    tail = ensemble.run(_user_probe, 7, seed=4, args=(jnp.float32(1.5),), sample_offset=30)
    for k in full:
        np.testing.assert_array_equal(full[k], chunked[k])
        np.testing.assert_array_equal(full[k][30:], tail[k])
    want = _user_probe(jax.random.fold_in(jax.random.key(4), 3), 1.5)
    np.testing.assert_allclose(full["log_norm"][3], want["log_norm"], rtol=1e-6)
    before = ensemble.compile_count()
    ensemble.run(_user_probe, 37, seed=9, args=(jnp.float32(0.5),))
    assert ensemble.compile_count() == before


def test_runner_grids_per_sample_data_and_indices():
    grid = ensemble.run(_user_probe, 5, seed=[1, 2, 3], grid_size=3, args=(jnp.asarray([1.0, 2.0, 3.0]),))
    assert grid["diag"].shape == (3, 5, 6)
    alone = ensemble.run(_user_probe, 5, seed=3, args=(jnp.float32(3.0),))
    np.testing.assert_array_equal(grid["diag"][2], alone["diag"])
    data = np.arange(10.0).reshape(5, 2)
    out = ensemble.run(lambda i, d: {"i": i, "twice": 2 * d}, 5, per_sample=data, index=True)
    np.testing.assert_array_equal(out["i"], np.arange(5))
    np.testing.assert_array_equal(out["twice"], 2 * data)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ensemble.run(lambda k: {"name": "x"}, 3), r"pytree of arrays"),
        (lambda: ensemble.run(lambda k: [jnp.ones(2), "x"], 3), r"pytree of arrays"),
        (lambda: ensemble.run(_user_probe, 3, args=(jnp.ones(2),), grid_size=3), r"leading axis of 3"),
        (lambda: ensemble.run(_user_probe, 0), r"samples=0"),
        (lambda: ensemble.run(lambda k, d: d, 4, per_sample=np.ones((3, 2))), r"leading axis of samples=4.*\(3, 2\)"),
        (lambda: ensemble.run(_user_probe, 3, seed=-1, args=(1.0,)), r"seed"),
        (lambda: jaxgrad.simulate(jaxgrad.mlp(width=3, depth=2), 3, fields=["log_gain"]), r"unknown field 'log_gain'"),
        (
            lambda: jaxgrad.simulate(jaxgrad.mlp(width=3, depth=2), 3, method="vector", fields=["log_spectral_norm"]),
            r"unknown field 'log_spectral_norm' for method='vector'",
        ),
    ],
)
def test_bad_runner_input_is_a_value_error_naming_it(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fields_choose_what_is_recorded():
    net = jaxgrad.mlp(width=4, depth=3)
    some = jaxgrad.simulate(net, 5, seed=1, fields=["log_forward_gain"])
    assert some.log_spectral_norm is None and some.log_norm_product is None
    np.testing.assert_array_equal(some.log_forward_gain, jaxgrad.simulate(net, 5, seed=1).log_forward_gain)


def test_non_finite_results_are_counted_and_warned_about():
    net = jaxgrad.mlp(width=4, depth=400, activation="linear", sigma_w=40.0, sigma_b=0.1)  # h overflows
    with pytest.warns(jaxgrad.NonFiniteWarning, match="log_signal_norm: 3"):
        res = jaxgrad.simulate(net, 3, seed=0, method="vector")
    assert res.nonfinite["log_signal_norm"] == 3 and np.isfinite(res.log_forward_gain).all()


@pytest.mark.parametrize("method", ["power", "svd"])
def test_a_product_that_reaches_zero_is_minus_infinity_counted_and_not_warned_about(method):
    # width 1, ReLU: the unit is off at a layer with probability 1/2, and the product is exactly 0 from there
    net = jaxgrad.mlp(width=1, depth=12, activation="relu", sigma_w=1.4, sigma_b=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", jaxgrad.NonFiniteWarning)
        res = jaxgrad.simulate(net, 6, seed=0, method=method)
    for field in ["log_spectral_norm", "log_norm_product", "log_forward_gain", "log_backward_gain"]:
        a = getattr(res, field)
        assert not np.isnan(a).any(), field  # at width 1 a warm start and a fresh one once cancelled to 0/0
        dead = np.isneginf(res.log_norm_product)
        np.testing.assert_array_equal(np.isneginf(a), dead, err_msg=field)  # −∞ from the first zero on
        assert res.nonfinite[field] == int(dead.any(axis=1).sum()) > 0
    np.testing.assert_allclose(
        res.log_spectral_norm[~dead], res.log_norm_product[~dead], rtol=0, atol=8 * np.finfo(np.float32).eps
    )  # 1 × 1: both are |J_ℓ⋯J₁|


def test_a_backpropagated_signal_that_reaches_zero_leaves_its_gain_undefined_and_says_so():
    # the vector probe's backward gain is ‖δ⁽⁰⁾‖/‖δ⁽ℓ⁾‖: 0/0 below the layer that zeroed δ, NaN and warned
    net = jaxgrad.mlp(width=1, depth=12, activation="relu", sigma_w=1.4, sigma_b=0.0)
    with pytest.warns(jaxgrad.NonFiniteWarning, match="NaN or \\+inf in log_backward_gain: 6"):
        res = jaxgrad.simulate(net, 6, seed=0, method="vector")
    assert not np.isnan(res.log_forward_gain).any() and np.isneginf(res.log_forward_gain).any()


def test_networks_stay_hashable_for_users_who_cache_on_them():
    a, b = jaxgrad.mlp(width=4, depth=3, sigma_w=1.5), jaxgrad.mlp(width=4, depth=3, sigma_w=1.5)
    assert isinstance(hash(a), int) and a.layers[0].hyper == b.layers[0].hyper
    assert a.layers[0].hyper != jaxgrad.mlp(width=4, depth=3, sigma_w=2.0).layers[0].hyper

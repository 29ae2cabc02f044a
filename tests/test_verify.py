"""The engine checks itself (jaxgrad.verify), layers' claims are checked when built, inputs are public."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import ensemble, probes, verify
from jaxgrad.testing import assert_engine_matches_reference
from tests.helpers import local_environment


def _token_rms_residual(depth=8, tokens=6, features=24):
    """Issue 27's item-2 block: X + tanh(RMS(X) Wᵀ), the RMS over each token's features."""

    def init(key):
        return {"W": 1.5 / features**0.5 * jax.random.normal(key, (features, features), jnp.float32)}

    def apply(p, X):
        r = X * jax.lax.rsqrt(jnp.mean(X * X, axis=-1, keepdims=True) + 1e-6)
        return X + jnp.tanh(jnp.matmul(r, p["W"].T, precision=jax.lax.Precision.HIGHEST))

    block = jaxgrad.adapters.from_functions(init, apply, shape=(tokens, features), name="token-rms-residual")
    return jaxgrad.serial(*[block] * depth)


def _scaled_fast_path(layer, factor):
    """`layer` with its fast-path Jacobian multiplied by `factor` (a wrong claim)."""

    def jacobian(params, h):
        J, out = layer.jacobian(params, h)
        return factor * J, out

    return layer._replace(jacobian=jacobian, hyper=None, name=f"{layer.name} × {factor:g}")


# --------------------------------------------------------------------------- the self-check


def test_every_call_records_what_it_checked():
    net = jaxgrad.mlp(width=16, depth=9, activation="tanh", sigma_w=1.2)
    res = jaxgrad.simulate(net, 20, seed=3)
    record = res.config["verification"]
    assert res.config["verified"] is True and res.config["jacobian"] == "rev"
    assert record["layers"] == [1, 5, 9] and record["depths"] == [1, 5, 9]
    rows = record["samples"]
    micro = ensemble.micro_batch_size(8 * 4 * 16 * 16, jax.default_backend())
    assert rows[0] == 0 and len(rows) == 2 and rows[1] % micro != 0  # one from inside a micro-batch
    assert record["compared"] == 2 * (3 + 3) and record["skipped"] == []
    assert record["worst_abs_error"] <= 1e-4
    assert jaxgrad.simulate(net, 20, seed=3, verify=False).config["verified"] is False


def test_the_check_does_not_change_the_numbers():
    net = jaxgrad.mlp(width=8, depth=6, activation="relu", sigma_w=1.4)
    checked, unchecked = jaxgrad.simulate(net, 12, 1), jaxgrad.simulate(net, 12, 1, verify=False)
    for field in jaxgrad.engine.FIELDS:
        np.testing.assert_array_equal(getattr(checked, field), getattr(unchecked, field))


NEW_SEED = """
import jaxgrad
from jaxgrad import ensemble
net = jaxgrad.mlp(width=8, depth=5, activation="tanh")
first = jaxgrad.simulate(net, 4, 0).config["verification"]["compiles"]
before = ensemble.compile_count()
again = jaxgrad.simulate(net, 4, 1).config["verification"]["compiles"]
other = jaxgrad.simulate(jaxgrad.mlp(width=8, depth=5, activation="tanh", sigma_w=1.7), 4, 2)
print(first, again, other.config["verification"]["compiles"], ensemble.compile_count() - before)
"""


@pytest.mark.slow
def test_a_new_seed_reuses_the_reference_programs():
    # in a process of its own: compile counts are the process's, whatever ran before in a test worker
    out = subprocess.run(
        [sys.executable, "-c", NEW_SEED], capture_output=True, text=True, check=True, env=local_environment()
    )
    first, again, other, total = map(int, out.stdout.split())
    assert first > 0 and (again, other, total) == (0, 0, 0)


def test_a_wrong_fast_path_that_escaped_the_build_check_stops_the_engine():
    # Network(...) built directly skips serial's claim check; the engine's own check still catches it
    bad = _scaled_fast_path(jaxgrad.dense(8, 8), 1.5)
    net = jaxgrad.Network((bad,) * 4)
    with pytest.raises(verify.VerificationError, match=r"layer 1 .*fast-path `jacobian`.*Ways out"):
        jaxgrad.simulate(net, 4, 0)
    with pytest.raises(AssertionError, match="independent computation"):
        assert_engine_matches_reference(net, samples=2)
    jaxgrad.simulate(net, 4, 0, verify=False)  # the way out the message names


def test_a_lanczos_run_that_stops_short_is_caught(monkeypatch):
    net = _token_rms_residual(depth=4)
    monkeypatch.setattr(probes, "product_lanczos_steps", lambda n: (2, None))  # far too few steps
    with pytest.raises(verify.VerificationError, match=r"depth \d+: the engine's ln‖J_\d+⋯J_1‖₂"):
        jaxgrad.simulate(net, 4, 3)
    with pytest.raises(AssertionError):
        assert_engine_matches_reference(net, samples=2, seed=3)


def test_a_miscompiled_batched_jacrev_falls_back_to_jacfwd(monkeypatch):
    # stands in for jaxlib 0.10.2's jit(vmap(jacrev)) of a LayerNorm: only the "rev" path is wrong
    layer_jacobian = probes._layer_jacobian

    def wrong_rev(jacobian, apply, params, h, mode="rev"):
        J, out = layer_jacobian(jacobian, apply, params, h, mode)
        return (1.01 * J if mode == "rev" else J), out

    monkeypatch.setattr(probes, "_layer_jacobian", wrong_rev)
    block = jaxgrad.adapters.from_functions(
        lambda k: {"W": jax.random.normal(k, (3, 3)) / 3}, lambda p, X: X + jnp.tanh(X @ p["W"]), shape=(2, 3)
    )
    net = jaxgrad.serial(*[block] * 3)
    with pytest.warns(verify.JacobianFallbackWarning, match="jacfwd"):
        res = jaxgrad.simulate(net, 4, 0)
    assert res.config["jacobian"] == "fwd" and res.config["verified"]
    monkeypatch.setattr(probes, "_layer_jacobian", layer_jacobian)
    right = jaxgrad.simulate(net, 4, 0, method="svd", verify=False)  # (the "rev" program stays cached wrong)
    np.testing.assert_allclose(res.log_spectral_norm, right.log_spectral_norm, atol=1e-5)
    monkeypatch.setattr(probes, "_layer_jacobian", wrong_rev)
    with pytest.raises(AssertionError):  # the testing assertion reports instead of falling back
        assert_engine_matches_reference(net, samples=2)


def test_item_2s_residual_block_is_measured_right_by_the_default_method():
    net = _token_rms_residual()
    power = jaxgrad.simulate(net, 16, 3)
    exact = jaxgrad.simulate(net, 16, 3, method="svd", verify=False)
    assert np.max(np.abs(power.log_spectral_norm - exact.log_spectral_norm)) <= 1e-5  # was 0.35


def test_a_chaotic_network_records_the_depths_it_could_not_compare():
    net = jaxgrad.mlp(width=16, depth=120, activation="tanh", sigma_w=2.5)
    record = jaxgrad.simulate(net, 4, 0).config["verification"]
    assert record["compared"] >= 2 * 4  # every layer at the engine's own inputs, and depth 1
    assert all(entry["separation"] > verify.TRAJECTORY_LIMIT for entry in record["skipped"])
    assert {entry["depth"] for entry in record["skipped"]} <= {60, 120}


@pytest.mark.parametrize("method", ["vector", "matrix_free"])
def test_the_other_methods_are_checked_too(method):
    net = jaxgrad.mlp(width=8, depth=6, activation="tanh", sigma_b=0.1)
    res = jaxgrad.simulate(net, 6, 0, method=method, spectrum_at=(3, 6) if method == "matrix_free" else ())
    assert res.config["verified"] and res.config["verification"]["compared"] > 0
    assert_engine_matches_reference(net, samples=2, method=method)


def test_sweep_checks_the_first_and_the_last_grid_point():
    net = jaxgrad.mlp(width=8, depth=4, activation="tanh")
    res = jaxgrad.sweep(net, 6, grid={"sigma_w": [0.5, 2.0]})
    assert res.config["verified"] and res.config["verification"]["compared"] == 2 * (3 + 3)


def test_the_testing_assertion_passes_on_correct_networks():
    assert_engine_matches_reference(jaxgrad.mlp(width=6, depth=5, activation="relu", sigma_w=1.4), samples=3)
    assert_engine_matches_reference(jaxgrad.resnet(8, 4, activation="tanh", norm="pre"), samples=2)


def test_verify_must_be_a_bool():
    with pytest.raises(ValueError, match="verify='yes'"):
        jaxgrad.simulate(jaxgrad.mlp(width=4, depth=2), 2, verify="yes")


# --------------------------------------------------------------------------- claims checked when built


def test_a_wrong_fast_path_is_refused_when_the_network_is_built():
    with pytest.raises(ValueError, match=r"fast-path `jacobian` is not the derivative.*0\.5 relative"):
        jaxgrad.serial(*[_scaled_fast_path(jaxgrad.dense(8, 8), 1.5)] * 2)


def test_a_false_homogeneous_claim_is_refused_when_the_network_is_built():
    layer = jaxgrad.dense(8, 8, activation="tanh")._replace(homogeneous=True, hyper=None, name="tanh-claimed")
    with pytest.raises(ValueError, match=r"'tanh-claimed' is declared homogeneous.*f\(2·h\)"):
        jaxgrad.serial(layer)


def test_a_false_homogeneous_claim_of_an_adapter_is_refused():
    def init(key):
        return {"W": jax.random.normal(key, (4, 4)) / 2}

    def pre_norm_residual(p, x):  # x + W·LN(x): not positively homogeneous
        y = (x - x.mean()) / jnp.sqrt(x.var() + 1e-5)
        return x + jnp.tanh(p["W"] @ y)

    block = jaxgrad.adapters.from_functions(init, pre_norm_residual, shape=(4,), homogeneous=True)
    with pytest.raises(ValueError, match="declared homogeneous"):
        jaxgrad.serial(block, block)


def test_true_claims_pass():
    jaxgrad.mlp(width=8, depth=3, activation="relu")  # homogeneous, fast path
    jaxgrad.mlp(width=8, depth=3, activation="tanh", sigma_b=0.3)  # fast path only
    jaxgrad.mlp(widths=[8, 5, 8], activation="leaky_relu")


def _steps(count, tag, wrong=None):
    """`count` tanh layers of one `Hyper` structure that differ in a coefficient, as `jaxgrad.rnn`'s step
    layers do (each is checked); the one at index `wrong` has a fast-path Jacobian 1.5 times too large."""
    base = jaxgrad.dense(8, 8, activation="tanh", sigma_b=0.3)

    def build(c):
        init, apply, jacobian = base.hyper.build(c)

        def scaled(params, h):
            J, out = jacobian(params, h)
            return c["factor"] * J, out

        return init, apply, scaled

    layers = []
    for i in range(count):
        coefficients = {**base.hyper.coefficients, "factor": 1.5 if i == wrong else 1.0, "step": float(i)}
        hyper = base.hyper._replace(coefficients=coefficients, structure=(tag, base.hyper.structure), build=build)
        init, apply, jacobian = build(coefficients)
        layers.append(base._replace(init=init, apply=apply, jacobian=jacobian, hyper=hyper, name=f"step {i + 1}"))
    return layers


def test_many_layers_of_one_structure_are_checked_in_one_program_which_names_a_wrong_one(monkeypatch):
    from jaxgrad import layers

    compiled = []
    check = layers._check_claims_compiled
    monkeypatch.setattr(layers, "_check_claims_compiled", lambda group: compiled.append(len(group)) or check(group))
    count = layers._CHECK_COMPILED_FROM
    net = jaxgrad.serial(*_steps(count, "true claims"), tied=True)  # true claims pass
    assert compiled == [count] and net.depth == count
    with pytest.raises(ValueError, match=r"'step 41': its fast-path `jacobian` is not the derivative.*0\.5 relative"):
        jaxgrad.serial(*_steps(count, "one wrong", wrong=40), tied=True)
    assert compiled == [count, count]
    jaxgrad.serial(*_steps(count - 1, "few"), tied=True)  # fewer: checked op by op, as one layer alone is
    assert compiled == [count, count]
    with pytest.raises(ValueError, match=r"'step 3': its fast-path `jacobian` is not the derivative"):
        jaxgrad.serial(*_steps(count - 1, "few, one wrong", wrong=2), tied=True)


# --------------------------------------------------------------------------- one network per seed, public inputs


@pytest.mark.parametrize("weights", ["gaussian", "orthogonal"])
def test_float64_draws_the_float32_network(weights):
    net = jaxgrad.mlp(width=8, depth=3, weights=weights, sigma_w=1.3, sigma_b=0.2)
    p32, p64 = jaxgrad.draw_params(net, 4, 5), jaxgrad.draw_params(net, 4, 5, dtype="float64")
    for a, b in zip(jax.tree.leaves(p32), jax.tree.leaves(p64)):
        assert b.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=8 * 12 * np.finfo(np.float32).eps, atol=1e-6)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", jnp.bfloat16])
def test_half_precision_is_refused_with_the_reason(dtype):
    with pytest.raises(ValueError, match="bfloat16/float16 are not supported"):
        jaxgrad.simulate(jaxgrad.mlp(width=4, depth=2), 2, dtype=dtype)


def test_draw_inputs_are_the_inputs_simulate_uses():
    net = jaxgrad.mlp(width=8, depth=4, activation="tanh", sigma_b=0.1)
    h0 = jaxgrad.draw_inputs(net, 6, seed=2, q0=0.7)
    assert h0.shape == (6, 8) and h0.dtype == np.float32
    keys = jaxgrad.sample_keys(2, 4)
    np.testing.assert_allclose(h0[4], np.sqrt(0.7) * jax.random.normal(keys.input, (8,)), rtol=2e-7)
    drawn, given = jaxgrad.simulate(net, 6, 2, q0=0.7), jaxgrad.simulate(net, 6, 2, q0=0.7, inputs=h0)
    for field in jaxgrad.engine.FIELDS:
        np.testing.assert_array_equal(getattr(drawn, field), getattr(given, field))
    assert given.config["inputs"] == "given" and drawn.config["inputs"] == "drawn"


def test_given_inputs_are_used_and_checked():
    net = jaxgrad.mlp(width=8, depth=4, activation="tanh")
    res = jaxgrad.simulate(net, 3, 0, inputs=np.full((3, 8), 0.5, np.float32))
    assert res.config["verified"] and res.config["verification"]["compared"] > 0
    assert not np.array_equal(res.log_signal_norm, jaxgrad.simulate(net, 3, 0).log_signal_norm)


@pytest.mark.parametrize(
    "inputs,match",
    [
        (np.zeros((3, 7), np.float32), r"`inputs` must have shape \(3, 8\)"),
        (np.zeros((2, 8), np.float32), r"`inputs` must have shape \(3, 8\)"),
        (np.full((3, 8), np.nan, np.float32), r"non-finite entries in 3 of 3"),
        (np.zeros((3, 8), np.int32), r"floating array"),
    ],
)
def test_bad_inputs_are_refused_before_any_compile(inputs, match):
    net = jaxgrad.mlp(width=8, depth=2)
    before = ensemble.compile_count()
    with pytest.raises(ValueError, match=match):
        jaxgrad.simulate(net, 3, 0, inputs=inputs)
    assert ensemble.compile_count() == before


def test_inputs_of_a_token_state_may_keep_their_shape():
    block = jaxgrad.adapters.from_functions(
        lambda k: {"W": jax.random.normal(k, (3, 3)) / 3}, lambda p, X: jnp.tanh(X @ p["W"]), shape=(2, 3)
    )
    net = jaxgrad.serial(block, block)
    h0 = jaxgrad.draw_inputs(net, 4, 1)
    a = jaxgrad.simulate(net, 4, 1, inputs=h0.reshape(4, 2, 3))
    np.testing.assert_array_equal(a.log_spectral_norm, jaxgrad.simulate(net, 4, 1).log_spectral_norm)


# --------------------------------------------------------------------------- measures' cache key


def test_two_probes_with_one_name_are_two_programs():
    from jaxgrad.measures import measure

    net = jaxgrad.mlp(width=4, depth=2)
    make = lambda c: lambda net, dtype: lambda key, coefficients, q0: {"x": jnp.full((), c, dtype)}  # noqa: E731
    assert measure(make(1.0), net, 4)["x"].tolist() == [1.0] * 4
    assert measure(make(2.0), net, 4)["x"].tolist() == [2.0] * 4
    assert measure(make(3.0), net, 4, cache_key="three")["x"].tolist() == [3.0] * 4


# ----------------------------------------------------------------- the accuracy contract on structured networks


@pytest.mark.parametrize("case", ["token-rms-residual", "resnet-pre-ln", "attention-residual", "mlp-residual"])
def test_the_power_method_keeps_its_contract_on_structured_networks(case):
    from benchmarks.accuracy import measure

    # ln‖J_ℓ⋯J₁‖₂ and ln‖J_ℓ‖₂ by the default method against SVD, every depth: ≤ 1e-4 (the contract)
    row = measure(48, case, depth=6, samples=8)
    assert row["product"] <= 1e-4 and row["layer"] <= 1e-4, row


def test_a_hand_written_layer_draws_one_network_in_both_dtypes():
    def init(key):  # draws in JAX's default float: float64 under x64
        k_w, k_v = jax.random.split(key)
        return {"W": jax.random.normal(k_w, (6, 6)) / 3, "V": jax.random.normal(k_v, (6, 6)) / 3}

    def apply(p, h):
        return h + jnp.tanh(p["W"] @ h) * jax.nn.sigmoid(p["V"] @ h)

    net = jaxgrad.serial(*[jaxgrad.Layer(init, apply, 6, 6, name="gated")] * 3)
    p32, p64 = jaxgrad.draw_params(net, 2, 0), jaxgrad.draw_params(net, 2, 0, dtype="float64")
    for a, b in zip(jax.tree.leaves(p32), jax.tree.leaves(p64)):
        assert b.dtype == np.float64
        np.testing.assert_array_equal(a, b.astype(np.float32))
    assert jaxgrad.simulate(net, 4, 0, dtype="float64").config["verified"]

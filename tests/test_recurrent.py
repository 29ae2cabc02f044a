"""Recurrent networks (issue 16): BPTT as a product of tied Jacobians.

Each claim is pinned by an equality (the engine against a plain `jax.jacrev` unroll with the
same inputs) before an inequality (Pascanu's bound) is trusted. Small widths and depths: the
whole module runs in well under a minute on 2 CPU cores.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxgrad
from jaxgrad import ensemble, probes, recurrent, stats, theory

CELL_CASES = [("vanilla", "tanh", 1.5), ("gru", "tanh", 1.0), ("lstm", "tanh", 1.0)]


def _params(net, seed, i):
    """Sample i's one parameter set, as the engine draws it (eagerly: equal up to the last bit)."""
    return net.init(probes.sample_keys(seed, i).weights)  # Network.init folds in 0, as the engine


def _reference(net, seed, i, q0=1.0):
    """Sample i's parameters, states and Jacobians by `recurrent.unroll`, from the engine's initial state."""
    p = _params(net, seed, i)
    m = net.layers[0].n_in
    h0 = jnp.sqrt(q0) * jax.random.normal(probes.sample_keys(seed, i).input, (m,), jnp.float32).astype(p.W.dtype)
    return (p, *recurrent.unroll(net, p, h0))


@pytest.mark.slow
def test_without_input_vanilla_is_the_tied_mlp_bit_for_bit():
    net = jaxgrad.rnn(width=8, steps=12, sigma_w=1.5, sigma_b=0.2)
    ref = jaxgrad.mlp(width=8, depth=12, sigma_w=1.5, sigma_b=0.2, tied=True)
    assert len(net.segments()) == 1  # T steps, one scan segment
    key = jax.random.key(3)
    p, q = net.init(key), ref.init(key)
    np.testing.assert_array_equal(p.W, q.W)
    np.testing.assert_array_equal(p.b, q.b)
    a, b = jaxgrad.simulate(net, 4, seed=1), jaxgrad.simulate(ref, 4, seed=1)
    for field in jaxgrad.engine.FIELDS:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


@pytest.mark.parametrize(
    "cell, activation",
    [
        ("vanilla", "sigmoid"),
        ("gru", "tanh"),
        pytest.param("lstm", "tanh", marks=pytest.mark.slow),
        ("lstm", "sigmoid"),
    ],
)
def test_fast_jacobian_equals_jacrev(cell, activation):
    net = jaxgrad.rnn(
        width=6, steps=3, cell=cell, activation=activation, sigma_w=1.3, sigma_b=0.4, input_std=0.7, input_dim=4
    )
    layer = net.layers[2]
    p = net.init(jax.random.key(0))
    h = jax.random.normal(jax.random.key(1), (layer.n_in,))
    J, out = layer.jacobian(p, h)
    np.testing.assert_allclose(J, jax.jacrev(layer.apply, argnums=1)(p, h), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, layer.apply(p, h), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "cell, activation, sigma_w",
    [CELL_CASES[0], *(pytest.param(*case, marks=pytest.mark.slow) for case in CELL_CASES[1:])],
)
def test_engine_measures_the_unrolled_product(cell, activation, sigma_w):
    """‖J_t‖₂ (log_norm_product increments), ‖J_t⋯J_1‖₂ and ‖h_t‖ against the reference unroll.

    This pins the per-step inputs (x_t from the step index, one W for all steps): a wrong input,
    a redrawn W or an off-by-one step shows up as a mismatch.
    """
    T, samples = 10, 3
    net = jaxgrad.rnn(
        width=5, steps=T, cell=cell, activation=activation, sigma_w=sigma_w, sigma_b=0.1, input_std=0.8, input_dim=3
    )
    res = jaxgrad.simulate(net, samples, seed=2, method="svd", dtype="float64")
    with jax.enable_x64(True):
        for i in range(samples):
            p, hs, Js = _reference(net, 2, i)
            hs, Js = np.asarray(hs), np.asarray(Js)
            norms = np.linalg.norm(Js, ord=2, axis=(1, 2))
            np.testing.assert_allclose(np.diff(res.log_norm_product[i], prepend=0.0), np.log(norms), atol=1e-10)
            P, log_products = np.eye(Js.shape[1]), []
            for J in Js:
                P = J @ P
                log_products.append(np.log(np.linalg.norm(P, ord=2)))
            np.testing.assert_allclose(res.log_spectral_norm[i], log_products, atol=1e-10)
            np.testing.assert_allclose(res.log_signal_norm[i], np.log(np.linalg.norm(hs[1:], axis=1)), atol=1e-10)
        x = np.asarray(recurrent.inputs(net, p))
    assert x.shape == (T, 3) and len({tuple(row) for row in x}) == T  # a fresh input at every step


@pytest.mark.parametrize("cell", ["vanilla", pytest.param("lstm", marks=pytest.mark.slow)])
def test_sum_of_lyapunov_exponents_is_mean_log_det(cell):
    r"""Σ_i λ_i = (1/T) Σ_t ln|det J_t| per sample (|det Q| = 1 in $J_t Q_{t-1} = Q_t R_t$)."""
    T, samples = 30, 3
    net = jaxgrad.rnn(width=4, steps=T, cell=cell, input_std=1.0, sigma_w=1.2)
    lam = jaxgrad.lyapunov_spectrum(net, samples, seed=5, sort=False, dtype="float64")
    with jax.enable_x64(True):
        for i in range(samples):
            _, _, Js = _reference(net, 5, i)
            mean_log_det = np.mean(np.linalg.slogdet(np.asarray(Js))[1])
            np.testing.assert_allclose(lam[i].sum(), mean_log_det, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "activation, gamma, sigma_w", [pytest.param("tanh", 1.0, 0.45, marks=pytest.mark.slow), ("sigmoid", 0.25, 1.6)]
)
def test_pascanu_bound_per_step_and_sufficient_condition_for_vanishing(activation, gamma, sigma_w):
    r"""Pascanu et al. 2013: ‖J_t‖₂ ≤ γ‖W‖₂ at every step of every sample, and ‖W‖₂ < 1/γ
    makes ‖J_t⋯J_1‖₂ ≤ (γ‖W‖₂)^t. Float64; the slack 1e-9 is far above the rounding of a log
    of a norm of a 6×6 product (≈1e-14) and far below any violation a wrong J would give."""
    T, samples, n = 40, 16, 6
    net = jaxgrad.rnn(width=n, steps=T, activation=activation, sigma_w=sigma_w, sigma_b=0.5, input_std=1.0)
    res = jaxgrad.simulate(net, samples, seed=0, method="svd", dtype="float64")
    with jax.enable_x64(True):
        W = np.stack([np.asarray(_params(net, 0, i).W) for i in range(samples)])
    log_bound = np.log(gamma * np.linalg.norm(W, ord=2, axis=(1, 2)))  # (samples,)
    steps = np.diff(res.log_norm_product, axis=1, prepend=0.0)
    assert np.all(steps <= log_bound[:, None] + 1e-9)
    # The bound is an inequality; it is not vacuous here (within a factor 3 of the worst step).
    assert np.all(steps.max(axis=1) >= log_bound - np.log(3.0))
    small = log_bound < 0  # ‖W‖₂ < 1/γ: the sufficient condition holds for these samples
    assert small.sum() >= samples // 2
    t = np.arange(1, T + 1)
    assert np.all(res.log_spectral_norm[small] <= t * log_bound[small, None] + 1e-9)
    assert np.all(res.log_spectral_norm[small, -1] < -1.0)  # and the gradient vanishes


def test_top_exponent_near_mean_field_at_edge_and_chaos():
    r"""Tanh RNN without input: λ₁ (forward-gain rate after a burn-in) vs ½ ln χ₁.

    n = 64 is far from n = ∞; the tolerance is 4 SE plus the finite-width allowance of
    experiments/lyapunov.py (Jensen gap r/(4n) and 1/(2n)); the measured gaps at larger n are
    in results/recurrent/summary.csv. At g = 1, ½ ln χ₁ = 0.
    """
    n, T, burn, samples = 64, 300, 100, 16
    for g in (1.0, 2.0):
        net = jaxgrad.rnn(width=n, steps=T, sigma_w=g)
        res = jaxgrad.simulate(net, samples, seed=0, method="vector", fields=["log_forward_gain"])
        rate = (res.log_forward_gain[:, -1] - res.log_forward_gain[:, burn - 1]) / (T - burn)
        mean, se = stats.mean_and_se(rate)
        half = 0.5 * float(np.log(theory.chi1("tanh", g, 0.0)))
        assert abs(mean - half) <= 4 * se + 1.0 / n, (g, mean, se, half)


def test_new_hyperparameters_do_not_recompile():
    a = jaxgrad.rnn(width=4, steps=6, cell="gru", sigma_w=1.0, input_std=0.5)
    b = jaxgrad.rnn(width=4, steps=6, cell="gru", sigma_w=0.7, sigma_b=0.3, input_std=2.0)
    assert a.structure() == b.structure()
    jaxgrad.simulate(a, 2, seed=0)
    before = len(ensemble._programs)
    r = jaxgrad.simulate(b, 2, seed=0)
    assert len(ensemble._programs) == before
    assert np.all(np.isfinite(r.log_spectral_norm))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(steps=-3), "steps"),
        (dict(input_std=-1.0), "input_std"),
        (dict(input_std=float("nan")), "input_std"),
        (dict(cell="elman"), "cell"),
        (dict(sigma_w=-1.0), "sigma_w"),
        (dict(width=0), "width"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxgrad.rnn(**{"width": 4, "steps": 5, **kwargs})


def test_wrong_input_sequence_shape_is_refused():
    net = jaxgrad.rnn(width=4, steps=5, input_dim=3)
    p = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"xs.*\(5, 3\)"):
        recurrent.unroll(net, p, jnp.zeros(4), jnp.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"h0.*\(4,\)"):
        recurrent.unroll(net, p, jnp.zeros(5))


@pytest.mark.slow
def test_given_parameters_reproduce_the_drawn_ones():
    """The input seed is a float leaf, so `simulate(params=draw_params(...))` works and gives the same run."""
    net = jaxgrad.rnn(width=4, steps=8, input_std=1.0)
    params = jaxgrad.draw_params(net, 3, seed=4)
    a = jaxgrad.simulate(net, 3, seed=4, fields=["log_spectral_norm"])
    b = jaxgrad.simulate(net, 3, seed=4, params=params, fields=["log_spectral_norm"])
    np.testing.assert_array_equal(a.log_spectral_norm, b.log_spectral_norm)
    other = params._replace(input_seed=params.input_seed[::-1])  # another input sequence, same weights
    c = jaxgrad.simulate(net, 3, seed=4, params=other, fields=["log_spectral_norm"])
    assert not np.array_equal(a.log_spectral_norm, c.log_spectral_norm)

"""jaxgrad.testing: its strategies, its bad-input errors, and that each assertion fails on a broken implementation."""

import importlib
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import jaxgrad
from jaxgrad import testing, theory


def test_importing_without_hypothesis_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    monkeypatch.setitem(sys.modules, "hypothesis.strategies", None)
    monkeypatch.delitem(sys.modules, "jaxgrad.testing")
    with pytest.raises(ImportError, match=r'pip install "jaxgrad\[testing\]"'):
        importlib.import_module("jaxgrad.testing")
    monkeypatch.undo()
    assert importlib.import_module("jaxgrad.testing") is testing


@pytest.mark.slow  # a subprocess
def test_jaxgrad_does_not_import_testing_eagerly():
    import subprocess

    code = "import sys, jaxgrad; print('jaxgrad.testing' in sys.modules, 'hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@settings(max_examples=10)  # each new activation × shape compiles once (~1 s)
@given(testing.phases("tanh"))
def test_tanh_phases_have_the_chi1_their_name_says(phase):
    assert phase.chi1 == pytest.approx(float(theory.chi1("tanh", phase.sigma_w, phase.sigma_b)))
    if phase.name == "ordered":
        assert phase.chi1 < 1
    elif phase.name == "chaotic":
        assert phase.chi1 > 1 and 0 < float(theory.q_star("tanh", phase.sigma_w, phase.sigma_b)) < math.inf
    else:
        assert phase.chi1 == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=10)  # each new activation × shape compiles once (~1 s)
@given(
    testing.networks(
        phase="critical", activations=testing.activations(custom=False).filter(lambda a: a in ("tanh", "relu", "erf"))
    )
)
def test_networks_in_a_phase_use_that_phases_sigma(net):
    import re

    name = net.layers[0].name  # "dense(4->4, tanh, gaussian, σ_w=1.39558, σ_b=0.1)" (6 digits)
    activation = re.search(r"(tanh|relu|erf)", name).group(1)
    sigma_w, sigma_b = (float(v) for v in re.search(r"σ_w=([0-9.e+-]+), σ_b=([0-9.e+-]+)", name).groups())
    if not any(s in name for s in ("he,", "glorot")):  # gaussian/lecun/orthogonal: entries σ_w/√n_in, χ₁ = 1
        assert float(theory.chi1(activation, sigma_w, sigma_b)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: testing.depths([0, 2]), r"depths.*>= 1.*\[0, 2\]"),
        (lambda: testing.widths([]), r"widths"),
        (lambda: testing.phases("relu", "chaotic"), r"'relu' has no phase='chaotic'.*'ordered' or 'critical'"),
        (lambda: testing.phases("linear", "chaotic"), r"'linear' has no phase='chaotic'"),
        (lambda: testing.phases("tanh", "turbulent"), r"phase='turbulent'.*valid phases"),
        (lambda: testing.phases("gelu", "critical"), r"'gelu' has no phase='critical'.*NaN"),
        (lambda: testing.phases("tanh", sigma_b=[-1.0]), r"sigma_b"),
        (lambda: testing.activations(builtin=False, custom=False), r"builtin=True or custom=True"),
        (lambda: testing.inputs(0), r"`n`"),
    ],
)
def test_impossible_strategies_are_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def _example():
    net = jaxgrad.mlp(width=4, depth=3, activation="tanh", sigma_w=1.2, sigma_b=0.2)
    return net, net.init(jax.random.key(0)), jnp.linspace(-1.0, 1.0, 4)


@pytest.mark.parametrize(
    "helper", [testing.assert_chain_equals_grad, testing.assert_submultiplicative, testing.assert_layer_bound]
)
def test_assertions_reject_mismatched_shapes(helper):
    net, params, x = _example()
    with pytest.raises(ValueError, match=r"x.shape=\(5,\)"):
        helper(net, params, jnp.ones(5))
    with pytest.raises(ValueError, match=r"len\(params\)=2"):
        helper(net, params[:2], x)


def test_measured_beside_predicted_rejects_mismatched_shapes_and_unknown_statistics():
    with pytest.raises(ValueError, match=r"broadcast to samples.shape\[1:\] = \(3,\)"):
        testing.assert_measured_beside_predicted(np.zeros((10, 3)), np.zeros(4))
    with pytest.raises(ValueError, match=r"statistic='median'.*'mean'"):
        testing.assert_measured_beside_predicted(np.zeros((10, 3)), 0.0, statistic="median")
    with pytest.raises(ValueError, match="at least 2 draws"):
        testing.assert_measured_beside_predicted(np.zeros((1,)), 0.0)


def test_measured_beside_predicted_passes_the_truth_and_fails_a_shifted_prediction():
    x = np.random.default_rng(0).normal(size=(4000, 3))
    rows = testing.assert_measured_beside_predicted(x, 0.0, quantity="N(0,1) mean")
    assert len(rows) == 3 and all(r.passed for r in rows)
    testing.assert_measured_beside_predicted(x, 1.0, statistic="variance")
    testing.assert_measured_beside_predicted(x, 0.5, statistic="log_mean_exp")  # ln E e^Z = ½
    with pytest.raises(AssertionError, match="predicted 0.1"):  # 0.1 is 6.3 SE away
        testing.assert_measured_beside_predicted(x, 0.1)


def test_layer_bound_catches_a_jacobian_that_is_not_diag_phi_prime_W(monkeypatch):
    net, params, x = _example()
    testing.assert_layer_bound(net, params, x)
    true = jaxgrad.jacobian.layer_jacobians
    monkeypatch.setattr(jaxgrad.jacobian, "layer_jacobians", lambda *a: [J.T for J in true(*a)])
    with pytest.raises(AssertionError, match=r"J vs diag\(φ′\(z\)\) W"):
        testing.assert_layer_bound(net, params, x)


def test_layer_bound_refuses_a_residual_layer_as_dense():
    net = jaxgrad.mlp(width=4, depth=2, residual_alpha=0.5)
    with pytest.raises(ValueError, match="dense layers"):
        testing.assert_layer_bound(net, net.init(jax.random.key(0)), jnp.ones(4))


@pytest.mark.parametrize(
    "a,lr", [(2.0, 0.3), (2.0, 0.5), (2.0, 0.99), (2.0, 1.01), (2.0, 1.5), (0.5, 3.0), (3.0, -0.1)]
)
def test_quadratic_contracts_iff_below_two_over_a(a, lr):
    testing.assert_quadratic_contracts_iff_stable(a, lr)


def test_quadratic_check_catches_a_wrong_threshold(monkeypatch):
    monkeypatch.setattr(jaxgrad.quadratic, "critical_learning_rate", lambda a, *args, **kw: 1.0 / a)
    with pytest.raises(AssertionError, match="contracts but 0 < η < 2/a"):
        testing.assert_quadratic_contracts_iff_stable(2.0, 0.7)  # stable (0.7 < 1), the wrong law says not

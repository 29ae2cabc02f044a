"""`jaxgrad.critical_point`: critical initialisation by measurement, against theory where it exists."""

import math

import numpy as np
import pytest

import jaxgrad
from jaxgrad import ensemble, theory
from jaxgrad.critical import growth_rates, rates_from_log_gains


def _mlp(activation, sigma_b2, width=64, depth=32):
    return jaxgrad.mlp(width=width, depth=depth, activation=activation, sigma_w=1.0, sigma_b=math.sqrt(sigma_b2))


# --------------------------------------------------------------------------- the estimators


def test_the_rate_estimators_on_known_gains():
    # two samples, three blocks, gains per block e^{a}: mean square ½ ln mean(e^{2a}), typical mean(a)
    steps = np.array([[[0.1, -0.2, 0.3], [0.0, 0.4, -0.1]]])
    b = np.cumsum(steps, axis=-1)
    rate, se, bad = rates_from_log_gains(b, criterion="typical", discard=0)
    per = steps.mean(-1)[0]
    assert np.allclose(rate, per.mean()) and np.allclose(se, per.std(ddof=1) / math.sqrt(2)) and bad[0] == 0
    rate, se, bad = rates_from_log_gains(b, criterion="mean_square", discard=1)  # the first block is the transient
    m = np.exp(2 * steps[0, :, 1:]).mean(-1)
    assert np.allclose(rate, 0.5 * np.log(m.mean()))
    assert np.allclose(se, 0.5 * m.std(ddof=1) / (math.sqrt(2) * m.mean()))
    b[0, 1, 2] = np.nan
    # a non-finite sample is counted, not dropped
    assert rates_from_log_gains(b, criterion="typical", discard=0)[2][0] == 1


@pytest.mark.parametrize(
    "activation, half_log_chi",
    [("linear", lambda s: math.log(s)), ("relu", lambda s: 0.5 * math.log(s * s / 2))],
    ids=["linear", "relu"],
)
def test_mean_square_rate_is_exact_for_homogeneous_networks(activation, half_log_chi):
    # E‖J v‖² = σ_w² (linear) and σ_w²/2 (ReLU, σ_b = 0) at every width: the measured rate sits on it
    values = [0.9, 1.3, 1.7]
    r = growth_rates(_mlp(activation, 0.0, width=16, depth=12), hyper="sigma_w", values=values, samples=256)
    for s, rate, se in zip(values, r.rates, r.rate_se):
        assert abs(rate - half_log_chi(s)) <= 4 * se, (s, rate, se)
    assert r.log_gain_quantiles.shape == (3, 3, 12) and r.log_gain_mean.shape == (3, 12)


# --------------------------------------------------------------------------- mean field


@pytest.mark.parametrize(
    "activation, sigma_b2, bracket",
    [
        ("tanh", 0.05, (1.0, 1.8)),  # Schoenholz et al. 2017: σ_w² = 1.7610
        ("tanh", 0.3, (1.0, 2.0)),
        ("erf", 0.1, (0.8, 2.0)),
        ("relu", 0.0, (1.0, 2.0)),  # He: √2
        ("selu", 0.05, (0.6, 1.3)),
        ("hard_tanh", 0.05, (0.8, 1.4)),
    ],
    ids=["tanh-0.05", "tanh-0.3", "erf-0.1", "relu-0", "selu-0.05", "hard_tanh-0.05"],
)
def test_mlp_critical_point_is_mean_fields_within_its_interval(activation, sigma_b2, bracket):
    crit = jaxgrad.critical_point(_mlp(activation, sigma_b2), hyper="sigma_w", bracket=bracket, samples=256)
    expected = float(theory.critical_sigma_w(activation, math.sqrt(sigma_b2)))
    assert crit.found, crit.message
    lo, hi = crit.interval
    assert lo <= expected <= hi, (crit.message, expected)
    assert hi - lo < 0.1  # a measurement, not a bracket: the interval is narrow
    assert crit.values[0] == bracket[0] and crit.values[-1] == bracket[1]
    assert np.all(np.diff(crit.values) >= 0) and crit.slope > 0


def test_tanh_without_bias_is_above_mean_field_at_finite_depth():
    """σ_b = 0: mean field's q* = 0 is approached algebraically (q_ℓ ~ 1/ℓ), so at depth 32 the
    measured crossing lies well above σ_w = 1: a finite-depth effect the interval must not hide."""
    crit = jaxgrad.critical_point(_mlp("tanh", 0.0), hyper="sigma_w", bracket=(0.7, 1.3), samples=128)
    assert crit.found and crit.interval[0] > 1.0, crit.message


# --------------------------------------------------------------------------- finite width, typical


@pytest.mark.parametrize("activation, bracket", [("linear", (0.8, 1.3)), ("relu", (1.2, 1.8))], ids=["linear", "relu"])
def test_typical_critical_point_is_the_exact_finite_width_law(activation, bracket):
    width = 16
    net = _mlp(activation, 0.0, width=width, depth=24)
    typical = jaxgrad.critical_point(net, hyper="sigma_w", bracket=bracket, samples=256, criterion="typical")
    expected = theory.critical_sigma_w_typical(activation, width)
    assert typical.interval[0] <= expected <= typical.interval[1], (typical.message, expected)
    # the mean-square point is 1 or √2 at every width, and the measured gap is the Jensen gap
    square = jaxgrad.critical_point(net, hyper="sigma_w", bracket=bracket, samples=256)
    exact = 1.0 if activation == "linear" else math.sqrt(2)
    assert square.interval[0] <= exact <= square.interval[1], square.message
    gap, gap_se = typical.value - square.value, math.hypot(typical.se, square.se)
    assert abs(gap - (expected - exact)) <= 4 * gap_se, (gap, expected - exact, gap_se)


def test_refinements_reuse_the_first_sweeps_program():
    net = _mlp("tanh", 0.05, width=16, depth=8)
    jaxgrad.critical_point(net, hyper="sigma_w", bracket=(1.0, 1.8), samples=16, points=5, refine=0, verify=False)
    before = ensemble.compile_count()
    crit = jaxgrad.critical_point(
        net, hyper="sigma_w", bracket=(0.9, 1.9), samples=16, points=5, refine=2, verify=False
    )
    assert ensemble.compile_count() == before and len(crit.values) == 5 + 3 + 3  # a refinement's ends were measured


# --------------------------------------------------------------------------- no zero, builders, models


def test_a_residual_network_with_no_critical_branch_scale_says_so():
    # h + a·relu(W h): E‖J v‖² = 1 + a²σ_w²/2 > 1, so the rate is positive for every a > 0
    net = jaxgrad.resnet(width=16, depth=16, branch="dense", activation="relu", alpha=0.0, a=0.5)
    crit = jaxgrad.critical_point(net, hyper="a", bracket=(0.05, 1.0), samples=32)
    assert not crit.found and math.isnan(crit.value) and all(map(math.isnan, crit.interval))
    assert "no critical a" in crit.message and "explode" in crit.message
    assert crit.rates[0] > 0 and crit.rates[-1] > 0 and f"{crit.rates[-1]:+.4g}" in crit.message


def test_a_builder_and_the_network_it_builds_give_the_same_point():
    def build(*, sigma_w, depth):
        return jaxgrad.mlp(width=16, depth=depth, activation="tanh", sigma_w=sigma_w, sigma_b=0.3)

    kwargs = dict(hyper="sigma_w", bracket=(1.0, 2.0), samples=32, depth=12, criterion="typical")
    a = jaxgrad.critical_point(build, **kwargs)
    b = jaxgrad.critical_point(build(sigma_w=1.0, depth=16), **kwargs)  # cut to depth 12
    assert a.found and a.value == b.value and np.array_equal(a.rates, b.rates)


def test_an_equinox_blocks_own_scale_is_tuned_through_hyper():
    eqx = pytest.importorskip("equinox")
    import jax

    width = 16

    def make(key, scale):  # Equinox's own Linear and init, its weight multiplied by `scale`
        linear = eqx.nn.Linear(width, width, key=key)
        return eqx.nn.Sequential(
            [eqx.tree_at(lambda m: m.weight, linear, scale * linear.weight), eqx.nn.Lambda(jax.numpy.tanh)]
        )

    net = jaxgrad.adapters.serial_from_equinox([make] * 16, shape=width, hyper={"scale": 1.0})
    crit = jaxgrad.critical_point(net, hyper="scale", bracket=(0.5, 3.0), samples=64)
    # Linear's default init is U(±1/√n) for W and b: σ_w² = scale²/3 and σ_b² = 1/(3n), so mean field puts the
    # critical scale at √3 · critical_sigma_w(tanh, 1/√(3n)) = 2.158 (n = 16)
    expected = math.sqrt(3) * float(theory.critical_sigma_w("tanh", 1 / math.sqrt(3 * width)))
    assert crit.found and crit.interval[0] <= expected <= crit.interval[1], (crit.message, expected)
    assert crit.rates[0] < 0  # the default (scale 1) is in the ordered phase: the gradients vanish


# --------------------------------------------------------------------------- bad input


BAD_INPUT = [
    (dict(hyper="sigma_q"), r"unknown `hyper`='sigma_q'.*\['sigma_b', 'sigma_w'\]"),
    (dict(bracket=(1.5, 1.5)), r"`bracket` must be increasing and non-empty"),
    (dict(bracket=(2.0, 1.0)), r"reversed: give it as \(1, 2\)"),
    (dict(bracket=(1.0, float("inf"))), r"`bracket` must be two finite numbers"),
    (dict(bracket=1.0), r"`bracket` must be two finite numbers"),
    (dict(criterion="median"), r"unknown `criterion`='median'.*\['mean_square', 'typical'\]"),
    (dict(samples=4), r"`samples` must be an integer ≥ 8"),
    (dict(depth=1), r"`depth` must be an integer ≥ 2"),
    (dict(depth=40), r"`depth` must be at most the network's depth 8"),
    (dict(discard=7), r"`discard` .* \[0, 6\], got discard=7"),
    (dict(points=2), r"`points` must be an integer ≥ 3"),
    (dict(interval_se=0.0), r"`interval_se` must be a positive finite number"),
    (dict(tolerance=-1.0), r"`tolerance` must be None or a positive finite number"),
    (dict(target=float("nan")), r"`target` \(the rate per block to reach\) must be a finite number"),
]


@pytest.mark.parametrize(
    "kwargs, match", BAD_INPUT, ids=[" ".join(f"{k}={v!r}" for k, v in kw.items()) for kw, _ in BAD_INPUT]
)
def test_bad_input_is_a_clear_error_before_any_compile(kwargs, match):
    net = _mlp("tanh", 0.05, width=8, depth=8)
    args = dict(hyper="sigma_w", bracket=(1.0, 1.8), samples=16) | kwargs
    before = ensemble.compile_count()
    with pytest.raises(ValueError, match=match):
        jaxgrad.critical_point(net, **args)
    assert ensemble.compile_count() == before


def test_a_builder_that_does_not_take_the_hyperparameter_is_a_clear_error():
    # (no compile count here: building a network checks its layers' claims, which compiles small programs)
    def build(width):
        return jaxgrad.mlp(width=width, depth=8)

    with pytest.raises(ValueError, match=r"cannot be called as builder\(sigma_w=...\)"):
        jaxgrad.critical_point(build, hyper="sigma_w", bracket=(1, 2))
    with pytest.raises(ValueError, match=r"takes no `depth` keyword"):
        jaxgrad.critical_point(
            lambda sigma_w: jaxgrad.mlp(width=8, depth=8, sigma_w=sigma_w), hyper="sigma_w", bracket=(1, 2), depth=4
        )
    with pytest.raises(ValueError, match=r"must return a jaxgrad.Network, got float"):
        jaxgrad.critical_point(lambda sigma_w: sigma_w, hyper="sigma_w", bracket=(1, 2))
    with pytest.raises(ValueError, match=r"`net_or_builder` must be a jaxgrad.Network or a callable"):
        jaxgrad.critical_point("mlp", hyper="sigma_w", bracket=(1, 2))
    # a builder that transforms its argument would be swept on the network's own σ_w, not on its argument
    with pytest.raises(ValueError, match=r"does not pass `sigma_w` straight to its network's traced `sigma_w`"):
        jaxgrad.critical_point(
            lambda sigma_w: jaxgrad.mlp(width=8, depth=8, sigma_w=2 * sigma_w), hyper="sigma_w", bracket=(0.3, 1.5)
        )


def test_a_precision_the_samples_cannot_give_says_how_many_would():
    net = _mlp("tanh", 0.05, width=16, depth=8)
    with pytest.raises(ValueError, match=r"`samples`=16 .* wider than tolerance=0.001: about samples=\d+, or") as e:
        jaxgrad.critical_point(net, hyper="sigma_w", bracket=(1.0, 1.8), samples=16, tolerance=1e-3, verify=False)
    crit = jaxgrad.critical_point(net, hyper="sigma_w", bracket=(1.0, 1.8), samples=16, verify=False)
    needed = int(str(e.value).split("about samples=")[1].split(",")[0])
    # the half-width 4 SE + e falls as 1/√samples: the suggestion is the smallest count that would reach 1e-3
    error = crit.interval[1] - crit.value - 4 * crit.se
    assert needed == math.ceil(16 * (4 * crit.se / (1e-3 - error)) ** 2)
    assert 4 * crit.se * math.sqrt(16 / needed) + error <= 1e-3 < 4 * crit.se * math.sqrt(16 / (needed - 1)) + error


def test_a_target_rate_is_reached_where_theory_puts_it():
    # linear Gaussian layers: ½ ln E g² = ln σ_w exactly, so rate = t at σ_w = e^t
    net = _mlp("linear", 0.0, width=16, depth=8)
    crit = jaxgrad.critical_point(net, hyper="sigma_w", bracket=(0.8, 1.4), samples=64, target=0.1)
    assert crit.interval[0] <= math.exp(0.1) <= crit.interval[1], crit.message
    assert crit.message.startswith("sigma_w at rate +0.1 = ")
    far = jaxgrad.critical_point(net, hyper="sigma_w", bracket=(0.8, 1.0), samples=64, target=0.1)
    assert not far.found and "lower than the target +0.1 everywhere" in far.message


def test_isometry_at_the_critical_point_orthogonal_weights_are_closer_than_gaussian():
    """At χ₁ = 1 the normalised eigenvalue variance of JJᵀ is L(μ₂/μ₁² − 1 + v_W) at large width, v_W = 1 for
    Gaussian and 0 for orthogonal weights (Pennington et al. 2017): criticality alone is not isometry."""
    found = {}
    for weights in ("gaussian", "orthogonal"):
        net = jaxgrad.mlp(width=32, depth=8, activation="tanh", sigma_w=1.0, sigma_b=math.sqrt(0.05), weights=weights)
        crit = jaxgrad.critical_point(net, hyper="sigma_w", bracket=(1.0, 1.8), samples=64, isometry=True)
        iso = crit.isometry
        assert iso.log_singular_values.shape == (64, 32) and np.isfinite(iso.log_singular_values).all()
        found[weights] = iso.eigenvalue_variance / iso.eigenvalue_mean**2, iso.spread
    assert found["orthogonal"][0] < found["gaussian"][0] / 2 and found["orthogonal"][1] < found["gaussian"][1]
    assert (
        jaxgrad.critical_point(
            _mlp("tanh", 0.05, width=8, depth=4), hyper="sigma_w", bracket=(1.0, 1.8), samples=16
        ).isometry
        is None
    )


def test_float32_and_float64_runs_find_the_same_point():
    """The same initialisations in both precisions (jaxgrad draws one network per seed whatever the dtype)."""
    net = _mlp("tanh", 0.05, width=16, depth=12)
    kwargs = dict(hyper="sigma_w", bracket=(1.0, 1.8), samples=32, refine=0)
    single = jaxgrad.critical_point(net, **kwargs)
    double = jaxgrad.critical_point(net, dtype="float64", **kwargs)
    assert abs(single.value - double.value) <= 1e-3 * single.se and np.allclose(single.rates, double.rates, atol=1e-5)

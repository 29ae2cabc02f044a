r"""Property-test your own network: hypothesis strategies and assertions for the seed's claims.

Every claim below holds for *every* network, so it can be tested "for all" with
`hypothesis` (`pip install "jaxgrad[testing]"`):

* the backprop chain $δ^{(\ell-1)} = J_\ell^\top δ^{(\ell)}$ equals `jax.grad` (seed §2.5):
  `assert_chain_equals_grad`;
* $\|J_1^\top\cdots J_L^\top\|_2 \le \prod_\ell\|J_\ell\|_2$ (seed §3), paired with the check that
  the product is the right one (it equals the Jacobian of the whole network by `jax.jacrev`;
  the inequality alone holds for any matrices and cannot catch a wrong product):
  `assert_submultiplicative`;
* $J_\ell = \mathrm{diag}(φ′(z^{(\ell)}))W^{(\ell)}$ and $\|J_\ell\|_2 \le \|\mathrm{diag}\,φ′\|_2\|W^{(\ell)}\|_2$
  for dense layers (seed §4): `assert_layer_bound`;
* gradient descent on $\tfrac12 aθ^2$ follows $θ_t = (1-ηa)^tθ_0$ and contracts iff
  $0 < η < 2/a$ (seed §1): `assert_quadratic_contracts_iff_stable`;
* a Monte-Carlo statistic beside its closed form at k standard errors (`jaxgrad.stats`):
  `assert_measured_beside_predicted`;
* the engine's own path (the batched program `jaxgrad.simulate` runs: a layer's fast-path
  Jacobian, the batched `jax.jacrev`, the Lanczos norms) equals an independent computation at
  every sample, layer and depth: `assert_engine_matches_reference`. The assertions above
  differentiate with `jax.jacrev` themselves and never touch that path.

Tolerances are rounding bounds, not guesses. With ε the machine epsilon of the dtype, a
product or matrix–vector chain of L factors of inner dimension ≤ n computed in floating
point differs from the exact one, entrywise and to first order in ε, by at most
$L\,n\,ε\,(|J_L|\cdots|J_1|)$ (Higham 2002, §3.5: $|fl(AB) - AB| \le γ_n|A||B|$, $γ_n ≈ nε$,
applied L times); two computations of the same quantity (the chain and `jax.grad`, the
product and `jax.jacrev`) differ by at most twice that. A layer's own Jacobian–vector
product may add a few roundings (the residual $I + αJ$, the activation's φ′ ⊙ v): the
helpers use $2(n+4)Lε$, and take ``factor=`` for layers that need more.

Strategies draw from few distinct shapes (widths 4 and 8, depths 1, 2 and 5, three
rectangular stacks), so JAX compiles each shape once, not once per example. For
reproducible runs use a deterministic profile::

    from hypothesis import HealthCheck, settings
    settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile("ci")

(``deadline=None`` because the first example of each shape compiles; ``derandomize``
makes the examples a function of the test alone.)

Reference:
  N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., SIAM 2002.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

try:
    from hypothesis import strategies as st
except ImportError as error:  # hypothesis is an optional dependency
    raise ImportError(
        'jaxgrad.testing needs hypothesis: pip install "jaxgrad[testing]" (or pip install hypothesis)'
    ) from error

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
from jax.typing import ArrayLike, DTypeLike

from jaxgrad import jacobian as _jacobian
from jaxgrad import quadratic as _quadratic
from jaxgrad import spectral as _spectral
from jaxgrad import stats as _stats
from jaxgrad import theory as _theory
from jaxgrad.activations import ACTIVATIONS, Activation, get_activation
from jaxgrad.layers import HIGHEST, WEIGHT_SCHEMES, Network, Params, mlp

__all__ = [
    "CUSTOM_ACTIVATIONS",
    "PHASES",
    "NetworkExample",
    "Phase",
    "activations",
    "weight_schemes",
    "widths",
    "depths",
    "phases",
    "networks",
    "inputs",
    "network_examples",
    "assert_chain_equals_grad",
    "assert_submultiplicative",
    "assert_layer_bound",
    "assert_quadratic_contracts_iff_stable",
    "assert_measured_beside_predicted",
    "assert_engine_matches_reference",
]

# --------------------------------------------------------------------------- strategies


def sine(x):
    """φ(x) = sin x: smooth, bounded, not monotone."""
    return jnp.sin(x)


def tanh_plus_linear(x):
    """φ(x) = tanh x + x/10: smooth, never saturates fully."""
    return jnp.tanh(x) + 0.1 * x


def inverse_square_root_unit(x):
    """φ(x) = x/√(1 + x²): smooth, saturates algebraically."""
    return x / jnp.sqrt(1.0 + x * x)


CUSTOM_ACTIVATIONS = (sine, tanh_plus_linear, inverse_square_root_unit)
PHASES = ("ordered", "critical", "chaotic")
RECTANGULAR = ((3, 5, 2), (6, 3, 6, 3), (4, 8, 4))
_PHASE_BOX = {"ordered": (0.5, 0.9), "critical": (1.0, 1.0), "chaotic": (1.1, 1.6)}


def activations(*, builtin: bool = True, custom: bool = True) -> st.SearchStrategy:
    """Activations: names of `jaxgrad.activations.ACTIVATIONS` and/or the smooth `CUSTOM_ACTIVATIONS`
    (module-level functions, so theory and compile caches see one object each)."""
    choices = (sorted(ACTIVATIONS) if builtin else []) + (list(CUSTOM_ACTIVATIONS) if custom else [])
    if not choices:
        raise ValueError("`activations` needs builtin=True or custom=True, got both False")
    return st.sampled_from(choices)


def weight_schemes() -> st.SearchStrategy:
    """Weight schemes of `jaxgrad.WEIGHT_SCHEMES`."""
    return st.sampled_from(list(WEIGHT_SCHEMES))


def _positive_ints(name: str, choices, minimum: int = 1) -> list[int]:
    choices = list(choices)
    if not choices or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < minimum for c in choices):
        raise ValueError(f"`{name}` must be a non-empty list of integers >= {minimum}, got {name}={choices!r}")
    return [int(c) for c in choices]


def widths(choices: Sequence[int] = (4, 8)) -> st.SearchStrategy:
    """Layer widths, from a few values (each distinct shape compiles once)."""
    return st.sampled_from(_positive_ints("widths", choices))


def depths(choices: Sequence[int] = (1, 2, 5)) -> st.SearchStrategy:
    """Depths L ≥ 1, from a few values."""
    return st.sampled_from(_positive_ints("depths", choices))


class Phase(NamedTuple):
    """σ_w, σ_b in a named mean-field phase of an activation, and χ₁ there."""

    name: str
    sigma_w: float
    sigma_b: float
    chi1: float


@functools.lru_cache(maxsize=256)
def _phase_interval(activation, phase: str, sigma_b: float) -> tuple[float, float]:
    """(σ_lo, σ_hi) of `phase` at σ_b, or a ValueError saying why it does not exist."""
    act = get_activation(activation)
    valid = f"valid phases are {list(PHASES)}"
    if phase not in PHASES:
        raise ValueError(f"unknown phase={phase!r}; {valid}")
    sigma_c = float(_theory.critical_sigma_w(act, sigma_b))
    if not math.isfinite(sigma_c):
        raise ValueError(
            f"activation {act.name!r} has no phase={phase!r} at sigma_b={sigma_b!r}: χ₁ = 1 is never "
            "crossed continuously for σ_w in [1e-3, 1e3] (theory.critical_sigma_w is NaN)"
        )
    lo, hi = (sigma_c * u for u in _PHASE_BOX[phase])
    for sigma_w in {lo, hi}:
        q = float(_theory.q_star(act, sigma_w, sigma_b))
        chi = float(_theory.chi1(act, sigma_w, sigma_b))
        if phase == "chaotic" and not (chi > 1 and 0 < q < math.inf):
            raise ValueError(
                f"activation {act.name!r} has no phase='chaotic' at sigma_b={sigma_b!r}: χ₁ > 1 only where the "
                f"length map diverges (at sigma_w={sigma_w:.4g}: q*={q:.4g}, χ₁={chi:.4g}), so gradients grow "
                "because the signal does, not through chaos at a finite q*; choose 'ordered' or 'critical'"
            )
        if phase == "ordered" and not chi < 1:
            raise ValueError(
                f"activation {act.name!r}: χ₁={chi:.4g} ≥ 1 at sigma_w={sigma_w:.4g} below "
                f"critical_sigma_w={sigma_c:.4g} (sigma_b={sigma_b!r}); no ordered phase there"
            )
    return lo, hi


def phases(
    activation: str | Callable | Activation = "tanh",
    names: Sequence[str] | str = PHASES,
    *,
    sigma_b: Sequence[float] = (0.1, 0.5),
) -> st.SearchStrategy:
    r"""`Phase` draws: σ_w in a named mean-field phase of `activation` at one of `sigma_b`.

    With $σ_c$ = `theory.critical_sigma_w(activation, σ_b)` (χ₁ = 1 from input variance 1):
    ``"ordered"`` draws σ_w ∈ [0.5, 0.9]·σ_c (χ₁ < 1, vanishing gradients),
    ``"critical"`` is σ_w = σ_c, ``"chaotic"`` σ_w ∈ [1.1, 1.6]·σ_c with χ₁ > 1 **at a finite
    fixed point q*** (Poole et al. 2016). Positively homogeneous activations (linear, ReLU,
    leaky ReLU) have no chaotic phase in this sense: for them χ₁ = σ_w²·const > 1 only where
    the length map diverges (q* = ∞): gradients explode because the signal does. Asking
    for a phase that does not exist is a ValueError (raised here, not while drawing).
    """
    names = [names] if isinstance(names, str) else list(names)
    sigma_b = [float(b) for b in sigma_b]
    if not names or not sigma_b or any(not (b >= 0 and math.isfinite(b)) for b in sigma_b):
        raise ValueError(
            f"`phases` needs phase names and finite sigma_b >= 0, got names={names!r}, sigma_b={sigma_b!r}"
        )
    key = activation if isinstance(activation, str) else get_activation(activation)
    boxes = {(name, b): _phase_interval(key, name, b) for name in names for b in sigma_b}

    def build(choice, u):
        (name, b), (lo, hi) = choice, boxes[choice]
        sigma_w = lo + u * (hi - lo)
        return Phase(name, sigma_w, b, float(_theory.chi1(key, sigma_w, b)))

    return st.builds(build, st.sampled_from(sorted(boxes)), st.floats(0.0, 1.0))


@st.composite
def networks(
    draw: st.DrawFn,
    *,
    activations: st.SearchStrategy | None = None,
    widths: Sequence[int] = (4, 8),
    depths: Sequence[int] = (1, 2, 5),
    weights: st.SearchStrategy | None = None,
    sigma_w: tuple[float, float] = (0.3, 2.5),
    sigma_b: tuple[float, float] = (0.0, 1.0),
    phase: Sequence[str] | str | None = None,
    residual: bool = True,
    rectangular: bool = True,
) -> Network:
    """`jaxgrad.mlp` networks: square, residual (``residual_alpha`` 0.25 or 1) and rectangular.

    Arguments:
      activations, weights: strategies (default: every built-in and custom activation,
        every weight scheme).
      widths, depths: the few values square networks take.
      sigma_w, sigma_b: ranges, used when `phase` is None; otherwise σ_w, σ_b come from
        `phases(activation, phase)` (then draw activations that have that phase).
      residual, rectangular: include those kinds.
    """
    width_choices, depth_choices = _positive_ints("widths", widths), _positive_ints("depths", depths)
    kinds = ["square"] + ["residual"] * residual + ["rectangular"] * rectangular
    kind = draw(st.sampled_from(kinds))
    activation = draw(activations if activations is not None else globals()["activations"]())
    scheme = draw(weights if weights is not None else weight_schemes())
    if phase is None:
        sw, sb = draw(st.floats(*sigma_w)), draw(st.floats(*sigma_b))
    else:
        drawn = draw(phases(activation, phase))
        sw, sb = drawn.sigma_w, drawn.sigma_b
    common = dict(activation=activation, weights=scheme, sigma_w=sw, sigma_b=sb)
    if kind == "rectangular":
        return mlp(widths=list(draw(st.sampled_from(RECTANGULAR))), **common)
    n, L = draw(st.sampled_from(width_choices)), draw(st.sampled_from(depth_choices))
    alpha = draw(st.sampled_from((0.25, 1.0))) if kind == "residual" else None
    return mlp(width=n, depth=L, residual_alpha=alpha, **common)


def inputs(n: int, *, scale: float = 1.0) -> st.SearchStrategy:
    """Inputs $x \\sim N(0, \\text{scale}^2 I_n)$ drawn from integer seeds (one shape, no recompiles)."""
    (n,) = _positive_ints("n", [n])
    return st.integers(0, 2**16).map(lambda s: scale * jax.random.normal(jax.random.key(s), (n,)))


class NetworkExample(NamedTuple):
    net: Network
    params: tuple
    x: jax.Array


@st.composite
def network_examples(draw: st.DrawFn, networks: st.SearchStrategy[Network] | None = None) -> NetworkExample:
    """`NetworkExample(net, params, x)`: a drawn network, ``net.init`` of a drawn key, and an input."""
    net = draw(networks if networks is not None else globals()["networks"]())
    params = net.init(jax.random.key(draw(st.integers(0, 2**16))))
    return NetworkExample(net, params, draw(inputs(net.widths[0])))


# --------------------------------------------------------------------------- assertions


def _check_example(net, params, x) -> jax.Array:
    if not isinstance(net, Network):
        raise ValueError(f"`net` must be a jaxgrad Network (jaxgrad.serial / jaxgrad.mlp), got {type(net).__name__}")
    if len(params) != net.depth:
        raise ValueError(f"`params` must hold one entry per layer, {net.depth}, got len(params)={len(params)}")
    x = jnp.asarray(x)
    if x.shape != (net.widths[0],):
        raise ValueError(f"input `x` must have shape ({net.widths[0]},) for this network, got x.shape={x.shape}")
    return x


def _eps(dtype) -> float:
    return float(jnp.finfo(dtype).eps)


def _factor(net: Network, factor) -> float:
    """Roundings per entry of one layer's Jacobian–vector product: n + 4 by default (see module)."""
    return float(max(net.widths) + 4 if factor is None else factor)


def _fail(what: str, excess: np.ndarray, detail: str):
    i = int(np.argmax(excess))
    raise AssertionError(
        f"{what}: exceeds its rounding bound at entry {np.unravel_index(i, excess.shape)} "
        f"by a factor {float(excess.ravel()[i]):.3g}; {detail}"
    )


def _default_loss(h):
    return 0.5 * jnp.sum((h - 1.0) ** 2)


def assert_chain_equals_grad(
    net: Network, params: Params, x: ArrayLike, loss: Callable | None = None, *, factor: float | None = None
) -> None:
    r"""Seed §2.5: $δ^{(\ell)}$ from $δ^{(\ell-1)} = J_\ell^\top δ^{(\ell)}$ (`jaxgrad.error_signals`) equals
    `jax.grad` of the loss of layers ℓ+1..L at $h^{(\ell)}$, for every ℓ (ℓ = 0 is ∂L/∂x).

    Tolerance, entrywise: $2f\,(L-\ell)\,ε\,(|J_{\ell+1}|^\top\cdots|J_L|^\top|δ^{(L)}|) + (L-\ell)\cdot$tiny,
    with $f$ = `factor` (default n_max + 4 roundings per layer, see the module).

    Arguments:
      net, params, x: a network, its parameters and an input of shape ``(n_0,)``.
      loss: scalar function of $h^{(L)}$; default $\tfrac12\|h^{(L)} - 1\|^2$.
    """
    x = _check_example(net, params, x)
    loss = _default_loss if loss is None else loss
    hs = _jacobian.forward(net, params, x)
    Js = _jacobian.layer_jacobians(net, params, x)
    deltas = _jacobian.error_signals(net, params, x, loss)
    if [d.shape for d in deltas] != [h.shape for h in hs]:
        raise AssertionError(
            f"error signals have shapes {[d.shape for d in deltas]}, the signals {[h.shape for h in hs]}"
        )
    eps, f, tiny = _eps(deltas[-1].dtype), _factor(net, factor), float(jnp.finfo(deltas[-1].dtype).tiny)
    scale = jnp.abs(deltas[-1])
    for ell in range(net.depth - 1, -1, -1):
        scale = jnp.matmul(jnp.abs(Js[ell]).T, scale, precision=HIGHEST)  # |J_{ℓ+1}|ᵀ ⋯ |J_L|ᵀ |δ^(L)|

        def rest(h, ell=ell):
            for layer, p in zip(net.layers[ell:], params[ell:]):
                h = layer.apply(p, h)
            return loss(h)

        want = jax.grad(rest)(hs[ell])
        steps = net.depth - ell
        bound = 2 * f * steps * eps * np.asarray(scale, np.float64) + steps * tiny
        excess = np.abs(np.asarray(deltas[ell], np.float64) - np.asarray(want, np.float64)) / bound
        if np.any(~(excess <= 1)):
            _fail(
                f"δ^({ell}) by the Jacobian chain vs jax.grad",
                excess,
                f"chain {np.asarray(deltas[ell])}, jax.grad {np.asarray(want)}",
            )


def assert_submultiplicative(net: Network, params: Params, x: ArrayLike, *, factor: float | None = None) -> None:
    r"""Seed §3: $\|J_1^\top\cdots J_L^\top\|_2 \le \prod_\ell\|J_\ell\|_2$, and that product is the right one.

    First the equality that pins the object down: $J_1^\top\cdots J_L^\top$ (`jaxgrad.product`
    of the transposed `layer_jacobians`) equals $(\partial h^{(L)}/\partial x)^\top$ by
    `jax.jacrev` of the whole network, entrywise within $2fLε(|J_1|^\top\cdots|J_L|^\top)$.
    Then the inequality, with the computed product's error ($\|E\|_F$, E that bound) and
    the SVD's ($nε$ relative, backward stable) as slack:
    $σ̂(P) \le \prod σ̂(J_\ell)(1 + 2nLε) + \|E\|_F$.
    """
    x = _check_example(net, params, x)
    Js = _jacobian.layer_jacobians(net, params, x)
    backward = _spectral.product([J.T for J in reversed(Js)])  # J₁ᵀ J₂ᵀ ⋯ J_Lᵀ
    whole = jax.jacrev(net.apply, argnums=1)(params, x).T
    if backward.shape != whole.shape:
        raise AssertionError(
            f"the product of the layer Jacobians has shape {backward.shape}, the network's Jacobianᵀ {whole.shape}"
        )
    eps, f, L, n = _eps(backward.dtype), _factor(net, factor), net.depth, max(net.widths)
    tiny = float(jnp.finfo(backward.dtype).tiny)
    abs_product = np.asarray(_spectral.product([jnp.abs(J).T for J in reversed(Js)]), np.float64)
    bound = 2 * f * L * eps * abs_product + L * tiny
    excess = np.abs(np.asarray(backward, np.float64) - np.asarray(whole, np.float64)) / bound
    if np.any(~(excess <= 1)):
        _fail("J₁ᵀ⋯J_Lᵀ vs jax.jacrev of the network (transposed)", excess, "the product is not the network's Jacobian")
    lhs = float(_spectral.spectral_norm(backward))
    norms = [float(_spectral.spectral_norm(J)) for J in Js]
    rhs = math.prod(norms) * (1 + 2 * n * L * eps) + float(np.linalg.norm(bound))
    if not lhs <= rhs:
        raise AssertionError(
            f"‖J₁ᵀ⋯J_Lᵀ‖₂ = {lhs:.6g} > ∏‖J_ℓ‖₂ = {math.prod(norms):.6g} (+ rounding slack: "
            f"{rhs:.6g}); per-layer norms {norms}"
        )


def assert_layer_bound(net: Network, params: Params, x: ArrayLike, *, layers: Sequence[int] | None = None) -> None:
    r"""Seed §4 for dense layers $h \mapsto φ(Wh + b)$: $J_\ell = \mathrm{diag}(φ′(z))\,W$ and
    $\|J_\ell\|_2 \le \|\mathrm{diag}\,φ′(z)\|_2\,\|W\|_2 = \max_i|φ′(z_i)|\,\|W\|_2$.

    $D = \partial h^{(\ell)}/\partial b$ (`jax.jacrev` in b) must be diagonal (it is diag φ′(z)
    for an elementwise φ, whatever φ is), J must equal $DW$ within $2ε|D||W|$ (one rounding
    each side), then the norm bound holds within the SVD's $2nε$ relative error.

    Arguments:
      layers: 0-based indices of dense layers (params with ``W`` and ``b``); default every
        layer made by `jaxgrad.dense` (name ``dense(…)``; residual layers are not dense).
    """
    x = _check_example(net, params, x)
    if layers is None:
        layers = [i for i, layer in enumerate(net.layers) if layer.name.startswith("dense(")]
    layers = list(layers)
    if not layers or any(not (isinstance(i, int) and 0 <= i < net.depth) for i in layers):
        raise ValueError(f"`layers` must list dense layers in 0..{net.depth - 1}, got layers={layers!r}")
    hs = _jacobian.forward(net, params, x)
    Js = _jacobian.layer_jacobians(net, params, x)
    for i in layers:
        layer, p, h, J = net.layers[i], params[i], hs[i], Js[i]
        D = jax.jacrev(lambda b: layer.apply(p._replace(b=b), h))(p.b)
        eps, n = _eps(J.dtype), max(J.shape)
        off = D - jnp.diag(jnp.diagonal(D))
        if jnp.any(off != 0):
            worst = float(jnp.max(jnp.abs(off)))
            raise AssertionError(
                f"layer {i}: ∂h/∂b is not diagonal (max off-diagonal {worst:.3g}); "
                "it is not a dense layer φ(Wh + b) with an elementwise φ"
            )
        d = jnp.diagonal(D)
        bound = 2 * eps * np.asarray(jnp.abs(d)[:, None] * jnp.abs(p.W), np.float64) + float(jnp.finfo(J.dtype).tiny)
        excess = np.abs(np.asarray(J, np.float64) - np.asarray(d[:, None] * p.W, np.float64)) / bound
        if np.any(~(excess <= 1)):
            _fail(f"layer {i}: J vs diag(φ′(z)) W", excess, "the Jacobian is not diag(φ′) W")
        lhs = float(_spectral.spectral_norm(J))
        rhs = float(jnp.max(jnp.abs(d))) * float(_spectral.spectral_norm(p.W)) * (1 + 2 * n * eps)
        if not lhs <= rhs:
            raise AssertionError(f"layer {i}: ‖J‖₂ = {lhs:.6g} > max|φ′|·‖W‖₂ = {rhs:.6g}")


def _quadratic_bound(r: float, x: float, steps: int, eps: float, theta0: float) -> np.ndarray:
    r"""First-order bound on $|θ̂_t - r^tθ_0|$: one step rounds $aθ$ (2 roundings in `jax.grad`),
    $ηg$ and $θ - ηg$, an error ≤ ε(|r| + 3ηa)|θ| (doubled for safety), which the later steps
    multiply by |r|: $e_{t+1} = |r|e_t + 2ε(|r| + 3x)(|r|^t|θ_0| + e_t)$."""
    c, e, out = 2 * eps * (abs(r) + 3 * x), 0.0, [0.0]
    for t in range(steps):
        e = abs(r) * e + c * (abs(r) ** t * abs(theta0) + e)
        out.append(e)
    return np.asarray(out)


def assert_quadratic_contracts_iff_stable(a: float, lr: float, *, steps: int = 32, theta0: float = 1.0) -> None:
    r"""Seed §1: `optax.sgd` on $\tfrac12 aθ^2$ (`jaxgrad.quadratic.sgd_trajectories`) gives
    $θ_t = (1-ηa)^tθ_0$ within a rounding bound, and $|θ_t| < |θ_0|$ for every t ≥ 1 iff
    $0 < η < 2/a$ (`jaxgrad.quadratic.critical_learning_rate`).

    Where $|1 - ηa|$ is within the rounding bound of 1 (η ≈ 2/a, or η ≈ 0) the direction is
    not decidable in floating point and only the closed form is checked.
    """
    a = float(a)
    if not (a > 0 and math.isfinite(a)):
        raise ValueError(f"curvature `a` must be positive and finite, got a={a!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer, got steps={steps!r}")
    raw = _quadratic.sgd_trajectories(jnp.asarray([a]), jnp.asarray([theta0]), lr, steps=steps)[0]
    theta = np.asarray(raw, np.float64)
    r = _quadratic.multiplier(a, lr)
    exact = _quadratic.closed_form(theta0, a, lr, steps)
    bound = _quadratic_bound(r, abs(lr * a), steps, _eps(raw.dtype), theta0) + float(jnp.finfo(raw.dtype).tiny)
    if not np.all(np.abs(theta - exact) <= bound):
        t = int(np.argmax(np.abs(theta - exact) / bound))
        raise AssertionError(
            f"θ_{t} = {theta[t]:.6g} from optax.sgd, (1 − ηa)^t θ₀ = {exact[t]:.6g} "
            f"(a={a}, lr={lr}): |diff| > rounding bound {bound[t]:.3g}"
        )
    if abs(abs(r) - 1) * abs(theta0) <= bound[1] * 4:
        return
    stable = 0 < lr < _quadratic.critical_learning_rate(a)
    contracts = bool(np.all(np.abs(theta[1:]) < abs(theta0)))
    if contracts != stable:
        raise AssertionError(
            f"a={a}, lr={lr}: gradient descent {'contracts' if contracts else 'does not contract'} "
            f"but 0 < η < 2/a = {2 / a:.6g} is {stable}"
        )


_STATISTICS = ("mean", "variance", "log_mean_exp")


def assert_measured_beside_predicted(
    samples: npt.ArrayLike,
    predicted: npt.ArrayLike,
    *,
    statistic: str = "mean",
    k: float = 4.0,
    allowance: npt.ArrayLike = 0.0,
    quantity: str = "measured",
) -> list[_stats.Comparison]:
    r"""A Monte-Carlo statistic of `samples` (axis 0) beside its prediction, at ``k·SE + allowance``.

    The statistic and its standard error come from `jaxgrad.stats`: ``"mean"``
    (`mean_and_se`), ``"variance"`` (`variance_and_se`), ``"log_mean_exp"``
    ($\ln\frac1N\sum e^{y_i}$, `log_mean_exp`). `allowance` is a stated finite-size bias
    (0 for exact laws). The chance that a correct prediction fails is that of a
    k-sigma event (6e-5 for k = 4) per compared entry.

    Arguments:
      samples: shape ``(N, …)``, N ≥ 2.
      predicted, allowance: broadcastable to ``samples.shape[1:]``.

    Returns:
      The `jaxgrad.stats.Comparison` rows (all passed), one per entry.
    """
    if statistic not in _STATISTICS:
        raise ValueError(f"unknown statistic={statistic!r}; valid choices are {list(_STATISTICS)}")
    samples = np.asarray(samples, np.float64)
    if samples.ndim < 1 or samples.shape[0] < 2:
        raise ValueError(f"`samples` needs at least 2 draws along axis 0, got samples.shape={samples.shape}")
    shape = samples.shape[1:]
    try:
        predicted = np.broadcast_to(np.asarray(predicted, np.float64), shape)
        allowance = np.broadcast_to(np.asarray(allowance, np.float64), shape)
    except ValueError:
        raise ValueError(
            f"`predicted` (shape {np.shape(predicted)}) and `allowance` (shape {np.shape(allowance)}) "
            f"must broadcast to samples.shape[1:] = {shape}"
        ) from None
    fn = {"mean": _stats.mean_and_se, "variance": _stats.variance_and_se, "log_mean_exp": _stats.log_mean_exp}
    value, se = (np.broadcast_to(v, shape) for v in fn[statistic](samples))
    rows = [
        _stats.within_standard_errors(
            f"{quantity}{list(i) if shape else ''} ({statistic})",
            value[i],
            se[i],
            predicted[i],
            k=k,
            allowance=allowance[i],
        )
        for i in np.ndindex(shape)
    ]
    failed = [c for c in rows if not c.passed]
    if failed:
        raise AssertionError(
            "; ".join(
                f"{c.quantity}: {c.measured:.6g} vs predicted {c.predicted:.6g}, |diff| > {c.tolerance:.3g}"
                for c in failed[:5]
            )
            + (f" (and {len(failed) - 5} more)" if len(failed) > 5 else "")
        )
    return rows


# --------------------------------------------------------------------------- the engine's own path


def assert_engine_matches_reference(
    net: Network,
    samples: int = 4,
    seed: int = 0,
    *,
    method: str = "power",
    dtype: DTypeLike | None = None,
    q0: float = 1.0,
    params: Params | None = None,
    inputs: npt.ArrayLike | None = None,
) -> None:
    r"""The engine's per-layer norms and product norms for `net` equal an independent computation.

    Runs ``jaxgrad.simulate(net, samples, seed, method=method, ...)`` with its self-check
    (`jaxgrad.verify`) widened to every sample, every layer and every depth, and without the
    fallback to `jax.jacfwd`: at each layer input the engine saw, $J_\ell$ by unbatched `jax.jacfwd`
    and `jax.jacrev` (float64, which must agree) and $\ln\|J_\ell\|_2$ by numpy's SVD against the
    engine's; $\ln\|J_d\cdots J_1\|_2$ (or the forward gain for ``method="vector"``) against the
    float64 chain's SVD at every depth the two forward passes have not separated (chaotic networks
    separate them; `jaxgrad.verify.TRAJECTORY_LIMIT`). Tolerances are derived from rounding and the
    method's contract (`jaxgrad.verify.CONTRACT`).

    It fails on a layer whose fast-path ``jacobian`` is wrong only where the engine uses it (a check
    of the claim at one point, `jaxgrad.layers.check_claims`, runs when the network is built), on a
    batched `jax.jacrev` that the compiler got wrong (jaxlib 0.10.2's LayerNorm), and on a Lanczos
    run that stops short of the top singular value.

    Raises:
      AssertionError: naming the sample, the layer or depth, both values and the tolerance.
    """
    from jaxgrad import engine as _engine
    from jaxgrad import verify as _verify

    method = _engine.choose_method(net, method)
    fields = _engine._check_fields(None, method)
    spectrum_at = tuple(range(1, net.depth + 1)) if method == "matrix_free" else ()
    plan = _verify.plan(net, method, fields, None, spectrum_at, everything=True)
    plan = plan._replace(rows=tuple(range(samples)), fallback=False)
    try:
        _engine.simulate(
            net,
            samples,
            seed,
            method=method,
            dtype=dtype,
            q0=q0,
            params=params,
            inputs=inputs,
            spectrum_at=spectrum_at,
            verify=plan,
        )
    except _verify.VerificationError as error:
        raise AssertionError(f"the engine's path differs from an independent computation: {error}") from None

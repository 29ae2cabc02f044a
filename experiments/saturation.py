r"""Seed §4.1: saturation. How the activation derivative shrinks $J_\ell = \mathrm{diag}(φ′(z))W$.

For tanh, $φ′(z) = 1 - \tanh^2 z$: near 1 for small |z|, near 0 once |z| is large. The
pre-activation $z_i = \sum_j W_{ij}h_j + b_i$ has variance $q = σ_w^2 q_0 + σ_b^2$ (input
$h \sim N(0, q_0 I)$), whichever of σ_w, σ_b or the input scale makes it large: all three
routes give the same law of φ′(z), which is what this study checks. Two summaries of
$\mathrm{diag}\,φ′(z)$ behave very differently:

* $E[φ′(z)^2]$ (the factor in mean-field χ₁) decays like $\tfrac{4}{3}\sqrt{2/(πq)}$ for tanh;
* $\|\mathrm{diag}\,φ′(z)\|_2 = \max_i |φ′(z_i)| = φ′(\min_i|z_i|)$ stays near its maximum
  (1 for tanh, ¼ for sigmoid) until q is of order n²: among n units one is almost
  always unsaturated. Its exact mean follows from the law of $\min_i|z_i|$,
  $P(\min_i|z_i| > t) = \mathrm{erfc}(t/\sqrt{2q})^n$ (order statistics, David & Nagaraja 2003;
  `theory.expected_max_derivative`, and `theory.input_norm_average` for the finite-width
  input norm).

So the seed's bound $\|J_\ell\|_2 \le \|\mathrm{diag}\,φ′\|_2\|W\|_2$ barely sees saturation, while
the Jacobian itself shrinks: $\|J_\ell\|_2/\|W\|_2$ lies between $\sqrt{E[φ′^2]}$ and $E\max_i φ′(z_i)$,
leaving the bound's factor as q grows but more slowly than $\sqrt{E[φ′^2]}$ falls (the few
unsaturated units keep their rows of W, whose norm is about half of $\|W\|_2$). The
comparisons check where it lies between the two at the largest q.
Sigmoid ($φ′ \le ¼$) is shown beside tanh: even unsaturated it shrinks gradients 4×.

The ensemble is one vmapped program over (route, q, activation, sample): unit-scale
parameters from `jaxgrad.dense(...).init` are multiplied by σ_w and σ_b, so the sweep
does not recompile per point (a layer's apply is linear in its parameters' scale).

Run: ``jaxgrad run saturation`` (quick: width 64, 13 variances × 3 routes × 2
activations × 256 samples, seconds); ``--scale full``: width 256, 41 variances, 4096.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxgrad
from jaxgrad import plotting, theory
from jaxgrad.activations import ACTIVATIONS, derivative
from jaxgrad.stats import Comparison
from experiments._common import mean_and_se, quantiles, require_integers
from experiments.runner import compute

NAME = "saturation"
SECTION = "§4.1"
TITLE = "Saturation: the law of φ′(z) as the pre-activation variance grows, and ‖J_ℓ‖₂"

ACTS = ("tanh", "sigmoid")
ROUTES = ("sigma_w", "sigma_b", "input")
ROUTE_LABELS = {
    "sigma_w": "via σ_w (σ_b = 0, q₀ = 1)",
    "sigma_b": "via σ_b (σ_w = 0.1, q₀ = 1)",
    "input": "via input scale q₀ (σ_w = 1, σ_b = 0)",
}
SIGMA_W_FOR_BIAS_ROUTE = 0.1


@dataclasses.dataclass(frozen=True)
class Config:
    width: int = 64
    samples: int = 256
    q_min: float = 0.02
    q_max: float = 200.0
    n_q: int = 13
    histogram_q: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)

    def __post_init__(self):
        require_integers(self, ("width", "samples", "n_q"))
        if not SIGMA_W_FOR_BIAS_ROUTE**2 < self.q_min < self.q_max < math.inf:
            raise ValueError(
                f"need {SIGMA_W_FOR_BIAS_ROUTE**2} < q_min < q_max < inf, got "
                f"q_min={self.q_min!r}, q_max={self.q_max!r}"
            )
        if not all(q > 0 for q in self.histogram_q):
            raise ValueError(f"`histogram_q` must be positive, got histogram_q={self.histogram_q}")

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(width=256, samples=4096, n_q=41)


def q_grid(config: Config) -> np.ndarray:
    return np.geomspace(config.q_min, config.q_max, config.n_q)


def route_scales(route: str, q):
    """(σ_w, σ_b, q₀) giving pre-activation variance q along a route."""
    q = jnp.asarray(q)
    one, zero = jnp.ones_like(q), jnp.zeros_like(q)
    if route == "sigma_w":
        return jnp.sqrt(q), zero, one
    if route == "sigma_b":
        return SIGMA_W_FOR_BIAS_ROUTE * one, jnp.sqrt(q - SIGMA_W_FOR_BIAS_ROUTE**2), one
    return one, zero, q


def layer_statistics(activation: str, width: int, key, sigma_w, sigma_b, q0):
    """One sample: φ′(z), ln‖diag φ′‖₂, ln‖J‖₂ and ln‖W‖₂ of a dense layer at the given scales."""
    layer = jaxgrad.dense(width, width, activation=activation, sigma_w=1.0, sigma_b=1.0)
    key_params, key_input = jax.random.split(key)
    unit = layer.init(key_params)
    params = jaxgrad.DenseParams(sigma_w * unit.W, sigma_b * unit.b)
    h = jnp.sqrt(q0) * jax.random.normal(key_input, (width,))
    J, _ = layer.jacobian(params, h)  # = jax.jacrev(layer.apply) (tests/test_jacobian.py)
    d = derivative(ACTIVATIONS[activation].fn)(jnp.matmul(params.W, h, precision="highest") + params.b)
    return dict(
        phi_prime=d,
        mean_square_phi_prime=jnp.mean(d**2),
        log_max_phi_prime=jnp.log(jnp.max(jnp.abs(d))),
        log_norm_J=jnp.log(jaxgrad.spectral_norm(J)),
        log_norm_W=jnp.log(jaxgrad.spectral_norm(params.W)),
    )


def over_input_norm(g, route: str, q: np.ndarray, width: int, nodes: int = 161) -> np.ndarray:
    """`theory.input_norm_average` of g along a route: z is N(0, q_s) given the input, q_s = σ_w² q₀ s + σ_b²,
    s = ‖h‖²/(n q₀) ~ χ²_n/n shared by the n units of a sample (a Gaussian scale mixture at finite width)."""
    return theory.input_norm_average(g, *route_scales(route, q), width, nodes=nodes)


def points(config: Config) -> list[dict]:
    return [{"activation": a} for a in ACTS]


def run_point(config: Config, point: dict, key) -> dict[str, np.ndarray]:
    q = q_grid(config)
    out = {}
    for r, route in enumerate(ROUTES):
        sigma_w, sigma_b, q0 = route_scales(route, q)
        keys = jax.random.split(jax.random.fold_in(key, r), (q.size, config.samples))
        stats = jax.jit(
            jax.vmap(
                jax.vmap(
                    lambda k, sw, sb, q0: layer_statistics(point["activation"], config.width, k, sw, sb, q0),
                    in_axes=(0, None, None, None),
                )
            )
        )(keys, sigma_w, sigma_b, q0)
        for name, value in stats.items():
            value = np.asarray(value)
            if name == "phi_prime":  # keep the histogram's share: the σ_w route at histogram_q
                if route != "sigma_w":
                    continue
                idx = [int(np.argmin(np.abs(np.log(q / hq)))) for hq in config.histogram_q]
                value = value[idx].reshape(len(idx), -1)
            out[f"{route}/{name}"] = value
    return out


def summarize(config: Config, results):
    q = q_grid(config)
    rows, data = [], dict(q=q)
    for point, arrays in results:
        act = point["activation"]
        # Exact at finite width: Gaussian given the input norm, averaged over that norm's χ² law.
        for route in ROUTES:
            data[f"{act}/{route}/predicted_mean_square"] = over_input_norm(
                lambda v, act=act: theory.expected_mean_square_derivative(act, v), route, q, config.width
            )
            data[f"{act}/{route}/predicted_max"] = over_input_norm(
                lambda v, act=act: theory.expected_max_derivative(act, v, config.width), route, q, config.width
            )
            # The max is heavy-tailed where q is small (its deficit from φ′(0) goes like min_i z_i², and
            # min_i |z_i| is nearly exponential), so 256 samples underestimate its SE; the comparison
            # uses the larger of that and the SE under the predicted law itself.
            second = over_input_norm(
                lambda v, act=act: theory.expected_max_derivative(act, v, config.width, power=2), route, q, config.width
            )
            data[f"{act}/{route}/predicted_max_se"] = np.sqrt(
                np.maximum(second - data[f"{act}/{route}/predicted_max"] ** 2, 0.0) / config.samples
            )
        predicted_m2 = theory.expected_mean_square_derivative(act, q)
        predicted_max = theory.expected_max_derivative(act, q, config.width)
        data[f"{act}/predicted_mean_square"] = predicted_m2
        data[f"{act}/predicted_max"] = predicted_max
        data[f"{act}/histograms"] = arrays["sigma_w/phi_prime"]
        fine = np.geomspace(q[0], q[-1], 200)
        data["q_fine"] = fine
        data[f"{act}/predicted_mean_square_fine"] = theory.expected_mean_square_derivative(act, fine)
        for route in ROUTES:
            mean_sq, mean_sq_se = mean_and_se(arrays[f"{route}/mean_square_phi_prime"], axis=1)
            log_max = arrays[f"{route}/log_max_phi_prime"]
            max_mean, max_sample_se = mean_and_se(np.exp(log_max), axis=1)
            max_se = np.maximum(max_sample_se, data[f"{act}/{route}/predicted_max_se"])  # see above
            jac = arrays[f"{route}/log_norm_J"] - arrays[f"{route}/log_norm_W"]
            q_jac = quantiles(arrays[f"{route}/log_norm_J"], axis=1)
            data.update(
                {
                    f"{act}/{route}/mean_square": mean_sq,
                    f"{act}/{route}/mean_square_se": mean_sq_se,
                    f"{act}/{route}/max_mean": max_mean,
                    f"{act}/{route}/max_se": max_se,
                    f"{act}/{route}/log_norm_J": q_jac,
                    f"{act}/{route}/log_norm_J_over_W": quantiles(jac, axis=1),
                }
            )
            for k, v in enumerate(q):
                rows.append(
                    dict(
                        activation=act,
                        route=route,
                        q=v,
                        width=config.width,
                        samples=config.samples,
                        mean_square_phi_prime=mean_sq[k],
                        mean_square_phi_prime_se=mean_sq_se[k],
                        max_phi_prime_mean=max_mean[k],
                        max_phi_prime_sample_se=max_sample_se[k],
                        max_phi_prime_se_predicted_law=data[f"{act}/{route}/predicted_max_se"][k],
                        max_phi_prime_predicted=data[f"{act}/{route}/predicted_max"][k],
                        mean_square_phi_prime_predicted=data[f"{act}/{route}/predicted_mean_square"][k],
                        log_norm_J_median=q_jac[1][k],
                        log_norm_J_q05=q_jac[0][k],
                        log_norm_J_q95=q_jac[2][k],
                    )
                )
    return rows, data


def comparisons(data, config: Config) -> list[Comparison]:
    out = []
    for act in ACTS:
        for quantity, key, se_key, pred_key, formula in (
            ("E[φ′(z)²]", "mean_square", "mean_square_se", "predicted_mean_square", "quadrature"),
            (
                "E‖diag φ′(z)‖₂ = E max_i φ′(z_i)",
                "max_mean",
                "max_se",
                "predicted_max",
                "order statistics; SE the larger of the sample's and the predicted law's",
            ),
        ):
            # the worst point, in units of its own SE, over every q and every route
            z = np.stack(
                [
                    np.abs(data[f"{act}/{r}/{key}"] - data[f"{act}/{r}/{pred_key}"])
                    / np.maximum(data[f"{act}/{r}/{se_key}"], 1e-30)
                    for r in ROUTES
                ]
            )
            r, k = np.unravel_index(np.argmax(z), z.shape)
            route = ROUTES[r]
            out.append(
                Comparison(
                    f"{act}: {quantity} ({formula}, averaged over the input norm's χ²_n law), worst of {z.size} "
                    f"(route, q) points: {ROUTE_LABELS[route]}, q = {data['q'][k]:.3g} (tolerance 4 SE, "
                    f"{config.samples} samples)",
                    data[f"{act}/{route}/{key}"][k],
                    data[f"{act}/{route}/{pred_key}"][k],
                    4 * data[f"{act}/{route}/{se_key}"][k],
                )
            )
        position = between_the_factors(data, act)
        route = max(position, key=lambda r: abs(position[r] - 0.5))
        out.append(
            Comparison(
                f"{act}: panel (c) at q = {data['q'][-1]:.3g}: where the median of ln‖J_ℓ‖₂ − ln‖W_ℓ‖₂ lies from "
                f"½ ln E[φ′²] (0) to the bound's factor ln E max_i φ′(z_i) (1), the route farthest from ½ "
                f"({ROUTE_LABELS[route]}); passes iff it lies between the two (0 to 1)",
                position[route],
                0.5,
                0.5,
            )
        )
    return out


def between_the_factors(data, act: str) -> dict[str, float]:
    """Per route, at the largest q: (m − a)/(b − a) for the median m of ln‖J_ℓ‖₂ − ln‖W_ℓ‖₂ in panel (c),
    a = ½ ln E[φ′²] (dotted) and b = ln E max_i φ′(z_i) (dashed): 0 on the dotted line, 1 on the dashed."""
    low = 0.5 * np.log(data[f"{act}/predicted_mean_square"][-1])
    high = np.log(data[f"{act}/predicted_max"][-1])
    return {route: float((data[f"{act}/{route}/log_norm_J_over_W"][1][-1] - low) / (high - low)) for route in ROUTES}


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    return compute(sys.modules[__name__], config or Config.quick(), seed)


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    q, fine = data["q"], data["q_fine"]
    fig, axes = plotting.subplots(1, 3, width=3.6, height=3.4)
    bins = np.linspace(0, 1, 41)
    for k, hq in enumerate(config.histogram_q):
        axes[0].hist(
            data["tanh/histograms"][k],
            bins=bins,
            histtype="step",
            density=True,
            linewidth=1.3,
            color=plotting.PALETTE[k],
            label=f"q ≈ {q[int(np.argmin(np.abs(np.log(q / hq))))]:.2g}",
        )
    plotting.label_axes(
        axes[0], "tanh′(z)", "density (log scale)", title="(a) law of tanh′(z), z ~ N(0, q)", ylog=True, legend=False
    )
    axes[0].legend(fontsize=7, loc="upper center")
    markers = {"sigma_w": "o", "sigma_b": "s", "input": "^"}
    for k, act in enumerate(ACTS):
        color = plotting.PALETTE[k]
        plotting.theory_line(
            axes[1], fine, data[f"{act}/predicted_mean_square_fine"], color=color, label=f"{act}: E[φ′²] (quadrature)"
        )
        plotting.theory_line(
            axes[1],
            q,
            data[f"{act}/predicted_max"],
            color=color,
            linestyle="--",
            label=f"{act}: E max$_i$ φ′($z_i$), n = {config.width}",
        )
        for route in ROUTES:
            plotting.measured_points(axes[1], q, data[f"{act}/{route}/mean_square"], color=color, marker=markers[route])
            plotting.measured_points(axes[1], q, data[f"{act}/{route}/max_mean"], color=color, marker=markers[route])
        for route in ROUTES:
            band = data[f"{act}/{route}/log_norm_J_over_W"]
            axes[2].plot(q, band[1], color=color, marker=markers[route], markerfacecolor="none", linewidth=0.8)
        plotting.theory_line(
            axes[2],
            fine,
            0.5 * np.log(data[f"{act}/predicted_mean_square_fine"]),
            color=color,
            linestyle=":",
            label=f"{act}: ½ ln E[φ′²]",
        )
        plotting.theory_line(
            axes[2],
            q,
            np.log(data[f"{act}/predicted_max"]),
            color=color,
            linestyle="--",
            label=f"{act}: ln E max$_i$ φ′($z_i$) (bound's factor)",
        )
    for route in ROUTES:
        axes[1].plot(
            [],
            [],
            linestyle="none",
            marker=markers[route],
            markerfacecolor="none",
            color="0.3",
            label=ROUTE_LABELS[route].replace("σ_w", "$σ_w$").replace("σ_b", "$σ_b$"),
        )  # mathtext
    plotting.label_axes(
        axes[1],
        "pre-activation variance q",
        "derivative statistic",
        xlog=True,
        ylog=True,
        title="(b) E[φ′²] shrinks, max φ′ does not",
        legend=False,
    )
    axes[1].legend(fontsize=6, loc="lower left")
    plotting.label_axes(
        axes[2],
        "pre-activation variance q",
        r"ln‖$J_\ell$‖₂ − ln‖$W_\ell$‖₂ (median)",
        xlog=True,
        title="(c) one layer's Jacobian",
        legend=False,
    )
    axes[2].legend(fontsize=6, loc="lower left")
    plotting.save_figure(fig, outdir, "saturation")
    where = {act: min(between_the_factors(data, act).values()) for act in ACTS}  # the routes agree to ~1 %
    nearer = ", nearer the bound's factor" if min(where.values()) > 0.5 else ""
    return [
        plotting.Figure(
            "saturation",
            (
                f"Saturation (seed §4.1) at width {config.width}, {config.samples} samples per point. (a) The law of "
                "tanh′(z) piles up at 0 as the pre-activation variance q grows. (b) E[φ′(z)²] (solid: quadrature; "
                "markers: measured, one shape per route to q: σ_w, σ_b or the input scale, which coincide) falls like "
                "q^(-1/2), but ‖diag φ′‖₂ = max_i φ′(z_i) (dashed: exact order statistics) stays near 1 (tanh) or ¼ "
                "(sigmoid) until q ~ n². (c) ln‖J_ℓ‖₂ − ln‖W_ℓ‖₂ (median over samples, markers per route) lies between "
                "½ ln E[φ′²] (dotted) and the bound's factor ln E max_i φ′(z_i) (dashed), which agree while q is small. "
                "As q grows it leaves the bound's factor, but falls more slowly than ½ ln E[φ′²]: at the largest "
                f"q = {q[-1]:.3g} it lies at least {where['tanh']:.0%} (tanh) and {where['sigmoid']:.0%} (sigmoid) "
                "of the way from "
                f"the dotted line to the dashed one{nearer}. The Jacobian shrinks with saturation while the seed's bound "
                "‖J‖₂ ≤ ‖diag φ′‖₂‖W‖₂ barely moves: the bound grows loose."
            ),
        )
    ]

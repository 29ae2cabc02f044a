r"""Bring your own model: an Equinox tanh MLP measured beside the same network written as `jaxgrad.mlp`.

The model is an ordinary Equinox module, a tanh layer $h \mapsto \tanh(Wh + b)$ built on
`eqx.nn.Linear` and re-initialised Gaussian, $W_{ij} \sim N(0, σ_w^2/n)$, $b_i \sim N(0, σ_b^2)$,
with its own key usage (its draws are not jaxgrad's). `jaxgrad.adapters.serial_from_equinox`
turns a stack of them into a network; its constructor takes σ_w and σ_b as keyword arguments
(``hyper=``), so they are traced values and a σ_w grid is **one compiled program**
(``compiles`` in summary.csv counts the engine's XLA compiles per point; ``check_compiles``, apart,
the self-check's reference programs, compiled once per network structure). Two parts, at σ_b² = 0.05:

1. ``agreement``: both networks at one σ_w, independent initialisations (different seeds),
   ``method="auto"`` (materialised at n = 32: the config records "power"). At each depth in
   `depths`, $\ln\|J_\ell\cdots J_1\|_2$ and at the last the backward gain are compared as two
   samples: the difference of means within 4 combined standard errors, and the
   Kolmogorov–Smirnov statistic below its critical value at α = 10⁻³ (`jaxgrad.stats.ks_two_sample`).
2. ``boundary``: the order/chaos boundary from the measured gradient growth. For each σ_w of
   `sigma_w`, one sweep (method ``"vector"``) records $b_\ell = \ln\|J_1^\top\cdots J_\ell^\top ê_\ell\|$;
   the per-layer growth is the mean-square rate $\tfrac12\ln\overline{g^2}$ of the one-layer gains
   $g_\ell = e^{b_\ell - b_{\ell-1}}$ over ℓ ∈ [fit_start, depth] (no Jensen gap; SE by the delta
   method over per-sample averages, as in experiments/phase_diagram.py). Its zero, interpolated
   linearly in σ_w² between the grid points that bracket it, is compared with mean field's
   χ₁ = 1, `theory.critical_sigma_w("tanh", √0.05)`² = 1.761 (Schoenholz et al. 2017, Fig. 1),
   at tolerance (4 SE + 1/(2n))/|d rate/dσ_w²| (the SE of the rates and the finite-width bias
   allowance of the phase-diagram study, through the measured slope) + how far the same
   interpolation of mean field's ½ ln χ₁ on this grid lands from its exact zero (the grid step's
   share). The jaxgrad MLP is measured the same way beside it.

Run: ``jaxgrad run your_own_model`` (quick: agreement at n = 32, depth 24, 1024
initialisations each; boundary at n = 64, depth 32, 7 values of σ_w, 256 initialisations;
84 s wall, 74 s CPU, on 2 CPU cores shared with other jobs, half of it four compiles); ``--scale full``:
n = 256 and 512, 4096/2048 initialisations, 15 σ_w values (an accelerator).

References: S. S. Schoenholz, J. Gilmer, S. Ganguli and J. Sohl-Dickstein, ICLR 2017;
B. Poole et al., NeurIPS 2016; P. Kidger and C. Garcia, Equinox (2021).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxgrad
from jaxgrad import ensemble, plotting, theory
from jaxgrad.stats import Comparison, ks_two_sample, mean_and_se
from experiments._common import engine_seed, require_integers
from experiments.runner import compute

NAME = "your_own_model"
SECTION = "§5"
TITLE = (
    "Bring your own model: an Equinox tanh MLP agrees with jaxgrad.mlp in distribution and has its order/chaos "
    "boundary at σ_w² = 1.761"
)

MODELS = ("equinox", "jaxgrad")
ALPHA = 1e-3  # the KS level per depth


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the two parts; the defaults are the quick scale."""

    width: int = 32
    sigma_b2: float = 0.05
    agreement_sigma_w: float = 1.5
    agreement_depth: int = 24
    depths: tuple[int, ...] = (4, 8, 16, 24)
    agreement_samples: int = 1024
    sigma_w: tuple[float, ...] = (1.1, 1.2, 1.275, 1.35, 1.425, 1.5, 1.6)
    boundary_width: int = 64
    boundary_depth: int = 32
    fit_start: int = 9
    boundary_samples: int = 256
    theory_points: int = 81

    def __post_init__(self):
        require_integers(
            self,
            (
                "width",
                "agreement_depth",
                "agreement_samples",
                "boundary_width",
                "boundary_depth",
                "boundary_samples",
                "theory_points",
            ),
        )
        if not (math.isfinite(self.sigma_b2) and self.sigma_b2 >= 0):
            raise ValueError(f"`sigma_b2` must be a finite non-negative number, got sigma_b2={self.sigma_b2!r}")
        if not (math.isfinite(self.agreement_sigma_w) and self.agreement_sigma_w > 0):
            raise ValueError(f"`agreement_sigma_w` must be positive, got agreement_sigma_w={self.agreement_sigma_w!r}")
        if (
            not self.depths
            or list(self.depths) != sorted(set(self.depths))
            or not all(isinstance(d, int) and 1 <= d <= self.agreement_depth for d in self.depths)
        ):
            raise ValueError(
                f"`depths` must be increasing integers in 1..agreement_depth={self.agreement_depth}, "
                f"got depths={self.depths}"
            )
        if (
            len(self.sigma_w) < 2
            or list(self.sigma_w) != sorted(set(self.sigma_w))
            or not all(0 < w < math.inf for w in self.sigma_w)
        ):
            raise ValueError(
                f"`sigma_w` must hold at least 2 positive, finite, increasing values, got sigma_w={self.sigma_w}"
            )
        if not 2 <= self.fit_start <= self.boundary_depth - 2:
            raise ValueError(
                f"`fit_start` must lie in [2, boundary_depth − 2] = [2, {self.boundary_depth - 2}], "
                f"got fit_start={self.fit_start!r}"
            )

    @property
    def sigma_b(self) -> float:
        return math.sqrt(self.sigma_b2)

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(
            width=256,
            agreement_depth=64,
            depths=(4, 16, 32, 64),
            agreement_samples=4096,
            boundary_width=512,
            sigma_w=tuple(np.round(np.linspace(1.15, 1.5, 15), 3).tolist()),
            boundary_depth=64,
            fit_start=17,
            boundary_samples=2048,
        )


# --------------------------------------------------------------------------- the model


@functools.cache
def equinox_layer(width: int):
    """The constructor ``make(key, sigma_w, sigma_b)`` of a tanh layer of `width` (one object per width)."""
    import equinox as eqx

    class TanhLayer(eqx.Module):
        """tanh(W h + b): an eqx.nn.Linear re-initialised W ~ N(0, σ_w²/n), b ~ N(0, σ_b²)."""

        linear: eqx.nn.Linear

        def __init__(self, key, sigma_w, sigma_b):
            k_linear, k_w, k_b = jax.random.split(key, 3)
            linear = eqx.nn.Linear(width, width, key=k_linear)
            weight = sigma_w / math.sqrt(width) * jax.random.normal(k_w, (width, width))
            bias = sigma_b * jax.random.normal(k_b, (width,))
            self.linear = eqx.tree_at(lambda m: (m.weight, m.bias), linear, (weight, bias))

        def __call__(self, h):
            return jnp.tanh(self.linear(h))

    def make(key, sigma_w, sigma_b):
        return TanhLayer(key, sigma_w, sigma_b)

    return make


def network(model: str, config: Config, width: int, depth: int, sigma_w: float) -> jaxgrad.Network:
    if model == "jaxgrad":
        return jaxgrad.mlp(width=width, depth=depth, activation="tanh", sigma_w=sigma_w, sigma_b=config.sigma_b)
    return jaxgrad.adapters.serial_from_equinox(
        [equinox_layer(width)] * depth, hyper={"sigma_w": sigma_w, "sigma_b": config.sigma_b}
    )


# --------------------------------------------------------------------------- protocol


def points(config: Config) -> list[dict]:
    return [{"part": part, "model": model} for part in ("agreement", "boundary") for model in MODELS]


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    seed = engine_seed(key)  # the point's own key: the two models see independent initialisations
    before, start = ensemble.compile_count(), time.perf_counter()
    if point["part"] == "agreement":
        net = network(point["model"], config, config.width, config.agreement_depth, config.agreement_sigma_w)
        r = jaxgrad.simulate(
            net,
            config.agreement_samples,
            seed,
            method="auto",
            spectrum_at=config.depths,
            fields=["log_spectral_norm", "log_backward_gain"],
        )
        out = {
            "log_spectral_norm": r.log_spectral_norm,
            "log_backward_gain": r.log_backward_gain,
            "power": np.asarray(r.config["method"] == "power"),
        }
    else:
        net = network(point["model"], config, config.boundary_width, config.boundary_depth, config.sigma_w[0])
        r = jaxgrad.sweep(
            net,
            config.boundary_samples,
            seed,
            grid={"sigma_w": list(config.sigma_w)},
            method="vector",
            fields=["log_backward_gain"],
        )
        b = np.asarray(r.log_backward_gain, np.float64)  # (n_w, samples, depth)
        ell = np.arange(config.fit_start, config.boundary_depth + 1)
        g2 = np.exp(2 * (b[..., ell - 1] - b[..., ell - 2]))  # squared one-layer gains in the window
        out = {
            "mean_square_gain": g2.mean(axis=-1),
            "mean_log_backward_gain": b.mean(axis=1),
            "nonfinite": np.asarray(r.nonfinite["log_backward_gain"]),
        }
    # the self-check's reference programs compile once per structure (`verification["compiles"]`), apart
    check = int(r.config["verification"]["compiles"]) if r.config.get("verification") else 0
    out.update(
        compiles=np.asarray(ensemble.compile_count() - before - check),
        check_compiles=np.asarray(check),
        wall_seconds=np.asarray(time.perf_counter() - start),
    )
    return out


def _crossing(x, y):
    """(x where the piecewise-linear y(x) first crosses 0 upwards, bracket index k); (nan, −1) if none."""
    for k in range(len(x) - 1):
        if y[k] < 0 <= y[k + 1]:
            return x[k] + (x[k + 1] - x[k]) * (-y[k]) / (y[k + 1] - y[k]), k
    return math.nan, -1


def summarize(config: Config, results):
    data, rows = {}, []
    sw2 = np.asarray(config.sigma_w) ** 2
    chi1 = theory.chi1("tanh", np.asarray(config.sigma_w), config.sigma_b)
    half_log_chi1 = 0.5 * np.log(np.asarray(chi1, np.float64))
    fine = np.linspace(config.sigma_w[0], config.sigma_w[-1], config.theory_points)
    data.update(
        sigma_w2=sw2,
        half_log_chi1=half_log_chi1,
        theory_sigma_w2=fine**2,
        theory_half_log_chi1=0.5 * np.log(np.asarray(theory.chi1("tanh", fine, config.sigma_b), np.float64)),
        critical_sigma_w2=np.asarray(float(theory.critical_sigma_w("tanh", config.sigma_b)) ** 2),
        depths=np.asarray(config.depths),
        agreement_depths=np.arange(1, config.agreement_depth + 1),
    )
    for point, arrays in results:
        model, part = point["model"], point["part"]
        common = dict(
            part=part,
            model=model,
            width=config.width,
            compiles=int(arrays["compiles"]),
            check_compiles=int(arrays["check_compiles"]),
            wall_seconds=float(arrays["wall_seconds"]),
        )
        if part == "agreement":
            lsn = np.asarray(arrays["log_spectral_norm"], np.float64)
            data[f"{model}_log_spectral_norm"] = lsn
            data[f"{model}_log_backward_gain_last"] = np.asarray(arrays["log_backward_gain"], np.float64)[:, -1]
            for d in config.depths:
                m, se = mean_and_se(lsn[:, d - 1])
                rows.append(
                    dict(
                        common,
                        sigma_w=config.agreement_sigma_w,
                        depth=d,
                        samples=config.agreement_samples,
                        method="power" if bool(arrays["power"]) else "matrix_free",
                        mean_log_spectral_norm=m,
                        se=se,
                    )
                )
        else:
            g2 = np.asarray(arrays["mean_square_gain"], np.float64)  # (n_w, samples)
            mean = g2.mean(axis=1)
            se = g2.std(axis=1, ddof=1) / np.sqrt(g2.shape[1])
            rate, rate_se = 0.5 * np.log(mean), 0.5 * se / mean
            data[f"{model}_rate"], data[f"{model}_rate_se"] = rate, rate_se
            data[f"{model}_mean_log_backward_gain"] = np.asarray(arrays["mean_log_backward_gain"], np.float64)
            for j, w in enumerate(config.sigma_w):
                rows.append(
                    dict(
                        common,
                        width=config.boundary_width,
                        sigma_w=w,
                        depth=config.boundary_depth,
                        samples=config.boundary_samples,
                        method="vector",
                        mean_square_rate=float(rate[j]),
                        se=float(rate_se[j]),
                        half_log_chi1=float(half_log_chi1[j]),
                        nonfinite=int(arrays["nonfinite"]),
                    )
                )
    keys = list(dict.fromkeys(k for row in rows for k in row))  # one schema: a part's missing columns are NaN
    return [{k: row.get(k, math.nan) for k in keys} for row in rows], data


def _boundary(data, model: str, config: Config):
    """(measured σ_w² at rate 0, tolerance, its parts) from the rates of `model`."""
    sw2, rate, se = data["sigma_w2"], data[f"{model}_rate"], data[f"{model}_rate_se"]
    measured, k = _crossing(sw2, rate)
    on_grid, _ = _crossing(sw2, data["half_log_chi1"])
    if k < 0:
        return measured, math.nan, {}
    slope = (rate[k + 1] - rate[k]) / (sw2[k + 1] - sw2[k])
    bias = 0.5 / config.boundary_width
    statistical = (4 * max(se[k], se[k + 1]) + bias) / abs(slope)
    grid = abs(on_grid - float(data["critical_sigma_w2"])) if math.isfinite(on_grid) else 0.0
    return measured, statistical + grid, dict(statistical=statistical, grid=grid, slope=slope)


def comparisons(data, config: Config) -> list[Comparison]:
    out = []
    eq, jg = data["equinox_log_spectral_norm"], data["jaxgrad_log_spectral_norm"]
    for d in config.depths:
        (m1, s1), (m2, s2) = mean_and_se(eq[:, d - 1]), mean_and_se(jg[:, d - 1])
        out.append(
            Comparison(
                f"E ln‖J_{d}⋯J₁‖₂: Equinox tanh MLP − jaxgrad.mlp (independent samples, n = {config.width}, σ_w = "
                f"{config.agreement_sigma_w:g}, σ_b² = {config.sigma_b2:g}; tolerance 4 combined SE, 4√(SE₁² + SE₂²))",
                m1 - m2,
                0.0,
                4 * math.hypot(s1, s2),
            )
        )
    for d in config.depths:
        ks = ks_two_sample(eq[:, d - 1], jg[:, d - 1], ALPHA)
        out.append(
            Comparison(
                f"Kolmogorov–Smirnov D of ln‖J_{d}⋯J₁‖₂, Equinox vs jaxgrad.mlp (tolerance: the critical value at "
                f"α = {ALPHA:g}, c(α)√((n+m)/(nm)), n = m = {eq.shape[0]})",
                ks.statistic,
                0.0,
                ks.critical,
            )
        )
    (m1, s1), (m2, s2) = (
        mean_and_se(data["equinox_log_backward_gain_last"]),
        mean_and_se(data["jaxgrad_log_backward_gain_last"]),
    )
    out.append(
        Comparison(
            f"E ln‖J₁ᵀ⋯J_{config.agreement_depth}ᵀ e‖ (backward gain): Equinox − jaxgrad.mlp (tolerance 4 combined SE)",
            m1 - m2,
            0.0,
            4 * math.hypot(s1, s2),
        )
    )
    critical = float(data["critical_sigma_w2"])
    for model, label in (("equinox", "Equinox tanh MLP"), ("jaxgrad", "jaxgrad.mlp")):
        measured, tolerance, parts = _boundary(data, model, config)
        if not parts:
            out.append(
                Comparison(
                    f"order/chaos boundary of the {label}: no zero crossing of the measured rate on the σ_w grid",
                    math.nan,
                    critical,
                    0.0,
                )
            )
            continue
        out.append(
            Comparison(
                f"order/chaos boundary of the {label} at σ_b² = {config.sigma_b2:g}: σ_w² where the measured "
                f"mean-square gradient growth per layer crosses 0 (linear interpolation in σ_w²) vs mean field's χ₁ = 1, "
                f"theory.critical_sigma_w² (tolerance (4 SE + 1/(2n))/|slope| = {parts['statistical']:.3f} with slope "
                f"{parts['slope']:.3f} per unit σ_w², + the grid's interpolation error of ½ ln χ₁, {parts['grid']:.4f})",
                measured,
                critical,
                tolerance,
            )
        )
    worst, text = 0.0, None
    for model in MODELS:
        tolerance = 4 * data[f"{model}_rate_se"] + 0.5 / config.boundary_width
        dev = (data[f"{model}_rate"] - data["half_log_chi1"]) / tolerance
        j = int(np.argmax(np.abs(dev)))
        if abs(dev[j]) >= worst:
            worst, text = abs(dev[j]), (model, j)
    model, j = text
    out.append(
        Comparison(
            f"mean-square growth rate ½ ln E g² per layer vs mean field ½ ln χ₁: worst of {2 * len(config.sigma_w)} "
            f"(model, σ_w) points, {model} at σ_w = {config.sigma_w[j]:g} (tolerance 4 SE + 1/(2n) finite-width "
            f"allowance, as in phase_diagram)",
            float(data[f"{model}_rate"][j]),
            float(data["half_log_chi1"][j]),
            float(4 * data[f"{model}_rate_se"][j] + 0.5 / config.boundary_width),
        )
    )
    return out


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figures

COLORS = {"equinox": plotting.OKABE_ITO["vermillion"], "jaxgrad": plotting.OKABE_ITO["blue"]}
LABELS = {"equinox": "Equinox tanh MLP (adapter)", "jaxgrad": "jaxgrad.mlp"}


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    return [_plot_agreement(data, config, outdir), _plot_boundary(data, config, outdir)]


def _plot_agreement(data, config, outdir) -> plotting.Figure:
    fig, (left, right) = plotting.subplots(1, 2, width=3.6, height=3.2)
    depth = data["agreement_depths"]
    for model in MODELS:
        q = np.percentile(data[f"{model}_log_spectral_norm"], [5, 25, 50, 75, 95], axis=0)
        plotting.measured_band(
            left,
            depth,
            q[1],
            q[3],
            color=COLORS[model],
            alpha=0.3,
            center=q[2],
            label=f"{LABELS[model]}: median, 25–75 %",
        )
        for k in (0, 4):
            left.plot(
                depth, q[k], color=COLORS[model], linestyle="--", linewidth=0.9, label="5 %, 95 %" if k == 0 else None
            )
    plotting.label_axes(
        left, "depth ℓ", r"$\ln\|J_\ell\cdots J_1\|_2$", title="(a) distribution against depth", legend=False
    )
    left.legend(loc="upper left", fontsize=6.5)
    last = int(config.depths[-1])
    for model in MODELS:
        x = np.sort(data[f"{model}_log_spectral_norm"][:, last - 1])
        right.step(x, np.arange(1, x.size + 1) / x.size, where="post", color=COLORS[model], label=LABELS[model])
    ks = ks_two_sample(
        data["equinox_log_spectral_norm"][:, last - 1], data["jaxgrad_log_spectral_norm"][:, last - 1], ALPHA
    )
    plotting.label_axes(
        right,
        rf"$\ln\|J_{{{last}}}\cdots J_1\|_2$",
        "empirical CDF",
        title=f"(b) depth {last}: KS D = {ks.statistic:.3f} < {ks.critical:.3f}",
    )
    plotting.save_figure(fig, outdir, "agreement")
    return plotting.Figure(
        "agreement",
        (
            f"An Equinox tanh MLP (eqx.nn.Linear re-initialised Gaussian, its own key usage) and jaxgrad.mlp, width "
            f"{config.width}, σ_w = {config.agreement_sigma_w:g}, σ_b² = {config.sigma_b2:g}, {config.agreement_samples} "
            "independent initialisations each (method='auto', which chose the materialised product at this size). "
            "(a) ln‖J_ℓ⋯J₁‖₂ against depth: medians and 25–75 % bands, 5 % and 95 % quantiles dashed; the two models "
            "overlap. (b) Empirical "
            f"CDFs at depth {last}; the Kolmogorov–Smirnov statistic D is below its critical value at α = {ALPHA:g}."
        ),
    )


def _plot_boundary(data, config, outdir) -> plotting.Figure:
    fig, ax = plotting.subplots(width=5.0, height=3.6)
    plotting.theory_line(ax, data["theory_sigma_w2"], data["theory_half_log_chi1"], label="mean field ½ ln χ₁")
    offsets = {"equinox": -0.004, "jaxgrad": 0.004}
    for model in MODELS:
        ax.errorbar(
            data["sigma_w2"] + offsets[model],
            data[f"{model}_rate"],
            yerr=2 * data[f"{model}_rate_se"],
            color=COLORS[model],
            marker="D" if model == "equinox" else "o",
            linestyle="none",
            markerfacecolor="white" if model == "equinox" else COLORS[model],
            markersize=5,
            label=f"{LABELS[model]}: measured ½ ln E g² (± 2 SE)",
        )
        measured, _, _ = _boundary(data, model, config)
        if math.isfinite(measured):
            ax.axvline(measured, color=COLORS[model], linestyle=":", linewidth=1.2)
    critical = float(data["critical_sigma_w2"])
    ax.axvline(
        critical, color=plotting.THEORY_COLOR, linestyle="--", linewidth=1.0, label=f"χ₁ = 1: σ_w² = {critical:.3f}"
    )
    ax.axhline(0.0, color="0.5", linewidth=0.6)
    plotting.label_axes(
        ax,
        "weight variance $σ_w^2$",
        "gradient growth per layer (nats)",
        title=f"order/chaos boundary, σ_b² = {config.sigma_b2:g}, width {config.boundary_width}",
    )
    plotting.save_figure(fig, outdir, "boundary")
    return plotting.Figure(
        "boundary",
        (
            f"Per-layer growth of the backpropagated gradient against σ_w² at σ_b² = {config.sigma_b2:g} (width "
            f"{config.boundary_width}, depth {config.boundary_depth}, {config.boundary_samples} initialisations per point; "
            "the "
            "Equinox model's σ_w is a traced hyperparameter, so the whole grid is one compiled program). Markers: the "
            f"mean-square rate ½ ln E‖J_ℓᵀê‖² over layers {config.fit_start}–{config.boundary_depth} (± 2 SE); line: "
            "mean field ½ ln χ₁; dashed: χ₁ = 1 (Schoenholz et al. 2017); dotted: where each model's measured rate "
            "crosses zero (linear interpolation)."
        ),
    )

r"""Seed §4.2: the weight matrices' spectral norms, and the Jacobian norms they produce.

$\|W\|_2$ decides whether a layer can amplify (seed §4.2). Its law depends on the scheme:

* Gaussian $W_{ij} \sim N(0, σ_w^2/n_{in})$, shape $n_{out}\times n_{in}$: $\|W\|_2 \to
  σ_w(1 + \sqrt{n_{out}/n_{in}})$ as the widths grow (the Marchenko–Pastur edge; Geman 1980,
  Bai & Yin 1993): ≈ 2σ_w for square matrices, even though $E\|Wu\|^2 = σ_w^2$ for each
  unit vector u. Finite-width fluctuations are Tracy–Widom: with $μ = (\sqrt{n_{out}-1} +
  \sqrt{n_{in}})^2$ and $s = (\sqrt{n_{out}-1} + \sqrt{n_{in}})(1/\sqrt{n_{out}-1} + 1/\sqrt{n_{in}})^{1/3}$,
  $n_{in}\|W\|_2^2/σ_w^2 \approx μ + s\,\mathrm{TW}_1$, $E\,\mathrm{TW}_1 = -1.2065$ (Johnstone 2001).
  Both are `theory.marchenko_pastur_edge` and `theory.tracy_widom_mean_norm`.
* Orthogonal $W = σ_w Q$: every singular value is exactly σ_w, at every width.

A tanh layer's Jacobian $J = \mathrm{diag}(φ′(z))W$ then has $\|J\|_2 < \|W\|_2$ (seed §4).

Run: ``jaxgrad run weight_norm`` (quick: widths 16–256, 512 draws each, about a minute,
mostly compilation); ``--scale full``: widths up to 1024, 4096 draws.
"""

from __future__ import annotations

import dataclasses
import sys

import matplotlib.ticker
import numpy as np

import jaxgrad
from jaxgrad import plotting, theory
from jaxgrad.stats import Comparison
from experiments._common import engine_seed, mean_and_se, quantiles
from experiments.runner import compute

NAME = "weight_norm"
SECTION = "§4.2"
TITLE = "‖W‖₂ for Gaussian and orthogonal weights against width, and the per-layer Jacobian norms"

SCHEMES = ("gaussian", "orthogonal")


@dataclasses.dataclass(frozen=True)
class Config:
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    rectangular_in: int = 64
    rectangular_out: tuple[int, ...] = (16, 32, 128, 256)
    samples: int = 512
    sigma_w: float = 1.0

    def __post_init__(self):
        for name in ("widths", "rectangular_out"):
            if not getattr(self, name) or not all(isinstance(n, int) and n >= 2 for n in getattr(self, name)):
                raise ValueError(f"`{name}` must be integers ≥ 2, got {name}={getattr(self, name)!r}")
        if not (isinstance(self.rectangular_in, int) and self.rectangular_in >= 2):
            raise ValueError(f"`rectangular_in` must be an integer ≥ 2, got rectangular_in={self.rectangular_in!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 2:
            raise ValueError(f"`samples` must be an integer ≥ 2, got samples={self.samples!r}")
        if not self.sigma_w > 0:
            raise ValueError(f"`sigma_w` must be positive, got sigma_w={self.sigma_w!r}")

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(
            widths=(16, 32, 64, 128, 256, 512, 1024),
            rectangular_in=256,
            rectangular_out=(32, 64, 128, 512, 1024),
            samples=4096,
        )


def points(config: Config) -> list[dict]:
    square = [dict(scheme=s, n_out=n, n_in=n) for s in SCHEMES for n in config.widths]
    rect = [dict(scheme=s, n_out=n, n_in=config.rectangular_in) for s in SCHEMES for n in config.rectangular_out]
    return square + rect


def run_point(config: Config, point: dict, key) -> dict[str, np.ndarray]:
    widths = [point["n_in"], point["n_out"]]
    seed = engine_seed(key)
    out = {}
    for act in ("linear", "tanh"):  # same seed: the tanh layer has exactly the linear layer's W
        net = jaxgrad.mlp(widths=widths, activation=act, weights=point["scheme"], sigma_w=config.sigma_w)
        out[act] = jaxgrad.simulate(net, samples=config.samples, seed=seed, method="svd").log_norm_product[:, 0]
    return {"log_norm_W": out["linear"], "log_norm_J_tanh": out["tanh"]}


def summarize(config: Config, results):
    rows, data = [], {}
    for point, arrays in results:
        s, n_out, n_in = point["scheme"], point["n_out"], point["n_in"]
        norm_W, norm_J = np.exp(arrays["log_norm_W"]), np.exp(arrays["log_norm_J_tanh"])
        mean, se = mean_and_se(norm_W)
        tw_mean, tw_scale = theory.tracy_widom_mean_norm(n_out, n_in, config.sigma_w)
        predicted_mean = config.sigma_w if s == "orthogonal" else tw_mean
        key = f"{s}/{n_out}x{n_in}"
        data[f"{key}/W"] = quantiles(norm_W)
        data[f"{key}/J"] = quantiles(norm_J)
        data[f"{key}/stats"] = np.array(
            [
                mean,
                se,
                predicted_mean,
                tw_scale if s == "gaussian" else 0.0,
                np.max(np.abs(arrays["log_norm_W"] - np.log(config.sigma_w))),
            ]
        )
        rows.append(
            dict(
                scheme=s,
                n_out=n_out,
                n_in=n_in,
                samples=config.samples,
                sigma_w=config.sigma_w,
                norm_W_mean=mean,
                norm_W_se=se,
                norm_W_q05=data[f"{key}/W"][0],
                norm_W_q95=data[f"{key}/W"][2],
                norm_W_predicted_edge=(
                    config.sigma_w if s == "orthogonal" else theory.marchenko_pastur_edge(n_out, n_in, config.sigma_w)
                ),
                norm_W_predicted_mean=predicted_mean,
                norm_J_tanh_median=data[f"{key}/J"][1],
                fraction_J_below_W=float(np.mean(norm_J <= norm_W)),
            )
        )
    return rows, data


def comparisons(data, config: Config) -> list[Comparison]:
    out = []
    for n in config.widths:
        mean, se, predicted, tw_scale, _ = data[f"gaussian/{n}x{n}/stats"]
        out.append(
            Comparison(
                f"Gaussian {n}×{n}: E‖W‖₂ against Johnstone's Tracy–Widom mean "
                f"(edge {theory.marchenko_pastur_edge(n, n, config.sigma_w):g}; "
                "tolerance 4 SE + ¼ of the Tracy–Widom scale for the approximation)",
                mean,
                predicted,
                4 * se + 0.25 * tw_scale,
            )
        )
    worst = max(float(data[f"orthogonal/{n}x{n}/stats"][4]) for n in config.widths)
    out.append(
        Comparison(
            "orthogonal: max |ln‖W‖₂ − ln σ_w| over all widths and draws (exact isometry; tolerance 1e-5, float32 SVD)",
            worst,
            0.0,
            1e-5,
        )
    )
    return out


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    return compute(sys.modules[__name__], config or Config.quick(), seed)


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    n = np.array(config.widths)
    fig, axes = plotting.subplots(1, 3, width=3.5, height=3.3)
    for k, s in enumerate(SCHEMES):
        color = plotting.PALETTE[k]
        for part, ax in (("W", axes[0]), ("J", axes[2])):
            q = np.stack([data[f"{s}/{w}x{w}/{part}"] for w in n], axis=1)
            plotting.measured_band(ax, n, q[0], q[2], color=color, center=q[1], label=f"{s}: 5–95 % band, median")
    fine = np.geomspace(n[0], n[-1], 100)
    plotting.theory_line(
        axes[0],
        n,
        [theory.tracy_widom_mean_norm(w, w, config.sigma_w)[0] for w in n],
        linestyle="--",
        color=plotting.PALETTE[0],
        label="Gaussian: Tracy–Widom mean",
    )
    plotting.theory_line(axes[0], fine, np.full_like(fine, 2 * config.sigma_w), label="MP edge 2$σ_w$")
    plotting.theory_line(
        axes[0],
        fine,
        np.full_like(fine, config.sigma_w),
        color=plotting.PALETTE[1],
        linestyle=":",
        label="orthogonal: $σ_w$ exactly",
    )
    plotting.label_axes(axes[0], "width n (square W)", "‖W‖₂", xlog=True, title="(a) square weights", legend=False)
    axes[0].legend(fontsize=6.5, loc="center right")
    aspect = np.array(config.rectangular_out) / config.rectangular_in
    for k, s in enumerate(SCHEMES):
        q = np.stack([data[f"{s}/{m}x{config.rectangular_in}/W"] for m in config.rectangular_out], axis=1)
        plotting.measured_band(axes[1], aspect, q[0], q[2], color=plotting.PALETTE[k], center=q[1], label=s)
    fine_aspect = np.geomspace(aspect.min(), aspect.max(), 100)
    plotting.theory_line(
        axes[1], fine_aspect, config.sigma_w * (1 + np.sqrt(fine_aspect)), label="edge $σ_w$(1 + √($n_{out}/n_{in}$))"
    )
    plotting.label_axes(
        axes[1],
        f"aspect $n_{{out}}/n_{{in}}$  ($n_{{in}}$ = {config.rectangular_in})",
        "‖W‖₂",
        xlog=True,
        title="(b) rectangular weights",
        legend=False,
    )
    axes[1].legend(fontsize=7, loc="upper left")
    plotting.label_axes(
        axes[2],
        "width n",
        r"‖$J_\ell$‖₂ = ‖diag tanh′(z) W‖₂",
        xlog=True,
        title="(c) the tanh layer's Jacobian",
        legend=False,
    )
    axes[2].legend(fontsize=7)
    for ax, ticks in ((axes[0], n), (axes[1], aspect), (axes[2], n)):  # the measured values, not 2×10¹ …
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    plotting.save_figure(fig, outdir, "weight_norm")
    return [
        plotting.Figure(
            "weight_norm",
            (
                f"Spectral norms of {config.samples} draws per width, σ_w = {config.sigma_w:g} (seed §4.2). (a) Square "
                "Gaussian weights concentrate at the Marchenko–Pastur edge 2σ_w from below, following the Tracy–Widom "
                "mean (dashed); orthogonal weights have ‖W‖₂ = σ_w exactly. (b) Rectangular Gaussian weights follow "
                "σ_w(1 + √(n_out/n_in)) (widening fan-out amplifies). (c) The Jacobian of a tanh layer with the same "
                "weights (input N(0, I)): saturation keeps ‖J‖₂ below ‖W‖₂ (seed §4)."
            ),
        )
    ]

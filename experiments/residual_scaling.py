r"""Residual branches scaled with depth: $h_\ell = h_{\ell-1} + β f(h_{\ell-1})$, $β = a L^{-α}$, L = 4 … 1,024.

For α = 0 (the plain ResNet), ½ (depth-μP) and 1 (the ODE-like scaling) and L blocks, the
Jacobian product $J_L\cdots J_1$ of `jaxgrad.resnet(width=n, depth=L, alpha=α, a=a)` is measured
over many initialisations: its spectral norm $\ln\|J_L\cdots J_1\|_2$ and the forward gain
$\ln\|J_L\cdots J_1u\|$ of a unit vector u (the backward gain $\ln\|J_1^\top\cdots J_L^\top e\|$ too).

* Linear branch ($f(h) = Wh$, $W_{ij}\sim N(0, 1/n)$): everything is exact at every n and L
  (`jaxgrad.theory.residual`): $E\|J_L\cdots J_1u\|^2 = (1 + a^2L^{-2α})^L$, which grows as
  $(1+a^2)^L$ for α = 0, tends to 1 for α = 1 and to the plateau $e^{a^2}$ for α = ½; the law of
  $\ln\|J_L\cdots J_1u\|$ is a sum of L i.i.d. logs of noncentral χ² (`linear_residual_log_gain`),
  whose variance at α = ½ tends to $a^2/n$.
* ReLU branch ($f(h) = \mathrm{relu}(Wh)$, the default): the mean-field law $(1 + β^2/2)^L$
  (`mean_field_residual_gain`, plateau $e^{a^2/2}$) is drawn as a line and **fails** beyond small
  L at α ≤ ½: relu(z) has mean $σ\sqrt{1/2π} > 0$, so every block pushes h along the direction
  $\mathbf 1$ and $E\|h + βf\|^2 = (1 + β^2/2)\|h\|^2 + 2β\bar h\,\|h\|\sqrt{n/2π}$ has a term
  first order in β, which over L blocks sums to $O(Lβ) = O(a\sqrt L)$ at α = ½; the tangent
  along h behaves the same way (J h = h + β relu(Wh) by homogeneity). Measured (quick run, n = 16,
  summary.csv, 64 samples): ln E‖J_L⋯J_1u‖² = 0.9, 3.0, 9.1, 21.9 at L = 16, 64, 256, 1,024 instead of ½; at
  α = 1 it converges, but above the mean field (ln‖J_L⋯J_1‖₂ → 0.23). Not tested: reported.

One compile per activation, not per depth: the scan's length is structure (a network of depth L
and one of depth 2L are two programs), but β is a traced `Hyper` value and the first L blocks of
a deep network are a network of depth L. So each activation is one `jaxgrad.sweep` of a single
network of depth max(depths) with α = 0 over a grid of branch scales a ∈ {a·L^{−α}} (every
(α, L) pair; α = 0 needs one), read at block L (sample i's weights of block ℓ come from
(seed, i, ℓ), so this is the depth-L network exactly).

Run: ``jaxgrad run residual_scaling`` (quick: n = 16, 48 samples, L = 4, 16, …, 1,024, linear and
ReLU; 106 s on 2 shared CPU cores, about 50 s of CPU time, two compiles); ``--scale full`` (n = 64, 1,024 samples, every
power of two: an accelerator).

References: K. He et al., CVPR 2016; G. Yang, D. Yu, C. Zhu, S. Hayou, "Tensor Programs VI", ICLR
2024; B. Bordelon et al., ICLR 2024; S. Hayou et al., "Stable ResNet", AISTATS 2021.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import numpy as np

import jaxgrad
from jaxgrad import plotting, theory
from jaxgrad.stats import Comparison, log_mean_exp, mean_and_se, variance_and_se, within_standard_errors
from experiments._common import engine_seed, require_integers
from experiments.runner import compute

NAME = "residual_scaling"
SECTION = "§3, §5"
TITLE = "Residual branches scaled as a·L^(−α): the Jacobian product against depth, and the α = ½ plateau e^{a²}"

ACTIVATIONS = ("linear", "relu")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes; the defaults are the quick scale."""

    width: int = 16
    samples: int = 48
    depths: tuple[int, ...] = (4, 16, 64, 256, 1024)
    alphas: tuple[float, ...] = (0.0, 0.5, 1.0)
    a: float = 1.0
    activations: tuple[str, ...] = ACTIVATIONS

    def __post_init__(self):
        require_integers(self, ("width", "samples"))
        if (
            not self.depths
            or not all(isinstance(L, int) and not isinstance(L, bool) and L >= 1 for L in self.depths)
            or list(self.depths) != sorted(set(self.depths))
        ):
            raise ValueError(f"`depths` must be strictly increasing positive integers, got depths={self.depths}")
        if (
            not self.alphas
            or list(self.alphas) != sorted(set(self.alphas))
            or not all(0 <= x < math.inf for x in self.alphas)
        ):
            raise ValueError(f"`alphas` must be non-negative, finite and strictly increasing, got alphas={self.alphas}")
        if not 0 < self.a < math.inf:
            raise ValueError(f"`a` (the branch scale's prefactor) must be positive and finite, got a={self.a!r}")
        if (
            not self.activations
            or any(x not in ACTIVATIONS for x in self.activations)
            or len(set(self.activations)) != len(self.activations)
        ):
            raise ValueError(
                f"`activations` must be distinct choices from {list(ACTIVATIONS)}, got activations={self.activations}"
            )

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(width=64, samples=1024, depths=tuple(2**k for k in range(2, 11)))


def _scales(config: Config) -> tuple[list[float], dict[tuple[float, int], int]]:
    """The grid of branch scales β = a·L^(−α) and, for each (α, L), its index (equal β share one)."""
    betas, index = [], {}
    for alpha in config.alphas:
        for L in config.depths:
            beta = config.a * float(L) ** (-alpha)
            if beta not in betas:
                betas.append(beta)
            index[(alpha, L)] = betas.index(beta)
    return betas, index


# --------------------------------------------------------------------------- protocol


def points(config: Config) -> list[dict]:
    return [{"activation": act} for act in config.activations]


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    betas, index = _scales(config)
    net = jaxgrad.resnet(width=config.width, depth=max(config.depths), activation=point["activation"], alpha=0.0)
    r = jaxgrad.sweep(
        net,
        config.samples,
        engine_seed(key),
        grid={"a": betas},
        method="power",
        fields=["log_spectral_norm", "log_forward_gain", "log_backward_gain"],
    )
    out = {}
    for field in ("log_spectral_norm", "log_forward_gain", "log_backward_gain"):
        x = np.asarray(getattr(r, field), np.float64)  # (betas, samples, max depth)
        out[field] = np.stack(
            [np.stack([x[index[(al, L)], :, L - 1] for L in config.depths]) for al in config.alphas]
        )  # (alphas, depths, samples)
    return out


def _theory(config: Config, activation: str) -> dict[str, np.ndarray]:
    n, depths = config.width, np.asarray(config.depths)
    if activation == "linear":
        ms = np.array([[theory.linear_residual_gain(L, al, config.a) for L in depths] for al in config.alphas])
        laws = [[theory.linear_residual_log_gain(n, L, al, config.a) for L in depths] for al in config.alphas]
        return dict(
            log_mean_square=np.log(ms),
            mean_log=np.array([[x.mean for x in r] for r in laws]),
            var_log=np.array([[x.variance for x in r] for r in laws]),
        )
    ms = np.array(
        [[theory.mean_field_residual_gain(activation, L, al, config.a) for L in depths] for al in config.alphas]
    )
    return dict(log_mean_square=np.log(ms))


def summarize(config: Config, results):
    rows, data = [], {"depths": np.asarray(config.depths), "alphas": np.asarray(config.alphas)}
    for point, arrays in results:
        act = point["activation"]
        for field, x in arrays.items():
            data[f"{act}_{field}"] = x
        th = _theory(config, act)
        for k, v in th.items():
            data[f"{act}_theory_{k}"] = v
        for i, alpha in enumerate(config.alphas):
            for j, L in enumerate(config.depths):
                fwd = arrays["log_forward_gain"][i, j]
                lme, lme_se = log_mean_exp(2 * fwd)
                m, se = mean_and_se(fwd)
                v, vse = variance_and_se(fwd)
                s, sse = mean_and_se(arrays["log_spectral_norm"][i, j])
                bm, bse = mean_and_se(arrays["log_backward_gain"][i, j])
                row = dict(
                    activation=act,
                    alpha=alpha,
                    depth=L,
                    width=config.width,
                    samples=config.samples,
                    beta=config.a * L ** (-alpha),
                    mean_log_spectral_norm=s,
                    mean_log_spectral_norm_se=sse,
                    mean_log_forward_gain=m,
                    mean_log_forward_gain_se=se,
                    mean_log_backward_gain=bm,
                    mean_log_backward_gain_se=bse,
                    var_log_forward_gain=v,
                    var_log_forward_gain_se=vse,
                    log_mean_square_forward_gain=lme,
                    log_mean_square_forward_gain_se=lme_se,
                    theory_log_mean_square=th["log_mean_square"][i, j],
                )
                if act == "linear":
                    row.update(theory_mean_log=th["mean_log"][i, j], theory_var_log=th["var_log"][i, j])
                rows.append(row)
    return rows, data


def comparisons(data, config: Config) -> list[Comparison]:
    out = []
    if "linear_log_forward_gain" not in data:
        return out
    depths, n = list(config.depths), config.width
    for i, alpha in enumerate(config.alphas):
        for field, word in (("log_forward_gain", "forward"), ("log_backward_gain", "backward")):
            x = data[f"linear_{field}"][i]
            stats_ = [mean_and_se(x[j]) for j in range(len(depths))]
            z = [abs(m - data["linear_theory_mean_log"][i, j]) / max(se, 1e-300) for j, (m, se) in enumerate(stats_)]
            j = int(np.argmax(z))
            out.append(
                within_standard_errors(
                    f"linear branch, α = {alpha:g}: E ln‖{word} gain‖ at L = {depths[j]} (worst z of L = "
                    f"{depths[0]} … {depths[-1]}) vs the exact law theory.linear_residual_log_gain, n = {n}",
                    stats_[j][0],
                    stats_[j][1],
                    data["linear_theory_mean_log"][i, j],
                )
            )
    if 0.5 in config.alphas:
        i, j = list(config.alphas).index(0.5), len(depths) - 1
        L = depths[j]
        fwd = data["linear_log_forward_gain"][i, j]
        lme, se = log_mean_exp(2 * fwd)
        exact = float(data["linear_theory_log_mean_square"][i, j])
        limit = math.log(theory.residual_gain_limit(0.5, config.a))
        out.append(
            within_standard_errors(
                f"α = ½ plateau: ln E‖J_L⋯J_1u‖² at L = {L} vs ln e^(a²) = a² = {limit:g} (allowance: the exact "
                f"finite-L gap a² − L ln(1 + a²/L))",
                lme,
                se,
                limit,
                allowance=abs(limit - exact),
            )
        )
        v, vse = variance_and_se(fwd)
        out.append(
            within_standard_errors(
                f"α = ½: Var ln‖J_L⋯J_1u‖ at L = {L} vs the exact law (→ a²/n = {config.a**2 / n:g} as L → ∞)",
                v,
                vse,
                data["linear_theory_var_log"][i, j],
            )
        )
    if 1.0 in config.alphas:
        i, j = list(config.alphas).index(1.0), len(depths) - 1
        lme, se = log_mean_exp(2 * data["linear_log_forward_gain"][i, j])
        out.append(
            within_standard_errors(
                f"α = 1: ln E‖J_L⋯J_1u‖² at L = {depths[j]} vs ln(1 + a²/L²)^L (→ 0)",
                lme,
                se,
                data["linear_theory_log_mean_square"][i, j],
            )
        )
    return out


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    return [_plot_norms(data, config, outdir), _plot_plateau(data, config, outdir)]


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figures

_STYLE = {"linear": ("-", 0), "relu": ("--", 1)}


def _plot_norms(data, config, outdir) -> plotting.Figure:
    alphas, depths = list(config.alphas), np.asarray(config.depths)
    fig, axes = plotting.subplots(1, len(alphas), width=3.4, height=3.3, squeeze=False)
    for i, (ax, alpha) in enumerate(zip(axes[0], alphas)):
        for act in config.activations:
            if f"{act}_log_spectral_norm" not in data:
                continue
            ls, c = _STYLE[act]
            for field, color, what in (
                ("log_spectral_norm", plotting.PALETTE[2 * c], "ln‖J_L⋯J_1‖₂"),
                ("log_forward_gain", plotting.PALETTE[2 * c + 1], "ln‖J_L⋯J_1u‖"),
            ):
                x = data[f"{act}_{field}"][i]
                lo, mid, hi = np.percentile(x, (10, 50, 90), axis=1)
                plotting.measured_band(ax, depths, lo, hi, color=color)
                ax.plot(
                    depths,
                    mid,
                    color=color,
                    linestyle=ls,
                    marker="o",
                    markersize=3,
                    linewidth=1.0,
                    label=f"{what}, {act} (median, 10–90 %)",
                )
            if act == "linear":
                plotting.theory_line(
                    ax, depths, data["linear_theory_mean_log"][i], linewidth=1.0, label="E ln‖J_L⋯J_1u‖, exact (linear)"
                )
            plotting.theory_line(
                ax,
                depths,
                0.5 * data[f"{act}_theory_log_mean_square"][i],
                linestyle=":",
                color=plotting.PALETTE[2 * c + 1],
                linewidth=1.2,
                label=f"½ ln E‖J_L⋯J_1u‖², {'exact' if act == 'linear' else 'mean field'} ({act})",
            )
        if alpha == 0:
            ax.set_yscale("log")
        if alpha == 0.5:
            ax.axhline(0.5 * config.a**2, color="0.5", linewidth=0.8, linestyle="-.", label="½ a² (plateau)")
        ax.set_xscale("log", base=2)
        plotting.label_axes(
            ax,
            "depth L (blocks)",
            "ln of the norm",
            legend=False,
            title=f"({'abc'[i]}) α = {alpha:g}, β = {config.a:g}·L^−{alpha:g}",
        )
    axes[0][0].legend(loc="upper left", fontsize=6)
    plotting.save_figure(fig, outdir, "norms_vs_depth")
    return plotting.Figure(
        "norms_vs_depth",
        (
            f"Spectral norm ln‖J_L⋯J_1‖₂ and forward gain ln‖J_L⋯J_1u‖ of residual networks h ← h + β f(h), "
            f"β = a·L^(−α), a = {config.a:g}, width {config.width}, {config.samples} initialisations per depth "
            "(bands: 10–90 %, lines: medians; solid linear branch f = Wh, dashed ReLU branch f = relu(Wh)). Black: the "
            "exact E ln‖J_L⋯J_1u‖ of the linear branch; dotted: ½ ln E‖·‖² (exact for linear, mean field for ReLU). "
            "(a) α = 0 explodes exponentially in L (log axis); (b) α = ½ levels off at a finite L → ∞ limit "
            "(½ ln e^{a²} for the mean square, dash-dotted) for the linear branch, while the ReLU branch keeps growing "
            "(its mean E relu(z) > 0 drifts h along a fixed direction: a first-order term 2β⟨h, E f⟩ the mean-field "
            "law omits, so ln E‖·‖² grows roughly as √L); (c) α = 1 tends to a finite limit (1 for linear, above the "
            "mean field for ReLU)."
        ),
    )


def _plot_plateau(data, config, outdir) -> plotting.Figure:
    alphas, depths = list(config.alphas), np.asarray(config.depths)
    fig, ax = plotting.subplots(1, 1, width=7.0, height=3.6)
    # Axes first: α = 0's law (1 + a²)^L reaches ~1e308 at L = 1024, and autoscaling a linear axis around
    # it overflows (x + margin) in matplotlib; with the log scale and limits fixed nothing is autoscaled in y.
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylim(0.8, 12 * math.exp(config.a**2))
    fine = np.unique(np.geomspace(depths[0], depths[-1], 200).astype(int))
    for i, alpha in enumerate(alphas):
        color = plotting.PALETTE[i]
        for act in config.activations:
            if f"{act}_log_forward_gain" not in data:
                continue
            stats_ = [log_mean_exp(2 * data[f"{act}_log_forward_gain"][i, j]) for j in range(depths.size)]
            m, se = np.array([s[0] for s in stats_]), np.array([s[1] for s in stats_])
            m = np.where(m < 50, m, np.nan)  # off the axis (α = 0): e^m would overflow
            ax.errorbar(
                depths,
                np.exp(m),
                yerr=[np.exp(m) - np.exp(m - 2 * se), np.exp(m + 2 * se) - np.exp(m)],
                color=color,
                marker="o" if act == "linear" else "s",
                markerfacecolor="white",
                markersize=4,
                linestyle="none",
                capsize=2,
                label=f"α = {alpha:g}, {act} (mean ± 2 SE)",
            )
            law = (
                theory.linear_residual_gain(fine, alpha, config.a, depth=fine)
                if act == "linear"
                else theory.mean_field_residual_gain(act, fine, alpha, config.a, depth=fine)
            )
            plotting.theory_line(ax, fine, law, color=color, linestyle="-" if act == "linear" else "--", linewidth=1.0)
    ax.axhline(math.exp(config.a**2), color="0.3", linestyle=":", linewidth=1.0, label="$e^{a^2}$ (α = ½, linear)")
    if "relu" in config.activations:
        ax.axhline(
            math.exp(config.a**2 / 2),
            color="0.6",
            linestyle=":",
            linewidth=1.0,
            label="$e^{a^2/2}$ (α = ½, ReLU mean field)",
        )
    plotting.label_axes(
        ax,
        "depth L (blocks)",
        "E‖J_L⋯J_1u‖²",
        legend=False,
        title=f"mean-square forward gain, a = {config.a:g}, n = {config.width}",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6.5)
    plotting.save_figure(fig, outdir, "plateau")
    return plotting.Figure(
        "plateau",
        (
            f"Mean-square forward gain E‖J_L⋯J_1u‖² against depth ({config.samples} initialisations, mean ± 2 SE of the "
            "log-mean-exp). Solid lines: the exact (1 + a²L^(−2α))^L of the linear branch; dashed: the ReLU branch's "
            "mean field (1 + a²L^(−2α)/2)^L. α = 0 grows as (1 + a²)^L (off the top of the axis beyond small L; the "
            "sample mean of a heavy log-normal falls below its expectation there), α = 1 tends to 1 and α = ½ to the "
            "plateau e^{a²} (dotted), the depth-μP limit, for the linear branch; the ReLU branch at α = ½ leaves the "
            f"mean-field plateau e^{{a²/2}} and grows without bound (ln E‖·‖² = {_relu_half(data, config)}), because its "
            "branch has a non-zero mean."
        ),
    )


def _relu_half(data, config) -> str:
    if "relu_log_forward_gain" not in data or 0.5 not in config.alphas:
        return "not run"
    x = data["relu_log_forward_gain"][list(config.alphas).index(0.5)]
    return ", ".join(f"{log_mean_exp(2 * x[j])[0]:.3g} at L = {L}" for j, L in enumerate(config.depths))

r"""Dynamical isometry: the singular values of $J = J_L\cdots J_1$ at criticality, Gaussian against orthogonal weights.

At criticality (χ₁ = 1, σ_w = `theory.critical_sigma_w(φ, σ_b)`) the mean squared singular
value of J stays 1 at every depth (seed §3: neither vanishing nor exploding on average),
but its *spread* grows with depth. With $J_\ell = D_\ell W_\ell$, free probability gives the
variance of the eigenvalues λ = σ_i² of $JJ^\top$ (Pennington, Schoenholz & Ganguli 2017;
`theory.jacobian_spectrum_variance`):

$$\mathrm{Var}[λ] = χ_1^{2L}\,L\,(μ_2/μ_1^2 - 1 + v_W),\qquad v_W = 1 \text{ (Gaussian)},\ 0 \text{ (orthogonal)},$$

$μ_k = E[φ′(\sqrt{q^*}z)^{2k}]$. Linear orthogonal networks are exact isometries (every
σ_i = σ_w^L), tanh with orthogonal weights and small q* (small σ_b) comes close
(μ₂/μ₁² → 1 as q* → 0), and ReLU never does (μ₂/μ₁² = 2: half its units are off, so about
half the singular values of J are exactly 0).

Each of the 3 activations × 2 weight schemes is one `jaxgrad.simulate` call that records
every $\ln σ_i(J_\ell\cdots J_1)$ at the depths in ``depths`` (``spectrum_at``). tanh starts at its
fixed point ($q_0 = (q^* - σ_b^2)/σ_w^2$), so there is no transient. The measured variance is
pooled, $\overline{λ^2} - \bar λ^2$ over samples and i, with a delta-method standard error over
per-sample moments (heavy tails make it optimistic at large L for Gaussian weights).

Finite width. For Gaussian linear layers the exact finite-n value is known,
$m_2 - m_1^2$ with $m_2 = ((n+2)(1+2/n)^L - (n-1)(1-1/n)^L)/3$ (`theory.product_moments_gaussian`),
$= L + L(L+1)/(2n) + O(n^{-2})$: a relative excess of about L/(2n) over the large-width line,
and it is checked without allowance. The other networks are compared with the large-width
formula with an explicit allowance of relative size L/n (twice the Gaussian-linear excess):
at n = 64 the measured variances sit 10–60 % above the line at L = 16–32 (more for ReLU, whose
masks add variance), as expected of an O(L/n) effect.

A finding the moments do not show: with orthogonal tanh layers one singular value per sample
leaves the bulk and decays exponentially (log₁₀ σ_min ≈ −2.2 at L = 16, −4.3 at L = 32, quick
scale). Its singular vectors lie along the signal ($|\cos(v_{min}, h^{(0)})| \approx 0.9$,
checked on single samples with `jaxgrad.layer_jacobians`): it is the radial direction, along
which a perturbation changes q, and q relaxes back to q* at the rate of the length map,
$χ_q = V′(q^*)$ (Schoenholz et al. 2017; `theory.depth_scales`). Mean field gives
ln χ_q = −0.25 per layer at σ_b = 0.05; the outlier decays at about −0.30 per layer at n = 64
(not pinned down further). A rank-one outlier weighs O(1/n) in the moments, so the
free-probability variance is blind to it.

Numerics. Singular values below about 10⁻⁶σ_max are below float32 resolution of the SVD
(Gaussian products at depth 32 have exponents down to −2.7 per layer); they are not
drawn, and they weigh nothing in the moments of λ.

Run: ``jaxgrad run dynamical_isometry`` (quick: width 64, depths 1–32, 128 samples; about a
minute on 2 CPU cores, almost all XLA compilation of the 6 programs); ``--scale full``:
width 512, depths 1–128, 512 samples (an accelerator).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Literal

import jax
import numpy as np

import jaxgrad
from jaxgrad import plotting, theory
from jaxgrad.stats import Comparison, pooled_variance
from experiments._common import mean_and_se, require_integers
from experiments.runner import compute

NAME = "dynamical_isometry"
SECTION = "§3"
TITLE = "Dynamical isometry: singular values of J_L⋯J₁ at criticality, Gaussian vs orthogonal weights"

ACTIVATIONS = ("linear", "relu", "tanh")
WEIGHTS = ("gaussian", "orthogonal")
EPS32 = float(np.finfo(np.float32).eps)
FLOOR = -6.0  # log10 σ below which the float32 SVD does not resolve the spectrum


@dataclasses.dataclass(frozen=True)
class Config:
    """Width, depths and samples; the defaults are the quick scale."""

    width: int = 64
    depths: tuple[int, ...] = (1, 4, 16, 32)  # where the spectrum is recorded; the network is max(depths) deep
    samples: int = 128
    sigma_b: float = 0.05
    activations: tuple[str, ...] = ACTIVATIONS
    # The spectra are exact SVDs either way; the method sets how the per-layer norms the study does not
    # use are found: "svd" compiles faster on a CPU, "power" (Lanczos) runs faster at width 512.
    method: Literal["svd", "power"] = "svd"

    def __post_init__(self):
        require_integers(self, ("width", "samples"))
        if not self.depths or list(self.depths) != sorted(set(self.depths)) or self.depths[0] < 1:
            raise ValueError(f"`depths` must be strictly increasing positive integers, got depths={self.depths}")
        if not (0 <= self.sigma_b < math.inf):
            raise ValueError(f"`sigma_b` must be finite and non-negative, got sigma_b={self.sigma_b!r}")
        if self.method not in ("svd", "power"):
            raise ValueError(f"`method` must be 'svd' or 'power', got method={self.method!r}")
        unknown = [a for a in self.activations if a not in ACTIVATIONS]
        if not self.activations or unknown:
            raise ValueError(
                f"`activations` must be a non-empty subset of {ACTIVATIONS}, got activations={self.activations}"
            )

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(width=512, depths=(1, 2, 4, 8, 16, 32, 64, 128), samples=512, method="power")


def _critical(config: Config, activation: str) -> tuple[float, float]:
    """(σ_w at χ₁ = 1, engine q0 that starts the signal at q*)."""
    sigma_w = float(theory.critical_sigma_w(activation, config.sigma_b))
    if activation != "tanh":  # J does not depend on the signal's scale
        return sigma_w, 1.0
    q_star = float(theory.q_star("tanh", sigma_w, config.sigma_b))
    return sigma_w, (q_star - config.sigma_b**2) / sigma_w**2


# --------------------------------------------------------------------------- protocol


def points(config: Config) -> list[dict]:
    return [{"activation": a, "weights": w} for a in config.activations for w in WEIGHTS]


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    sigma_w, q0 = _critical(config, point["activation"])
    net = jaxgrad.mlp(
        width=config.width,
        depth=max(config.depths),
        activation=point["activation"],
        weights=point["weights"],
        sigma_w=sigma_w,
        sigma_b=config.sigma_b,
    )
    seed = int(jax.random.bits(key, dtype=np.uint32))
    result = jaxgrad.simulate(net, config.samples, seed, q0=q0, spectrum_at=config.depths, method=config.method)
    return {
        "log_singular_values": np.stack([result.log_singular_values[d] for d in config.depths], axis=1),
        "sigma_w": np.float64(sigma_w),
        "q0": np.float64(q0),
    }


def _pooled_variance(lam):
    """Pooled Var λ = mean λ² − (mean λ)² over (samples, i), its delta-method SE, and mean λ with its SE."""
    return (*pooled_variance(lam), *mean_and_se(lam.mean(axis=1)))


def summarize(config: Config, results):
    n, depths = config.width, np.asarray(config.depths)
    fine = np.arange(1, max(config.depths) + 1)
    rows, data = [], {"depths": depths, "fine_depths": fine}
    for point, arrays in results:
        act, w = point["activation"], point["weights"]
        sigma_w = float(arrays["sigma_w"])
        log_sv = np.asarray(arrays["log_singular_values"], np.float64)  # (samples, depths, n)
        psg = np.asarray(theory.jacobian_spectrum_variance(act, w, sigma_w, config.sigma_b, depths), np.float64)
        chi = float(theory.chi1(act, sigma_w, config.sigma_b))
        exact = _exact_linear_gaussian(n, depths, sigma_w) if (act, w) == ("linear", "gaussian") else None
        tag = f"{act}_{w}"
        stats = np.array([_pooled_variance(np.exp(2 * log_sv[:, k])) for k in range(depths.size)])
        data.update(
            {
                f"log10_sv_{tag}": (log_sv / np.log(10)).astype(np.float32),
                f"variance_{tag}": stats[:, 0],
                f"variance_se_{tag}": stats[:, 1],
                f"mean_lambda_{tag}": stats[:, 2],
                f"mean_lambda_se_{tag}": stats[:, 3],
                f"psg_{tag}": psg,
                f"psg_fine_{tag}": np.asarray(
                    theory.jacobian_spectrum_variance(act, w, sigma_w, config.sigma_b, fine), np.float64
                ),
                f"sigma_w_{tag}": np.float64(sigma_w),
            }
        )
        if exact is not None:
            data["exact_fine_linear_gaussian"] = _exact_linear_gaussian(n, fine, sigma_w)
        for k, L in enumerate(depths):
            deviation = np.abs(log_sv[:, k] - L * math.log(sigma_w))
            rows.append(
                dict(
                    activation=act,
                    weights=w,
                    sigma_w=sigma_w,
                    sigma_b=config.sigma_b,
                    q0=float(arrays["q0"]),
                    width=n,
                    depth=int(L),
                    samples=config.samples,
                    mean_lambda=stats[k, 2],
                    mean_lambda_se=stats[k, 3],
                    predicted_mean_lambda=chi ** int(L),
                    variance_lambda=stats[k, 0],
                    variance_se=stats[k, 1],
                    predicted_variance_psg=float(psg[k]),
                    exact_finite_width_variance=float(exact[k]) if exact is not None else "",
                    finite_width_allowance=float(L / n * psg[k]),
                    zero_fraction=float(np.mean(log_sv[:, k] < np.log(10.0) * FLOOR)),
                    max_abs_log_sv_deviation=float(np.max(deviation)),
                )
            )
    return rows, data


def _exact_linear_gaussian(n, depths, sigma_w):
    """Exact m₂ − m₁² at width n (Gaussian linear layers)."""
    depths = np.asarray(depths)
    m2 = np.asarray(theory.product_moments_gaussian(depths, 2, width=n, sigma_w=sigma_w), np.float64)
    return m2 - float(sigma_w) ** (4 * depths)


def comparisons(data, config: Config) -> list[Comparison]:
    n, depths = config.width, data["depths"]
    out = []
    if "log10_sv_linear_orthogonal" in data:
        L = depths.astype(np.float64)[None, :, None]
        sigma_w = float(data["sigma_w_linear_orthogonal"])
        deviation = np.abs(data["log10_sv_linear_orthogonal"].astype(np.float64) * np.log(10) - L * math.log(sigma_w))
        out.append(
            Comparison(
                f"orthogonal linear: max |ln σ_i(J_L⋯J₁) − L ln σ_w| over every sample, i and depth L ≤ {depths.max()} "
                f"(exact isometry; tolerance 8ε₃₂ per layer, float32 rounding of QR and products)",
                float(deviation.max()),
                0.0,
                8 * EPS32 * float(depths.max()),
            )
        )
    if "exact_fine_linear_gaussian" in data:
        exact = _exact_linear_gaussian(n, depths, float(data["sigma_w_linear_gaussian"]))
        z = np.abs(data["variance_linear_gaussian"] - exact) / data["variance_se_linear_gaussian"]
        k = int(np.argmax(z))
        out.append(
            Comparison(
                f"Gaussian linear: Var λ of JJᵀ vs the exact finite-width m₂ − m₁² (n = {n}), worst of depths "
                f"{depths.tolist()}, at L = {depths[k]} (tolerance 4 SE, delta method; no bias: exact)",
                float(data["variance_linear_gaussian"][k]),
                float(exact[k]),
                float(4 * data["variance_se_linear_gaussian"][k]),
            )
        )
    for act in config.activations:
        for w in WEIGHTS:
            tag = f"{act}_{w}"
            if act == "linear" or f"variance_{tag}" not in data:
                continue
            measured, se, psg = data[f"variance_{tag}"], data[f"variance_se_{tag}"], data[f"psg_{tag}"]
            tolerance = 4 * se + depths / n * psg
            k = int(np.argmax(np.abs(measured - psg) / tolerance))
            out.append(
                Comparison(
                    f"{act}, {w} weights at χ₁ = 1: Var λ of JJᵀ vs Pennington et al. L(μ₂/μ₁² − 1 + v_W), worst of "
                    f"depths {depths.tolist()}, at L = {depths[k]} (tolerance 4 SE + finite-width allowance "
                    "(L/n)·prediction, "
                    f"n = {n})",
                    float(measured[k]),
                    float(psg[k]),
                    float(tolerance[k]),
                )
            )
    return out


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    return [_plot_densities(data, config, outdir), _plot_variance(data, config, outdir)]


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figures

NAMES = {"linear": "linear", "relu": "ReLU", "tanh": "tanh"}


def _plot_densities(data, config, outdir) -> plotting.Figure:
    acts = [a for a in config.activations if f"log10_sv_{a}_gaussian" in data]
    fig, axes = plotting.subplots(len(acts), 2, width=3.6, height=2.4, sharex=True, squeeze=False)
    bins = np.linspace(FLOOR, 2.0, 81)
    for r, act in enumerate(acts):
        for c, w in enumerate(WEIGHTS):
            ax, tag = axes[r, c], f"{act}_{w}"
            log10_sv = data[f"log10_sv_{tag}"]
            for k, L in enumerate(data["depths"]):
                values = log10_sv[:, k].ravel()
                resolved = values[values >= FLOOR]
                ax.hist(
                    resolved,
                    bins=bins,
                    weights=np.full(resolved.size, 1.0 / values.size / np.diff(bins)[0]),
                    histtype="step",
                    color=plotting.PALETTE[k % len(plotting.PALETTE)],
                    linewidth=1.2,
                    label=f"L = {L}"
                    + (
                        f" ({1 - resolved.size / values.size:.0%} < 1e{FLOOR:g})" if resolved.size < values.size else ""
                    ),
                )
            if (act, w) == ("linear", "orthogonal"):
                sigma_w = float(data[f"sigma_w_{tag}"])
                ax.axvline(
                    max(data["depths"]) * math.log10(sigma_w),
                    color=plotting.THEORY_COLOR,
                    linestyle=":",
                    linewidth=1.5,
                    label="exact isometry σ = σ_wᴸ",
                )
            ax.set_yscale("log")
            ax.set_ylim(1e-3, None)
            plotting.label_axes(
                ax,
                "log₁₀ σ_i(J_L⋯J₁)" if r == len(acts) - 1 else "",
                "density" if c == 0 else "",
                legend=False,
                title=f"{NAMES[act]}, {w}, σ_w = {float(data[f'sigma_w_{tag}']):.4g}",
            )
            ax.legend(loc="upper left", fontsize=6)
    plotting.save_figure(fig, outdir, "singular_value_densities")
    return plotting.Figure(
        "singular_value_densities",
        (
            f"Density of log₁₀ of the singular values of J_L⋯J₁ at criticality (width {config.width}, "
            f"{config.samples} initialisations, σ_b = {config.sigma_b:g}) at depths {data['depths'].tolist()}: Gaussian "
            "weights (left) spread over decades as L grows; orthogonal weights keep linear networks exactly isometric "
            "(dotted line) and tanh nearly so, while ReLU, with half its units off, has about half its singular "
            f"values at 0 (counted in the legend as below 10^{FLOOR:g}, the float32 resolution, and not drawn). "
            "The isolated "
            "bump of orthogonal tanh is one singular value per sample along the signal direction, relaxing at the "
            "length-map rate χ_q < 1."
        ),
    )


def _plot_variance(data, config, outdir) -> plotting.Figure:
    acts = [a for a in config.activations if f"variance_{a}_gaussian" in data]
    fig, axes = plotting.subplots(1, len(acts), width=3.3, height=3.3, squeeze=False)
    depths, fine = data["depths"], data["fine_depths"]
    for ax, act in zip(axes[0], acts):
        for c, w in enumerate(WEIGHTS):
            tag, color = f"{act}_{w}", plotting.PALETTE[c]
            psg, measured, se = data[f"psg_fine_{tag}"], data[f"variance_{tag}"], data[f"variance_se_{tag}"]
            if np.all(psg <= 0):
                ax.text(
                    0.97,
                    0.05,
                    f"{w}: Var λ = 0 exactly\n(measured ≤ {max(measured.max(), 0):.1e})",
                    transform=ax.transAxes,
                    ha="right",
                    va="bottom",
                    fontsize=7,
                    color=color,
                )
                continue
            plotting.theory_line(ax, fine, psg, color=color, label=f"{w}: Pennington et al.")
            ax.errorbar(
                depths,
                measured,
                yerr=2 * se,
                color=color,
                marker="o",
                markerfacecolor="white",
                linestyle="none",
                zorder=4,
                label=f"{w}: measured (± 2 SE)",
            )
        if "exact_fine_linear_gaussian" in data and act == "linear":
            plotting.theory_line(
                ax,
                fine,
                data["exact_fine_linear_gaussian"],
                color=plotting.PALETTE[0],
                linestyle="--",
                linewidth=1.2,
                label=f"gaussian: exact, n = {config.width}",
            )
        plotting.label_axes(
            ax,
            "depth L",
            "Var λ, λ = σ_i² of JJᵀ" if act == acts[0] else "",
            xlog=True,
            ylog=True,
            legend=False,
            title=NAMES[act],
        )
        ax.legend(loc="upper left", fontsize=6.5)
    plotting.save_figure(fig, outdir, "spectrum_variance")
    return plotting.Figure(
        "spectrum_variance",
        (
            f"Variance of the eigenvalues of JJᵀ against depth at criticality (width {config.width}): markers measured "
            "(pooled over samples and eigenvalues, ± 2 delta-method SE), solid lines the large-width prediction "
            "L(μ₂/μ₁² − 1 + v_W) of Pennington, Schoenholz & Ganguli (2017), v_W = 1 Gaussian, 0 orthogonal; dashed: "
            "the exact finite-width value for Gaussian linear layers. The measured values rise above the lines by a "
            "relative O(L/n) at finite width."
        ),
    )

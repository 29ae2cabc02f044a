r"""The 10,000-layer CNN: delta-orthogonal against Gaussian kernels, singular values of J_L⋯J₁.

Circular 1-D convolutions (`jaxgrad.conv`, kernel 3, C channels, N pixels), tanh at the critical
point (χ₁ = 1, σ_w = `theory.critical_sigma_w`, signal started at q*) and linear (σ_w = 1):

1. **exact isometry**: a linear network of delta-orthogonal kernels has every singular value of
   $J_L\cdots J_1$ equal to $σ_w^L$ (`theory.delta_orthogonal_log_singular_value`); measured in
   float32 at L = 1,000 and 10,000 as max $|\ln σ_i - L\ln σ_w|$, from the explicit product
   (`measures.product_spectrum`, Kahan-summed log-scale) and from the QR method
   (`measures.qr_log_stretches`), against the issue's tolerance $10^{-4}L$.
2. **per-pixel spectrum**: at χ₁ = 1 every pixel of a delta-orthogonal CNN is, in law, an orthogonal
   fully connected network of width C (same H and b at every pixel, $K_W = I\otimes σ_wH^\top$), so
   the linear statistics of the spectrum (mean of λ = σ² and of λ², mean of the finite-depth
   Lyapunov exponents and of their squares) equal the MLP's: two-sample tests at 4 SE, at the
   product depths (explicit SVD) and at the deepest depth (QR).
3. **spread against depth**, to L = 10,000: $\ln σ_{max} - \ln σ_{min}$ and the bulk spread (10–90 %
   of the ln σ_i) for Gaussian and delta-orthogonal kernels, tanh and linear. Gaussian kernels
   spread the spectrum linearly in L for both activations; delta-orthogonal linear stays at
   rounding; delta-orthogonal tanh keeps its bulk within a few per cent per layer while one
   singular value per pixel leaves it (the radial direction, decaying at the rate of the length
   map, as in experiments/dynamical_isometry.py).

Run: ``jaxgrad run delta_orthogonal`` (quick: C = 4; N = 4 pixels to depth 10,000 with 8 samples,
N = 8 pixels at depths 4 and 16 with 256 samples; about a minute and a half on 2 CPU cores);
``--scale full``: C = 64 channels (Xiao et al. train C = 256 … 2048 at 10,000 layers; the
Jacobian of a 64 × 32-pixel layer is 2048 × 2048), an accelerator.

Reference: L. Xiao, Y. Bahri, J. Sohl-Dickstein, S. Schoenholz, J. Pennington, ICML 2018.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import numpy as np

import jaxgrad
from jaxgrad import measures, plotting, theory
from jaxgrad.stats import Comparison, mean_and_se
from experiments._common import engine_seed, require_integers
from experiments.runner import compute

NAME = "delta_orthogonal"
SECTION = "§3"
TITLE = "The 10,000-layer CNN: delta-orthogonal vs Gaussian kernels, the spectrum of J_L⋯J₁ to depth 10,000"

KERNELS = ("gaussian", "delta_orthogonal")
ACTIVATIONS = ("linear", "tanh")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes; the defaults are the quick scale."""

    channels: int = 4
    deep_pixels: int = 4
    depths: tuple[int, ...] = (10, 100, 1000, 10000)
    deep_samples: int = 8
    pixels: int = 8
    product_depths: tuple[int, ...] = (4, 16)
    samples: int = 256
    sigma_b: float = 0.05
    linear_sigma_w: float = 1.05

    def __post_init__(self):
        require_integers(self, ("channels", "deep_pixels", "deep_samples", "pixels", "samples"))
        for name in ("depths", "product_depths"):
            v = getattr(self, name)
            if not v or list(v) != sorted(set(v)) or v[0] < 1:
                raise ValueError(f"`{name}` must be strictly increasing positive integers, got {name}={v}")
        if 1000 not in self.depths:
            raise ValueError(f"`depths` must include 1000 (the isometry check), got depths={self.depths}")
        if not (0 < self.sigma_b < math.inf):
            raise ValueError(f"`sigma_b` must be positive and finite, got sigma_b={self.sigma_b!r}")
        if not (0 < self.linear_sigma_w < math.inf):
            raise ValueError(f"`linear_sigma_w` must be positive and finite, got {self.linear_sigma_w!r}")

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(channels=64, deep_pixels=32, deep_samples=16, pixels=32, product_depths=(4, 16, 64), samples=1024)


def _critical(config: Config) -> tuple[float, float]:
    sigma_w = float(theory.critical_sigma_w("tanh", config.sigma_b))
    q_star = float(theory.q_star("tanh", sigma_w, config.sigma_b))
    return sigma_w, (q_star - config.sigma_b**2) / sigma_w**2


def _net(config, activation, kernel, pixels, depth):
    if activation == "linear":
        sigma_w, sigma_b = config.linear_sigma_w, 0.0
    else:
        sigma_w, sigma_b = _critical(config)[0], config.sigma_b
    if kernel == "mlp":
        return jaxgrad.mlp(
            width=config.channels,
            depth=depth,
            weights="orthogonal",
            activation=activation,
            sigma_w=sigma_w,
            sigma_b=sigma_b,
        )
    return jaxgrad.serial(*[jaxgrad.conv(config.channels, (pixels,), 3, kernel, activation, sigma_w, sigma_b)] * depth)


# --------------------------------------------------------------------------- protocol


def points(config: Config) -> list[dict]:
    deep = [{"part": "deep", "activation": a, "kernel": k} for a in ACTIVATIONS for k in KERNELS]
    return (
        deep
        + [{"part": "deep", "activation": "tanh", "kernel": "mlp"}]
        + [{"part": "pixel", "kernel": k} for k in KERNELS + ("mlp",)]
    )


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    seed = engine_seed(key)
    q0 = _critical(config)[1]
    if point["part"] == "pixel":
        net = _net(config, "tanh", point["kernel"], config.pixels, config.product_depths[-1])
        out = measures.measure(
            measures.product_spectrum, net, config.samples, seed, q0=q0, depths=config.product_depths
        )
        return {"log_singular_values": out["log_singular_values"]}
    activation, kernel = point["activation"], point["kernel"]
    L = config.depths[-1]
    net = _net(config, activation, kernel, config.deep_pixels, L)
    q = q0 if activation == "tanh" else 1.0
    out = {
        "log_stretches": measures.measure(
            measures.qr_log_stretches, net, config.deep_samples, seed, q0=q, depths=config.depths
        )["log_stretches"]
    }
    if activation == "linear" and kernel == "delta_orthogonal":
        isometry = [d for d in config.depths if d >= 1000]
        out["log_singular_values"] = measures.measure(
            measures.product_spectrum, net, config.deep_samples, seed, depths=isometry
        )["log_singular_values"]
    return out


def summarize(config: Config, results):
    data = {"depths": np.asarray(config.depths), "product_depths": np.asarray(config.product_depths)}
    rows = []
    for point, arrays in results:
        if point["part"] == "pixel":
            tag = f"pixel_{point['kernel']}"
            data[f"{tag}_log_sv"] = np.asarray(arrays["log_singular_values"], np.float64)
            lam = np.exp(2 * data[f"{tag}_log_sv"])
            for k, D in enumerate(config.product_depths):
                m1, se1 = mean_and_se(lam[:, k].mean(axis=1))
                m2, se2 = mean_and_se((lam[:, k] ** 2).mean(axis=1))
                rows.append(
                    dict(
                        part="pixel",
                        network=f"tanh {point['kernel']}",
                        depth=D,
                        mean_lambda=m1,
                        mean_lambda_se=se1,
                        mean_lambda2=m2,
                        mean_lambda2_se=se2,
                        spread=float("nan"),
                        bulk_spread=float("nan"),
                        max_deviation=float("nan"),
                    )
                )
            continue
        tag = f"deep_{point['activation']}_{point['kernel']}"
        ls = np.asarray(arrays["log_stretches"], np.float64)  # (samples, depths, n), descending
        data[f"{tag}_log_stretches"] = ls
        data[f"{tag}_spread"] = ls[..., 0] - ls[..., -1]
        n = ls.shape[-1]  # the bulk: all but the lowest n/C, one radial direction per pixel of a delta kernel
        data[f"{tag}_bulk_spread"] = ls[..., 0] - ls[..., n - n // config.channels - 1]
        if "log_singular_values" in arrays:
            data[f"{tag}_log_sv"] = np.asarray(arrays["log_singular_values"], np.float64)
        for k, D in enumerate(config.depths):
            dev = float("nan")
            if point["kernel"] == "delta_orthogonal" and point["activation"] == "linear":
                dev = float(
                    np.max(np.abs(ls[:, k] - theory.delta_orthogonal_log_singular_value(config.linear_sigma_w, D)))
                )
            rows.append(
                dict(
                    part="deep",
                    network=f"{point['activation']} {point['kernel']}",
                    depth=D,
                    mean_lambda=float("nan"),
                    mean_lambda_se=float("nan"),
                    mean_lambda2=float("nan"),
                    mean_lambda2_se=float("nan"),
                    spread=float(np.median(data[f"{tag}_spread"][:, k])),
                    bulk_spread=float(np.median(data[f"{tag}_bulk_spread"][:, k])),
                    max_deviation=dev,
                )
            )
    iso = "deep_linear_delta_orthogonal"
    iso_depths = [d for d in config.depths if d >= 1000]
    data["isometry_depths"] = np.asarray(iso_depths)
    data["isometry_svd_deviation"] = np.asarray(
        [
            np.max(
                np.abs(
                    data[f"{iso}_log_sv"][:, k] - theory.delta_orthogonal_log_singular_value(config.linear_sigma_w, d)
                )
            )
            for k, d in enumerate(iso_depths)
        ]
    )
    data["isometry_qr_deviation"] = np.asarray(
        [
            np.max(
                np.abs(
                    data[f"{iso}_log_stretches"][:, k]
                    - theory.delta_orthogonal_log_singular_value(config.linear_sigma_w, d)
                )
            )
            for k, d in enumerate(config.depths)
        ]
    )
    return rows, data


def _two_sample(quantity, a, b) -> Comparison:
    (ma, sa), (mb, sb) = mean_and_se(a), mean_and_se(b)
    return Comparison(f"{quantity} (two-sample, tolerance 4 SE)", ma, mb, 4 * math.hypot(sa, sb))


def comparisons(data, config: Config) -> list[Comparison]:
    out = []
    for k, d in enumerate(data["isometry_depths"]):
        out.append(
            Comparison(
                f"linear delta-orthogonal CNN, float32, L = {d:,}: max |ln σ_i(J_L⋯J₁) − L ln σ_w| over samples and i, "
                f"explicit product (σ_w = {config.linear_sigma_w:g}; tolerance 1e-4·L, the issue's)",
                float(data["isometry_svd_deviation"][k]),
                0.0,
                1e-4 * d,
            )
        )
    k, L = len(config.depths) - 1, config.depths[-1]
    out.append(
        Comparison(
            f"linear delta-orthogonal CNN, float32, L = {L:,}: the same by the QR method (tolerance 1e-4·L)",
            float(data["isometry_qr_deviation"][k]),
            0.0,
            1e-4 * L,
        )
    )
    delta, mlp = np.exp(2 * data["pixel_delta_orthogonal_log_sv"]), np.exp(2 * data["pixel_mlp_log_sv"])
    for k, D in enumerate(config.product_depths):
        for power, name in ((1, "mean λ"), (2, "mean λ²")):
            out.append(
                _two_sample(
                    f"tanh at χ₁ = 1, L = {D}: {name} of JJᵀ, delta-orthogonal CNN ({config.pixels} pixels, C = "
                    f"{config.channels}) vs orthogonal MLP of width C",
                    (delta[:, k] ** power).mean(axis=1),
                    (mlp[:, k] ** power).mean(axis=1),
                )
            )
    cnn, fc = data["deep_tanh_delta_orthogonal_log_stretches"][:, -1], data["deep_tanh_mlp_log_stretches"][:, -1]
    for power, name in ((1, "mean"), (2, "mean square")):
        out.append(
            _two_sample(
                f"tanh at χ₁ = 1, L = {L:,}: {name} of the QR exponents (1/L)Σ ln|R_ii|, delta-orthogonal CNN vs "
                f"orthogonal MLP of width C",
                ((cnn / L) ** power).mean(axis=1),
                ((fc / L) ** power).mean(axis=1),
            )
        )
    return out


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    return [_plot_spread(data, config, outdir), _plot_pixel(data, config, outdir)]


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figures


def _plot_spread(data, config, outdir) -> plotting.Figure:
    fig, (left, right) = plotting.subplots(1, 2, width=4.4, height=3.5)
    depths = np.asarray(config.depths)
    styles = {
        ("tanh", "gaussian"): (plotting.PALETTE[3], "-", "o"),
        ("tanh", "delta_orthogonal"): (plotting.PALETTE[0], "-", "s"),
        ("linear", "gaussian"): (plotting.PALETTE[1], "--", "o"),
        ("linear", "delta_orthogonal"): (plotting.PALETTE[2], "--", "s"),
    }
    floor = 1e-7
    for (act, kernel), (color, ls, marker) in styles.items():
        tag = f"deep_{act}_{kernel}"
        for ax, field in ((left, "spread"), (right, "bulk_spread")):
            values = np.maximum(data[f"{tag}_{field}"], floor)
            lo, mid, hi = np.percentile(values, (10, 50, 90), axis=0)
            plotting.measured_band(ax, depths, lo, hi, color=color)
            ax.plot(
                depths,
                mid,
                color=color,
                linestyle=ls,
                marker=marker,
                markerfacecolor="white",
                label=f"{act}, {kernel.replace('_', '-')}",
            )
    slope_ref = np.median(data["deep_linear_gaussian_spread"][:, -1]) / depths[-1]
    plotting.theory_line(
        left, depths, slope_ref * depths, linestyle=":", linewidth=1.0, label=f"∝ L ({slope_ref:.2f} per layer)"
    )
    for ax, title, ylabel in (
        (left, "(a) full spread", "ln σ_max − ln σ_min of J_L⋯J₁"),
        (right, "(b) bulk: without the lowest 1/C of the σ_i", "bulk spread of ln σ_i"),
    ):
        plotting.label_axes(ax, "depth L", ylabel, xlog=True, ylog=True, legend=False, title=title)
    left.legend(loc="upper left", fontsize=6.5)
    plotting.save_figure(fig, outdir, "spread_vs_depth")
    return plotting.Figure(
        "spread_vs_depth",
        (
            f"Spread of the singular values of the CNN Jacobian product to depth {depths[-1]:,} (QR method, "
            f"{config.deep_samples} samples, C = {config.channels} channels, {config.deep_pixels} pixels, kernel 3, "
            f"float32; median and 10–90 %; values below 1e-7 drawn at 1e-7). (a) ln σ_max − ln σ_min: Gaussian kernels "
            "spread the spectrum linearly in L, tanh or linear; linear delta-orthogonal stays at float32 rounding (an "
            "exact isometry); tanh delta-orthogonal also grows linearly, because one singular value per pixel (the "
            "radial direction) decays at the rate of the length map. (b) The bulk, ln σ_max − ln σ_i at rank n − n/C "
            "(leaving out the lowest 1/C of the singular values, one per pixel for delta kernels): tanh "
            "delta-orthogonal kernels keep it a small fraction of the Gaussian kernels' at every depth (Xiao et al. "
            "2018)."
        ),
    )


def _plot_pixel(data, config, outdir) -> plotting.Figure:
    fig, (left, right) = plotting.subplots(1, 2, width=4.4, height=3.5)
    k = len(config.product_depths) - 1
    D = config.product_depths[k]
    bins = np.linspace(-16, 3, 77)
    for name, color, label in (
        ("delta_orthogonal", plotting.PALETTE[0], "delta-orthogonal CNN"),
        ("mlp", THEORY_COLOR, f"orthogonal MLP, width {config.channels}"),
        ("gaussian", plotting.PALETTE[3], "Gaussian CNN"),
    ):
        values = data[f"pixel_{name}_log_sv"][:, k].ravel()
        left.hist(
            np.clip(values, bins[0], bins[-1]),
            bins=bins,
            density=True,
            histtype="step",
            color=color,
            linewidth=1.4 if name != "mlp" else 1.0,
            linestyle="--" if name == "mlp" else "-",
            label=label,
        )
    plotting.label_axes(
        left, "ln σ_i(J_L⋯J₁)", "density", legend=False, title=f"(a) tanh at χ₁ = 1, L = {D}, {config.samples} samples"
    )
    left.legend(loc="upper left", fontsize=6.5)
    depths = np.asarray(config.depths)
    qr = data["isometry_qr_deviation"]
    right.plot(
        depths, np.maximum(qr, 1e-9), color=plotting.PALETTE[0], marker="s", markerfacecolor="white", label="QR method"
    )
    right.plot(
        data["isometry_depths"],
        data["isometry_svd_deviation"],
        color=plotting.PALETTE[1],
        marker="o",
        linestyle="none",
        markerfacecolor="white",
        label="explicit product, SVD",
    )
    plotting.theory_line(right, depths, 1e-4 * depths, linestyle=":", label="tolerance 1e-4·L")
    plotting.theory_line(
        right,
        depths,
        np.finfo(np.float32).eps * depths,
        linestyle="--",
        linewidth=1.0,
        color=plotting.PALETTE[4],
        label="ε₃₂·L",
    )
    plotting.label_axes(
        right,
        "depth L",
        "max |ln σ_i − L ln σ_w|",
        xlog=True,
        ylog=True,
        legend=False,
        title=f"(b) linear delta-orthogonal, σ_w = {config.linear_sigma_w:g}, float32",
    )
    right.legend(loc="upper left", fontsize=6.5)
    plotting.save_figure(fig, outdir, "isometry")
    return plotting.Figure(
        "isometry",
        (
            f"(a) Histogram of every ln σ_i of J_L⋯J₁ at L = {D} for tanh at the critical point: the delta-orthogonal "
            f"CNN ({config.pixels} pixels, C = {config.channels}) lies on the orthogonal MLP of width C (dashed): each "
            "pixel is such an MLP in law (the two-sample tests below); Gaussian kernels spread it over many more "
            "decades (values below −16, at the float32 resolution of the SVD, are drawn at −16). (b) A linear "
            "delta-orthogonal CNN is an exact isometry: the worst deviation of ln σ_i from "
            "L ln σ_w over every sample and i, in float32, by the QR method and from the explicit product (Kahan-summed "
            "log-scale), far below the issue's tolerance 1e-4·L."
        ),
    )


THEORY_COLOR = plotting.THEORY_COLOR

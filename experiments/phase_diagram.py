r"""Seed §5: the order-to-chaos phase diagram of tanh networks, measured against mean field.

Backprop is the linear dynamical system $δ^{(\ell-1)} = J_\ell^\top δ^{(\ell)}$ (seed §5). For
tanh layers $h^{(\ell)} = \tanh(W^{(\ell)}h^{(\ell-1)} + b^{(\ell)})$, $W_{ij} \sim N(0, σ_w^2/n)$,
$b_i \sim N(0, σ_b^2)$, mean field predicts that $\|δ\|^2$ is multiplied per layer by
$χ_1 = σ_w^2 E[φ′(\sqrt{q^*}z)^2]$ (Poole et al. 2016; Schoenholz et al. 2017): the gradient grows
as $\tfrac12\ln χ_1$ per layer, and χ₁ = 1 (`theory.critical_sigma_w("tanh", σ_b)`) separates
vanishing (ordered) from exploding (chaotic) gradients.

For each (σ_w, σ_b) of a grid, one `jaxgrad.simulate` call (method ``"vector"``) measures
``log_backward_gain`` $b_\ell = \ln\|J_1^\top\cdots J_\ell^\top ê_\ell\|$ for every ℓ, and two rates over
the later layers ℓ ∈ [fit_start, depth] (past the transient from q₀ = 1 towards q*):

* the **slope** of the mean of $b_\ell$ against ℓ (least squares, per sample, then averaged):
  the typical growth rate $E\ln$, drawn as the heat map;
* the **mean-square rate** $\tfrac12\ln \overline{g^2}$ with $g_\ell = e^{b_\ell - b_{\ell-1}} = \|J_\ell^\top ê_\ell\|$
  the one-layer gain (the vector method backpropagates one error signal, so consecutive
  $b_\ell$ differ by exactly one layer), averaged over samples and window layers; its standard
  error is the delta method, $\mathrm{SE}/(2\overline{g^2})$, over per-sample averages.

Finite width. The two rates differ by Jensen's gap: $\|J^\top v\|^2/χ$ is an average of n
terms of relative variance $r = 3μ_2/μ_1^2 - 1$ ($μ_k = E[φ′(\sqrt q z)^{2k}]$), so
$E\ln\|J^\top v\| = \tfrac12\ln χ - r/(4n) + O(n^{-2})$ (linear layers: r = 2, Newman's
$-1/(2n)$; He-ReLU: r = 5, Hanin & Nica's $-5/(4n)$). At n = 32 that is 0.016–0.05 per layer,
10–20 standard errors, and it moves the zero of the E ln rate to the chaotic side of χ₁ = 1.
The mean-square rate has no Jensen gap; what is left is an O(1/n) bias of $E\|J_\ell^\top v\|^2$
itself (the component of $W_\ell$ along $h^{(\ell-1)}$, the fluctuation of the empirical q). We
allow 1/(2n) for it, explicitly, in every tolerance; measured with 2048 samples at
(σ_w, σ_b) ∈ {(1, 0.3), (2, 0.3), (2, 0), (3, 0)} it is −0.011 to −0.016 at n = 8, −0.003 to −0.010 at
n = 16 and −0.001 to −0.003 at n = 64 (−0.1/n to −0.2/n), and the E ln slope minus
(½ ln χ − r/(4n)) is within the same 1/(2n) (−0.017 to −0.055 at n = 8, ≤ 0.004 at n = 64).
Predictions follow the mean-field transient (`theory.signal_propagation`) over the fit
window, which equals ½ ln χ₁ once q has reached q*; near (σ_w, σ_b) = (1, 0) q → 0
algebraically and the window rate is below ½ ln χ₁ = 0.

Compilation. σ_w and σ_b are traced data (`jaxgrad.layers.Hyper`), so the whole grid is one
compiled program: each σ_b row is one point, its σ_w values one `jaxgrad.sweep` (one seed per
cell), and only the first row compiles (``compile_seconds`` and ``wall_seconds`` in summary.csv
are per row). Before this, every cell compiled its own program (1–5 s each, about 90 % of the
study's 36 s quick wall time).

Run: ``jaxgrad run phase_diagram`` (quick: 15 points at width 32, depth 24, 256 samples;
about 1 minute on 2 CPU cores, nearly all compilation); ``--scale full``: 26 × 11 points at
width 512, depth 64, 2048 samples (an accelerator).

References: Poole et al., NeurIPS 2016; Schoenholz et al., ICLR 2017.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.ticker import MaxNLocator

import jaxgrad
from jaxgrad import plotting, theory
from jaxgrad.stats import Comparison
from experiments._common import mean_and_se, require_integers
from experiments.runner import compute

NAME = "phase_diagram"
SECTION = "§5"
TITLE = "Order to chaos: measured per-layer gradient growth of tanh networks over (σ_w, σ_b) against χ₁ = 1"

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@dataclasses.dataclass(frozen=True)
class Config:
    """The (σ_w, σ_b) grid and the network; the defaults are the quick scale."""

    sigma_w: tuple[float, ...] = (0.8, 1.1, 1.4, 1.7, 2.0)
    sigma_b: tuple[float, ...] = (0.0, 0.25, 0.5)
    width: int = 32
    depth: int = 24
    fit_start: int = 9  # first layer ℓ of the fit window [fit_start, depth]
    samples: int = 256
    q0: float = 1.0  # input variance per coordinate
    theory_points: int = 121  # the theory panel's fine grid, per axis

    def __post_init__(self):
        for name in ("sigma_w", "sigma_b"):
            values = getattr(self, name)
            valid = all(math.isfinite(v) and v >= 0 for v in values)
            if not values or not valid or list(values) != sorted(set(values)):
                raise ValueError(
                    f"`{name}` must be non-empty, finite, non-negative and strictly increasing, got {name}={values}"
                )
        if min(self.sigma_w) <= 0:
            raise ValueError(f"`sigma_w` must be positive, got sigma_w={self.sigma_w}")
        require_integers(self, ("width", "depth", "samples", "theory_points"))
        if not 2 <= self.fit_start <= self.depth - 2:
            raise ValueError(
                f"`fit_start` must lie in [2, depth − 2] = [2, {self.depth - 2}], got fit_start={self.fit_start!r}"
            )
        if not (self.q0 > 0 and math.isfinite(self.q0)):
            raise ValueError(f"`q0` must be positive and finite, got q0={self.q0!r}")

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(
            sigma_w=tuple(np.round(np.linspace(0.5, 3.0, 26), 3).tolist()),
            sigma_b=tuple(np.round(np.linspace(0.0, 1.0, 11), 3).tolist()),
            width=512,
            depth=64,
            fit_start=17,
            samples=2048,
            theory_points=201,
        )


# --------------------------------------------------------------------------- protocol


def points(config: Config) -> list[dict]:
    """One point per σ_b row: the row's σ_w values run as one `jaxgrad.sweep` (one program for the grid)."""
    return [{"sigma_b": b} for b in config.sigma_b]


@contextlib.contextmanager
def compile_timer():
    """Yields a one-element list that accumulates XLA backend compile seconds inside the block."""
    total = [0.0]

    def listener(event, duration, **_):
        if event == COMPILE_EVENT:
            total[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield total
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def engine_seed(key: jax.Array) -> int:
    """The engine's integer seed, a function of the point's key alone."""
    return int(jax.random.bits(key, dtype=jnp.uint32))


def _window(config: Config) -> np.ndarray:
    return np.arange(config.fit_start, config.depth + 1)


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    """The row σ_b = point["sigma_b"]: every σ_w in one compiled sweep; cell j's seed from fold_in(key, j)."""
    net = jaxgrad.mlp(width=config.width, depth=config.depth, activation="tanh", sigma_b=point["sigma_b"])
    seeds = np.asarray([engine_seed(jax.random.fold_in(key, j)) for j in range(len(config.sigma_w))])
    start = time.perf_counter()
    with compile_timer() as compiled:
        result = jaxgrad.sweep(
            net,
            config.samples,
            seeds,
            grid={"sigma_w": list(config.sigma_w)},
            q0=config.q0,
            method="vector",
            fields=["log_backward_gain"],
        )
    b = np.asarray(result.log_backward_gain, np.float64)  # (n_w, samples, depth): b[j, :, ℓ−1] = b_ℓ
    ell = _window(config)
    window = b[..., ell - 1]
    centred = ell - ell.mean()
    slope = window @ centred / (centred @ centred)  # per-sample least-squares slope
    one_layer = b[..., ell - 1] - b[..., ell - 2]  # ln g_ℓ, ℓ in the window
    nonfinite = (~np.isfinite(b)).any(axis=2).sum(axis=1)
    return {
        "slope": slope,
        "mean_square_gain": np.exp(2 * one_layer).mean(axis=2),
        "mean_log_backward_gain": b.mean(axis=1),
        "nonfinite": nonfinite.astype(np.int64),
        "compile_seconds": np.float64(compiled[0]),
        "wall_seconds": np.float64(time.perf_counter() - start),
    }


def _mean_field(config: Config) -> dict:
    """Every theory number the study needs, in a few batched calls (each new shape compiles once).

    Per grid point (arrays (n_b, n_w)), over the fit window of the mean-field transient from q₀
    (`theory.signal_propagation`): ``predicted_rate`` = LS slope of ½Σln χ⁽ℓ⁾ (equals ½ ln χ₁ at q*),
    ``predicted_ms_rate`` = ½ ln⟨χ⁽ℓ⁾⟩, ``correction`` = −⟨r⁽ℓ⁾⟩/(4n), r = 3μ₂/μ₁² − 1 (Jensen's gap of
    E ln at width n). Plus ½ ln χ₁ on the grid, on a fine grid, and along σ_w per σ_b, and χ₁ = 1.
    """
    sw, sb = np.asarray(config.sigma_w), np.asarray(config.sigma_b)
    ell = _window(config)
    centred = ell - ell.mean()
    log_gain2, q_window = [], []
    for b in sb:
        for w in sw:
            prop = theory.signal_propagation("tanh", float(w), float(b), config.q0, config.depth)
            log_gain2.append(np.asarray(prop.log_mean_squared_gain, np.float64))
            q_window.append(np.asarray(prop.q, np.float64)[ell - 1])
    log_gain2 = np.stack(log_gain2).reshape(len(sb), len(sw), config.depth)
    half_w = 0.5 * (np.diff(sw).min() if sw.size > 1 else 0.1)  # the fine grid spans the measured cells
    half_b = 0.5 * (np.diff(sb).min() if sb.size > 1 else 0.1)
    sw_fine = np.linspace(max(sw.min() - half_w, 1e-3), sw.max() + half_w, config.theory_points)
    sb_fine = np.linspace(max(sb.min() - half_b, 0.0), sb.max() + half_b, config.theory_points)
    grid_b, grid_w = np.meshgrid(sb, sw, indexing="ij")
    fine_b, fine_w = np.meshgrid(sb_fine, sw_fine, indexing="ij")
    slice_b, slice_w = np.meshgrid(sb, sw_fine, indexing="ij")
    parts = [(grid_w, grid_b), (fine_w, fine_b), (slice_w, slice_b)]
    all_w = np.concatenate([w.ravel() for w, _ in parts])
    all_b = np.concatenate([b.ravel() for _, b in parts])
    chi = np.asarray(theory.chi1("tanh", all_w, all_b), np.float64)
    moments = theory.gaussian_moments("tanh")
    q_window = np.clip(np.asarray(q_window), 1e-20, 1e20)  # η = 3μ₂/μ₁² − 1 along the transient
    r_window = (
        3 * np.asarray(moments.slope4(q_window), np.float64) / np.asarray(moments.slope2(q_window), np.float64) ** 2 - 1
    ).reshape(len(sb), len(sw), ell.size)
    slice_typical = np.asarray(theory.mean_field_log_gain("tanh", slice_w, slice_b, config.width, 1).mean, np.float64)
    critical = np.asarray(theory.critical_sigma_w("tanh", np.concatenate([sb, sb_fine])), np.float64)
    sizes = np.cumsum([w.size for w, _ in parts])
    half = 0.5 * np.log(chi)
    chi_window = np.exp(log_gain2[..., ell - 1] - log_gain2[..., ell - 2])
    return dict(
        grid_half_log_chi1=half[: sizes[0]].reshape(grid_w.shape),
        grid_predicted_rate=0.5 * log_gain2[..., ell - 1] @ centred / (centred @ centred),
        grid_predicted_ms_rate=0.5 * np.log(chi_window.mean(axis=-1)),
        grid_correction=-r_window.mean(axis=-1) / (4 * config.width),
        grid_relative_variance=r_window.mean(axis=-1),
        critical_sigma_w=critical[: sb.size],
        theory_sigma_w=sw_fine,
        theory_sigma_b=sb_fine,
        theory_half_log_chi1=half[sizes[0] : sizes[1]].reshape(fine_w.shape),
        theory_critical_sigma_w=critical[sb.size :],
        slice_half_log_chi1=half[sizes[1] :].reshape(slice_w.shape),
        slice_e_log=slice_typical,
    )


def _zero_crossing(x, y):
    """First x where the piecewise-linear y(x) crosses zero upwards; NaN if none."""
    for k in range(len(x) - 1):
        if y[k] < 0 <= y[k + 1]:
            return x[k] + (x[k + 1] - x[k]) * (-y[k]) / (y[k + 1] - y[k]), k
    return math.nan, -1


def summarize(config: Config, results):
    shape = (len(config.sigma_b), len(config.sigma_w))
    data = _mean_field(config)
    measured = {
        k: np.full(shape, np.nan)
        for k in ("slope", "slope_se", "rate_ms", "rate_ms_se", "compile_seconds", "wall_seconds")
    }
    mean_b = np.zeros(shape + (config.depth,))
    rows = []
    cells = [(point, j, w, arrays) for point, arrays in results for j, w in enumerate(config.sigma_w)]
    for point, j, w, arrays in cells:
        i = config.sigma_b.index(point["sigma_b"])
        slope, slope_se = mean_and_se(arrays["slope"][j])
        g2, g2_se = mean_and_se(arrays["mean_square_gain"][j])
        values = dict(
            slope=slope,
            slope_se=slope_se,
            rate_ms=0.5 * math.log(g2),
            rate_ms_se=0.5 * g2_se / g2,
            compile_seconds=float(arrays["compile_seconds"]),
            wall_seconds=float(arrays["wall_seconds"]),
        )
        for k, v in values.items():
            measured[k][i, j] = v
        mean_b[i, j] = arrays["mean_log_backward_gain"][j]
        theory_at = {
            k: float(data[f"grid_{k}"][i, j])
            for k in ("predicted_rate", "predicted_ms_rate", "correction", "half_log_chi1", "relative_variance")
        }
        rows.append(
            dict(
                sigma_w=w,
                sigma_b=point["sigma_b"],
                width=config.width,
                depth=config.depth,
                fit_window=f"{config.fit_start}-{config.depth}",
                samples=config.samples,
                measured_slope=slope,
                slope_se=slope_se,
                predicted_slope=theory_at["predicted_rate"] + theory_at["correction"],
                measured_mean_square_rate=values["rate_ms"],
                mean_square_rate_se=values["rate_ms_se"],
                predicted_mean_square_rate=theory_at["predicted_ms_rate"],
                half_log_chi1=theory_at["half_log_chi1"],
                finite_width_correction=theory_at["correction"],
                relative_variance_r=theory_at["relative_variance"],
                bias_allowance=0.5 / config.width,
                critical_sigma_w=float(data["critical_sigma_w"][i]),
                nonfinite=int(arrays["nonfinite"][j]),
                compile_seconds=values["compile_seconds"],
                wall_seconds=values["wall_seconds"],
            )
        )
    data.update({f"grid_{k}": v for k, v in measured.items()})
    data.update(sigma_w=np.asarray(config.sigma_w), sigma_b=np.asarray(config.sigma_b), mean_log_backward_gain=mean_b)
    return rows, data


def _boundaries(data, config: Config):
    """Per σ_b: measured zero of the mean-square rate, of the window prediction (same grid), and the bracket slope."""
    out = []
    sw = data["sigma_w"]
    for i, sb in enumerate(data["sigma_b"]):
        measured, k = _zero_crossing(sw, data["grid_rate_ms"][i])
        on_grid, _ = _zero_crossing(sw, data["grid_predicted_ms_rate"][i])
        if k < 0:
            out.append((sb, math.nan, on_grid, math.nan, math.nan))
            continue
        dy = (data["grid_rate_ms"][i, k + 1] - data["grid_rate_ms"][i, k]) / (sw[k + 1] - sw[k])
        se = max(data["grid_rate_ms_se"][i, k], data["grid_rate_ms_se"][i, k + 1])
        out.append((sb, measured, on_grid, dy, se))
    return out


def comparisons(data, config: Config) -> list[Comparison]:
    n, bias = config.width, 0.5 / config.width
    out = []
    ms_dev = (data["grid_rate_ms"] - data["grid_predicted_ms_rate"]) / (4 * data["grid_rate_ms_se"] + bias)
    i, j = np.unravel_index(np.nanargmax(np.abs(ms_dev)), ms_dev.shape)
    out.append(
        Comparison(
            f"mean-square rate ½ ln E‖J_ℓᵀv‖² per layer vs mean-field ½ ln χ⁽ℓ⁾ over layers {config.fit_start}–"
            f"{config.depth}: worst of {ms_dev.size} grid points, at (σ_w, σ_b) = ({data['sigma_w'][j]:g}, "
            f"{data['sigma_b'][i]:g}) (tolerance 4 SE by the delta method + finite-width bias allowance 1/(2n) = "
            f"{bias:.4f}, n = {n})",
            float(data["grid_rate_ms"][i, j]),
            float(data["grid_predicted_ms_rate"][i, j]),
            float(4 * data["grid_rate_ms_se"][i, j] + bias),
        )
    )
    predicted = data["grid_predicted_rate"] + data["grid_correction"]
    dev = (data["grid_slope"] - predicted) / (4 * data["grid_slope_se"] + bias)
    i, j = np.unravel_index(np.nanargmax(np.abs(dev)), dev.shape)
    out.append(
        Comparison(
            f"slope of E ln‖δ‖ per layer vs ½ ln χ⁽ℓ⁾ − r/(4n) (Jensen gap −r/(4n) = "
            f"{data['grid_correction'][i, j]:.4f} here): worst of {dev.size} grid points, at (σ_w, σ_b) = "
            f"({data['sigma_w'][j]:g}, {data['sigma_b'][i]:g}) (tolerance 4 SE + O(1/n) bias allowance 1/(2n))",
            float(data["grid_slope"][i, j]),
            float(predicted[i, j]),
            float(4 * data["grid_slope_se"][i, j] + bias),
        )
    )
    critical = dict(zip(data["sigma_b"], data["critical_sigma_w"]))
    for sb, measured, on_grid, dy, se in _boundaries(data, config):
        if math.isnan(measured):
            continue
        grid_error = abs(on_grid - critical[sb]) if math.isfinite(on_grid) else 0.0
        tolerance = grid_error + (4 * se + bias) / abs(dy)
        out.append(
            Comparison(
                f"order/chaos boundary at σ_b = {sb:g}: σ_w where the measured mean-square rate crosses 0 "
                f"(linear interpolation on the σ_w grid) vs theory.critical_sigma_w (tolerance: the same "
                f"interpolation of the mean-field window rate misses by {grid_error:.3f}, + (4 SE + 1/(2n))/|slope| = "
                f"{(4 * se + bias) / abs(dy):.3f})",
                float(measured),
                float(critical[sb]),
                float(tolerance),
            )
        )
    return out


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    return [_plot_map(data, config, outdir), _plot_slices(data, config, outdir)]


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figures


def _plot_map(data, config, outdir) -> plotting.Figure:
    fig, (left, right) = plotting.subplots(1, 2, width=3.6, height=3.3, sharey=True)
    values = np.concatenate([data["grid_slope"].ravel(), data["theory_half_log_chi1"].ravel()])
    low, high = min(float(np.nanmin(values)), -1e-3), max(float(np.nanmax(values)), 1e-3)
    # Centred: white at 0 and the same depth of colour for the same |rate| on either side (−0.2 is as
    # deep a purple as +0.2 is orange), so the colour bar is linear with 0 in the middle.
    extent = max(-low, high)
    norm = TwoSlopeNorm(vmin=-extent, vcenter=0.0, vmax=extent)
    mesh = left.pcolormesh(
        data["sigma_w"], data["sigma_b"], data["grid_slope"], norm=norm, cmap=plotting.DIVERGING_CMAP, shading="nearest"
    )
    right.pcolormesh(
        data["theory_sigma_w"],
        data["theory_sigma_b"],
        data["theory_half_log_chi1"],
        norm=norm,
        cmap=plotting.DIVERGING_CMAP,
        shading="nearest",
        rasterized=True,
    )
    boundary = _boundaries(data, config)
    for ax in (left, right):
        plotting.theory_line(
            ax, data["theory_critical_sigma_w"], data["theory_sigma_b"], linewidth=2, label="χ₁ = 1 (mean field)"
        )
        half = 0.5 * _step(data["sigma_w"])
        ax.set_xlim(data["sigma_w"][0] - half, data["sigma_w"][-1] + half)
        # σ_b ≥ 0: the cell of the lowest row is drawn from 0 up, not centred below it.
        ax.set_ylim(
            max(0.0, data["sigma_b"][0] - 0.5 * _step(data["sigma_b"])),
            data["sigma_b"][-1] + 0.5 * _step(data["sigma_b"]),
        )
    plotting.measured_points(
        left,
        [b[1] for b in boundary],
        [b[0] for b in boundary],
        marker="D",
        markersize=6,
        color=plotting.OKABE_ITO["green"],
        markerfacecolor="white",
        clip_on=False,
        label="measured ½ ln E g² = 0",
    )
    plotting.label_axes(
        left,
        "weight scale $σ_w$",
        "bias scale $σ_b$",
        legend=False,
        title=f"(a) measured slope of E ln‖δ‖, n = {config.width}",
    )
    plotting.label_axes(right, "weight scale $σ_w$", "", legend=False, title="(b) mean field ½ ln χ₁")
    left.legend(loc="upper left", fontsize=7)
    bar = fig.colorbar(mesh, ax=[left, right], label="growth rate of the gradient per layer (nats)", shrink=0.9)
    bar.set_ticks([t for t in MaxNLocator(nbins=8, symmetric=True).tick_values(-extent, extent) if abs(t) <= extent])
    plotting.save_figure(fig, outdir, "phase_diagram")
    return plotting.Figure(
        "phase_diagram",
        (
            f"Per-layer growth rate of the backpropagated gradient of tanh networks (width {config.width}, depth "
            f"{config.depth}, {config.samples} initialisations per cell). (a) Measured: least-squares slope of the mean "
            f"of ln‖J₁ᵀ⋯J_ℓᵀ e‖ over layers {config.fit_start}–{config.depth}; purple vanishes, orange explodes. "
            "Diamonds: where the measured mean-square rate ½ ln E‖J_ℓᵀv‖² crosses zero. (b) Mean field ½ ln χ₁. "
            "Line: χ₁ = 1 (theory.critical_sigma_w). One colour scale for both panels, centred: white at 0, the "
            "same depth of colour for the same |rate| on either side. The E ln slope sits r/(4n) below ½ ln χ₁ "
            "(Jensen's gap at "
            "finite width), so its zero lies slightly on the chaotic side of the line."
        ),
    )


def _step(values) -> float:
    return float(np.diff(values).min()) if len(values) > 1 else 0.1


def _plot_slices(data, config, outdir) -> plotting.Figure:
    fig, ax = plotting.subplots(width=5.4, height=3.8)
    sw = data["sigma_w"]
    for i, sb in enumerate(data["sigma_b"]):
        color = plotting.PALETTE[i % len(plotting.PALETTE)]
        plotting.theory_line(
            ax, data["theory_sigma_w"], data["slice_half_log_chi1"][i], color=color, label=f"$σ_b$ = {sb:g}: ½ ln χ₁"
        )
        plotting.theory_line(
            ax, data["theory_sigma_w"], data["slice_e_log"][i], color=color, linestyle="--", linewidth=1.0
        )
        ax.errorbar(
            sw,
            data["grid_rate_ms"][i],
            yerr=2 * data["grid_rate_ms_se"][i],
            color=color,
            marker="D",
            linestyle="none",
            markerfacecolor="white",
            markersize=5,
            zorder=4,
        )
        ax.errorbar(
            sw,
            data["grid_slope"][i],
            yerr=2 * data["grid_slope_se"][i],
            color=color,
            marker="o",
            linestyle="none",
            markersize=4,
            zorder=4,
        )
    ax.axhline(0.0, color="0.5", linewidth=0.6)
    ax.plot([], [], color="0.3", linestyle="--", linewidth=1.0, label="½ ln χ₁ − r/(4n) (E ln, finite n)")
    ax.plot(
        [], [], color="0.3", marker="D", markerfacecolor="white", linestyle="none", label="measured ½ ln E g² (± 2 SE)"
    )
    ax.plot([], [], color="0.3", marker="o", linestyle="none", label="measured slope of E ln‖δ‖")
    plotting.label_axes(
        ax,
        "weight scale $σ_w$",
        "growth rate per layer (nats)",
        legend=False,
        title=f"tanh, width {config.width}: slices of the phase diagram",
    )
    ax.legend(loc="lower right", fontsize=7)
    plotting.save_figure(fig, outdir, "rate_slices")
    return plotting.Figure(
        "rate_slices",
        (
            "Slices of the phase diagram at each σ_b: the gradient's growth rate per layer against σ_w. Solid lines: "
            "mean-field ½ ln χ₁ at q*; dashed: the finite-width prediction for the typical (E ln) rate, "
            f"½ ln χ₁ − r/(4n) with r = 3μ₂/μ₁² − 1, n = {config.width}. Diamonds: measured mean-square rate "
            "(no Jensen gap; tracks the solid line); dots: measured slope of E ln‖δ‖ (tracks the dashed line). "
            "Points near (σ_w, σ_b) = (1, 0) still sit on the algebraic transient q⁽ℓ⁾ ≈ 1/(2ℓ)."
        ),
    )

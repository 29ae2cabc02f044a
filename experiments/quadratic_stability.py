r"""Seed §1: gradient descent on $L(\theta) = \tfrac12 a\theta^2$ is repeated multiplication.

$\theta_t = (1 - \eta a)^t\theta_0$ shrinks iff $0 < \eta < 2/a$. Three figures, all from
`optax.sgd` runs (lax.scan, vmapped over the grid, one compiled call per optimiser):

1. ``trajectories``: θ_t for the seed's multipliers r = 0.5, −0.5, 1.2, −1.2, the
   closed form as lines and the optax iterates as markers;
2. ``stability_map``: the measured growth rate over (a, η) for plain SGD, heavy-ball
   and Nesterov momentum, with the predicted boundaries η = 2/a, 2(1+β)/a and
   2(1+β)/((1+2β)a) (`jaxgrad.quadratic.critical_learning_rate`);
3. ``momentum_threshold``: the measured critical ηa against β for both momenta.

Run: ``jaxgrad run quadratic_stability`` (quick: 64 × 64 maps, about 5 s on a 2-core CPU,
mostly compilation, plus 4 s of figures); ``--scale full``: 512 × 512 maps, 2000-step
runs, 96 momenta, about 10 s on the same CPU (the work is tiny: 2 × 2 linear maps).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import numpy as np
from matplotlib.colors import TwoSlopeNorm

from jaxgrad import plotting, quadratic
from jaxgrad.stats import Comparison
from experiments._common import require_integers
from experiments.runner import compute

NAME = "quadratic_stability"
SECTION = "§1"
TITLE = "Gradient descent on a quadratic: θ_t = (1 − ηa)ᵗ θ₀ and the threshold η < 2/a"

OPTIMIZERS = ("sgd", "heavy_ball", "nesterov")
MOMENTUM_OPTIMIZERS = ("heavy_ball", "nesterov")
NAMES = {"sgd": "plain SGD", "heavy_ball": "heavy ball", "nesterov": "Nesterov"}
EPS32 = float(np.finfo(np.float32).eps)


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the three parts; the defaults are the quick scale."""

    multipliers: tuple[float, ...] = (0.5, -0.5, 1.2, -1.2)  # r for figure 1
    curvature: float = 1.0  # a for figure 1; η = (1 − r)/a
    theta0: float = 1.0
    trajectory_steps: int = 40
    a_min: float = 0.1  # stability map: log-spaced a and η
    a_max: float = 10.0
    n_a: int = 64
    lr_min: float = 0.01
    lr_max: float = 100.0
    n_lr: int = 64
    momentum: float = 0.9  # β of the map's momentum panels
    map_steps: int = 400
    bisections: int = 24  # refinement of each a's boundary bracket by bisection
    n_momentum: int = 20  # momentum sweep: β ∈ [0, momentum_max], a = 1, ηa linear
    momentum_max: float = 0.95
    sweep_lr_min: float = 0.5
    sweep_lr_max: float = 4.5
    n_sweep_lr: int = 41
    sweep_steps: int = 1000

    def __post_init__(self):
        if not self.multipliers or not all(math.isfinite(r) for r in self.multipliers):
            raise ValueError(f"`multipliers` must be non-empty and finite, got multipliers={self.multipliers}")
        if isinstance(self.bisections, bool) or not isinstance(self.bisections, int) or self.bisections < 0:
            raise ValueError(f"`bisections` must be a non-negative integer, got bisections={self.bisections!r}")
        require_integers(
            self, ("trajectory_steps", "map_steps", "sweep_steps", "n_a", "n_lr", "n_momentum", "n_sweep_lr")
        )
        for name in ("curvature", "a_min", "lr_min", "sweep_lr_min"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"`{name}` must be positive and finite, got {name}={value!r}")
        for low, high in (("a_min", "a_max"), ("lr_min", "lr_max"), ("sweep_lr_min", "sweep_lr_max")):
            if not getattr(self, low) < getattr(self, high) < math.inf:
                raise ValueError(
                    f"need {low} < {high} < inf, got {low}={getattr(self, low)!r}, {high}={getattr(self, high)!r}"
                )
        for name in ("momentum", "momentum_max"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1), got {name}={value!r}")

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(
            trajectory_steps=60, n_a=512, n_lr=512, map_steps=2000, n_momentum=96, n_sweep_lr=401, sweep_steps=4000
        )


def _momentum(config: Config, optimizer: str):
    return None if optimizer == "sgd" else config.momentum


def _label(config: Config, optimizer: str) -> str:
    return {
        "sgd": "plain SGD",
        "heavy_ball": f"heavy ball, β = {config.momentum:g}",
        "nesterov": f"Nesterov, β = {config.momentum:g}",
    }[optimizer]


def _critical(optimizer: str, beta: float) -> float:
    """Predicted η_c·a (a = 1)."""
    return quadratic.critical_learning_rate(1.0, 0.0 if optimizer == "sgd" else beta, optimizer == "nesterov")


def _map_grid(config: Config):
    return (
        np.geomspace(config.a_min, config.a_max, config.n_a),
        np.geomspace(config.lr_min, config.lr_max, config.n_lr),
    )


def _sweep_grid(config: Config):
    return (
        np.linspace(0.0, config.momentum_max, config.n_momentum),
        np.linspace(config.sweep_lr_min, config.sweep_lr_max, config.n_sweep_lr),
    )


# --------------------------------------------------------------------------- protocol


def points(config: Config) -> list[dict]:
    return (
        [{"part": "trajectories"}]
        + [{"part": "stability_map", "optimizer": o} for o in OPTIMIZERS]
        + [{"part": "momentum_sweep", "optimizer": o} for o in MOMENTUM_OPTIMIZERS]
    )


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    if point["part"] == "trajectories":
        r = np.array(config.multipliers)
        lr = (1.0 - r) / config.curvature
        theta = quadratic.sgd_trajectories(
            np.full_like(r, config.curvature), np.full_like(r, config.theta0), lr, steps=config.trajectory_steps
        )
        return {"theta": theta}
    a, beta, lr, steps = _rows(config, point)
    n, m = a.size, lr.size
    nesterov = point["optimizer"] == "nesterov"
    key_grid, key_bisect = jax.random.split(key)
    rate = quadratic.sgd_growth_rates(
        np.repeat(a, m),
        jax.random.normal(key_grid, (n * m,)),
        np.tile(lr, n),
        steps=steps,
        momentum=None if beta is None else np.repeat(beta, m),
        nesterov=nesterov,
    )
    rate = np.asarray(rate).reshape(n, m)
    # Refine each row's grid bracket (last stable η, next η) by bisection on optax runs.
    low, high = quadratic.bisect_critical_learning_rate(
        a,
        jax.random.normal(key_bisect, (n,)),
        *_grid_bracket(lr, rate),
        steps=steps,
        momentum=beta,
        nesterov=nesterov,
        iterations=config.bisections,
    )
    return {"growth_rate": rate, "lr_critical_low": low, "lr_critical_high": high}


def _rows(config: Config, point: dict):
    """A part's rows: curvature a and momentum β per row (β None: plain SGD), the η grid, the steps."""
    if point["part"] == "stability_map":
        a, lr = _map_grid(config)
        beta = None if point["optimizer"] == "sgd" else np.full(a.shape, config.momentum)
        return a, beta, lr, config.map_steps
    beta, lr = _sweep_grid(config)
    return np.ones_like(beta), beta, lr, config.sweep_steps


def _grid_bracket(lr, rate):
    """Per row: the last stable grid η and the next one (everything above grows); NaN if none."""
    low, high = np.full(rate.shape[0], np.nan), np.full(rate.shape[0], np.nan)
    for row, r in enumerate(rate):
        stable = np.flatnonzero(r < 0)
        if stable.size and stable[-1] + 1 < r.size:
            low[row], high[row] = lr[stable[-1]], lr[stable[-1] + 1]
    return low, high


def summarize(config: Config, results):
    data, rows = {}, []
    r = np.array(config.multipliers)
    lr = (1.0 - r) / config.curvature
    a_grid, lr_grid = _map_grid(config)
    betas, x_grid = _sweep_grid(config)
    data.update(multiplier=r, map_a=a_grid, map_lr=lr_grid, sweep_momentum=betas, sweep_lr=x_grid)
    for point, arrays in results:
        if point["part"] == "trajectories":
            closed = np.stack(
                [quadratic.closed_form(config.theta0, config.curvature, l, config.trajectory_steps) for l in lr]
            )
            data.update(theta=arrays["theta"], theta_closed_form=closed)
            for k, (rk, lk) in enumerate(zip(r, lr)):
                rows += [
                    dict(
                        part="trajectories",
                        optimizer="sgd",
                        momentum=0.0,
                        a=config.curvature,
                        lr=lk,
                        multiplier=rk,
                        regime=quadratic.regime(rk),
                        t=t,
                        quantity="theta_t",
                        measured=float(arrays["theta"][k, t]),
                        predicted=closed[k, t],
                    )
                    for t in range(config.trajectory_steps + 1)
                ]
            continue
        o, rate = point["optimizer"], arrays["growth_rate"]
        if point["part"] == "stability_map":
            measured = 0.5 * (arrays["lr_critical_low"] + arrays["lr_critical_high"])
            data[f"map_rate_{o}"], data[f"map_lr_critical_{o}"] = rate, measured
            data[f"map_lr_bracket_{o}"] = arrays["lr_critical_high"] - arrays["lr_critical_low"]
            beta = 0.0 if o == "sgd" else config.momentum
            rows += [
                dict(
                    part="stability_map",
                    optimizer=o,
                    momentum=beta,
                    a=a,
                    quantity="lr_critical",
                    measured=m,
                    predicted=_critical(o, beta) / a,
                )
                for a, m in zip(a_grid, measured)
            ]
        else:
            measured = 0.5 * (arrays["lr_critical_low"] + arrays["lr_critical_high"])
            data[f"sweep_rate_{o}"], data[f"sweep_lr_critical_{o}"] = rate, measured
            data[f"sweep_lr_bracket_{o}"] = arrays["lr_critical_high"] - arrays["lr_critical_low"]
            rows += [
                dict(
                    part="momentum_sweep",
                    optimizer=o,
                    momentum=b,
                    a=1.0,
                    quantity="lr_critical",
                    measured=m,
                    predicted=_critical(o, b),
                )
                for b, m in zip(betas, measured)
            ]
    return rows, data


def _worst(measured, predicted) -> int:
    """Index of the largest |measured − predicted|, a missing measurement (NaN) counting as largest."""
    deviation = np.abs(np.asarray(measured) - predicted)
    return int(np.argmax(np.where(np.isnan(deviation), np.inf, deviation)))


def comparisons(data, config: Config) -> list[Comparison]:
    theta, closed = data["theta"], data["theta_closed_form"]
    T = config.trajectory_steps
    tiny = np.finfo(np.float64).tiny
    out = [
        Comparison(
            f"optax θ_t vs (1 − ηa)ᵗθ₀: max relative deviation for r ∈ {list(config.multipliers)}, "
            f"t ≤ {T} (tolerance 4Tε, float32 rounding)",
            float(np.max(np.abs(theta - closed) / np.maximum(np.abs(closed), tiny))),
            0.0,
            4 * T * EPS32,
        )
    ]
    a, lr = np.meshgrid(data["map_a"], data["map_lr"], indexing="ij")
    log_r = np.log(np.abs(1.0 - a * lr))
    cells = np.abs(log_r) <= 1.0
    deviation = np.abs(data["map_rate_sgd"] - log_r)[cells]
    rounding = EPS32 * (1.0 + a * lr) / np.abs(1.0 - a * lr)  # float32 r = 1 − ηa errs by ≈ ε(1 + ηa)
    out.append(
        Comparison(
            f"plain SGD growth rate vs ln|1 − ηa|: max deviation over the {cells.sum()} map cells "
            "with |ln|r|| ≤ 1 (tolerance 4ε(1 + ηa)/|r|, float32 rounding of r)",
            float(deviation.max()),
            0.0,
            4 * float(rounding[cells].max()),
        )
    )
    for o in OPTIMIZERS:
        predicted = _critical(o, config.momentum)
        measured = data[f"map_lr_critical_{o}"] * data["map_a"]
        k = _worst(measured, predicted)
        bracket = float(np.nanmax(data[f"map_lr_bracket_{o}"] * data["map_a"]))
        out.append(
            Comparison(
                f"η_c·a, {_label(config, o)}: worst of {measured.size} curvatures a ∈ "
                f"[{config.a_min:g}, {config.a_max:g}], bisection on optax runs (tolerance: half "
                "the final bracket + 1e-5 relative)",
                float(measured[k]),
                predicted,
                bracket / 2 + 1e-5 * predicted,
            )
        )
    for o in MOMENTUM_OPTIMIZERS:
        predicted = np.array([_critical(o, b) for b in data["sweep_momentum"]])
        measured = data[f"sweep_lr_critical_{o}"]
        k = _worst(measured, predicted)
        bracket = float(np.nanmax(data[f"sweep_lr_bracket_{o}"]))
        out.append(
            Comparison(
                f"η_c·a, {NAMES[o]}: worst of {measured.size} momenta β ∈ "
                f"[0, {config.momentum_max:g}], at β = {data['sweep_momentum'][k]:.3f} (tolerance: "
                "half the final bracket + 1e-5 relative)",
                float(measured[k]),
                float(predicted[k]),
                bracket / 2 + 1e-5 * predicted[k],
            )
        )
    return out


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    return [
        _plot_trajectories(data, config, outdir),
        _plot_map(data, config, outdir),
        _plot_momentum(data, config, outdir),
    ]


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figures


def _plot_trajectories(data, config, outdir) -> plotting.Figure:
    fig, (left, right) = plotting.subplots(1, 2, width=4.0, height=3.3)
    t = np.arange(config.trajectory_steps + 1)
    early = t <= min(12, config.trajectory_steps)
    for k, r in enumerate(data["multiplier"]):
        color, dashes = plotting.PALETTE[k % len(plotting.PALETTE)], "--" if r < 0 else "-"
        label = f"r = {r:g} ({quadratic.regime(r).replace('_', ' ')})"
        plotting.theory_line(
            left,
            t[early],
            data["theta_closed_form"][k, early],
            color=color,
            linestyle=dashes,
            linewidth=1.0,
            label=label,
        )
        plotting.measured_points(left, t[early], data["theta"][k, early], color=color)
        plotting.theory_line(right, t, np.abs(data["theta_closed_form"][k]), color=color, linestyle=dashes)
        plotting.measured_points(right, t, np.abs(data["theta"][k]), color=color, markevery=2)
    left.axhline(0.0, color="0.5", linewidth=0.6)
    left.set_ylim(-3.2, 3.2)
    plotting.label_axes(left, "step $t$", r"$\theta_t$", title="(a) sign and size, first steps")
    plotting.label_axes(right, "step $t$", r"$|\theta_t|$", title="(b) magnitude", ylog=True)
    left.legend(loc="lower left", fontsize=7)
    right.plot([], [], color="0.3", label="closed form $r^t\\theta_0$")
    right.plot([], [], color="0.3", marker="o", markerfacecolor="none", linestyle="none", label="optax.sgd")
    right.legend(loc="lower left")
    plotting.save_figure(fig, outdir, "trajectories")
    return plotting.Figure(
        "trajectories",
        (
            f"θ_t under gradient descent on ½aθ² (a = {config.curvature:g}, θ₀ = {config.theta0:g}) for the seed's "
            "multipliers r = 1 − ηa: closed form rᵗθ₀ as lines, optax.sgd iterates as markers. |r| < 1 shrinks "
            "(vanishing), |r| > 1 explodes; r < 0 flips sign every step (dashed)."
        ),
    )


def _plot_map(data, config, outdir) -> plotting.Figure:
    fig, axes = plotting.subplots(1, 3, width=3.3, height=3.2, sharey=True)
    a, lr = data["map_a"], data["map_lr"]
    norm = TwoSlopeNorm(vmin=-1.0, vcenter=0.0, vmax=1.0)
    every = max(1, a.size // 16)
    for ax, o in zip(axes, OPTIMIZERS):
        mesh = ax.pcolormesh(
            a,
            lr,
            np.clip(data[f"map_rate_{o}"].T, -1, 1),
            norm=norm,
            cmap=plotting.DIVERGING_CMAP,
            shading="nearest",
            rasterized=True,
        )
        if o != "sgd":
            plotting.theory_line(
                ax,
                a,
                2.0 / a,
                color=plotting.OKABE_ITO["sky_blue"],
                linestyle=":",
                linewidth=2,
                label="η = 2/a (plain SGD)",
            )
        formula = {"sgd": "2/a", "heavy_ball": "2(1+β)/a", "nesterov": "2(1+β)/((1+2β)a)"}[o]
        plotting.theory_line(ax, a, _critical(o, config.momentum) / a, label=f"predicted η_c = {formula}")
        plotting.measured_points(
            ax,
            a[::every],
            data[f"map_lr_critical_{o}"][::every],
            marker="D",
            color=plotting.OKABE_ITO["green"],
            markerfacecolor="white",
            label="measured η_c",
        )
        ax.set_xlim(a[0], a[-1])
        ax.set_ylim(lr[0], lr[-1])
        plotting.label_axes(
            ax,
            "curvature $a$",
            "learning rate η" if o == "sgd" else "",
            title=_label(config, o),
            xlog=True,
            ylog=True,
            legend=False,
        )
        ax.legend(loc="lower left", fontsize=7)
    fig.colorbar(mesh, ax=list(axes), label="measured growth rate per step", shrink=0.9, extend="both")
    plotting.save_figure(fig, outdir, "stability_map")
    return plotting.Figure(
        "stability_map",
        (
            f"Stability of optax.sgd on ½aθ² over a {a.size} × {lr.size} grid of (a, η): colour is the measured "
            "growth "
            f"rate per step of the state s = (θ, momentum), ln(‖s_T‖/‖s_T/2‖)/(T/2) with T = {config.map_steps}, "
            "clipped to ±1: purple shrinks, orange explodes. Lines: predicted boundaries η = 2/a (plain), "
            "2(1+β)/a (heavy ball, Polyak 1964) and 2(1+β)/((1+2β)a) (Nesterov, optax's form); diamonds: the "
            "measured boundary, by bisection on the sign of the optax growth rate."
        ),
    )


def _plot_momentum(data, config, outdir) -> plotting.Figure:
    fig, ax = plotting.subplots(width=4.6, height=3.4)
    betas = data["sweep_momentum"]
    fine = np.linspace(0.0, config.momentum_max, 200)
    for k, o in enumerate(MOMENTUM_OPTIMIZERS):
        color = plotting.PALETTE[k + 1]
        name = NAMES[o]
        formula = "2(1+β)" if o == "heavy_ball" else "2(1+β)/(1+2β)"
        plotting.theory_line(ax, fine, [_critical(o, b) for b in fine], color=color, label=f"{name}: {formula}")
        plotting.measured_points(ax, betas, data[f"sweep_lr_critical_{o}"], color=color, label=f"{name}: optax")
    plotting.theory_line(ax, fine, np.full_like(fine, 2.0), color="0.35", linestyle=":", label="plain SGD: 2")
    plotting.label_axes(ax, "momentum β", "critical step $\\eta_c a$")
    plotting.save_figure(fig, outdir, "momentum_threshold")
    return plotting.Figure(
        "momentum_threshold",
        (
            "Largest stable ηa against momentum β (a = 1): markers are measured by bisection on the sign of the "
            f"optax growth rate ({config.sweep_steps} steps, started from a {data['sweep_lr'].size}-point ηa grid); "
            "lines are the Jury-criterion thresholds of jaxgrad.quadratic.critical_learning_rate. Heavy ball "
            "(Polyak 1964) gains step size; Nesterov in optax's form (Sutskever et al. 2013) loses it, towards 4/3."
        ),
    )

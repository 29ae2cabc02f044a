r"""Seed §1 in a network: full-batch gradient descent drives $λ_{\max}(∇^2L)$ to 2/η (the edge of stability).

On $L(θ) = \tfrac12 aθ^2$ gradient descent is stable iff $η < 2/a$ (seed §1); with
heavy-ball momentum β iff $η < (2 + 2β)/a$ (`jaxgrad.quadratic.critical_learning_rate`).
A network's loss is locally such a quadratic with $a = λ_{\max}(∇^2 L)$, the sharpness.
Cohen et al. (2021) observed that under full-batch GD the sharpness rises during training
(progressive sharpening) until it reaches the seed's threshold 2/η, and then hovers there
while the loss keeps decreasing, non-monotonically: the edge of stability. With momentum
the level is (2 + 2β)/η.

Set-up: the first `n_images` of scikit-learn's 8×8 digits, a tanh MLP (64 → width^depth
→ 10 linear readout, σ_w = 1, σ_b = 0), the squared loss ½‖f(x) − one-hot‖² averaged over
images, full-batch `optax.sgd` (with ``momentum=β`` for heavy ball) for several η, seeds
vmapped; $λ_{\max}$ by 20-step Lanczos on Hessian-vector products
(`jaxgrad.top_hessian_eigenvalue`) every `record_every` steps. The squared loss is
Cohen et al.'s main setting: with cross-entropy the sharpness falls again late in
training as the logits grow, which muddies the plateau.

Run: ``jaxgrad run edge_of_stability`` (quick: 512 images, 3000 steps, 5 runs × 2 seeds,
about 2 minutes on a shared 2-core CPU); ``--scale full``: all 1,797 images, 10,000 steps,
8 seeds, 32 Lanczos steps (accelerator).

Reference: J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, "Gradient descent on
neural networks typically occurs at the edge of stability", ICLR 2021.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys

import jax
import numpy as np
import optax

import jaxgrad
from jaxgrad import plotting, quadratic, training
from jaxgrad.stats import Comparison, mean_and_se
from experiments._common import require_integers
from experiments.runner import compute

NAME = "edge_of_stability"
SECTION = "§1"
TITLE = "Edge of stability: full-batch GD drives λ_max(∇²L) up to 2/η (heavy ball: (2 + 2β)/η)"
OPTIMIZERS = ("gd", "heavy_ball")
EDGE_ENTERED = 0.95  # a run is at the edge once λ_max·η/(2 + 2β) has reached this


@dataclasses.dataclass(frozen=True)
class Config:
    n_images: int = 512
    width: int = 64
    depth: int = 2
    steps: int = 3000
    record_every: int = 25
    lanczos_steps: int = 20
    learning_rates: tuple[float, ...] = (0.1, 0.2, 0.3)
    momentum: float = 0.5
    momentum_learning_rates: tuple[float, ...] = (0.3, 0.45)
    seeds: int = 2
    window: float = 1 / 3  # the final share of training averaged for the comparison

    def __post_init__(self):
        require_integers(self, ("n_images", "width", "steps", "lanczos_steps", "seeds"))
        require_integers(self, ("depth", "record_every"), minimum=1)
        if self.steps % self.record_every:
            raise ValueError(f"`record_every` must divide steps={self.steps}, got record_every={self.record_every}")
        for name in ("learning_rates", "momentum_learning_rates"):
            value = getattr(self, name)
            if not value or not all(v > 0 and math.isfinite(v) for v in value):
                raise ValueError(f"`{name}` must be non-empty, positive and finite, got {name}={value!r}")
        if not 0.0 < self.momentum < 1.0:
            raise ValueError(f"`momentum` must lie in (0, 1), got momentum={self.momentum!r}")
        if not 0.0 < self.window <= 1.0:
            raise ValueError(f"`window` must lie in (0, 1], got window={self.window!r}")

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(
            n_images=1797,
            steps=10_000,
            record_every=20,
            lanczos_steps=32,
            seeds=8,
            learning_rates=(0.05, 0.1, 0.2, 0.3),
            momentum_learning_rates=(0.2, 0.3, 0.45),
        )


def _beta(config: Config, optimizer: str) -> float:
    return 0.0 if optimizer == "gd" else config.momentum


def _rates(config: Config, optimizer: str):
    return np.array(config.learning_rates if optimizer == "gd" else config.momentum_learning_rates)


@functools.cache
def _optimizer(beta: float):
    return optax.sgd if beta == 0 else functools.partial(optax.sgd, momentum=beta)


def points(config: Config) -> list[dict]:
    return [{"optimizer": o} for o in OPTIMIZERS]


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    data = training.load_digits(config.n_images)
    net = jaxgrad.mlp(widths=[64] + [config.width] * config.depth, activation="tanh", sigma_w=1.0, sigma_b=1.0)
    history = training.train(
        net,
        _optimizer(_beta(config, point["optimizer"])),
        data.x,
        data.y,
        keys=jax.random.split(key, config.seeds),
        steps=config.steps,
        learning_rate=_rates(config, point["optimizer"]),
        bias_scale=0.0,
        loss="mse",
        record_every=config.record_every,
        sharpness_steps=config.lanczos_steps,
    )
    return {
        "sharpness": np.asarray(history.sharpness),
        "step_loss": np.asarray(history.step_loss),
        "loss": np.asarray(history.loss),
        "accuracy": np.asarray(history.accuracy),
        "diverged_at": np.asarray(history.diverged_at),
    }


def summarize(config: Config, results):
    rows, data = [], {"record_steps": np.arange(0, config.steps + 1, config.record_every)}
    for point, arrays in results:
        o = point["optimizer"]
        beta, rates = _beta(config, o), _rates(config, o)
        data.update({f"{o}_{k}": v for k, v in arrays.items()}, **{f"{o}_learning_rates": rates})
        level = (2 + 2 * beta) / rates
        for g, lr in enumerate(rates):
            for s in range(config.seeds):
                for r, t in enumerate(data["record_steps"]):
                    rows.append(
                        dict(
                            optimizer=o,
                            momentum=beta,
                            learning_rate=float(lr),
                            seed=s,
                            step=int(t),
                            sharpness=float(arrays["sharpness"][g, s, r]),
                            threshold=float(level[g]),
                            loss=float(arrays["loss"][g, s, r]),
                            accuracy=float(arrays["accuracy"][g, s, r]),
                        )
                    )
    return rows, data


def _tail(config: Config, values):
    """The records in the final `window` of training (axis −1)."""
    start = int(round((1 - config.window) * (values.shape[-1] - 1)))
    return values[..., start:]


def comparisons(data, config: Config) -> list[Comparison]:
    out = []
    eps = float(np.finfo(np.float32).eps)
    for o in OPTIMIZERS:
        beta, rates = _beta(config, o), data[f"{o}_learning_rates"]
        ratio = data[f"{o}_sharpness"] * rates[:, None, None] / (2 + 2 * beta)  # (G, S, R)
        for g, lr in enumerate(rates):
            if not np.all(np.nanmax(ratio[g, :, 1:], axis=-1) >= EDGE_ENTERED):
                continue  # still sharpening at the end (or diverged): no level to compare
            tail = _tail(config, ratio[g])  # (S, R_tail)
            per_seed = tail.mean(-1)
            mean, se = mean_and_se(per_seed)
            band = 0.5 * float(np.subtract(*np.percentile(tail, [95, 5])))
            formula = "λ_max·η/2" if beta == 0 else f"λ_max·η/(2 + 2β), β = {beta:g}"
            out.append(
                Comparison(
                    f"{formula} at η = {lr:g}, mean over the last {config.window:.0%} of {config.steps} full-batch "
                    f"steps and {config.seeds} seeds, vs the seed's threshold 1 (tolerance: half the 5–95 % band the "
                    f"sharpness oscillates in, {band:.3f}, + 4 SE over seeds, {4 * se:.3f})",
                    float(mean),
                    1.0,
                    band + 4 * float(se),
                )
            )
    for lr in data["gd_learning_rates"]:
        a = 2.0 / float(lr)  # the quadratic whose curvature sits exactly at the threshold
        lam = float(
            jaxgrad.top_hessian_eigenvalue(
                lambda theta, a=a: 0.5 * a * theta**2, np.float32(1.0), key=jax.random.key(0)
            )
        )
        out.append(
            Comparison(
                f"seed §1 link: Lanczos λ_max of ½aθ² with a = 2/η = {a:g} equals a, so η = 2/λ_max "
                "is quadratic.critical_learning_rate (tolerance 4ε·a, float32 rounding)",
                2.0 / quadratic.critical_learning_rate(lam),
                2.0 / quadratic.critical_learning_rate(a),
                4 * eps * a,
            )
        )
    return out


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figure


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    fig, axes = plotting.subplots(1, 3, width=3.6, height=3.2)
    t_rec = data["record_steps"]
    t = np.arange(config.steps)
    for ax, o in zip(axes[:2], OPTIMIZERS):
        beta, rates = _beta(config, o), data[f"{o}_learning_rates"]
        sharp = data[f"{o}_sharpness"]
        for g, lr in enumerate(rates):
            color = plotting.PALETTE[g + (0 if o == "gd" else len(config.learning_rates))]
            lo, hi = np.nanmin(sharp[g], 0), np.nanmax(sharp[g], 0)
            plotting.measured_band(
                ax, t_rec, lo, hi, color=color, center=np.nanmean(sharp[g], 0), alpha=0.35, label=f"η = {lr:g}"
            )
            formula = "2/η" if beta == 0 else "(2+2β)/η"
            plotting.theory_line(
                ax,
                t_rec,
                np.full(t_rec.shape, (2 + 2 * beta) / lr),
                color=color,
                linestyle="--",
                linewidth=1.2,
                label=f"{formula} = {(2 + 2 * beta) / lr:.3g}",
            )
        title = "(a) plain GD" if o == "gd" else f"(b) heavy ball, β = {beta:g}"
        plotting.label_axes(ax, "step", r"sharpness $\lambda_{\max}(\nabla^2 L)$", title=title, legend=False)
        ax.set_ylim(0, 1.25 * max((2 + 2 * beta) / rates.min(), np.nanmax(sharp[:, :, 2:])))
        ax.legend(fontsize=7, loc="upper right", ncol=2)
    ax = axes[2]
    for o, offset in (("gd", 0), ("heavy_ball", len(config.learning_rates))):
        beta = _beta(config, o)
        for g, lr in enumerate(data[f"{o}_learning_rates"]):
            label = f"GD η = {lr:g}" if o == "gd" else f"HB η = {lr:g}"
            ax.plot(
                t + 1,
                data[f"{o}_step_loss"][g, 0],
                color=plotting.PALETTE[g + offset],
                linewidth=0.8,
                label=label,
                linestyle="-" if o == "gd" else ":",
            )
    plotting.label_axes(
        ax,
        "step",
        "training loss ½‖f − y‖² (seed 0)",
        title="(c) loss: non-monotone at the edge",
        xlog=True,
        ylog=True,
        legend=False,
    )
    ax.legend(fontsize=7, loc="lower left")
    plotting.save_figure(fig, outdir, "sharpness")
    return [
        plotting.Figure(
            "sharpness",
            (
                f"Full-batch gradient descent on {config.n_images} 8×8 digits (tanh MLP, width {config.width}, depth "
                f"{config.depth}, squared loss). (a, b) The sharpness λ_max(∇²L) (Lanczos on Hessian-vector products; "
                f"band: min–max over {config.seeds} seeds, line: mean) rises during training until it meets the dashed "
                "level 2/η, plain GD, or (2 + 2β)/η, heavy ball, and then hovers there: the seed's §1 threshold η < 2/a "
                "with a = λ_max (Cohen et al. 2021, edge of stability). Where the initial sharpness already exceeds the "
                "level (η = 0.3 and heavy ball) the first steps push it down below the level instead (catapult) before it "
                "settles there; the smallest η is still sharpening when the budget ends. (c) The loss keeps falling at "
                "the edge, but no longer monotonically: the spikes are the steps where λ_max overshoots the level and the "
                "top direction grows as |1 − ηλ_max|ᵗ, exactly the seed's r < −1 regime, until the sharpness drops back."
            ),
        ),
    ]

r"""BatchNorm makes gradients explode at initialisation: the rate of ln‖δ‖ per layer against the batch size.

The network is Yang et al. (2019)'s, $H^{(\ell)} = φ(\mathrm{BN}(H^{(\ell-1)}W^{(\ell)\top}))$ on a batch
of B inputs (`jaxgrad.batch_norm_mlp`; the state is the B × n matrix H, so every Jacobian couples
the batch). The backward gain $\ln\|J_1^\top\cdots J_\ell^\top e\|$ of a random unit e (``method="vector"``)
grows linearly in ℓ once the batch's Gram matrix has reached its fixed point; its slope over
layers (`fit_start`, depth] of each sample is the measured rate.

* ReLU: the rate falls with B towards Yang et al.'s large-batch limit ½ ln(π/(π−1)) = 0.1916
  (`theory.batch_norm_gradient_rate`). The finite-batch correction is measured: a weighted fit
  rate(B) = r∞ + c/B + d/B² over the batch sizes, whose r∞ (with its SE from the fit) is
  compared with 0.1916 at 4 SE. The width is n = `width_per_batch`·B: at n ≲ 4B the rate sits
  below its n → ∞ value (measured: B = 256, n = 1,024 gives 0.1894 ± 0.0003, where the fit
  predicts 0.1937), so the width grows with the batch.
* σ_w: BN removes it exactly ($\mathrm{BN}(σ_wHW^\top) = \mathrm{BN}(HW^\top)$ up to ε), so no choice of
  σ_w removes the explosion; each σ_w gets independent samples (its own seed), and the rates at
  σ_w ≠ 1 are compared with σ_w = 1 at 4 SE of the difference.
* Linear φ: even without a non-linearity the gradient explodes at finite B, at
  ½ ln((B−2)/(B−3)) per layer (`theory.batch_norm_gradient_factor`, a derivation of ours: BN divides
  by the batch standard deviation, and E 1/χ²_{B−1} > 1/E χ²_{B−1}). This is an n → ∞ law; at the
  quick scale's n = 128 the measured rate sits below it (reported in summary.csv, not compared;
  at n = 1,024, B = 8: 0.0904 ± 0.0015 against 0.0912), so it is compared only in the full run
  (n = `linear_width` ≥ 1,024). Orthogonal weights do not remove it (measured: 0.311 at B = 4, n = 256; full run).

Run: ``jaxgrad run batchnorm_explosion`` (quick: ReLU at B = 8, 16, 32 with n = 8B, linear at B = 8,
n = 128, 16 samples per σ_w; about 80 s on 2 CPU cores); ``--scale full`` (B = 4 … 256, n = 16B,
linear at n = 1,024 with gaussian and orthogonal weights: an accelerator; orthogonal weights are drawn
by a QR per layer, 400 s for one quick-sized point on CPU, hence not in the quick run).

References: G. Yang, J. Pennington, V. Rao, J. Sohl-Dickstein, S. S. Schoenholz, "A mean field
theory of batch normalization", ICLR 2019; S. Ioffe and C. Szegedy, ICML 2015.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import jax
import numpy as np

import jaxgrad
from jaxgrad import plotting, theory
from jaxgrad.stats import Comparison, mean_and_se, within_standard_errors
from experiments._common import require_integers
from experiments.runner import compute

NAME = "batchnorm_explosion"
SECTION = "§3, §5"
TITLE = "BatchNorm gradient explosion at initialisation: the rate of ln‖δ‖ per layer against batch size and σ_w"

WEIGHTS = ("gaussian", "orthogonal")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes; the defaults are the quick scale."""

    batches: tuple[int, ...] = (8, 16, 32)
    width_per_batch: int = 8
    min_width: int = 64
    depth: int = 40
    fit_start: int = 12
    samples: int = 16
    sigma_ws: tuple[float, ...] = (0.5, 1.0, 2.0)
    linear_batches: tuple[int, ...] = (8,)
    linear_width: int = 128
    linear_weights: tuple[str, ...] = ("gaussian",)

    def __post_init__(self):
        require_integers(self, ("min_width", "depth", "samples", "linear_width"))
        require_integers(self, ("fit_start", "width_per_batch"), minimum=1)
        if not self.fit_start + 4 <= self.depth:
            raise ValueError(f"`fit_start` must leave ≥ 4 layers below depth={self.depth}, got {self.fit_start}")
        for name, minimum in (("batches", 4), ("linear_batches", 4)):
            v = getattr(self, name)
            integers = all(isinstance(b, int) and not isinstance(b, bool) and b >= minimum for b in v)
            if (name == "batches" and not v) or not integers or list(v) != sorted(set(v)):
                raise ValueError(f"`{name}` must be strictly increasing integers ≥ {minimum}, got {name}={v}")
        if len(self.batches) < 3:
            raise ValueError(f"`batches` needs ≥ 3 sizes for the fit r∞ + c/B + d/B², got batches={self.batches}")
        if (
            1.0 not in self.sigma_ws
            or list(self.sigma_ws) != sorted(set(self.sigma_ws))
            or not all(0 < s < math.inf for s in self.sigma_ws)
        ):
            raise ValueError(
                f"`sigma_ws` must be positive, finite, increasing and contain 1.0, got sigma_ws={self.sigma_ws}"
            )
        if any(w not in WEIGHTS for w in self.linear_weights) or len(set(self.linear_weights)) != len(
            self.linear_weights
        ):
            raise ValueError(
                f"`linear_weights` must be distinct choices from {list(WEIGHTS)}, "
                f"got linear_weights={self.linear_weights}"
            )

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(
            batches=(4, 8, 16, 32, 64, 128, 256),
            width_per_batch=16,
            depth=48,
            samples=64,
            linear_batches=(4, 8, 16, 32),
            linear_width=1024,
            linear_weights=WEIGHTS,
        )

    def width(self, batch: int) -> int:
        return max(self.min_width, self.width_per_batch * batch)


# --------------------------------------------------------------------------- protocol


def points(config: Config) -> list[dict]:
    return [{"activation": "relu", "batch": B, "weights": "gaussian"} for B in config.batches] + [
        {"activation": "linear", "batch": B, "weights": w} for w in config.linear_weights for B in config.linear_batches
    ]


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    B, act = point["batch"], point["activation"]
    n = config.width(B) if act == "relu" else config.linear_width
    net = jaxgrad.batch_norm_mlp(n, config.depth, batch=B, activation=act, weights=point["weights"])
    seeds = np.asarray(jax.random.randint(key, (len(config.sigma_ws),), 0, 2**31 - 1))  # independent per σ_w
    r = jaxgrad.sweep(
        net,
        config.samples,
        seeds,
        grid={"sigma_w": list(config.sigma_ws)},
        method="vector",
        fields=["log_backward_gain"],
    )
    g = np.asarray(r.log_backward_gain, np.float64)  # (σ_w, samples, depth)
    a, b = config.fit_start, config.depth
    return {"rate": (g[..., b - 1] - g[..., a - 1]) / (b - a), "median_curve": np.median(g, axis=1)}


def _fit(batches, rates, ses):
    """Weighted least squares rate = r∞ + c/B + d/B²: coefficients and their standard errors."""
    x = 1.0 / np.asarray(batches, np.float64)
    X = np.stack([np.ones_like(x), x, x * x], axis=1)
    w = 1.0 / np.asarray(ses, np.float64) ** 2
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    coef = cov @ (X.T @ (w * np.asarray(rates, np.float64)))
    return coef, np.sqrt(np.diag(cov))


def summarize(config: Config, results):
    rows, data = (
        [],
        {
            "batches": np.asarray(config.batches),
            "sigma_ws": np.asarray(config.sigma_ws),
            "linear_batches": np.asarray(config.linear_batches),
        },
    )
    for point, arrays in results:
        B, act, w = point["batch"], point["activation"], point["weights"]
        tag = f"{act}_{w}_{B}"
        data[f"rate_{tag}"], data[f"curve_{tag}"] = arrays["rate"], arrays["median_curve"]
        n = config.width(B) if act == "relu" else config.linear_width
        pooled, pooled_se = mean_and_se(arrays["rate"].ravel())
        predicted = (
            theory.batch_norm_gradient_rate("linear", B) if act == "linear" else theory.batch_norm_gradient_rate("relu")
        )
        for k, s in enumerate(config.sigma_ws):
            m, se = mean_and_se(arrays["rate"][k])
            rows.append(
                dict(
                    activation=act,
                    weights=w,
                    batch=B,
                    width=n,
                    sigma_w=s,
                    samples=config.samples,
                    rate=m,
                    rate_se=se,
                    pooled_rate=pooled,
                    pooled_rate_se=pooled_se,
                    predicted=predicted,
                    gap=pooled - predicted,
                )
            )
    means = [mean_and_se(data[f"rate_relu_gaussian_{B}"].ravel()) for B in config.batches]
    coef, coef_se = _fit(config.batches, [m for m, _ in means], [s for _, s in means])
    data.update(
        relu_rate=np.array([m for m, _ in means]),
        relu_rate_se=np.array([s for _, s in means]),
        fit=coef,
        fit_se=coef_se,
    )
    for name, value, se in zip(("r_inf", "c", "d"), coef, coef_se):
        rows.append(dict(activation="relu", weights="gaussian", fit_coefficient=name, value=value, value_se=se))
    return rows, data


def comparisons(data, config: Config) -> list[Comparison]:
    limit = theory.batch_norm_gradient_rate("relu")
    r_inf, se = data["fit"][0], data["fit_se"][0]
    out = [
        within_standard_errors(
            f"ReLU: B → ∞ rate r∞ of the fit r∞ + c/B + d/B² to B = {', '.join(map(str, config.batches))} "
            f"(n = {config.width_per_batch}B) vs Yang et al.'s ½ ln(π/(π−1)) (SE of r∞ from the weighted fit)",
            r_inf,
            se,
            limit,
        )
    ]
    ref = list(config.sigma_ws).index(1.0)
    for B in config.batches:
        rate = data[f"rate_relu_gaussian_{B}"]
        stats_ = [mean_and_se(rate[k]) for k in range(rate.shape[0])]
        others = [k for k in range(rate.shape[0]) if k != ref]
        if not others:
            continue
        diff = [abs(stats_[k][0] - stats_[ref][0]) / math.hypot(stats_[k][1], stats_[ref][1]) for k in others]
        k = others[int(np.argmax(diff))]
        out.append(
            within_standard_errors(
                f"ReLU, B = {B}: rate at σ_w = {config.sigma_ws[k]:g} (worst of {len(others)}) vs σ_w = 1, independent "
                "samples (BN removes σ_w; SE of the difference)",
                stats_[k][0],
                math.hypot(stats_[k][1], stats_[ref][1]),
                stats_[ref][0],
            )
        )
    if config.linear_width >= 1024:  # the n → ∞ law; at smaller n the rate sits measurably below (docstring)
        for w in config.linear_weights:
            for B in config.linear_batches:
                m, s = mean_and_se(data[f"rate_linear_{w}_{B}"].ravel())
                out.append(
                    within_standard_errors(
                        f"linear, {w} weights, B = {B}, n = {config.linear_width}: rate vs ½ ln((B−2)/(B−3))",
                        m,
                        s,
                        theory.batch_norm_gradient_rate("linear", B),
                    )
                )
    return out


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    return [_plot_rate(data, config, outdir)]


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figures


def _plot_rate(data, config, outdir) -> plotting.Figure:
    fig, (left, right) = plotting.subplots(1, 2, width=4.6, height=3.6)
    batches = np.asarray(config.batches, np.float64)
    limit = theory.batch_norm_gradient_rate("relu")
    for k, s in enumerate(config.sigma_ws):
        stats_ = [mean_and_se(data[f"rate_relu_gaussian_{B}"][k]) for B in config.batches]
        left.errorbar(
            batches * (1 + 0.04 * (k - 1)),
            [m for m, _ in stats_],
            yerr=[2 * e for _, e in stats_],
            color=plotting.PALETTE[k],
            marker="os^"[k % 3],
            markerfacecolor="white",
            markersize=4,
            linestyle="none",
            capsize=2,
            label=f"ReLU, σ_w = {s:g} (± 2 SE)",
        )
    fine = np.geomspace(batches[0], max(batches[-1], 1024), 200)
    c = data["fit"]
    plotting.theory_line(
        left,
        fine,
        c[0] + c[1] / fine + c[2] / fine**2,
        color=plotting.PALETTE[5],
        linestyle="--",
        linewidth=1.0,
        label=f"fit {c[0]:.4f} + {c[1]:.3f}/B + {c[2]:.2f}/B²",
    )
    left.axhline(limit, color=plotting.THEORY_COLOR, linewidth=1.2, label="½ ln(π/(π−1)) = 0.1916 (B → ∞)")
    lin = np.asarray(config.linear_batches, np.float64)
    for j, w in enumerate(config.linear_weights):
        stats_ = [mean_and_se(data[f"rate_linear_{w}_{B}"].ravel()) for B in config.linear_batches]
        left.errorbar(
            lin * (1 + 0.04 * j),
            [m for m, _ in stats_],
            yerr=[2 * e for _, e in stats_],
            color=plotting.PALETTE[3 + j],
            marker="dv"[j],
            linestyle="none",
            markersize=4,
            capsize=2,
            label=f"linear, {w}, n = {config.linear_width}",
        )
    fl = np.geomspace(max(lin[0] if lin.size else batches[0], 4), max(batches[-1], 1024), 200)
    plotting.theory_line(
        left,
        fl,
        0.5 * np.log((fl - 2) / (fl - 3)),
        color=plotting.PALETTE[3],
        linestyle=":",
        label="½ ln((B−2)/(B−3)), linear, n → ∞",
    )
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    plotting.label_axes(
        left,
        "batch size B",
        "rate: d ln‖δ‖ / d(layer)",
        legend=False,
        title=f"(a) rate over layers ({config.fit_start}, {config.depth}]",
    )
    left.legend(loc="lower left", fontsize=6)
    ell = np.arange(1, config.depth + 1)
    for j, B in enumerate(config.batches):
        curve = data[f"curve_relu_gaussian_{B}"][list(config.sigma_ws).index(1.0)]
        right.plot(
            ell,
            curve,
            color=plotting.PALETTE[j % len(plotting.PALETTE)],
            linewidth=1.2,
            label=f"B = {B}, n = {config.width(B)}",
        )
    plotting.theory_line(right, ell, limit * ell, linestyle="--", label="slope 0.1916")
    plotting.label_axes(
        right, "layer ℓ", "ln‖J_1ᵀ⋯J_ℓᵀ e‖ (median)", legend=False, title="(b) ReLU + BN, σ_w = 1: ln‖δ‖ against depth"
    )
    right.legend(loc="upper left", fontsize=6.5)
    plotting.save_figure(fig, outdir, "rate_vs_batch")
    return plotting.Figure(
        "rate_vs_batch",
        (
            f"(a) Growth rate of ln‖δ‖ per layer, backwards, in Yang et al.'s batch-normalised network H ← φ(BN(HWᵀ)) "
            f"({config.samples} samples per point, slope over layers ({config.fit_start}, {config.depth}]): ReLU at "
            f"width n = {config.width_per_batch}B for three σ_w (equal: BN removes σ_w), the fitted finite-batch "
            f"correction r∞ + c/B + d/B² (dashed; r∞ = {c[0]:.4f} ± {data['fit_se'][0]:.4f}) tending to "
            "½ ln(π/(π−1)) = 0.1916 (black), and linear activations (gaussian and orthogonal weights), which explode "
            "too, near the n → ∞ law ½ ln((B−2)/(B−3)) (dotted; below it at finite n). (b) The median ln‖J_1ᵀ⋯J_ℓᵀe‖ "
            "against ℓ: straight after a short transient, steeper for smaller batches."
        ),
    )

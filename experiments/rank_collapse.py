r"""Rank collapse in self-attention: pure attention, residual attention, and the 1/√L branch scale.

Three networks of `jaxgrad.attention` layers on T tokens of width d (no MLP, no normalisation):

1. **pure attention**, $X \mapsto \mathrm{SA}(X)$: per sample and layer the residual from token
   uniformity $ρ_\ell = \max_i\|x_i - \bar x\|$ against Dong et al.'s cubic bound
   (`theory.attention_residual_log_bound`; never violated, beyond a stated float64 rounding floor),
   and the measured collapse exponent, the pooled slope of $\ln ρ_{\ell}$ on $\ln ρ_{\ell-1}$ where
   ρ has not yet reached the floor, against `theory.RANK_COLLAPSE_EXPONENT` = 3
   (doubly exponential: $\ln ρ_L \sim 3^L$).
2. **residual attention** $X \mapsto X + α\,\mathrm{SA}(X)$, unscaled (α = 1) and scaled
   (α = 1/√L, Noci et al. 2022), at depths L = 4 … 32: the mean token cosine at the output. Unscaled,
   it drifts to 1 (collapse); scaled, it converges as L doubles. With uniform attention
   (σ_qk = 0) the theory is exact: the residual R is unchanged and
   $E\|\bar x_L\|^2/\|\bar x_0\|^2 = (1 + α^2σ_w^2)^L$ (`theory.uniform_attention_mean_growth`), with the
   large-width token cosine $(g - 1)/(g + T - 1)$; the softmax case is compared with its change as L
   doubles, predicted by that formula.
3. **gradients**: $\ln\|∂\mathcal L/∂W_Q^\ell\|$, $W_K^\ell$, $W_V^\ell$ for a random linear readout
   (`measures.weight_gradient_norms`) at every layer: the query and key gradients vanish where the
   tokens have collapsed (exactly zero for identical tokens, tests/test_attention_conv.py), the value
   gradients do not.

Everything runs in float64: pure attention reaches the float32 rounding floor
($ρ/\|x\| \approx 10^{-7}$) after three layers, and an unscaled residual stack's norms grow like
$2^{L/2}$.

Run: ``jaxgrad run rank_collapse`` (quick: T = d = 16, 256 samples, pure depth 6, residual depths
4–32; about 35 s on 2 CPU cores); ``--scale full`` (T = 64 tokens, d = 128, 1024 samples,
residual depths to 256: an accelerator).

References: Y. Dong, J.-B. Cordonnier, A. Loukas, ICML 2021; L. Noci et al., NeurIPS 2022.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxgrad
from jaxgrad import measures, plotting, theory, transformer
from jaxgrad.stats import Comparison, mean_and_se
from experiments._common import engine_seed, require_integers
from experiments.runner import compute

NAME = "rank_collapse"
SECTION = "§5"
TITLE = "Rank collapse in self-attention: Dong et al.'s cubic bound, and residual branches with and without 1/√L"

EPS64 = float(np.finfo(np.float64).eps)
CLEAN = -28.0  # ln of ρ/max‖x_i‖ above which a residual is well clear of the float64 floor (≈ −36.7)


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes; the defaults are the quick scale."""

    tokens: int = 16
    width: int = 16
    heads: int = 1
    samples: int = 256
    pure_depth: int = 6
    depths: tuple[int, ...] = (4, 8, 16, 32)

    def __post_init__(self):
        require_integers(self, ("tokens", "width", "samples", "pure_depth"))
        require_integers(self, ("heads",), minimum=1)
        if self.width % self.heads:
            raise ValueError(f"`heads` must divide width={self.width}, got heads={self.heads}")
        if (
            len(self.depths) < 2
            or list(self.depths) != sorted(set(self.depths))
            or self.depths[0] < 1
            or any(b != 2 * a for a, b in zip(self.depths, self.depths[1:]))
        ):
            raise ValueError(f"`depths` must double at each step (e.g. 4, 8, 16), got depths={self.depths}")

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(tokens=64, width=128, heads=4, samples=1024, pure_depth=8, depths=(4, 8, 16, 32, 64, 128, 256))


def _block(config, depth, **kwargs):
    layer = jaxgrad.attention(tokens=config.tokens, width=config.width, heads=config.heads, **kwargs)
    return jaxgrad.serial(*[layer] * depth)


# --------------------------------------------------------------------------- protocol


def points(config: Config) -> list[dict]:
    return [{"part": "pure"}] + [{"part": "residual", "depth": L} for L in config.depths]


@functools.cache
def _probes(T: int, d: int, H: int):
    """The per-state and per-layer functions of the runs, one object per (T, d, H): `measures.measure` keys
    its compiled programs by them, so every residual point shares one program."""

    def tokens(h):
        X = h.reshape(T, d)
        return {
            "token_cosine": transformer.token_cosine(X),
            "token_residual": transformer.token_residual(X),
            "rank_one_distance": transformer.rank_one_distance(X),
            "log_state_norm": jnp.log(jnp.linalg.norm(h)),
        }

    def dong(p, h_in, h_out):
        a, v = transformer.score_and_value_norms(p, H)
        log_in = jnp.log(transformer.max_token_residual(h_in.reshape(T, d)))
        Y = h_out.reshape(T, d)
        return {
            "log_rho_in": log_in,
            "log_rho_out": jnp.log(transformer.max_token_residual(Y)),
            "log_bound": theory.attention_residual_log_bound(log_in, a, v),
            "log_scale": jnp.log(jnp.max(jnp.linalg.norm(Y, axis=1))),
        }

    def cosine(h):
        return {"token_cosine": transformer.token_cosine(h.reshape(T, d))}

    def residual_change(p, h_in, h_out):  # uniform attention leaves R exactly unchanged
        R_in = h_in.reshape(T, d) - jnp.mean(h_in.reshape(T, d), axis=0)
        R_out = h_out.reshape(T, d) - jnp.mean(h_out.reshape(T, d), axis=0)
        # relative to the largest entry of the state: the uniform part the layer adds may dwarf R
        return {
            "residual_change": jnp.max(jnp.abs(R_out - R_in)) / jnp.max(jnp.abs(h_out)),
            "mean_sq": jnp.sum(jnp.mean(h_out.reshape(T, d), axis=0) ** 2),
            "mean_sq_in": jnp.sum(jnp.mean(h_in.reshape(T, d), axis=0) ** 2),
        }

    return tokens, dong, cosine, residual_change


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    seed = engine_seed(key)
    T, d, H = config.tokens, config.width, config.heads
    tokens, dong, cosine, residual_change = _probes(T, d, H)
    run = dict(seed=seed, dtype="float64")
    if point["part"] == "pure":
        net = _block(config, config.pure_depth)
        out = measures.measure(measures.layerwise, net, config.samples, state=tokens, layer=dong, **run)
        grads = measures.measure(measures.weight_gradient_norms, net, config.samples, **run)
        return {**out, **{f"pure_{k}": v for k, v in grads.items()}}
    # Depth L runs as the first L layers of the deepest network: layer ℓ of sample i is drawn from
    # (seed, i, ℓ) whatever the depth, so this is the depth-L network, and every depth shares one program.
    L, deepest = point["depth"], config.depths[-1]
    out = {}
    net = _block(config, deepest, residual_scale=1.0)
    for scaling, alpha in (("unscaled", 1.0), ("scaled", 1.0 / math.sqrt(L))):
        for attn, sigma_qk in (("softmax", 1.0), ("uniform", 0.0)):
            net_a = jaxgrad.serial(
                *[layer.hyper.rebuild(residual_scale=alpha, sigma_qk=sigma_qk) for layer in net.layers]
            )
            geo = measures.measure(
                measures.layerwise, net_a, config.samples, state=cosine, layer=residual_change, **run
            )
            out[f"{attn}_{scaling}_cosine"] = geo["token_cosine"][:, : L + 1]
            if attn == "uniform":
                out[f"uniform_{scaling}_residual_change"] = geo["residual_change"][:, :L].max(axis=1)
                out[f"uniform_{scaling}_mean_growth"] = geo["mean_sq"][:, L - 1] / geo["mean_sq_in"][:, 0]
        if L == deepest:
            grads = measures.measure(
                measures.weight_gradient_norms,
                jaxgrad.serial(*[layer.hyper.rebuild(residual_scale=alpha) for layer in net.layers]),
                config.samples,
                **run,
            )
            out.update({f"{scaling}_{k}": v for k, v in grads.items()})
    return out


def _exponent_fit(data):
    """Pooled slope of ln ρ_ℓ on ln ρ_{ℓ−1} over clean pairs, and its jackknife SE over 16 sample groups."""
    x, y = data["log_rho_in"], data["log_rho_out"]
    clean = (y - data["log_scale"] > CLEAN) & (x - data["log_scale"] < -1.5)
    slope = np.polyfit(x[clean], y[clean], 1)[0]
    groups = np.array_split(np.arange(x.shape[0]), 16)
    jack = []
    for g in groups:
        keep = clean & ~np.isin(np.arange(x.shape[0]), g)[:, None]
        jack.append(np.polyfit(x[keep], y[keep], 1)[0])
    jack = np.asarray(jack)
    se = math.sqrt((len(groups) - 1) / len(groups) * np.sum((jack - jack.mean()) ** 2))
    return float(slope), float(se), int(clean.sum())


def summarize(config: Config, results):
    data = {"depths": np.asarray(config.depths)}
    rows = []
    for point, arrays in results:
        if point["part"] == "pure":
            data.update({k: np.asarray(v, np.float64) for k, v in arrays.items()})
            continue
        L = point["depth"]
        for k, v in arrays.items():
            data[f"L{L}_{k}"] = np.asarray(v, np.float64)
    T, d = config.tokens, config.width
    floor = np.log(2 * (T + d) * math.sqrt(d) * EPS64) + data["log_scale"]
    data["dong_excess"] = data["log_rho_out"] - np.logaddexp(data["log_bound"], floor)
    data["exponent"], data["exponent_se"], data["exponent_pairs"] = _exponent_fit(data)
    for ell in range(config.pure_depth + 1):
        mean, se = mean_and_se(data["token_cosine"][:, ell])
        rows.append(
            dict(
                part="pure",
                network="pure attention",
                depth=ell,
                residual_scale=float("nan"),
                token_cosine=mean,
                token_cosine_se=se,
                token_residual=float(np.median(data["token_residual"][:, ell])),
                log_grad_W_Q=float(np.median(data["pure_log_grad_W_Q"][:, ell - 1])) if ell else float("nan"),
                log_grad_W_V=float(np.median(data["pure_log_grad_W_V"][:, ell - 1])) if ell else float("nan"),
            )
        )
    for L in config.depths:
        for attn in ("softmax", "uniform"):
            for scaling, alpha in (("unscaled", 1.0), ("scaled", 1 / math.sqrt(L))):
                mean, se = mean_and_se(data[f"L{L}_{attn}_{scaling}_cosine"][:, -1])
                rows.append(
                    dict(
                        part="residual",
                        network=f"{attn} attention, {scaling}",
                        depth=L,
                        residual_scale=alpha,
                        token_cosine=mean,
                        token_cosine_se=se,
                        token_residual=float("nan"),
                        log_grad_W_Q=float("nan"),
                        log_grad_W_V=float("nan"),
                    )
                )
    return rows, data


def comparisons(data, config: Config) -> list[Comparison]:
    T, L = config.tokens, config.depths[-1]
    half = config.depths[-2]
    out = [
        Comparison(
            "pure attention: max over samples and layers of ln ρ_ℓ − ln(Dong et al.'s bound + rounding floor), "
            "clipped at 0: predicted 0 (floor 2(T + d)√d ε₆₄ max‖x_i‖; tolerance: float64 rounding of a log, 1e-12)",
            max(float(np.nanmax(data["dong_excess"])), 0.0),
            0.0,
            1e-12,
        )
    ]
    out.append(
        Comparison(
            f"pure attention: collapse exponent d ln ρ_ℓ / d ln ρ_ℓ₋₁ (pooled slope over {int(data['exponent_pairs'])} "
            f"sample-layer pairs above the floor) vs Dong et al.'s cubic 3 (tolerance 4 SE, jackknife over samples)",
            float(data["exponent"]),
            theory.RANK_COLLAPSE_EXPONENT,
            4 * float(data["exponent_se"]),
        )
    )
    for scaling, alpha in (("scaled", 1 / math.sqrt(L)), ("unscaled", 1.0)):
        depth = L if scaling == "scaled" else config.depths[0]
        growth = data[f"L{depth}_uniform_{scaling}_mean_growth"]
        mean, se = mean_and_se(growth)
        out.append(
            Comparison(
                f"uniform attention (σ_qk = 0), {scaling} α = {alpha:.4g}, L = {depth}: E‖x̄_L‖²/‖x̄_0‖² vs "
                f"(1 + α²σ_w²)^L (Noci et al. 2022; tolerance 4 SE)",
                mean,
                float(theory.uniform_attention_mean_growth(alpha, 1.0, depth)),
                4 * se,
            )
        )
    change = max(
        float(np.max(data[f"L{D}_uniform_{s}_residual_change"])) for D in config.depths for s in ("scaled", "unscaled")
    )
    out.append(
        Comparison(
            "uniform attention: max change of the residual R over every layer, depth, scaling and "
            "sample, relative to the largest entry of the state: predicted 0 (tolerance 8 ε₆₄·T, "
            "rounding of the mean over T tokens and of one layer)",
            change,
            0.0,
            8 * EPS64 * config.tokens,
        )
    )
    mean, se = mean_and_se(data[f"L{L}_uniform_scaled_cosine"][:, -1])
    out.append(
        Comparison(
            f"uniform attention, α = 1/√L, L = {L}: mean token cosine vs the large-width (g − 1)/(g + T − 1) "
            "(tolerance 4 SE; no allowance: the finite-width gap is within it at this d)",
            mean,
            float(theory.uniform_attention_token_cosine(1 / math.sqrt(L), 1.0, L, T)),
            4 * se,
        )
    )
    diff = data[f"L{L}_softmax_scaled_cosine"][:, -1] - data[f"L{half}_softmax_scaled_cosine"][:, -1]
    mean, se = mean_and_se(diff)
    predicted = float(
        theory.uniform_attention_token_cosine(1 / math.sqrt(L), 1.0, L, T)
        - theory.uniform_attention_token_cosine(1 / math.sqrt(half), 1.0, half, T)
    )
    out.append(
        Comparison(
            f"softmax attention, α = 1/√L: change of the mean token cosine from L = {half} to {L} (bounded as L "
            "doubles) vs the uniform-attention change (tolerance 4 SE of the paired difference)",
            mean,
            predicted,
            4 * se,
        )
    )
    mean, se = mean_and_se(1 - data[f"L{L}_softmax_unscaled_cosine"][:, -1])
    out.append(
        Comparison(
            f"softmax attention, α = 1 (unscaled), L = {L}: 1 − mean token cosine, predicted 0 (collapse; the "
            "uniform-attention value T/(2^L + T − 1) is below 1e-8; tolerance 4 SE)",
            mean,
            0.0,
            4 * se,
        )
    )
    return out


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    return [_plot_cosine(data, config, outdir), _plot_dong(data, config, outdir)]


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figures


def _band(ax, x, values, color, label, linestyle="-"):
    lo, mid, hi = np.percentile(values, (10, 50, 90), axis=0)
    plotting.measured_band(ax, x, lo, hi, color=color)
    ax.plot(x, mid, color=color, linestyle=linestyle, label=label)


def _plot_cosine(data, config, outdir) -> plotting.Figure:
    fig, (left, right) = plotting.subplots(1, 2, width=4.4, height=3.5)
    L = config.depths[-1]
    _band(left, np.arange(config.pure_depth + 1), data["token_cosine"], plotting.PALETTE[3], "pure attention")
    x = np.arange(L + 1)
    _band(left, x, data[f"L{L}_softmax_unscaled_cosine"], plotting.PALETTE[1], "residual, α = 1")
    _band(left, x, data[f"L{L}_softmax_scaled_cosine"], plotting.PALETTE[0], f"residual, α = 1/√{L}")
    plotting.label_axes(
        left,
        "layer ℓ",
        "mean token cosine (median, 10–90 %)",
        legend=False,
        title=f"(a) softmax attention, T = {config.tokens}, d = {config.width}",
    )
    left.legend(loc="center right", fontsize=7)
    depths = np.asarray(config.depths)
    fine = np.geomspace(depths[0], depths[-1], 60)
    for k, (attn, marker) in enumerate((("softmax", "o"), ("uniform", "s"))):
        for scaling, color in (("unscaled", plotting.PALETTE[1]), ("scaled", plotting.PALETTE[0])):
            stats_ = [mean_and_se(data[f"L{D}_{attn}_{scaling}_cosine"][:, -1]) for D in depths]
            right.errorbar(
                depths * (1 + 0.04 * (k - 0.5)),
                [m for m, _ in stats_],
                yerr=[2 * s for _, s in stats_],
                color=color,
                marker=marker,
                markerfacecolor="white" if attn == "uniform" else color,
                linestyle="none",
                markersize=4,
                capsize=2,
                label=f"{attn}, {scaling}",
            )
    for _scaling, alpha, color in (
        ("unscaled", lambda D: 1.0, plotting.PALETTE[1]),
        ("scaled", lambda D: 1 / np.sqrt(D), plotting.PALETTE[0]),
    ):
        plotting.theory_line(
            right, fine, _uniform_cosine(alpha(fine), fine, config.tokens), color=color, linewidth=1.0, linestyle="--"
        )
    right.plot([], [], color="0.3", linestyle="--", label="uniform attention, large d (theory)")
    right.set_xscale("log", base=2)
    right.set_xticks(depths, [str(D) for D in depths])
    right.minorticks_off()
    plotting.label_axes(
        right,
        "depth L",
        "mean token cosine at layer L (± 2 SE)",
        legend=False,
        title="(b) as L doubles: α = 1 collapses, α = 1/√L does not",
    )
    right.legend(loc="center right", fontsize=6.5)
    plotting.save_figure(fig, outdir, "token_cosine")
    return plotting.Figure(
        "token_cosine",
        (
            f"(a) Mean pairwise cosine of the {config.tokens} token representations at every layer ({config.samples} "
            f"samples, width {config.width}, softmax attention): pure attention collapses within a few layers; a residual "
            f"branch with α = 1 drifts to collapse; with α = 1/√L (L = {L}) the cosine stays near its input value. "
            "(b) The output cosine against the depth L: unscaled it tends to 1 as L doubles, scaled it converges; hollow "
            "squares are uniform attention (σ_qk = 0), where the theory (dashed, (g − 1)/(g + T − 1) with "
            "g = (1 + α²)^L; Noci et al. 2022) holds at large width."
        ),
    )


def _uniform_cosine(alpha, depth, tokens):
    g = (1 + alpha**2) ** depth
    return (g - 1) / (g + tokens - 1)


def _plot_dong(data, config, outdir) -> plotting.Figure:
    fig, (left, right) = plotting.subplots(1, 2, width=4.4, height=3.5)
    x, y = data["log_rho_in"] / np.log(10), data["log_rho_out"] / np.log(10)
    bound = data["log_bound"] / np.log(10)
    for ell in range(x.shape[1]):
        plotting.measured_points(
            left, x[:, ell], y[:, ell], color=plotting.PALETTE[ell % 7], markersize=2, label=f"layer {ell + 1}"
        )
    order = np.argsort(x.ravel())
    left.plot(
        x.ravel()[order],
        bound.ravel()[order],
        color="0.5",
        linewidth=0.0,
        marker=".",
        markersize=1,
        zorder=1,
        label="Dong et al.'s bound (per sample)",
    )
    clean = (data["log_rho_out"] - data["log_scale"] > CLEAN) & (data["log_rho_in"] - data["log_scale"] < -1.5)
    intercept = np.median(y[clean] - 3 * x[clean])
    lim = np.array([np.min(x[clean]) - 1, np.max(x[clean]) + 0.5])
    plotting.theory_line(left, lim, 3 * lim + intercept, label="slope 3 through the collapsing pairs", linestyle="--")
    left.axhline(
        float(np.median(data["log_scale"][:, -1]) / np.log(10) + np.log10(EPS64)),
        color="0.5",
        linestyle=":",
        label="float64 rounding floor",
    )
    left.set_ylim(max(np.nanmin(y[np.isfinite(y)]), -40) - 1, np.nanmax(bound[np.isfinite(bound)]) + 1)
    left.set_xlim(max(np.nanmin(x[np.isfinite(x)]), -40) - 1, np.nanmax(x) + 1)
    plotting.label_axes(
        left,
        "log₁₀ ρ(X_{ℓ−1})",
        "log₁₀ ρ(X_ℓ)",
        legend=False,
        title=f"(a) pure attention: measured {float(data['exponent']):.2f} ± {float(data['exponent_se']):.2f}",
    )
    left.legend(loc="upper left", fontsize=6)
    L = config.depths[-1]
    names = (("W_Q", "-"), ("W_K", ":"), ("W_V", "--"))
    for prefix, label, color, depth in (
        ("pure_", "pure", plotting.PALETTE[3], config.pure_depth),
        (f"L{L}_unscaled_", "α = 1", plotting.PALETTE[1], L),
        (f"L{L}_scaled_", f"α = 1/√{L}", plotting.PALETTE[0], L),
    ):
        for name, ls in names:
            values = data[f"{prefix}log_grad_{name}"] / np.log(10)
            right.plot(
                np.arange(1, depth + 1), np.median(values, axis=0), color=color, linestyle=ls, label=f"{label}, {name}"
            )
    plotting.label_axes(
        right,
        "layer ℓ",
        "log₁₀ ‖∂L/∂W^ℓ‖_F (median)",
        legend=False,
        title="(b) query/key gradients vanish with the tokens",
    )
    right.legend(loc="lower left", fontsize=5.5, ncol=3)
    plotting.save_figure(fig, outdir, "collapse_and_gradients")
    return plotting.Figure(
        "collapse_and_gradients",
        (
            f"(a) Pure attention (T = {config.tokens}, d = {config.width}, float64): the residual from token uniformity "
            "ρ = max_i ‖x_i − x̄‖ after each layer against the one before, every sample; grey dots are each sample's "
            "bound (Dong et al. 2021, cubic), never beaten; the points fall along slope 3 (doubly exponential collapse) "
            "until they reach the rounding floor. (b) Gradient norms of a random linear readout with respect to the "
            "query, key and value weights of each layer: in pure attention the W_Q and W_K gradients fall with the "
            "residual, by many orders of magnitude, while W_V's stay O(1). An unscaled residual stack loses its deep "
            "layers' query/key gradients too, and faster than its token residual: the mean token x̄ grows like 2^(ℓ/2), "
            "so the score differences x̄ᵀA r_j grow with it and the softmax saturates (one-hot rows have no gradient; "
            "a reading of the medians, not a separate test); with α = 1/√L "
            "every gradient stays O(1) at every layer."
        ),
    )

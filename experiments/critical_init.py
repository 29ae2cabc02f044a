r"""It matters: training from the critical initialisation vs Equinox's default, deep tanh MLP and residual GELU net.

Two models built only from Equinox components, each a stack of `depth` identical blocks of
width n between an input `eqx.nn.Linear(64, n)` and a readout `eqx.nn.Linear(n, 10)` (both at
Equinox's own initialisation):

* ``tanh_mlp``: $h \mapsto \tanh(Wh + b)$;
* ``residual_gelu``: $h \mapsto h + W_2\,\mathrm{gelu}(W_1 h + b_1) + b_2$ (the exact, erf GELU).

Every block is built by a constructor ``make(key, scale)`` that multiplies Equinox's default
initial weights and biases, $W_{ij}, b_i \sim U(\pm 1/\sqrt{n})$, by a traced ``scale`` s: so s = 1
*is* Equinox's default ($σ_w^2 = s^2/3$, $σ_b^2 = s^2/(3n)$), and a grid of s is one compiled
program both for the measurement (`jaxgrad.adapters.serial_from_equinox` with ``hyper=``) and for
training (the scales are one vmapped axis). Per model, one point:

1. **The critical scale.** `jaxgrad.critical_point` finds the zero s* of the growth rate per block
   $r(s) = \tfrac12\ln E\|J_\ell u\|^2$ (the mean-square criterion; u the propagated unit tangent,
   averaged over blocks ℓ > `depth` // 4 and over initialisations) on the model's bracket, a sweep
   of `bracket_points` values and one refinement of the bracketing cell; r = 0 is χ₁ = 1, the
   order/chaos boundary (Schoenholz et al. 2017; Doshi, He & Gromov 2023 find it from the same
   partial Jacobians).
2. **The rates at the trained scales**, measured again on independent initialisations
   (`jaxgrad.sweep`, method "vector"), with mean field beside them: from $q_0 = 1$,
   $v_\ell = σ_w^2 q_{\ell-1} + σ_b^2$, $z_\ell \sim N(0, v_\ell)$, and
   $χ_\ell = σ_w^2 E[φ'(z_\ell)^2]$, $q_\ell = E[φ(z_\ell)^2]$ for the MLP;
   $χ_\ell = 1 + σ_w^4 E[\mathrm{gelu}'(z_\ell)^2]$, $q_\ell = q_{\ell-1} + σ_w^2 E[\mathrm{gelu}(z_\ell)^2]
   + σ_b^2$ for the residual block (its cross term $2u^\top W_2 D W_1 u$ has mean zero); the
   predicted rate is ½ ln of the mean of $χ_\ell$ over the same blocks (`mean_field_rate`).
3. **Training** on scikit-learn's 8×8 digits (a fixed split: `test_size` images held out, the
   rest for training) with `optax.adam` at one learning rate for every scale (Adam normalises
   each parameter's step, so a failure is not merely a badly sized step, unless the gradient is
   below Adam's ε, as it is at the MLP's default), `steps` minibatch steps of
   `batch_size`, `seeds` initialisations and data orders, at the scales $a\,k^j$ for j in
   `powers` (k = `factor`) and the default s = 1; the anchor a is s* where the rate has a zero
   in the bracket and the default otherwise. Test accuracy and the gradient norms of the first
   and last block are recorded every `record_every` steps.

What the quick scale shows (width 32, depth 50, 256 initialisations per rate, 3 seeds × 400
Adam steps at η = 10⁻⁴, seed 0; accuracy: median [min, max] over seeds, chance 0.1):

* tanh MLP: Equinox's default is deep in the ordered phase, r(1) = −0.565 ± 0.001 per block
  (mean field −0.564), ln‖J₅₀⋯J₁u‖ = −29: at initialisation the loss gradient of the first
  block is 2·10⁻¹³, of the last 0.04, and no seed learns anything (0.09 [0.09, 0.09]). The
  critical scale is s* = 2.325 (interval 2.274–2.375; σ_w² = 1.80), mean field's 2.320. From s*
  Adam reaches 0.55 [0.51, 0.63] in 400 steps, and both sides fail: s*/1.5 (r = −0.18, ordered)
  0.19 [0.17, 0.19], s*·1.5 (r = +0.14, chaotic; the first block's gradient ~500 times the last's)
  0.13 [0.12, 0.13], s*·1.5² (r = +0.30) 0.10.
* residual GELU net: the rate has no zero for s > 0, as mean field says ($χ_\ell > 1$), and
  critical_point reports none on [0.5, 2.5] (r from +0.0012 to +0.58); r → 0 only as s → 0,
  where the block becomes the identity. Equinox's default is already near that limit:
  r(1) = +0.026 per block (mean field +0.026), ln‖J₅₀⋯J₁u‖ = 1.2, and it trains to
  0.95 [0.94, 0.95], as s = 1/1.5 does (0.94 [0.94, 0.95]). The growing side does not:
  s = 1.5 (r = 0.13) 0.55 [0.55, 0.57], s = 2.25 (r = 0.44, ln‖J₅₀⋯J₁u‖ = 21, initial test loss
  ~10⁹) 0.17 [0.14, 0.19].

So for the plain tanh MLP the framework default does not train at depth 50 and the measured
critical initialisation does; for the residual net the default is already (near-)critical, and
the model where it is not is the MLP. At the MLP's default the first block's gradient is far
below Adam's ε = 10⁻⁸, so Adam cannot rescale it into a step. Not stored here (a probe, 2
seeds, 600 steps): at width 64 and depth 64 the picture is the same, s* ≈ 2.2 (mean field
2.18) trains to 0.9 test accuracy while the default and s*·1.5 stay at chance and s*/1.5 at 0.2.

Run: ``jaxgrad run critical_init`` (quick: the sizes above, 5 + 4 scales; 55 s in the runner on
2 CPU cores (manifest.json), about half of it compiling: two critical_point sweeps with their
self-checks, two training programs);
``--scale full``: width 128, depth 100, 1024 initialisations, 17 bracket points, 8 seeds ×
3000 steps (an accelerator).

References: D. Doshi, T. He and A. Gromov, "Critical initialization of wide and deep neural
networks through partial Jacobians: general theory and applications", NeurIPS 2023;
S. S. Schoenholz, J. Gilmer, S. Ganguli and J. Sohl-Dickstein, "Deep information propagation",
ICLR 2017; P. Kidger and C. Garcia, "Equinox: neural networks in JAX via callable PyTrees and
filtered transformations", 2021.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib.ticker
import numpy as np
import optax

import jaxgrad
from jaxgrad import plotting, quadrature, training
from jaxgrad.critical import rates_from_log_gains
from jaxgrad.stats import Comparison
from jaxgrad.training import _all_finite, _where  # the masked update of jaxgrad.train
from experiments._common import engine_seed, require_integers
from experiments.runner import compute

NAME = "critical_init"
SECTION = "§3, §5"
TITLE = (
    "It matters: training from the critical initialisation found by jaxgrad.critical_point vs Equinox's default, "
    "deep tanh MLP and residual GELU net"
)

MODELS = ("tanh_mlp", "residual_gelu")
LABELS = {"tanh_mlp": "tanh MLP", "residual_gelu": "residual GELU net"}
N_DIGITS, N_PIXELS, N_CLASSES = 1797, 64, 10
SPLIT_SEED = 0  # the train/test split is fixed: the same for every seed and point


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the measurement and of the training; the defaults are the quick scale."""

    width: int = 32
    depth: int = 50
    samples: int = 256
    bracket_points: int = 9
    tanh_mlp_bracket: tuple[float, ...] = (1.0, 4.0)
    residual_gelu_bracket: tuple[float, ...] = (0.5, 2.5)
    interval_se: float = 4.0
    factor: float = 1.5
    powers: tuple[int, ...] = (-1, 0, 1, 2)
    steps: int = 400
    record_every: int = 40
    batch_size: int = 64
    learning_rate: float = 1e-4
    seeds: int = 3
    test_size: int = 397

    def __post_init__(self):
        require_integers(self, ("width", "samples", "bracket_points", "steps"))
        require_integers(self, ("record_every", "batch_size", "seeds"), minimum=1)
        require_integers(self, ("depth",), minimum=4)
        for name in ("tanh_mlp_bracket", "residual_gelu_bracket"):
            b = getattr(self, name)
            if len(b) != 2 or not all(isinstance(v, (int, float)) and 0 < v < math.inf for v in b) or b[0] >= b[1]:
                raise ValueError(f"`{name}` must be two increasing positive finite scales (lo, hi), got {name}={b!r}")
        if not (math.isfinite(self.interval_se) and self.interval_se > 0):
            raise ValueError(f"`interval_se` must be positive and finite, got interval_se={self.interval_se!r}")
        if not (math.isfinite(self.factor) and self.factor > 1):
            raise ValueError(f"`factor` must be a finite number > 1, got factor={self.factor!r}")
        p = self.powers
        if (
            not p
            or 0 not in p
            or list(p) != sorted(set(p))
            or not all(isinstance(j, int) and not isinstance(j, bool) and -4 <= j <= 4 for j in p)
        ):
            raise ValueError(
                f"`powers` must be increasing integers in [-4, 4] that include 0 (the anchor), got powers={p!r}"
            )
        if self.steps % self.record_every:
            raise ValueError(f"`record_every` must divide steps={self.steps}, got record_every={self.record_every}")
        if not 10 <= self.test_size <= N_DIGITS - 100:
            raise ValueError(
                f"`test_size` must be an integer in [10, {N_DIGITS - 100}] (the digits have {N_DIGITS} "
                f"images), got test_size={self.test_size!r}"
            )
        if self.batch_size > N_DIGITS - self.test_size:
            raise ValueError(
                f"`batch_size` must be at most the training set, {N_DIGITS - self.test_size} images, "
                f"got batch_size={self.batch_size}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"`learning_rate` must be positive and finite, got learning_rate={self.learning_rate!r}")

    @property
    def discard(self) -> int:
        """Blocks left out of the rate as the transient: ℓ ≤ depth // 4."""
        return self.depth // 4

    def bracket(self, model: str) -> tuple[float, float]:
        return tuple(getattr(self, f"{model}_bracket"))

    @classmethod
    def quick(cls) -> Config:
        return cls()

    @classmethod
    def full(cls) -> Config:
        return cls(
            width=128, depth=100, samples=1024, bracket_points=17, steps=3000, record_every=100, seeds=8, batch_size=128
        )


# --------------------------------------------------------------------------- the models


@functools.cache
def blocks(width: int) -> dict:
    """{model: make(key, scale) -> eqx.Module}: Equinox's default-initialised block with its weights times `scale`."""
    import equinox as eqx

    def scaled(linear, scale):
        return eqx.tree_at(lambda m: (m.weight, m.bias), linear, (scale * linear.weight, scale * linear.bias))

    class TanhBlock(eqx.Module):
        """tanh(W h + b), W and b Equinox's U(±1/√n) times `scale`."""

        linear: eqx.nn.Linear

        def __init__(self, key, scale):
            self.linear = scaled(eqx.nn.Linear(width, width, key=key), scale)

        def __call__(self, h):
            return jnp.tanh(self.linear(h))

    class ResidualBlock(eqx.Module):
        """h + W₂ gelu(W₁ h + b₁) + b₂, both Linears Equinox's default times `scale`."""

        inner: eqx.nn.Linear
        outer: eqx.nn.Linear

        def __init__(self, key, scale):
            k_inner, k_outer = jax.random.split(key)
            self.inner = scaled(eqx.nn.Linear(width, width, key=k_inner), scale)
            self.outer = scaled(eqx.nn.Linear(width, width, key=k_outer), scale)

        def __call__(self, h):
            return h + self.outer(jax.nn.gelu(self.inner(h), approximate=False))

    def tanh_mlp(key, scale):
        return TanhBlock(key, scale)

    def residual_gelu(key, scale):
        return ResidualBlock(key, scale)

    return {"tanh_mlp": tanh_mlp, "residual_gelu": residual_gelu}


def network(model: str, width: int, depth: int) -> jaxgrad.Network:
    """The body as a jaxgrad network whose blocks carry the traced hyperparameter ``scale`` (= 1)."""
    return jaxgrad.adapters.serial_from_equinox([blocks(width)[model]] * depth, hyper={"scale": 1.0})


def classifier(model: str, width: int, depth: int, key, scale):
    """(embed, stacked blocks, readout): Equinox's default input and readout Linears around `depth` blocks."""
    import equinox as eqx

    k_embed, k_body, k_readout = jax.random.split(key, 3)
    make = blocks(width)[model]
    body = eqx.filter_vmap(lambda k: make(k, scale))(jax.random.split(k_body, depth))
    return (eqx.nn.Linear(N_PIXELS, width, key=k_embed), body, eqx.nn.Linear(width, N_CLASSES, key=k_readout))


def logits(model, x):
    """Logits of one image x (64,): the blocks run as one `lax.scan` over their stacked parameters."""
    import equinox as eqx

    embed, body, readout = model
    params, static = eqx.partition(body, eqx.is_array)

    def block(h, p):
        return eqx.combine(p, static)(h), None

    h, _ = jax.lax.scan(block, embed(x), params)
    return readout(h)


# --------------------------------------------------------------------------- training


@functools.lru_cache(maxsize=8)
def _program(model: str, width: int, depth: int, steps: int, every: int, batch_size: int, learning_rate: float):
    """jit(vmap over scales (vmap over seed keys (one run))): one compiled program per structure."""
    import equinox as eqx

    optimizer = optax.adam(learning_rate)
    records = steps // every

    def one(key, scale, x, y, test_x, test_y):
        init_key, data_key = jax.random.split(key)
        params, static = eqx.partition(classifier(model, width, depth, init_key, scale), eqx.is_inexact_array)

        def loss(params, xb, yb):
            z = jax.vmap(logits, in_axes=(None, 0))(eqx.combine(params, static), xb)
            return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, yb)), z

        def record(params, alive):
            (value, z), grads = jax.value_and_grad(loss, has_aux=True)(params, test_x, test_y)
            per_block = sum(jnp.sum(g.reshape(depth, -1) ** 2, axis=1) for g in jax.tree.leaves(grads[1]))
            norms = jnp.sqrt(per_block[jnp.array([0, depth - 1])])
            accuracy = jnp.mean(jnp.argmax(z, -1) == test_y).astype(value.dtype)
            nan = jnp.asarray(jnp.nan, value.dtype)
            return tuple(jnp.where(alive, v, nan) for v in (accuracy, value, norms))

        def step(carry, t):
            params, state, alive, diverged_at = carry
            idx = jax.random.randint(jax.random.fold_in(data_key, t), (batch_size,), 0, x.shape[0])
            (value, _), grads = jax.value_and_grad(loss, has_aux=True)(params, x[idx], y[idx])
            updates, new_state = optimizer.update(grads, state, params)
            new_params = optax.apply_updates(params, updates)
            finite = jnp.isfinite(value) & _all_finite(grads) & _all_finite(new_params)
            keep = alive & finite
            diverged_at = jnp.where(alive & ~finite, t, diverged_at)
            return (_where(keep, new_params, params), _where(keep, new_state, state), keep, diverged_at), None

        def steps_from(carry, r):
            return jax.lax.scan(step, carry, r * every + jnp.arange(every))[0]

        def chunk(carry, r):  # record, then `every` steps (none after the last record: one graph of each)
            recorded = record(carry[0], carry[2])
            return jax.lax.cond(r < records, steps_from, lambda carry, r: carry, carry, r), recorded

        carry = (params, optimizer.init(params), jnp.array(True), jnp.array(-1, jnp.int32))
        carry, (accuracy, value, norms) = jax.lax.scan(chunk, carry, jnp.arange(records + 1))
        return accuracy, value, norms, carry[3]

    over_seeds = jax.vmap(one, in_axes=(0, None, None, None, None, None))
    return jax.jit(jax.vmap(over_seeds, in_axes=(None, 0, None, None, None, None)))


@functools.cache
def digits_split(test_size: int):
    """(train x, train y, test x, test y): the standardised digits, a fixed permutation, `test_size` held out."""
    data = training.load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(N_DIGITS)
    x, y = np.asarray(data.x)[order], np.asarray(data.y)[order]
    return (
        jnp.asarray(x[test_size:]),
        jnp.asarray(y[test_size:]),
        jnp.asarray(x[:test_size]),
        jnp.asarray(y[:test_size]),
    )


def train(model: str, config: Config, key, scales, seeds: int | None = None) -> dict[str, np.ndarray]:
    r"""Train the classifier at every scale in `scales` × seeds 0..`seeds`−1, as one compiled call.

    Seed i's run (initialisation and minibatch order) uses ``fold_in(key, i)`` alone, so its
    result does not depend on how many seeds or scales run beside it.

    Returns:
      ``accuracy``, ``loss`` (test set) of shape (scales, seeds, records), records at steps
      0, `record_every`, …, `steps`; ``gradient_norms`` (scales, seeds, records, 2):
      $\|∂L/∂θ_1\|$ and $\|∂L/∂θ_L\|$ of the first and last block on the test set (NaN after a
      divergence); ``diverged_at`` (scales, seeds): the first step with a non-finite loss,
      gradient or update (−1: none); ``record_steps``.
    """
    seeds = config.seeds if seeds is None else seeds
    program = _program(
        model,
        config.width,
        config.depth,
        config.steps,
        config.record_every,
        config.batch_size,
        float(config.learning_rate),
    )
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(seeds))
    scales = jnp.asarray(scales, jnp.float32)
    accuracy, loss, norms, diverged_at = program(keys, scales, *digits_split(config.test_size))
    return {
        "accuracy": np.asarray(accuracy),
        "loss": np.asarray(loss),
        "gradient_norms": np.asarray(norms),
        "diverged_at": np.asarray(diverged_at),
        "record_steps": np.arange(0, config.steps + 1, config.record_every),
    }


# --------------------------------------------------------------------------- measurement and mean field


def mean_field_rate(model: str, scale, width: int, depth: int, discard: int, q0: float = 1.0) -> np.ndarray:
    r"""½ ln of the mean-field $χ_\ell$ averaged over blocks ℓ ∈ (discard, depth], from inputs of variance q0.

    σ_w² = s²/3 and σ_b² = s²/(3n) (Equinox's U(±1/√n) times s); see the module docstring for the recursions.
    """
    s = np.asarray(scale, np.float64)
    sw2, sb2 = s**2 / 3, s**2 / (3 * width)
    phi = jnp.tanh if model == "tanh_mlp" else functools.partial(jax.nn.gelu, approximate=False)
    dphi = jax.vmap(jax.grad(phi))

    def expect(f, v):
        return np.asarray(quadrature.gaussian_expectation(lambda u: f(u.reshape(-1)).reshape(u.shape), v), np.float64)

    q, chis = np.full_like(s, q0), []
    for _ in range(depth):
        v = sw2 * q + sb2
        mean_dphi2, mean_phi2 = expect(lambda u: dphi(u) ** 2, v), expect(lambda u: phi(u) ** 2, v)
        if model == "tanh_mlp":
            chis.append(sw2 * mean_dphi2)
            q = mean_phi2
        else:
            chis.append(1 + sw2 * sw2 * mean_dphi2)
            q = q + sw2 * mean_phi2 + sb2
    return 0.5 * np.log(np.mean(chis[discard:], axis=0))


def mean_field_critical_scale(model: str, config: Config, rounds: int = 3, points: int = 17) -> float:
    """The zero of `mean_field_rate` on the model's bracket (NaN: no sign change there).

    Grid refinement, vectorised over the scales: `rounds` grids of `points` values, each inside the previous
    grid's bracketing cell, then the secant of the last cell (its error is far below the measured interval's).
    """
    lo, hi = config.bracket(model)
    for _ in range(rounds):
        grid = np.linspace(lo, hi, points)
        rate = mean_field_rate(model, grid, config.width, config.depth, config.discard)
        cells = np.flatnonzero((rate[:-1] < 0) & (rate[1:] >= 0))
        if not cells.size:
            return math.nan
        k = int(cells[0])
        lo, hi = grid[k], grid[k + 1]
    return float(lo - rate[k] * (hi - lo) / (rate[k + 1] - rate[k]))


# --------------------------------------------------------------------------- protocol


def points(config: Config) -> list[dict]:
    return [{"model": model} for model in MODELS]


def trained_scales(config: Config, critical: float, found: bool) -> np.ndarray:
    """The anchor a (s* if found, else the default 1) times factor^j for j in powers, and the default 1."""
    anchor = critical if found else 1.0
    scales = {round(anchor * config.factor**j, 6) for j in config.powers} | {1.0}
    return np.array(sorted(scales))


def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
    model = point["model"]
    k_critical, k_rates, k_train = (jax.random.fold_in(key, i) for i in range(3))
    net = network(model, config.width, config.depth)
    start = time.perf_counter()
    res = jaxgrad.critical_point(
        net,
        hyper="scale",
        bracket=config.bracket(model),
        samples=config.samples,
        seed=engine_seed(k_critical),
        criterion="mean_square",
        points=config.bracket_points,
        discard=config.discard,
        interval_se=config.interval_se,
    )
    found = bool(res.found)
    critical_seconds = time.perf_counter() - start
    scales = trained_scales(config, float(res.value), found)
    start = time.perf_counter()
    r = jaxgrad.sweep(
        net,
        config.samples,
        engine_seed(k_rates),
        grid={"scale": [float(s) for s in scales]},
        method="vector",
        fields=["log_forward_gain"],
    )
    gain = np.asarray(r.log_forward_gain, np.float64)  # (scales, samples, depth)
    rates, rate_se, _ = rates_from_log_gains(gain, criterion="mean_square", discard=config.discard)
    rate_seconds = time.perf_counter() - start
    start = time.perf_counter()
    history = train(model, config, k_train, scales)
    train_seconds = time.perf_counter() - start
    return {
        "found": np.asarray(found),
        "critical": np.asarray(float(res.value)),
        "critical_se": np.asarray(res.se),
        "interval": np.asarray(res.interval, np.float64),
        "message": np.asarray(str(res.message)),
        "bracket_values": np.asarray(res.values, np.float64),
        "bracket_rates": np.asarray(res.rates, np.float64),
        "bracket_rate_se": np.asarray(res.rate_se, np.float64),
        "scales": scales,
        "rates": rates,
        "rate_se": rate_se,
        "mean_log_gain": gain.mean(axis=1),
        "nonfinite": np.asarray(int(r.nonfinite["log_forward_gain"])),
        **history,
        "wall_seconds": np.array([critical_seconds, rate_seconds, train_seconds]),
    }


def _role(scale: float, anchor: float, found: bool, config: Config) -> str:
    """'default', 's*', 's*/k', 's*·k²' … (or '1/k', 'k', 'k²' when the default is the anchor) for a trained scale."""
    names = []
    if abs(scale - 1.0) < 1e-9:
        names.append("default")
    for j in config.powers:
        if abs(scale - round(anchor * config.factor**j, 6)) < 1e-9 and not (j == 0 and not found):
            power = ("/k" if j < 0 else "k") + _SUPERSCRIPT.get(abs(j), "")
            base = "s*" if found else ("" if j > 0 else "1")
            names.append(base if j == 0 else base + ("·" if found and j > 0 else "") + power)
    return " = ".join(names)


_SUPERSCRIPT = {2: "²", 3: "³", 4: "⁴"}  # k^j for |j| ≥ 2


def summarize(config: Config, results):
    rows, data = [], {"models": np.array(MODELS)}
    for point, a in results:
        model = point["model"]
        found, critical = bool(a["found"]), float(a["critical"])
        anchor = critical if found else 1.0
        scales = a["scales"]
        lo, hi = config.bracket(model)
        fine = np.geomspace(min(lo, scales[0]), max(hi, scales[-1]), 61)
        theory_rates = mean_field_rate(model, scales, config.width, config.depth, config.discard)
        for key in (
            "found",
            "critical",
            "critical_se",
            "interval",
            "message",
            "bracket_values",
            "bracket_rates",
            "bracket_rate_se",
            "scales",
            "rates",
            "rate_se",
            "mean_log_gain",
            "accuracy",
            "loss",
            "gradient_norms",
            "diverged_at",
            "record_steps",
        ):
            data[f"{model}_{key}"] = a[key]
        data[f"{model}_theory_rates"] = theory_rates
        data[f"{model}_theory_scale"] = fine
        data[f"{model}_theory_curve"] = mean_field_rate(model, fine, config.width, config.depth, config.discard)
        data[f"{model}_theory_critical"] = np.asarray(mean_field_critical_scale(model, config))
        data[f"{model}_anchor"] = np.asarray(anchor)
        accuracy = np.nan_to_num(a["accuracy"][..., -1], nan=0.0)  # a diverged run counts as untrained
        for j, s in enumerate(scales):
            rows.append(
                dict(
                    model=model,
                    scale=float(s),
                    role=_role(float(s), anchor, found, config),
                    sigma_w2=float(s) ** 2 / 3,
                    critical_found=found,
                    critical_scale=critical,
                    critical_lo=float(a["interval"][0]),
                    critical_hi=float(a["interval"][1]),
                    theory_critical_scale=float(data[f"{model}_theory_critical"]),
                    rate=float(a["rates"][j]),
                    rate_se=float(a["rate_se"][j]),
                    theory_rate=float(theory_rates[j]),
                    log_gain_at_depth=float(a["mean_log_gain"][j, -1]),
                    accuracy_median=float(np.median(accuracy[j])),
                    accuracy_min=float(accuracy[j].min()),
                    accuracy_max=float(accuracy[j].max()),
                    loss_median=float(np.nanmedian(a["loss"][j, :, -1]))
                    if np.isfinite(a["loss"][j, :, -1]).any()
                    else math.nan,
                    first_block_gradient_norm_at_init=float(np.median(a["gradient_norms"][j, :, 0, 0])),
                    last_block_gradient_norm_at_init=float(np.median(a["gradient_norms"][j, :, 0, 1])),
                    diverged=int((a["diverged_at"][j] >= 0).sum()),
                    seeds=config.seeds,
                    steps=config.steps,
                    width=config.width,
                    depth=config.depth,
                    critical_seconds=float(a["wall_seconds"][0]),
                    rate_seconds=float(a["wall_seconds"][1]),
                    train_seconds=float(a["wall_seconds"][2]),
                )
            )
    return rows, data


def _index(data, model, scale) -> int:
    return int(np.argmin(np.abs(data[f"{model}_scales"] - scale)))


def _final_accuracy(data, model, scale) -> np.ndarray:
    return np.nan_to_num(data[f"{model}_accuracy"][_index(data, model, scale), :, -1], nan=0.0)


def _slope_at(values, rates, x) -> float:
    """d rate/ds between the two bracket values around x (the secant)."""
    k = int(np.clip(np.searchsorted(values, x) - 1, 0, len(values) - 2))
    return float((rates[k + 1] - rates[k]) / (values[k + 1] - values[k]))


def _within_range(quantity: str, measured: float, low: float, high: float) -> Comparison:
    """`Comparison` that passes iff low ≤ measured ≤ high (centre (low + high)/2, tolerance half the width)."""
    return Comparison(quantity, measured, 0.5 * (low + high), 0.5 * (high - low))


def comparisons(data, config: Config) -> list[Comparison]:
    out = []
    n_test = config.test_size
    margin = 2 / math.sqrt(n_test)  # 4 binomial SE of an accuracy near ½ on the test set: 4·√(¼/n)
    for model in MODELS:
        label = LABELS[model]
        found = bool(data[f"{model}_found"])
        d = _index(data, model, 1.0)
        rate, se = float(data[f"{model}_rates"][d]), float(data[f"{model}_rate_se"][d])
        allowance = 0.5 / config.width
        out.append(
            Comparison(
                f"{label}: growth rate per block at Equinox's default (s = 1), ½ ln E‖J_ℓu‖² over blocks > "
                f"{config.discard}, vs mean field ½ ln mean χ_ℓ (tolerance 4 SE + 1/(2n) = {allowance:.3g}, the "
                "finite-width allowance of phase_diagram)",
                rate,
                float(data[f"{model}_theory_rates"][d]),
                4 * se + allowance,
            )
        )
        if not found:
            continue
        critical = float(data[f"{model}_critical"])
        lo, hi = (float(v) for v in data[f"{model}_interval"])
        slope = _slope_at(data[f"{model}_bracket_values"], data[f"{model}_bracket_rates"], critical)
        theory = float(data[f"{model}_theory_critical"])
        if math.isfinite(theory):
            out.append(
                Comparison(
                    f"{label}: critical scale s* from jaxgrad.critical_point vs mean field's zero of ½ ln mean χ_ℓ "
                    f"(σ_w² = s²/3, σ_b² = s²/(3n)); tolerance: half its {config.interval_se:g}-SE interval "
                    f"[{lo:.3g}, {hi:.3g}] + the finite-width allowance 1/(2n) over the measured slope {slope:.3g} per "
                    "unit s",
                    critical,
                    theory,
                    0.5 * (hi - lo) + (0.5 / config.width) / abs(slope),
                )
            )
        c = _index(data, model, critical)
        rate, se = float(data[f"{model}_rates"][c]), float(data[f"{model}_rate_se"][c])
        out.append(
            Comparison(
                f"{label}: growth rate per block at s* = {critical:.3g}, remeasured on independent initialisations, vs 0 "
                f"(tolerance 4 SE + |slope| × half the interval of s*, {abs(slope):.3g} × {0.5 * (hi - lo):.3g})",
                rate,
                0.0,
                4 * se + abs(slope) * 0.5 * (hi - lo),
            )
        )
        at_critical = _final_accuracy(data, model, critical)
        others = [("Equinox's default", 1.0)] + [
            (name, critical * config.factor**j) for name, j in (("s*/k", -1), ("s*·k", 1)) if j in config.powers
        ]
        for name, scale in others:
            if abs(scale - critical) < 1e-9:
                continue
            gap = float(at_critical.min() - _final_accuracy(data, model, scale).max())
            out.append(
                _within_range(
                    f"{label}: test accuracy after {config.steps} steps, worst seed from s* minus best seed from {name} "
                    f"(s = {scale:.3g}), over {config.seeds} seeds; passes iff it lies in [{margin:.3g}, 1], the margin "
                    f"being 4 binomial SE of an accuracy near ½ on the {n_test} test images, 2/√n",
                    gap,
                    margin,
                    1.0,
                )
            )
    for model in MODELS:
        if bool(data[f"{model}_found"]):
            continue
        label = LABELS[model]
        medians = np.median(np.nan_to_num(data[f"{model}_accuracy"][..., -1], nan=0.0), axis=1)
        best = float(medians.max())
        default = float(medians[_index(data, model, 1.0)])
        tolerance = 4 * math.sqrt(best * (1 - best) / n_test) + 1 / n_test
        out.append(
            Comparison(
                f"{label} (no zero of the rate in the bracket: the default is the anchor): median test accuracy from "
                f"Equinox's default vs the best median over the trained scales {np.round(data[model + '_scales'], 3)} "
                f"(tolerance 4 binomial SE at the best accuracy on {n_test} test images, + one image)",
                default,
                best,
                tolerance,
            )
        )
    return out


def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays `plot` reads."""
    return compute(sys.modules[__name__], config or Config.quick(), seed)


# --------------------------------------------------------------------------- figure

SCALE_COLORS = tuple(
    plotting.OKABE_ITO[c] for c in ("blue", "sky_blue", "green", "orange", "vermillion", "purple", "black", "yellow")
)


def _scale_label(data, model, j, config) -> str:
    s = float(data[f"{model}_scales"][j])
    found = bool(data[f"{model}_found"])
    role = _role(s, float(data[f"{model}_anchor"]), found, config)
    return f"s = {s:.3g} ({role})" if role else f"s = {s:.3g}"


def plot(data, config: Config, outdir) -> list[plotting.Figure]:
    fig, axes = plotting.subplots(len(MODELS), 3, width=3.9, height=3.1)
    for row, model in zip(axes, MODELS):
        _plot_rates(row[0], data, model, config)
        _plot_gains(row[1], data, model, config)
        _plot_training(row[2], data, model, config)
    plotting.save_figure(fig, outdir, "critical_init")
    parts = []
    for model in MODELS:
        if bool(data[f"{model}_found"]):
            lo, hi = data[f"{model}_interval"]
            parts.append(f"{LABELS[model]}: s* = {float(data[model + '_critical']):.3g} [{lo:.3g}, {hi:.3g}]")
        else:
            parts.append(f"{LABELS[model]}: no zero of the rate in the bracket, the default is the anchor")
    return [
        plotting.Figure(
            "critical_init",
            (
                f"Critical initialisation vs Equinox's default, width {config.width}, depth {config.depth}, every block's "
                "default weights and biases times a scale s (s = 1 is Equinox's own initialisation). Left: growth rate per "
                "block ½ ln E‖J_ℓu‖² against s, measured by jaxgrad.critical_point over the bracket (squares, ± 2 SE), "
                "remeasured at the trained scales (markers, ± 2 SE), and mean field (black line); the found critical scale "
                "s* with its interval (shaded), Equinox's default (dashed). Middle: mean ln‖J_ℓ⋯J₁u‖ against depth at the "
                "trained scales (the gradient's growth, in nats). Right: test accuracy on the held-out digits against Adam "
                f"steps (η = {config.learning_rate:g}, batch {config.batch_size}), median over {config.seeds} seeds with "
                f"the min–max band, colours as in the middle panel; chance is 0.1. " + "; ".join(parts) + "."
            ),
        )
    ]


def _scale_lines(ax, data, model):
    ax.axvline(1.0, color=plotting.THEORY_COLOR, linestyle="--", linewidth=1.0, label="Equinox default, s = 1")
    if bool(data[f"{model}_found"]):
        lo, hi = data[f"{model}_interval"]
        critical = float(data[f"{model}_critical"])
        ax.axvspan(lo, hi, color=plotting.OKABE_ITO["green"], alpha=0.2, linewidth=0)
        ax.axvline(
            critical,
            color=plotting.OKABE_ITO["green"],
            linewidth=1.2,
            label=f"s* = {critical:.3g} [{lo:.3g}, {hi:.3g}]",
        )


def _plot_rates(ax, data, model, config):
    values, rates, se = (data[f"{model}_bracket_{k}"] for k in ("values", "rates", "rate_se"))
    plotting.theory_line(
        ax,
        data[f"{model}_theory_scale"],
        data[f"{model}_theory_curve"],
        linewidth=1.0,
        label="mean field ½ ln mean χ_ℓ",
    )
    ax.errorbar(
        values,
        rates,
        yerr=2 * se,
        marker="s",
        markersize=3.5,
        markerfacecolor="none",
        linestyle="none",
        color=plotting.OKABE_ITO["purple"],
        label="critical_point sweep (± 2 SE)",
        zorder=3,
    )
    for j, s in enumerate(data[f"{model}_scales"]):
        ax.errorbar(
            [s],
            [data[f"{model}_rates"][j]],
            yerr=[2 * data[f"{model}_rate_se"][j]],
            marker="o",
            color=SCALE_COLORS[j % len(SCALE_COLORS)],
            linestyle="none",
            markersize=5.5,
            zorder=4,
            label="trained scales, remeasured" if j == 0 else None,
        )
    ax.axhline(0.0, color="0.5", linewidth=0.6)
    _scale_lines(ax, data, model)
    plotting.label_axes(
        ax,
        "scale s of Equinox's default init (log scale)",
        "growth rate per block (nats)",
        title=f"({'a' if model == MODELS[0] else 'd'}) {LABELS[model]}: rate vs scale",
        xlog=True,
        legend=False,
    )
    scales = data[f"{model}_theory_scale"]
    ticks = [t for t in (0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16) if scales[0] <= t <= scales[-1]]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.legend(fontsize=6.5, loc="upper left")


def _plot_gains(ax, data, model, config):
    depth = np.arange(1, config.depth + 1)
    for j in range(len(data[f"{model}_scales"])):
        ax.plot(
            depth,
            data[f"{model}_mean_log_gain"][j],
            color=SCALE_COLORS[j % len(SCALE_COLORS)],
            label=_scale_label(data, model, j, config),
        )
    ax.axhline(0.0, color="0.5", linewidth=0.6)
    ax.axvline(config.discard + 0.5, color="0.6", linestyle=":", linewidth=0.9)
    plotting.label_axes(
        ax,
        "block ℓ",
        r"mean $\ln\|J_\ell\cdots J_1 u\|$ (nats)",
        title=f"({'b' if model == MODELS[0] else 'e'}) gain against depth",
        legend=False,
    )
    ax.legend(fontsize=6.5, loc="lower left" if model == MODELS[0] else "upper left")


def _plot_training(ax, data, model, config):
    steps = data[f"{model}_record_steps"]
    accuracy = np.nan_to_num(data[f"{model}_accuracy"], nan=0.0)
    for j in range(len(data[f"{model}_scales"])):
        color = SCALE_COLORS[j % len(SCALE_COLORS)]
        plotting.measured_band(ax, steps, accuracy[j].min(0), accuracy[j].max(0), color=color, alpha=0.2)
        ax.plot(steps, np.median(accuracy[j], 0), color=color)
    ax.axhline(0.1, color="0.5", linestyle=":", linewidth=0.9)
    ax.text(steps[-1], 0.11, "chance", ha="right", va="bottom", fontsize=7, color="0.4")
    ax.set_ylim(0, 1)
    panel, middle = ("c", "b") if model == MODELS[0] else ("f", "e")
    plotting.label_axes(
        ax,
        "Adam step",
        "test accuracy (median, min–max band)",
        legend=False,
        title=f"({panel}) training, {config.seeds} seeds (colours as in {middle})",
    )

r"""Pure training loops on optax, vmapped over seeds and hyperparameters in one compiled program.

A classifier is a `jaxgrad.Network` body (``net.init``/``net.apply``; params a tuple of
`DenseParams(W, b)` per layer) followed by a linear readout $f(x) = W_o h^{(L)}(x) + b_o$
to the classes, trained on softmax cross-entropy
$L = -\frac1N\sum_i \ln\mathrm{softmax}(f(x_i))_{y_i}$ or the squared error
$L = \frac1{2N}\sum_i \|f(x_i) - e_{y_i}\|^2$ with any `optax.GradientTransformation`.

`train` runs `steps` updates as a `lax.scan` (layers of equal shape are stacked and
scanned too, so depth does not grow the program), vmapped over a grid of learning rates
and initial weight/bias scales and over seeds: one compilation per (network,
optimizer, sizes), none for a new seed or hyperparameter value. Every `record_every`
steps it records, on the evaluation set, the loss, the accuracy, the per-layer
gradient norms $\|∂L/∂W_\ell\|_F$ (the seed's vanishing/exploding gradients, during
training) and optionally $λ_{\max}(∇^2 L)$ (`jaxgrad.curvature`). A member whose loss,
gradient or parameters become non-finite stops updating; the step is recorded in
``diverged_at`` and its later records are NaN, while the others carry on.

Data: `load_digits` is scikit-learn's 8×8 digits (1,797 images, shipped inside the
package, nothing downloaded; ``pip install jaxgrad[train]``).

References:
  S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, "Deep information
  propagation", ICLR 2017. J. Cohen et al., "Gradient descent on neural networks
  typically occurs at the edge of stability", ICLR 2021.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt
import optax
from jax.typing import ArrayLike

from jaxgrad.curvature import top_hessian_eigenvalue
from jaxgrad.layers import HIGHEST, DenseParams, Network, as_key

__all__ = ["Dataset", "History", "classifier_apply", "classifier_loss", "init_classifier", "load_digits", "train"]

Array = jax.Array
ClassifierParams = tuple[tuple[DenseParams, ...], DenseParams]  # (body, readout)
LOSSES = ("cross_entropy", "mse")


class Dataset(NamedTuple):
    """Inputs ``x`` (N, features) float32 and integer labels ``y`` (N,)."""

    x: Array
    y: Array


def load_digits(n: int | None = None) -> Dataset:
    r"""scikit-learn's 8×8 handwritten digits: 1,797 images, 64 pixels, 10 classes.

    Each pixel is standardised over the whole set, $x \mapsto (x - \bar x)/s$ (pixels
    that are constant, e.g. always 0, become 0), so $\|x\|^2/64 \approx 0.95$: an input
    of the unit scale mean-field theory assumes. ``n`` keeps the first n images.
    Needs scikit-learn (``pip install jaxgrad[train]``); the data ship with it.
    """
    from sklearn.datasets import load_digits as _load

    data = _load()
    x = data.data.astype(np.float64)
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(x):
            raise ValueError(f"`n` must be an integer in [1, {len(x)}], got n={n!r}")
        x, data.target = x[:n], data.target[:n]
    return Dataset(jnp.asarray(x, jnp.float32), jnp.asarray(data.target, jnp.int32))


class History(NamedTuple):
    r"""What `train` records; leading axes (grid, seeds), then records at ``record_steps``.

    ``loss``, ``accuracy``: on the evaluation set; ``gradient_norms``: $\|∂L/∂W_\ell\|_F$
    for ℓ = 1..L and the readout (last column); ``sharpness``: $λ_{\max}(∇^2L)$ (NaN if
    not tracked); ``step_loss``: the training (mini)batch loss before each update;
    ``diverged_at``: the first step with a non-finite loss, gradient or update (−1:
    never); ``params``: the final (body, readout) parameters."""

    record_steps: np.ndarray
    loss: Array
    accuracy: Array
    gradient_norms: Array
    sharpness: Array
    step_loss: Array
    diverged_at: Array
    params: Any


# --------------------------------------------------------------------------- the model


_DENSE_ONLY = "`init_classifier` scales DenseParams bodies only (build the network with jaxgrad.mlp)"


def init_classifier(
    net: Network,
    key: Array | np.ndarray,
    n_classes: int = 10,
    *,
    weight_scale: float | Array = 1.0,
    bias_scale: float | Array = 1.0,
) -> ClassifierParams:
    r"""(body params, readout) with the body's W and b multiplied by the scales and the
    readout $W_o \sim N(0, 1/n_L)$, $b_o = 0$. Build ``net`` with σ_w = σ_b = 1 and pass
    σ_w, σ_b as the scales to make them traced hyperparameters (no recompilation)."""
    key = as_key(key)
    body_key, readout_key = jax.random.split(key)
    body = net.init(body_key)
    if not all(isinstance(p, DenseParams) for p in body):
        raise ValueError(_DENSE_ONLY)
    body = tuple(DenseParams(p.W * weight_scale, p.b * bias_scale) for p in body)
    n_last = net.layers[-1].n_out
    W = jax.random.normal(readout_key, (n_classes, n_last), body[0].W.dtype) / math.sqrt(n_last)
    return body, DenseParams(W, jnp.zeros(n_classes, W.dtype))


def _init_stacked(net: Network, key, n_classes, weight_scale, bias_scale):
    """``(_stack(net, body), readout)`` of `init_classifier`, bit for bit, drawing each run of identical layers
    (`Network.segments`) in one vmapped draw: ``net.init`` draws layer i from ``fold_in(key, i)``, and one draw
    per layer made the compilation of `train`'s program grow with depth (8 s at depth 2, 30 s at depth 54 on 2
    CPU cores, against about 10 s at any depth this way)."""
    if net.tied:  # one DenseParams, not one per layer
        raise ValueError(_DENSE_ONLY)
    body_key, readout_key = jax.random.split(as_key(key))
    stacked = []
    for layer, start, count in net.segments():
        draw = jax.vmap(lambda i, layer=layer: layer.init(jax.random.fold_in(body_key, i)))
        run = draw(jnp.arange(start, start + count))
        if not isinstance(run, DenseParams):
            raise ValueError(_DENSE_ONLY)
        stacked.append(DenseParams(run.W * weight_scale, run.b * bias_scale))
    n_last = net.layers[-1].n_out
    W = jax.random.normal(readout_key, (n_classes, n_last), stacked[0].W.dtype) / math.sqrt(n_last)
    return tuple(stacked), DenseParams(W, jnp.zeros(n_classes, W.dtype))


def _stack(net: Network, body):
    """Per run of identical layers (`Network.segments`), their params stacked on a leading axis."""
    return tuple(
        jax.tree.map(lambda *leaves: jnp.stack(leaves), *body[start : start + count])
        for _, start, count in net.segments()
    )


def _unstack(net: Network, stacked):
    """The per-layer params of `_stack`'s runs as `train`'s program returns them: leaves (grid, seeds, layer, …)."""
    return tuple(
        jax.tree.map(lambda leaf: leaf[:, :, i], seg)
        for seg, (_, _, count) in zip(stacked, net.segments())
        for i in range(count)
    )


def _logits(net: Network, stacked, readout, x):
    h = x
    for seg, (layer, _, _) in zip(stacked, net.segments()):

        def layer_step(h, p, layer=layer):
            return jax.vmap(layer.apply, in_axes=(None, 0))(p, h), None

        if layer.n_in == layer.n_out:
            h, _ = jax.lax.scan(layer_step, h, seg)
        else:  # a width change: a run of one layer
            h, _ = layer_step(h, jax.tree.map(lambda leaf: leaf[0], seg))
    return jnp.matmul(h, readout.W.T, precision=HIGHEST) + readout.b


def _loss(kind: str, logits, y):
    if kind == "cross_entropy":
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
    target = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
    return 0.5 * jnp.mean(jnp.sum((logits - target) ** 2, -1))


def classifier_apply(net: Network, params: ClassifierParams, x: ArrayLike) -> Array:
    """Logits (N, classes) of the classifier ``params = (body, readout)`` on inputs x (N, n₀)."""
    body, readout = params
    return _logits(net, _stack(net, body), readout, x)


def classifier_loss(
    net: Network, params: ClassifierParams, x: ArrayLike, y: ArrayLike, loss: str = "cross_entropy"
) -> Array:
    """The training loss of ``params = (body, readout)`` on (x, y): the function `train` minimises."""
    return _loss(loss, classifier_apply(net, params, x), y)


def _layer_norms(stacked, readout):
    norms = [jnp.sqrt(jnp.sum(seg.W**2, axis=tuple(range(1, seg.W.ndim)))) for seg in stacked]
    return jnp.concatenate(norms + [jnp.linalg.norm(readout.W)[None]])


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _where(flag, new, old):
    return jax.tree.map(lambda a, b: jnp.where(flag, a, b), new, old)


# --------------------------------------------------------------------------- the loop


@functools.lru_cache(maxsize=64)
def _program(net, optimizer, factory: bool, n_classes, steps, every, batch_size, loss, sharpness_steps):
    records = steps // every

    def one(key, learning_rate, weight_scale, bias_scale, x, y, ex, ey):
        init_key, data_key, curvature_key = jax.random.split(key, 3)
        params = _init_stacked(net, init_key, n_classes, weight_scale, bias_scale)
        opt = optimizer(learning_rate) if factory else optimizer

        def objective(params, xb, yb):
            logits = _logits(net, *params, xb)
            return _loss(loss, logits, yb), logits

        def record(params, alive, r):
            (value, logits), grads = jax.value_and_grad(objective, has_aux=True)(params, ex, ey)
            accuracy = jnp.mean(jnp.argmax(logits, -1) == ey)
            norms = _layer_norms(*grads)
            if sharpness_steps:
                lam = top_hessian_eigenvalue(
                    lambda p: objective(p, ex, ey)[0],
                    params,
                    key=jax.random.fold_in(curvature_key, r),
                    steps=sharpness_steps,
                )
            else:
                lam = jnp.asarray(jnp.nan, value.dtype)
            nan = jnp.asarray(jnp.nan, value.dtype)
            return tuple(jnp.where(alive, v, nan) for v in (value, accuracy.astype(value.dtype), norms, lam))

        def step(carry, t):
            params, state, alive, diverged_at = carry
            if batch_size is None:
                xb, yb = x, y
            else:
                idx = jax.random.randint(jax.random.fold_in(data_key, t), (batch_size,), 0, x.shape[0])
                xb, yb = x[idx], y[idx]
            (value, _), grads = jax.value_and_grad(objective, has_aux=True)(params, xb, yb)
            updates, new_state = opt.update(grads, state, params)
            new_params = optax.apply_updates(params, updates)
            ok = jnp.isfinite(value) & _all_finite(grads) & _all_finite(new_params)
            keep = alive & ok
            diverged_at = jnp.where(alive & ~ok, t, diverged_at)
            carry = (_where(keep, new_params, params), _where(keep, new_state, state), keep, diverged_at)
            return carry, jnp.where(alive, value, jnp.nan)

        def block(carry, r):
            rec = record(carry[0], carry[2], r)
            carry, values = jax.lax.scan(step, carry, r * every + jnp.arange(every))
            return carry, (rec, values)

        carry = (params, opt.init(params), jnp.array(True), jnp.array(-1, jnp.int32))
        carry, (recs, values) = jax.lax.scan(block, carry, jnp.arange(records))
        last = record(carry[0], carry[2], records)
        recs = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), recs, last)
        return (*recs, values.reshape(-1), carry[3], carry[0])  # (the body stacked: `train` unstacks it)

    over_seeds = jax.vmap(one, in_axes=(0, None, None, None, None, None, None, None))
    return jax.jit(jax.vmap(over_seeds, in_axes=(None, 0, 0, 0, None, None, None, None)))


def _grid(name, value, size=None):
    v = np.atleast_1d(np.asarray(value, np.float64))
    if (
        v.ndim != 1
        or not np.all(np.isfinite(v))
        or (name == "learning_rate" and not np.all(v > 0))
        or (name != "learning_rate" and not np.all(v >= 0))
    ):
        valid = "positive and finite" if name == "learning_rate" else "non-negative and finite"
        raise ValueError(f"`{name}` must be {valid} (a scalar or a 1-D array), got {name}={value!r}")
    return v


def train(
    net: Network,
    optimizer: Callable[[Array], optax.GradientTransformation] | optax.GradientTransformation,
    x: ArrayLike,
    y: ArrayLike,
    *,
    keys: Array | np.ndarray,
    steps: int,
    learning_rate: npt.ArrayLike | None = None,
    weight_scale: npt.ArrayLike = 1.0,
    bias_scale: npt.ArrayLike = 1.0,
    n_classes: int = 10,
    loss: Literal["cross_entropy", "mse"] = "cross_entropy",
    batch_size: int | None = None,
    record_every: int | None = None,
    eval_data: Dataset | None = None,
    sharpness_steps: int = 0,
) -> History:
    r"""Train the classifier `net` + linear readout on (x, y), vmapped over a hyperparameter grid and seeds.

    Arguments:
      net: the body, a `jaxgrad.Network` of dense layers (e.g. ``jaxgrad.mlp``).
      optimizer: ``learning_rate -> optax.GradientTransformation`` (``optax.sgd``,
        ``functools.partial(optax.sgd, momentum=0.9)``, ``lambda lr: optax.chain(
        optax.clip_by_global_norm(1.0), optax.sgd(lr))`` …), called inside the compiled
        program with the traced learning rate; or a ready `GradientTransformation`
        (then omit `learning_rate`). Reuse the same object to reuse the compilation.
      x, y: training inputs (N, n₀) and integer labels (N,) in [0, n_classes).
      keys: PRNG keys, shape (S,): one training run (initialisation, batches) per key.
      steps: number of updates, a positive int.
      learning_rate, weight_scale, bias_scale: scalars or 1-D arrays of one length G
        (broadcast): the hyperparameter grid. The scales multiply the body's initial W
        and b (`init_classifier`).
      loss: ``"cross_entropy"`` (softmax) or ``"mse"`` (½‖f − one-hot‖², averaged).
      batch_size: minibatch size (drawn with replacement per step); None: full batch.
      record_every: steps between records (must divide `steps`); None: every step.
      eval_data: where records are measured; default (x, y).
      sharpness_steps: Lanczos steps for $λ_{\max}(∇^2 L)$ at each record; 0: off.

    Returns:
      `History` with leading axes (G, S).

    Raises:
      ValueError: a non-positive or non-finite learning rate, labels outside
        [0, n_classes), non-positive steps, a record interval that does not divide
        them, a bad batch size or mismatched shapes (each naming the argument).
    """
    factory = not isinstance(optimizer, optax.GradientTransformation)
    if factory and learning_rate is None:
        raise ValueError("`learning_rate` is required when `optimizer` is a factory learning_rate -> transformation")
    if not factory and learning_rate is not None:
        raise ValueError("`learning_rate` must be omitted when `optimizer` is a ready GradientTransformation")
    for name, value, low in (("steps", steps, 1), ("n_classes", n_classes, 2), ("sharpness_steps", sharpness_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"`{name}` must be an integer ≥ {low}, got {name}={value!r}")
    every = 1 if record_every is None else record_every
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1 or steps % every:
        raise ValueError(
            f"`record_every` must be a positive divisor of steps={steps}, got record_every={record_every!r}"
        )
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got loss={loss!r}")
    x, y = jnp.asarray(x), jnp.asarray(y)
    n0 = net.layers[0].n_in
    if x.ndim != 2 or x.shape[1] != n0:
        raise ValueError(f"`x` must have shape (N, {n0}) for this network, got x.shape={x.shape}")
    for name, labels, inputs in (("y", y, x),) + ((("eval_data", eval_data.y, eval_data.x),) if eval_data else ()):
        labels_np = np.asarray(labels)
        if labels_np.shape != (inputs.shape[0],) or not np.issubdtype(labels_np.dtype, np.integer):
            raise ValueError(
                f"`{name}` labels must be integers of shape ({inputs.shape[0]},), "
                f"got dtype={labels_np.dtype}, shape={labels_np.shape}"
            )
        if labels_np.size and (labels_np.min() < 0 or labels_np.max() >= n_classes):
            raise ValueError(
                f"`{name}` labels must lie in [0, {n_classes - 1}] (n_classes={n_classes}), "
                f"got values in [{labels_np.min()}, {labels_np.max()}]"
            )
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or not 1 <= batch_size <= x.shape[0]
    ):
        raise ValueError(f"`batch_size` must be None or an integer in [1, {x.shape[0]}], got batch_size={batch_size!r}")
    grids = [
        _grid(n, v)
        for n, v in (
            ("learning_rate", 1.0 if learning_rate is None else learning_rate),
            ("weight_scale", weight_scale),
            ("bias_scale", bias_scale),
        )
    ]
    try:
        grids = list(np.broadcast_arrays(*grids))
    except ValueError:
        raise ValueError(
            "`learning_rate`, `weight_scale` and `bias_scale` must broadcast to one length, got "
            f"lengths {[g.size for g in grids]}"
        ) from None
    keys = jnp.asarray(keys)
    if keys.ndim != 1 and not (keys.dtype == jnp.uint32 and keys.ndim == 2):
        raise ValueError(f"`keys` must be a 1-D array of PRNG keys, got shape {keys.shape}")
    keys = jax.vmap(as_key)(keys) if keys.dtype == jnp.uint32 else keys
    ex, ey = (x, y) if eval_data is None else (jnp.asarray(eval_data.x), jnp.asarray(eval_data.y))
    program = _program(
        net,
        optimizer,
        factory,
        int(n_classes),
        int(steps),
        int(every),
        None if batch_size is None else int(batch_size),
        loss,
        int(sharpness_steps),
    )
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
    x = x.astype(dtype)
    lr, ws, bs = (jnp.asarray(g, dtype) for g in grids)
    out = program(keys, lr, ws, bs, x, y, ex.astype(dtype), ey)
    loss_r, acc, norms, lam, values, diverged, (body, readout) = out
    # unstacked here, on the host (slicing compiles nothing), so that the program does not grow with depth
    body = _unstack(net, jax.tree.map(np.asarray, body))
    params = (jax.tree.map(jnp.asarray, body), readout)
    return History(np.arange(0, steps + 1, every), loss_r, acc, norms, lam, values, diverged, params)

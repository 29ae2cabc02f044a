r"""Bring your own model: an Equinox or Flax NNX module as a jaxgrad `Layer`.

A block $f^{(\ell)}$ of a model is anything that maps a state to a state of the same
shape: a vector $h \in \mathbb{R}^n$, or a matrix of tokens × features. The adapters
turn a module *constructor* into the pair of pure functions the engine scans:

* ``init(key)`` calls the constructor and keeps only the module's floating-point
  arrays (its parameters θ; Equinox: `eqx.partition`, Flax: `nnx.split`);
* ``apply(θ, h)`` puts them back (`eqx.combine`, `nnx.merge`), reshapes the flat
  $h \in \mathbb{R}^{n}$, $n = \prod \text{shape}$, to the state's shape, calls the module
  and flattens the result.

Everything else about the module (its Python structure, activation functions, integer
buffers, a Flax module's RNG state) is taken once, when the adapter is built, so the
compiled program holds only the module's own arithmetic: recombining and reshaping are
done while tracing. The engine differentiates ``apply`` with `jax.jacrev` (methods
"power"/"svd") or `jax.jvp`/`jax.vjp` (methods "vector" and "matrix_free", for states too large
to materialise), so $J_\ell = \partial f^{(\ell)}/\partial h$ is the Jacobian of the flattened map.
A constructor may take scalar hyperparameters as keyword arguments (``hyper=``): they are then
traced, like σ_w of `jaxgrad.dense`, and a `jaxgrad.sweep` over them is one compiled program.

One network per seed, whatever the dtype: ``init`` runs the constructor with JAX's 64-bit mode
off, so a module that draws in "the default float" (`eqx.nn.Linear`) draws in float32 in a
float64 run too, and its floats are then cast to the run's dtype (as `jaxgrad.standard_normal`
draws jaxgrad's own weights). Half-precision parameters or outputs (bfloat16, float16) are
refused rather than silently upcast: build the module in float32 and pick the precision with
``simulate(dtype=...)``.

Modes. The probes measure the block as the deterministic map ``h ↦ module(h)``, so a module
whose call draws random numbers (dropout in training mode) is refused when the adapter is built,
naming the module and the switch (`eqx.nn.inference_mode`; Flax ``deterministic=True``,
``model.eval()`` or ``nnx.view``). A Flax module is applied functionally: each call merges a
fresh copy of its variables (``nnx.merge(..., copy=True)``), so `nnx.BatchNorm` in training mode
normalises with the batch statistics of the state it is given and its updated running averages
are discarded (never written back); in eval mode it uses the stored averages, which for a freshly
built module (mean 0, variance 1) make it the affine map $x \mapsto γ x/\sqrt{1 + ε} + β$.

Equinox and Flax are optional (``pip install "jaxgrad[equinox]"`` / ``"jaxgrad[flax]"``);
this module imports them only when an adapter is built.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal as _Literal

from jaxgrad.layers import Hyper, Layer, Network, ShapedStructure, float_dtype, serial

__all__ = ["from_equinox", "from_flax", "from_functions", "serial_from_equinox", "serial_from_flax"]

_SHAPE_ATTRIBUTES = ("in_features", "in_size", "num_features", "hidden_size")
_HALF = ("bfloat16", "float16")  # refused: jaxgrad measures in float32 or float64


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f'this adapter needs {module.split(".")[0]}: pip install "jaxgrad[{extra}]" (or pip install {extra})'
        ) from error


def _label(make) -> str:
    return getattr(make, "__qualname__", None) or type(make).__name__


def _is_float(x) -> bool:
    """A floating-point array, concrete or abstract (`jax.ShapeDtypeStruct`)."""
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)) and jnp.issubdtype(x.dtype, jnp.inexact)


def _is_array(x) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


def _check_make(make, where: str, argument: str, example: str, hyper=None) -> None:
    if not callable(make):
        raise TypeError(f"{where}: `make` must be a constructor {example}, got {type(make).__name__}")
    hyper = hyper or {}
    try:
        inspect.signature(make).bind(object(), **hyper)
    except TypeError:
        names = "".join(f", {k}" for k in hyper)
        raise TypeError(
            f"{where}: `make` must accept one positional argument, the {argument}"
            f"{', and the keyword arguments ' + ', '.join(hyper) + ' (`hyper`)' if hyper else ''}: "
            f"{example}; its signature is {inspect.signature(make)}. Wrap it, e.g. "
            f"`lambda {argument}{names}: Block(..., {argument}={argument}{names})`"
        ) from None
    except ValueError:  # no signature (a builtin); calling it will tell
        pass


def _check_hyper(hyper, where: str) -> dict[str, float]:
    """`hyper` as {name: float}: names are identifiers, values finite numbers."""
    if hyper is None:
        return {}
    if not hasattr(hyper, "items"):
        raise TypeError(
            f"{where}: `hyper` must be a dict of name -> number, e.g. hyper={{'sigma_w': 1.0}}, "
            f"got {type(hyper).__name__}"
        )
    out = {}
    for name, value in hyper.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"{where}: `hyper` names must be Python identifiers (keyword arguments of `make`), got {name!r}"
            )
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: `hyper[{name!r}]` must be a finite number, got {value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{where}: `hyper[{name!r}]` must be a finite number, got {value!r}")
        out[name] = value
    return out


def _check_shape(shape, where: str) -> tuple[int, ...]:
    try:
        shape = tuple(shape) if np.ndim(shape) else (shape,)
    except TypeError:
        raise ValueError(f"{where}: `shape` must be a tuple of positive integers, got shape={shape!r}") from None
    if not shape or any(
        isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n <= 0 for n in shape
    ):
        raise ValueError(f"{where}: `shape` must be a tuple of positive integers, got shape={shape!r}")
    return tuple(int(n) for n in shape)


def _infer_shape(module, where: str, is_module) -> tuple[int, ...]:
    """(n,) from the first `in_features`/`in_size`/`num_features` found in the module, depth first."""

    def search(obj, depth):
        if depth > 4:
            return None
        for attribute in _SHAPE_ATTRIBUTES:
            n = getattr(obj, attribute, None)
            if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0:
                return (int(n),)
        children = vars(obj).values() if hasattr(obj, "__dict__") else ()
        for child in children:
            for c in child if isinstance(child, (list, tuple)) else (child,):
                if is_module(c):
                    found = search(c, depth + 1)
                    if found:
                        return found
        return None

    shape = search(module, 0)
    if shape is None:
        raise ValueError(
            f"{where}: cannot infer the state's shape from {type(module).__name__}; "
            f"give it, e.g. shape=(16, 8) for 16 tokens × 8 features"
        )
    return shape


def _check_signature(module, where: str) -> None:
    """The engine calls ``module(state)`` alone: a `__call__` that requires more (``key=``, a second input) is named."""
    try:
        parameters = list(inspect.signature(type(module).__call__).parameters.values())[1:]  # drop self
    except (TypeError, ValueError):  # no signature to read; calling it will tell
        return
    positional = [q for q in parameters if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD, q.VAR_POSITIONAL)]
    state = positional[0] if positional else None
    required = [
        q.name
        for q in parameters
        if q is not state and q.default is q.empty and q.kind not in (q.VAR_POSITIONAL, q.VAR_KEYWORD)
    ]
    bare = inspect.signature(type(module).__call__).replace(return_annotation=inspect.Signature.empty)
    bare = bare.replace(parameters=[q.replace(annotation=q.empty) for q in bare.parameters.values()])
    signature = f"{type(module).__name__}.__call__{bare}"
    if {"key", "rngs"} & set(required):
        name = "key" if "key" in required else "rngs"
        raise TypeError(
            f"{where}: `{signature}` needs `{name}=`, but a block is called as `module(state)` and "
            f"measured as a deterministic map (no random draws). Give `{name}` a default "
            f"(`{name}=None`) and keep dropout and the like in inference mode "
            f"(`eqx.nn.inference_mode(model)`; Flax: `deterministic=True` or `model.eval()`)"
        )
    if required:
        raise TypeError(
            f"{where}: a block is called as `module(state)`, but `{signature}` also requires "
            f"{', '.join(required)}. Wrap it in a module that maps the state alone, e.g. for a "
            f"recurrent cell `h ↦ cell(x, h)` with a fixed input x"
        )


def _check_precision(params, where: str, module: str) -> None:
    """Refuses half-precision parameters: the engine would upcast them without a word."""
    half = [
        (jax.tree_util.keystr(path), str(leaf.dtype))
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
        if str(leaf.dtype) in _HALF
    ]
    if half:
        listing = ", ".join(f"{path or 'the module'} ({dtype})" for path, dtype in half[:4])
        raise ValueError(
            f"{where}: {module}'s parameters {listing} are half precision; jaxgrad computes in "
            f"float32 or float64 and would upcast them silently. Build the module in float32 "
            f"(e.g. eqx.nn.Linear(..., dtype=jnp.float32); nnx.Linear(..., param_dtype=jnp.float32, "
            f"dtype=jnp.float32)) and choose the precision with simulate(dtype=...)"
        )


class _Refused(Exception):
    """Raised from inside a traced call by an adapter's check; `_validate` re-raises it as a ValueError."""


def _validate(
    call, params, shape: tuple[int, ...], where: str, inferred: bool, cause=None, module: str = "the block"
) -> None:
    """Runs ``call(params, x)`` abstractly on a state x of `shape`: it must return a floating state of that shape.

    ``cause(error)``, if given, names a known cause of a failed call (a module in training mode) or
    returns None; the adapter's checks of what the call did (RNG draws) raise from inside `call`.
    """
    if not jax.tree.leaves(params):
        raise ValueError(
            f"{where}: the module has no floating-point arrays, so no parameters to draw "
            f"(integer-only state). Give it float weights, e.g. eqx.nn.Linear / nnx.Linear"
        )
    _check_precision(params, where, module)
    how = "the inferred" if inferred else "the declared"
    try:
        out = jax.eval_shape(call, params, jax.ShapeDtypeStruct(shape, jnp.float32))
    except _Refused as refused:
        raise ValueError(f"{where}: {refused}") from None
    except Exception as error:
        known = cause(error) if cause is not None else None
        if known:
            raise ValueError(f"{where}: {known}") from error
        raise ValueError(
            f"{where}: calling the module on {how} state shape {shape} failed "
            f"({type(error).__name__}: {error}). If the module reads another shape, declare it, "
            f"e.g. shape=(16, 8) for 16 tokens × 8 features"
        ) from error
    if not isinstance(out, jax.ShapeDtypeStruct):
        leaves = jax.tree.leaves(out)
        shapes = ", ".join(str(getattr(leaf, "shape", type(leaf).__name__)) for leaf in leaves[:4])
        raise ValueError(
            f"{where}: the module returned a {type(out).__name__} of {len(leaves)} arrays ({shapes}) "
            f"on a state of shape {shape}; a block must return the state alone, one array of shape "
            f"{shape}. Return the state: e.g. `return h` of a cell's (h, c), the output and not the "
            f"attention weights, or carry (h, c) stacked as one state"
        )
    if out.shape != shape:
        raise ValueError(
            f"{where}: a block must map a state to a state of the same shape; on shape {shape} "
            f"the module returned {out.shape} (expected {shape}). Project back to the "
            f"input's size, e.g. with a final Linear, or declare the right `shape`"
        )
    if not jnp.issubdtype(out.dtype, jnp.inexact):
        raise ValueError(f"{where}: the module must return floating values, got dtype {out.dtype}")
    if str(out.dtype) in _HALF:
        raise ValueError(
            f"{where}: on a float32 state {module} returns {out.dtype}: it computes in half "
            f"precision, which jaxgrad would upcast silently. Build it to compute in float32 "
            f"(e.g. nnx.Linear(..., dtype=jnp.float32)) and choose the precision with "
            f"simulate(dtype=...)"
        )


@contextlib.contextmanager
def _float32_default():
    """JAX's default float is float32 inside (64-bit mode off), also while tracing a float64 run."""
    with jax.enable_x64(False):
        yield


def _as_float32(values: Mapping[str, Any]) -> dict[str, Any]:
    """Traced hyperparameters as float32 (as a float32 run passes them); Python floats unchanged."""
    return {k: v.astype(jnp.float32) if isinstance(v, (jax.Array, np.ndarray)) else v for k, v in values.items()}


def _cast(params):
    """Floating leaves in JAX's default float (float64 under `jax.enable_x64`), as jaxgrad's own layers."""
    dtype = float_dtype()
    return jax.tree.map(lambda a: a.astype(dtype), params)


def _drawn_in_float32(construct):
    """``construct()``'s floating arrays drawn as in a float32 run, then cast to the run's float: one network
    per seed whatever the dtype (a module that draws in the default float draws the same numbers)."""
    with _float32_default():
        params = construct()
    return _cast(params)


def _flat(call, shape: tuple[int, ...]):
    """``h ↦ vec(call(h reshaped to shape))``; no reshape for a vector state."""
    if len(shape) == 1:
        return call
    return lambda h: call(h.reshape(shape)).reshape(-1)


def _depends(jaxpr) -> list[bool]:
    """For each output of a closed jaxpr, whether it depends on any input (conservatively: an equation with a
    dependent input makes all its outputs dependent, sub-jaxprs included)."""
    dependent = {id(v) for v in jaxpr.jaxpr.invars}
    for eqn in jaxpr.jaxpr.eqns:
        if any(id(v) in dependent for v in eqn.invars if not isinstance(v, _Literal)):
            dependent.update(id(v) for v in eqn.outvars)
    return [not isinstance(v, _Literal) and id(v) in dependent for v in jaxpr.jaxpr.outvars]


_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerArrayConversionError,
)


def _check_reaches_params(init_with, static_at, values: Mapping[str, float], where: str, kind: str) -> None:
    """Every hyperparameter must reach the params that ``init_with`` draws, and nothing else: one the constructor
    also stores as static structure (a plain Flax attribute, an `eqx.field(static=True)`) would be frozen at its
    build value in a sweep, silently. ``static_at(values)``: the module's static structure built at `values`."""
    store = (
        "an nnx.Variable, `self.x = nnx.Variable(jnp.asarray(x))`"
        if kind == "flax"
        else "an array field (not `eqx.field(static=True)`)"
    )
    for name in values:

        def draw(x, name=name):
            return jax.tree.leaves(init_with({**values, name: x})(jax.random.key(0)))

        with _float32_default(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Equinox warns of a traced static field: the error below says more
            try:
                jaxpr = jax.make_jaxpr(draw)(jnp.float32(values[name]))
            except _TRACER_ERRORS as error:
                raise ValueError(
                    f"{where}: the constructor uses the hyperparameter {name!r} as a Python value "
                    f"({type(error).__name__}: a branch, an int() or float()), but it is passed traced, "
                    f"so that one program serves every value; use it only in array arithmetic (a "
                    f"weight's scale)"
                ) from None
            other = {**values, name: 1.5 * values[name] + 0.5}
            frozen = not any(_depends(jaxpr)) or static_at(values) != static_at(other)
        if frozen:
            raise ValueError(
                f"{where}: the hyperparameter {name!r} does not reach only the module's floating-point "
                f"arrays: the module keeps it (or something made from it) as static structure, so a "
                f"traced value would be ignored there (frozen at {values[name]:g} in a sweep); use it "
                f"to scale the module's arrays (a weight), and store it, if at all, as {store}"
            )


def _layer(kind, make, shape, init_with, apply, name, homogeneous, values, rebuild) -> Layer:
    """A `Layer` whose structure is (kind, make, shape, hyperparameter names): adapters of one constructor
    share a scan segment and a compiled program whatever their hyperparameter values.

    `make` is what identifies the block (the constructor; for `from_functions`, the pair);
    ``init_with(c)`` is the block's ``init`` with hyperparameters c (floats or traced arrays).
    """
    n = math.prod(shape)
    structure = ShapedStructure(kind, make, shape, tuple(sorted(values)))
    if values:
        name = (
            f"{name[:-1]}, {', '.join(f'{k}={v:g}' for k, v in values.items())})"
            if name.endswith(")")
            else f"{name}({', '.join(f'{k}={v:g}' for k, v in values.items())})"
        )
    hyper = Hyper(
        values=dict(values),
        coefficients=dict(values),
        structure=structure,
        build=lambda c: (init_with(c), apply, None),
        rebuild=(lambda **changed: rebuild({**values, **changed})) if values else (lambda: layer),
    )
    layer = Layer(init_with(values), apply, n, n, None, homogeneous=homogeneous, name=name, hyper=hyper)
    return layer


def from_equinox(
    make: Callable[..., Any],
    *,
    shape: Sequence[int] | int | None = None,
    name: str | None = None,
    homogeneous: bool = False,
    hyper: Mapping[str, float] | None = None,
) -> Layer:
    r"""An Equinox module as a `Layer`: $h \mapsto \mathrm{vec}(m_θ(\mathrm{reshape}(h, \text{shape})))$.

    Arguments:
      make: ``key -> eqx.Module``; the module maps an array of `shape` to one of `shape`.
        Layer ℓ of a network calls ``make(fold_in(key, ℓ−1))`` inside the engine's scan.
      shape: the state's shape, e.g. ``(16,)`` or ``(tokens, features)``; default: inferred
        from the module's ``in_features``/``in_size`` (a vector state).
      name: a short description (default: the module's class and shape).
      homogeneous: declare $m(ch) = c\,m(h)$ for c > 0 (e.g. ReLU without bias), so the
        engine may carry the signal as direction × log-scale.
      hyper: the block's scalar hyperparameters, e.g. ``{"sigma_w": 1.5, "sigma_b": 0.2}``:
        `make` is then called as ``make(key, sigma_w=…, sigma_b=…)`` with *traced* values,
        so `jaxgrad.sweep` (``grid={"sigma_w": [...]}``) and blocks that differ only in
        them share one compiled program. The values may shape the module's arrays (a weight
        scale) but not its Python structure (that comes from the construction at these values).

    Returns:
      A `Layer` with ``n_in = n_out = prod(shape)``; its params are the module's floating
      arrays (``eqx.partition(module, eqx.is_inexact_array)[0]``), drawn as a float32 run
      draws them (64-bit mode off while `make` runs) and cast to JAX's default float, so a
      float64 run measures the float32 run's network. Non-floating leaves (activation
      functions, integer buffers) come from one construction, ``make(jax.random.key(0))``,
      made when the adapter is built.
      Two adapters of the same `make` object and shape have one structure: a network of
      them is one `lax.scan` and one compiled program.

    Raises:
      ImportError: Equinox is not installed (``pip install "jaxgrad[equinox]"``).
      TypeError: `make` does not take a key or does not return an `eqx.Module`, or the module's
        `__call__` requires more than the state (``key=``, a second input such as a cell's hidden state).
      ValueError: the module has no floating parameters; has half-precision (bfloat16, float16)
        parameters or output; does not map `shape` to `shape` (a tuple such as (h, c) included); or
        its call is random (`eqx.nn.Dropout` not in inference mode: use `eqx.nn.inference_mode`).
    """
    eqx = _require("equinox", "equinox")
    where = f"from_equinox({_label(make)})"
    values = _check_hyper(hyper, where)
    _check_make(make, where, "key", "`make(key) -> eqx.Module`", values)
    with _float32_default():  # the structure and dtypes a float32 run draws, whatever the caller's mode
        abstract = eqx.filter_eval_shape(make, jax.random.key(0), **values)
        if not isinstance(abstract, eqx.Module):
            raise TypeError(f"{where}: `make(key)` must return an equinox.Module, got {type(abstract).__name__}")
        template = abstract
        if any(_is_array(x) and not _is_float(x) for x in jax.tree.leaves(abstract)):
            template = make(jax.random.key(0), **values)  # integer buffers are taken from one concrete construction
    params, static = eqx.partition(template, _is_float)
    inferred = shape is None
    shape = (
        _infer_shape(template, where, lambda m: isinstance(m, eqx.Module)) if inferred else _check_shape(shape, where)
    )
    _check_signature(template, where)

    def init_with(c):
        return lambda key: _drawn_in_float32(
            lambda: eqx.partition(make(key, **_as_float32(c)), eqx.is_inexact_array)[0]
        )

    def call(params, x):
        return eqx.combine(params, static)(x)

    def apply(params, h):
        return _flat(lambda x: call(params, x), shape)(h)

    _validate(
        call,
        params,
        shape,
        where,
        inferred,
        lambda error: _equinox_cause(eqx, template, error),
        type(template).__name__,
    )

    def static_at(v):  # static fields live in the tree structure; plain float fields are leaves, traced in a sweep
        with _float32_default():
            return jax.tree.structure(eqx.partition(eqx.filter_eval_shape(make, jax.random.key(0), **v), _is_float)[1])

    _check_reaches_params(init_with, static_at, values, where, "equinox")
    return _layer(
        "equinox",
        make,
        shape,
        init_with,
        apply,
        name or f"equinox({type(abstract).__name__}, shape={shape})",
        bool(homogeneous),
        values,
        lambda v: from_equinox(make, shape=shape, name=name, homogeneous=homogeneous, hyper=v),
    )


def _equinox_cause(eqx, module, error) -> str | None:
    """Names the `eqx.nn.Dropout` in training mode behind a call that failed for want of a key, if any."""
    if "key" not in str(error):
        return None
    dropouts = [
        jax.tree_util.keystr(path) or type(module).__name__
        for path, leaf in jax.tree_util.tree_flatten_with_path(module, is_leaf=lambda x: isinstance(x, eqx.nn.Dropout))[
            0
        ]
        if isinstance(leaf, eqx.nn.Dropout) and not leaf.inference and not _is_zero(leaf.p)
    ]
    if not dropouts:
        return None
    return (
        f"{type(module).__name__} is in training mode: eqx.nn.Dropout at {', '.join(dropouts)} has "
        f"inference=False and draws a random mask, so its `__call__` wants `key=` ({error}). The probes "
        f"measure the block as a deterministic map: switch it to inference mode in `make`, e.g. "
        f"`lambda key: eqx.nn.inference_mode(Block(key))`, or build eqx.nn.Dropout(p, inference=True)"
    )


def _is_zero(p) -> bool:
    return isinstance(p, (int, float)) and p == 0


def from_flax(
    make: Callable[..., Any],
    *,
    shape: Sequence[int] | int | None = None,
    name: str | None = None,
    homogeneous: bool = False,
    hyper: Mapping[str, float] | None = None,
) -> Layer:
    r"""A Flax NNX module as a `Layer`: $h \mapsto \mathrm{vec}(m_θ(\mathrm{reshape}(h, \text{shape})))$.

    Arguments:
      make: ``rngs -> nnx.Module`` (``rngs`` an `nnx.Rngs`); the module maps an array of
        `shape` to one of `shape`. Layer ℓ calls ``make(nnx.Rngs(fold_in(key, ℓ−1)))``.
        Modes: dropout must be deterministic (the probes measure the map itself; a module whose
        call draws from its RNG streams is refused). The module is applied functionally, on a
        fresh copy of its variables (``nnx.merge(..., copy=True)``): `nnx.BatchNorm` in training
        mode (``use_running_average=False``) normalises with the statistics of the state it is
        given, e.g. a batch state (B, …), and its updated running averages are discarded; in
        eval mode it uses the stored ones (as built: mean 0, variance 1, an affine map).
      shape, name, homogeneous: as in `from_equinox` (shape inferred from ``in_features``).
      hyper: as in `from_equinox`: ``make(rngs, **hyper)`` with traced values.

    Returns:
      A `Layer`; its params are the module's floating variables (an `nnx.State`, from
      ``nnx.split``: `nnx.Param` and `nnx.BatchStat` alike, so trained running averages can be
      given with ``simulate(params=...)``), drawn as in `from_equinox` (as a float32 run, then cast
      to JAX's default float). Other state (RNG keys and counts, integer
      buffers) comes from one construction, ``make(nnx.Rngs(0))``, made when the adapter
      is built, and is shared by every sample.

    Raises:
      ImportError: Flax is not installed (``pip install "jaxgrad[flax]"``).
      TypeError, ValueError: as in `from_equinox`.
    """
    nnx = _require("flax.nnx", "flax")
    where = f"from_flax({_label(make)})"
    values = _check_hyper(hyper, where)
    _check_make(make, where, "rngs", "`make(rngs) -> nnx.Module`", values)

    def floating(path, variable):
        del path
        value = variable.get_value() if hasattr(variable, "get_value") else getattr(variable, "value", variable)
        return _is_float(value)

    with _float32_default():  # the structure and dtypes a float32 run draws, whatever the caller's mode
        abstract = nnx.eval_shape(lambda: make(nnx.Rngs(0), **values))
        if not isinstance(abstract, nnx.Module):
            raise TypeError(f"{where}: `make(rngs)` must return a flax.nnx.Module, got {type(abstract).__name__}")
        graphdef, params, rest = nnx.split(abstract, floating, ...)
        if jax.tree.leaves(rest):  # RNG state, integer buffers: taken from one concrete construction
            graphdef, _, rest = nnx.split(make(nnx.Rngs(0), **values), floating, ...)
    inferred = shape is None
    shape = (
        _infer_shape(abstract, where, lambda m: isinstance(m, nnx.Module)) if inferred else _check_shape(shape, where)
    )
    _check_signature(abstract, where)

    def init_with(c):
        return lambda key: _drawn_in_float32(lambda: nnx.split(make(nnx.Rngs(key), **_as_float32(c)), floating, ...)[1])

    def call(params, x):
        # a fresh copy of the variables at this trace level: what the module writes (BatchNorm's running
        # averages in training mode, RNG counts) stays in the copy and is discarded
        return nnx.merge(graphdef, params, rest, copy=True)(x)

    def apply(params, h):
        return _flat(lambda x: call(params, x), shape)(h)

    def checked_call(params, x):
        """`call`, refusing a module whose call draws from its RNG streams (dropout in training mode)."""
        module = nnx.merge(graphdef, params, rest, copy=True)
        before = _rng_counts(nnx, module)
        out = module(x)
        drawn = [path for path, count in _rng_counts(nnx, module).items() if count is not before.get(path)]
        if drawn:
            raise _Refused(_flax_training_mode(nnx, module, f"its RNG stream {', '.join(drawn)} advanced", drew=True))
        return out

    def cause(error):
        text = str(error)
        return _flax_training_mode(nnx, abstract, text) if "rngs" in text or "deterministic" in text else None

    _validate(checked_call, params, shape, where, inferred, cause, type(abstract).__name__)

    def static_at(v):
        with _float32_default():
            return nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(0), **v)), floating, ...)[0]

    _check_reaches_params(init_with, static_at, values, where, "flax")
    return _layer(
        "flax",
        make,
        shape,
        init_with,
        apply,
        name or f"flax({type(abstract).__name__}, shape={shape})",
        bool(homogeneous),
        values,
        lambda v: from_flax(make, shape=shape, name=name, homogeneous=homogeneous, hyper=v),
    )


def _rng_counts(nnx, module) -> dict[str, Any]:
    """{path: the array object} of the module's RNG counts (a draw replaces the object)."""
    state = nnx.state(module, nnx.RngCount)
    return {_dotted(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def _dotted(path) -> str:
    """A pytree path as ``a.b.0``, without a trailing Variable ``.value``."""
    names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    return ".".join(names[:-1] if names and names[-1] == "value" else names)


def _flax_training_mode(nnx, module, evidence: str, drew: bool = False) -> str | None:
    """The message for a Flax module whose call is random (`drew`: it was seen drawing) or failed for want of
    RNGs with a dropout that is not deterministic; None if neither."""
    dropouts = [
        ".".join(map(str, path)) or type(module).__name__
        for path, node in nnx.iter_graph(module)
        if isinstance(node, nnx.Dropout) and node.deterministic is not True and not _is_zero(node.rate)
    ]
    if not dropouts and not drew:
        return None
    which = f"nnx.Dropout at {', '.join(dropouts)} is not deterministic" if dropouts else "it draws random numbers"
    return (
        f"{type(module).__name__} is in training mode: {which} ({evidence}). The probes measure the block "
        f"as a deterministic map: in `make`, build nnx.Dropout(rate, deterministic=True), or switch the "
        f"model with `nnx.view(model, deterministic=True)` (dropout only) or `model.eval()` (also puts "
        f"BatchNorm on its running averages); or call it with deterministic=True"
    )


def from_functions(
    init: Callable[[jax.Array], Any],
    apply: Callable[[Any, jax.Array], jax.Array],
    *,
    shape: Sequence[int] | int,
    name: str | None = None,
    homogeneous: bool = False,
) -> Layer:
    r"""Any pair of pure functions on a state of any `shape`:
    $h \mapsto \mathrm{vec}(f_θ(\mathrm{reshape}(h, \text{shape})))$.

    For a vector state, ``jaxgrad.Layer(init, apply, n, n)`` is the same thing; this is for
    states such as (tokens, features), and checks the pair when built, as the other adapters do.

    Arguments:
      init: ``key -> params`` (a pytree of floating arrays); run with 64-bit mode off and cast,
        as `from_equinox` draws, so a float64 run has the float32 run's parameters.
      apply: ``(params, x) -> x`` with x of shape `shape`.
      shape, name, homogeneous: as in `from_equinox` (`shape` is required).
    """
    where = f"from_functions({_label(apply)})"
    if not callable(init) or not callable(apply):
        raise TypeError(
            f"{where}: `init` and `apply` must be functions, got {type(init).__name__}, {type(apply).__name__}"
        )
    _check_make(init, where, "key", "`init(key) -> params`")
    shape = _check_shape(shape, where)
    with _float32_default():
        params = jax.eval_shape(init, jax.random.key(0))
    if any(not _is_float(x) for x in jax.tree.leaves(params)):
        raise ValueError(
            f"{where}: `init(key)` must return floating arrays only, got "
            f"{sorted({str(x.dtype) for x in jax.tree.leaves(params)})}"
        )

    def flat_apply(params, h):
        return _flat(lambda x: apply(params, x), shape)(h)

    _validate(apply, params, shape, where, inferred=False)

    def drawn(c):
        del c  # no hyperparameters
        return lambda key: _drawn_in_float32(lambda: init(key))

    return _layer(
        "functions",
        (init, apply),
        shape,
        drawn,
        flat_apply,
        name or f"{_label(apply)}(shape={shape})",
        bool(homogeneous),
        {},
        None,
    )


def serial_from_equinox(
    makes: Sequence[Callable],
    *,
    shape: Sequence[int] | int | None = None,
    tied: bool = False,
    hyper: Mapping[str, float] | None = None,
) -> Network:
    """A network of Equinox blocks, ``jaxgrad.serial(*[from_equinox(m, shape=shape, hyper=hyper) for m in makes])``.

    Repeat one constructor object (``[make] * depth``) for a stack that scans as one segment.
    """
    return _serial(from_equinox, makes, shape, tied, hyper)


def serial_from_flax(
    makes: Sequence[Callable],
    *,
    shape: Sequence[int] | int | None = None,
    tied: bool = False,
    hyper: Mapping[str, float] | None = None,
) -> Network:
    """A network of Flax NNX blocks, ``jaxgrad.serial(*[from_flax(m, shape=shape, hyper=hyper) for m in makes])``."""
    return _serial(from_flax, makes, shape, tied, hyper)


def _serial(adapter, makes, shape, tied, hyper=None) -> Network:
    makes = list(makes)
    if not makes:
        raise ValueError("a network needs at least one block constructor, got none")
    built: list[tuple[Callable, Layer]] = []  # one adapter (one validation) per constructor object
    layers = []
    for make in makes:
        layer = next((l for m, l in built if m is make), None)
        if layer is None:
            layer = adapter(make, shape=shape, hyper=hyper)
            built.append((make, layer))
        layers.append(layer)
    return serial(*layers, tied=tied)

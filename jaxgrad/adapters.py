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

Equinox and Flax are optional (``pip install "jaxgrad[equinox]"`` / ``"jaxgrad[flax]"``);
this module imports them only when an adapter is built.
"""
from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxgrad.layers import Hyper, Layer, Network, ShapedStructure, float_dtype, serial

__all__ = ["from_equinox", "from_flax", "from_functions", "serial_from_equinox", "serial_from_flax"]

_SHAPE_ATTRIBUTES = ("in_features", "in_size", "num_features")


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"this adapter needs {module.split('.')[0]}: pip install \"jaxgrad[{extra}]\" "
                          f"(or pip install {extra})") from error


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
        raise TypeError(f"{where}: `make` must accept one positional argument, the {argument}"
                        f"{', and the keyword arguments ' + ', '.join(hyper) + ' (`hyper`)' if hyper else ''}: "
                        f"{example}; its signature is {inspect.signature(make)}. Wrap it, e.g. "
                        f"`lambda {argument}{names}: Block(..., {argument}={argument}{names})`") from None
    except ValueError:  # no signature (a builtin); calling it will tell
        pass


def _check_hyper(hyper, where: str) -> dict[str, float]:
    """`hyper` as {name: float}: names are identifiers, values finite numbers."""
    if hyper is None:
        return {}
    if not hasattr(hyper, "items"):
        raise TypeError(f"{where}: `hyper` must be a dict of name -> number, e.g. hyper={{'sigma_w': 1.0}}, "
                        f"got {type(hyper).__name__}")
    out = {}
    for name, value in hyper.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"{where}: `hyper` names must be Python identifiers (keyword arguments of `make`), "
                             f"got {name!r}")
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
    if not shape or any(isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n <= 0
                        for n in shape):
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
            for c in (child if isinstance(child, (list, tuple)) else (child,)):
                if is_module(c):
                    found = search(c, depth + 1)
                    if found:
                        return found
        return None

    shape = search(module, 0)
    if shape is None:
        raise ValueError(f"{where}: cannot infer the state's shape from {type(module).__name__}; "
                         f"give it, e.g. shape=(16, 8) for 16 tokens × 8 features")
    return shape


def _validate(apply, params, shape: tuple[int, ...], where: str, inferred: bool) -> None:
    """Runs `apply` abstractly on a state of `shape`: it must return a floating state of that shape."""
    if not jax.tree.leaves(params):
        raise ValueError(f"{where}: the module has no floating-point arrays, so no parameters to draw "
                         f"(integer-only state). Give it float weights, e.g. eqx.nn.Linear / nnx.Linear")
    n = math.prod(shape)
    how = "the inferred" if inferred else "the declared"
    try:
        out = jax.eval_shape(apply, params, jax.ShapeDtypeStruct((n,), jnp.float32))
    except Exception as error:  # noqa: BLE001  (any failure of the user's module; re-raised with context)
        raise ValueError(f"{where}: calling the module on {how} state shape {shape} failed "
                         f"({type(error).__name__}: {error}); pass the module's state shape, "
                         f"e.g. shape=(16, 8)") from error
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != (n,):
        got = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(f"{where}: a block must map a state to a state of the same shape; on shape {shape} "
                         f"the module returned {got} (flattened; expected ({n},)). Project back to the "
                         f"input's size, e.g. with a final Linear, or declare the right `shape`")
    if not jnp.issubdtype(out.dtype, jnp.inexact):
        raise ValueError(f"{where}: the module must return floating values, got dtype {out.dtype}")


def _cast(params):
    """Floating leaves in JAX's default float (float64 under `jax.enable_x64`), as jaxgrad's own layers."""
    dtype = float_dtype()
    return jax.tree.map(lambda a: a.astype(dtype), params)


def _flat(call, shape: tuple[int, ...]):
    """``h ↦ vec(call(h reshaped to shape))``; no reshape for a vector state."""
    if len(shape) == 1:
        return call
    return lambda h: call(h.reshape(shape)).reshape(-1)


def _layer(kind, make, shape, init_with, apply, name, homogeneous, values, rebuild) -> Layer:
    """A `Layer` whose structure is (kind, make, shape, hyperparameter names): adapters of one constructor
    share a scan segment and a compiled program whatever their hyperparameter values.

    `make` is what identifies the block (the constructor; for `from_functions`, the pair);
    ``init_with(c)`` is the block's ``init`` with hyperparameters c (floats or traced arrays).
    """
    n = math.prod(shape)
    structure = ShapedStructure(kind, make, shape, tuple(sorted(values)))
    if values:
        name = f"{name[:-1]}, {', '.join(f'{k}={v:g}' for k, v in values.items())})" if name.endswith(")") \
            else f"{name}({', '.join(f'{k}={v:g}' for k, v in values.items())})"
    hyper = Hyper(values=dict(values), coefficients=dict(values), structure=structure,
                  build=lambda c: (init_with(c), apply, None),
                  rebuild=(lambda **changed: rebuild({**values, **changed})) if values else (lambda: layer))
    layer = Layer(init_with(values), apply, n, n, None, homogeneous=homogeneous, name=name, hyper=hyper)
    return layer


def from_equinox(make: Callable[..., Any], *, shape: Sequence[int] | int | None = None,
                 name: str | None = None, homogeneous: bool = False,
                 hyper: Mapping[str, float] | None = None) -> Layer:
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
      arrays (``eqx.partition(module, eqx.is_inexact_array)[0]``, in JAX's default float).
      Non-floating leaves (activation functions, integer buffers) come from one
      construction, ``make(jax.random.key(0))``, made when the adapter is built.
      Two adapters of the same `make` object and shape have one structure: a network of
      them is one `lax.scan` and one compiled program.

    Raises:
      ImportError: Equinox is not installed (``pip install "jaxgrad[equinox]"``).
      TypeError: `make` does not take a key, or does not return an `eqx.Module`.
      ValueError: the module has no floating parameters, or does not map `shape` to `shape`.
    """
    eqx = _require("equinox", "equinox")
    where = f"from_equinox({_label(make)})"
    values = _check_hyper(hyper, where)
    _check_make(make, where, "key", "`make(key) -> eqx.Module`", values)
    abstract = eqx.filter_eval_shape(make, jax.random.key(0), **values)
    if not isinstance(abstract, eqx.Module):
        raise TypeError(f"{where}: `make(key)` must return an equinox.Module, got {type(abstract).__name__}")
    template = abstract
    if any(_is_array(x) and not _is_float(x) for x in jax.tree.leaves(abstract)):
        template = make(jax.random.key(0), **values)  # integer buffers are taken from one concrete construction
    params, static = eqx.partition(template, _is_float)
    inferred = shape is None
    shape = _infer_shape(template, where, lambda m: isinstance(m, eqx.Module)) if inferred \
        else _check_shape(shape, where)

    def init_with(c):
        return lambda key: _cast(eqx.partition(make(key, **c), eqx.is_inexact_array)[0])

    def apply(params, h):
        return _flat(eqx.combine(params, static), shape)(h)

    _validate(apply, params, shape, where, inferred)
    return _layer("equinox", make, shape, init_with, apply,
                  name or f"equinox({type(abstract).__name__}, shape={shape})", bool(homogeneous), values,
                  lambda v: from_equinox(make, shape=shape, name=name, homogeneous=homogeneous, hyper=v))


def from_flax(make: Callable[..., Any], *, shape: Sequence[int] | int | None = None,
              name: str | None = None, homogeneous: bool = False,
              hyper: Mapping[str, float] | None = None) -> Layer:
    r"""A Flax NNX module as a `Layer`: $h \mapsto \mathrm{vec}(m_θ(\mathrm{reshape}(h, \text{shape})))$.

    Arguments:
      make: ``rngs -> nnx.Module`` (``rngs`` an `nnx.Rngs`); the module maps an array of
        `shape` to one of `shape`. Layer ℓ calls ``make(nnx.Rngs(fold_in(key, ℓ−1)))``.
        Put dropout and the like in deterministic mode (the probes measure the map itself).
      shape, name, homogeneous: as in `from_equinox` (shape inferred from ``in_features``).
      hyper: as in `from_equinox`: ``make(rngs, **hyper)`` with traced values.

    Returns:
      A `Layer`; its params are the module's floating variables (an `nnx.State`, from
      ``nnx.split``), in JAX's default float. Other state (RNG keys and counts, integer
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

    abstract = nnx.eval_shape(lambda: make(nnx.Rngs(0), **values))
    if not isinstance(abstract, nnx.Module):
        raise TypeError(f"{where}: `make(rngs)` must return a flax.nnx.Module, got {type(abstract).__name__}")
    graphdef, params, rest = nnx.split(abstract, floating, ...)
    if jax.tree.leaves(rest):  # RNG state, integer buffers: taken from one concrete construction
        graphdef, _, rest = nnx.split(make(nnx.Rngs(0), **values), floating, ...)
    inferred = shape is None
    shape = _infer_shape(abstract, where, lambda m: isinstance(m, nnx.Module)) if inferred \
        else _check_shape(shape, where)

    def init_with(c):
        return lambda key: _cast(nnx.split(make(nnx.Rngs(key), **c), floating, ...)[1])

    def apply(params, h):
        return _flat(nnx.merge(graphdef, params, rest), shape)(h)

    _validate(apply, params, shape, where, inferred)
    return _layer("flax", make, shape, init_with, apply,
                  name or f"flax({type(abstract).__name__}, shape={shape})", bool(homogeneous), values,
                  lambda v: from_flax(make, shape=shape, name=name, homogeneous=homogeneous, hyper=v))


def from_functions(init: Callable[[jax.Array], Any], apply: Callable[[Any, jax.Array], jax.Array], *,
                   shape: Sequence[int] | int, name: str | None = None, homogeneous: bool = False) -> Layer:
    r"""Any pair of pure functions on a state of any `shape`: $h \mapsto \mathrm{vec}(f_θ(\mathrm{reshape}(h, \text{shape})))$.

    For a vector state, ``jaxgrad.Layer(init, apply, n, n)`` is the same thing; this is for
    states such as (tokens, features), and checks the pair when built, as the other adapters do.

    Arguments:
      init: ``key -> params`` (a pytree of floating arrays).
      apply: ``(params, x) -> x`` with x of shape `shape`.
      shape, name, homogeneous: as in `from_equinox` (`shape` is required).
    """
    where = f"from_functions({_label(apply)})"
    if not callable(init) or not callable(apply):
        raise TypeError(f"{where}: `init` and `apply` must be functions, got {type(init).__name__}, "
                        f"{type(apply).__name__}")
    _check_make(init, where, "key", "`init(key) -> params`")
    shape = _check_shape(shape, where)
    params = jax.eval_shape(init, jax.random.key(0))
    if any(not _is_float(x) for x in jax.tree.leaves(params)):
        raise ValueError(f"{where}: `init(key)` must return floating arrays only, got "
                         f"{sorted({str(x.dtype) for x in jax.tree.leaves(params)})}")

    def flat_apply(params, h):
        return _flat(lambda x: apply(params, x), shape)(h)

    _validate(flat_apply, params, shape, where, inferred=False)
    return _layer("functions", (init, apply), shape, lambda c: init, flat_apply,
                  name or f"{_label(apply)}(shape={shape})", bool(homogeneous), {}, None)


def serial_from_equinox(makes: Sequence[Callable], *, shape=None, tied: bool = False,
                        hyper: Mapping[str, float] | None = None) -> Network:
    """A network of Equinox blocks, ``jaxgrad.serial(*[from_equinox(m, shape=shape, hyper=hyper) for m in makes])``.

    Repeat one constructor object (``[make] * depth``) for a stack that scans as one segment.
    """
    return _serial(from_equinox, makes, shape, tied, hyper)


def serial_from_flax(makes: Sequence[Callable], *, shape=None, tied: bool = False,
                     hyper: Mapping[str, float] | None = None) -> Network:
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

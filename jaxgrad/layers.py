r"""Pure functional layers and networks (seed §2.1 and §4).

A layer is a pair of pure functions, ``init(key) -> params`` and
``apply(params, h) -> h``. The dense layer computes

$$z^{(\ell)} = W^{(\ell)} h^{(\ell-1)} + b^{(\ell)}, \qquad h^{(\ell)} = φ(z^{(\ell)}),$$

so its Jacobian is $J_\ell = \mathrm{diag}(φ′(z^{(\ell)}))\,W^{(\ell)}$. A network is
the chain $h^{(0)} = x$, $h^{(\ell)} = f^{(\ell)}(h^{(\ell-1)})$.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jaxgrad.activations import Activation, derivative, get_activation

__all__ = [
    "HIGHEST",
    "WEIGHT_SCHEMES",
    "DenseParams",
    "Hyper",
    "Layer",
    "Network",
    "ShapedStructure",
    "as_key",
    "check_claims",
    "check_input",
    "dense",
    "float_dtype",
    "forward",
    "functions_of",
    "haar_orthogonal",
    "mlp",
    "residual",
    "serial",
    "standard_normal",
    "state_shape",
    "structure_of",
    "weight_std",
]

Array = jax.Array
Params = Any
_LayerFunctions = tuple[
    Callable[[Array], Params],
    Callable[[Params, Array], Array],
    Callable[[Params, Array], tuple[Array, Array]] | None,
]
HIGHEST = jax.lax.Precision.HIGHEST

WEIGHT_SCHEMES = ("gaussian", "orthogonal", "he", "glorot", "lecun")


class DenseParams(NamedTuple):
    W: Array  # (n_out, n_in)
    b: Array  # (n_out,)


class Hyper(NamedTuple):
    r"""A layer's scalar hyperparameters as data, so one compiled program serves every value.

    A layer built by a constructor such as `dense` closes over its σ_w and σ_b. The
    engine instead compiles the layer's functions once per *structure* and passes the
    numbers in as traced arrays:

    Attributes:
      values: the user-facing hyperparameters, e.g. ``{"sigma_w": 1.0, "sigma_b": 0.0}``;
        `jaxgrad.sweep` overrides them by name.
      coefficients: the numbers the functions use, computed on the host in float64 from
        `values` (e.g. ``w_scale = σ_w/√n_in``), so a traced run rounds exactly as a
        closed-over constant would.
      structure: hashable; everything else that shapes the functions (widths, activation,
        weight scheme, dtype). Equal structures give equal functions up to the
        coefficients, so they share a compiled program and a `lax.scan` segment.
        (`Layer.homogeneous`, which may depend on a value such as σ_b = 0, is not part of
        it: the engine keys its programs on it separately.)
      build: ``coefficients -> (init, apply, jacobian)``, the layer's functions with the
        given (possibly traced) coefficients.
      rebuild: ``(**values) -> Layer``, the same constructor with other values.
    """

    values: Mapping[str, float]
    coefficients: Mapping[str, float]
    structure: Hashable
    build: Callable[[Mapping[str, Array]], tuple]
    rebuild: Callable[..., Layer]

    def _key(self):
        return (self.structure, tuple(sorted(self.values.items())), tuple(sorted(self.coefficients.items())))

    def __hash__(self):  # layers and networks stay hashable (users cache on them), by structure and values
        return hash(self._key())

    def __eq__(self, other):
        return isinstance(other, Hyper) and self._key() == other._key()

    def __ne__(self, other):
        return not self == other


class Layer(NamedTuple):
    r"""A layer: pure `init` and `apply`, plus what the engine may exploit.

    Attributes:
      init: ``key -> params``.
      apply: ``(params, h) -> h``, h of shape ``(n_in,)``.
      n_in, n_out: input and output widths.
      jacobian: optional fast path ``(params, h) -> (J, apply(params, h))``; it
        must equal ``jax.jacrev(apply, argnums=1)`` (tests check that). ``None``
        means the engine uses `jax.jacrev`.
      homogeneous: ``apply(params, c h) == c apply(params, h)`` for c > 0, so the
        forward signal may be carried as direction × log-scale.
      name: a short description.
      hyper: optional `Hyper`: the layer's scalar hyperparameters as data (constructors
        such as `dense` set it). A layer without it compiles once per function object.
    """

    init: Callable[[Array], Params]
    apply: Callable[[Params, Array], Array]
    n_in: int
    n_out: int
    jacobian: Callable[[Params, Array], tuple[Array, Array]] | None = None
    homogeneous: bool = False
    name: str = "layer"
    hyper: Hyper | None = None


class ShapedStructure(NamedTuple):
    """A `Hyper.structure` that declares the shape of the layer's state (the adapters' blocks).

    The engine sees the flattened state, ``n_in = prod(shape)``; `state_shape` reads it back
    for the result's config.
    """

    kind: str
    block: Hashable
    shape: tuple[int, ...]
    names: tuple[str, ...] = ()  # the block's traced hyperparameters, if any


def state_shape(layer: Layer) -> tuple[int, ...]:
    """The shape of the state `layer` reads: a declared `ShapedStructure`'s, else ``(n_in,)``."""
    structure = layer.hyper.structure if layer.hyper is not None else None
    if isinstance(structure, ShapedStructure):
        return tuple(structure.shape)
    return (layer.n_in,)


def structure_of(layer: Layer) -> Hashable:
    """What shapes a layer's compiled program: its `Hyper.structure`, or its functions' identity."""
    if layer.hyper is not None:
        return ("hyper", layer.hyper.structure)
    return ("functions", layer.init, layer.apply, layer.jacobian, layer.n_in, layer.n_out, layer.homogeneous)


def functions_of(layer: Layer, coefficients: Mapping[str, Array] | None) -> _LayerFunctions:
    """(init, apply, jacobian) of `layer` with traced `coefficients` (None: the layer's own)."""
    if layer.hyper is None or coefficients is None:
        return layer.init, layer.apply, layer.jacobian
    return layer.hyper.build(coefficients)


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {name}={value!r}")
    return int(value)


def _check_float_dtype(dtype):
    """``None`` or a floating dtype (float32/float64); integer or complex dtypes are refused."""
    if dtype is None:
        return None
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise ValueError(f"`dtype` must be None, 'float32' or 'float64', got dtype={dtype!r}") from None
    if name not in ("float32", "float64"):
        raise ValueError(f"`dtype` must be None, 'float32' or 'float64', got dtype={dtype!r}")
    return name


def _check_nonnegative(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a non-negative number, got {name}={value!r}") from None
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"`{name}` must be a finite non-negative number, got {name}={value!r}")
    return value


def weight_std(weights: str, n_in: int, n_out: int, sigma_w: float) -> float:
    r"""Standard deviation of the Gaussian schemes' entries.

    ``gaussian``: σ_w/√n_in; ``he``: σ_w·√(2/n_in); ``lecun``: σ_w/√n_in;
    ``glorot``: σ_w·√(2/(n_in+n_out)). For the named schemes σ_w acts as a gain
    (default 1 gives the textbook initialisation).
    """
    if weights == "he":
        return sigma_w * math.sqrt(2.0 / n_in)
    if weights == "glorot":
        return sigma_w * math.sqrt(2.0 / (n_in + n_out))
    return sigma_w / math.sqrt(n_in)  # gaussian, lecun


def float_dtype(dtype: DTypeLike | None = None) -> np.dtype:
    """``dtype``, or JAX's default float (float64 under `jax.enable_x64`)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)


def standard_normal(key: Array, shape: Sequence[int], dtype: DTypeLike | None = None) -> Array:
    """N(0, 1) draws made in float32 and cast to `dtype`.

    Drawing in float32 whatever the compute dtype means a float64 run sees exactly
    the network a float32 run sees, so comparing them isolates rounding.
    """
    return jax.random.normal(key, shape, jnp.float32).astype(float_dtype(dtype))


def haar_orthogonal(key: Array, n_out: int, n_in: int, dtype: DTypeLike | None = None) -> Array:
    r"""A Haar-random matrix with orthonormal rows or columns, shape (n_out, n_in).

    QR of a Gaussian matrix with the signs of diag(R) folded into Q (Mezzadri 2007),
    computed in `dtype` so Q is orthogonal to that precision.
    """
    big, small = max(n_out, n_in), min(n_out, n_in)
    A = standard_normal(key, (big, small), dtype)
    Q, R = jnp.linalg.qr(A)
    Q = Q * jnp.where(jnp.diagonal(R) < 0, -1.0, 1.0).astype(Q.dtype)
    return Q if n_out >= n_in else Q.T


def dense(
    n_in: int,
    n_out: int,
    *,
    activation: str | Callable | Activation = "tanh",
    weights: str = "gaussian",
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
    dtype: DTypeLike | None = None,
) -> Layer:
    r"""Dense layer $h \mapsto φ(Wh + b)$.

    Weight schemes: ``gaussian`` $W_{ij} \sim N(0, σ_w^2/n_{in})$; ``orthogonal``
    $W = σ_w Q$ with Q Haar-random (rectangular allowed); ``he``, ``glorot``,
    ``lecun`` (σ_w is then a gain, see `weight_std`). Biases $b_i \sim N(0, σ_b^2)$.

    σ_w and σ_b are data (`Hyper`): networks that differ only in them share one
    compiled program in `jaxgrad.simulate` and one `lax.scan` segment.

    Arguments:
      n_in, n_out: widths.
      activation: a name in `jaxgrad.activations.ACTIVATIONS`, a scalar JAX
        function, or an `Activation`.
      weights: one of `WEIGHT_SCHEMES`.
      sigma_w, sigma_b: weight and bias scales (non-negative).
      dtype: parameter dtype; ``None`` is JAX's default float.

    Returns:
      A `Layer` whose params are `DenseParams(W, b)`.
    """
    n_in = _check_positive_int("n_in", n_in)
    n_out = _check_positive_int("n_out", n_out)
    sigma_w = _check_nonnegative("sigma_w", sigma_w)
    sigma_b = _check_nonnegative("sigma_b", sigma_b)
    dtype = _check_float_dtype(dtype)
    if weights not in WEIGHT_SCHEMES:
        raise ValueError(f"unknown weight scheme weights={weights!r}; valid choices are {list(WEIGHT_SCHEMES)}")
    act = get_activation(activation)
    phi, phi_prime = act.fn, derivative(act.fn)

    def coefficients(sigma_w, sigma_b):
        w_scale = sigma_w if weights == "orthogonal" else weight_std(weights, n_in, n_out, sigma_w)
        return {"w_scale": w_scale, "b_scale": sigma_b}

    def build(c):
        w_scale, b_scale = c["w_scale"], c["b_scale"]

        def init(key: Array) -> DenseParams:
            key_w, key_b = jax.random.split(key)
            dt = float_dtype(dtype)
            if weights == "orthogonal":
                W = w_scale * haar_orthogonal(key_w, n_out, n_in, dt)
            else:
                W = w_scale * standard_normal(key_w, (n_out, n_in), dt)
            b = b_scale * standard_normal(key_b, (n_out,), dt)
            return DenseParams(W, b)

        def apply(params: DenseParams, h: Array) -> Array:
            return phi(jnp.matmul(params.W, h, precision=HIGHEST) + params.b)

        def jacobian(params: DenseParams, h: Array) -> tuple[Array, Array]:
            z = jnp.matmul(params.W, h, precision=HIGHEST) + params.b
            return phi_prime(z)[:, None] * params.W, phi(z)

        return init, apply, jacobian

    homogeneous = act.homogeneous and sigma_b == 0.0
    coeffs = coefficients(sigma_w, sigma_b)
    hyper = Hyper(
        values={"sigma_w": sigma_w, "sigma_b": sigma_b},
        coefficients=coeffs,
        structure=("dense", n_in, n_out, act, weights, dtype),
        build=build,
        rebuild=lambda sigma_w=sigma_w, sigma_b=sigma_b: dense(
            n_in, n_out, activation=act, weights=weights, sigma_w=sigma_w, sigma_b=sigma_b, dtype=dtype
        ),
    )
    init, apply, jacobian = build(coeffs)
    return Layer(
        init,
        apply,
        n_in,
        n_out,
        jacobian,
        homogeneous=homogeneous,
        name=f"dense({n_in}->{n_out}, {act.name}, {weights}, σ_w={sigma_w:g}, σ_b={sigma_b:g})",
        hyper=hyper,
    )


def residual(block: Layer, alpha: float = 1.0) -> Layer:
    r"""Residual layer $h \mapsto h + α f(h)$, with Jacobian $I + α J_f$.

    Shows that any pure layer works: the engine differentiates it with `jax.jacrev`
    unless a fast path is available (here, one built from the block's). The branch
    scale α is data (a `Hyper` value, ``"alpha"``) beside the block's own.
    """
    if block.n_in != block.n_out:
        raise ValueError(f"a residual block needs n_in == n_out, got n_in={block.n_in}, n_out={block.n_out}")
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"`alpha` (the residual branch scale) must be a finite number, got alpha={alpha!r}") from None
    if not math.isfinite(alpha):
        raise ValueError(f"`alpha` (the residual branch scale) must be a finite number, got alpha={alpha!r}")
    inner = block.hyper
    inner_values = dict(inner.values) if inner is not None else {}
    inner_coeffs = dict(inner.coefficients) if inner is not None else {}

    def build(c):
        init, block_apply, block_jacobian = functions_of(block, c if inner is not None else None)
        a = c["alpha"]

        def apply(params, h):
            return h + a * block_apply(params, h)

        jacobian = None
        if block_jacobian is not None:

            def jacobian(params, h):
                J, f = block_jacobian(params, h)
                return jnp.eye(block.n_in, dtype=J.dtype) + a * J, h + a * f

        return init, apply, jacobian

    def rebuild(alpha=alpha, **values):
        return residual(inner.rebuild(**values) if inner is not None else block, alpha)

    coeffs = {**inner_coeffs, "alpha": alpha}
    init, apply, jacobian = build(coeffs)
    return Layer(
        init,
        apply,
        block.n_in,
        block.n_out,
        jacobian,
        homogeneous=block.homogeneous,
        name=f"residual({block.name}, α={alpha:g})",
        hyper=Hyper({**inner_values, "alpha": alpha}, coeffs, ("residual", structure_of(block)), build, rebuild),
    )


class Network(NamedTuple):
    r"""A chain of layers $h^{(\ell)} = f^{(\ell)}(h^{(\ell-1)})$, ℓ = 1..L.

    ``init(key)`` returns a tuple of per-layer params; layer ℓ (0-based index
    ℓ−1) draws from ``jax.random.fold_in(key, ℓ−1)``, so the weights of one
    layer do not depend on the depth of the network. ``apply(params, x)``
    returns $h^{(L)}$.

    A **tied** network (``tied=True``, e.g. ``mlp(..., tied=True)``) uses one set of
    parameters at every layer: the iterated map $h \mapsto f(h; θ)$ of a recurrent
    network without input. Its ``init(key)`` returns that one layer's params, drawn
    from ``fold_in(key, 0)`` (the draw of layer 1 of the untied network).
    """

    layers: tuple[Layer, ...]
    tied: bool = False

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.layers[0].n_in,) + tuple(layer.n_out for layer in self.layers)

    def init(self, key: Array) -> Params:
        key = as_key(key)
        if self.tied:
            return self.layers[0].init(jax.random.fold_in(key, 0))
        return tuple(layer.init(jax.random.fold_in(key, i)) for i, layer in enumerate(self.layers))

    def apply(self, params: Params, x: Array) -> Array:
        return forward(self, params, x)[-1]

    def per_layer(self, params: Params) -> tuple:
        """The params of each layer: ``params`` itself for an untied network, L copies of it for a tied one."""
        return (params,) * self.depth if self.tied else tuple(params)

    def structure(self) -> Hashable:
        """What shapes this network's compiled programs (not its hyperparameter values)."""
        return (
            self.tied,
            tuple((structure_of(layer), start, count, homogeneous) for layer, start, count, homogeneous in self.runs()),
        )

    def runs(self) -> list[tuple[Layer, int, int, bool]]:
        """`segments` with each run's homogeneity (true iff every layer in it is homogeneous)."""
        return [
            (layer, start, count, all(l.homogeneous for l in self.layers[start : start + count]))
            for layer, start, count in self.segments()
        ]

    def segments(self) -> list[tuple[Layer, int, int]]:
        """Runs of consecutive layers of equal structure as ``(layer, start, count)``.

        Layers are grouped by `structure_of` (their shapes, activation, scheme …), not by
        object identity, so equal layers built separately form one run; hyperparameter
        values may differ inside a run (the engine scans them as data). The engine scans
        each run with one `lax.scan`; an MLP of one width is one run.
        """
        runs: list[tuple[Layer, int, int]] = []
        for i, layer in enumerate(self.layers):
            if runs and structure_of(runs[-1][0]) == structure_of(layer):
                runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((layer, i, 1))
        return runs


def as_key(key: Array | np.ndarray) -> Array:
    """Accepts a typed key (`jax.random.key`) or a legacy uint32 `PRNGKey`."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype == jnp.uint32 and key.shape == (2,):
        return jax.random.wrap_key_data(key)
    raise ValueError(
        f"`key` must be a JAX PRNG key (jax.random.key or jax.random.PRNGKey), got dtype={key.dtype}, shape={key.shape}"
    )


def check_input(net: Network, x: Array) -> Array:
    x = jnp.asarray(x)
    n0 = net.layers[0].n_in
    if x.shape != (n0,):
        raise ValueError(f"input `x` must have shape ({n0},) for this network, got x.shape={x.shape}")
    return x


def forward(net: Network, params: Params, x: Array) -> list[Array]:
    """All signals [h⁽⁰⁾, …, h⁽ᴸ⁾] (for a tied network, `params` is the one layer's)."""
    if not net.tied and len(params) != net.depth:
        raise ValueError(f"`params` must hold {net.depth} layers, got {len(params)}")
    hs = [check_input(net, x)]
    for layer, p in zip(net.layers, net.per_layer(params)):
        hs.append(layer.apply(p, hs[-1]))
    return hs


_checked: dict[Hashable, None] = {}  # layers whose claims were checked (by structure and values)

_CHECK_COMPILED_FROM = 64
"""`serial` checks this many or more unchecked layers of one `Hyper` structure in one compiled program (their
coefficients traced, as the engine runs them), not op by op: the T step layers of `jaxgrad.rnn` differ only in
their step index, and op by op each costs 30 ms (tanh, width 32) to 90 ms (LSTM), so checking 600 took 12 to 34 s
on 2 CPU cores; the program compiles in 2 to 4 s and then checks a layer in about 2 ms. Same checks, point and
tolerance. Below this count the op-by-op check is about as fast."""


def _claim_arrays(functions: _LayerFunctions, homogeneous: bool, n_in: int) -> dict[str, Array]:
    """What `check_claims` compares, at its point: ``init(key(0))`` and h ~ N(0, I) from ``key(1)``."""
    init, apply, jacobian = functions
    params = init(jax.random.key(0))
    h = jax.random.normal(jax.random.key(1), (n_in,), jnp.float32)
    out = apply(params, h.astype(jnp.result_type(*jax.tree.leaves(params), h)))
    h = h.astype(jnp.result_type(out))
    arrays = {"out": out}
    if jacobian is not None:
        arrays["J_fast"], arrays["out_fast"] = jacobian(params, h)
        arrays["J_rev"] = jax.jacrev(apply, argnums=1)(params, h)
        arrays["out_apply"] = apply(params, h)
    if homogeneous:
        for c in (2.0, 0.5):
            arrays[f"scaled_{c}"], arrays[f"want_{c}"] = apply(params, c * h), c * apply(params, h)
    return arrays


def _compare_claims(layer: Layer, arrays: Mapping[str, Array]) -> None:
    """Raises ValueError naming `layer` where `arrays` (`_claim_arrays`) refute one of its claims."""
    dtype = jnp.result_type(arrays["out"])
    tol = 8 * (max(layer.n_in, layer.n_out) + 4) * float(jnp.finfo(dtype).eps)

    def gap(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(np.float64).tiny))

    if layer.jacobian is not None:
        J_fast, J_rev = arrays["J_fast"], arrays["J_rev"]
        if np.shape(J_fast) != np.shape(J_rev) or not gap(J_fast, J_rev) <= tol:
            detail = (
                f"shape {np.shape(J_fast)} instead of {np.shape(J_rev)}"
                if np.shape(J_fast) != np.shape(J_rev)
                else f"they differ by {gap(J_fast, J_rev):.3g} relative (Frobenius; tolerance {tol:.1e})"
            )
            raise ValueError(
                f"layer {layer.name!r}: its fast-path `jacobian` is not the derivative of its `apply` "
                f"(jax.jacrev) at a random point: {detail}. Fix the `jacobian` function, or pass "
                "jacobian=None to let the engine differentiate `apply`"
            )
        if not gap(arrays["out_fast"], arrays["out_apply"]) <= tol:
            raise ValueError(
                f"layer {layer.name!r}: its fast-path `jacobian` returns an output that differs from "
                f"`apply` by {gap(arrays['out_fast'], arrays['out_apply']):.3g} relative; it must return "
                "(J, apply(params, h))"
            )
    if layer.homogeneous:
        for c in (2.0, 0.5):
            scaled, want = arrays[f"scaled_{c}"], arrays[f"want_{c}"]
            if not gap(scaled, want) <= tol:
                raise ValueError(
                    f"layer {layer.name!r} is declared homogeneous (f(c·h) = c·f(h) for c > 0) but "
                    f"f({c:g}·h) differs from {c:g}·f(h) by {gap(scaled, want):.3g} relative at a random "
                    "point (tolerance {:.1e}); declare homogeneous=False (biases, normalisations and "
                    "residual branches with a nonlinearity are not homogeneous)".format(tol)
                )


def _claim_ident(layer: Layer) -> Hashable:
    return (structure_of(layer), layer.hyper._key() if layer.hyper is not None else None, layer.homogeneous)


def _claims_unchecked(layer: Layer) -> bool:
    return _claim_ident(layer) not in _checked and (layer.jacobian is not None or layer.homogeneous)


def check_claims(layer: Layer) -> Layer:
    r"""Checks what `layer` claims beyond ``(init, apply)``, at a random point; returns it unchanged.

    * a fast-path ``jacobian`` must return ``(jax.jacrev(apply, argnums=1)(params, h), apply(params, h))``;
    * ``homogeneous=True`` must satisfy ``apply(params, c·h) == c·apply(params, h)`` at c = 2 and 1/2.

    The point is the layer's ``init(key(0))`` and h ~ N(0, I); the tolerance is the rounding of the
    two computations, $8(n+4)ε$ relative (Frobenius) in the layer's dtype ($γ_n$ of Higham 2002, §3.5,
    for each, with room for the activation's few roundings). Scaling by 2 and 1/2 is exact in floating
    point, so a homogeneous layer passes with room to spare. The engine trusts these claims (it uses the
    fast path, and carries a homogeneous signal as direction × log-scale), so `serial` checks every
    distinct layer once (many layers of one structure in one compiled program, `_CHECK_COMPILED_FROM`).
    Raises ValueError naming the layer and what differed.
    """
    if _claims_unchecked(layer):
        _compare_claims(layer, _claim_arrays((layer.init, layer.apply, layer.jacobian), layer.homogeneous, layer.n_in))
        _checked[_claim_ident(layer)] = None
    return layer


def _check_claims_compiled(layers: Sequence[Layer]) -> None:
    """`check_claims` for layers of one `Hyper` structure (and one homogeneity and fast-path presence), by one
    compiled program with the coefficients traced, as the engine runs them (`functions_of`)."""
    first = layers[0]
    assert first.hyper is not None  # serial groups only layers with a Hyper here
    build = first.hyper.build
    program = jax.jit(lambda c: _claim_arrays(build(c), first.homogeneous, first.n_in))
    for layer in layers:
        assert layer.hyper is not None
        _compare_claims(layer, program(dict(layer.hyper.coefficients)))
        _checked[_claim_ident(layer)] = None


def serial(*layers: Layer, tied: bool = False) -> Network:
    """A network from layers; consecutive widths must agree.

    ``tied=True``: the layers share one set of parameters (they must have equal structure).
    Every distinct layer's claims (a fast-path ``jacobian``, ``homogeneous=True``) are checked
    once (`check_claims`).
    """
    if not layers:
        raise ValueError("a network needs at least one layer, got none")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"layer {i + 1} must be a jaxgrad Layer(init, apply, n_in, n_out), got {type(layer).__name__}"
            )
    for i, (a, b) in enumerate(zip(layers, layers[1:])):
        if a.n_out != b.n_in:
            raise ValueError(f"layer {i + 1} outputs width {a.n_out} but layer {i + 2} expects {b.n_in}")
    if not isinstance(tied, (bool, np.bool_)):
        raise ValueError(f"`tied` must be True or False, got tied={tied!r}")
    distinct = list({id(layer): layer for layer in layers}.values())
    groups: dict[Hashable, dict[Hashable, Layer]] = {}
    for layer in distinct:
        if layer.hyper is not None and _claims_unchecked(layer):
            key = (structure_of(layer), layer.homogeneous, layer.jacobian is not None)
            groups.setdefault(key, {}).setdefault(_claim_ident(layer), layer)
    for group in groups.values():
        if len(group) >= _CHECK_COMPILED_FROM:
            _check_claims_compiled(list(group.values()))
    for layer in distinct:
        check_claims(layer)  # (nothing left to do for the layers checked above)
    if tied:
        first = structure_of(layers[0])
        if layers[0].n_in != layers[0].n_out or any(structure_of(layer) != first for layer in layers[1:]):
            raise ValueError(
                "a tied network needs square layers of one structure (one set of parameters "
                "used at every layer); got " + ", ".join(sorted({layer.name for layer in layers}))
            )
        first_hyper = layers[0].hyper
        if any(
            layer.hyper is not None and (first_hyper is None or layer.hyper.values != first_hyper.values)
            for layer in layers[1:]
        ):
            raise ValueError("a tied network's layers must share their hyperparameters (one set of parameters)")
    return Network(tuple(layers), bool(tied))


def mlp(
    width: int | None = None,
    depth: int | None = None,
    *,
    widths: Sequence[int] | None = None,
    activation: str | Callable | Activation = "tanh",
    weights: str = "gaussian",
    sigma_w: float = 1.0,
    sigma_b: float = 0.0,
    residual_alpha: float | None = None,
    tied: bool = False,
    dtype: DTypeLike | None = None,
) -> Network:
    r"""A fully connected network $h^{(\ell)} = φ(W^{(\ell)} h^{(\ell-1)} + b^{(\ell)})$.

    Arguments:
      width, depth: a square network of `depth` layers of `width` units; or
      widths: ``[n0, n1, …, nL]`` for rectangular layers (then omit width/depth,
        or give a matching depth).
      activation, weights, sigma_w, sigma_b, dtype: as in `dense`.
      residual_alpha: if given, every layer is the residual block $h + α φ(Wh+b)$.
      tied: one W, b per network, used at every layer (the iterated map of an RNN
        without input); needs a square network.

    Returns:
      A `Network`. Layers of equal shape share one `Layer`, so the engine scans them.

    Example:
      >>> net = mlp(width=64, depth=50, activation="tanh", sigma_w=1.0)
      >>> params = net.init(jax.random.key(0))
    """
    if widths is None:
        if width is None or depth is None:
            raise ValueError("give `width` and `depth`, or `widths=[n0, …, nL]`")
        width = _check_positive_int("width", width)
        if isinstance(depth, (bool, np.bool_)) or not isinstance(depth, (int, np.integer)) or depth < 1:
            raise ValueError(f"`depth` must be an integer >= 1, got depth={depth!r}")
        depth = int(depth)
        widths = [width] * (depth + 1)
    else:
        widths = list(widths)
        if len(widths) < 2:
            raise ValueError(f"`widths` must list at least [n0, n1], got widths={widths!r}")
        widths = [_check_positive_int("widths", n) for n in widths]
        if depth is not None and depth != len(widths) - 1:
            raise ValueError(f"`depth`={depth!r} does not match widths of length {len(widths)}")
        if width is not None:
            raise ValueError("give either `width` or `widths`, not both")
    if tied and len(set(widths)) != 1:
        raise ValueError(f"a tied network needs one width (a square map), got widths={widths!r}")
    cache: dict[tuple[int, int], Layer] = {}
    layers = []
    for n_in, n_out in zip(widths, widths[1:]):
        if (n_in, n_out) not in cache:
            layer = dense(
                n_in, n_out, activation=activation, weights=weights, sigma_w=sigma_w, sigma_b=sigma_b, dtype=dtype
            )
            if residual_alpha is not None:
                layer = residual(layer, residual_alpha)
            cache[(n_in, n_out)] = layer
        layers.append(cache[(n_in, n_out)])
    return serial(*layers, tied=tied)

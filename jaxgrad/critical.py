r"""Critical initialisation by measurement: the value of a hyperparameter at which gradients neither vanish nor explode.

A network $h^{(\ell)} = f^{(\ell)}(h^{(\ell-1)})$ of L blocks propagates a random unit vector
$u$ forward, $v_\ell = J_\ell v_{\ell-1}/\|J_\ell v_{\ell-1}\|$, with one-block gains
$g_\ell = \|J_\ell v_{\ell-1}\|$ (the differences of the engine's ``log_forward_gain``). The
**growth rate per block** at a hyperparameter value x (σ_w, a residual branch scale, an
adapter's own ``hyper=`` entry) is measured over S initialisations and the blocks
ℓ = d+1 … L after a transient of d blocks, in one of two ways:

* ``criterion="mean_square"``: $r(x) = \tfrac12\ln \mathbb{E}\,g_\ell^2$, the log of the
  mean-square gain. For a wide MLP this is $\tfrac12\ln χ_1$ (Poole et al. 2016;
  Schoenholz et al. 2017): its zero is mean field's critical σ_w, and it is what the
  averaged partial Jacobian norm of Doshi, He and Gromov (2023) tracks. The estimator
  averages $g_\ell^2$ over the window per initialisation, then over initialisations;
  its standard error is the delta method's, $\tfrac12\,\mathrm{sd}/(\sqrt S\,\bar m)$.
* ``criterion="typical"``: $r(x) = \mathbb{E}\ln g_\ell$, the typical (logarithmic) rate,
  whose limit at large depth is the top Lyapunov exponent λ₁ of the product. By Jensen
  $\mathbb{E}\ln g \le \tfrac12\ln\mathbb{E}g^2$; at width n the gap is O(1/n)
  (for linear Gaussian layers exactly $\tfrac12(\ln\tfrac n2 - ψ(\tfrac n2)) \approx \tfrac1{2n}$, for ReLU
  about $\tfrac5{4n}$; measured for tanh at σ_b² = 0.05, about 3/n in σ_w),
  so the typical critical point lies above the mean-square one. The mean-square rate
  says how the *average* squared gradient grows, the typical rate how a *single*
  network's gradient grows: at finite width they differ, and a deep network is
  governed by the typical one (`jaxgrad.theory.critical_sigma_w_typical` gives it
  exactly for linear and ReLU networks).

The search is a measurement, not a model. `points` values spanning `bracket` are one
`jaxgrad.sweep` (one compiled program; the values are traced, and every value sees the
same initialisations, common random numbers, so the measured curve $\hat r(x)$ is smooth in
x). The cell where $\hat r$ changes sign is then swept again with `points` values (the
same program, no recompilation), `refine` times. The root is the secant of the
bracketing pair of the last grid; its standard error is the rate's at the root over
the local slope, $\mathrm{SE}(\hat x) = \mathrm{SE}(\hat r)/|\hat r′|$, and the interval
is $\hat x \pm (k\,\mathrm{SE}(\hat x) + e)$ with k = `interval_se` (4 by default, the
project's convention) and e the interpolation error (secant against the parabola through
the three nearest points). When $\hat r$ has no sign change in the bracket, the result says
so, with the rates at the ends, and holds no value.

References: B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein and S. Ganguli, "Exponential
expressivity in deep neural networks through transient chaos", NeurIPS 2016.
S. S. Schoenholz, J. Gilmer, S. Ganguli and J. Sohl-Dickstein, "Deep information
propagation", ICLR 2017. D. Doshi, T. He and A. Gromov, "Critical initialization of wide
and deep neural networks through partial Jacobians: general theory and applications",
NeurIPS 2023.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from jax.typing import DTypeLike
from numpy.typing import ArrayLike

from jaxgrad.engine import _grid_points, sweep
from jaxgrad.layers import Network
from jaxgrad.stats import pooled_variance

__all__ = [
    "CRITERIA",
    "CriticalPoint",
    "GrowthRates",
    "Isometry",
    "critical_point",
    "growth_rates",
    "rates_from_log_gains",
]

CRITERIA = ("mean_square", "typical")
MIN_SAMPLES = 8  # a standard error from fewer initialisations is itself too noisy to bound a root
MIN_WINDOW = 2  # blocks after the transient over which the rate is averaged


class GrowthRates(NamedTuple):
    """The measured growth rate per block at each value (arrays of the values' length)."""

    rates: np.ndarray
    rate_se: np.ndarray
    nonfinite: np.ndarray  # initialisations whose rate is not finite, per value (kept, not dropped)
    log_gain_mean: np.ndarray  # (values, depth): mean of ln‖J_ℓ⋯J₁ u‖ over initialisations
    log_gain_quantiles: np.ndarray  # (values, 3, depth): its 5 %, 50 %, 95 % quantiles


class Isometry(NamedTuple):
    r"""The singular values of $J_L\cdots J_1$ at the critical value: is the network dynamically isometric there?

    ``log_singular_values`` (samples, n): $\ln σ_i$ per initialisation; ``spread``, ``spread_se``: the standard
    deviation of $\ln σ_i$ over i, averaged over initialisations, and its SE (0 for an exact isometry);
    ``eigenvalue_variance``, ``eigenvalue_variance_se``: the variance of $λ_i = σ_i^2$ pooled over i and the
    initialisations (`jaxgrad.stats.pooled_variance`), and its SE; ``eigenvalue_mean``: $\bar λ$ (1 at χ₁ = 1
    from the fixed point; a transient from inputs away from q* moves it, and the variance with its square).
    At χ₁ = 1 and large width the variance over the mean squared is $L(μ_2/μ_1^2 - 1 + v_W)$, $v_W$ = 1 for
    Gaussian and 0 for orthogonal weights (`jaxgrad.theory.jacobian_spectrum_variance`, Pennington, Schoenholz
    and Ganguli 2017), with an excess of relative size O(L/n) at width n (experiments/dynamical_isometry.py
    measures it), and larger where the inputs start away from the fixed point q*. Measured for tanh at
    σ_b² = 0.05, depth 16, width 128, 128 samples from q₀ = 1: 28.8 (Gaussian) and 7.1 (orthogonal) against
    21.5 and 5.5."""

    log_singular_values: np.ndarray
    spread: float
    spread_se: float
    eigenvalue_variance: float
    eigenvalue_variance_se: float
    eigenvalue_mean: float


class CriticalPoint(NamedTuple):
    r"""The result of `critical_point`.

    Attributes:
      found: whether the measured rate changes sign in the bracket.
      value: the critical value $\hat x$ (NaN when not found).
      se: its standard error, $\mathrm{SE}(\hat r)/|\hat r′|$ at the root (NaN when not found).
      interval: $\hat x \pm (k\,\mathrm{SE} + e)$, k = ``interval_se``, e the interpolation error.
      hyper, criterion, bracket, depth, samples, discard: the request.
      values, rates, rate_se, nonfinite: every value measured (the bracket's grid and each
        refinement, sorted) with its growth rate per block, the rate's standard error and the
        number of initialisations with a non-finite rate.
      slope: $\hat r′$ at the root (per unit of the hyperparameter).
      depths: 1..L; grid: the last grid's values, with ``log_gain_mean`` (grid, L) and
        ``log_gain_quantiles`` (grid, 3, L): the bands of $\ln\|J_\ell\cdots J_1 u\|$
        (5, 50, 95 %) at every depth.
      message: one sentence saying what was found.
      isometry: with ``isometry=True`` and a value found, the `Isometry` of the network at it; else None.
    """

    found: bool
    value: float
    se: float
    interval: tuple[float, float]
    hyper: str
    criterion: str
    bracket: tuple[float, float]
    depth: int
    samples: int
    discard: int
    values: np.ndarray
    rates: np.ndarray
    rate_se: np.ndarray
    nonfinite: np.ndarray
    slope: float
    depths: np.ndarray
    grid: np.ndarray
    log_gain_mean: np.ndarray
    log_gain_quantiles: np.ndarray
    message: str
    isometry: Isometry | None = None

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------- checks


def _hyper_names(net: Network) -> list[str]:
    return sorted(set().union(*(layer.hyper.values for layer in net.layers if layer.hyper is not None)))


def _check_int(name: str, value, low: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"`{name}` must be an integer ≥ {low}{why}, got {name}={value!r}")
    return int(value)


def _check_bracket(bracket) -> tuple[float, float]:
    finite = f"`bracket` must be two finite numbers (lo, hi) with lo < hi, got bracket={bracket!r}"
    try:
        lo, hi = (float(b) for b in bracket)
    except (TypeError, ValueError):
        raise ValueError(finite) from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(finite)
    if not lo < hi:
        reversed_ = f" (reversed: give it as ({hi:g}, {lo:g}))" if hi < lo else ""
        raise ValueError(f"`bracket` must be increasing and non-empty, lo < hi, got bracket={bracket!r}{reversed_}")
    return lo, hi


def _same_network(a: Network, b: Network) -> bool:
    """Equal layer by layer: the same structure and hyperparameter values (layers without any, the same name)."""
    return (
        len(a.layers) == len(b.layers)
        and a.tied == b.tied
        and all(
            (x.hyper == y.hyper) if (x.hyper is not None or y.hyper is not None) else x.name == y.name
            for x, y in zip(a.layers, b.layers)
        )
    )


def _network(net_or_builder, hyper: str, lo: float, hi: float, depth: int | None) -> Network:
    """The network to measure, at the bracket's lower end, with `hyper` checked to be one of its traced values."""
    if isinstance(net_or_builder, Network):
        net = net_or_builder
        if depth is not None:
            depth = _check_int("depth", depth, 1)
            if depth > net.depth:
                raise ValueError(f"`depth` must be at most the network's depth {net.depth}, got depth={depth}")
            net = Network(net.layers[:depth], net.tied)
    elif callable(net_or_builder):
        builder = net_or_builder
        parameters: Mapping[str, inspect.Parameter]
        try:
            parameters = inspect.signature(builder).parameters
        except (TypeError, ValueError):
            parameters = {}
        takes_depth = "depth" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        kwargs: dict[str, Any] = {hyper: lo}
        if depth is not None:
            if not takes_depth:
                raise ValueError(
                    f"`depth={depth}` was given but the builder {_name(builder)} takes no `depth` "
                    f"keyword: build the network at its depth, or give a builder(depth=..., {hyper}=...)"
                )
            kwargs["depth"] = _check_int("depth", depth, 1)
        try:
            inspect.signature(builder).bind(**kwargs)
        except TypeError as error:
            raise ValueError(
                f"the builder {_name(builder)} cannot be called as builder("
                f"{', '.join(f'{k}=...' for k in kwargs)}) ({error}); give a builder that takes "
                f"`{hyper}` as a keyword (and `depth` when `depth` is given) and returns a jaxgrad.Network"
            ) from None
        except ValueError:  # no signature (a builtin): let the call below decide
            pass
        net = builder(**kwargs)
        if not isinstance(net, Network):
            raise ValueError(f"the builder {_name(builder)} must return a jaxgrad.Network, got {type(net).__name__}")
        if hyper in _hyper_names(net):
            # the sweep varies the network's own traced `hyper`: the builder's argument must be exactly that value
            swept = _grid_points(net, {hyper: [hi]})[2][0][0]
            if not _same_network(builder(**{**kwargs, hyper: hi}), swept):
                raise ValueError(
                    f"the builder {_name(builder)} does not pass `{hyper}` straight to its network's "
                    f"traced `{hyper}`: builder({hyper}={hi:g}) differs from builder({hyper}={lo:g}) "
                    f"with the network's {hyper} set to {hi:g}, and critical_point sweeps the latter. "
                    f"Give a builder whose argument is the network's hyperparameter, or the network"
                )
    else:
        raise ValueError(
            f"`net_or_builder` must be a jaxgrad.Network or a callable builder(**{{{hyper!r}: value}}) "
            f"-> Network, got {type(net_or_builder).__name__}"
        )
    names = _hyper_names(net)
    if hyper not in names:
        raise ValueError(
            f"unknown `hyper`={hyper!r}: this network's traced hyperparameters are {names}"
            + ("" if names else " (none: build its layers with jaxgrad's constructors, or an adapter with hyper={...})")
        )
    return net


def _name(f) -> str:
    return getattr(f, "__qualname__", None) or type(f).__name__


# --------------------------------------------------------------------------- the rates


def rates_from_log_gains(
    log_gain: ArrayLike, *, criterion: str = "mean_square", discard: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""(rate, SE, non-finite count) per leading index from $\ln\|J_\ell\cdots J_1 u\|$ of shape (..., samples, depth).

    The estimators of `growth_rates` (module docstring) over blocks ℓ > `discard`, for gains a study or a
    user already has (e.g. `jaxgrad.sweep(..., fields=["log_forward_gain"]).log_forward_gain`).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown `criterion`={criterion!r}; valid choices are {list(CRITERIA)}")
    b = np.asarray(log_gain, np.float64)
    if b.ndim < 2 or b.shape[-2] < 2:
        raise ValueError(f"`log_gain` must have shape (..., samples ≥ 2, depth), got shape {b.shape}")
    _check_discard(discard, b.shape[-1])
    start = b[..., discard - 1] if discard else np.zeros(b.shape[:-1])
    window = b.shape[-1] - discard
    with np.errstate(invalid="ignore", over="ignore"):
        if criterion == "typical":
            per_sample = (b[..., -1] - start) / window  # mean of ln g over the window
        else:
            steps = np.diff(np.concatenate([start[..., None], b[..., discard:]], axis=-1), axis=-1)
            per_sample = np.exp(2 * steps).mean(axis=-1)  # mean of g² over the window
    nonfinite = (~np.isfinite(per_sample)).sum(axis=-1)
    S = per_sample.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = per_sample.mean(axis=-1)
        sd = per_sample.std(axis=-1, ddof=1)
        if criterion == "typical":
            rate, se = mean, sd / math.sqrt(S)
        else:
            rate, se = 0.5 * np.log(mean), 0.5 * sd / (math.sqrt(S) * mean)
    return rate, se, nonfinite


def growth_rates(
    net: Network,
    *,
    hyper: str,
    values: Sequence[float],
    samples: int = 256,
    seed: int = 0,
    criterion: str = "mean_square",
    discard: int | None = None,
    dtype: DTypeLike | None = None,
    verify: bool = True,
) -> GrowthRates:
    r"""The growth rate per block of `net` at each value of its hyperparameter `hyper`, as one `jaxgrad.sweep`.

    See the module docstring for the two criteria. Every value sees the same `samples`
    initialisations (seed, i). ``discard`` (default L // 4) blocks of transient are left out.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown `criterion`={criterion!r}; valid choices are {list(CRITERIA)}")
    if not isinstance(net, Network):
        raise ValueError(f"`net` must be a jaxgrad.Network, got {type(net).__name__}")
    names = _hyper_names(net)
    if hyper not in names:
        raise ValueError(f"unknown `hyper`={hyper!r}: this network's traced hyperparameters are {names}")
    samples = _check_int("samples", samples, MIN_SAMPLES, " (the rate's standard error needs them)")
    discard = _check_discard(discard, net.depth)
    r = sweep(
        net,
        samples,
        seed,
        grid={hyper: list(values)},
        method="vector",
        fields=["log_forward_gain"],
        dtype=dtype,
        verify=verify,
    )
    b = np.asarray(r.log_forward_gain, np.float64)
    rate, se, nonfinite = rates_from_log_gains(b, criterion=criterion, discard=discard)
    with np.errstate(invalid="ignore"):
        quantiles = np.nanpercentile(np.where(np.isfinite(b), b, np.nan), [5, 50, 95], axis=1).transpose(1, 0, 2)
        mean = b.mean(axis=1)
    return GrowthRates(rate, se, nonfinite, mean, quantiles)


def _check_discard(discard, depth: int) -> int:
    if discard is None:
        discard = depth // 4
    largest = depth - MIN_WINDOW
    if isinstance(discard, bool) or not isinstance(discard, (int, np.integer)) or not 0 <= discard <= largest:
        raise ValueError(
            f"`discard` (transient blocks left out) must be an integer in [0, depth − {MIN_WINDOW}] = "
            f"[0, {largest}], got discard={discard!r}"
        )
    return int(discard)


# --------------------------------------------------------------------------- the search


def _crossings(x: np.ndarray, r: np.ndarray) -> list[int]:
    """Cells k with a sign change of r between x[k] and x[k+1] (finite rates only)."""
    return [
        k
        for k in range(len(x) - 1)
        if np.isfinite(r[k]) and np.isfinite(r[k + 1]) and (r[k] == 0 or np.sign(r[k]) != np.sign(r[k + 1]))
    ]


def _root(x: np.ndarray, r: np.ndarray, se: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """(root, its SE, slope, interpolation error) in cell k of the grid x."""
    slope = (r[k + 1] - r[k]) / (x[k + 1] - x[k])
    root = x[k] - r[k] / slope if slope != 0 else 0.5 * (x[k] + x[k + 1])
    t = (root - x[k]) / (x[k + 1] - x[k])
    rate_se = (1 - t) * se[k] + t * se[k + 1]
    third = k - 1 if k >= 1 and (k + 2 >= len(x) or abs(r[k - 1]) <= abs(r[k + 2])) else k + 2
    error = 0.0
    if 0 <= third < len(x) and np.isfinite(r[third]):
        i = sorted((k, k + 1, third))
        coeffs = np.polyfit(x[i], r[i], 2)
        roots = [z.real for z in np.roots(coeffs) if abs(z.imag) < 1e-12 and x[k] <= z.real <= x[k + 1]]
        if roots:
            error = abs(min(roots, key=lambda z: abs(z - root)) - root)
    return float(root), float(rate_se / abs(slope)) if slope else math.inf, float(slope), float(error)


def critical_point(
    net_or_builder: Network | Callable[..., Network],
    *,
    hyper: str,
    bracket: tuple[float, float],
    depth: int | None = None,
    samples: int = 256,
    seed: int = 0,
    criterion: str = "mean_square",
    points: int = 9,
    refine: int = 1,
    discard: int | None = None,
    interval_se: float = 4.0,
    target: float = 0.0,
    tolerance: float | None = None,
    isometry: bool = False,
    dtype: DTypeLike | None = None,
    verify: bool = True,
) -> CriticalPoint:
    r"""The value of one traced hyperparameter at which the gains grow neither up nor down with depth.

    Arguments:
      net_or_builder: a `jaxgrad.Network` whose layers carry `hyper` as a traced value
        (``jaxgrad.mlp``'s ``"sigma_w"``, ``jaxgrad.resnet``'s ``"a"``, an adapter's own
        ``hyper=`` entry), or a builder ``builder(**{hyper: value}) -> Network`` (also
        given ``depth=`` when `depth` is set).
      hyper: the hyperparameter's name.
      bracket: (lo, hi), finite, lo < hi: where to look.
      depth: the number of blocks (default: the network's; a network is cut to it).
      samples: initialisations per value (≥ 8).
      seed: the initialisations are (seed, i), i < samples, the same at every value.
      criterion: ``"mean_square"`` (½ ln E g², χ₁ = 1 in mean field) or ``"typical"``
        (E ln g, the top Lyapunov exponent at finite width); the module docstring says how
        they differ.
      points: values per grid (≥ 3): the bracket, then each refinement of the bracketing cell.
      refine: refinements of the bracketing cell (≥ 0).
      discard: transient blocks left out of the rate (default depth // 4).
      target: the rate per block to reach (default 0, criticality). A network with no zero, a
        pre-norm residual one whose rate is positive at every scale, can be tuned to a growth
        it can afford instead: ``target=math.log(2) / depth`` doubles the gain over the depth.
      interval_se: k of the interval $\hat x \pm (k\,\mathrm{SE} + e)$ (default 4).
      tolerance: if given, the largest interval half-width acceptable: a wider one raises a
        `ValueError` that says how many samples would suffice (measured, so after the sweeps).
      isometry: also measure every singular value of $J_L\cdots J_1$ at the value found (one
        `jaxgrad.simulate` with ``method="svd"``, the same initialisations): does criticality give
        dynamical isometry for this network? (`Isometry`; build the network with orthogonal
        weights to compare.)
      dtype: ``"float32"`` (default) or ``"float64"``.
      verify: the engine's self-check (`jaxgrad.simulate`) on the first sweep.

    Returns:
      A `CriticalPoint`; ``found`` is False, with the rates at the bracket's ends in its
      ``message``, when the rate does not change sign in the bracket.

    Raises:
      ValueError: before any compile, for a `hyper` the network does not have, a bracket
        that is empty, reversed or not finite, a `criterion` not in `CRITERIA`, too few
        samples, a depth that leaves fewer than 2 blocks after the transient, or a builder
        that does not accept the hyperparameter; after the sweeps, for an interval wider
        than `tolerance`.

    Example:
      >>> net = jaxgrad.mlp(width=128, depth=32, activation="tanh", sigma_w=1.0, sigma_b=math.sqrt(0.05))
      >>> crit = jaxgrad.critical_point(net, hyper="sigma_w", bracket=(1.0, 1.6))
      >>> crit.value, crit.interval        # mean field: theory.critical_sigma_w("tanh", √0.05) = 1.327
    """
    if not isinstance(hyper, str) or not hyper:
        raise ValueError(f"`hyper` must be the name of a traced hyperparameter (a string), got hyper={hyper!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"unknown `criterion`={criterion!r}; valid choices are {list(CRITERIA)}")
    lo, hi = _check_bracket(bracket)
    samples = _check_int("samples", samples, MIN_SAMPLES, " (the rate's standard error needs them)")
    points = _check_int("points", points, 3, " (a bracketing cell and a third point for the interpolation error)")
    refine = _check_int("refine", refine, 0)
    if isinstance(interval_se, bool) or not isinstance(interval_se, (int, float)) or not 0 < interval_se < math.inf:
        raise ValueError(f"`interval_se` must be a positive finite number, got interval_se={interval_se!r}")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
        raise ValueError(f"`target` (the rate per block to reach) must be a finite number, got target={target!r}")
    target = float(target)
    if tolerance is not None and (
        isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < math.inf
    ):
        raise ValueError(f"`tolerance` must be None or a positive finite number, got tolerance={tolerance!r}")
    if depth is not None:
        _check_int("depth", depth, MIN_WINDOW, f" (at least {MIN_WINDOW} blocks to measure a rate over)")
    net = _network(net_or_builder, hyper, lo, hi, depth)
    L = net.depth
    if L < MIN_WINDOW:
        raise ValueError(f"`depth` must be at least {MIN_WINDOW} blocks to measure a rate over, got depth={L}")
    discard = _check_discard(discard, L)

    def measure(values, check):
        r = growth_rates(
            net,
            hyper=hyper,
            values=values,
            samples=samples,
            seed=seed,
            criterion=criterion,
            discard=discard,
            dtype=dtype,
            verify=check,
        )
        return r._replace(rates=r.rates - target)  # the search runs on rate − target

    grid = np.linspace(lo, hi, points)
    measured = measure(grid, verify)
    xs, rs, ses, bad = [grid], [measured.rates], [measured.rate_se], [measured.nonfinite]
    cells = _crossings(grid, measured.rates)
    others = (
        ""
        if len(cells) < 2
        else (
            f" The rate also changes sign in {len(cells) - 1} other cell(s) of the first grid, first at "
            f"{grid[cells[1]]:.6g}..{grid[cells[1] + 1]:.6g}: the first zero is reported."
        )
    )
    for _ in range(refine if cells else 0):
        k = cells[0]
        grid = np.linspace(grid[k], grid[k + 1], points)
        measured = measure(grid, False)
        xs.append(grid)
        rs.append(measured.rates)
        ses.append(measured.rate_se)
        bad.append(measured.nonfinite)
        cells = _crossings(grid, measured.rates)
        if not cells:  # a non-finite rate inside the cell hides the sign change: keep the coarser grid
            break
    # every value once (a refinement's ends are values already measured, bit for bit: the sweep's contract)
    values, first = np.unique(np.concatenate(xs), return_index=True)
    rates, rate_se, nonfinite = (np.concatenate(a)[first] for a in (rs, ses, bad))
    common = dict(
        hyper=hyper,
        criterion=criterion,
        bracket=(lo, hi),
        depth=L,
        samples=samples,
        discard=discard,
        values=values,
        rates=rates + target,
        rate_se=rate_se,
        nonfinite=nonfinite,
        depths=np.arange(1, L + 1),
        grid=grid,
        log_gain_mean=measured.log_gain_mean,
        log_gain_quantiles=measured.log_gain_quantiles,
    )
    per = "per block" if criterion == "typical" else "per block (½ ln E g²)"
    if not cells:
        cells = _crossings(values, rates)  # a refinement that lost its crossing: use every value measured
        x_last, r_last, se_last = values, rates, rate_se
    else:
        x_last, r_last, se_last = grid, measured.rates, measured.rate_se
    if not cells:
        ends = (
            f"rate({lo:g}) = {rates[0] + target:+.4g} ± {rate_se[0]:.2g} and rate({hi:g}) = "
            f"{rates[-1] + target:+.4g} ± {rate_se[-1]:.2g} {per}"
        )
        sign = np.sign(rates[np.isfinite(rates)])
        than = "" if target == 0 else f" than the target {target:+.4g}"
        phase = (
            f"the rate is {'negative (the gains vanish)' if not than else 'lower'}{than} everywhere in it"
            if sign.size and (sign < 0).all()
            else f"the rate is {'positive (the gains explode)' if not than else 'higher'}{than} everywhere in it"
            if sign.size and (sign > 0).all()
            else "no finite sign change was measured"
        )
        what = f"critical {hyper}" if not than else f"{hyper} at rate {target:+.4g}"
        message = (
            f"no {what} in the bracket [{lo:g}, {hi:g}] ({criterion}, depth {L}, {samples} samples): "
            f"{phase}; {ends}."
            + (f" {int(nonfinite.sum())} initialisation(s) gave a non-finite rate." if nonfinite.any() else "")
        )
        return CriticalPoint(
            found=False,
            value=math.nan,
            se=math.nan,
            interval=(math.nan, math.nan),
            slope=math.nan,
            message=message,
            **common,
        )
    root, se, slope, error = _root(x_last, r_last, se_last, cells[0])
    half = interval_se * se + error
    if tolerance is not None and half > tolerance:
        if error >= tolerance:
            raise ValueError(
                f"tolerance={tolerance:g} is below the interpolation error {error:.3g} of this grid: "
                f"raise `points` or `refine`"
            )
        factor = (interval_se * se / (tolerance - error)) ** 2 if math.isfinite(se) else math.inf
        more = (
            f"about samples={math.ceil(samples * factor)}, or about {math.ceil((L - discard) * factor)} blocks "
            f"after the transient (depth={discard + math.ceil((L - discard) * factor)}), would suffice: the "
            f"half-width falls as 1/√samples, and about as 1/√(depth − discard) where the blocks' gains are "
            f"weakly correlated"
            if math.isfinite(factor)
            else "the measured slope is zero: widen the bracket"
        )
        raise ValueError(
            f"`samples`={samples} and depth={L} ({L - discard} blocks after the transient) give an "
            f"interval half-width of {half:.3g} for {hyper}, wider than tolerance={tolerance:g}: {more}"
        )
    name = f"critical {hyper}" if target == 0 else f"{hyper} at rate {target:+.4g}"
    message = (
        f"{name} = {root:.6g} ± {se:.2g} (interval {root - half:.6g} .. {root + half:.6g}, "
        f"{interval_se:g} SE + interpolation {error:.1g}; {criterion} rate {per}, depth {L}, {samples} samples, "
        f"slope {slope:.3g} per unit).{others}"
        + (f" {int(nonfinite.sum())} initialisation(s) gave a non-finite rate." if nonfinite.any() else "")
    )
    spectrum = _isometry(net, hyper, root, samples, seed, dtype, verify) if isometry else None
    return CriticalPoint(
        found=True,
        value=root,
        se=se,
        interval=(root - half, root + half),
        slope=slope,
        message=message,
        isometry=spectrum,
        **common,
    )


def _isometry(net: Network, hyper: str, value: float, samples: int, seed: int, dtype, verify: bool) -> Isometry:
    """Every singular value of the whole product at `value`, by `simulate(method="svd")`."""
    from jaxgrad.engine import simulate

    at = _grid_points(net, {hyper: [value]})[2][0][0]
    r = simulate(
        at,
        samples,
        seed,
        method="svd",
        spectrum_at=[at.depth],
        fields=["log_spectral_norm"],
        dtype=dtype,
        verify=verify,
    )
    s = np.asarray(r.log_singular_values[at.depth], np.float64)
    spread = s.std(axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):
        variance, variance_se = pooled_variance(np.exp(2 * s))
        mean = float(np.exp(2 * s).mean())
    return Isometry(s, float(spread.mean()), float(spread.std(ddof=1) / math.sqrt(len(s))), variance, variance_se, mean)

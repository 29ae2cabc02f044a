r"""The experiments: one module per study, found automatically.

Adding a study means adding one file, ``experiments/<name>.py``; nothing else to edit.
Every module in this package whose name does not start with ``_`` and that defines
``NAME`` is an experiment; shared helpers go in ``_name.py`` modules (``_common.py``) or
define no ``NAME`` (``gallery.py``).

The protocol
------------
An experiment module defines, at top level::

    NAME: str      # == the module's file name, e.g. "quadratic_stability"
    SECTION: str   # the seed section(s) it reproduces, e.g. "§1", "§4.1" or "§3, §5"
    TITLE: str     # one line, shown by `jaxgrad list` and in results/README.md

    @dataclasses.dataclass(frozen=True)
    class Config:
        # fields of type int, float, bool, str, Literal[...], X | None or tuple[X, ...]
        # with defaults; `jaxgrad run NAME --set field=value` converts the string to
        # the field's type (tuples comma-separated) and calls dataclasses.replace,
        # so __post_init__ must validate and raise ValueError naming the field,
        # the value and the valid range: f"`steps` must be positive, got {steps=}".
        def __post_init__(self): ...
        @classmethod
        def quick(cls) -> "Config": ...   # a laptop CPU in about a minute
        @classmethod
        def full(cls) -> "Config": ...    # the accelerator-scale run

    def points(config: Config) -> list[dict]:
        # The sweep: small JSON-able dicts of str/int/float/bool, e.g. {"depth": 50}.
        # Each finished point is stored atomically as results/NAME/points/<id>.npz, so
        # an interrupted sweep resumes. Make points coarse enough that each is one
        # compiled call worth its file (a depth, an optimiser), not one sample.

    def run_point(config: Config, point: dict, key: jax.Array) -> dict[str, np.ndarray]:
        # The computation. Pure: the result is a function of (config, point, key)
        # alone; `key` is derived from (--seed, the point's id), not from sweep order.
        # Returns measurements only; theory is computed where it is compared.

    def summarize(config: Config, results: list[tuple[dict, dict[str, np.ndarray]]]
                  ) -> tuple[list[dict], dict[str, np.ndarray]]:
        # From [(point, arrays), ...] in `points` order: the rows of summary.csv
        # (tidy: one row per measured point, plain str/int/float values) and the
        # arrays `plot` and `comparisons` read (stored as data.npz).

    def plot(data: dict[str, np.ndarray], config: Config, outdir: pathlib.Path
             ) -> list[jaxgrad.plotting.Figure]:
        # Reads `data` only (never recomputes). Uses jaxgrad.plotting (the runner
        # wraps it in plotting.style()), saves with plotting.save_figure(fig, outdir,
        # stem) and returns Figure(stem, caption) for each figure, in gallery order.

    def comparisons(data: dict[str, np.ndarray], config: Config
                    ) -> list[jaxgrad.stats.Comparison]:
        # Measured against predicted: Comparison(quantity, measured, predicted,
        # tolerance); it passes iff |measured − predicted| ≤ tolerance. Say in the
        # quantity's text where the tolerance comes from (standard errors, grid step).

    def run(config: Config | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        # Convenience: every point in memory, no store. Always the one-liner
        #     return experiments.runner.compute(sys.modules[__name__], config or Config.quick(), seed)

The module docstring names the seed section it reproduces and the command that runs
it (``jaxgrad run NAME``) with how long the quick scale takes. Library code lives in
``jaxgrad/``; an experiment is short and declarative. ``experiments/quadratic_stability.py``
is the worked example.

The command line drives the protocol: ``jaxgrad run NAME [--scale quick|full]
[--seed N] [--set k=v ...] [--out DIR] [--force]``, ``jaxgrad figures [NAME ...]``,
``jaxgrad reproduce``; `discover` validates each module when it is first listed, so a
module that misses part of the protocol fails loudly, naming what is missing.

What the runner (`experiments.runner.run_experiment`) guarantees: every float field of
the Config is finite before any work; stored points are reused only when the stored
manifest has the same config and seed (otherwise, or with ``--force``, they are
discarded); an unreadable stored point is named and recomputed, an unreadable manifest
stops the run (naming the file) rather than discard the points it describes; every file
is replaced atomically; the manifest's ``status`` is ``running`` until the run
completes, and its ``wall_seconds`` counts every attempt that a resume continues. Sections in `discover` and in
results/README.md are ordered by the numbers in SECTION (§3 < §3, §5 < §4.1), then NAME.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import pkgutil
import re
import types
import typing
from collections.abc import Sequence

PROTOCOL = ("NAME", "SECTION", "TITLE", "Config", "points", "run_point", "summarize", "plot", "comparisons", "run")
SCALES = ("quick", "full")


def _section_key(module) -> tuple:
    numbers = re.findall(r"\d+", module.SECTION)
    return (tuple(int(n) for n in numbers) if numbers else (float("inf"),), module.NAME)


def _validate(module) -> None:
    short = module.__name__.rsplit(".", 1)[-1]
    missing = [name for name in PROTOCOL if not hasattr(module, name)]
    if missing:
        raise TypeError(
            f"experiment module {module.__name__} misses {missing} of the protocol "
            f"(see the docstring of experiments/__init__.py)"
        )
    if module.NAME != short:
        raise TypeError(f"{module.__name__}.NAME must equal the module name {short!r}, got NAME={module.NAME!r}")
    cfg = module.Config
    if not (dataclasses.is_dataclass(cfg) and cfg.__dataclass_params__.frozen):
        raise TypeError(f"{module.__name__}.Config must be a frozen dataclass")
    for scale in SCALES:
        if not callable(getattr(cfg, scale, None)):
            raise TypeError(f"{module.__name__}.Config needs a classmethod {scale}()")


@functools.cache
def discover() -> dict[str, types.ModuleType]:
    """All experiment modules, by name, ordered by seed section then name."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME"):
            _validate(module)
            found.append(module)
    return {m.NAME: m for m in sorted(found, key=_section_key)}


def get(name: str) -> types.ModuleType:
    """The experiment called `name`; ValueError listing the valid names otherwise."""
    registry = discover()
    if name not in registry:
        raise ValueError(f"unknown experiment {name!r}; choose from: {', '.join(registry) or '(none)'}")
    return registry[name]


def preset(experiment, scale: str):
    """``experiment.Config.quick()`` or ``.full()``."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from: {', '.join(SCALES)}")
    config = getattr(experiment.Config, scale)()
    require_finite(config)
    return config


def _require_finite(key: str, value) -> None:
    values = value if isinstance(value, tuple) else (value,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise ValueError(f"`{key}` must be finite, got {key}={value!r}")


def require_finite(config) -> None:
    """ValueError naming the first float field of `config` (or tuple element) that is inf or nan.

    Every study gets this check before any work (the CLI's ``--set``, the presets,
    `experiments.runner`): ``float("inf")`` parses, and most ``__post_init__`` range
    checks (``x > 0``) let it through, to fail only after points have been computed.
    """
    for field in dataclasses.fields(config):
        _require_finite(field.name, getattr(config, field.name))


# --------------------------------------------------------------------------- config values

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def parse_value(text: str, annotation, key: str):
    """Convert the string `text` to a value of type `annotation` (the field `key`'s type)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ValueError(f"{key}={text!r} is not one of: {', '.join(map(str, args))}")
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return parse_value(text, inner, key)
    if origin is tuple:
        inner = args[0] if args else str
        return tuple(parse_value(part.strip(), inner, key) for part in text.split(",") if part.strip())
    if annotation is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"{key}={text!r} must be a bool: true or false")
    if annotation in (int, float, str):
        try:
            return annotation(text)
        except ValueError:
            raise ValueError(f"{key}={text!r} must be {annotation.__name__}") from None
    raise ValueError(f"{key} has type {annotation}, which --set cannot parse")


def with_overrides(config, assignments: Sequence[str]):
    """``config`` with ``key=value`` assignments applied (and validated by ``__post_init__``).

    Raises:
      ValueError: malformed assignment, unknown key (the message lists the valid
        keys), a value of the wrong type, a non-finite number (`require_finite`), or
        one ``Config.__post_init__`` rejects.
    """
    hints = typing.get_type_hints(type(config))
    fields = [f.name for f in dataclasses.fields(config)]
    changes = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set expects key=value, got {assignment!r}; valid keys: {', '.join(fields)}")
        if key not in fields:
            raise ValueError(f"unknown --set key {key!r}; valid keys: {', '.join(fields)}")
        changes[key] = parse_value(text.strip(), hints[key], key)
        _require_finite(key, changes[key])  # before __post_init__ sees it (int(inf) would overflow there)
    try:
        config = dataclasses.replace(config, **changes)
    except (TypeError, OverflowError) as error:  # a __post_init__ comparing or converting a wrong value
        raise ValueError(f"invalid --set {', '.join(assignments)}: {error}") from None
    require_finite(config)
    return config


def config_from_dict(cls, values: dict):
    """Rebuild a Config from its manifest form (JSON lists back to tuples)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})

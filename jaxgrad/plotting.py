r"""The figure style shared by every experiment.

Theory is drawn as lines over measured data (markers or bands); axes are labelled and
logarithmic where growth is exponential; colours come from the Okabe–Ito palette, which
stays distinguishable under the common colour-vision deficiencies (Okabe & Ito 2008).
Figures are `matplotlib.figure.Figure` objects drawn on the Agg canvas (no pyplot, no
global backend switch) and saved as PNG and PDF by atomic writes.

Usage inside an experiment's ``plot(data, config, outdir)`` (the runner already wraps
it in `style()`)::

    fig, ax = subplots()
    theory_line(ax, t, closed, label="closed form", color=PALETTE[0])
    measured_points(ax, t, measured, label="optax", color=PALETTE[0])
    label_axes(ax, "step $t$", r"$|\theta_t|$", ylog=True)
    save_figure(fig, outdir, "trajectories")
    return [Figure("trajectories", "θ_t for the seed's multipliers …")]
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import matplotlib
from cycler import cycler  # a dependency of matplotlib (matplotlib.cycler is not in its type stubs)
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from jaxgrad.store import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D
    from matplotlib.typing import ColorType, RcKeyType
    from numpy.typing import ArrayLike

__all__ = [
    "DIVERGING_CMAP",
    "Figure",
    "OKABE_ITO",
    "PALETTE",
    "STYLE",
    "THEORY_COLOR",
    "label_axes",
    "measured_band",
    "measured_points",
    "save_figure",
    "style",
    "subplots",
    "theory_line",
]

OKABE_ITO = {
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "black": "#000000",
}
# Line order: the most distinguishable first; yellow (weak on white) last.
PALETTE = tuple(
    OKABE_ITO[c] for c in ("blue", "orange", "green", "vermillion", "purple", "sky_blue", "black", "yellow")
)
# Diverging map for signed quantities (growth rates): purple–orange is colour-blind safe.
DIVERGING_CMAP = "PuOr_r"
THEORY_COLOR = OKABE_ITO["black"]

STYLE: dict[RcKeyType, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.framealpha": 0.85,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.prop_cycle": cycler(color=list(PALETTE)),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.6,
    "lines.markersize": 4.5,
    "savefig.dpi": 200,
}


class Figure(NamedTuple):
    """A saved figure: files ``<stem>.png`` and ``<stem>.pdf`` and the caption the gallery shows."""

    stem: str
    caption: str


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Context in which figures get the house style (rcParams are read at artist creation)."""
    with matplotlib.rc_context(STYLE):
        yield


def subplots(
    nrows: int = 1, ncols: int = 1, *, width: float = 4.2, height: float = 3.2, **kwargs: Any
) -> tuple[MplFigure, Any]:
    """A constrained-layout figure of ``nrows × ncols`` panels, each ``width × height`` inches.

    Returns:
      ``(fig, axes)`` as `matplotlib.pyplot.subplots` would (``squeeze`` applies).
    """
    fig = MplFigure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def theory_line(
    ax: Axes, x: ArrayLike, y: ArrayLike, *, label: str | None = None, color: ColorType = THEORY_COLOR, **kwargs: Any
) -> list[Line2D]:
    """A closed-form prediction: a solid line drawn above the measurements."""
    kwargs.setdefault("zorder", 3)
    return ax.plot(x, y, color=color, label=label, **kwargs)


def measured_points(
    ax: Axes,
    x: ArrayLike,
    y: ArrayLike,
    *,
    label: str | None = None,
    color: ColorType = PALETTE[0],
    marker: str = "o",
    **kwargs: Any,
) -> list[Line2D]:
    """Measurements as unjoined markers (hollow by default, so the theory line shows through)."""
    kwargs.setdefault("markerfacecolor", "none")
    kwargs.setdefault("markeredgewidth", 1.0)
    kwargs.setdefault("zorder", 2)
    return ax.plot(x, y, linestyle="none", marker=marker, color=color, label=label, **kwargs)


def measured_band(
    ax: Axes,
    x: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    *,
    label: str | None = None,
    color: ColorType = PALETTE[0],
    center: ArrayLike | None = None,
    **kwargs: Any,
) -> PolyCollection:
    """A measured spread (quantiles, ± standard errors) as a translucent band, with an optional centre line."""
    kwargs.setdefault("alpha", 0.25)
    band = ax.fill_between(x, lower, upper, color=color, linewidth=0, label=label, zorder=1, **kwargs)
    if center is not None:
        ax.plot(x, center, color=color, linewidth=1.0, alpha=0.8, zorder=1)
    return band


def label_axes(
    ax: Axes,
    xlabel: str,
    ylabel: str,
    *,
    title: str | None = None,
    xlog: bool = False,
    ylog: bool = False,
    legend: bool = True,
) -> Axes:
    """Axis labels (always), log scales where asked, title and legend (if any labelled artist)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xlog:
        ax.set_xscale("log")
    if ylog:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend()
    return ax


def save_figure(fig: MplFigure, outdir: str | os.PathLike[str], stem: str) -> list[Path]:
    """Save ``<outdir>/<stem>.png`` and ``.pdf`` atomically (a killed save leaves the old files).

    PDF metadata omits the creation date so re-drawing identical data gives identical files.
    """
    paths = []
    for fmt, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, metadata=metadata)
        paths.append(atomic_write(Path(outdir) / f"{stem}.{fmt}", buffer.getvalue()))
    return paths

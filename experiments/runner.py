r"""The study runner: run an experiment's points into a `jaxgrad.store.Store`, resume, draw.

Library code (the store, the plotting style) is in `jaxgrad`; this module drives the
experiment protocol of `experiments/__init__.py` with it.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time

import numpy as np

from jaxgrad import cluster, plotting
from jaxgrad.progress import Progress
from jaxgrad.store import (Store, _jsonable, _now, environment, point_id, point_key, read_npz, write_csv,
                           write_json, write_npz)

__all__ = ["compute", "draw_figures", "run_experiment"]


def _as_arrays(pid: str, arrays) -> dict[str, np.ndarray]:
    if not isinstance(arrays, dict) or not all(isinstance(k, str) for k in arrays):
        raise TypeError(f"run_point must return dict[str, array] for point {pid!r}, got {type(arrays).__name__}")
    return {k: np.asarray(v) for k, v in arrays.items()}


def _point_ids(experiment, config) -> list[tuple[str, dict]]:
    points = experiment.points(config)
    ids = [point_id(p) for p in points]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{experiment.NAME}.points() returned duplicate points: {ids}")
    return list(zip(ids, points))


def compute(experiment, config, seed: int = 0) -> dict[str, np.ndarray]:
    """Every point in memory, nothing stored: the arrays ``plot`` reads (an experiment's ``run``)."""
    results = [(p, _as_arrays(pid, experiment.run_point(config, p, point_key(seed, pid))))
               for pid, p in _point_ids(experiment, config)]
    return dict(experiment.summarize(config, results)[1])


def run_experiment(experiment, config, *, store: Store, seed: int = 0, scale: str = "custom",
                   overrides=(), force: bool = False, progress: bool = True, command: str | None = None) -> dict:
    """Run (or finish) one experiment into `store`: points, summary, comparisons, manifest.

    Points already stored under the same config and seed are loaded, not recomputed,
    unless `force`. The manifest says ``running`` while it runs, then ``complete``,
    ``interrupted`` (Ctrl-C) or ``failed`` (a kill leaves ``running``). When resuming,
    ``started`` is the first attempt's, ``wall_seconds`` the total over all attempts
    and ``attempts`` counts them; ``points`` says what this attempt computed.

    Returns:
      The final manifest.
    """
    writer = cluster.is_writer()  # in a multi-process run only process 0 reads or writes files
    pairs = _point_ids(experiment, config)
    identity = dict(config=json.loads(json.dumps(dataclasses.asdict(config), default=_jsonable)), seed=seed)
    previous = (store.read_manifest() or {}) if writer else {}
    same = {k: previous.get(k) for k in identity} == identity
    if writer and (force or not same):
        shutil.rmtree(store.points, ignore_errors=True)  # stale or unwanted: start over
    if writer:
        store.points.mkdir(parents=True, exist_ok=True)
    # Which points to resume is the writer's decision, so that every process computes the same points.
    # The others may wait here long, while the writer summarises the previous study: the broadcast
    # has no short deadline (a dead process is caught by JAX's heartbeat).
    stored = set(cluster.broadcast_from_writer(
        [pid for pid, _ in pairs if store.point_path(pid).exists()] if writer else None))

    start, resuming = time.monotonic(), same and not force
    earlier = float(previous.get("wall_seconds") or 0.0) if resuming else 0.0  # time spent on stored points
    manifest = dict(experiment=experiment.NAME, section=experiment.SECTION, title=experiment.TITLE,
                    scale=scale, overrides=list(overrides), **identity, **environment(),
                    command=command,
                    started=previous.get("started") if resuming else _now(), finished=None,
                    wall_seconds=None, attempts=previous.get("attempts", 1) + 1 if resuming else 1,
                    status="running", points=dict(total=len(pairs), computed=0, resumed=0),
                    figures=previous.get("figures", []) if same else [])
    if writer:
        write_json(store.manifest, manifest)
    try:
        results = []
        with Progress(len(pairs), experiment.NAME, enabled=progress) as bar:
            for pid, point in pairs:
                path = store.point_path(pid)
                if pid in stored:
                    arrays = read_npz(path) if writer else None
                    manifest["points"]["resumed"] += 1
                else:
                    bar.describe(pid)
                    arrays = _as_arrays(pid, experiment.run_point(config, point, point_key(seed, pid)))
                    if writer:
                        write_npz(path, arrays)
                    manifest["points"]["computed"] += 1
                results.append((point, arrays))
                bar.advance(pid)
        if writer:
            rows, data = experiment.summarize(config, results)
            write_csv(store.summary, rows)
            write_npz(store.data, data)
            write_csv(store.comparisons, [c.row() for c in experiment.comparisons(data, config)])
        manifest["status"] = "complete"
    except BaseException as error:
        manifest["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        manifest["error"] = f"{type(error).__name__}: {error}"
        raise
    finally:
        manifest.update(finished=_now(), wall_seconds=round(earlier + time.monotonic() - start, 3))
        if writer:
            write_json(store.manifest, manifest)
    return manifest


def draw_figures(experiment, config, *, store: Store) -> list:
    """Redraw an experiment's figures from ``data.npz`` alone (no recomputation).

    Also refreshes ``comparisons.csv`` and records the figures in the manifest.

    Raises:
      FileNotFoundError: nothing stored yet (run the experiment first).
    """
    if not store.data.exists():
        raise FileNotFoundError(f"no stored results for {experiment.NAME} in {store.dir} "
                                f"(run `jaxgrad run {experiment.NAME}` first)")
    data = read_npz(store.data)
    with plotting.style():
        figures = [plotting.Figure(*f) for f in experiment.plot(data, config, store.dir)]
    write_csv(store.comparisons, [c.row() for c in experiment.comparisons(data, config)])
    manifest = store.read_manifest() or {}
    manifest["figures"] = [f._asdict() for f in figures]
    write_json(store.manifest, manifest)
    return figures

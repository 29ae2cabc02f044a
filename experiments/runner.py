r"""The study runner: run an experiment's points into a `jaxgrad.store.Store`, resume, draw.

Library code (the store, the plotting style) is in `jaxgrad`; this module drives the
experiment protocol of `experiments/__init__.py` with it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time

import numpy as np

from jaxgrad import cluster, plotting
from jaxgrad.progress import Progress
from jaxgrad.store import (
    Store,
    UnreadableFileError,
    _jsonable,
    _now,
    environment,
    point_id,
    point_key,
    read_npz,
    write_csv,
    write_json,
    write_npz,
)
import experiments

__all__ = ["compute", "draw_figures", "outcome", "run_experiment"]


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
    experiments.require_finite(config)
    results = [
        (p, _as_arrays(pid, experiment.run_point(config, p, point_key(seed, pid))))
        for pid, p in _point_ids(experiment, config)
    ]
    return dict(experiment.summarize(config, results)[1])


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _previous_manifest(experiment, store: Store, force: bool) -> dict:
    """The stored manifest ({} if none); stops rather than discard points it cannot match."""
    try:
        return store.read_manifest() or {}
    except UnreadableFileError as error:
        finished = sorted(store.points.glob("*.npz")) if store.points.is_dir() else []
        if force or not finished:  # nothing would be kept anyway
            _say(f"{experiment.NAME}: {error}; no finished points to keep, so this is a new run")
            return {}
        raise error.with_remedy(
            f"without it the {len(finished)} finished points in {store.points} cannot be matched to a config "
            "and seed; restore the file (e.g. from git), or rerun with --force to discard them and recompute"
        ) from None


def _resumable_points(experiment, store: Store, pairs) -> tuple[dict, list[str]]:
    """({point id: arrays} of the readable stored points, the unreadable files, each said on stderr)."""
    loaded, unreadable = {}, []
    for pid, _ in pairs:
        path = store.point_path(pid)
        if not path.exists():
            continue
        try:
            loaded[pid] = read_npz(path)
        except UnreadableFileError as error:
            unreadable.append(path.name)
            _say(f"{experiment.NAME}: {error}; recomputing this point (the other stored points are kept)")
    return loaded, unreadable


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and values (NaN equal to NaN where there can be one)."""
    nan = np.issubdtype(a.dtype, np.inexact)
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=nan)


def _unreadable_back(store: Store, results: list[tuple[str, dict]]) -> list[list[str]]:
    """[path, reason] for each point file of this run that does not read back equal to its arrays."""
    bad = []
    for pid, arrays in results:
        path = store.point_path(pid)
        try:
            stored = read_npz(path)
        except (FileNotFoundError, UnreadableFileError) as error:
            bad.append([str(path), error.reason if isinstance(error, UnreadableFileError) else "missing"])
            continue
        if stored.keys() != arrays.keys() or not all(_same(stored[k], arrays[k]) for k in arrays):
            bad.append([str(path), "its arrays differ from the ones written"])
    return bad


def outcome(manifest: dict) -> str:
    """One line on a finished run: this attempt's time, the points, and the total when it resumed.

    ``weight_norm: complete in 70.2 s (0 points computed, 18 resumed), 463.3 s over 3 attempts``
    """
    points, attempts = manifest["points"], manifest.get("attempts", 1)
    this = manifest.get("attempt_seconds", manifest["wall_seconds"])
    line = (
        f"{manifest['experiment']}: {manifest['status']} in {this:.1f} s "
        f"({points['computed']} points computed, {points['resumed']} resumed)"
    )
    return line + (f", {manifest['wall_seconds']:.1f} s over {attempts} attempts" if attempts > 1 else "")


def run_experiment(
    experiment,
    config,
    *,
    store: Store,
    seed: int = 0,
    scale: str = "custom",
    overrides=(),
    force: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Run (or finish) one experiment into `store`: points, summary, comparisons, manifest.

    Points already stored under the same config and seed are loaded, not recomputed,
    unless `force`; a stored point that cannot be read is named on stderr and
    recomputed. The manifest says ``running`` while it runs, then ``complete``,
    ``interrupted`` (Ctrl-C) or ``failed`` (a kill leaves ``running``).

    Provenance: a run that resumes at least one stored point continues the previous
    record: ``started`` is the first attempt's, ``attempts`` counts them and
    ``wall_seconds`` is the total over all attempts (rewritten after every computed
    point, so a killed attempt loses at most one point's time). A run that resumes
    nothing (a fresh clone, whose committed manifest has no ``points/``) is a new
    run: its own start, one attempt, its own time. ``points`` says what this attempt
    computed and resumed; ``attempt_seconds`` is this attempt's time alone
    (`outcome` says both).

    The run is marked ``complete`` only once every point file of this run reads
    back equal to the arrays it holds; a file damaged during the run fails it
    (``failed``, UnreadableFileError naming the file), and the next run recomputes
    that point.

    Raises:
      ValueError: a non-finite number in `config`, before any work.
      UnreadableFileError: a point file of this run did not read back at the end (nothing
        derived from the points is written then).
      UnreadableFileError: the stored manifest is unreadable while points are stored
        (they cannot be matched to a config; nothing is discarded).

    Returns:
      The final manifest.
    """
    experiments.require_finite(config)
    writer = cluster.is_writer()  # in a multi-process run only process 0 reads or writes files
    pairs = _point_ids(experiment, config)
    identity = dict(config=json.loads(json.dumps(dataclasses.asdict(config), default=_jsonable)), seed=seed)
    previous, loaded, unreadable, error = {}, {}, [], None
    if writer:
        try:
            previous = _previous_manifest(experiment, store, force)
        except UnreadableFileError as caught:
            error = caught
    same = {k: previous.get(k) for k in identity} == identity
    if writer and error is None:
        if force or not same:
            shutil.rmtree(store.points, ignore_errors=True)  # stale or unwanted: start over
        store.points.mkdir(parents=True, exist_ok=True)
        loaded, unreadable = _resumable_points(experiment, store, pairs)
    # Which points to resume is the writer's decision, so that every process computes the same points
    # (and stops together if it cannot decide). The others may wait here long, while the writer
    # summarises the previous study: the broadcast has no short deadline (a dead process is caught by
    # JAX's heartbeat).
    decision = cluster.broadcast_from_writer(
        (dict(error=[str(error.path), error.reason, error.remedy]) if error else dict(stored=list(loaded)))
        if writer
        else None
    )
    if "error" in decision:
        raise error or UnreadableFileError(*decision["error"])
    stored = set(decision["stored"])

    start, resuming = time.monotonic(), same and not force and bool(stored)
    earlier = float(previous.get("wall_seconds") or 0.0) if resuming else 0.0  # time spent by earlier attempts
    manifest = dict(
        experiment=experiment.NAME,
        section=experiment.SECTION,
        title=experiment.TITLE,
        scale=scale,
        overrides=list(overrides),
        **identity,
        **environment(),
        command=command,
        started=previous.get("started") if resuming else _now(),
        finished=None,
        wall_seconds=earlier,
        attempts=previous.get("attempts", 1) + 1 if resuming else 1,
        status="running",
        points=dict(total=len(pairs), computed=0, resumed=0),
        figures=previous.get("figures", []) if same else [],
    )
    if unreadable:
        manifest["points"]["unreadable"] = unreadable

    def record(**changes):
        elapsed = time.monotonic() - start
        manifest.update(wall_seconds=round(earlier + elapsed, 3), attempt_seconds=round(elapsed, 3), **changes)
        if writer:
            write_json(store.manifest, manifest)

    record()
    try:
        results = []
        with Progress(len(pairs), experiment.NAME, enabled=progress) as bar:
            for pid, point in pairs:
                if pid in stored:
                    arrays = loaded.pop(pid, None)
                    manifest["points"]["resumed"] += 1
                else:
                    bar.describe(pid)
                    arrays = _as_arrays(pid, experiment.run_point(config, point, point_key(seed, pid)))
                    if writer:
                        write_npz(store.point_path(pid), arrays)
                    manifest["points"]["computed"] += 1
                    record()  # a kill from here on loses at most the next point's time
                results.append((pid, point, arrays))
                bar.advance(pid)
        # Complete only if every point file reads back (a file damaged meanwhile would be recomputed by the
        # next run): the writer checks, and every process learns the verdict, so all stop together.
        bad = cluster.broadcast_from_writer(
            _unreadable_back(store, [(pid, arrays) for pid, _, arrays in results]) if writer else None
        )
        if bad:
            more = f" (and {len(bad) - 1} other point files)" if len(bad) > 1 else ""
            raise UnreadableFileError(
                *bad[0],
                remedy=f"it was damaged after it was written{more}; the same "
                "command recomputes it and completes the study",
            )
        results = [(point, arrays) for _, point, arrays in results]
        if writer:
            rows, data = experiment.summarize(config, results)
            write_csv(store.summary, rows)
            write_npz(store.data, data)
            write_csv(store.comparisons, [c.row() for c in experiment.comparisons(data, config)])
        manifest["status"] = "complete"
    except BaseException as failure:
        manifest["status"] = "interrupted" if isinstance(failure, KeyboardInterrupt) else "failed"
        manifest["error"] = f"{type(failure).__name__}: {failure}"
        raise
    finally:
        record(finished=_now())
    return manifest


def draw_figures(experiment, config, *, store: Store) -> list:
    """Redraw an experiment's figures from ``data.npz`` alone (no recomputation).

    Also refreshes ``comparisons.csv`` and records the figures in the manifest.

    Raises:
      FileNotFoundError: nothing stored yet (run the experiment first).
      UnreadableFileError: ``data.npz`` or the manifest is there but unreadable.
    """
    if not store.data.exists():
        raise FileNotFoundError(
            f"no stored results for {experiment.NAME} in {store.dir} (run `jaxgrad run {experiment.NAME}` first)"
        )
    data = read_npz(store.data)
    with plotting.style():
        figures = [plotting.Figure(*f) for f in experiment.plot(data, config, store.dir)]
    write_csv(store.comparisons, [c.row() for c in experiment.comparisons(data, config)])
    manifest = store.read_manifest() or {}
    manifest["figures"] = [f._asdict() for f in figures]
    write_json(store.manifest, manifest)
    return figures

"""The committed results are what main computes.

Two quick studies that go through the engine (`lyapunov`: `lyapunov_spectrum`; `phase_diagram`:
`simulate` with its self-check, over a grid) are rerun from a clean start and their ``data.npz``
compared with the committed one bit for bit, timing arrays aside. A change that moves the engine's
numbers then fails here until the committed results are regenerated in the same submission
(``jaxgrad reproduce``, or ``jaxgrad run NAME --force`` for one study).
"""
import json
import pathlib

import numpy as np
import pytest

from experiments import cli

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "results"
STUDIES = ["lyapunov", "phase_diagram"]


def _timing(name: str) -> bool:
    return name.endswith("_seconds")


def differences(committed: pathlib.Path, fresh: pathlib.Path) -> list[str]:
    """Each array of `committed` that `fresh` does not hold bit for bit (timing arrays aside), described."""
    out = []
    with np.load(committed) as old, np.load(fresh) as new:
        for key in sorted(set(old.files) | set(new.files)):
            if _timing(key):
                continue
            if key not in new.files or key not in old.files:
                out.append(f"{key}: only in the {'committed' if key in old.files else 'fresh'} file")
                continue
            a, b = old[key], new[key]
            if a.dtype != b.dtype or a.shape != b.shape:
                out.append(f"{key}: {a.dtype}{list(a.shape)} committed, {b.dtype}{list(b.shape)} fresh")
            elif not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
                with np.errstate(all="ignore"):
                    gap = np.abs(a.astype(np.float64) - b.astype(np.float64))
                worst = float(np.nanmax(np.where(np.isfinite(gap), gap, np.nan))) if np.isfinite(gap).any() else np.inf
                moved = (a != b) & ~(np.isnan(a) & np.isnan(b)) if a.dtype.kind in "fc" else a != b
                out.append(f"{key}: {int(np.sum(moved))} of {a.size} values differ, largest by {worst:.3g}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_the_committed_results_are_what_the_code_computes(name, tmp_path):
    committed = json.loads((RESULTS / name / "manifest.json").read_text())
    assert (committed["scale"], committed["seed"], committed["overrides"]) == ("quick", 0, []), (
        f"results/{name} was not made by `jaxgrad reproduce` (quick scale, seed 0, no overrides)")
    assert cli.main(["run", name, "--out", str(tmp_path), "--no-progress"]) == 0
    fresh = json.loads((tmp_path / name / "manifest.json").read_text())
    assert fresh["config"] == committed["config"], f"results/{name}: the quick preset changed since it was made"
    stale = differences(RESULTS / name / "data.npz", tmp_path / name / "data.npz")
    assert not stale, (
        f"results/{name}/data.npz is not what this code computes (made at {committed['git_commit'][:10]}):\n  "
        + "\n  ".join(stale) + f"\nRegenerate it: `jaxgrad run {name} --force` (or `jaxgrad reproduce` for every "
        "study), and commit results/ with the change that moved the numbers.")


def test_differences_names_what_moved(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.array([1.0, 2.0, np.nan]), n=np.array([1, 2]), wall_seconds=np.array([3.0]))
    np.savez(tmp_path / "b.npz", x=np.array([1.0, 2.0, np.nan]), n=np.array([1, 2]), wall_seconds=np.array([4.0]))
    assert differences(tmp_path / "a.npz", tmp_path / "b.npz") == []  # NaN equals NaN; timings aside
    np.savez(tmp_path / "c.npz", x=np.array([1.0, np.nextafter(2.0, 3.0), np.nan]), n=np.array([1, 2]))
    assert differences(tmp_path / "a.npz", tmp_path / "c.npz") == ["x: 1 of 3 values differ, largest by 4.44e-16"]
    np.savez(tmp_path / "d.npz", x=np.array([1.0, 2.0, np.nan], np.float32), m=np.array([0]))
    assert differences(tmp_path / "a.npz", tmp_path / "d.npz") == [
        "m: only in the fresh file", "n: only in the committed file", "x: float64[3] committed, float32[3] fresh"]

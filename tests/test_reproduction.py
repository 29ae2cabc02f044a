"""The committed results are what main computes.

Two quick studies that go through the engine (`lyapunov`: `lyapunov_spectrum`; `phase_diagram`:
`simulate` with its self-check, over a grid) are rerun from a clean start and their ``data.npz``
compared with the committed one bit for bit, timing arrays aside. A change that moves the engine's
numbers then fails here until the committed results are regenerated in the same submission
(``jaxgrad reproduce``, or ``jaxgrad run NAME --force`` for one study).

XLA:CPU generates code for the host's vector extensions, so bits are promised only on the CPU the
results were made on (``results/machine.txt``). On another CPU the check still compares every
array, with the same non-finite entries and finite values within 100 float32 ε relative (the
accumulated rounding of a float32 program of these lengths), and says it did so.
"""

import json
import pathlib
import platform

import numpy as np
import pytest

from experiments import cli

RESULTS = pathlib.Path(__file__).resolve().parent.parent / "results"
STUDIES = ["lyapunov", "phase_diagram"]
CROSS_MACHINE_RTOL = 100 * float(np.finfo(np.float32).eps)


def machine() -> str:
    """The CPU that XLA compiles for: its model and its vector extensions."""
    try:
        lines = pathlib.Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    field = lambda name: next((l.split(":", 1)[1].strip() for l in lines if l.startswith(name)), "")  # noqa: E731
    vector = sorted(f for f in field("flags").split() if f.startswith(("avx", "fma", "amx", "sse4")))
    return f"{field('model name') or platform.machine()} [{' '.join(vector)}]"


def _timing(name: str) -> bool:
    return name.endswith("_seconds")


def differences(committed: pathlib.Path, fresh: pathlib.Path, rtol: float = 0.0) -> list[str]:
    """Each array of `committed` that `fresh` does not hold bit for bit (timing arrays aside), described;
    with `rtol` > 0, the same non-finite entries and finite values within `rtol` relative pass."""
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
            elif rtol and a.dtype.kind in "fc" and _close(a, b, rtol):
                continue
            elif not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
                moved = (a != b) & ~(np.isnan(a) & np.isnan(b)) if a.dtype.kind in "fc" else a != b
                with np.errstate(all="ignore"):
                    gap = np.abs(a.astype(np.float64) - b.astype(np.float64))[moved]
                worst = float(np.max(np.where(np.isnan(gap), np.inf, gap)))  # NaN against a number: inf
                out.append(f"{key}: {int(np.sum(moved))} of {a.size} values differ, largest by {worst:.3g}")
    return out


def _close(a, b, rtol) -> bool:
    a, b = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(a)
    if not np.array_equal(finite, np.isfinite(b)) or not np.array_equal(a[~finite], b[~finite], equal_nan=True):
        return False
    return bool(np.all(np.abs(a[finite] - b[finite]) <= rtol * np.abs(a[finite])))


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_the_committed_results_are_what_the_code_computes(name, tmp_path):
    committed = json.loads((RESULTS / name / "manifest.json").read_text())
    assert (committed["scale"], committed["seed"], committed["overrides"]) == ("quick", 0, []), (
        f"results/{name} was not made by `jaxgrad reproduce` (quick scale, seed 0, no overrides)"
    )
    assert cli.main(["run", name, "--out", str(tmp_path), "--no-progress"]) == 0
    fresh = json.loads((tmp_path / name / "manifest.json").read_text())
    assert fresh["config"] == committed["config"], f"results/{name}: the quick preset changed since it was made"
    made_on = (RESULTS / "machine.txt").read_text().strip()
    here = machine()
    rtol = 0.0 if here == made_on else CROSS_MACHINE_RTOL
    if rtol:
        # (printed, not warned: the suite turns warnings into errors; `pytest -rP` shows it)
        print(
            f"results/{name}: compared within {rtol:.1e} relative, not bit for bit: this CPU, {here}, "
            f"is not the one the results were made on, {made_on}"
        )
    stale = differences(RESULTS / name / "data.npz", tmp_path / name / "data.npz", rtol)
    assert not stale, (
        f"results/{name}/data.npz is not what this code computes (made at {committed['git_commit'][:10]}):\n  "
        + "\n  ".join(stale)
        + f"\nRegenerate it: `jaxgrad run {name} --force` (or `jaxgrad reproduce` for every "
        "study), and commit results/ with the change that moved the numbers."
    )


def test_differences_names_what_moved(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.array([1.0, 2.0, np.nan]), n=np.array([1, 2]), wall_seconds=np.array([3.0]))
    np.savez(tmp_path / "b.npz", x=np.array([1.0, 2.0, np.nan]), n=np.array([1, 2]), wall_seconds=np.array([4.0]))
    assert differences(tmp_path / "a.npz", tmp_path / "b.npz") == []  # NaN equals NaN; timings aside
    np.savez(tmp_path / "c.npz", x=np.array([1.0, np.nextafter(2.0, 3.0), np.nan]), n=np.array([1, 2]))
    assert differences(tmp_path / "a.npz", tmp_path / "c.npz") == ["x: 1 of 3 values differ, largest by 4.44e-16"]
    assert differences(tmp_path / "a.npz", tmp_path / "c.npz", rtol=1e-15) == []  # another CPU: rounding passes
    np.savez(tmp_path / "e.npz", x=np.array([1.0, 2.0, np.inf]), n=np.array([1, 2]))
    assert differences(tmp_path / "a.npz", tmp_path / "e.npz", rtol=1.0) == [
        "x: 1 of 3 values differ, largest by inf"
    ]  # never a different non-finite pattern
    np.savez(tmp_path / "d.npz", x=np.array([1.0, 2.0, np.nan], np.float32), m=np.array([0]))
    assert differences(tmp_path / "a.npz", tmp_path / "d.npz") == [
        "m: only in the fresh file",
        "n: only in the committed file",
        "x: float64[3] committed, float32[3] fresh",
    ]

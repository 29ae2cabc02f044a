"""The results store: atomic writes, manifests, resumable sweeps (also after a kill -9)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from experiments import runner
from jaxgrad import store as results
from jaxgrad.plotting import Figure, save_figure, subplots
from jaxgrad.stats import Comparison
from jaxgrad.store import Store

FAKE_EXPERIMENT = '''
import dataclasses, time
import numpy as np
from jaxgrad.stats import Comparison

NAME, SECTION, TITLE = "fake", "§0", "a fake sweep"
CALLS = []

@dataclasses.dataclass(frozen=True)
class Config:
    n: int = 5
    delay: float = 0.0
    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"`n` must be positive, got n={self.n}")
    @classmethod
    def quick(cls): return cls()
    @classmethod
    def full(cls): return cls(n=50)

def points(config):
    return [{"i": i} for i in range(config.n)]

def run_point(config, point, key):
    CALLS.append(point["i"])
    time.sleep(config.delay)
    return {"value": np.array([point["i"] ** 2.0])}

def summarize(config, results):
    values = np.array([arrays["value"][0] for _, arrays in results])
    return [dict(i=p["i"], value=a["value"][0]) for p, a in results], {"values": values}

def plot(data, config, outdir):
    from jaxgrad import plotting
    fig, ax = plotting.subplots()
    ax.plot(data["values"])
    plotting.label_axes(ax, "i", "i²")
    plotting.save_figure(fig, outdir, "values")
    return [plotting.Figure("values", "squares")]

def comparisons(data, config):
    return [Comparison("sum of squares", data["values"].sum(), sum(i * i for i in range(config.n)), 0.0)]

def run(config=None, seed=0):
    import sys
    from experiments.runner import compute
    return compute(sys.modules[__name__], config or Config.quick(), seed)
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A protocol-following experiment module, importable (also by a subprocess) from tmp_path."""
    (tmp_path / "fake_experiment.py").write_text(FAKE_EXPERIMENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fake_experiment", None)
    import fake_experiment

    yield fake_experiment
    sys.modules.pop("fake_experiment", None)


def _run(module, root, **kwargs):
    config = kwargs.pop("config", module.Config())
    return runner.run_experiment(module, config, store=Store.of(root, module.NAME), progress=False, **kwargs)


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_the_file(tmp_path):
    path = tmp_path / "a" / "f.txt"
    results.atomic_write(path, "one")
    results.atomic_write(path, b"two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failing_write_leaves_the_previous_file_intact(tmp_path, monkeypatch, failing):
    path = tmp_path / "summary.csv"
    results.write_csv(path, [dict(x=1, y=2.5)])
    before = path.read_bytes()

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="disk full"):
        results.write_csv(path, [dict(x=3, y=4.5)])
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["summary.csv"]  # no temp file left behind


def test_csv_is_tidy_and_round_trips(tmp_path):
    path = results.write_csv(tmp_path / "s.csv", [dict(a=1, b=np.float32(0.5)), dict(a=2, c="x")])
    assert path.read_text().splitlines() == ["a,b,c", "1,0.5,", "2,,x"]
    assert results.read_csv(path)[1] == {"a": "2", "b": "", "c": "x"}


def test_figures_are_saved_as_png_and_pdf(tmp_path):
    fig, ax = subplots()
    ax.plot([1, 2], [3, 4])
    paths = save_figure(fig, tmp_path, "f")
    assert [p.name for p in paths] == ["f.png", "f.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG" and paths[1].read_bytes()[:4] == b"%PDF"


# ----------------------------------------------------------------------------- runs and resume


def test_a_run_writes_manifest_summary_comparisons_and_points(fake, tmp_path):
    manifest = _run(fake, tmp_path, seed=3, scale="quick")
    store = Store.of(tmp_path, "fake")
    for key in ("experiment", "config", "scale", "seed", "versions", "backend", "devices", "git_commit",
                "started", "finished", "wall_seconds", "status"):
        assert key in manifest
    assert set(manifest["versions"]) >= {"jaxgrad", "jax", "jaxlib", "optax"}
    assert json.loads(store.manifest.read_text())["status"] == "complete"
    assert manifest["config"] == {"n": 5, "delay": 0.0} and manifest["seed"] == 3
    assert [r["value"] for r in results.read_csv(store.summary)] == ["0.0", "1.0", "4.0", "9.0", "16.0"]
    assert results.read_csv(store.comparisons)[0]["passed"] == "True"
    assert len(list(store.points.glob("*.npz"))) == 5


def test_rerun_computes_only_the_missing_points(fake, tmp_path):
    first = _run(fake, tmp_path)
    store = Store.of(tmp_path, "fake")
    store.point_path("i=1").unlink()
    store.point_path("i=3").unlink()
    fake.CALLS.clear()
    manifest = _run(fake, tmp_path)
    assert fake.CALLS == [1, 3]
    assert manifest["points"] == dict(total=5, computed=2, resumed=3)
    assert manifest["attempts"] == 2 and manifest["started"] == first["started"]
    assert manifest["wall_seconds"] >= first["wall_seconds"]  # the total over both attempts
    np.testing.assert_array_equal(results.read_npz(store.data)["values"], [0, 1, 4, 9, 16])


def test_an_interrupted_sweep_keeps_its_finished_points_and_resumes(fake, tmp_path, monkeypatch):
    original = fake.run_point

    def interrupted(config, point, key):
        if point["i"] == 2:
            raise KeyboardInterrupt
        return original(config, point, key)

    monkeypatch.setattr(fake, "run_point", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(fake, tmp_path)
    store = Store.of(tmp_path, "fake")
    assert store.read_manifest()["status"] == "interrupted"
    assert sorted(p.stem for p in store.points.glob("*.npz")) == ["i=0", "i=1"]
    monkeypatch.setattr(fake, "run_point", original)
    fake.CALLS.clear()
    assert _run(fake, tmp_path)["status"] == "complete"
    assert fake.CALLS == [2, 3, 4]


def test_force_or_a_new_config_recomputes_everything(fake, tmp_path):
    _run(fake, tmp_path)
    fake.CALLS.clear()
    _run(fake, tmp_path, force=True)
    assert fake.CALLS == [0, 1, 2, 3, 4]
    fake.CALLS.clear()
    _run(fake, tmp_path, seed=1)  # a different seed makes the stored points stale
    assert fake.CALLS == [0, 1, 2, 3, 4]
    fake.CALLS.clear()
    _run(fake, tmp_path, seed=1, config=fake.Config(n=6))
    assert fake.CALLS == [0, 1, 2, 3, 4, 5]


def test_killing_a_run_midway_and_starting_again_completes_it(fake, tmp_path):
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        import fake_experiment as f
        from jaxgrad.store import Store
        from experiments.runner import run_experiment
        run_experiment(f, f.Config(n=6, delay=0.25), store=Store.of({str(tmp_path)!r}, "fake"), progress=False)
    """)
    child = subprocess.Popen([sys.executable, "-c", script])
    points = tmp_path / "fake" / "points"
    deadline = time.monotonic() + 60
    while len(list(points.glob("*.npz"))) < 2 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = sorted(p.stem for p in points.glob("*.npz"))
    assert 2 <= len(finished) < 6
    assert all(results.read_npz(points / f"{stem}.npz")["value"].shape == (1,) for stem in finished)
    assert Store.of(tmp_path, "fake").read_manifest()["status"] == "running"  # what a kill leaves
    fake.CALLS.clear()
    manifest = _run(fake, tmp_path, config=fake.Config(n=6, delay=0.25))
    assert manifest["status"] == "complete"
    assert fake.CALLS == [i for i in range(6) if f"i={i}" not in finished]


def test_figures_are_redrawn_from_stored_data_without_recomputing(fake, tmp_path, monkeypatch):
    _run(fake, tmp_path)
    store = Store.of(tmp_path, "fake")
    monkeypatch.setattr(fake, "run_point", lambda *args: pytest.fail("recomputed"))
    figures = runner.draw_figures(fake, fake.Config(), store=store)
    assert figures == [Figure("values", "squares")]
    assert (store.dir / "values.png").exists() and (store.dir / "values.pdf").exists()
    assert store.read_manifest()["figures"] == [{"stem": "values", "caption": "squares"}]


def test_run_returns_the_plot_arrays_without_storing(fake, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(fake.run(fake.Config(n=3))["values"], [0, 1, 4])
    assert list(tmp_path.iterdir()) == [tmp_path / "fake_experiment.py"]


def test_point_keys_depend_on_seed_and_point_not_on_order():
    import jax

    same = results.point_key(0, "i=1"), results.point_key(0, "i=1")
    assert jax.random.key_data(same[0]).tolist() == jax.random.key_data(same[1]).tolist()
    assert jax.random.key_data(results.point_key(0, "i=1")).tolist() != jax.random.key_data(
        results.point_key(1, "i=1")).tolist()
    assert results.point_id({"part": "map", "optimizer": "sgd"}) == "part=map,optimizer=sgd"
    assert "/" not in results.point_id({"path": "a/b"})


def test_comparison_passes_within_tolerance():
    assert Comparison("x", 1.05, 1.0, 0.1).passed and not Comparison("x", 1.2, 1.0, 0.1).passed
    assert not Comparison("x", float("nan"), 1.0, 0.1).passed


def test_environment_names_versions_backend_and_commit():
    env = results.environment()
    assert env["backend"] == "cpu" and env["devices"]
    assert env["git_commit"] is None or len(env["git_commit"]) == 40

"""The results store: atomic writes, manifests, resumable sweeps (also after a kill -9)."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from jaxgrad import store as results
from jaxgrad.plotting import Figure, save_figure, subplots
from jaxgrad.stats import Comparison
from jaxgrad.store import Store
from experiments import runner
from tests.helpers import import_fake_experiment


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A protocol-following experiment module, importable (also by a subprocess) from tmp_path."""
    yield import_fake_experiment(tmp_path, monkeypatch)
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
    for key in (
        "experiment",
        "config",
        "scale",
        "seed",
        "versions",
        "backend",
        "devices",
        "git_commit",
        "started",
        "finished",
        "wall_seconds",
        "status",
    ):
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


@pytest.mark.slow  # a subprocess, killed midway
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
    killed = Store.of(tmp_path, "fake").read_manifest()
    assert killed["status"] == "running"  # what a kill leaves
    # The killed attempt's time up to its last finished point was recorded (0.25 s of sleep per point).
    assert killed["wall_seconds"] >= 0.25 * killed["points"]["computed"] - 0.01
    assert killed["points"]["computed"] >= len(finished) - 1  # the manifest trails the files by at most one
    fake.CALLS.clear()
    manifest = _run(fake, tmp_path, config=fake.Config(n=6, delay=0.25))
    assert manifest["status"] == "complete"
    assert fake.CALLS == [i for i in range(6) if f"i={i}" not in finished]
    assert manifest["attempts"] == 2 and manifest["started"] == killed["started"]
    assert manifest["wall_seconds"] >= killed["wall_seconds"] + 0.25 * len(fake.CALLS) - 0.01


def test_a_run_that_resumes_nothing_is_a_new_run(fake, tmp_path):
    # A fresh clone: the committed manifest (same config and seed) without its points/ directory.
    _run(fake, tmp_path, config=fake.Config(delay=0.01))
    store = Store.of(tmp_path, "fake")
    old = dict(store.read_manifest(), started="2001-01-01T00:00:00+00:00", attempts=7, wall_seconds=1000.0)
    results.write_json(store.manifest, old)
    resumed = _run(fake, tmp_path, config=fake.Config(delay=0.01))  # every point stored: a resume
    assert resumed["attempts"] == 8 and resumed["started"] == old["started"] and resumed["wall_seconds"] > 1000
    results.write_json(store.manifest, old)
    for path in store.points.glob("*.npz"):
        path.unlink()
    fresh = _run(fake, tmp_path, config=fake.Config(delay=0.01))
    assert fresh["points"] == dict(total=5, computed=5, resumed=0)
    assert fresh["attempts"] == 1 and fresh["started"] != old["started"]
    assert 0.05 <= fresh["wall_seconds"] < 60  # its own time, not the committed run's added to it
    assert store.read_manifest() == fresh


def test_a_resumed_run_says_its_own_time_and_separately_the_total(fake, tmp_path):
    _run(fake, tmp_path, config=fake.Config(delay=0.01))
    store = Store.of(tmp_path, "fake")
    results.write_json(store.manifest, dict(store.read_manifest(), attempts=2, wall_seconds=463.3))
    resumed = _run(fake, tmp_path, config=fake.Config(delay=0.01))  # every point stored: nothing computed
    assert resumed["wall_seconds"] > 463.3 and 0 <= resumed["attempt_seconds"] < 60
    assert runner.outcome(resumed) == (
        f"fake: complete in {resumed['attempt_seconds']:.1f} s (0 points computed, "
        f"5 resumed), {resumed['wall_seconds']:.1f} s over 3 attempts"
    )
    fresh = _run(fake, tmp_path, force=True)
    assert fresh["attempt_seconds"] == fresh["wall_seconds"]
    assert runner.outcome(fresh) == f"fake: complete in {fresh['wall_seconds']:.1f} s (5 points computed, 0 resumed)"


@pytest.mark.parametrize("damage", ["truncate", "rewrite", "delete"])
def test_a_point_file_damaged_during_the_run_fails_it_and_the_next_run_completes(fake, tmp_path, monkeypatch, damage):
    store, original = Store.of(tmp_path, "fake"), fake.run_point
    victim = store.point_path("i=1")

    def damaging(config, point, key):
        if point["i"] == 3:  # i = 1 was written and is damaged behind the runner's back
            if damage == "truncate":
                victim.write_bytes(victim.read_bytes()[:40])
            elif damage == "rewrite":  # a readable file with other numbers in it
                results.write_npz(victim, {"value": np.array([-1.0])})
            else:
                victim.unlink()
        return original(config, point, key)

    monkeypatch.setattr(fake, "run_point", damaging)
    with pytest.raises(results.UnreadableFileError, match=f"^{re.escape(str(victim))} is unreadable") as caught:
        _run(fake, tmp_path)
    assert "the same command recomputes it" in str(caught.value)
    manifest = store.read_manifest()
    assert manifest["status"] == "failed" and str(victim) in manifest["error"]
    assert not store.data.exists()  # nothing derived from the points
    monkeypatch.setattr(fake, "run_point", original)
    fake.CALLS.clear()
    manifest = _run(fake, tmp_path)
    # an unreadable or missing point is recomputed; a readable one is resumed as it is (nothing tells it apart then)
    assert manifest["status"] == "complete" and fake.CALLS == ([] if damage == "rewrite" else [1])


def test_the_manifest_records_elapsed_time_after_every_computed_point(fake, tmp_path, monkeypatch):
    store, seen = Store.of(tmp_path, "fake"), []
    original = fake.run_point

    def spy(config, point, key):
        seen.append(store.read_manifest())  # what a kill at this moment would leave
        return original(config, point, key)

    monkeypatch.setattr(fake, "run_point", spy)
    _run(fake, tmp_path, config=fake.Config(n=3, delay=0.1))
    assert [m["points"]["computed"] for m in seen] == [0, 1, 2]
    assert [m["status"] for m in seen] == ["running"] * 3
    walls = [m["wall_seconds"] for m in seen]
    assert walls[1] - walls[0] >= 0.1 and walls[2] - walls[1] >= 0.1  # each computed point's 0.1 s is recorded


# ----------------------------------------------------------------------------- unreadable files


def test_a_corrupt_point_is_named_and_recomputed_and_the_others_kept(fake, tmp_path, capsys):
    _run(fake, tmp_path)
    store = Store.of(tmp_path, "fake")
    bad = store.point_path("i=2")
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    fake.CALLS.clear()
    manifest = _run(fake, tmp_path)
    assert fake.CALLS == [2]
    assert manifest["points"] == dict(total=5, computed=1, resumed=4, unreadable=["i=2.npz"])
    err = capsys.readouterr().err
    assert f"{bad} is unreadable (BadZipFile" in err and "recomputing this point" in err
    np.testing.assert_array_equal(results.read_npz(store.data)["values"], [0, 1, 4, 9, 16])
    assert results.read_npz(bad)["value"].tolist() == [4.0]


def test_a_corrupt_manifest_stops_the_run_and_keeps_the_points(fake, tmp_path):
    _run(fake, tmp_path)
    store = Store.of(tmp_path, "fake")
    store.manifest.write_bytes(store.manifest.read_bytes()[:300])
    broken = store.manifest.read_bytes()
    fake.CALLS.clear()
    with pytest.raises(results.UnreadableFileError) as caught:
        _run(fake, tmp_path)
    assert str(caught.value).startswith(f"{store.manifest} is unreadable (JSONDecodeError")
    assert "5 finished points" in str(caught.value) and "--force" in str(caught.value)
    assert fake.CALLS == [] and len(list(store.points.glob("*.npz"))) == 5
    assert store.manifest.read_bytes() == broken  # not overwritten either
    assert _run(fake, tmp_path, force=True)["status"] == "complete"  # the way out the message names
    assert fake.CALLS == [0, 1, 2, 3, 4]


def test_a_corrupt_manifest_without_points_starts_a_new_run_and_says_so(fake, tmp_path, capsys):
    store = Store.of(tmp_path, "fake")
    store.dir.mkdir()
    store.manifest.write_text('{"experiment": "fake", "conf')
    manifest = _run(fake, tmp_path)
    assert manifest["status"] == "complete" and manifest["attempts"] == 1
    assert f"{store.manifest} is unreadable" in capsys.readouterr().err
    with pytest.raises(results.UnreadableFileError, match="a JSON list, not an object"):
        store.manifest.write_text("[]")
        store.read_manifest()


def test_drawing_from_a_corrupt_data_file_names_it(fake, tmp_path):
    _run(fake, tmp_path)
    store = Store.of(tmp_path, "fake")
    store.data.write_bytes(store.data.read_bytes()[:-30])
    with pytest.raises(results.UnreadableFileError, match=f"^{store.data} is unreadable"):
        runner.draw_figures(fake, fake.Config(), store=store)


def test_a_non_finite_config_value_is_rejected_before_any_work(fake, tmp_path):
    for value in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"`delay` must be finite, got delay=(inf|nan)"):
            _run(fake, tmp_path, config=fake.Config(delay=value))
    assert fake.CALLS == [] and not (tmp_path / "fake").exists()
    with pytest.raises(ValueError, match="must be finite"):
        fake.run(fake.Config(delay=float("inf")))


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
    assert (
        jax.random.key_data(results.point_key(0, "i=1")).tolist()
        != jax.random.key_data(results.point_key(1, "i=1")).tolist()
    )
    assert results.point_id({"part": "map", "optimizer": "sgd"}) == "part=map,optimizer=sgd"
    assert "/" not in results.point_id({"path": "a/b"})


def test_comparison_passes_within_tolerance():
    assert Comparison("x", 1.05, 1.0, 0.1).passed and not Comparison("x", 1.2, 1.0, 0.1).passed
    assert not Comparison("x", float("nan"), 1.0, 0.1).passed


def test_environment_names_versions_backend_and_commit():
    env = results.environment()
    assert env["backend"] == "cpu" and env["devices"]
    assert re.fullmatch(r"[0-9a-f]{40}", env["git_commit"])  # the tests run in a git checkout
    assert isinstance(env["git_dirty"], bool)


def test_dirty_describes_the_source_tree_not_the_results_being_written(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "manifest.json").write_text("{}")
    (tmp_path / "source.py").write_text("x = 1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "initial")
    assert results._git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "results" / "manifest.json").write_text('{"rewritten": true}')  # what a run does
    (tmp_path / "untracked.txt").write_text("")
    assert results._git_state(tmp_path)["git_dirty"] is False
    (tmp_path / "source.py").write_text("x = 2")
    assert results._git_state(tmp_path / "results")["git_dirty"] is True
    assert re.fullmatch(r"[0-9a-f]{40}", results._git_state(tmp_path)["git_commit"])

"""The `jaxgrad` command: listing, running, redrawing, reproducing, and one-line usage errors."""
import dataclasses
import json
import subprocess
import sys
import types
from typing import Literal

import pytest

import experiments
from experiments import quadratic_stability
from experiments.cli import main

# A tiny quadratic_stability: every part, a few seconds with compilation (no bisection: the
# grid bracket alone, which the comparisons' tolerance then reflects).
TINY = dict(trajectory_steps=10, n_a=6, n_lr=12, map_steps=60, bisections=0, n_momentum=3, n_sweep_lr=9,
            sweep_steps=60)
TINY_SETS = [arg for k, v in TINY.items() for arg in ("--set", f"{k}={v}")]


def _main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, words", [
    (["run", "nope"], ["unknown experiment 'nope'", "quadratic_stability"]),
    (["run", "quadratic_stability", "--set", "bogus=1"], ["unknown --set key 'bogus'", "n_a", "momentum"]),
    (["run", "quadratic_stability", "--set", "n_a=many"], ["n_a='many' must be int"]),
    (["run", "quadratic_stability", "--set", "n_a=1"], ["`n_a` must be an integer ≥ 2", "n_a=1"]),
    (["run", "quadratic_stability", "--set", "momentum=1.5"], ["`momentum` must lie in [0, 1)", "momentum=1.5"]),
    (["run", "quadratic_stability", "--set", "n_a"], ["expects key=value", "valid keys"]),
    (["run", "quadratic_stability", "--scale", "huge"], ["--scale", "'huge'", "quick", "full"]),
    (["run", "quadratic_stability", "--seed", "x"], ["--seed", "invalid int value"]),
    (["run", "quadratic_stability", "--seed", "-1"], ["--seed must lie in [0, 2**32)"]),
    (["figures", "nope"], ["unknown experiment 'nope'", "quadratic_stability"]),
    (["reproduce", "--scale", "medium"], ["'medium'", "quick", "full"]),
    (["frobnicate"], ["'frobnicate'", "run", "reproduce"]),
    ([], ["missing command", "list", "run", "figures", "reproduce", "info"]),
    (["run"], ["NAME"]),
])
def test_bad_usage_is_one_line_and_exit_code_2(capsys, argv, words):
    code, out, err = _main(capsys, *argv)
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("jaxgrad: error: ")
    for word in words:
        assert word in err


def test_the_console_script_reports_bad_usage_without_a_traceback():
    proc = subprocess.run([sys.executable, "-c", "import sys; from experiments.cli import main; sys.exit(main())",
                           "run", "quadratic_stability", "--set", "n_lr=x"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "jaxgrad: error: n_lr='x' must be int"


def test_list_names_each_experiment_with_its_section(capsys):
    code, out, _ = _main(capsys, "list")
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("quadratic_stability"))
    assert "§1" in line and "quadratic" in line


def test_info_reports_jax_backend_and_devices(capsys):
    code, out, _ = _main(capsys, "info")
    assert code == 0 and "jax " in out and "backend  cpu" in out and "devices" in out


def test_reproduce_then_figures_then_a_resumed_run(capsys, tmp_path, monkeypatch):
    # One end-to-end flow on this study alone (the others have their own tests), at TINY size.
    monkeypatch.setattr(experiments, "discover", lambda: {"quadratic_stability": quadratic_stability})
    monkeypatch.setattr(quadratic_stability.Config, "quick", classmethod(lambda cls: cls(**TINY)))
    code, _, err = _main(capsys, "reproduce", "--out", str(tmp_path), "--no-progress")
    assert code == 0, err
    store = tmp_path / "quadratic_stability"
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["config"]["n_a"] == 6 and manifest["scale"] == "quick"
    for stem in ("trajectories", "stability_map", "momentum_threshold"):
        assert (store / f"{stem}.png").exists() and (store / f"{stem}.pdf").exists()
    assert "7/7 checks pass" in err
    readme = (tmp_path / "README.md").read_text()
    assert "§1" in readme and "(quadratic_stability/stability_map.png)" in readme
    assert "| quantity | measured | predicted | tolerance | pass |" in readme and "❌" not in readme

    monkeypatch.setattr(quadratic_stability, "run_point", lambda *a: pytest.fail("figures recomputed"))
    (store / "trajectories.png").unlink()
    (tmp_path / "README.md").unlink()
    code, _, err = _main(capsys, "figures", "--out", str(tmp_path))
    assert code == 0 and (store / "trajectories.png").exists(), err
    assert (tmp_path / "README.md").read_text() == readme  # the gallery is rebuilt from stored files

    monkeypatch.setattr(quadratic_stability, "plot", lambda data, config, outdir: [])
    code, _, err = _main(capsys, "run", "quadratic_stability", "--set", "n_a=6", "--out", str(tmp_path))
    assert code == 0 and "0 points computed, 6 resumed" in err, err
    assert json.loads((store / "manifest.json").read_text())["overrides"] == ["n_a=6"]


def test_figures_without_stored_results_says_what_to_run(capsys, tmp_path):
    code, _, err = _main(capsys, "figures", "quadratic_stability", "--out", str(tmp_path))
    assert code == 1 and "jaxgrad run quadratic_stability" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- --set parsing


@dataclasses.dataclass(frozen=True)
class _Config:
    n: int = 1
    x: float = 0.5
    flag: bool = False
    name: str = "a"
    sizes: tuple[int, ...] = (1, 2)
    kind: Literal["tanh", "relu"] = "tanh"
    limit: float | None = None


def test_set_converts_strings_to_field_types():
    sets = ["n=3", "x=1e-3", "flag=yes", "name=b", "sizes=4, 8,16", "kind=relu", "limit=none"]
    assert experiments.with_overrides(_Config(), sets) == _Config(3, 1e-3, True, "b", (4, 8, 16), "relu", None)
    assert experiments.with_overrides(_Config(), ["limit=2"]).limit == 2.0
    with pytest.raises(ValueError, match="kind='sigmoid' is not one of: tanh, relu"):
        experiments.with_overrides(_Config(), ["kind=sigmoid"])
    with pytest.raises(ValueError, match="flag='maybe' must be a bool"):
        experiments.with_overrides(_Config(), ["flag=maybe"])


def test_config_round_trips_through_the_manifest():
    config = quadratic_stability.Config.full()
    stored = json.loads(json.dumps(dataclasses.asdict(config)))
    assert experiments.config_from_dict(quadratic_stability.Config, stored) == config


def test_a_module_missing_part_of_the_protocol_is_rejected_by_name():
    module = types.ModuleType("experiments.half_done")
    module.NAME, module.SECTION, module.TITLE = "half_done", "§9", "unfinished"
    with pytest.raises(TypeError, match=r"misses \['Config', 'points'"):
        experiments._validate(module)

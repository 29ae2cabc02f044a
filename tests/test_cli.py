"""The `jaxgrad` command: listing, running, redrawing, reproducing, and one-line usage errors."""

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import types
from typing import Literal

import pytest

import experiments
from experiments import cli, quadratic_stability
from experiments.cli import main
from tests.helpers import import_fake_experiment

# A tiny quadratic_stability: every part, a few seconds with compilation (no bisection: the
# grid bracket alone, which the comparisons' tolerance then reflects).
TINY = dict(trajectory_steps=10, n_a=6, n_lr=12, map_steps=60, bisections=0, n_momentum=3, n_sweep_lr=9, sweep_steps=60)
TINY_SETS = [arg for k, v in TINY.items() for arg in ("--set", f"{k}={v}")]


def _main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["run", "nope"], ["unknown experiment 'nope'", "quadratic_stability"]),
        (["run", "quadratic_stability", "--set", "bogus=1"], ["unknown --set key 'bogus'", "n_a", "momentum"]),
        (["run", "quadratic_stability", "--set", "n_a=many"], ["n_a='many' must be int"]),
        (["run", "quadratic_stability", "--set", "n_a=1"], ["`n_a` must be an integer ≥ 2", "n_a=1"]),
        (["run", "quadratic_stability", "--set", "momentum=1.5"], ["`momentum` must lie in [0, 1)", "momentum=1.5"]),
        (["run", "quadratic_stability", "--set", "n_a"], ["expects key=value", "valid keys"]),
        (["run", "depth_sweep", "--set", "sigma_w_chaotic=inf"], ["`sigma_w_chaotic` must be finite", "=inf"]),
        (["run", "quadratic_stability", "--set", "momentum=nan"], ["`momentum` must be finite", "=nan"]),
        (["run", "depth_sweep", "--set", "sigma_b=-inf"], ["`sigma_b` must be finite", "=-inf"]),
        (["run", "quadratic_stability", "--scale", "huge"], ["--scale", "'huge'", "quick", "full"]),
        (["run", "quadratic_stability", "--seed", "x"], ["--seed", "invalid int value"]),
        (["run", "quadratic_stability", "--seed", "-1"], ["--seed must lie in [0, 2**32)"]),
        (["figures", "nope"], ["unknown experiment 'nope'", "quadratic_stability"]),
        (["reproduce", "--scale", "medium"], ["'medium'", "quick", "full"]),
        (["frobnicate"], ["'frobnicate'", "run", "reproduce"]),
        ([], ["missing command", "list", "run", "figures", "reproduce", "info"]),
        (["run"], ["NAME"]),
    ],
)
def test_bad_usage_is_one_line_and_exit_code_2(capsys, argv, words):
    code, out, err = _main(capsys, *argv)
    assert code == 2
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("jaxgrad: error: ")
    for word in words:
        assert word in err


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake study of tests/helpers, as the only experiment the CLI knows."""
    module = import_fake_experiment(tmp_path, monkeypatch)
    monkeypatch.setattr(experiments, "discover", lambda: {"fake": module})
    yield module
    sys.modules.pop("fake_experiment", None)


def _one_line_error(code, err, expected_code):
    assert code == expected_code, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("jaxgrad: error: "), err
    return err.strip()


@pytest.mark.parametrize("command", ["run fake", "reproduce", "figures fake"])
def test_an_out_that_is_a_file_is_bad_usage(capsys, fake, tmp_path, command):
    (tmp_path / "file").write_text("")
    for out, words in [
        (tmp_path / "file", "is a file, not a directory"),
        (tmp_path / "file" / "sub", f"cannot be created: '{tmp_path / 'file'}' is a file"),
    ]:
        code, _, err = _main(capsys, *command.split(), "--out", str(out))
        assert words in _one_line_error(code, err, 2)
    assert fake.CALLS == []


@pytest.mark.parametrize("refusal", ["os.access", "creating a file"])
def test_an_out_that_cannot_be_written_is_bad_usage(capsys, fake, tmp_path, monkeypatch, refusal):
    # As root, os.access and chmod refuse nothing; refuse by either of the two checks instead.
    locked = tmp_path / "locked"
    locked.mkdir()
    if refusal == "os.access":
        monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(locked))
    else:

        def refuse(*args, dir=None, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    for out, where in [(locked, "cannot write in it"), (locked / "new" / "deeper", f"cannot write in '{locked}'")]:
        code, _, err = _main(capsys, "run", "fake", "--out", str(out))
        line = _one_line_error(code, err, 2)
        assert where in line and "permission denied" in line
    assert fake.CALLS == [] and list(locked.iterdir()) == []


def test_ctrl_c_after_force_names_the_command_that_resumes(capsys, fake, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    assert _main(capsys, "run", "fake", "--out", out, "--no-progress")[0] == 0
    original = fake.run_point

    def interrupted(config, point, key):
        if point["i"] == 3:
            raise KeyboardInterrupt
        return original(config, point, key)

    monkeypatch.setattr(fake, "run_point", interrupted)
    code, _, err = _main(capsys, "run", "fake", "--force", "--out", out, "--no-progress")
    assert code == 130 and len(err.strip().splitlines()) == 1, err
    advised = err.split("`")[1]
    assert advised == f"jaxgrad run fake --out {shlex.quote(out)} --no-progress" and "without --force" in err
    monkeypatch.setattr(fake, "run_point", original)
    fake.CALLS.clear()
    code, _, err = _main(capsys, *shlex.split(advised)[1:])
    assert code == 0 and "2 points computed, 3 resumed" in err, err  # it resumes: --force would recompute 5
    assert re.search(r"fake: complete in [0-9.]+ s \(2 points computed, 3 resumed\), [0-9.]+ s over 2 attempts ->", err)
    assert fake.CALLS == [3, 4]
    monkeypatch.setattr(fake, "run_point", interrupted)
    code, _, err = _main(capsys, "run", "fake", "--fo", "--out", out)  # argparse's prefix of --force
    assert code == 130 and err.split("`")[1] == f"jaxgrad run fake --out {shlex.quote(out)}"


def test_unreadable_stored_files_are_one_line_naming_the_file_and_the_way_out(capsys, fake, tmp_path):
    out = tmp_path / "out"
    store = out / "fake"
    assert _main(capsys, "run", "fake", "--out", str(out), "--no-progress")[0] == 0

    store.joinpath("data.npz").write_bytes(b"PK\x03\x04 truncated")
    code, _, err = _main(capsys, "figures", "fake", "--out", str(out))
    line = _one_line_error(code, err, 1)
    assert f"{store / 'data.npz'} is unreadable" in line
    assert f"`jaxgrad run fake --scale quick --seed 0 --out {out}` regenerates it" in line
    code, _, err = _main(capsys, "figures", "--out", str(out))  # all studies: the gallery waits for a fix
    assert code == 1 and "data.npz is unreadable" in err and "gallery not rewritten" in err
    assert not (out / "README.md").exists()

    point = store / "points" / "i=1.npz"
    point.write_bytes(b"")
    fake.CALLS.clear()
    code, _, err = _main(capsys, "run", "fake", "--out", str(out), "--no-progress")  # also rewrites data.npz
    assert code == 0 and f"{point} is unreadable" in err and "1 points computed, 4 resumed" in err, err
    assert fake.CALLS == [1]

    store.joinpath("manifest.json").write_text('{"experiment": "fake", "sec')
    code, _, err = _main(capsys, "run", "fake", "--out", str(out), "--no-progress")
    line = _one_line_error(code, err, 1)
    assert f"{store / 'manifest.json'} is unreadable (JSONDecodeError" in line
    assert "5 finished points" in line and "--force" in line
    assert fake.CALLS == [1] and len(list((store / "points").iterdir())) == 5
    code, _, err = _main(capsys, "figures", "fake", "--out", str(out))
    line = _one_line_error(code, err, 1)
    assert f"{store / 'manifest.json'} is unreadable" in line and f"jaxgrad run fake --force --out {out}" in line
    assert _main(capsys, "run", "fake", "--force", "--out", str(out), "--no-progress")[0] == 0


@pytest.mark.slow  # a subprocess
def test_the_console_script_reports_bad_usage_without_a_traceback():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from experiments.cli import main; sys.exit(main())",
            "run",
            "quadratic_stability",
            "--set",
            "n_lr=x",
        ],
        capture_output=True,
        text=True,
    )
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


@pytest.mark.slow  # a study, end to end
def test_reproduce_then_figures_then_a_resumed_run(capsys, tmp_path, monkeypatch):
    # One end-to-end flow on this study alone (the others have their own tests), at TINY size.
    monkeypatch.setattr(experiments, "discover", lambda: {"quadratic_stability": quadratic_stability})
    monkeypatch.setattr(quadratic_stability.Config, "quick", classmethod(lambda cls: cls(**TINY)))
    code, _, err = _main(capsys, "reproduce", "--out", str(tmp_path), "--no-progress", "--jobs", "1")
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


@pytest.mark.slow  # child processes, each a study
def test_reproduce_with_jobs_runs_each_study_in_its_own_process_then_the_gallery(capsys, tmp_path, monkeypatch):
    # quadratic_stability at TINY size under two names, two at a time; then a child that fails
    twin = types.SimpleNamespace(**{k: getattr(quadratic_stability, k) for k in dir(quadratic_stability)})
    twin.NAME = "quadratic_stability_twin"
    monkeypatch.setattr(experiments, "discover", lambda: {"quadratic_stability": quadratic_stability, twin.NAME: twin})
    original = cli._child_command
    command = lambda experiment, args: [  # noqa: E731
        *original(quadratic_stability, args),
        *TINY_SETS,
        *(["--out", str(tmp_path / "twin")] if experiment is twin else []),
    ]
    monkeypatch.setattr(cli, "_child_command", command)
    code, _, err = _main(capsys, "reproduce", "--out", str(tmp_path), "--jobs", "2")
    assert code == 0, err
    assert "reproduce: 2 studies, 2 at a time" in err and "[1/2]" in err and "[2/2]" in err
    assert err.count("quadratic_stability: complete in") == 2 and err.count("7/7 checks pass") == 2, err
    assert (tmp_path / "quadratic_stability" / "stability_map.png").exists()
    assert "(quadratic_stability/stability_map.png)" in (tmp_path / "README.md").read_text()

    (tmp_path / "README.md").unlink()
    monkeypatch.setattr(cli, "_child_command", lambda e, a: [sys.executable, "-c", "import sys; sys.exit(3)"])
    code, _, err = _main(capsys, "reproduce", "--out", str(tmp_path), "--jobs", "2")
    assert code == 3 and "(exit status 3)" in err and "gallery not rewritten" in err, err
    assert not (tmp_path / "README.md").exists()


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--jobs", "0"], ["--jobs must be a positive integer", "--jobs 0"]),
        (
            ["--jobs", "2", "--num-processes", "2", "--process-id", "0", "--coordinator", "localhost:1"],
            ["--jobs 2", "multi-process run (2 processes)", "--jobs 1"],
        ),
    ],
)
def test_bad_jobs_is_one_line_and_exit_code_2(capsys, tmp_path, argv, words):
    code, out, err = _main(capsys, "reproduce", "--out", str(tmp_path), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err


def test_default_jobs_one_per_core_up_to_4_on_cpu_and_1_with_an_accelerator(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert cli._default_jobs() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert cli._default_jobs() == 2
    monkeypatch.setenv("JAX_PLATFORMS", "")
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name == "jax_cuda12_plugin" else None)
    assert cli._default_jobs() == 1


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
    scales: tuple[float, ...] = (1.0,)


def test_set_converts_strings_to_field_types():
    sets = ["n=3", "x=1e-3", "flag=yes", "name=b", "sizes=4, 8,16", "kind=relu", "limit=none"]
    assert experiments.with_overrides(_Config(), sets) == _Config(3, 1e-3, True, "b", (4, 8, 16), "relu", None)
    assert experiments.with_overrides(_Config(), ["limit=2"]).limit == 2.0
    with pytest.raises(ValueError, match="kind='sigmoid' is not one of: tanh, relu"):
        experiments.with_overrides(_Config(), ["kind=sigmoid"])
    with pytest.raises(ValueError, match="flag='maybe' must be a bool"):
        experiments.with_overrides(_Config(), ["flag=maybe"])


@pytest.mark.parametrize(
    "assignment, shown",
    [
        ("x=inf", "x=inf"),
        ("x=-inf", "x=-inf"),
        ("x=nan", "x=nan"),
        ("limit=inf", "limit=inf"),
        ("scales=1, inf", "scales=(1.0, inf)"),
    ],
)
def test_set_rejects_non_finite_numbers_naming_the_field(assignment, shown):
    key = assignment.partition("=")[0]
    with pytest.raises(ValueError, match=rf"^`{key}` must be finite, got {re.escape(shown)}$"):
        experiments.with_overrides(_Config(), [assignment])
    value = (1.0, float("inf")) if key == "scales" else float("inf")
    with pytest.raises(ValueError, match=f"`{key}` must be finite"):  # also a Config built in code
        experiments.require_finite(dataclasses.replace(_Config(), **{key: value}))
    experiments.require_finite(_Config())  # finite values pass


def test_config_round_trips_through_the_manifest():
    config = quadratic_stability.Config.full()
    stored = json.loads(json.dumps(dataclasses.asdict(config)))
    assert experiments.config_from_dict(quadratic_stability.Config, stored) == config


def test_a_module_missing_part_of_the_protocol_is_rejected_by_name():
    module = types.ModuleType("experiments.half_done")
    module.NAME, module.SECTION, module.TITLE = "half_done", "§9", "unfinished"
    with pytest.raises(TypeError, match=r"misses \['Config', 'points'"):
        experiments._validate(module)

"""`jaxgrad run` as several processes: one result, written once, equal to a single-process run bit for bit.

Every process is a real `jaxgrad` command started in its own working directory with the
same relative ``--out``, as on separate machines: what a process writes lands in its own
directory, so an empty directory proves it wrote nothing. Every subprocess runs under a
deadline and is killed if it overstays (`tests.helpers.Run`), so nothing can hang the suite.
"""

import json
import shutil
import socket
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxgrad import cluster
from experiments import cli
from tests.helpers import Run, free_port, local_environment

# A tiny study whose ensembles go through jaxgrad.simulate: 2 points (Gaussian and orthogonal
# linear layers), 5 samples each, so 2 processes compute uneven blocks (2 + 3 samples); its
# singular-value spectra (spectrum_at) are gathered too. About 15 s per process, mostly compiling.
STUDY = "dynamical_isometry"
SETS = ["--set", "width=4", "--set", "depths=1,2", "--set", "samples=5", "--set", "activations=linear"]
POINTS = 2

# `python -m jaxgrad` (runpy, as -m does) with spies on the engine and on the runner's local
# block that report, on stderr, each call's samples, first sample and devices: the proof that
# the processes split the samples (the runner splits them; the engine is called once per point). The
# spy takes the place of the function wherever the study or jaxgrad.cluster looks it up.
SPY = textwrap.dedent("""
    import runpy, sys
    import jaxgrad
    from jaxgrad import cluster, engine

    for name in ("simulate", "lyapunov_spectrum"):
        def spy(net, samples, seed=0, *, _name=name, _real=getattr(engine, name), **kwargs):
            devices = kwargs.get("devices")
            print(f"spy: {_name} samples={samples} offset={kwargs.get('sample_offset', 0)} "
                  f"devices={None if devices is None else len(devices)}", file=sys.stderr, flush=True)
            return _real(net, samples, seed, **kwargs)

        for module in (jaxgrad, engine, cluster):
            setattr(module, name, spy)

    from jaxgrad import ensemble
    def run_local(fn, samples, offset, *args, _real=ensemble._run_local):  # where each process's block runs
        print(f"spy: runner samples={samples} offset={offset} devices={len(args[6])}", file=sys.stderr, flush=True)
        return _real(fn, samples, offset, *args)
    ensemble._run_local = run_local
    runpy.run_module("jaxgrad", run_name="__main__", alter_sys=True)
""")


def jaxgrad(cwd: Path, *args, spy: bool = False) -> tuple[list[str], dict]:
    """A `jaxgrad` command (argv, Popen keywords) run in `cwd`, outside any cluster, two CPU devices."""
    cwd.mkdir(parents=True, exist_ok=True)
    head = [sys.executable, "-c", SPY] if spy else [sys.executable, "-m", "jaxgrad"]
    return [*head, *map(str, args)], dict(cwd=cwd, env=local_environment())


def run_study(cwd: Path, *args, spy: bool = False):
    return jaxgrad(cwd, "run", STUDY, *SETS, "--out", "results", "--no-progress", *args, spy=spy)


def processes(coordinator: str, process_id: int, n: int = 2, *more) -> list[str]:
    return ["--coordinator", coordinator, "--num-processes", n, "--process-id", process_id, *more]


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def spied(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("spy: ")]


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("jaxgrad: ")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, started at once so that their compiling and waiting overlap."""
    root = tmp_path_factory.mktemp("cli_distributed")
    address = f"127.0.0.1:{free_port()}"
    mismatch = f"127.0.0.1:{free_port()}"
    occupied = socket.create_server(("127.0.0.1", 0))  # another program listens on process 0's port
    started = dict(
        # the same command as one process, and as two
        good=Run(
            [
                run_study(root / "single", spy=True),
                run_study(root / "p0", *processes(address, 0), spy=True),
                run_study(root / "p1", *processes(address, 1), spy=True),
            ]
        ),
        # process 1 was given a different --set
        mismatch=Run(
            [
                run_study(root / "m0", *processes(mismatch, 0)),
                run_study(root / "m1", "--set", "samples=6", *processes(mismatch, 1)),
            ]
        ),
        out_of_range=Run([run_study(root / "range", *processes(f"127.0.0.1:{free_port()}", 2))]),
        # a typo, in a process that would otherwise wait 300 s for its peer
        typo=Run(
            [
                run_study(
                    root / "typo",
                    "--set",
                    "bogus=1",
                    *processes(f"127.0.0.1:{free_port()}", 0, 2, "--init-timeout", 300),
                )
            ]
        ),
        # process 1 of 2; nothing listens at the coordinator's address
        unreachable=Run(
            [run_study(root / "lonely", *processes(f"127.0.0.1:{free_port()}", 1, 2, "--init-timeout", 5))]
        ),
        port_taken=Run(
            [
                run_study(
                    root / "taken", *processes(f"127.0.0.1:{occupied.getsockname()[1]}", 0, 2, "--init-timeout", 300)
                )
            ]
        ),
    )
    yield root, started
    for run in started.values():
        run.kill()
    occupied.close()


@pytest.fixture(scope="module")
def reruns(runs):
    """The two-process command again, once into its own output (resumed) and once into a copy with
    --force, started at once when the first run has finished."""
    root, started = runs
    outcomes = started["good"].finish(limit_s=600)
    if any(code != 0 for code, _, _ in outcomes):
        pytest.fail("the first two-process run failed (see the test of it)")
    for me in (0, 1):
        shutil.copytree(root / f"p{me}", root / f"f{me}")
    resume, force = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    again = dict(
        resumed=Run(
            [
                run_study(root / "p0", *processes(resume, 0), spy=True),
                run_study(root / "p1", *processes(resume, 1), spy=True),
            ]
        ),
        forced=Run(
            [
                run_study(root / "f0", "--force", *processes(force, 0), spy=True),
                run_study(root / "f1", "--force", *processes(force, 1), spy=True),
            ]
        ),
    )
    yield root, again
    for run in again.values():
        run.kill()


def assert_same_data(want_dir: Path, got_dir: Path):
    """The stored arrays (data.npz and every point) and tables, bit for bit."""
    assert sorted(p.name for p in (got_dir / "points").glob("*.npz")) == sorted(
        p.name for p in (want_dir / "points").glob("*.npz")
    )
    for npz in ["data.npz"] + [f"points/{p.name}" for p in (want_dir / "points").glob("*.npz")]:
        with np.load(want_dir / npz) as want, np.load(got_dir / npz) as got:
            assert sorted(got.files) == sorted(want.files), npz
            for key in want.files:
                assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, (npz, key)
                assert got[key].tobytes() == want[key].tobytes(), (npz, key)
    for csv in ("summary.csv", "comparisons.csv"):
        assert (got_dir / csv).read_bytes() == (want_dir / csv).read_bytes(), csv


@pytest.mark.slow
def test_two_processes_write_one_result_equal_to_a_single_process_run_bit_for_bit(runs):
    root, started = runs
    (code, single_err, _), (code0, err0, _), (code1, err1, _) = started["good"].finish(limit_s=600)
    assert code == 0, single_err
    assert code0 == 0, err0
    assert code1 == 0, err1

    # process 1 wrote nothing at all; process 0 wrote exactly what the single process wrote
    assert files(root / "p1") == []
    single, multi = root / "single" / "results" / STUDY, root / "p0" / "results" / STUDY
    assert files(multi) == files(single)
    assert {"data.npz", "summary.csv", "comparisons.csv", "manifest.json"} <= set(files(multi))
    assert len(list((multi / "points").glob("*.npz"))) == POINTS
    assert not [f for f in files(root) if f.endswith(".tmp")]

    # the data, bit for bit (the manifests differ in times and devices)
    assert_same_data(single, multi)
    one, two = (json.loads((d / "manifest.json").read_text()) for d in (single, multi))
    assert one["status"] == two["status"] == "complete"
    assert one["config"] == two["config"] and one["seed"] == two["seed"]
    assert two["points"] == dict(total=POINTS, computed=POINTS, resumed=0)
    assert "--process-id 0" in two["command"]
    assert len(one["devices"]) == 2 and len(two["devices"]) == 4  # one run over both processes' devices

    # the samples were split: the study asks for 5, process 0 computes 2 and process 1 the other 3,
    # each on its 2 local devices, for every point
    study = "spy: simulate samples=5 offset=0 devices=None"
    assert spied(single_err) == [study, "spy: runner samples=5 offset=0 devices=2"] * POINTS
    assert spied(err0) == [study, "spy: runner samples=2 offset=0 devices=2"] * POINTS
    assert spied(err1) == [study, "spy: runner samples=3 offset=2 devices=2"] * POINTS

    # only the writer reports
    assert f"{STUDY}: complete" in err0 and f"{STUDY}: complete" not in err1
    assert error_lines(err1) == [] and "Traceback" not in err0 + err1


@pytest.mark.slow
def test_a_rerun_resumes_every_point_on_both_processes_and_force_recomputes_them(reruns):
    root, again = reruns
    single = root / "single" / "results" / STUDY
    (code0, err0, _), (code1, err1, _) = again["resumed"].finish(limit_s=600)
    assert code0 == 0, err0
    assert code1 == 0, err1
    # process 0 decided that every point is stored; neither process simulated anything
    assert spied(err0) == spied(err1) == []
    manifest = json.loads((root / "p0" / "results" / STUDY / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["attempts"] == 2
    assert manifest["points"] == dict(total=POINTS, computed=0, resumed=POINTS)
    assert f"{STUDY}: complete" in err0 and f"({0} points computed, {POINTS} resumed)" in err0
    assert files(root / "p1") == []
    assert_same_data(single, root / "p0" / "results" / STUDY)

    # with --force both processes compute their blocks again, to the same bits
    (code0, err0, _), (code1, err1, _) = again["forced"].finish(limit_s=600)
    assert code0 == 0, err0
    assert code1 == 0, err1
    study = "spy: simulate samples=5 offset=0 devices=None"
    assert spied(err0) == [study, "spy: runner samples=2 offset=0 devices=2"] * POINTS
    assert spied(err1) == [study, "spy: runner samples=3 offset=2 devices=2"] * POINTS
    manifest = json.loads((root / "f0" / "results" / STUDY / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["attempts"] == 1
    assert manifest["points"] == dict(total=POINTS, computed=POINTS, resumed=0)
    assert files(root / "f1") == []
    assert_same_data(single, root / "f0" / "results" / STUDY)
    assert "Traceback" not in err0 + err1


@pytest.mark.slow
def test_a_configuration_mismatch_stops_both_processes_and_writes_nothing(runs):
    root, started = runs
    for me, (code, err, seconds) in enumerate(started["mismatch"].finish(limit_s=150)):
        assert code == 1, err
        (line,) = error_lines(err)
        assert line.startswith(
            f"jaxgrad: error: process {me}: the processes of this run have different configurations"
        ), err
        assert f"samples={(5, 6)[me]} vs {(6, 5)[me]}" in line, line
        assert "Traceback" not in err
        assert seconds < 150  # bounded: no process waits for a peer that has stopped
    assert files(root / "m0") == files(root / "m1") == []


@pytest.mark.slow
def test_a_process_id_out_of_range_is_a_one_line_usage_error(runs):
    root, started = runs
    ((code, err, seconds),) = started["out_of_range"].finish(limit_s=240)
    assert code == 2, err
    assert err.strip().splitlines() == error_lines(err), err  # one line, no traceback
    (line,) = error_lines(err)
    assert line.startswith("jaxgrad: error: ") and "0..1" in line and "process_id=2" in line, line
    assert files(root / "range") == []


@pytest.mark.slow
def test_bad_usage_is_reported_at_once_without_waiting_for_the_other_processes(runs):
    root, started = runs
    ((code, err, seconds),) = started["typo"].finish(limit_s=240)
    assert code == 2, err
    assert err.strip().splitlines() == [
        "jaxgrad: error: unknown --set key 'bogus'; valid keys: width, depths, samples, sigma_b, activations, method"
    ], err
    assert files(root / "typo") == []


@pytest.mark.slow
def test_an_unreachable_coordinator_is_a_clear_error_after_the_init_timeout(runs):
    root, started = runs
    ((code, err, seconds),) = started["unreachable"].finish(limit_s=150)
    assert code == 1, err
    (line,) = error_lines(err)
    assert "process 1 of 2 could not reach the coordinator at 127.0.0.1:" in line, err
    assert "within 5 s" in line and "nothing accepts connections there" in line, line
    assert "Traceback" not in err
    assert 5 <= seconds < 150  # the 5 s --init-timeout, plus starting Python and JAX under load
    assert files(root / "lonely") == []


@pytest.mark.slow
def test_a_coordinator_port_in_use_is_a_one_line_error_at_once(runs):
    root, started = runs
    # Under load, starting Python and JAX alone can take 20–30 s: "at once" means well before the 300 s
    # --init-timeout, which a run that waited for the other processes would reach (finish kills it at 240 s).
    ((code, err, seconds),) = started["port_taken"].finish(limit_s=240)
    assert code == 1, err
    assert err.strip().splitlines() == error_lines(err), err  # one line, no traceback
    (line,) = error_lines(err)
    assert line.startswith("jaxgrad: error: could not start the multi-process run: process 0 cannot listen on port "), (
        line
    )
    assert "choose a free port" in line, line
    assert seconds < 240  # before the --init-timeout
    assert files(root / "taken") == []


# In-process: how the command ends a multi-process run, with the runtime replaced.
TINY_RUN = ["run", STUDY, *SETS, "--no-progress"]


def test_any_other_start_up_failure_of_the_runtime_is_a_one_line_error(capsys, monkeypatch):
    def initialize(*args, **kwargs):
        raise RuntimeError("UNAVAILABLE: failed to connect\n  to all addresses")

    monkeypatch.setattr(cluster, "initialize", initialize)
    assert cli.main(TINY_RUN) == 1
    err = capsys.readouterr().err
    assert err == (
        "jaxgrad: error: could not start the multi-process run: UNAVAILABLE: failed to connect to all addresses\n"
    )


@pytest.fixture
def as_process(monkeypatch, tmp_path):
    """Runs `jaxgrad run` in-process as process `me` of two, the other being a process 0 that sends 3;
    nothing is computed (`_run_one`, `_draw` replaced). Returns (exit code, what `me` broadcast)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_join", lambda args: None)
    monkeypatch.setattr(cli, "_check_same_run", lambda args, plan: None)
    monkeypatch.setattr(cli, "_run_one", lambda *args: None)

    def run(me: int, draw, sent=None):
        sent = [] if sent is None else sent

        def broadcast(value, **kwargs):
            sent.append(value)
            return value if me == 0 else 3

        monkeypatch.setattr(cluster, "is_writer", lambda: me == 0)
        monkeypatch.setattr(cluster, "broadcast_from_writer", broadcast)
        monkeypatch.setattr(cli, "_draw", draw)
        return cli.main(TINY_RUN), sent

    return run


def test_every_process_leaves_with_process_0s_exit_status(as_process):
    def draw(experiment, store):
        return 3

    assert as_process(0, draw) == (3, [3])  # process 0 draws the figures and sends its status
    assert as_process(1, lambda *a: pytest.fail("process 1 drew figures")) == (3, [None])  # the others take it


def test_a_failure_while_process_0_draws_the_figures_ends_the_others_with_status_1(as_process):
    def draw(experiment, store):
        raise OSError("disk full")

    sent = []
    with pytest.raises(OSError, match="disk full"):
        as_process(0, draw, sent)
    assert sent == [1]

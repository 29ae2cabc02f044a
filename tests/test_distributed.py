"""Multi-process runs: N processes reproduce a single-process run bit for bit, and fail fast and clearly.

The multi-process tests start real processes on 127.0.0.1 (JAX's distributed runtime,
gloo collectives on CPU), each with two local CPU devices; every subprocess runs under a
timeout and is killed if it overstays, so nothing can hang the suite.
"""

import json
import os
import socket
import sys
import textwrap

import jax
import numpy as np
import pytest

import jaxgrad
from jaxgrad import cluster
from jaxgrad.cluster import Processes
from tests.helpers import Run, free_port, local_environment

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from jaxgrad import cluster

    job = json.loads(sys.argv[1])
    try:
        if job.get("slurm"):  # as `srun` starts it: found in the environment
            processes = cluster.initialize(timeout_s=job["timeout_s"])
            assert processes.source == "slurm", processes
        else:
            cluster.initialize(job["coordinator"], job["num_processes"], job["process_id"],
                                   timeout_s=job["timeout_s"])
        cluster.check_same_config(job["config"], timeout_s=job["timeout_s"])
    except (TimeoutError, cluster.ConfigMismatchError) as error:
        print(f"jaxgrad: error: {error}", file=sys.stderr, flush=True)
        sys.exit(3)
    if job.get("compute"):
        import jax, jaxgrad
        net = jaxgrad.mlp(**job["net"])
        samples, seed = job["config"]["samples"], job["config"]["seed"]
        res = jaxgrad.simulate(net, samples, seed, method="svd", spectrum_at=(1,))  # the runner splits the samples
        lyap = jaxgrad.lyapunov_spectrum(net, samples, seed)
        decision = cluster.broadcast_from_writer({"from": job["process_id"]})
        assert decision == {"from": 0}, decision
        assert len(jax.local_devices()) == 2 and len(jax.devices()) == 2 * job["num_processes"]
        if cluster.is_writer():
            arrays = {f: getattr(res, f) for f in ("log_spectral_norm", "log_norm_product", "log_forward_gain",
                                                   "log_backward_gain", "log_signal_norm", "signal_exit_depth")}
            np.savez(job["out"], sv1=res.log_singular_values[1], lyapunov=lyap, **arrays)
            with open(job["out"] + ".json", "w") as f:
                json.dump(dict(nonfinite=res.nonfinite, config=res.config), f)
""")

NET = dict(width=2, depth=2, activation="tanh", sigma_w=1.4, sigma_b=0.3)  # small: compiling dominates


def launch(jobs: list[dict]) -> Run:
    """One `python -c WORKER` per job, outside any cluster environment, two CPU devices each."""
    return Run(
        [
            ([sys.executable, "-c", WORKER, json.dumps(job)], dict(env=local_environment(**slurm_environment(job))))
            for job in jobs
        ]
    )


def slurm_environment(job: dict) -> dict:
    """What `srun` sets for task `process_id` of a one-node step (JAX derives the coordinator from it)."""
    if not job.get("slurm"):
        return {}
    host, port = job["coordinator"].rsplit(":", 1)
    return dict(
        SLURM_JOB_ID="4242",
        SLURM_STEP_NODELIST=host,
        SLURM_NTASKS=str(job["num_processes"]),
        SLURM_PROCID=str(job["process_id"]),
        SLURM_LOCALID=str(job["process_id"]),
        JAX_COORDINATOR_PORT=port,
    )


def jobs(num_processes, configs, **extra):
    address = f"127.0.0.1:{free_port()}"
    return [
        dict(coordinator=address, num_processes=num_processes, process_id=i, timeout_s=20, config=c, **extra)
        for i, c in enumerate(configs)
    ]


@pytest.fixture(scope="module")
def failing_runs():
    """The runs that must fail, started together so that their waiting overlaps the other tests."""
    lonely_coordinator = jobs(2, [{}])[0] | dict(timeout_s=3)  # process 0 of 2; process 1 never comes
    lonely_peer = jobs(2, [{}, {}])[1] | dict(timeout_s=3)  # process 1 of 2; nothing listens there
    mismatch = jobs(2, [dict(seed=0, scale="quick"), dict(seed=1, scale="quick")], slurm=True)
    runs = dict(mismatch=launch(mismatch), lonely=launch([lonely_coordinator, lonely_peer]))
    yield runs
    for run in runs.values():
        run.kill()


# --------------------------------------------------------------------------- several processes


@pytest.mark.slow
def test_two_processes_reproduce_a_single_process_run_bit_for_bit(tmp_path, failing_runs):
    config = dict(samples=5, seed=3)  # 5 samples: uneven blocks, 2 + 3
    out = str(tmp_path / "result.npz")
    run = launch(jobs(2, [config, config], compute=True, out=out, net=NET))
    net = jaxgrad.mlp(**NET)  # meanwhile, the single-process run
    want = jaxgrad.simulate(net, 5, 3, method="svd", spectrum_at=(1,))
    want_lyapunov = jaxgrad.lyapunov_spectrum(net, 5, 3)
    for code, err, _ in run.finish(limit_s=600):
        assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["result.npz", "result.npz.json"]  # the writer only
    got = np.load(out)
    for field in (
        "log_spectral_norm",
        "log_norm_product",
        "log_forward_gain",
        "log_backward_gain",
        "log_signal_norm",
        "signal_exit_depth",
    ):
        expected = getattr(want, field)
        assert got[field].dtype == expected.dtype and got[field].shape == expected.shape, field
        assert got[field].tobytes() == expected.tobytes(), field
    assert got["sv1"].tobytes() == want.log_singular_values[1].tobytes()
    assert got["lyapunov"].shape == want_lyapunov.shape
    assert got["lyapunov"].tobytes() == want_lyapunov.tobytes()
    meta = json.loads((tmp_path / "result.npz.json").read_text())
    assert meta == json.loads(json.dumps(dict(nonfinite=want.nonfinite, config=want.config)))


@pytest.mark.slow
def test_a_configuration_mismatch_stops_every_process_clearly(failing_runs):
    # started as SLURM tasks, so this also exercises detection from the environment
    for me, (code, err, seconds) in enumerate(failing_runs["mismatch"].finish(limit_s=150)):
        assert code == 3, err
        assert f"process {me}: the processes of this run have different configurations" in err
        assert f"seed={me!r} vs {1 - me!r}" in err
        assert seconds < 150


@pytest.mark.slow
def test_a_missing_peer_or_coordinator_is_a_clear_error_in_bounded_time(failing_runs):
    (code0, err0, seconds0), (code1, err1, seconds1) = failing_runs["lonely"].finish(limit_s=150)
    assert code0 == 3 and "process 0 of 2: not all 2 processes joined the coordinator at 127.0.0.1:" in err0, err0
    assert "within 3 s" in err0 and "--process-id 0..1" in err0
    assert code1 == 3 and "process 1 of 2 could not reach the coordinator at 127.0.0.1:" in err1, err1
    assert max(seconds0, seconds1) < 150  # the 3 s timeout, plus starting Python and JAX under load


# --------------------------------------------------------------------------- one process, no network


@pytest.fixture
def no_network(monkeypatch):
    """Fails the test if anything tries to start the runtime or open a connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(jax.distributed, "initialize", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(cluster, "_started", None)
    for key in list(os.environ):
        if key.startswith(("SLURM_", "OMPI_")) or key in (
            "JAX_COORDINATOR_ADDRESS",
            "JAX_NUM_PROCESSES",
            "JAX_PROCESS_ID",
        ):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(coordinator="127.0.0.1:1234", num_processes=2, process_id=2), ["process_id", "0..1", "process_id=2"]),
        (dict(coordinator="127.0.0.1:1234", num_processes=2, process_id=-1), ["process_id", "0..1", "process_id=-1"]),
        (
            dict(coordinator="127.0.0.1:1234", num_processes=0, process_id=0),
            ["num_processes", "≥ 1", "num_processes=0"],
        ),
        (dict(coordinator="127.0.0.1", num_processes=2, process_id=0), ["HOST:PORT", "coordinator='127.0.0.1'"]),
        (dict(coordinator="node1:99999", num_processes=2, process_id=0), ["1..65535", "coordinator='node1:99999'"]),
        (dict(coordinator="node 1:80", num_processes=2, process_id=0), ["HOST:PORT", "coordinator='node 1:80'"]),
        (dict(coordinator="127.0.0.1:1234", num_processes=2), ["process_id", "required", "0..1"]),
        (dict(coordinator="127.0.0.1:1234", process_id=0), ["num_processes", "required"]),
        (dict(num_processes=2, process_id=1), ["coordinator", "required", "HOST:PORT"]),
        (dict(coordinator="127.0.0.1:1234", num_processes=2, process_id=0, timeout_s=0), ["timeout_s", "timeout_s=0"]),
        (
            dict(coordinator="127.0.0.1:1234", num_processes=2, process_id=0, heartbeat_timeout_s=-5),
            ["heartbeat_timeout_s", "heartbeat_timeout_s=-5"],
        ),
    ],
)
def test_bad_arguments_raise_before_any_network_use(no_network, kwargs, words):
    with pytest.raises(ValueError) as error:
        cluster.initialize(**kwargs)
    for word in words:
        assert word in str(error.value)


def test_without_a_cluster_a_run_is_single_process_and_starts_no_runtime(no_network):
    assert cluster.initialize() == Processes(0, 1, None, "single")
    assert cluster.initialize(num_processes=1) == Processes(0, 1, None, "single")
    assert cluster.is_writer() and cluster.process_index_and_count() == (0, 1)
    assert cluster.check_same_config({"seed": 0}) == cluster.config_hash({"seed": 0})
    assert cluster.broadcast_from_writer(["a=1"]) == ["a=1"]


SLURM = dict(
    SLURM_JOB_ID="42", SLURM_STEP_NODELIST="gpu[01-04]", SLURM_NTASKS="16", SLURM_PROCID="5", SLURM_LOCALID="1"
)


@pytest.mark.parametrize(
    "environ, kwargs, want",
    [
        ({}, {}, Processes(0, 1, None, "single")),
        (SLURM, {}, Processes(5, 16, None, "slurm")),
        (SLURM | dict(SLURM_NTASKS="1", SLURM_PROCID="0"), {}, Processes(0, 1, None, "single")),
        (dict(SLURM_JOB_ID="42", SLURM_NTASKS="4"), {}, Processes(0, 1, None, "single")),  # sbatch shell, no srun
        (
            dict(OMPI_MCA_orte_hnp_uri="1.0;tcp://10.0.0.1:5", OMPI_COMM_WORLD_SIZE="4", OMPI_COMM_WORLD_RANK="3"),
            {},
            Processes(3, 4, None, "openmpi"),
        ),
        (
            dict(JAX_COORDINATOR_ADDRESS="10.0.0.1:1234", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID="1"),
            {},
            Processes(1, 2, "10.0.0.1:1234", "environment"),
        ),
        (SLURM, dict(coordinator="10.0.0.9:4000"), Processes(5, 16, "10.0.0.9:4000", "arguments")),
        ({}, dict(coordinator="[::1]:4000", num_processes=3, process_id=2), Processes(2, 3, "[::1]:4000", "arguments")),
    ],
)
def test_processes_come_from_arguments_then_the_cluster_environment(environ, kwargs, want):
    assert cluster.resolve(**kwargs, environ=environ) == want


@pytest.mark.parametrize(
    "environ, words",
    [
        (dict(JAX_COORDINATOR_ADDRESS="10.0.0.1:1234", JAX_PROCESS_ID="0"), ["JAX_NUM_PROCESSES", "not"]),
        (SLURM | dict(SLURM_PROCID="16"), ["process_id", "0..15", "process_id=16"]),
        (SLURM | dict(SLURM_NTASKS="many"), ["SLURM_NTASKS", "'many'"]),
    ],
)
def test_a_bad_cluster_environment_is_a_clear_error(environ, words):
    with pytest.raises(ValueError) as error:
        cluster.resolve(environ=environ)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("samples", [1, 2, 5, 64, 1001])
@pytest.mark.parametrize("num_processes", [1, 2, 3, 8])
def test_sample_blocks_are_contiguous_balanced_and_cover_every_sample(samples, num_processes):
    blocks = [cluster.sample_block(samples, p, num_processes) for p in range(num_processes)]
    assert blocks[0][0] == 0 and sum(count for _, count in blocks) == samples
    assert all(a + n == b for (a, n), (b, _) in zip(blocks, blocks[1:]))
    assert max(n for _, n in blocks) - min(n for _, n in blocks) <= 1


@pytest.mark.parametrize("piece_bytes", [7, 256 << 20])  # many collectives, or one
def test_gather_keeps_every_dtype_and_shape_bit_for_bit_in_one_process(monkeypatch, piece_bytes):
    from jaxgrad import ensemble

    monkeypatch.setattr(ensemble, "_GATHER_BYTES", piece_bytes)
    rng = np.random.default_rng(0)
    arrays = [
        rng.normal(size=(5, 4)).astype(np.float32),
        rng.normal(size=(5, 2, 3)),
        np.arange(5, dtype=np.int32),
        np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32),
    ]
    for got, want in zip(ensemble._gather_samples(arrays, 5, 0, 1), arrays):
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def test_config_hash_ignores_key_order_and_sees_every_value():
    a = dict(seed=0, config=dict(width=64, depths=[1, 2]))
    assert cluster.config_hash(a) == cluster.config_hash(dict(config=dict(depths=[1, 2], width=64), seed=0))
    assert cluster.config_hash(a) != cluster.config_hash(dict(a, seed=1))
    assert cluster.config_hash(a) != cluster.config_hash(dict(a, config=dict(width=64, depths=[1, 3])))

r"""Multi-process runs on JAX's distributed runtime: one study, many processes, one result.

This module is the control plane only: who the processes are, start-up, configuration
hashes, decisions broadcast from process 0. The data plane is `jaxgrad.ensemble.run`:
on a run with N processes, process p computes samples
$[\lfloor pS/N \rfloor, \lfloor (p+1)S/N \rfloor)$ (`sample_block`) of *any* per-sample
function on its local devices and the blocks are gathered bit-exactly, so the result is
identical to a single-process run with the same seed. Process 0 (`is_writer`) writes
results; the others write nothing.

Start-up, in this order, before anything touches a device:

1. `initialize` validates its arguments (no network), finds the processes from the
   arguments, a SLURM or Open MPI allocation, or ``JAX_COORDINATOR_ADDRESS`` +
   ``JAX_NUM_PROCESSES`` + ``JAX_PROCESS_ID``, and calls `jax.distributed.initialize`
   with a deadline. With none of these it does nothing: a plain single-process run.
2. `check_same_config` compares a hash of every process's configuration and raises
   `ConfigMismatchError` on every process if they differ.

Control data (configuration hashes, `broadcast_from_writer`) goes through the
coordination service's key-value store, whose reads take a deadline; sample data goes
through device collectives (gloo on CPU, NCCL on GPU, ICI on TPU).
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = [
    "ConfigMismatchError",
    "Processes",
    "broadcast_from_writer",
    "check_coordinator",
    "check_same_config",
    "config_hash",
    "detect_cluster",
    "initialize",
    "is_writer",
    "process_index_and_count",
    "resolve",
    "sample_block",
]

_ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")
_BACKSTOP_S = 30  # JAX's own init deadline is ours plus this, so ours always fires first
# A decision broadcast waits while process 0 does work of its own that the others do not
# share (summaries, comparisons, figures: minutes at full scale), so it has no short
# deadline: a process that dies is caught by JAX's heartbeat (`initialize`'s
# heartbeat_timeout_s), which stops the others, not by this deadline.
_DECISION_TIMEOUT_S = 24 * 3600.0


class Processes(NamedTuple):
    """Who this process is: ``process_id`` of ``num_processes``, and where that came from.

    ``source`` is ``"arguments"``, ``"slurm"``, ``"openmpi"``, ``"environment"`` (the
    ``JAX_*`` variables) or ``"single"`` (no cluster: no distributed runtime started).
    ``coordinator`` is ``HOST:PORT``, or None where JAX derives it from the cluster.
    """

    process_id: int
    num_processes: int
    coordinator: str | None
    source: str


class ConfigMismatchError(RuntimeError):
    """The processes of one run were started with different configurations."""


# --------------------------------------------------------------------------- start-up


def check_coordinator(coordinator: str) -> str:
    """``HOST:PORT`` with PORT in 1..65535 (IPv6 hosts in brackets), or ValueError."""
    match = _ADDRESS.match(coordinator) if isinstance(coordinator, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ValueError(
            f"`coordinator` must be HOST:PORT with PORT in 1..65535 (e.g. 10.0.0.1:1234), "
            f"got coordinator={coordinator!r}"
        )
    return coordinator


def _check_processes(num_processes, process_id) -> None:
    if isinstance(num_processes, bool) or not isinstance(num_processes, (int, np.integer)) or num_processes < 1:
        raise ValueError(f"`num_processes` must be an integer ≥ 1, got num_processes={num_processes!r}")
    if (
        isinstance(process_id, bool)
        or not isinstance(process_id, (int, np.integer))
        or not 0 <= process_id < num_processes
    ):
        raise ValueError(
            f"`process_id` must be an integer in 0..{num_processes - 1} "
            f"(num_processes={num_processes}), got process_id={process_id!r}"
        )


def _env_int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {name}={environ[name]!r}") from None


def detect_cluster(environ: Mapping[str, str] | None = None) -> Processes | None:
    """The processes a cluster launcher describes in `environ` (default ``os.environ``), or None.

    Recognises what `jax.distributed.initialize` auto-detects: a SLURM job step
    (``srun``: ``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``,
    ``SLURM_PROCID``, ``SLURM_LOCALID``) and Open MPI (``mpirun``:
    ``OMPI_MCA_orte_hnp_uri``, ``OMPI_COMM_WORLD_SIZE``, ``OMPI_COMM_WORLD_RANK``); JAX
    then derives the coordinator address. Otherwise ``JAX_COORDINATOR_ADDRESS`` (read by
    JAX) with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (read by jaxgrad).
    """
    env = os.environ if environ is None else environ
    slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
    if all(k in env for k in slurm):
        return Processes(_env_int(env, "SLURM_PROCID"), _env_int(env, "SLURM_NTASKS"), None, "slurm")
    if "OMPI_MCA_orte_hnp_uri" in env:
        return Processes(_env_int(env, "OMPI_COMM_WORLD_RANK"), _env_int(env, "OMPI_COMM_WORLD_SIZE"), None, "openmpi")
    if "JAX_COORDINATOR_ADDRESS" in env:
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in env]
        if missing:
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS={env['JAX_COORDINATOR_ADDRESS']!r} is set but "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not; "
                "set all three, or unset it for a single-process run"
            )
        return Processes(
            _env_int(env, "JAX_PROCESS_ID"),
            _env_int(env, "JAX_NUM_PROCESSES"),
            env["JAX_COORDINATOR_ADDRESS"],
            "environment",
        )
    return None


def resolve(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Processes:
    """The processes `initialize` would join, validated, without touching the network.

    Arguments win over the environment; what they leave out comes from `detect_cluster`.
    """
    detected = detect_cluster(environ)
    if coordinator is None and num_processes is None and process_id is None:
        if detected is None:
            return Processes(0, 1, None, "single")
        processes = detected
    else:
        if detected is None:
            detected_id, detected_count, detected_coordinator = (0 if num_processes == 1 else None), None, None
        else:
            detected_id, detected_count, detected_coordinator = detected[:3]
        pid = detected_id if process_id is None else process_id
        count = detected_count if num_processes is None else num_processes
        where = detected_coordinator if coordinator is None else coordinator
        if count is None:
            raise ValueError(
                f"`num_processes` is required with coordinator={coordinator!r} (no cluster "
                "detected in the environment); pass --num-processes N"
            )
        if pid is None:
            raise ValueError(
                "`process_id` is required for a multi-process run (no cluster detected in the "
                f"environment); pass --process-id in 0..{count - 1}"
            )
        if where is None and detected is None and count > 1:
            raise ValueError(
                "`coordinator` (HOST:PORT of process 0) is required for a multi-process run "
                "outside SLURM/Open MPI; pass --coordinator HOST:PORT"
            )
        processes = Processes(pid, count, where, "arguments")
    _check_processes(processes.num_processes, processes.process_id)
    if processes.coordinator is not None:
        check_coordinator(processes.coordinator)
    if processes.num_processes == 1:
        return Processes(0, 1, None, "single")
    return processes._replace(process_id=int(processes.process_id), num_processes=int(processes.num_processes))


_started: Processes | None = None


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: float = 300.0,
    heartbeat_timeout_s: int = 100,
    local_device_ids: Sequence[int] | None = None,
) -> Processes:
    """Joins this process to a multi-process run, or does nothing for a single process.

    Call it first, before any JAX computation (or `jax.devices()`). Arguments are
    validated before any network use (`resolve`). The JAX runtime cannot be interrupted
    while it waits for its peers, so it waits in a helper thread: if the coordinator is
    unreachable or not every process arrives within `timeout_s`, `initialize` raises
    TimeoutError, after which the process must exit (JAX's own deadline,
    `timeout_s` + 30 s, aborts it otherwise). Process 0 first checks that it can listen
    on the coordinator's port and raises RuntimeError if not (JAX's runtime would crash).

    Arguments:
      coordinator: ``HOST:PORT`` of process 0 (it listens there; all others connect).
      num_processes: how many processes take part.
      process_id: this process, in 0..num_processes−1.
      timeout_s: how long to wait for all processes to connect.
      heartbeat_timeout_s: after this long without a heartbeat a process counts as dead
        and JAX stops the others (a crash mid-run ends the run in bounded time).
      local_device_ids: restrict this process to these local devices. Default: all of
        them, except under SLURM/Open MPI where JAX gives each process one GPU (its local
        rank), so launch one process per GPU there.

    Returns:
      `Processes`: this process's id, their number and where they came from.
    """
    global _started
    processes = resolve(coordinator, num_processes, process_id)
    for name, value in dict(timeout_s=timeout_s, heartbeat_timeout_s=heartbeat_timeout_s).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"`{name}` must be a positive number of seconds, got {name}={value!r}")
    if _started is not None:
        if processes != _started:
            raise RuntimeError(
                f"jaxgrad.cluster.initialize was already called as {_started}; cannot join again as {processes}"
            )
        return _started
    if processes.num_processes > 1:
        kwargs = dict(
            coordinator_address=processes.coordinator,
            num_processes=processes.num_processes,
            process_id=processes.process_id,
            local_device_ids=local_device_ids,
            initialization_timeout=int(math.ceil(timeout_s)) + _BACKSTOP_S,
            heartbeat_timeout_seconds=int(math.ceil(heartbeat_timeout_s)),
        )
        if processes.source in ("slurm", "openmpi"):
            kwargs["cluster_detection_method"] = {"slurm": "slurm", "openmpi": "ompi"}[processes.source]
        elif local_device_ids is None:
            kwargs["cluster_detection_method"] = "deactivate"  # explicit run: all local devices
        if processes.process_id == 0 and processes.coordinator is not None:
            _check_can_listen(processes.coordinator)
        # older JAX: no cross-process CPU collectives (the flag attributes are not in jax.config's type stubs)
        if jax.config.jax_cpu_collectives_implementation is None:  # type: ignore[attr-defined]
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        _join_with_deadline(kwargs, processes, timeout_s)
        processes = processes._replace(coordinator=_jax_distributed().global_state.coordinator_address)
    _started = processes
    return processes


def _check_can_listen(coordinator: str) -> None:
    """RuntimeError unless this machine can listen on the coordinator's port.

    JAX's coordination service listens on every interface (``[::]:PORT``) and crashes the
    process (no Python exception) when it cannot; this says why, beforehand.
    """
    port = int(coordinator.rsplit(":", 1)[1])
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
                probe.bind((host, port))
        except OSError as error:
            if error.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):  # no IPv6 here: the IPv4 try decides
                continue
            raise RuntimeError(
                f"process 0 cannot listen on port {port} of the coordinator address {coordinator} "
                f"({error.strerror or error}): another program, or another run, uses it; "
                "choose a free port"
            ) from None


def _join_with_deadline(kwargs: dict, processes: Processes, timeout_s: float) -> None:
    outcome: list[BaseException] = []

    def join():
        try:
            jax.distributed.initialize(**kwargs)
        except BaseException as error:  # re-raised in the caller's thread
            outcome.append(error)

    thread = threading.Thread(target=join, name="jaxgrad-distributed-initialize", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(_timeout_message(processes, timeout_s))
    if outcome:
        raise outcome[0]


def _timeout_message(processes: Processes, timeout_s: float) -> str:
    pid, n = processes.process_id, processes.num_processes
    derived = _jax_distributed().global_state.coordinator_address  # set before JAX connects
    address = processes.coordinator or derived or "the address JAX derived from the cluster"
    if processes.source in ("slurm", "openmpi"):
        advice = f"every one of the {n} tasks must start and run the same command"
    else:
        advice = (
            f"start all {n} processes with the same --coordinator and --num-processes {n} and distinct "
            f"--process-id 0..{n - 1}"
        )
    if pid != 0 and _ADDRESS.match(address) and not _accepts_connections(address):
        return (
            f"process {pid} of {n} could not reach the coordinator at {address} within {timeout_s:g} s: "
            f"nothing accepts connections there (is process 0 running? {advice})"
        )
    return (
        f"process {pid} of {n}: not all {n} processes joined the coordinator at {address} within "
        f"{timeout_s:g} s ({advice})"
    )


def _accepts_connections(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def _jax_distributed():
    from jax._src import distributed  # the runtime's state; JAX's own checkpointing uses it too

    return distributed


def _client():
    client = _jax_distributed().global_state.client
    if client is None:
        raise RuntimeError("the JAX distributed runtime is not initialised; call jaxgrad.cluster.initialize()")
    return client


def process_index_and_count() -> tuple[int, int]:
    """(this process's id, number of processes).

    In a distributed run this reads the runtime's state rather than asking a device
    backend: the first backend use is itself a rendezvous of all processes.
    """
    state = _jax_distributed().global_state
    if state.client is not None:
        return state.process_id, state.num_processes
    return jax.process_index(), jax.process_count()


def is_writer() -> bool:
    """True on the process that writes results (process 0; the only one in a single-process run)."""
    return process_index_and_count()[0] == 0


# --------------------------------------------------------------------------- control data


def config_hash(config: Mapping) -> str:
    """SHA-256 of the canonical JSON of `config` (sorted keys; non-JSON values by `str`)."""
    return hashlib.sha256(_canonical(config).encode()).hexdigest()


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)


def _plain(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


_exchanges = itertools.count()  # every process makes the same exchanges in the same order


def _exchange(text: str | None, sources: Sequence[int], what: str, timeout_s: float) -> dict[int, str]:
    """Posts `text` (if not None) and reads the posts of `sources`, each within the deadline."""
    client, me = _client(), process_index_and_count()[0]
    key = f"jaxgrad/{what}/{next(_exchanges)}/"
    if text is not None:
        client.key_value_set(key + str(me), text)
    posts, start = {}, time.monotonic()
    for pid in sources:
        try:
            posts[pid] = client.blocking_key_value_get(key + str(pid), max(1, int(timeout_s * 1000)))
        except Exception as error:  # the runtime reports DEADLINE_EXCEEDED as a generic runtime error
            raise TimeoutError(
                f"process {me}: process {pid} did not send its {what} (waited "
                f"{time.monotonic() - start:.0f} s of at most {timeout_s:g} s; it may have failed "
                f"or be running a different command); {error}"
            ) from None
    return posts


def check_same_config(config: Mapping, *, timeout_s: float = 120.0) -> str:
    """Raises `ConfigMismatchError` on every process unless all were given the same `config`.

    Each process posts its configuration; each compares the `config_hash` of all of
    them. Call it before writing anything: a mismatch then leaves no partial results.

    Arguments:
      config: a JSON-able dict: the experiment's config, seed, scale, versions.
      timeout_s: how long to wait for every process to post its configuration.

    Returns:
      The configuration hash (the same on every process).
    """
    digest = config_hash(config)
    me, n = process_index_and_count()
    if n == 1:
        return digest
    posts = _exchange(_canonical(config), range(n), "configuration", timeout_s)
    digests = {pid: hashlib.sha256(text.encode()).hexdigest() for pid, text in posts.items()}
    if len(set(digests.values())) > 1:
        other = next(pid for pid, d in digests.items() if d != digests[me])
        diff = _differences(json.loads(posts[me]), json.loads(posts[other]))
        groups: dict[str, list[int]] = {}
        for pid, d in digests.items():
            groups.setdefault(d[:12], []).append(pid)
        raise ConfigMismatchError(
            f"process {me}: the processes of this run have different configurations "
            f"(config hash → processes: {groups}); process {me} vs process {other}: {diff}. "
            "Every process must run the same command, apart from --process-id"
        )
    return digest


def _differences(mine, theirs, prefix="") -> str:
    out = []
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for k in sorted(set(mine) | set(theirs)):
            a, b = mine.get(k, "<absent>"), theirs.get(k, "<absent>")
            if a != b:
                out.append(_differences(a, b, f"{prefix}{k}."))
        return "; ".join(out[:5]) + ("; …" if len(out) > 5 else "")
    return f"{prefix[:-1] or 'config'}={mine!r} vs {theirs!r}"


def broadcast_from_writer(value: Any, *, timeout_s: float = _DECISION_TIMEOUT_S) -> Any:
    """Process 0's `value` (JSON-able) on every process, e.g. which sweep points are already stored.

    Decisions that change which collective computations run (resuming a sweep) must be
    taken once, by the writer, so every process runs the same ones. Every process must
    call it, in the same order; the others wait for process 0's value.

    Arguments:
      value: process 0's value (the others' is ignored).
      timeout_s: how long the others wait for it. The default, 24 h, lets process 0 do
        long work of its own first (summaries, figures of the previous study); a
        process that dies is detected by JAX's heartbeat instead (`initialize`).
    """
    if process_index_and_count()[1] == 1:
        return value
    text = _canonical(value) if is_writer() else None
    return json.loads(_exchange(text, [0], "decision", timeout_s)[0])


# --------------------------------------------------------------------------- sample data


def sample_block(samples: int, process_id: int, num_processes: int) -> tuple[int, int]:
    """(first, count): the contiguous block of sample indices computed by `process_id`."""
    first = samples * process_id // num_processes
    return first, samples * (process_id + 1) // num_processes - first

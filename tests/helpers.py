"""Small helpers shared by tests."""

import os
import socket
import subprocess
import threading
import time

import numpy as np
import pytest


def assert_within_se(measured, predicted, se, n_se=4.0, what=""):
    """|measured − predicted| ≤ n_se standard errors (the project's Monte-Carlo tolerance)."""
    err = abs(float(measured) - float(predicted))
    assert err <= n_se * float(se), (
        f"{what}: measured {float(measured):.6g} vs predicted {float(predicted):.6g}, "
        f"|diff| = {err:.3g} > {n_se} SE = {n_se * float(se):.3g}"
    )


# --------------------------------------------------------------------------- subprocesses

CLUSTER_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_environment(**extra) -> dict:
    """This environment outside any cluster (no SLURM_*, OMPI_*, JAX_* process variables), two CPU devices."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_")) and k not in CLUSTER_VARIABLES}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2", PYTHONUNBUFFERED="1")
    return env | extra


class Run:
    """Processes started together; a thread per process records its exit code, stderr and lifetime.

    Each of `commands` is ``(argv, popen_kwargs)`` (env, cwd, ...); stdout is discarded.
    """

    def __init__(self, commands: list[tuple[list[str], dict]]):
        self.start = time.monotonic()
        self.procs = [
            subprocess.Popen(argv, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)
            for argv, kwargs in commands
        ]
        self.outcomes = [None] * len(self.procs)
        self.threads = [threading.Thread(target=self._wait, args=(i,), daemon=True) for i in range(len(self.procs))]
        for thread in self.threads:
            thread.start()

    def _wait(self, i):
        _, err = self.procs[i].communicate()
        self.outcomes[i] = (self.procs[i].returncode, err, time.monotonic() - self.start)

    def finish(self, limit_s: float) -> list[tuple[int, str, float]]:
        """(exit code, stderr, seconds from start to exit) per process; kills all and fails past `limit_s`."""
        for thread in self.threads:
            thread.join(max(0.0, self.start + limit_s - time.monotonic()))
        if any(thread.is_alive() for thread in self.threads):
            self.kill()
            pytest.fail(f"a process was still running {limit_s} s after the start (killed)")
        return self.outcomes

    def kill(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()


# --------------------------------------------------------------------------- a fake study

# A protocol-following study: a sweep of `n` points i ↦ i², each `delay` seconds; CALLS records them.
FAKE_EXPERIMENT = """
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
"""


def import_fake_experiment(tmp_path, monkeypatch):
    """`FAKE_EXPERIMENT` as the module ``fake_experiment``, importable (also by a subprocess) from tmp_path.

    The caller pops ``sys.modules["fake_experiment"]`` afterwards (a fixture's teardown).
    """
    import sys

    (tmp_path / "fake_experiment.py").write_text(FAKE_EXPERIMENT)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fake_experiment", None)
    import fake_experiment

    return fake_experiment


def run_study_at_a_tiny_size(module, config, tmp_path):
    """The whole study protocol into `tmp_path`: run, figures, tidy summary, finite comparisons.

    Returns (data, comparisons) for the study's own further checks.
    """
    from jaxgrad import store as results
    from experiments import runner

    store = results.Store.of(tmp_path, module.NAME)
    manifest = runner.run_experiment(module, config, store=store, seed=0, progress=False)
    assert manifest["status"] == "complete"
    figures = runner.draw_figures(module, config, store=store)
    assert figures and all((store.dir / f"{f.stem}.png").stat().st_size > 10_000 for f in figures)
    rows = results.read_csv(store.summary)
    assert rows and set(rows[0]) == set(rows[-1])  # tidy: one schema for every row
    data = results.read_npz(store.data)
    comparisons = module.comparisons(data, config)
    assert comparisons and all(np.isfinite(c.measured) and np.isfinite(c.predicted) for c in comparisons)
    return data, comparisons

"""Shared test settings: a fixed, derandomized hypothesis profile, and the two tiers.

Tiers: ``python -m pytest`` runs the fast tier, every test not marked ``slow`` (every module's
claims at small sizes, about three minutes on 2 cores); ``python -m pytest --all`` runs the full
suite (CI's, .ci/run). ``slow`` marks a study's smoke run, a subprocess launch (several processes,
the command line in a child process, 8 XLA devices), a benchmark, or a very deep network; and
``tests/full_tier.txt`` lists, by test id, the further cases of a claim whose cheapest case stays in
the fast tier, and the claims whose cheapest case is too slow for it (chosen from the durations of a
full run, ``--durations=0``; a listed id that no longer exists fails the collection). A new test is
in the fast tier until it is marked or listed.

Duration guard: in the fast tier, a test outside ``slow`` whose setup and call take more than
`FAST_LIMIT_S` (40 s) fails, saying to mark it slow (or make it smaller), so a slow test cannot hide
in the fast tier. The full suite (``--all``, CI) does not time its tests: a loaded CI machine must
not fail a correct change.
The slowest fast tests take about 12 s on a quiet 2-core machine (the first test of a file pays
for compiling its programs) and 28 s on one loaded 2.3 times over; CI has run up to 2.7 times
slower than quiet, so 40 s leaves room for load while the study runs, the benchmark and the
process launches (50 to 270 s on that loaded machine) fail it. ``JAXGRAD_FAST_LIMIT_S``
overrides it (``inf``: no guard).

Compiled programs are shared across the run through JAX's persistent compilation cache, in a
folder made for the run (removed after it): the xdist workers, and the processes that tests launch
(studies, the command line, several devices), inherit ``JAX_COMPILATION_CACHE_DIR``, so a program
that one test file compiled is read back, not compiled again, by every later file and process that
builds the same program. The cache changes no result: an entry is keyed by the program, the
compile options, the backend and the jaxlib version, and holds the executable XLA would have made.
``JAXGRAD_TEST_XLA_CACHE=0`` turns it off (a timing comparison); a user's own
``JAX_COMPILATION_CACHE_DIR`` is kept.
"""

import math
import os
import pathlib
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "jaxgrad",
    derandomize=True,
    deadline=None,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "jaxgrad"))

FAST_LIMIT_S = float(os.environ.get("JAXGRAD_FAST_LIMIT_S", "40"))
_SETUP_S = pytest.StashKey[float]()


_CACHE_OWNER = "JAXGRAD_TEST_XLA_CACHE_OWNER"


def pytest_configure(config):
    # The controller (or a run without xdist) makes the folder before any worker or JAX starts; workers and
    # launched processes inherit the environment. Entries of every compile count (JAX's defaults skip
    # programs that compile in under a second, most of this suite's).
    if hasattr(config, "workerinput") or os.environ.get("JAXGRAD_TEST_XLA_CACHE") == "0":
        return
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxgrad-tests-xla-")
        os.environ[_CACHE_OWNER] = str(os.getpid())
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
    if os.environ.get(_CACHE_OWNER) == str(os.getpid()) and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ.pop("JAX_COMPILATION_CACHE_DIR"), ignore_errors=True)
        os.environ.pop(_CACHE_OWNER)


def pytest_addoption(parser):
    parser.addoption(
        "--all",
        action="store_true",
        dest="run_all",
        help="the full suite: also the tests marked slow (default: the fast tier)",
    )


FULL_TIER = pathlib.Path(__file__).with_name("full_tier.txt")


def _full_tier() -> set[str]:
    if not FULL_TIER.exists():
        return set()
    lines = (line.split("#")[0].strip() for line in FULL_TIER.read_text().splitlines())
    return {line for line in lines if line}


def pytest_collection_modifyitems(config, items):
    # tests/full_tier.txt: the further cases of a claim (its cheapest case stays fast) and the claims whose
    # cheapest case is too slow for the fast tier, by test id, chosen from measured durations
    listed = _full_tier()
    whole_files = not config.getoption("keyword") and not any("::" in str(a) for a in config.args)
    if whole_files:  # every test of each collected file was collected: a listed id missing there is stale
        seen, files = {item.nodeid for item in items}, {item.nodeid.split("::")[0] for item in items}
        stale = sorted(i for i in listed if i.split("::")[0] in files and i not in seen)
        if stale:
            raise pytest.UsageError(
                f"tests/full_tier.txt names {len(stale)} tests that do not exist, "
                f"{stale[:3]}: rename or remove them there"
            )
    for item in items:
        if item.nodeid in listed:
            item.add_marker(pytest.mark.slow)
    if config.getoption("run_all") or config.getoption("markexpr"):  # `-m slow` chooses for itself
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each test file starts with no compiled programs held: a worker runs many files in one process,
    and every program a file compiled would otherwise stay in memory to the end of the run."""
    yield
    import jax

    from jaxgrad import ensemble, verify

    ensemble._programs.clear()
    verify._programs.clear()
    jax.clear_caches()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.when == "setup":
        item.stash[_SETUP_S] = report.duration
    elif (
        report.when == "call"
        and report.passed
        and "slow" not in item.keywords
        and math.isfinite(FAST_LIMIT_S)
        and not item.config.getoption("run_all")
    ):
        took = item.stash.get(_SETUP_S, 0.0) + report.duration
        if took > FAST_LIMIT_S:
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid} passed but took {took:.1f} s (setup and call), more than the fast tier's "
                f"{FAST_LIMIT_S:g} s per test: mark it `@pytest.mark.slow` (it then runs with "
                "`python -m pytest --all`) or make it smaller (tests/conftest.py; JAXGRAD_FAST_LIMIT_S overrides "
                "the limit)"
            )

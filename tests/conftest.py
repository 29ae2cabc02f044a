"""Shared test settings: a fixed, derandomized hypothesis profile, and the two tiers.

Tiers: ``python -m pytest`` runs the fast tier, every test not marked ``slow`` (every module's
claims at small sizes, about three minutes on 2 cores); ``python -m pytest --all`` runs the full
suite (CI's, .ci/run). ``slow`` marks a study's smoke run, a subprocess launch (several processes,
the command line in a child process, 8 XLA devices), a benchmark, or a very deep network. A test
file nobody has marked is in the fast tier.

Duration guard: in the fast tier, a test outside ``slow`` whose setup and call take more than
`FAST_LIMIT_S` (40 s) fails, saying to mark it slow (or make it smaller), so a slow test cannot hide
in the fast tier. The full suite (``--all``, CI) does not time its tests: a loaded CI machine must
not fail a correct change.
The slowest fast tests take about 12 s on a quiet 2-core machine (the first test of a file pays
for compiling its programs) and 28 s on one loaded 2.3 times over; CI has run up to 2.7 times
slower than quiet, so 40 s leaves room for load while the study runs, the benchmark and the
process launches (50 to 270 s on that loaded machine) fail it. ``JAXGRAD_FAST_LIMIT_S``
overrides it (``inf``: no guard).
"""
import math
import os

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


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true", dest="run_all",
                     help="the full suite: also the tests marked slow (default: the fast tier)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("run_all") or config.getoption("markexpr"):  # `-m slow` chooses for itself
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.when == "setup":
        item.stash[_SETUP_S] = report.duration
    elif (report.when == "call" and report.passed and "slow" not in item.keywords and math.isfinite(FAST_LIMIT_S)
          and not item.config.getoption("run_all")):
        took = item.stash.get(_SETUP_S, 0.0) + report.duration
        if took > FAST_LIMIT_S:
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid} passed but took {took:.1f} s (setup and call), more than the fast tier's "
                f"{FAST_LIMIT_S:g} s per test: mark it `@pytest.mark.slow` (it then runs with "
                "`python -m pytest --all`) or make it smaller (tests/conftest.py; JAXGRAD_FAST_LIMIT_S overrides "
                "the limit)")

"""The two test tiers and the duration guard of tests/conftest.py, on a tiny suite of their own."""

import pathlib

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (pathlib.Path(__file__).parent / "conftest.py").read_text()
SUITE = """
import time
import pytest

def test_quick():
    pass

def test_slow_but_unmarked():
    time.sleep(0.3)

@pytest.mark.slow
def test_marked():
    time.sleep(0.3)
"""


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.setenv("JAXGRAD_FAST_LIMIT_S", "0.2")
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_the_fast_tier_leaves_out_slow_tests_and_fails_an_unmarked_slow_one(suite):
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*test_slow_but_unmarked passed but took * s (setup and call), more than the "
            "fast tier's 0.2 s per test: mark it `@pytest.mark.slow`*"
        ]
    )


def test_all_runs_the_slow_tests_and_does_not_time_any(suite):
    suite.runpytest("-p", "no:cacheprovider", "--all").assert_outcomes(passed=3)
    suite.runpytest("-p", "no:cacheprovider", "-m", "slow").assert_outcomes(passed=1, deselected=2)


def test_a_listed_test_is_in_the_full_tier_and_a_stale_listing_is_refused(suite):
    suite.path.joinpath("full_tier.txt").write_text("test_suite.py::test_quick  # a comment\n")
    suite.runpytest("-p", "no:cacheprovider", "-o", "addopts=").assert_outcomes(failed=1, deselected=2)
    suite.runpytest("-p", "no:cacheprovider", "-o", "addopts=", "--all").assert_outcomes(passed=3)
    suite.path.joinpath("full_tier.txt").write_text("test_suite.py::test_renamed\n")
    result = suite.runpytest("-p", "no:cacheprovider", "-o", "addopts=")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*tests/full_tier.txt names 1 tests that do not exist*test_renamed*"])

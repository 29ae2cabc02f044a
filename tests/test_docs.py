"""The guides and README.md run as written: their ```python blocks.

A guide's blocks run in order in one namespace (a tutorial); each of README.md's runs alone, as a reader
who copies one snippet would run it.
"""

import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def python_blocks(path: pathlib.Path) -> list[str]:
    blocks = re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)
    assert blocks, f"{path.name} has no python blocks"
    return blocks


def run_guide(name):
    """Runs the ```python blocks of docs/`name`, in order, in one namespace."""
    namespace = {"__name__": f"docs.{name}"}
    for block in python_blocks(DOCS / name):
        exec(compile(block, f"{name}", "exec"), namespace)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["property-testing.md"])
def test_guide_runs_as_written(name):
    run_guide(name)


@pytest.mark.slow
def test_your_own_model_guide_runs_as_written():
    pytest.importorskip("equinox")
    pytest.importorskip("flax.nnx")
    run_guide("your-own-model.md")


# At the sizes README.md shows, its first snippet takes minutes on 2 CPU cores, so the tests run each
# snippet with these sizes made smaller, nothing else changed. Every replacement must apply: a snippet
# edited without this table fails here until the table follows it.
README_SMALLER = [
    {
        "width=64, depth=50": "width=8, depth=8",
        "params, jax.numpy.ones(64)": "params, jax.numpy.ones(8)",
        "samples=4096": "samples=64",
        "samples=512": "samples=16",
        "samples=256": "samples=8",
        "run_ensemble(my_probe, 1024,": "run_ensemble(my_probe, 32,",
    },
    {"batch_norm_mlp(256, 48, batch=32)": "batch_norm_mlp(32, 6, batch=8)", "samples=8,": "samples=2,"},
]


def readme_block(index: int, smaller: bool) -> str:
    blocks = python_blocks(README)
    assert len(blocks) == len(README_SMALLER), "README.md's python blocks and README_SMALLER must match one to one"
    block = blocks[index]
    for written, small in README_SMALLER[index].items() if smaller else ():
        assert written in block, f"README.md's block {index + 1} no longer has {written!r}: update README_SMALLER"
        block = block.replace(written, small)
    return block


def run_readme_block(block: str, index: int) -> dict:
    namespace = {"__name__": f"README.md[{index + 1}]"}  # a fresh one: each snippet stands alone
    exec(compile(block, f"README.md, python block {index + 1}", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("index", [pytest.param(0, marks=pytest.mark.slow), 1], ids=lambda i: f"block{i + 1}")
def test_readme_snippets_run_as_written_at_small_sizes(index):
    run_readme_block(readme_block(index, smaller=True), index)


@pytest.mark.slow
def test_readme_batch_norm_snippet_at_its_size_grows_as_it_says():
    """The second snippet as written, and its comment: BatchNorm's ln‖δ‖ grows 0.21 a layer (0.19 as B → ∞)."""
    import jaxgrad
    from jaxgrad import theory

    block = readme_block(1, smaller=False)
    assert "# grows 0.21 a layer (0.19 as B → ∞)" in block
    namespace = run_readme_block(block, 1)
    gain = np.asarray(jaxgrad.simulate(namespace["bn"], samples=8, seed=0, method="vector").log_backward_gain)
    slope = np.polyfit(np.arange(1, gain.shape[1] + 1), gain.mean(axis=0), 1)[0]
    assert round(slope, 2) == 0.21, slope
    assert round(theory.batch_norm_gradient_rate("relu"), 2) == 0.19


@pytest.mark.slow
def test_critical_initialisation_guide_runs_as_written():
    pytest.importorskip("equinox")
    pytest.importorskip("flax.nnx")
    run_guide("critical-initialisation.md")

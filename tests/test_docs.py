"""The guides run as written: their ```python blocks, in order, in one namespace."""
import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def run_guide(name):
    """Runs the ```python blocks of docs/`name`, in order, in one namespace."""
    text = (DOCS / name).read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    assert blocks, f"{name} has no python blocks"
    namespace = {"__name__": f"docs.{name}"}
    for block in blocks:
        exec(compile(block, f"{name}", "exec"), namespace)


@pytest.mark.parametrize("name", ["property-testing.md"])
def test_guide_runs_as_written(name):
    run_guide(name)


def test_your_own_model_guide_runs_as_written():
    pytest.importorskip("equinox")
    pytest.importorskip("flax.nnx")
    run_guide("your-own-model.md")

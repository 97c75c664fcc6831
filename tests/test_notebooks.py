"""Every notebook executes from top to bottom on the CPU, within two minutes, without an error."""

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_is_a_notebook_per_idea_of_the_lecture():
    assert len(NOTEBOOKS) == 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    book = nbformat.read(path, as_version=4)
    began = time.perf_counter()
    resources = {"metadata": {"path": str(path.parent)}}
    NotebookClient(book, timeout=120, kernel_name="python3", resources=resources).execute()
    assert time.perf_counter() - began < 120
    errors = [o for cell in book.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert not errors

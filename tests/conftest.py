"""Shared fixtures: notebooks run at the smoke preset, in a scratch directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def run_notebook(name: str, params: dict, cwd: Path, timeout: int = 900):
    """Execute notebooks/<name> with `params` injected after its `parameters` cell.

    Returns the executed nbformat notebook; a failing cell raises nbclient's error, with
    the cell's traceback in the message.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert tagged, f"{name} has no cell tagged 'parameters'"
    source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    nb.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell("# injected by the tests\n" + source))
    env_backup = dict(os.environ)
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    return nb


@pytest.fixture
def notebook_runner():
    return run_notebook

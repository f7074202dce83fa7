"""The Colab notebooks executed top to bottom with nbclient, on the bundled demo model.

The test sets TLD_NOTEBOOK_CI=1, which the notebooks read in their first cell: no pip install, no
hub, no GPU (the bundled model instead of the original checkpoint; the training notebook renders 64
emoji, encodes them with the bundled VAE and MiniLM, trains 10 CPU steps, exports and generates).
The notebooks run from an in-memory copy in a temp folder, so no output is ever written back.

TLD_NOTEBOOK_TEST_MODEL=<model folder> runs them against another model (for developing before the
bundled model exists): the test swaps it in for the bundled model in the copy it executes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

COLAB = Path(__file__).resolve().parent.parent / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))
# Outputs each notebook must show: image/png displays (figures, grids) from its cells.
MIN_IMAGES = {"generate.ipynb": 8, "train_your_own.ipynb": 3}


def use_model(nb: nbformat.NotebookNode, folder: str) -> None:
    """Point the copy's bundled-model uses at `folder` (developing without the bundled model)."""
    swaps = {
        "TLDPipeline.from_pretrained()": f"TLDPipeline.from_pretrained({folder!r})",
        "--vae bundled": f"--vae {folder}/vae",
        '!tld generate "a cute owl" --cfg': f'!tld generate "a cute owl" --model {folder} --cfg',
    }
    for cell in nb.cells:
        for old, new in swaps.items():
            cell.source = cell.source.replace(old, new)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    nb = nbformat.read(path, as_version=4)
    if os.environ.get("TLD_NOTEBOOK_TEST_MODEL"):
        use_model(nb, os.environ["TLD_NOTEBOOK_TEST_MODEL"])
    monkeypatch.setenv("TLD_NOTEBOOK_CI", "1")
    # `!tld ...` cells run in a shell: the tld of this Python first on its PATH.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        # A failed `!tld` command does not stop the notebook; the error shows in a later cell.
        pytest.fail(f"{path.name}: {shell_errors(nb) or ''} {str(exc)[-2000:]}")
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= MIN_IMAGES[path.name], f"{path.name}: only {len(images)} images shown"
    assert not shell_errors(nb), f"{path.name}: a `!tld` command failed: {shell_errors(nb)}"


def shell_errors(nb: nbformat.NotebookNode) -> list[str]:
    """The one-line errors `tld` printed in the notebook's shell cells."""
    texts = [out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    return [
        line for text in texts for line in text.splitlines() if line.startswith("tld ") and "error:" in line
    ]

"""The Colab notebooks executed top to bottom with nbclient, on the bundled demo model.

The test sets TLD_NOTEBOOK_CI=1, which the notebooks read in their first cell: no hub, no GPU (the
bundled model instead of the original checkpoint; the training notebook renders 64 emoji, encodes
them with the bundled VAE and MiniLM, trains 10 CPU steps, exports and generates). The install cell
runs the requirement Colab installs with this checkout in place of the git URL
(TLD_NOTEBOOK_SOURCE), as a pip dry run, and the notebook must put `tld` on its shell's PATH
itself. The notebooks run from an in-memory copy in a temp folder, so no output is ever written back.

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

ROOT = Path(__file__).resolve().parent.parent
COLAB = ROOT / "colab"
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
    monkeypatch.setenv("TLD_NOTEBOOK_SOURCE", str(ROOT))
    # A shell without this Python's scripts folder: the notebook must make `!tld` reachable itself.
    shell_path = [
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != Path(sys.executable).parent
    ]
    monkeypatch.setenv("PATH", os.pathsep.join(shell_path))
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    again = add_rerun(nb) if path.name == "train_your_own.ipynb" else []
    try:
        client.execute()
    except CellExecutionError as exc:
        # A failed `!tld` command does not stop the notebook; the error shows in a later cell.
        pytest.fail(f"{path.name}: {shell_errors(nb) or ''} {str(exc)[-2000:]}")
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(images) >= MIN_IMAGES[path.name], f"{path.name}: only {len(images)} images shown"
    assert not shell_errors(nb), f"{path.name}: a `!tld` command failed: {shell_errors(nb)}"
    if again:  # the resume path ran: data skipped, training continued from its last checkpoint
        text = "".join(out.get("text", "") for cell in again for out in cell.outputs)
        assert "shards already in" in text and "dataset already in" in text, text[-1000:]
        assert "resumed from step 10" in text, text[-1000:]


def shell_errors(nb: nbformat.NotebookNode) -> list[str]:
    """The one-line errors `tld` printed in the notebook's shell cells."""
    texts = [out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    return [
        line for text in texts for line in text.splitlines() if line.startswith("tld ") and "error:" in line
    ]


def add_rerun(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The resume path, appended to the copy: the data cells and the training cell once more, as a
    user reruns them after a disconnect. Returns the appended cells."""
    marks = ('glob.glob(f"{SHARDS_DIR}', "VAL_PROMPTS = [", "notebook_launcher(train")
    again = [
        nbformat.v4.new_code_cell(cell.source)
        for cell in nb.cells
        if cell.cell_type == "code" and any(m in cell.source for m in marks)
    ]
    assert len(again) == 3
    nb.cells.extend(again)
    return again


def test_failed_install_stops_the_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    nb = nbformat.read(COLAB / "train_your_own.ipynb", as_version=4)
    monkeypatch.setenv("TLD_NOTEBOOK_CI", "1")
    monkeypatch.setenv("TLD_NOTEBOOK_SOURCE", str(tmp_path / "no-such-checkout"))
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    with pytest.raises(CellExecutionError, match="pip could not install"):
        client.execute()
    ran = [c for c in nb.cells if c.cell_type == "code" and c.get("execution_count")]
    assert len(ran) == 1  # nothing after the install cell ran

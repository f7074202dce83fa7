"""examples/readme_grid.py: the grid's prompt labels keep a visible gap for every space."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GRID = Path(__file__).resolve().parent.parent / "examples" / "readme_grid.py"


def _wide_gaps(text: str) -> int:
    """Blank column runs at least 6 px wide between the label's first and last ink column."""
    draw_label = runpy.run_path(str(GRID))["draw_label"]
    image = Image.new("L", (300, 20), 255)
    draw_label(ImageDraw.Draw(image), (2, 2), text, fill=0)
    cols = np.flatnonzero((np.asarray(image) < 128).any(0))
    return int(((np.diff(cols) - 1) >= 6).sum())


def test_every_space_of_a_label_is_a_visible_gap():
    assert _wide_gaps("blue heart, noto style") == 3
    assert _wide_gaps("notostyle") == 0

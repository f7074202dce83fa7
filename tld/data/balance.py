"""Caption-word balancing: rows whose caption starts with a rare word are repeated within an epoch,
and rows whose caption contains a `drop` phrase are left out of it.

A dataset where "black heart" is 126 of 15k captions teaches "black" poorly. `caption_repeats` gives
each row an integer repeat count: rows whose caption's first word is one of `words` get about
`target / count(word)` repeats (at least 1, at most `max_repeat`), every other row 1. The training
sampler then draws each epoch as a permutation of the rows repeated by these counts, so batch k
still depends only on (seed, k, rank) and resuming needs no sampler state.

`drop` lists phrases (matched as whole words, case-insensitive, anywhere in the caption) whose rows get
0 repeats: near-duplicate variants that would otherwise take a large share of every epoch (half of the
emoji set is skin-tone variants of people: `drop: ["skin tone"]`) are skipped without re-encoding.

`boost` maps phrases (matched the same way) to a repeat count: a concept that appears anywhere in few
captions ("heart", "circle") is seen that many times per epoch, whatever word the caption starts with.
A row gets the largest count any of its rules gives it; `drop` wins over everything.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tld.data.format import CAPTIONS, read_captions
from tld.data.parts import MANIFEST
from tld.errors import TLDError

_FIRST_WORD = re.compile(r"[a-z]+")


@dataclass
class BalanceConfig:
    """`data.balance` of a training config; off while `words` and `drop` are empty."""

    words: list[str] = field(default_factory=list)  # e.g. colour words: [red, orange, ..., white]
    target: int = 1000  # aim: rows per word per epoch (after repeats)
    max_repeat: int = 8  # no row is seen more than this many times per epoch
    drop: list[str] = field(default_factory=list)  # phrases whose rows are left out, e.g. ["skin tone"]
    boost: dict[str, int] = field(default_factory=dict)  # phrase -> repeats per epoch, e.g. {heart: 4}

    @property
    def active(self) -> bool:
        return bool(self.words or self.drop or self.boost)

    def __post_init__(self) -> None:
        if self.words and self.target < 1:
            raise TLDError(f"data.balance.target must be >= 1, got {self.target}")
        if self.max_repeat < 1:
            raise TLDError(f"data.balance.max_repeat must be >= 1, got {self.max_repeat}")
        bad = [w for w in self.words if not isinstance(w, str) or not _FIRST_WORD.fullmatch(w.lower())]
        if bad:
            raise TLDError(f"data.balance.words must be single letter-only words, got {bad}")
        bad = [p for p in self.drop if not isinstance(p, str) or not p.strip()]
        if bad:
            raise TLDError(f"data.balance.drop must be non-empty phrases, got {bad}")
        if not isinstance(self.boost, dict):
            raise TLDError(f"data.balance.boost must map phrases to repeat counts, got {self.boost!r}")
        bad = [
            f"{p!r}: {r!r}"
            for p, r in self.boost.items()
            if not isinstance(p, str)
            or not p.strip()
            or isinstance(r, bool)
            or not isinstance(r, int)
            or r < 1
        ]
        if bad:
            raise TLDError(f"data.balance.boost needs non-empty phrases with integer repeats >= 1, got {bad}")


def first_word(caption: str) -> str:
    match = _FIRST_WORD.match(caption.strip().lower())
    return match.group(0) if match else ""


def _matches(captions: list[str], phrases: list[str]) -> np.ndarray:
    """Which captions contain one of `phrases` as whole words (case and spacing ignored)."""
    alternatives = "|".join(re.escape(" ".join(p.lower().split())) for p in phrases)
    pattern = re.compile(rf"\b(?:{alternatives})\b")
    return np.array([bool(pattern.search(" ".join(c.lower().split()))) for c in captions], dtype=bool)


def caption_repeats(captions: list[str], config: BalanceConfig) -> tuple[np.ndarray, dict[str, dict]]:
    """Per-row repeat counts (int64, >= 0) and a report {word or phrase: {"rows": n, "repeat": r}}."""
    words = {w.lower() for w in config.words}
    firsts = [first_word(c) for c in captions]
    counts = Counter(w for w in firsts if w in words)
    repeat_of = {w: int(np.clip(round(config.target / n), 1, config.max_repeat)) for w, n in counts.items()}
    repeats = np.array([repeat_of.get(w, 1) for w in firsts], dtype=np.int64)
    report = {w: {"rows": counts.get(w, 0), "repeat": repeat_of.get(w, 0)} for w in sorted(words)}
    dropped = _matches(captions, config.drop) if config.drop else np.zeros(len(captions), dtype=bool)
    for phrase, count in config.boost.items():
        hit = _matches(captions, [phrase]) & ~dropped
        repeats[hit] = np.maximum(repeats[hit], count)
        report[f"~{phrase}"] = {"rows": int(hit.sum()), "repeat": count}
    if config.drop:
        repeats[dropped] = 0
        if dropped.all():
            raise TLDError(
                f"data.balance.drop {config.drop} matches every one of the {len(captions)} captions"
            )
        report["(dropped)"] = {"rows": int(dropped.sum()), "repeat": 0}
    return repeats, report


def read_latent_captions(folder: str | os.PathLike, rows: int) -> list[str]:
    """The captions of a latent folder, one per row of its arrays."""
    path = Path(folder) / CAPTIONS
    if (Path(folder) / MANIFEST).is_file():  # a parts dataset: every part's captions, kept rows only
        frame = read_captions(folder, ["caption"])
    elif not path.is_file():
        raise TLDError(f"data.balance needs the captions of each row, but {path} does not exist")
    else:
        import pandas as pd

        frame = pd.read_parquet(path, columns=["caption"])
    captions = [str(c) for c in frame["caption"].fillna("")]
    if len(captions) != rows:
        raise TLDError(f"{path} has {len(captions)} captions for {rows} latent rows")
    return captions


def balanced_repeats(
    folder: str | os.PathLike, rows: int, config: BalanceConfig, verbose: bool = True
) -> np.ndarray | None:
    """Repeat counts for a latent folder, or None when balancing is off; prints the per-word report."""
    if not config.active:
        return None
    repeats, report = caption_repeats(read_latent_captions(folder, rows), config)
    dropped = report.pop("(dropped)", None)
    parts = [f"{w} {r['rows']}x{r['repeat']}" for w, r in report.items() if r["rows"]]
    if dropped is not None:
        parts.append(f"dropped {dropped['rows']} matching {', '.join(repr(p) for p in config.drop)}")
    missing = [w for w, r in report.items() if not r["rows"] and not w.startswith("~")]
    absent = [w[1:] for w, r in report.items() if not r["rows"] and w.startswith("~")]
    if not verbose:
        return repeats
    print(
        f"[data] balance: epoch of {int(repeats.sum())} rows from {rows}; rows x repeat: " + ", ".join(parts)
        + (f"; no caption starts with: {', '.join(missing)}" if missing else "")
        + (f"; no kept caption contains: {', '.join(absent)}" if absent else ""),
        flush=True,
    )  # fmt: skip
    return repeats

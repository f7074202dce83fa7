"""`tld preprocess emoji --filter/--shuffle/--limit`: the quick start's curated subset and its bar."""

from __future__ import annotations

import pytest
from tld.preprocessing.emoji import Emoji, emoji_samples, list_emoji, select_emoji

from tld.errors import TLDError

QUICK_START = "heart,circle,square,apple,pear,cherries,grapes,lemon,banana,tangerine,strawberry".split(",")


def _named(*captions: str) -> list[Emoji]:
    return [Emoji(c, c, c) for c in captions]


def test_filter_keeps_short_names_ending_in_a_word():
    items = _named("red heart", "heart suit", "couple with heart woman man", "red apple", "keycap 1")
    assert [e.caption for e in select_emoji(items, ["heart", "apple"])] == ["red heart", "red apple"]
    with pytest.raises(TLDError, match="no emoji caption"):
        select_emoji(items, ["rocket"])


def test_shuffle_is_seeded_and_keeps_every_item():
    items = _named(*(f"e{k}" for k in range(20)))
    once, again = select_emoji(items, shuffle=0), select_emoji(items, shuffle=0)
    assert (
        once == again
        and once != items
        and sorted(e.caption for e in once) == sorted(e.caption for e in items)
    )


def test_quick_start_subset_has_the_colours():
    captions = {e.caption for e in select_emoji(list_emoji(), QUICK_START)}
    assert {"red apple", "green apple", "red heart", "blue circle", "green square"} <= captions
    assert 40 <= len(captions) <= 120 and not any("flag" in c or "tone" in c for c in captions)


def test_limit_is_the_bar_total(capsys):
    samples = list(emoji_samples(size=16, limit=3, progress=True))
    assert len(samples) == 3
    assert "3/3" in capsys.readouterr().err

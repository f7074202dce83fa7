"""Caption-word balancing: repeat counts, the epoch they give the sampler, config errors, a training run."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from train_fixtures import tiny_run_settings, write_dataset

from tld.data import LatentDataset, StepBatches
from tld.data.balance import BalanceConfig, balanced_repeats, caption_repeats, first_word
from tld.errors import TLDError
from tld.training import checkpoint as ckpt
from tld.training.config import TrainConfig, load_config
from tld.training.loop import train

COLOURS = ["red", "black", "white"]


def test_first_word_ignores_case_and_punctuation():
    assert first_word("Black heart, noto style") == "black"
    assert first_word("  red-haired man") == "red"
    assert first_word("1st place medal") == ""
    assert first_word("") == ""


def test_rare_words_are_repeated_towards_the_target_and_capped():
    captions = ["red heart"] * 10 + ["black heart"] * 2 + ["white flag"] * 1 + ["heart with red ribbon"] * 5
    repeats, report = caption_repeats(captions, BalanceConfig(words=COLOURS, target=8, max_repeat=6))
    assert repeats.dtype == np.int64 and repeats.shape == (18,)
    assert list(repeats[:10]) == [1] * 10  # 8 / 10 rounds to 1: never below one
    assert list(repeats[10:12]) == [4, 4]  # 8 / 2
    assert repeats[12] == 6  # 8 / 1 capped at max_repeat
    assert list(repeats[13:]) == [1] * 5  # "red" not the first word: untouched
    assert report == {
        "black": {"rows": 2, "repeat": 4},
        "red": {"rows": 10, "repeat": 1},
        "white": {"rows": 1, "repeat": 6},
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"words": ["red"], "target": 0}, "target must be >= 1"),
        ({"words": ["red"], "max_repeat": 0}, "max_repeat must be >= 1"),
        ({"words": ["light blue"]}, "single letter-only words"),
    ],
)
def test_bad_balance_settings_are_clear_errors(kwargs, match):
    with pytest.raises(TLDError, match=match):
        BalanceConfig(**kwargs)


def test_balance_section_of_a_training_config():
    cfg = TrainConfig.from_dict({"data": {"balance": {"words": ["black"], "target": 50, "max_repeat": 3}}})
    assert cfg.data.balance == BalanceConfig(words=["black"], target=50, max_repeat=3)
    with pytest.raises(TLDError, match="unknown config keys"):
        TrainConfig.from_dict({"data": {"balance": {"word": ["black"]}}})


def _with_captions(folder, captions):
    pd.DataFrame({"caption": captions, "key": [f"{i:04d}" for i in range(len(captions))]}).to_parquet(
        folder / "captions.parquet"
    )
    return folder


def test_each_row_appears_its_repeat_count_per_epoch_and_batches_are_reproducible(tmp_path):
    data = LatentDataset(write_dataset(tmp_path / "d", n=12, val=0))
    repeats = np.array([1, 3, 1, 2] * 3, dtype=np.int64)  # 21 rows per epoch: 3 batches of 7
    batches = StepBatches(data, batch_size=7, seed=7, repeats=repeats)
    assert batches.epoch_size == 21
    first_epoch = np.concatenate([batches.indices(k) for k in range(3)])
    assert Counter(first_epoch.tolist()) == {i: int(r) for i, r in enumerate(repeats)}
    second_epoch = np.concatenate([batches.indices(k) for k in range(3, 6)])
    assert Counter(second_epoch.tolist()) == Counter(first_epoch.tolist())
    assert not np.array_equal(first_epoch, second_epoch)  # a fresh permutation each epoch
    again = StepBatches(data, batch_size=7, seed=7, repeats=repeats)  # a resumed process
    assert np.array_equal(again.indices(4), batches.indices(4))
    plain = StepBatches(data, batch_size=6, seed=7)
    assert plain.epoch_size == 12
    assert sorted(np.concatenate([plain.indices(k) for k in range(2)]).tolist()) == list(range(12))


@pytest.mark.parametrize(
    "repeats",
    [np.ones(11, dtype=np.int64), np.zeros(12, dtype=np.int64), np.ones(12), -np.ones(12, dtype=np.int64)],
)
def test_bad_repeat_arrays_are_refused(tmp_path, repeats):
    data = LatentDataset(write_dataset(tmp_path / "d", n=12, val=0))
    with pytest.raises(TLDError, match="repeats must be 12 integers >= 0"):
        StepBatches(data, batch_size=4, seed=0, repeats=repeats)


def test_dropped_phrases_leave_their_rows_out_of_every_epoch(tmp_path):
    captions = [
        "waving hand, noto style",
        "waving hand medium skin tone, noto style",
        "Waving hand  Dark Skin Tone",  # case and spacing do not matter
        "black heart",
        "skin toner bottle",  # whole words only: not "skin tone"
    ]
    config = BalanceConfig(words=["black"], target=3, drop=["skin tone"])
    repeats, report = caption_repeats(captions, config)
    assert repeats.tolist() == [1, 0, 0, 3, 1]
    assert report["(dropped)"] == {"rows": 2, "repeat": 0}
    data = LatentDataset(write_dataset(tmp_path / "d", n=5, val=0))
    batches = StepBatches(data, batch_size=5, seed=0, repeats=repeats)
    assert batches.epoch_size == 5
    epoch = Counter(np.concatenate([batches.indices(k) for k in range(1)]).tolist())
    assert epoch == {0: 1, 3: 3, 4: 1}  # rows 1 and 2 never drawn
    with pytest.raises(TLDError, match="matches every one of the 2 captions"):
        caption_repeats(["a skin tone", "b skin tone"], BalanceConfig(drop=["skin tone"]))
    with pytest.raises(TLDError, match="drop must be non-empty phrases"):
        BalanceConfig(drop=[" "])
    cfg = TrainConfig.from_dict({"data": {"balance": {"drop": ["skin tone"]}}})
    assert cfg.data.balance.drop == ["skin tone"] and cfg.data.balance.active


def test_balanced_repeats_reads_the_folder_captions_and_checks_them(tmp_path, capsys):
    folder = write_dataset(tmp_path / "d", n=8, val=0)
    config = BalanceConfig(words=COLOURS, target=4)
    assert balanced_repeats(folder, 8, BalanceConfig()) is None  # off: captions not even needed
    with pytest.raises(TLDError, match="captions.parquet does not exist"):
        balanced_repeats(folder, 8, config)
    _with_captions(folder, ["black cat"] + ["dog"] * 7)
    repeats = balanced_repeats(folder, 8, config)
    assert repeats.tolist() == [4, 1, 1, 1, 1, 1, 1, 1]
    out = capsys.readouterr().out
    assert (
        "epoch of 11 rows from 8" in out
        and "black 1x4" in out
        and "no caption starts with: red, white" in out
    )
    with pytest.raises(TLDError, match="has 8 captions for 9 latent rows"):
        balanced_repeats(folder, 9, config)
    _with_captions(folder, ["black cat"] + ["dog"] * 6 + ["dog medium skin tone"])
    repeats = balanced_repeats(folder, 8, BalanceConfig(drop=["skin tone"]))  # drop alone turns it on
    assert repeats.tolist() == [1] * 7 + [0] and "dropped 1 matching 'skin tone'" in capsys.readouterr().out


def test_a_balanced_run_trains_on_the_repeated_rows_and_resumes_exactly(tmp_path):
    data = write_dataset(tmp_path / "data", n=32)
    _with_captions(data, ["black square"] * 2 + ["square"] * 30)
    balance = ["data.balance.words=[black]", "data.balance.target=16", "checkpoint_every=3", "steps=6"]
    plain = train(load_config(None, tiny_run_settings(tmp_path, "plain") + ["steps=6"]))
    balanced = train(load_config(None, tiny_run_settings(tmp_path, "balanced") + balance))
    resumed_cfg = tiny_run_settings(tmp_path, "balanced") + balance[:-1] + ["steps=6", "resume=latest"]
    w_plain = ckpt.load_checkpoint(plain.last_checkpoint)["model"]
    w_bal = ckpt.load_checkpoint(balanced.last_checkpoint)["model"]
    assert any(not torch.equal(w_plain[k], w_bal[k]) for k in w_plain)  # other batches, other weights
    # kill-and-resume: drop the final checkpoint, resume from step 3, land on the same weights
    import shutil

    shutil.rmtree(balanced.last_checkpoint)
    again = train(load_config(None, resumed_cfg))
    w_again = ckpt.load_checkpoint(again.last_checkpoint)["model"]
    assert all(torch.equal(w_bal[k], w_again[k]) for k in w_bal)


def test_boosted_phrases_repeat_their_rows_wherever_the_phrase_is():
    captions = [
        "red heart, noto style",
        "couple with heart, noto style",  # the phrase anywhere, not only first
        "heart on fire medium skin tone",  # dropped rows stay dropped
        "black circle",
        "heartbeat monitor",  # whole words only
        "black flag",
    ]
    config = BalanceConfig(words=["black"], target=6, drop=["skin tone"], boost={"heart": 4, "circle": 2})
    repeats, report = caption_repeats(captions, config)
    # "black circle": the word rule gives 6 / 2 = 3, the boost 2: the larger wins
    assert repeats.tolist() == [4, 4, 0, 3, 1, 3]
    assert report["~heart"] == {"rows": 2, "repeat": 4}
    assert report["~circle"] == {"rows": 1, "repeat": 2}
    assert BalanceConfig(boost={"star": 2}).active


@pytest.mark.parametrize("boost", [{"heart": 0}, {"heart": 1.5}, {" ": 2}, {"heart": True}, ["heart"]])
def test_bad_boosts_are_clear_errors(boost):
    with pytest.raises(TLDError, match="data.balance.boost"):
        BalanceConfig(boost=boost)


def test_boost_from_a_config_and_its_report(tmp_path, capsys):
    cfg = TrainConfig.from_dict({"data": {"balance": {"boost": {"heart": 3, "star": 2}}}})
    assert cfg.data.balance.boost == {"heart": 3, "star": 2}
    folder = _with_captions(write_dataset(tmp_path / "d", n=4, val=0), ["red heart", "a", "b heart", "c"])
    repeats = balanced_repeats(folder, 4, cfg.data.balance)
    assert repeats.tolist() == [3, 1, 3, 1]
    out = capsys.readouterr().out
    assert "epoch of 8 rows from 4" in out and "~heart 2x3" in out and "no kept caption contains: star" in out

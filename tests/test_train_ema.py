"""Several EMA lengths in one run (`ema.extra_decays`): tracked, checkpointed, resumed, exported."""

from __future__ import annotations

import json

import pytest
import torch
from train_fixtures import reset_accelerate, tiny_run_settings

from tld.cli import main
from tld.errors import TLDError
from tld.training import checkpoint as ckpt
from tld.training.config import EMAConfig, load_config
from tld.training.export import export_checkpoint
from tld.training.loop import train

# Within 8 steps the warmup ramp min(decay, (1 + n) / (10 + n)) stays under 0.5: a 0.3 cap shows in
# the average, a 0.9999 one does not yet (it equals the main 0.999 EMA: the same warmup rule).
EXTRAS = ["steps=8", "checkpoint_every=4", "ema.extra_decays=[0.3, 0.9999]"]


def _run(tmp_path, name, *extra):
    return train(load_config(None, tiny_run_settings(tmp_path, name, warmup=2) + list(extra)))


def _equal(a, b):
    assert a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


def test_extra_decays_are_tracked_like_a_main_ema_of_that_decay_and_resume_exactly(tmp_path):
    straight = _run(tmp_path, "straight", *EXTRAS)
    saved = ckpt.load_checkpoint(straight.last_checkpoint)
    assert sorted(saved["extra_ema"]) == [0.3, 0.9999]
    assert (straight.last_checkpoint / "ema_0.3.safetensors").is_file()
    assert not _equal(saved["extra_ema"][0.3], saved["ema"])
    assert _equal(saved["extra_ema"][0.9999], saved["ema"])  # both still on the warmup ramp

    reset_accelerate()  # the 0.3 EMA is what a run whose main EMA has decay 0.3 keeps
    alone = ckpt.load_checkpoint(_run(tmp_path, "alone", "steps=8", "ema.decay=0.3").last_checkpoint)
    assert _equal(alone["model"], saved["model"])
    assert _equal(alone["ema"], saved["extra_ema"][0.3])

    reset_accelerate()  # a resume from its step 4 to 8: the same extra EMAs as 8 straight steps
    step_4 = f"resume={tmp_path / 'straight' / 'checkpoints' / 'step_4'}"
    resumed = ckpt.load_checkpoint(_run(tmp_path, "resumed", *EXTRAS, step_4).last_checkpoint)
    assert resumed["state"]["step"] == 8 and not (tmp_path / "resumed" / "checkpoints" / "step_4").exists()
    for decay in (0.3, 0.9999):
        assert _equal(resumed["extra_ema"][decay], saved["extra_ema"][decay]), decay
    assert _equal(resumed["ema"], saved["ema"])


def test_a_run_without_extra_decays_writes_the_same_checkpoint_files_as_before(tmp_path):
    result = _run(tmp_path, "run", "steps=2")
    names = sorted(p.name for p in result.last_checkpoint.iterdir())
    assert names == sorted([ckpt.MODEL, ckpt.EMA, ckpt.OPTIMIZER, ckpt.SCHEDULER, ckpt.RNG, ckpt.STATE])
    assert ckpt.load_checkpoint(result.last_checkpoint)["extra_ema"] == {}


def test_resume_with_changes_starts_a_new_extra_ema_from_the_main_one(tmp_path, capsys):
    _run(tmp_path, "run", "steps=4", "checkpoint_every=4")
    main_ema = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "step_4")["ema"]
    reset_accelerate()
    with pytest.raises(TLDError, match="ema.extra_decays"):  # not an exact continuation
        _run(tmp_path, "run", "steps=4", "ema.extra_decays=[0.3]", "resume=latest")
    reset_accelerate()
    args = ["steps=5", "ema.extra_decays=[0.3]", "resume=latest", "resume_with_changes=true"]
    result = _run(tmp_path, "run", *args)
    out = capsys.readouterr().out
    assert "has no EMA of decay 0.3; it starts from the main EMA" in out
    # at step 5 the ramp is 6 / 15 = 0.4: 0.3 takes effect, the main 0.999 does not (warned, not identical)
    assert "EMA decay(s) [0.999] never take effect (set ema.warmup: false" in out
    saved = ckpt.load_checkpoint(result.last_checkpoint)
    extra, model = saved["extra_ema"][0.3], saved["model"]
    assert extra.keys() == main_ema.keys()
    for k, start in main_ema.items():  # step 5 averaged into the step-4 main EMA with decay 0.3
        assert torch.allclose(extra[k], 0.3 * start + 0.7 * model[k].float(), atol=1e-6), k


def test_export_picks_a_tracked_decay_and_records_it(tmp_path, capsys):
    from tld.model import Denoiser

    run = _run(tmp_path, "run", *EXTRAS)
    saved = ckpt.load_checkpoint(run.last_checkpoint)
    out = tmp_path / "ema_0.3"
    assert main(["export", str(tmp_path / "run"), str(out), "--ema-decay", "0.3"]) == 0
    assert _equal(Denoiser.from_pretrained(out).state_dict(), saved["extra_ema"][0.3])
    config = json.loads((out / "config.json").read_text())
    assert config["ema"] is True and config["ema_decay"] == 0.3

    default = export_checkpoint(run.last_checkpoint, tmp_path / "default")
    assert json.loads((default / "config.json").read_text())["ema_decay"] == 0.999
    assert _equal(Denoiser.from_pretrained(default).state_dict(), saved["ema"])
    raw = export_checkpoint(run.last_checkpoint, tmp_path / "raw", ema=False)
    assert json.loads((raw / "config.json").read_text())["ema_decay"] is None

    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "x"), "--ema-decay", "0.5"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith("has no EMA of decay 0.5; its EMA decays are 0.3, 0.999, 0.9999")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "x"), "--ema-decay", "0.3", "--no-ema"]) == 1
    assert "cannot go with --no-ema" in capsys.readouterr().err


def test_export_all_ema_writes_one_model_folder_per_decay(tmp_path):
    from tld.model import Denoiser

    run = _run(tmp_path, "run", *EXTRAS)
    saved = ckpt.load_checkpoint(run.last_checkpoint)
    assert main(["export", str(run.last_checkpoint), str(tmp_path / "all"), "--all-ema"]) == 0
    folders = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert folders == ["ema_0.3", "ema_0.999", "ema_0.9999"]
    for decay, weights in ((0.3, saved["extra_ema"][0.3]), (0.999, saved["ema"])):
        folder = tmp_path / "all" / f"ema_{decay}"
        assert json.loads((folder / "config.json").read_text())["ema_decay"] == decay
        assert _equal(Denoiser.from_pretrained(folder).state_dict(), weights)


@pytest.mark.parametrize(
    "value, message",
    [
        ("[1.0]", "each decay must be in [0, 1), got 1.0"),
        ("[-0.5]", "each decay must be in [0, 1), got -0.5"),
        ("[0.9, 0.9]", "holds a decay twice: [0.9, 0.9]"),
        ("[0.999]", "0.999 is ema.decay already"),
        ("0.9", "must be a list"),
        ("[.nan]", "must be a finite number"),
    ],
)
def test_bad_extra_decays_are_one_line_errors(value, message):
    with pytest.raises(TLDError) as info:
        load_config(None, [f"ema.extra_decays={value}"])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_train_refuses_an_export_decay_it_will_not_track_before_training(tmp_path, capsys):
    settings = tiny_run_settings(tmp_path, "run") + ["ema.extra_decays=[0.99]"]
    args = ["train", *(x for s in settings for x in ("--set", s))]
    assert main([*args, "--export", str(tmp_path / "model"), "--ema-decay", "0.9"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith(
        "--ema-decay 0.9: this run tracks the EMA decays 0.99, 0.999 (ema.extra_decays)"
    )
    assert not (tmp_path / "run").exists()
    assert main([*args, "--ema-decay", "0.99"]) == 1
    assert "pass --export OUT_DIR too" in capsys.readouterr().err


def test_train_exports_the_chosen_decay(tmp_path):
    settings = tiny_run_settings(tmp_path, "run") + ["steps=4", "ema.extra_decays=[0.3]"]
    args = ["train", *(x for s in settings for x in ("--set", s))]
    assert main([*args, "--export", str(tmp_path / "model"), "--ema-decay", "0.3"]) == 0
    from tld.model import Denoiser

    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["ema_decay"] == 0.3
    saved = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "step_4")
    assert _equal(Denoiser.from_pretrained(tmp_path / "model").state_dict(), saved["extra_ema"][0.3])


def test_the_warmup_ramp_warning_names_the_decays_it_caps_for_the_whole_run():
    # 2500 steps: the ramp reaches (1 + 2500) / (10 + 2500) = 0.99641, under all three decays
    three = EMAConfig(decay=0.999, extra_decays=[0.9995, 0.9999]).ramp_warning(2500)
    assert "reaches only 0.99641 by step 2500" in three
    assert "[0.999, 0.9995, 0.9999] never take effect; they will be bit-identical" in three
    # 24000 steps: 0.99963, past 0.999 and 0.9995; only 0.9998 stays capped
    one = EMAConfig(decay=0.999, extra_decays=[0.9995, 0.9998]).ramp_warning(24000)
    assert "[0.9998] never take effect (" in one
    assert EMAConfig(decay=0.999, extra_decays=[0.9995]).ramp_warning(24000) is None
    assert EMAConfig(decay=0.999, warmup=False, extra_decays=[0.9999]).ramp_warning(10) is None
    assert EMAConfig(decay=0.999, start_step=20000, extra_decays=[0.9995]).ramp_warning(24000) is not None

import json

import pytest
import torch
from torch import nn

from tld.errors import TLDError
from tld.model.surgery import inpaint_concat
from tld.training import checkpoint as ckpt
from tld.training.augment import AUGMENT_COND_DIM, augment_latents, random_masks
from tld.training.config import load_config
from tld.training.ema import EMA


def test_config_round_trips_json_and_yaml(tmp_path):
    cfg = load_config(None, ["steps=200", "optim.lr=3e-4", "model.embed_dim=128", "data.flip=true"])
    assert cfg.steps == 200 and cfg.optim.lr == 3e-4 and cfg.model == {"embed_dim": 128} and cfg.data.flip
    for name in ("c.json", "c.yaml"):
        cfg.save(tmp_path / name)
        assert load_config(tmp_path / name) == cfg
    assert json.loads((tmp_path / "c.json").read_text())["optim"]["lr"] == 3e-4


def test_config_unknown_key_is_named(tmp_path):
    with pytest.raises(TLDError, match=r"unknown config keys \['lrr'\] in 'optim.'"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(TLDError, match="key.path=value"):
        load_config(None, ["steps"])


def test_ema_warmup_ramp_and_average():
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, decay=0.9, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(1000) == pytest.approx(0.9)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, 0)  # decay 0.1: the average moves 90% of the way
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 0.9))
    target = nn.Linear(2, 1, bias=False)
    ema.copy_to(target)
    assert torch.allclose(target.weight, torch.full((1, 2), 0.9))


def test_ema_is_float32_for_half_models():
    net = nn.Linear(2, 2).to(torch.bfloat16)
    assert EMA(net).shadow["weight"].dtype == torch.float32


def _save(root, step, keep=3):
    return ckpt.save_checkpoint(
        root,
        step,
        model_state={"w": torch.full((2,), float(step))},
        ema_state={"w": torch.zeros(2)},
        optimizer_state={"state": {}, "param_groups": []},
        scheduler_state={"last_epoch": step},
        rng=ckpt.capture_rng(),
        state={"note": "x"},
        keep_last=keep,
    )


def test_checkpoint_keep_last_and_latest(tmp_path):
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [30, 40]
    loaded = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path))
    assert loaded["state"]["step"] == 40 and loaded["model"]["w"].tolist() == [40.0, 40.0]


def test_crash_inside_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    _save(tmp_path, 10)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated crash between checkpoint files)")

    monkeypatch.setattr(ckpt, "_write_training_state", crash)
    with pytest.raises(OSError):
        _save(tmp_path, 20)
    assert (tmp_path / ".tmp_step_20").exists() and not (tmp_path / "step_20").exists()
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step_10"
    assert ckpt.load_checkpoint(tmp_path / "step_10")["model"]["w"].tolist() == [10.0, 10.0]


def test_rng_round_trip():
    import random

    import numpy as np

    state = ckpt.capture_rng()
    first = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.restore_rng(state)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and (first[1] == again[1]).all() and first[2] == again[2]


def _undo_augmentation(x: torch.Tensor, cond: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Invert one row's transform from its recorded conditioning (flip, then rot90 k, then shift)."""
    dy, dx = round(float(cond[4]) * max_shift), round(float(cond[5]) * max_shift)
    x = torch.roll(x, shifts=(-dy, -dx), dims=(-2, -1))
    turns = [k for k in (1, 2, 3) if cond[k] == 1]
    if turns:
        x = torch.rot90(x, -turns[0], dims=(-2, -1))
    return x.flip(-1) if cond[0] == 1 else x


def test_augment_records_transform():
    x = torch.randn(64, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    out, cond = augment_latents(x, g, prob=1.0, flip=True, rotate=True, max_shift=2)
    assert cond.shape == (64, AUGMENT_COND_DIM)
    # Every kind of transform happened, at most one rotation per row, and the record undoes each row.
    assert cond[:, 0].any() and all(cond[:, k].any() for k in (1, 2, 3)) and cond[:, 4:].abs().sum() > 0
    assert cond[:, 1:4].sum(1).max() <= 1 and cond[:, 4:].abs().max() <= 1
    changed = (out != x).flatten(1).any(1)
    assert changed.sum() > 32 and torch.equal(changed, cond.ne(0).any(1))
    for i in range(64):
        assert torch.equal(_undo_augmentation(out[i], cond[i], 2), x[i]), (i, cond[i])
    # Non-square latents are never rotated (a turn would change their shape).
    wide, wide_cond = augment_latents(torch.randn(32, 2, 4, 6), g, prob=1.0, max_shift=0)
    assert wide.shape == (32, 2, 4, 6) and not wide_cond[:, 1:4].any() and wide_cond[:, 0].any()
    none, zero = augment_latents(x, g, prob=0.0)
    assert torch.equal(none, x) and not zero.any()


def test_masks_kinds_and_concat():
    g = torch.Generator().manual_seed(0)
    full = random_masks(3, 4, 4, g, (0, 0, 1, 0))
    empty = random_masks(3, 4, 4, g, (0, 0, 0, 1))
    border = random_masks(8, 6, 6, g, (0, 1, 0, 0))
    assert full.eq(1).all() and empty.eq(0).all()
    assert ((border.sum(dim=(1, 2, 3)) > 0) & (border.sum(dim=(1, 2, 3)) < 36)).all()
    x0 = torch.ones(3, 4, 4, 4)
    concat = inpaint_concat(x0, full)
    assert concat.shape == (3, 5, 4, 4) and concat[:, :4].eq(0).all() and concat[:, 4].eq(1).all()


def test_lr_schedule_warms_up_then_follows_cosine_or_constant():
    from tld.training.loop import lr_lambda

    cfg = load_config(None, ["steps=110", "optim.warmup_steps=10", "optim.min_lr_ratio=0.1"])
    f = lr_lambda(cfg)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # linear warmup
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55)  # half-way down the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)  # ends at min_lr_ratio
    assert all(f(s) >= f(s + 1) for s in range(10, 110))
    const = lr_lambda(load_config(None, ["steps=110", "optim.warmup_steps=10", "optim.schedule=constant"]))
    assert const(4) == pytest.approx(0.5) and const(10) == const(109) == 1.0
    with pytest.raises(TLDError, match="optim.schedule must be 'cosine' or 'constant', got 'linear'"):
        lr_lambda(load_config(None, ["optim.schedule=linear"]))


def test_optimizer_is_fused_adamw_with_the_loop_s_update():
    from tld.training.config import OptimConfig
    from tld.training.objective import build_optimizer

    torch.manual_seed(0)
    nets = [nn.Linear(16, 8), nn.Linear(16, 8)]
    nets[1].load_state_dict(nets[0].state_dict())
    o = OptimConfig(lr=1e-2, weight_decay=0.1)
    fused = build_optimizer(nets[0].parameters(), o)
    loop = torch.optim.AdamW(nets[1].parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=0.1, eps=o.eps)
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    start = nets[0].weight.detach().clone()
    x = torch.randn(32, 16)
    for _ in range(5):
        for net, opt in zip(nets, (fused, loop)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    assert (nets[0].weight - start).abs().max() > 1e-2  # five steps of lr 1e-2 moved the weights
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=[1,2]", r"config key 'optim.lr' must be a finite number, got \[1, 2\]"),
        ("steps=2.7", "config key 'steps' must be an integer, got 2.7"),
        ("optim.lr=.nan", "config key 'optim.lr' must be a finite number, got nan"),
        ("steps=.inf", "config key 'steps' must be an integer, got inf"),
        ("data.flip=3", "config key 'data.flip' must be true or false, got 3"),
        ("optim.betas=[0.9, x]", r"config key 'optim.betas\[1\]' must be a finite number, got 'x'"),
        ("steps=-5", "steps must be an integer >= 1, got -5"),
        ("batch_size=0", "batch_size must be an integer >= 1, got 0"),
        ("ema.decay=1.5", r"ema.decay must be a number in \[0, 1\], got 1.5"),
    ],
)
def test_bad_config_values_are_one_line_naming_the_setting(override, message):
    with pytest.raises(TLDError, match=message):
        load_config(None, [override])


def test_numbers_still_parse_from_yaml_strings():
    cfg = load_config(None, ["steps=1e3", "optim.lr=3e-4", "seed=7.0", "data.path=123"])
    assert (cfg.steps, cfg.optim.lr, cfg.seed, cfg.data.path) == (1000, 3e-4, 7, "123")


def test_config_file_whose_top_level_is_a_list_is_named(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- steps: 3\n- batch_size: 4\n")
    with pytest.raises(TLDError, match=f"config file {path} must hold a mapping of settings, got a list"):
        load_config(path)


def test_broken_state_json_error_names_the_file(tmp_path):
    folder = _save(tmp_path, 10)
    (folder / "state.json").write_text('{"step": ')
    with pytest.raises(TLDError, match=rf"cannot read {folder / 'state.json'}: Expecting value"):
        ckpt.load_checkpoint(folder)


def test_newest_checkpoint_that_loads_is_taken_and_the_broken_ones_named(tmp_path):
    for step in (10, 20, 30):
        _save(tmp_path, step)
    model = tmp_path / "step_30" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:40])  # truncated
    (tmp_path / "step_20" / "optimizer.pt").write_bytes(b"garbage" * 10)
    folder, loaded, skipped = ckpt.load_newest(tmp_path)
    assert folder == tmp_path / "step_10" and loaded["model"]["w"].tolist() == [10.0, 10.0]
    assert [(f.name, why.split(": ")[0]) for f, why in skipped] == [
        ("step_30", f"cannot load {model}"),
        ("step_20", f"cannot load {tmp_path / 'step_20' / 'optimizer.pt'}"),
    ]
    with pytest.raises(TLDError, match="cannot load .*optimizer.pt: not a file written by torch.save"):
        ckpt.load_checkpoint(tmp_path / "step_20")
    (tmp_path / "step_10" / "rng.pt").write_bytes(b"")
    with pytest.raises(TLDError, match=r"no checkpoint under .* loads; the newest, step_30: cannot load"):
        ckpt.load_newest(tmp_path)


def test_resume_changes_are_sorted_into_free_and_breaking():
    from tld.training.resume import config_changes

    saved = load_config(None, ["batch_size=8", "model.depth=2"]).to_dict()
    del saved["mask"]  # a checkpoint older than a config section reads as that section's defaults
    new = load_config(None, ["batch_size=8", "steps=5", "sample.every=3", "resume=latest"])
    assert config_changes(saved, new) == (
        ["sample.every 1000 -> 3", "steps 10000 -> 5"],
        ["model.depth 2 -> None"],  # a key removed from a dict-valued setting counts too
    )
    new = load_config(None, ["batch_size=4", "model.depth=2", "optim.lr=1e-3"])
    assert config_changes(saved, new)[1] == ["batch_size 8 -> 4", "optim.lr 0.0003 -> 0.001"]

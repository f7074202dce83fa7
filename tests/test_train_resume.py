"""Resume variants: a fresh process, an explicit step folder in the middle of an epoch, data workers,
more steps than first planned (the learning-rate schedule), bf16 and fp16 (the GradScaler)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from train_fixtures import reset_accelerate, tiny_run_settings

from tld.training import checkpoint as ckpt
from tld.training.config import load_config
from tld.training.loop import train


def _settings(tmp_path, run, *extra):
    return tiny_run_settings(tmp_path, run, warmup=2) + list(extra)


def _same_weights(a, b):
    for key in ("model", "ema"):
        wa, wb = ckpt.load_checkpoint(a)[key], ckpt.load_checkpoint(b)[key]
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (key, k)


RANDOM_EVERYWHERE = ["data.flip=true", "augment.prob=0.5", "model.dropout=0.1", "checkpoint_every=5"]


def test_fresh_process_resumes_an_explicit_step_folder_mid_epoch_with_workers(tmp_path):
    straight = train(load_config(None, _settings(tmp_path, "straight", "steps=10", *RANDOM_EVERYWHERE)))
    # 32 rows in batches of 8: step 5 has read 40 rows, a quarter into the second epoch.
    step_5 = tmp_path / "straight" / "checkpoints" / "step_5"
    cmd = [sys.executable, "-m", "tld.training", "--resume", str(step_5)]
    for item in _settings(tmp_path, "resumed", "steps=10", *RANDOM_EVERYWHERE, "data.num_workers=2"):
        cmd += ["--set", item]
    # The same thread count as this process: float reductions differ between counts, and the check is exact.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    resumed = tmp_path / "resumed" / "checkpoints"
    assert [s for s, _ in ckpt.list_checkpoints(resumed)] == [10]  # it started at 5, in its own folder
    _same_weights(straight.last_checkpoint, resumed / "step_10")


def test_resume_with_more_steps_follows_the_new_schedule(tmp_path):
    """The lr schedule is a function of (step, config.steps): resuming with a larger `steps` puts the
    run on the longer schedule's curve at the step reached (the lr jumps back up), it does not
    continue the old decay."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = ["tracker=tensorboard", "log_every=1", "checkpoint_every=6"]
    train(load_config(None, _settings(tmp_path, "run", "steps=6", *first)))
    reset_accelerate()
    train(load_config(None, _settings(tmp_path, "run", "steps=12", *first, "resume=latest")))
    lrs = {}
    for path in sorted((tmp_path / "run" / "tld").glob("events.out.tfevents.*")):  # one file per run
        events = EventAccumulator(str(path))
        events.Reload()
        lrs.update({e.step: e.value for e in events.Scalars("lr")})
    assert sorted(lrs) == list(range(1, 13))

    def cosine(step, total, warmup=2, lr=2e-3, floor=0.1):
        if step < warmup:
            return lr * (step + 1) / warmup
        progress = (step - warmup) / (total - warmup)
        return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    for step in range(1, 13):
        assert lrs[step] == pytest.approx(cosine(step, 6 if step <= 6 else 12), rel=1e-5), step
    assert lrs[6] == pytest.approx(2e-4, rel=1e-5) and lrs[7] > 4 * lrs[6]


class _CPUScalerAccelerator:
    """accelerate gives fp16 a GradScaler only on accelerators; on the CPU it silently trains in
    float32. This subclass factory turns on the CUDA path (autocast to float16 + a real
    torch.amp.GradScaler) on the CPU, with a scale that grows every 2 steps so it moves within a run."""

    @staticmethod
    def make():
        import accelerate

        base = accelerate.Accelerator

        class Accelerator(base):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                if self.state.mixed_precision == "fp16" and self.scaler is None:
                    self.native_amp = True
                    self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)

        return Accelerator


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_resume_is_exact(tmp_path, monkeypatch, precision):
    import accelerate

    monkeypatch.setattr(accelerate, "Accelerator", _CPUScalerAccelerator.make())
    extra = ["steps=8", "checkpoint_every=4", f"mixed_precision={precision}", "data.flip=true"]
    straight = train(load_config(None, _settings(tmp_path, "straight", *extra)))
    reset_accelerate()
    step_4 = tmp_path / "straight" / "checkpoints" / "step_4"
    resumed = train(load_config(None, _settings(tmp_path, "resumed", *extra, f"resume={step_4}")))
    assert resumed.step == 8 and straight.losses[4:] == resumed.losses
    _same_weights(straight.last_checkpoint, resumed.last_checkpoint)
    scalers = [ckpt.load_checkpoint(r.last_checkpoint)["scaler"] for r in (straight, resumed)]
    if precision == "bf16":
        assert scalers == [None, None]  # bf16 needs no loss scaling
        return
    # The scale doubled every 2 clean steps: 2^10 -> 2^14 after 8. A resume that forgot the scaler
    # would restart from 2^10 at step 4 and end at 2^12.
    assert scalers[0]["scale"] == scalers[1]["scale"] == 2.0**14
    assert scalers[0] == scalers[1]


def _tld_train(capsys, tmp_path, *args):
    from tld.cli import main

    reset_accelerate()
    argv = ["train"]
    for item in _settings(tmp_path, "run", "checkpoint_every=3"):
        argv += ["--set", item]
    code = main([*argv, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_resume_with_more_steps_says_where_it_resumed_and_keeps_the_config(tmp_path, capsys):
    assert _tld_train(capsys, tmp_path, "--set", "steps=6")[0] == 0
    code, out, err = _tld_train(capsys, tmp_path, "--set", "steps=8", "--resume")
    step_6 = tmp_path / "run" / "checkpoints" / "step_6"
    assert code == 0, err
    assert f"resumed from step 6 ({step_6}); changed: steps 6 -> 8" in out
    assert "trained to step 8" in out
    assert load_config(tmp_path / "run" / "config.yaml").steps == 6  # the original is kept
    assert load_config(tmp_path / "run" / "config.resumed_step_6.yaml").steps == 8


def test_resume_refuses_a_changed_batch_size_unless_asked(tmp_path, capsys):
    assert _tld_train(capsys, tmp_path, "--set", "steps=3")[0] == 0
    code, out, err = _tld_train(capsys, tmp_path, "--set", "steps=6", "--set", "batch_size=4", "--resume")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "cannot resume" in err and "batch_size 8 -> 4" in err and "--resume-with-changes" in err
    assert not (tmp_path / "run" / "checkpoints" / "step_6").exists()
    code, out, err = _tld_train(
        capsys, tmp_path, "--set", "steps=6", "--set", "batch_size=4", "--resume-with-changes"
    )
    assert code == 0, err
    assert "resumed from step 3" in out and "changed: batch_size 8 -> 4, steps 3 -> 6" in out


def test_resume_skips_a_truncated_newest_checkpoint_and_says_why(tmp_path, capsys):
    assert _tld_train(capsys, tmp_path, "--set", "steps=6")[0] == 0
    model = tmp_path / "run" / "checkpoints" / "step_6" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])
    code, out, err = _tld_train(capsys, tmp_path, "--set", "steps=6", "--resume")
    assert code == 0, err
    assert f"--resume: skipped step_6 (renamed step_6.broken): cannot load {model}" in out
    assert "resumed from step 3" in out
    # The run went on from step 3 and wrote a good step_6; the broken one is kept aside, never pruned.
    assert ckpt.load_checkpoint(model.parent)["state"]["step"] == 6
    assert (model.parent.parent / "step_6.broken").is_dir()

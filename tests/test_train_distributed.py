"""Two training processes under torchrun (real accelerate + gloo on the CPU): synchronised gradients,
different data per rank, one checkpoint writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file
from train_fixtures import write_dataset

from tld.training import checkpoint as ckpt

# Runs `python -m tld.training` (the `tld train` command) in each rank, recording what the rank trained
# on and the weights it ends with; the recording wraps the loss and the EMA update from outside.
LAUNCHER = textwrap.dedent(
    """
    import json, os, runpy, sys
    from pathlib import Path
    from safetensors.torch import save_file
    from tld.training import ema, loop

    out, rank = Path(sys.argv[1]), int(os.environ["RANK"])
    rows, last = [], {}
    real_loss, real_update = loop.micro_batch_loss, ema.EMA.update

    def loss(net, param, density, batch, *args, **kwargs):
        rows.append([round(v, 4) for v in batch.latents.flatten(1).sum(1).tolist()])
        return real_loss(net, param, density, batch, *args, **kwargs)

    def update(self, model, step):
        last["model"] = model
        return real_update(self, model, step)

    loop.micro_batch_loss, ema.EMA.update = loss, update
    sys.argv = ["tld.training", *sys.argv[2:]]
    try:
        runpy.run_module("tld.training", run_name="__main__")
    except SystemExit as done:
        if done.code:
            raise
    state = {k: v.detach().contiguous() for k, v in last["model"].state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps(rows))
    """
)


def test_two_processes_sync_gradients_and_split_the_data(tmp_path):
    write_dataset(tmp_path / "data", n=32)
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    # --standalone: a free rendezvous port of its own, so parallel runs never collide on 29500.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(launcher), str(tmp_path)]
    for item in (
        f"data.path={tmp_path / 'data'}",
        "model_preset=tiny",
        f"output_dir={tmp_path / 'run'}",
        "steps=6",
        "batch_size=8",
        "optim.lr=2e-3",
        "checkpoint_every=6",
        "sample.every=0",
        "tracker=none",
        "progress=false",
    ):
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 process(es)" in run.stdout
    assert run.stdout.count("trained to step 6; last checkpoint:") == 2  # both ranks finish
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == [6]

    # Different data: in each epoch (2 steps of 2 x 8 rows) the ranks see all 32 rows, none twice.
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 6
    for epoch in range(3):
        rows = [v for r in (0, 1) for step in (2 * epoch, 2 * epoch + 1) for v in seen[r][step]]
        assert len(set(rows)) == 32, epoch
    # Synchronised gradients: both ranks end with the same weights, which are the checkpoint's.
    w0, w1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    saved = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "step_6")["model"]
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
        assert torch.equal(w0[k], saved[k]), k

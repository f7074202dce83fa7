"""callback_on_step_end(step, sigma, latents) in TLDPipeline.__call__ and the edit calls."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from pipeline_fixtures import checker_image, tiny_pipeline

from tld.errors import TLDError

FAST = dict(steps=4, progress=False)


@pytest.fixture(scope="module")
def pipe(tiny_vae_dir, tiny_clip_dir):
    return tiny_pipeline(tiny_vae_dir, tiny_clip_dir)


class Recorder:
    def __init__(self, stop_at: int | None = None):
        self.calls: list[tuple[int, float, tuple[int, ...]]] = []
        self.stop_at = stop_at
        self.last: torch.Tensor | None = None

    def __call__(self, step: int, sigma: torch.Tensor, latents: torch.Tensor):
        self.calls.append((step, float(sigma), tuple(latents.shape)))
        self.last = latents.clone()
        return False if step == self.stop_at else None


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler", "heun", "euler_ancestral", "ddim"])
def test_sees_every_step(pipe, sampler):
    rec = Recorder()
    out = pipe("a cute owl", seed=1, num_images=2, sampler=sampler, callback_on_step_end=rec, **FAST)
    assert [c[0] for c in rec.calls] == [0, 1, 2, 3]
    sigmas = [c[1] for c in rec.calls]
    assert sigmas == sorted(sigmas, reverse=True) and sigmas[-1] == 0.0 and sigmas[0] > 0
    assert all(c[2] == tuple(out.latents.shape) for c in rec.calls)
    torch.testing.assert_close(rec.last, out.latents.float())  # the last call sees the result
    plain = pipe("a cute owl", seed=1, num_images=2, sampler=sampler, **FAST)
    assert torch.equal(plain.latents, out.latents)  # watching changes nothing


def test_returning_false_stops_and_decodes(pipe):
    full = pipe("a cute owl", seed=2, **FAST)
    rec = Recorder(stop_at=1)
    out = pipe("a cute owl", seed=2, callback_on_step_end=rec, **FAST)
    assert [c[0] for c in rec.calls] == [0, 1]
    assert isinstance(out[0], Image.Image) and out[0].size == full[0].size
    assert not torch.equal(out.latents, full.latents)
    assert not torch.equal(out.latents, rec.last)  # the clean estimate, not the noisy latents


@pytest.mark.parametrize("call", ["img2img", "inpaint", "inpaint_resample", "outpaint"])
def test_edit_calls_report_and_stop(pipe, call):
    image = checker_image()
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 16))
    runs = {
        "img2img": lambda cb: pipe.img2img(
            image, "owl", strength=1.0, seed=0, callback_on_step_end=cb, **FAST
        ),
        "inpaint": lambda cb: pipe.inpaint(image, mask, "owl", seed=0, callback_on_step_end=cb, **FAST),
        "inpaint_resample": lambda cb: pipe.inpaint(
            image, mask, "owl", resample=2, seed=0, callback_on_step_end=cb, **FAST
        ),
        "outpaint": lambda cb: pipe.outpaint(image, "owl", right=4, seed=0, callback_on_step_end=cb, **FAST),
    }
    rec = Recorder()
    runs[call](rec)
    assert [c[0] for c in rec.calls] == [0, 1, 2, 3]
    stop = Recorder(stop_at=0)
    out = runs[call](stop)
    assert [c[0] for c in stop.calls] == [0] and isinstance(out[0], Image.Image)


def test_a_callback_must_be_callable(pipe):
    with pytest.raises(TLDError, match="callback_on_step_end must be callable"):
        pipe.img2img(checker_image(), "owl", callback_on_step_end=3, **FAST)

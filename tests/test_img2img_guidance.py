"""img2img keeps a guidance schedule acting when it starts below the schedule's pieces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tld.diffusion import get_sigmas
from tld.pipeline.edit import start_relative_schedule

APPLE = Path(__file__).resolve().parent.parent / "examples" / "apple.png"


@pytest.fixture(scope="module")
def pipe():
    from tld import TLDPipeline

    return TLDPipeline.from_pretrained(device="cpu")


def test_pieces_above_the_start_keep_their_share_of_steps(pipe):
    full = get_sigmas("tld", 15, pipe.param)  # 99, 14, 6.5, 4, 2.75, 2, 1.5, ...: [2, 4] guides 6 of 15
    assert start_relative_schedule([[2, 4]], full, 6) == [[pytest.approx(float(full[9])), 4.0]]  # 4 of 9
    assert start_relative_schedule([[2, 4]], full, 13) == [[pytest.approx(float(full[13])), 4.0]]  # >= 1
    assert start_relative_schedule([[2, 4]], full, 3) == [[2.0, 4.0]]  # the start is above: as it is
    assert start_relative_schedule([[2, 4]], full, 0) == [[2, 4]]
    assert start_relative_schedule(None, full, 6) is None


def test_img2img_below_the_schedule_still_guides(pipe):
    image = Image.open(APPLE)
    args = dict(strength=0.6, seed=0, progress=False, output_type="np")
    got = pipe.img2img(image, "green apple", **args)  # the model's cfg 1.5 + [[2, 4]]
    full = get_sigmas("tld", 15, pipe.param)
    explicit = pipe.img2img(image, "green apple", cfg=1.5, cfg_schedule=[[float(full[9]), 4]], **args)
    constant = pipe.img2img(image, "green apple", cfg=1.5, **args)  # what the schedule did before
    assert np.array_equal(got.images, explicit.images)
    assert np.abs(got.images - constant.images).mean() > 1e-3
    assert got.settings["cfg_schedule"] == [[2.0, 4.0]]  # recorded as given: a rerun repeats it

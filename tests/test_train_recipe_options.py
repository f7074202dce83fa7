"""The recipe options train end to end: flow matching, the trunk options and masked training."""

from __future__ import annotations

import pytest
import torch
from train_fixtures import tiny_run_settings

from tld.data import Batch
from tld.diffusion import get_density, get_parameterization
from tld.errors import TLDError
from tld.model import Denoiser, DenoiserConfig
from tld.training.config import load_config
from tld.training.loop import train
from tld.training.objective import micro_batch_loss, token_mask


def test_token_mask_keeps_the_asked_share_and_is_seeded():
    gen = torch.Generator().manual_seed(0)
    keep, cells = token_mask(4, 4, 4, 0.75, gen)
    assert keep.shape == (4, 4) and cells.shape == (4, 4, 4)
    assert torch.equal(keep, keep.sort(dim=1).values) and (cells.flatten(1).sum(1) == 4).all()
    for row in range(4):
        assert torch.equal(cells.flatten(1)[row].nonzero().flatten(), keep[row])
    again, _ = token_mask(4, 4, 4, 0.75, torch.Generator().manual_seed(0))
    assert torch.equal(again, keep)
    assert token_mask(2, 2, 2, 0.99, gen)[0].shape == (2, 1)  # at least one token


class _Counting(Denoiser):
    """Records how many tokens each call's blocks saw."""

    seen: list

    def trunk(self, tokens, ctx):
        self.seen.append(tokens.shape[1])
        return super().trunk(tokens, ctx)


def test_masked_phase_then_unmasked_phase():
    torch.manual_seed(0)
    net = _Counting(DenoiserConfig.preset("tiny"))
    net.seen = []
    config = load_config(None, ["mask.ratio=0.5", "mask.until=0.5", "steps=10"])
    batch = Batch(torch.randn(4, 4, 8, 8), torch.randn(4, 16), None, None)
    param, density = get_parameterization("flow"), get_density("logit_normal")
    for step in (0, 4, 5, 9):
        loss = micro_batch_loss(
            net, param, density, batch, torch.Generator().manual_seed(step), config, step=step
        )
        assert torch.isfinite(loss)
        loss.backward()
    assert net.seen == [8, 8, 16, 16]  # 16 patch tokens, half of them until step 5


@pytest.mark.parametrize(
    "overrides",
    [
        ["diffusion.parameterization={name: flow}", "diffusion.density={name: logit_normal}"],
        ["model.adaln=true", "model.skips=true", "model.qk_norm=true", "diffusion.min_snr_gamma=5"],
        ["mask.ratio=0.5", "mask.until=0.8", "diffusion.parameterization={name: flow}"],
    ],
)
def test_recipe_options_train_and_lower_the_loss(tmp_path, overrides):
    config = load_config(None, tiny_run_settings(tmp_path) + ["steps=40", "optim.lr=3e-3", *overrides])
    result = train(config)
    assert result.step == 40
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)


def test_bad_mask_settings_are_one_line():
    with pytest.raises(TLDError, match=r"mask.ratio must be in \[0, 1\), got 1.0"):
        load_config(None, ["mask.ratio=1.0"])
    with pytest.raises(TLDError, match=r"mask.until must be in \[0, 1\], got 2.0"):
        load_config(None, ["mask.until=2.0"])

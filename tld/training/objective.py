"""The model a run trains, its optimizer and the loss of one micro-batch; never branches on parameterization."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tld.data import Batch, LatentDataset
from tld.errors import TLDError
from tld.model import check_inputs
from tld.model.files import read_config_json
from tld.model.surgery import grow_input_channels, inpaint_concat
from tld.training.augment import AUGMENT_COND_DIM, augment_latents, random_masks
from tld.training.config import OptimConfig, TrainConfig


def _data_fields(config: TrainConfig, data: LatentDataset) -> dict[str, Any]:
    c, h, w = data.latent_shape
    fields: dict[str, Any] = {"in_channels": c, "out_channels": c, "latent_size": [h, w]}
    fields["text_dim"] = data.text_dim if data.condition == "text" else 0
    fields["num_classes"] = data.num_classes if data.condition == "class" else 0
    fields["extra_cond_dim"] = AUGMENT_COND_DIM if config.augment.prob > 0 else 0
    if config.inpaint.enabled:
        fields["in_channels"] = 2 * c + 1  # noisy latent + known latent + mask
    return fields


def check_model_matches_data(model_cfg: dict[str, Any], expected: dict[str, Any], source: str) -> None:
    """One TLDError listing every field where the model and the dataset disagree."""
    wrong = [
        f"{k}={model_cfg[k]!r} (data needs {v!r})"
        for k, v in expected.items()
        if k in model_cfg and list(_as_list(model_cfg[k])) != list(_as_list(v))
    ]
    if wrong:
        raise TLDError(f"{source} does not match the dataset: " + ", ".join(wrong))


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def resolve_model_config(config: TrainConfig, data: LatentDataset):
    """Preset + overrides, with data-derived fields filled in; explicit contradictions are errors."""
    from tld.model import DenoiserConfig

    base = DenoiserConfig.preset(config.model_preset).to_dict()
    expected = _data_fields(config, data)
    check_model_matches_data(config.model, expected, "config.model")
    return DenoiserConfig.from_dict({**base, **expected, **config.model})


def load_init_model(path: str) -> nn.Module:
    """A Denoiser from a model folder, or converted from an original TLD checkpoint file."""
    from tld.model import Denoiser
    from tld.model.convert import load_original_tld

    p = Path(path)
    if p.is_dir():
        return Denoiser.from_pretrained(p)
    if p.is_file():
        return load_original_tld(str(p))
    raise TLDError(f"init_from {path!r} is neither a model folder nor a checkpoint file")


# The fields that name a text encoder; a path or a truncation length may differ between machines.
_ENCODER_IDENTITY = ("backend", "model", "pretrained")


def check_init_from(config: TrainConfig, data: LatentDataset, net: nn.Module) -> None:
    """A fine-tune keeps its base model's shapes, text conditioning and parameterization.

    Refuses, in one line naming the setting, what would silently change them: `model` overrides
    that differ from the base network, a dataset with pooled text under a per-token model (or the
    reverse), a different text encoder, or another parameterization.
    """
    source = f"init_from model {config.init_from}"
    base_net = net.config.to_dict()
    wrong = [f"{k}={v!r} (base has {base_net[k]!r})" for k, v in config.model.items()
             if k in base_net and _as_list(v) != _as_list(base_net[k])]  # fmt: skip
    if wrong:
        raise TLDError(
            f"{source} keeps its own shapes, but config.model sets {', '.join(wrong)}; "
            "drop these overrides (e.g. --set model={})"
        )
    folder = Path(config.init_from)
    base = read_config_json(folder) if folder.is_dir() else {}
    if not base or data.condition != "text":
        return
    if "text_tokens" in base and bool(base["text_tokens"]) != data.tokens:
        have, need = ("pooled", "per-token") if base["text_tokens"] else ("per-token", "pooled")
        fix = "re-encode the dataset with `tld preprocess encode --text-tokens`"
        raise TLDError(
            f"{source} reads {need} text embeddings but the dataset (data.text={config.data.text}) "
            f"gives {have} ones; {fix if need == 'per-token' else 'set data.text=pooled'}"
        )
    mine, theirs = base.get("text_encoder"), data.arrays.meta.text_encoder
    if isinstance(mine, dict) and isinstance(theirs, dict) and theirs.get("backend"):
        differ = [k for k in _ENCODER_IDENTITY if mine.get(k) != theirs.get(k)]
        if differ:
            raise TLDError(
                f"{source} was trained with text encoder {_spec_text(mine)} but the dataset "
                f"was encoded with {_spec_text(theirs)}; encode it with the same text encoder"
            )
    param = base.get("parameterization")
    if isinstance(param, dict) and param.get("name") != config.diffusion.parameterization.get("name"):
        raise TLDError(
            f"{source} uses the {param.get('name')!r} parameterization but "
            f"diffusion.parameterization is {config.diffusion.parameterization.get('name')!r}; set it to match"
        )


def _spec_text(spec: dict[str, Any]) -> str:
    return "/".join(str(spec[k]) for k in _ENCODER_IDENTITY if spec.get(k))


def build_model(config: TrainConfig, data: LatentDataset) -> nn.Module:
    from tld.model import Denoiser

    if not config.init_from:
        return check_bucket_patches(Denoiser(resolve_model_config(config, data)), data)
    net = load_init_model(config.init_from)
    base = read_config_json(config.init_from) if Path(config.init_from).is_dir() else {}
    if config.data.text == "auto" and base.get("text_tokens") is False:
        data.tokens = False  # per-token rows pool into what a pooled base model reads
    check_init_from(config, data, net)
    expected = _data_fields(config, data)
    if config.inpaint.enabled and net.config.in_channels != expected["in_channels"]:
        net = grow_input_channels(net, expected["in_channels"])
    check_model_matches_data(net.config.to_dict(), expected, f"init_from model {config.init_from}")
    return check_bucket_patches(net, data)


def check_bucket_patches(net: nn.Module, data: LatentDataset) -> nn.Module:
    """Every aspect-ratio bucket's latent must split into whole patches (the first is latent_size)."""
    p = net.config.patch_size
    bad = [f"{h}x{w}" for _, h, w in data.bucket_shapes[1:] if h % p or w % p]
    if bad:
        raise TLDError(f"the dataset's bucket latents {', '.join(bad)} are not multiples of patch_size {p}")
    return net


def build_optimizer(params: Iterable[nn.Parameter], o: OptimConfig) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where it has one (CPU and CUDA floating-point parameters).

    The same update as the per-parameter loop torch picks on the CPU by default, in one pass over
    each parameter instead of about ten: 483 -> 115 ms per step for the 101M model's 101M
    parameters on one CPU thread (docs/performance.md).
    """
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    kwargs = dict(lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)
    return torch.optim.AdamW(params, **kwargs, fused=fused or None)


def micro_batch_loss(
    net: nn.Module,
    param: Any,
    density: Any,
    batch: Batch,
    generator: torch.Generator,
    config: TrainConfig,
    check: bool = False,
    step: int = 0,
) -> torch.Tensor:
    """Mean loss of one micro-batch; all randomness comes from `generator` (on the CPU).

    `check=True` (the first batch of a run) runs `check_inputs` on what the network gets; `step`
    (the optimizer step) says whether masked training is still in its masked phase.
    """
    x0 = batch.latents
    device = x0.device
    b = x0.shape[0]
    extra_cond = None
    if config.augment.prob > 0:
        a = config.augment
        x0, extra_cond = augment_latents(x0, generator, a.prob, a.flip, a.rotate, a.max_shift)
    sigma = density(b, generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    drop = (torch.rand(b, generator=generator) < config.diffusion.cfg_dropout).to(device)
    inp = param.training_inputs(x0, sigma, noise, min_snr=config.diffusion.min_snr_gamma)
    net_input = inp.net_input
    if config.inpaint.enabled:
        i = config.inpaint
        mask = random_masks(b, x0.shape[-2], x0.shape[-1], generator, (i.box, i.border, i.full, i.none))
        net_input = torch.cat([net_input, inpaint_concat(x0, mask.to(device))], dim=1)
    cond = dict(
        text_emb=batch.text_emb,
        text_mask=batch.text_mask,
        class_labels=batch.labels,
        extra_cond=extra_cond,
        drop_cond=drop,
    )
    if check:
        check_inputs(_denoiser_config(net), net_input, inp.c_noise, **cond)
    keep, pixel_mask = None, None
    m = config.mask
    if m.ratio > 0 and step < m.until * config.steps:
        patch = _denoiser_config(net).patch_size
        keep, cells = token_mask(b, x0.shape[-2] // patch, x0.shape[-1] // patch, m.ratio, generator)
        keep, pixel_mask = keep.to(device), cells.repeat_interleave(patch, -2).repeat_interleave(patch, -1)
        out = net(net_input, inp.c_noise, keep=keep, **cond)
    else:
        out = net(net_input, inp.c_noise, **cond)
    mask = None if pixel_mask is None else pixel_mask[:, None].to(device)
    return param.loss(out.float(), inp.target.float(), inp.weight, mask).mean()


def _denoiser_config(net: nn.Module):
    """The Denoiser's config under torch.compile (`_orig_mod`) and DDP (`module`) wrappers."""
    inner = getattr(net, "_orig_mod", net)
    return getattr(inner, "module", inner).config


def token_mask(
    batch: int, rows: int, cols: int, ratio: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random set of kept patch tokens per image: (B, K) sorted indices with K = round((1 - ratio)
    * rows * cols) (at least 1), and the (B, rows, cols) float mask of the kept cells."""
    n = rows * cols
    k = max(1, round((1 - ratio) * n))
    keep = torch.rand(batch, n, generator=generator).argsort(dim=1)[:, :k].sort(dim=1).values
    mask = torch.zeros(batch, n).scatter_(1, keep, 1.0).view(batch, rows, cols)
    return keep, mask

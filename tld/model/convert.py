"""Load checkpoints of the original Transformer Latent Diffusion (github apapiu/transformer_latent_diffusion).

The released `state_dict_378000.pth` is the EMA state dict of the 101M model; training checkpoints
hold it under "model_ema". Two networks share these keys, so the caller names the variant:

- "released": the published weights' network (upstream branch legacy_dh_order): post-norm blocks,
  self-attention with embed_dim // 64 heads, cross-attention with 4, heads taking channels
  interleaved ("(d h)").
- "main": upstream's main branch: pre-norm blocks, "(h d)" heads, embed_dim // 64 heads in both
  attentions, and no final LayerNorm.

The converted Denoiser is configured to compute exactly the chosen function.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from tld.errors import TLDError
from tld.model.config import DenoiserConfig
from tld.model.denoiser import Denoiser
from tld.model.state import load_checked

_PREFIXES = ("_orig_mod.", "module.")
_TRUNK = "denoiser_trans_block."
_BLOCK = re.compile(r"denoiser_trans_block\.decoder_blocks\.(\d+)\.(.+)")

# original name -> our name, outside the blocks
_RENAMES = {
    "fourier_feats.1.": "noise_mlp.0.",
    "fourier_feats.3.": "noise_mlp.2.",
    "label_proj.": "text_proj.",
    "norm.": "cond_norm.",
    _TRUNK + "patchify_and_embed.0.": "patch_embed.conv.",
    _TRUNK + "patchify_and_embed.2.": "patch_embed.norm_in.",
    _TRUNK + "patchify_and_embed.3.": "patch_embed.proj.",
    _TRUNK + "patchify_and_embed.4.": "patch_embed.norm_out.",
    _TRUNK + "out_proj.0.": "out_proj.",
}
# inside block i
_BLOCK_RENAMES = {
    "self_attention.qkv_linear.": "attn.qkv.",
    "cross_attention.q_linear.": "cross.q.",
    "cross_attention.kv_linear.": "cross.kv.",
    "mlp.mlp.0.": "ffn.fc1.",
    "mlp.mlp.1.": "ffn.dwconv.",
    "mlp.mlp.3.": "ffn.fc2.",
    "norm1.": "norm1.",
    "norm2.": "norm2.",
    "norm3.": "norm3.",
}
# buffers the original stores that are pure functions of the config
_DERIVED = ("fourier_feats.0.angular_speeds", _TRUNK + "precomputed_pos_enc")


def _read(path_or_state_dict: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(path_or_state_dict, Mapping):
        state = dict(path_or_state_dict)
    else:
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise TLDError(f"expected an original TLD checkpoint file, got {str(path)!r} (no such file)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
            raise TLDError(f"could not read {path} as a weights-only torch checkpoint: {exc}") from None
    if isinstance(state, Mapping) and isinstance(state.get("model_ema"), Mapping):
        state = state["model_ema"]
    elif isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise TLDError(
            "expected a state dict of tensors (or a checkpoint with 'model_ema'), got something else"
        )
    return {_strip(k): v for k, v in state.items()}


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _get(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise TLDError(
            f"not an original TLD state dict: key {key!r} is missing (found e.g. {sorted(state)[:3]})"
        )
    return state[key]


VARIANTS = ("released", "main")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise TLDError(f"variant must be one of {VARIANTS}, got {variant!r}")


def infer_config(state: Mapping[str, torch.Tensor], variant: str = "released") -> DenoiserConfig:
    """Read the original model's hyper-parameters off its tensor shapes."""
    text = _get(state, "label_proj.weight")
    noise = _get(state, "fourier_feats.1.weight")
    conv = _get(state, _TRUNK + "patchify_and_embed.0.weight")  # (C*p*p, C, p, p)
    pos = _get(state, _TRUNK + "pos_embed.weight")  # (seq, E)
    out = _get(state, _TRUNK + "out_proj.0.weight")  # (C*p*p, E)
    fc1 = _get(state, _TRUNK + "decoder_blocks.0.mlp.mlp.0.weight")  # (r*E, E, 1, 1)
    embed, channels, patch = text.shape[0], conv.shape[1], conv.shape[2]
    side = math.isqrt(pos.shape[0])
    if side * side != pos.shape[0]:
        raise TLDError(
            f"the original TLD uses a square token grid, but pos_embed has {pos.shape[0]} positions"
        )
    depth = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK.match(k)))
    shape = DenoiserConfig(
        in_channels=channels,
        out_channels=out.shape[0] // (patch * patch),
        latent_size=(side * patch, side * patch),
        patch_size=patch,
        embed_dim=embed,
        depth=depth,
        num_heads=max(1, embed // 64),
        mlp_ratio=fc1.shape[0] // embed,
        noise_embed_dim=noise.shape[1],
        text_dim=text.shape[1],
    )
    return original_config(shape, variant)


def original_config(config: DenoiserConfig | None = None, variant: str = "released") -> DenoiserConfig:
    """The given (or default) config, switched to the arithmetic of the variant's blocks."""
    _check_variant(variant)
    net = config if config is not None else DenoiserConfig()
    if variant == "main":
        return net.replace(norm_position="pre", head_layout="split", final_norm=False)
    return net.replace(
        norm_position="post",
        head_layout="interleaved",
        cross_heads=4 if net.cross_heads is None else net.cross_heads,
    )


def rename_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original key names -> ours; 1x1 conv kernels become Linear weights. Unknown keys pass through
    unchanged so the load check can name them."""
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _DERIVED:
            continue
        new = key
        if key == _TRUNK + "pos_embed.weight":
            new = "pos_embed"
        elif m := _BLOCK.match(key):
            index, rest = m.groups()
            for old, ours in _BLOCK_RENAMES.items():
                if rest.startswith(old):
                    new = f"blocks.{index}.{ours}{rest[len(old) :]}"
                    break
        else:
            for old, ours in _RENAMES.items():
                if key.startswith(old):
                    new = ours + key[len(old) :]
                    break
        if new.endswith(("ffn.fc1.weight", "ffn.fc2.weight")) and value.ndim == 4:
            value = value.flatten(1)
        renamed[new] = value
    return renamed


def load_original_tld(
    path_or_state_dict: str | Path | Mapping[str, torch.Tensor],
    config: DenoiserConfig | None = None,
    variant: str = "released",
) -> Denoiser:
    """A Denoiser computing the original TLD network of `variant` ("released" | "main") for the weights.

    `config=None` infers the shape from the tensors; a given config is switched to the variant's
    norms and head layout, and must match the tensors' shapes. Both variants have the same keys:
    only the caller knows which network trained them.
    """
    _check_variant(variant)
    state = _read(path_or_state_dict)
    shape = original_config(config, variant) if config is not None else infer_config(state, variant)
    net = Denoiser(shape)
    source = "original TLD checkpoint" if isinstance(path_or_state_dict, Mapping) else str(path_or_state_dict)
    load_checked(net, rename_original(state), source)
    return net.eval()

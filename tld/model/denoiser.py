"""The transformer denoiser: latent patches attend to themselves and to a few conditioning tokens."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tld.errors import TLDError
from tld.model import fused
from tld.model.blocks import PatchEmbed, SinusoidalEmbedding, TransformerBlock
from tld.model.config import DenoiserConfig
from tld.model.files import CONFIG_NAME, WEIGHTS_NAME, update_config_json
from tld.model.inputs import Conditioning
from tld.model.state import load_checked


class Denoiser(nn.Module):
    """Maps (noisy latent, noise level, conditioning) to a latent of `out_channels` channels.

    Conditioning tokens: the noise-level embedding (plus the optional extra conditioning vector),
    the projected text embedding(s) and an optional class token, LayerNorm-ed together; every block
    cross-attends to them. `forward` is pure math: inputs are checked where they enter
    (`tld.model.check_inputs`, called by the pipeline, the dataset and the first training batch).
    """

    def __init__(self, config: DenoiserConfig | None = None):
        super().__init__()
        cfg = config if config is not None else DenoiserConfig()
        self.config = cfg
        e = cfg.embed_dim

        self.noise_embed = SinusoidalEmbedding(cfg.noise_embed_dim)
        self.noise_mlp = nn.Sequential(nn.Linear(cfg.noise_embed_dim, e), nn.GELU(), nn.Linear(e, e))
        self.text_proj = nn.Linear(cfg.text_dim, e) if cfg.text_dim else None
        self.null_text = (
            nn.Parameter(torch.zeros(cfg.text_dim)) if cfg.learned_null and cfg.text_dim else None
        )
        self.class_embed = nn.Embedding(cfg.num_classes + 1, e) if cfg.num_classes else None
        self.extra_proj = nn.Linear(cfg.extra_cond_dim, e) if cfg.extra_cond_dim else None
        if self.extra_proj is not None:
            # Starts as a no-op so extra conditioning can be added to a trained model.
            nn.init.zeros_(self.extra_proj.weight)
            nn.init.zeros_(self.extra_proj.bias)
        self.cond_norm = nn.LayerNorm(e)

        self.patch_embed = PatchEmbed(cfg.in_channels, cfg.patch_size, e, cfg.patch_dim)
        self.pos_embed = nn.Parameter(torch.randn(cfg.grid[0] * cfg.grid[1], e) * 0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                e,
                cfg.heads,
                cfg.cross_attn_heads,
                cfg.mlp_ratio,
                cfg.dropout,
                cfg.norm_position,
                cfg.head_layout,
            )
            for _ in range(cfg.depth)
        )
        # Post-norm blocks already end in a LayerNorm; pre-norm ones need one before the output.
        pre_norm_end = cfg.norm_position == "pre" and cfg.final_norm
        self.final_norm = nn.LayerNorm(e) if pre_norm_end else nn.Identity()
        self.out_proj = nn.Linear(e, cfg.out_channels * cfg.patch_size**2)
        self.grad_checkpointing = False

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def positional(self, grid: tuple[int, int]) -> torch.Tensor:
        """(rows*cols, E) positional embedding, bicubically resized when the grid differs."""
        if grid == self.config.grid:
            return self.pos_embed
        gh, gw = self.config.grid
        table = self.pos_embed.T.reshape(1, -1, gh, gw)
        table = F.interpolate(table.float(), size=grid, mode="bicubic", align_corners=False)
        return table.reshape(-1, grid[0] * grid[1]).T.to(self.pos_embed.dtype)

    def null_text_vector(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        if self.null_text is not None:
            return self.null_text.to(dtype)
        return torch.zeros(self.config.text_dim, device=device, dtype=dtype)

    def conditioning(
        self, batch: int, noise_level: torch.Tensor, c: Conditioning
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The normalised conditioning tokens (B, M, E) and their key mask (B, M) or None."""
        cfg = self.config
        weight = self.noise_mlp[0].weight
        drop_cond = c.drop_cond
        noise_level = noise_level.reshape(-1).expand(batch) if noise_level.numel() == 1 else noise_level
        noise_tok = self.noise_mlp(self.noise_embed(noise_level).to(weight.dtype))
        if self.extra_proj is not None:
            # None means an all-zero vector, whose projection is just the bias.
            extra = c.extra_cond
            noise_tok = noise_tok + (
                self.extra_proj.bias if extra is None else self.extra_proj(extra.to(weight.dtype))
            )
        tokens = [noise_tok[:, None]]
        masks: list[torch.Tensor | None] = [None]

        if self.text_proj is not None:
            null = self.null_text_vector(weight.device, weight.dtype)
            if c.text_emb is None:
                text, mask = null.expand(batch, 1, -1), None
            else:
                text = c.text_emb.to(weight.dtype)
                text, mask = (text[:, None], None) if text.ndim == 2 else (text, c.text_mask)
            if drop_cond is not None:
                text = torch.where(drop_cond[:, None, None], null, text)
                if text.shape[1] > 1:
                    # A dropped row keeps one null token, so it matches `text_emb=None` exactly.
                    first = torch.arange(text.shape[1], device=text.device) == 0
                    keep = mask if mask is not None else torch.ones_like(first).expand(batch, -1)
                    mask = torch.where(drop_cond[:, None], first, keep)
            tokens.append(self.text_proj(text))
            masks.append(mask)

        if self.class_embed is not None:
            null_class = torch.full((batch,), cfg.num_classes, device=weight.device, dtype=torch.long)
            labels = null_class if c.class_labels is None else c.class_labels.long()
            if drop_cond is not None:
                labels = torch.where(drop_cond, null_class, labels)
            tokens.append(self.class_embed(labels)[:, None])
            masks.append(None)

        cond = self.cond_norm(torch.cat(tokens, dim=1))
        if all(m is None for m in masks):
            return cond, None
        full = [
            m if m is not None else torch.ones(batch, t.shape[1], dtype=torch.bool, device=cond.device)
            for m, t in zip(masks, tokens)
        ]
        return cond, torch.cat(full, dim=1)

    def forward(
        self, x: torch.Tensor, noise_level: torch.Tensor | float, **conditioning: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, in_channels, H, W) and the noise level -> (B, out_channels, H, W).

        Conditioning is keyword-only: text_emb, text_mask, class_labels, extra_cond, drop_cond
        (see `tld.model.Conditioning`); a missing one means its null value.
        """
        if not torch.is_tensor(noise_level):
            noise_level = torch.tensor(float(noise_level), device=x.device)
        cfg = self.config
        b, _, h, w = x.shape
        p = cfg.patch_size
        grid = (h // p, w // p)

        tokens = self.patch_embed(x) + self.positional(grid).to(x.dtype)
        cond, mask = self.conditioning(b, noise_level, Conditioning(**conditioning))
        rows = fused.rows_per_chunk(tokens)
        if rows < b:  # rows are independent: chunks give the same result, with better locality
            parts = zip(tokens.split(rows), cond.split(rows), _split(mask, rows))
            tokens = torch.cat([self.trunk(*part, grid) for part in parts])
        else:
            tokens = self.trunk(tokens, cond, mask, grid)
        out = self.out_proj(self.final_norm(tokens))
        out = out.view(b, grid[0], grid[1], cfg.out_channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, cfg.out_channels, h, w)

    def trunk(
        self, tokens: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None, grid: tuple[int, int]
    ) -> torch.Tensor:
        """The transformer blocks over (B, N, E) tokens.

        With `grad_checkpointing` (a training switch, not part of the config) each block keeps only
        its input for the backward pass and runs again there: activation memory drops from all
        blocks' to about one block's, for about one more forward pass of compute.
        """
        checkpointed = self.grad_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            if checkpointed:
                tokens = checkpoint(block, tokens, cond, mask, grid, use_reentrant=False)
            else:
                tokens = block(tokens, cond, mask, grid)
        return tokens

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write `config.json` (merging into an existing one) and `denoiser.safetensors`."""
        from safetensors.torch import save_file

        folder = Path(folder)
        update_config_json(folder, {"denoiser": self.config.to_dict()})
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME))
        return folder

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        weights_name: str = WEIGHTS_NAME,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> Denoiser:
        """Build from `folder/config.json` ("denoiser" entry) and load `folder/<weights_name>`."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG_NAME).is_file():
            raise TLDError(f"expected a model folder with {CONFIG_NAME}, got {str(folder)!r}")
        weights = folder / weights_name
        if not weights.is_file():
            raise TLDError(f"expected denoiser weights at {weights}, but the file does not exist")
        net = cls(DenoiserConfig.load(folder))
        load_checked(net, load_file(str(weights)), str(weights))
        return net.to(device=device, dtype=dtype)


def _split(t: torch.Tensor | None, rows: int) -> Iterable[torch.Tensor | None]:
    return t.split(rows) if t is not None else itertools.repeat(None)

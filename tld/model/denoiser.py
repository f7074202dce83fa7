"""The transformer denoiser: latent patches attend to themselves and to a few conditioning tokens."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tld.errors import TLDError
from tld.model.blocks import PatchEmbed, SinusoidalEmbedding, TokenContext, TransformerBlock, modulate
from tld.model.config import DenoiserConfig
from tld.model.files import CONFIG_NAME, WEIGHTS_NAME, update_config_json
from tld.model.inputs import Conditioning
from tld.model.state import load_checked


class Denoiser(nn.Module):
    """Maps (noisy latent, noise level, conditioning) to a latent of `out_channels` channels.

    Conditioning tokens: the noise-level embedding (plus the optional extra conditioning vector),
    the projected text embedding(s) and an optional class token, LayerNorm-ed together; every block
    cross-attends to them. With `adaln` their sum (text tokens averaged) also modulates every block.
    `forward` is pure math: inputs are checked where they enter (`tld.model.check_inputs`, called by
    the pipeline, the dataset and the first training batch).

    Two switches are not part of the config (they change how, not what, it computes):
    `grad_checkpointing` (training memory) and `inference_chunk_tokens` (without autograd, run the
    blocks on batch chunks of about this many tokens; set by `tld.model.cpu`, 0 = whole batches).
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
                cfg.qk_norm,
                cfg.adaln,
            )
            for _ in range(cfg.depth)
        )
        # U-ViT: the last depth//2 blocks each take a first-half block's output, mixed in by a linear.
        self.skip_proj = (
            nn.ModuleList(nn.Linear(2 * e, e) for _ in range(cfg.depth // 2)) if cfg.skips else None
        )
        # Post-norm blocks already end in a LayerNorm; pre-norm ones need one before the output.
        pre_norm_end = cfg.norm_position == "pre" and cfg.final_norm
        self.final_norm = nn.LayerNorm(e) if pre_norm_end else nn.Identity()
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(e, 2 * e)) if cfg.adaln else None
        self.out_proj = nn.Linear(e, cfg.out_channels * cfg.patch_size**2)
        if cfg.adaln:  # adaLN-Zero: the output starts at zero too
            for layer in (self.final_ada[1], self.out_proj):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.grad_checkpointing = False
        self.inference_chunk_tokens = 0

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
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The normalised conditioning tokens (B, M, E), their key mask (B, M) or None, and the
        adaLN vector (B, E) (None without adaln): the sum of the unnormalised tokens, with the text
        tokens averaged over the kept ones."""
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
        vec = _pooled_sum(tokens, masks) if cfg.adaln else None
        if all(m is None for m in masks):
            return cond, None, vec
        full = [
            m if m is not None else torch.ones(batch, t.shape[1], dtype=torch.bool, device=cond.device)
            for m, t in zip(masks, tokens)
        ]
        return cond, torch.cat(full, dim=1), vec

    def forward(
        self,
        x: torch.Tensor,
        noise_level: torch.Tensor | float,
        keep: torch.Tensor | None = None,
        **conditioning: torch.Tensor | None,
    ) -> torch.Tensor:
        """(B, in_channels, H, W) and the noise level -> (B, out_channels, H, W).

        Conditioning is keyword-only: text_emb, text_mask, class_labels, extra_cond, drop_cond
        (see `tld.model.Conditioning`); a missing one means its null value. `keep` (B, K) long,
        masked training only: the indices (row-major over the patch grid) of the patch tokens the
        blocks see; the output's dropped patches are zeros (the loss must skip them).
        """
        if not torch.is_tensor(noise_level):
            noise_level = torch.tensor(float(noise_level), device=x.device)
        cfg = self.config
        b, _, h, w = x.shape
        p = cfg.patch_size
        grid = (h // p, w // p)

        tokens = self.patch_embed(x) + self.positional(grid).to(x.dtype)
        if keep is not None:
            tokens = tokens.gather(1, keep[:, :, None].expand(-1, -1, tokens.shape[-1]))
        cond, mask, vec = self.conditioning(b, noise_level, Conditioning(**conditioning))
        ctx = TokenContext(cond, mask, grid, keep, vec)
        rows = self._chunk_rows(tokens)
        if rows < b:  # rows are independent: chunks give the same result, with better locality
            parts = [self.trunk(tokens[i : i + rows], ctx.rows(i, i + rows)) for i in range(0, b, rows)]
            tokens = torch.cat(parts)
        else:
            tokens = self.trunk(tokens, ctx)
        out = self.head(tokens, ctx.vec)
        if keep is not None:
            full = out.new_zeros(b, grid[0] * grid[1], out.shape[-1])
            out = full.scatter(1, keep[:, :, None].expand(-1, -1, out.shape[-1]), out)
        out = out.view(b, grid[0], grid[1], cfg.out_channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, cfg.out_channels, h, w)

    def head(self, tokens: torch.Tensor, vec: torch.Tensor | None) -> torch.Tensor:
        """Final norm (adaLN-modulated with `adaln`) and the projection to patch pixels."""
        tokens = self.final_norm(tokens)
        if self.final_ada is not None:
            shift, scale = self.final_ada(vec)[:, None].chunk(2, dim=-1)
            tokens = modulate(tokens, shift, scale)
        return self.out_proj(tokens)

    def _chunk_rows(self, tokens: torch.Tensor) -> int:
        b, n = tokens.shape[:2]
        if not self.inference_chunk_tokens or torch.is_grad_enabled():
            return b
        return max(1, self.inference_chunk_tokens // max(n, 1))

    def trunk(self, tokens: torch.Tensor, ctx: TokenContext) -> torch.Tensor:
        """The transformer blocks over (B, N, E) tokens, with U-ViT skips when configured.

        With `grad_checkpointing` (a training switch, not part of the config) each block keeps only
        its input for the backward pass and runs again there: activation memory drops from all
        blocks' to about one block's, for about one more forward pass of compute.
        """
        checkpointed = self.grad_checkpointing and torch.is_grad_enabled()
        depth, skips = len(self.blocks), []
        for i, block in enumerate(self.blocks):
            if self.skip_proj is not None and i >= depth - len(self.skip_proj):
                tokens = self.skip_proj[depth - 1 - i](torch.cat([tokens, skips.pop()], dim=-1))
            if checkpointed:
                tokens = checkpoint(block, tokens, ctx, use_reentrant=False)
            else:
                tokens = block(tokens, ctx)
            if self.skip_proj is not None and i < len(self.skip_proj):
                skips.append(tokens)
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


def _pooled_sum(tokens: list[torch.Tensor], masks: list[torch.Tensor | None]) -> torch.Tensor:
    """Sum over the conditioning groups of each group's (masked) mean token: (B, E)."""
    total = 0
    for t, m in zip(tokens, masks):
        if m is None:
            total = total + t.mean(1)
        else:
            w = m.to(t.dtype)[:, :, None]
            total = total + (t * w).sum(1) / w.sum(1).clamp(min=1)
    return total

"""Per-sample latent transforms for training: non-leaky augmentation and inpainting masks.

Everything draws from an explicit torch.Generator so a step's randomness depends only on its seed.
"""

from __future__ import annotations

import torch

# extra_cond layout: [flipped, rot90 x1, rot90 x2, rot90 x3, shift_y / max, shift_x / max]; all zeros
# means "no augmentation", which is what sampling feeds, so the model learns to generate clean data.
AUGMENT_COND_DIM = 6


def augment_latents(
    x: torch.Tensor,
    generator: torch.Generator,
    prob: float,
    flip: bool = True,
    rotate: bool = True,
    max_shift: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly flip / rotate by 90° / circularly shift each row; returns (x', conditioning)."""
    b = x.shape[0]
    cond = torch.zeros(b, AUGMENT_COND_DIM)
    out = x.clone()
    draws = torch.rand(b, 4, generator=generator)
    rot_k = torch.randint(1, 4, (b,), generator=generator)
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), generator=generator) if max_shift > 0 else None
    square = x.shape[-1] == x.shape[-2]  # 90° turns only keep the shape of square latents
    for i in range(b):
        if draws[i, 0] >= prob:
            continue
        if flip and draws[i, 1] < 0.5:
            out[i] = out[i].flip(-1)
            cond[i, 0] = 1.0
        if rotate and square and draws[i, 2] < 0.5:
            k = int(rot_k[i])
            out[i] = torch.rot90(out[i], k, dims=(-2, -1))
            cond[i, k] = 1.0
        if shifts is not None and draws[i, 3] < 0.5:
            dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
            out[i] = torch.roll(out[i], shifts=(dy, dx), dims=(-2, -1))
            cond[i, 4], cond[i, 5] = dy / max_shift, dx / max_shift
    return out, cond.to(x.device, x.dtype)


def random_masks(
    b: int,
    h: int,
    w: int,
    generator: torch.Generator,
    probs: tuple[float, float, float, float] = (0.5, 0.25, 0.15, 0.1),
) -> torch.Tensor:
    """(B, 1, H, W) masks, 1 = region to generate: a box, a border (outpainting), everything, or nothing."""
    weights = torch.tensor(probs, dtype=torch.float64)
    if weights.sum() <= 0:
        raise ValueError(f"mask probabilities must have a positive sum, got {probs}")
    kinds = torch.multinomial(weights / weights.sum(), b, replacement=True, generator=generator)
    masks = torch.zeros(b, 1, h, w)
    for i in range(b):
        kind = int(kinds[i])
        if kind == 0:
            bh = int(torch.randint(1, h + 1, (1,), generator=generator))
            bw = int(torch.randint(1, w + 1, (1,), generator=generator))
            y = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
            x = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
            masks[i, :, y : y + bh, x : x + bw] = 1.0
        elif kind == 1:
            masks[i] = 1.0
            keep_h = int(torch.randint(1, h, (1,), generator=generator)) if h > 1 else 1
            keep_w = int(torch.randint(1, w, (1,), generator=generator)) if w > 1 else 1
            y = int(torch.randint(0, h - keep_h + 1, (1,), generator=generator))
            x = int(torch.randint(0, w - keep_w + 1, (1,), generator=generator))
            masks[i, :, y : y + keep_h, x : x + keep_w] = 0.0
        elif kind == 2:
            masks[i] = 1.0
    return masks

"""What every text encoder backend shares: the TextEmbeddings result, the TextEncoder protocol and
BaseTextEncoder (batching, validation, normalisation, saving its spec). Backends subclass it in
text_<backend>.py and are registered by name in `tld.encoders.text.TEXT_BACKENDS`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tld.common import batch_slices, resolve_dtype
from tld.errors import TLDError

TEXT_ENCODER_JSON = "text_encoder.json"


@dataclass
class TextEmbeddings:
    """pooled (N, D); tokens (N, T, D_tok) and mask (N, T) bool (True = real token) when asked for.

    Token features at masked (padding) positions are exactly zero.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.pooled.shape[0]


@runtime_checkable
class TextEncoder(Protocol):
    dim: int  # D of the pooled embedding
    token_dim: int  # D_tok of the per-token features
    max_tokens: int  # T: per-token outputs are padded to this length

    @property
    def spec(self) -> dict[str, Any]: ...

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, tokens: bool = False, progress: bool = False
    ) -> TextEmbeddings: ...

    def save_pretrained(self, folder: str | os.PathLike) -> None: ...


def check_texts(texts: Any) -> list[str]:
    """Reject a bare string (it would be encoded character by character) and non-string items."""
    if isinstance(texts, str):
        raise TLDError(f"expected a list of strings, got a single string {texts[:40]!r}; wrap it in a list")
    if not isinstance(texts, Sequence):
        raise TLDError(f"expected a list of strings, got {type(texts).__name__}")
    bad = [(i, type(t).__name__) for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TLDError(f"expected a list of strings, got non-strings at (index, type) {bad[:5]}")
    return list(texts)


class BaseTextEncoder:
    """Shared batching, validation and normalisation; backends implement `_encode_batch`."""

    backend = ""
    dim: int
    token_dim: int
    max_tokens: int

    def __init__(self, spec: dict[str, Any], device: torch.device):
        self._spec = {"backend": self.backend, **spec}
        self.normalize = bool(spec.get("normalize", False))
        self.device = device

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self._spec)

    @property
    def module(self) -> torch.nn.Module:
        """The torch module holding the weights (for device / dtype moves)."""
        raise NotImplementedError

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None):
        """Move/cast the weights; outputs stay float32 CPU tensors either way."""
        self.module.to(device=device, dtype=resolve_dtype(dtype) if dtype is not None else None)
        if device is not None:
            self.device = torch.device(device)
        return self

    def _encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> pooled (n, D), tokens (n, max_tokens, D_tok), mask (n, max_tokens) on any device."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, tokens: bool = False, progress: bool = False
    ) -> TextEmbeddings:
        """Encode captions in batches; `tokens=True` also returns per-token features and the mask."""
        texts = check_texts(texts)
        pooled, toks, masks = [], [], []
        for part in tqdm(batch_slices(len(texts), batch_size), desc="text encode", disable=not progress):
            p, t, m = self._encode_batch(texts[part])
            pooled.append(p.float().cpu())
            if tokens:
                # Zero padded positions: their values depend on the padding scheme, not the caption.
                m = m.bool().cpu()
                toks.append(t.float().cpu() * m[..., None])
                masks.append(m)
        if not texts:
            return self._empty(tokens)
        pooled_t = torch.cat(pooled)
        if self.normalize:
            pooled_t = F.normalize(pooled_t, dim=-1)
        if not tokens:
            return TextEmbeddings(pooled_t)
        return TextEmbeddings(pooled_t, torch.cat(toks), torch.cat(masks))

    def _empty(self, tokens: bool) -> TextEmbeddings:
        pooled = torch.zeros(0, self.dim)
        if not tokens:
            return TextEmbeddings(pooled)
        return TextEmbeddings(
            pooled,
            torch.zeros(0, self.max_tokens, self.token_dim),
            torch.zeros(0, self.max_tokens, dtype=torch.bool),
        )

    def _write_spec(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        # The folder itself is the weights' location, so a stale "path" must not be recorded.
        record = {k: v for k, v in self._spec.items() if k != "path"}
        record.update(extra or {})
        (folder / TEXT_ENCODER_JSON).write_text(json.dumps(record, indent=2) + "\n")

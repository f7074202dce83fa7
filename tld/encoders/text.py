"""Frozen text encoders behind one small protocol.

    enc = load_text_encoder({"backend": "open_clip", "model": "ViT-L-14", "pretrained": "openai"})
    emb = enc.encode(["a cute owl"], tokens=True)   # TextEmbeddings(pooled, tokens, mask)

Backends live in text_open_clip.py, text_hf_clip.py and text_minilm.py; each is described by a JSON
spec dict (what meta.json and a model's config.json record) and can save itself to a folder holding
`text_encoder.json` plus weights, which `load_text_encoder(folder)` reads back without network.

Outputs are always float32 CPU tensors computed in eval mode without autograd, padded to a fixed
token count per encoder, so results do not depend on how captions are grouped into batches.
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
DEFAULT_TEXT_SPEC: dict[str, Any] = {"backend": "open_clip", "model": "ViT-L-14", "pretrained": "openai"}
BACKENDS = ("open_clip", "hf_clip", "minilm")


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


def _backend_class(name: Any) -> type:
    if name == "open_clip":
        from tld.encoders.text_open_clip import OpenClipTextEncoder

        return OpenClipTextEncoder
    if name == "hf_clip":
        from tld.encoders.text_hf_clip import HFClipTextEncoder

        return HFClipTextEncoder
    if name == "minilm":
        from tld.encoders.text_minilm import MiniLMTextEncoder

        return MiniLMTextEncoder
    raise TLDError(f"unknown text encoder backend {name!r}; expected one of {list(BACKENDS)}")


def _spec_from_folder(folder: Path) -> dict[str, Any]:
    record = folder / TEXT_ENCODER_JSON
    if record.is_file():
        try:
            spec = json.loads(record.read_text())
        except json.JSONDecodeError as e:
            raise TLDError(f"{record} is not valid JSON: {e}") from e
    elif (folder / "modules.json").is_file():
        spec = {"backend": "minilm"}  # a plain sentence-transformers folder
    elif (folder / "config.json").is_file():
        spec = {"backend": "hf_clip"}  # a plain transformers CLIP folder
    else:
        raise TLDError(
            f"{folder} is not a text encoder folder: expected {TEXT_ENCODER_JSON}, a sentence-transformers "
            f"or a transformers CLIP folder; found {sorted(p.name for p in folder.iterdir())[:10]}"
        )
    if not isinstance(spec, dict):
        raise TLDError(f"{record} must hold a JSON object, got {type(spec).__name__}")
    return {**spec, "path": str(folder.resolve())}


def load_text_encoder(
    spec_or_folder: dict[str, Any] | str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
) -> BaseTextEncoder:
    """Build a text encoder from a spec dict or a saved folder; None gives the default open_clip spec.

    `dtype` (e.g. "fp16" on a GPU) casts the weights; embeddings are returned as float32 regardless.
    """
    if spec_or_folder is None:
        spec = dict(DEFAULT_TEXT_SPEC)
    elif isinstance(spec_or_folder, dict):
        spec = dict(spec_or_folder)
    elif isinstance(spec_or_folder, str | os.PathLike):
        folder = Path(spec_or_folder)
        if not folder.is_dir():
            raise TLDError(f"text encoder folder not found: {folder} (pass a spec dict for hub models)")
        spec = _spec_from_folder(folder)
    else:
        raise TLDError(f"expected a text encoder spec dict or folder, got {type(spec_or_folder).__name__}")
    if "backend" not in spec:
        raise TLDError(f"text encoder spec needs a 'backend' key ({list(BACKENDS)}), got keys {sorted(spec)}")
    if spec.get("path") is not None and not Path(str(spec["path"])).is_dir() and spec["backend"] != "hf_clip":
        raise TLDError(f"text encoder folder not found: {spec['path']}")
    encoder = _backend_class(spec["backend"]).from_spec(spec, torch.device(device))
    return encoder.to(dtype=dtype) if dtype is not None else encoder

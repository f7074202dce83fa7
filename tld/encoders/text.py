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

import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from tld.encoders.text_base import TEXT_ENCODER_JSON, BaseTextEncoder
from tld.errors import TLDError

DEFAULT_TEXT_SPEC: dict[str, Any] = {"backend": "open_clip", "model": "ViT-L-14", "pretrained": "openai"}
# The one registry of text encoder backends: name -> "module:class" (imported when first used, so
# `import tld.encoders` never pays for open_clip, transformers or sentence-transformers).
TEXT_BACKENDS = {
    "open_clip": "tld.encoders.text_open_clip:OpenClipTextEncoder",
    "hf_clip": "tld.encoders.text_hf_clip:HFClipTextEncoder",
    "minilm": "tld.encoders.text_minilm:MiniLMTextEncoder",
}


def _backend_class(name: Any) -> type[BaseTextEncoder]:
    if name not in TEXT_BACKENDS:
        raise TLDError(f"unknown text encoder backend {name!r}; expected one of {list(TEXT_BACKENDS)}")
    module, _, cls = TEXT_BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


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
        raise TLDError(f"text encoder spec needs a 'backend' key ({list(TEXT_BACKENDS)}), got keys {sorted(spec)}")
    if spec.get("path") is not None and not Path(str(spec["path"])).is_dir() and spec["backend"] != "hf_clip":
        raise TLDError(f"text encoder folder not found: {spec['path']}")
    encoder = _backend_class(spec["backend"]).from_spec(spec, torch.device(device))
    return encoder.to(dtype=dtype) if dtype is not None else encoder

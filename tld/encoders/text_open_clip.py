"""open_clip text tower: the original TLD's conditioning space.

Only the text tower is kept in memory. `pooled` is the projected `encode_text` output, not
L2-normalised by default, exactly what the original TLD stored (it calls `model.encode_text` on
OpenAI's ViT-L/14 and keeps the raw projection). Per-token features are the final-layer token states
after `ln_final` and before the projection (width-dimensional, like Stable Diffusion's use of CLIP
hidden states); the mask covers the start token through the end-of-text token.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tld.common import first_line
from tld.encoders.text_base import BaseTextEncoder
from tld.errors import TLDError

WEIGHTS = "model.safetensors"
# What open_clip's checkpoint loading raises for a missing, truncated or foreign file.
_LOAD_ERRORS = (
    RuntimeError,
    OSError,
    ValueError,
    EOFError,
    KeyError,
    SafetensorError,
    pickle.UnpicklingError,
)


def build_text_tower(model_cfg: dict[str, Any]) -> torch.nn.Module:
    """A bare open_clip TextTransformer from {"embed_dim", "text_cfg", "quick_gelu"}."""
    from open_clip.model import _build_text_tower

    text_cfg = dict(model_cfg.get("text_cfg") or {})
    hf_name = text_cfg.get("hf_model_name") or text_cfg.get("hf_tokenizer_name")
    if hf_name:
        raise TLDError(
            f"open_clip models with a Hugging Face text tower ({hf_name}) are not supported by the "
            "open_clip backend; use the hf_clip backend"
        )
    if "embed_dim" not in model_cfg:
        raise TLDError(f"open_clip model config needs 'embed_dim', got keys {sorted(model_cfg)}")
    try:
        tower = _build_text_tower(
            model_cfg["embed_dim"], text_cfg, quick_gelu=bool(model_cfg.get("quick_gelu"))
        )
    except TypeError as e:
        raise TLDError(f"invalid open_clip text_cfg {sorted(text_cfg)}: {first_line(e)}") from e
    tower.output_tokens = True
    return tower


def text_state_dict(full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The text tower's weights out of a whole CLIP state dict (CLIP or CustomTextCLIP layout)."""
    if any(k.startswith("text.") for k in full):
        return {k[len("text.") :]: v for k, v in full.items() if k.startswith("text.")}
    skip = ("logit_scale", "logit_bias")
    return {k: v for k, v in full.items() if not k.startswith("visual.") and k not in skip}


def _create_hub_model(name: str, pretrained: str | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    import open_clip

    model_cfg = open_clip.get_model_config(name)
    if model_cfg is None:
        raise TLDError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    # OpenAI's weights were trained with QuickGELU; building with plain GELU silently changes outputs.
    quick_gelu = bool(model_cfg.get("quick_gelu") or tag_cfg.get("quick_gelu"))
    try:
        full = open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=quick_gelu, device="cpu")
    except _LOAD_ERRORS as e:
        # The unpickler's first line advises weights_only=False: wrong advice for a file that fails to load.
        why = "not a checkpoint torch can load" if isinstance(e, pickle.UnpicklingError) else first_line(e)
        raise TLDError(f"cannot load open_clip {name!r} pretrained={pretrained!r}: {why}") from None
    return full, {
        "embed_dim": model_cfg["embed_dim"],
        "text_cfg": model_cfg["text_cfg"],
        "quick_gelu": quick_gelu,
    }


class OpenClipTextEncoder(BaseTextEncoder):
    backend = "open_clip"

    def __init__(
        self, spec: dict[str, Any], model_cfg: dict[str, Any], state: dict[str, torch.Tensor], device
    ):
        from open_clip.tokenizer import SimpleTokenizer

        super().__init__(spec, device)
        self.model_cfg = model_cfg
        self.tower = build_text_tower(model_cfg)
        try:
            self.tower.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise TLDError(f"open_clip text weights do not match the model config: {first_line(e)}") from e
        self.tower = self.tower.to(device).eval().requires_grad_(False)
        text_cfg = model_cfg["text_cfg"]
        self.max_tokens = int(self.tower.context_length)
        self.tokenizer = SimpleTokenizer(
            context_length=self.max_tokens, **(text_cfg.get("tokenizer_kwargs") or {})
        )
        if self.tokenizer.vocab_size > self.tower.vocab_size:
            raise TLDError(
                f"open_clip tokenizer has {self.tokenizer.vocab_size} tokens but the model embeds only "
                f"{self.tower.vocab_size}"
            )
        self.dim = int(model_cfg["embed_dim"]) if self.tower.text_projection is not None else self.tower.width
        self.token_dim = int(self.tower.width)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], device: torch.device) -> OpenClipTextEncoder:
        spec = {"model": None, "pretrained": None, "normalize": False, **spec}
        if spec.get("path"):
            folder = Path(spec["path"])
            if "model_cfg" not in spec or not (folder / WEIGHTS).is_file():
                raise TLDError(
                    f"{folder} is not a saved open_clip text encoder (needs model_cfg and {WEIGHTS})"
                )
            try:
                state = load_file(str(folder / WEIGHTS))
            except (SafetensorError, OSError) as e:
                raise TLDError(
                    f"cannot load open_clip text weights {folder / WEIGHTS}: {first_line(e)}"
                ) from None
            return cls(spec, spec["model_cfg"], state, device)
        if not spec.get("model"):
            raise TLDError(f"open_clip spec needs 'model' (e.g. 'ViT-L-14') or 'path', got {spec}")
        full, model_cfg = _create_hub_model(spec["model"], spec.get("pretrained"))
        return cls.from_clip_model(full, model_cfg, device, **spec)

    @classmethod
    def from_clip_model(
        cls,
        clip_model: torch.nn.Module,
        model_cfg: dict[str, Any],
        device: str | torch.device = "cpu",
        **spec: Any,
    ) -> OpenClipTextEncoder:
        """Keep the text tower of an already built open_clip CLIP / CustomTextCLIP model."""
        spec = {"backend": "open_clip", "model": None, "pretrained": None, **spec}
        return cls(spec, model_cfg, text_state_dict(clip_model.state_dict()), torch.device(device))

    @classmethod
    def from_config(
        cls, model_cfg: dict[str, Any], device: str | torch.device = "cpu", seed: int = 0, **spec: Any
    ) -> OpenClipTextEncoder:
        """A randomly initialised encoder for a custom config (tests, experiments)."""
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
            torch.manual_seed(seed)
            state = build_text_tower(model_cfg).state_dict()
        spec = {"backend": "open_clip", "model": None, "pretrained": None, **spec}
        return cls(spec, model_cfg, state, torch.device(device))

    @property
    def module(self) -> torch.nn.Module:
        return self.tower

    def _encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = self.tokenizer(texts, context_length=self.max_tokens).to(self.device)
        pooled, tokens = self.tower(ids)
        eot = (ids == self.tokenizer.eot_token_id).int().argmax(dim=1, keepdim=True)
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] <= eot
        return pooled, tokens, mask

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.tower.state_dict().items()}
        save_file(state, str(folder / WEIGHTS))
        self._write_spec(folder, {"model_cfg": self.model_cfg})

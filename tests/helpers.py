"""Builders for tiny random-initialised real encoders, saved to local folders.

No pretrained weights exist offline, so tests (and benches) build real diffusers / open_clip /
transformers models with tiny configs and a fixed seed, save them like a user would, and load them
through the public loaders. Each builder returns the folder it wrote.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import torch

TINY_OPEN_CLIP_CFG = {
    "embed_dim": 24,
    # The real BPE tokenizer (49408 tokens) is used, so the vocabulary must stay full size;
    # a short context keeps the model and its outputs small.
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    "quick_gelu": False,
}


def make_tiny_vae(folder: str | os.PathLike, seed: int = 0, latent_scale: float = 1.0) -> Path:
    """AutoencoderKL: 3 -> 4 latent channels, downsample factor 2, (8, 16) channels."""
    from diffusers import AutoencoderKL

    from tld.encoders.vae import VAE

    torch.manual_seed(seed)
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    folder = Path(folder)
    VAE(model, latent_scale=latent_scale, source="tiny-random-vae").save_pretrained(folder)
    return folder


def make_tiny_open_clip(folder: str | os.PathLike, seed: int = 0) -> Path:
    """A random open_clip text tower (width 32, 2 layers, 24-d projection, context 16)."""
    from tld.encoders.text_open_clip import OpenClipTextEncoder

    enc = OpenClipTextEncoder.from_config(TINY_OPEN_CLIP_CFG, seed=seed)
    folder = Path(folder)
    enc.save_pretrained(folder)
    return folder


def write_tiny_clip_bpe(folder: Path, num_merges: int = 2000) -> None:
    """vocab.json + merges.txt for a real CLIP BPE tokenizer cut down to the first merges.

    Built from the merge list that ships inside open_clip, the same way CLIP builds its vocabulary:
    byte symbols, byte symbols ending a word, then one token per merge, then the two specials.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : num_merges + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def make_tiny_hf_clip(folder: str | os.PathLike, seed: int = 0) -> Path:
    """transformers CLIPTextModelWithProjection (hidden 32, 2 layers, 24-d) + a cut-down CLIP BPE."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    folder = Path(folder)
    write_tiny_clip_bpe(folder)
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    config = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        projection_dim=24,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = CLIPTextModelWithProjection(config).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_hub_snapshot(
    cache: str | os.PathLike,
    repo_id: str,
    folder: str | os.PathLike,
    revision: str = "main",
    commit: str | None = None,
) -> str:
    """Put `folder`'s files into a Hugging Face hub cache as `repo_id` at `revision`, as a download would.

    Returns the commit hash (`commit`, or one derived from the revision name). Point
    `huggingface_hub.constants.HF_HUB_CACHE` at `cache` (and set HF_HUB_OFFLINE) to load it.
    """
    import hashlib
    import shutil

    commit = commit or hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit

"""Session-wide tiny random encoders saved to temp folders (shared by all test files)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # lets test files `from helpers import ...` in any import mode

# The models in the tests are tiny: one intra-op thread is as fast as two for them, and on a shared
# 2-core machine several multi-threaded torch processes spin against each other (seen: 20x slower).
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from helpers import make_tiny_hf_clip, make_tiny_open_clip, make_tiny_vae  # noqa: E402


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffusers AutoencoderKL folder: 4 latent channels, downsample 2, latent_scale 1.0."""
    return make_tiny_vae(tmp_path_factory.mktemp("tiny_vae"))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved open_clip text encoder: pooled dim 24, token dim 32, 16 tokens."""
    return make_tiny_open_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_hf_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transformers CLIPTextModelWithProjection folder: pooled dim 24, token dim 32, 16 tokens."""
    return make_tiny_hf_clip(tmp_path_factory.mktemp("tiny_hf_clip"))


@pytest.fixture(autouse=True)
def fresh_accelerate():
    """Forget accelerate's process-wide state after each test, so the next training run starts fresh."""
    yield
    from train_fixtures import reset_accelerate

    reset_accelerate()

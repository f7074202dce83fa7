"""Frozen encoders: tiny random real models (diffusers, open_clip, transformers) + the real MiniLM."""

from __future__ import annotations

import json

import pytest
import torch

from tld.encoders import VAE, TextEncoder, load_text_encoder
from tld.encoders.text_base import TEXT_ENCODER_JSON
from tld.encoders.vae import TLD_VAE_JSON
from tld.errors import TLDError

CAPTIONS = ["a red car", "a cute grey owl", "painting of a cyberpunk market at night", "x"]


def _images(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# ---- VAE ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vae(tiny_vae_dir) -> VAE:
    return VAE.from_pretrained(tiny_vae_dir)


def test_vae_shapes_and_round_trip_range(vae):
    assert (vae.latent_channels, vae.downsample_factor, vae.latent_scale) == (4, 2, 1.0)
    z = vae.encode(_images())
    assert z.shape == (3, 4, 16, 16) and z.dtype == torch.float32
    assert vae.latent_shape(32, 48) == (4, 16, 24)
    x = vae.decode(z)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0


def test_vae_is_deterministic_and_batch_size_invariant(vae):
    x = _images(5)
    z_all = vae.encode(x, batch_size=None)
    assert torch.equal(z_all, vae.encode(x, batch_size=None))
    torch.testing.assert_close(vae.encode(x, batch_size=2), z_all, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vae.decode(z_all, batch_size=1), vae.decode(z_all), atol=1e-5, rtol=1e-5)


def test_vae_latent_scale_divides_latents(tiny_vae_dir, vae):
    scaled = VAE.from_pretrained(tiny_vae_dir, latent_scale=8.0)
    x = _images()
    torch.testing.assert_close(scaled.encode(x) * 8.0, vae.encode(x))
    z = scaled.encode(x)
    torch.testing.assert_close(scaled.decode(z), vae.decode(z * 8.0), atol=1e-5, rtol=1e-5)


def test_vae_posterior_sample_uses_generator(vae):
    x = _images(2)
    a = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    b = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(1))
    c = vae.encode(x, sample=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, vae.encode(x))


def test_vae_save_load_keeps_scale_and_outputs(tmp_path, tiny_vae_dir):
    vae = VAE.from_pretrained(tiny_vae_dir, latent_scale=2.5)
    vae.save_pretrained(tmp_path / "vae")
    assert json.loads((tmp_path / "vae" / TLD_VAE_JSON).read_text())["latent_scale"] == 2.5
    again = VAE.from_pretrained(tmp_path / "vae")
    assert again.latent_scale == 2.5 and again.spec["path"] == str((tmp_path / "vae").resolve())
    x = _images()
    assert torch.equal(again.encode(x), vae.encode(x))
    from_spec = VAE.from_spec(again.spec)
    assert torch.equal(from_spec.encode(x), vae.encode(x))
    assert VAE.from_pretrained(tmp_path / "vae", latent_scale=4.0).latent_scale == 4.0


def test_vae_half_precision_close_to_float32(tiny_vae_dir, vae):
    half = VAE.from_pretrained(tiny_vae_dir, dtype="bf16")
    assert half.dtype == torch.bfloat16
    x = _images()
    z = half.encode(x)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, vae.encode(x), atol=0.05, rtol=0.05)


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.zeros(2, 4, 32, 32), r"shape \(B, 3, H, W\), got \(2, 4, 32, 32\)"),
        (torch.zeros(3, 32, 32), r"got \(3, 32, 32\)"),
        (torch.full((1, 3, 32, 32), 255.0), r"in \[-1, 1\], got values in \[255, 255\]"),
        (torch.zeros(1, 3, 31, 32, dtype=torch.float32), "divisible by 2"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float images"),
    ],
)
def test_vae_encode_bad_input(vae, images, match):
    with pytest.raises(TLDError, match=match):
        vae.encode(images)


def test_vae_empty_batch(vae):
    z = vae.encode(torch.zeros(0, 3, 32, 24))
    assert z.shape == (0, 4, 16, 12) and z.dtype == torch.float32
    assert vae.decode(z).shape == (0, 3, 32, 24)


def test_vae_decode_and_load_bad_input(vae, tmp_path):
    with pytest.raises(TLDError, match="NaN or infinite"):
        vae.encode(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(TLDError, match="dtype must be one of .* got 'fp8'"):
        vae.to(dtype="fp8")
    with pytest.raises(TLDError, match=r"\(B, 4, h, w\), got \(1, 3, 8, 8\)"):
        vae.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TLDError, match="batch_size must be a positive integer, got 0"):
        vae.encode(_images(), batch_size=0)
    with pytest.raises(TLDError, match="VAE folder not found"):
        VAE.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TLDError, match="cannot load VAE"):
        VAE.from_pretrained(tmp_path / "empty")
    with pytest.raises(TLDError, match="latent_scale must be a positive number"):
        VAE(vae.model, latent_scale=0)
    with pytest.raises(TLDError, match="'path' key"):
        VAE.from_spec({"latent_scale": 8})


# ---- text encoders --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_enc(tiny_clip_dir):
    return load_text_encoder(tiny_clip_dir)


def test_open_clip_shapes_mask_and_projection(clip_enc):
    assert isinstance(clip_enc, TextEncoder)
    assert (clip_enc.dim, clip_enc.token_dim, clip_enc.max_tokens) == (24, 32, 16)
    emb = clip_enc.encode(CAPTIONS, tokens=True)
    assert emb.pooled.shape == (4, 24) and emb.tokens.shape == (4, 16, 32) and emb.mask.shape == (4, 16)
    # start + BPE tokens + end
    expected = [len(clip_enc.tokenizer.encode(c)) + 2 for c in CAPTIONS]
    assert emb.mask.sum(1).tolist() == expected and expected[0] == 5
    long = clip_enc.encode(["word " * 40], tokens=True)
    assert long.mask.sum().item() == 16
    # Documented meaning: pooled is the projection of the end-of-text token state.
    last = emb.mask.sum(1) - 1
    eot_states = emb.tokens[torch.arange(4), last]
    torch.testing.assert_close(eot_states @ clip_enc.tower.text_projection.cpu(), emb.pooled)
    assert torch.all(emb.tokens[~emb.mask] == 0) and torch.all(emb.tokens[emb.mask].abs().sum(-1) > 0)
    assert clip_enc.encode(CAPTIONS).tokens is None


def test_open_clip_deterministic_and_batch_invariant(clip_enc):
    full = clip_enc.encode(CAPTIONS, batch_size=64).pooled
    assert torch.equal(full, clip_enc.encode(CAPTIONS, batch_size=64).pooled)
    torch.testing.assert_close(clip_enc.encode(CAPTIONS, batch_size=1).pooled, full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full[0], full[1])


def test_open_clip_save_load_and_normalize(clip_enc, tmp_path):
    clip_enc.save_pretrained(tmp_path / "te")
    record = json.loads((tmp_path / "te" / TEXT_ENCODER_JSON).read_text())
    assert record["backend"] == "open_clip" and "path" not in record
    again = load_text_encoder(tmp_path / "te")
    assert torch.equal(again.encode(CAPTIONS).pooled, clip_enc.encode(CAPTIONS).pooled)
    unit = load_text_encoder({**again.spec, "normalize": True}).encode(CAPTIONS).pooled
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(4))
    assert not torch.allclose(clip_enc.encode(CAPTIONS).pooled.norm(dim=-1), torch.ones(4))


def test_text_encoder_half_precision(tiny_clip_dir, clip_enc):
    half = load_text_encoder(tiny_clip_dir, dtype="bf16")
    assert next(half.module.parameters()).dtype == torch.bfloat16
    emb = half.encode(CAPTIONS, tokens=True)
    assert emb.pooled.dtype == torch.float32 and emb.tokens.dtype == torch.float32
    torch.testing.assert_close(emb.pooled, clip_enc.encode(CAPTIONS).pooled, atol=0.05, rtol=0.05)


def test_empty_caption_list_gives_empty_arrays(clip_enc):
    emb = clip_enc.encode([], tokens=True)
    assert emb.pooled.shape == (0, 24) and emb.tokens.shape == (0, 16, 32) and emb.mask.shape == (0, 16)


def test_hf_clip_backend(tiny_hf_clip_dir, tmp_path):
    enc = load_text_encoder(tiny_hf_clip_dir)
    assert enc.spec["backend"] == "hf_clip" and (enc.dim, enc.token_dim, enc.max_tokens) == (24, 32, 16)
    emb = enc.encode(CAPTIONS, tokens=True)
    assert emb.pooled.shape == (4, 24) and emb.tokens.shape == (4, 16, 32)
    assert emb.mask.sum(1).tolist()[3] == 3  # <start> x <end>
    torch.testing.assert_close(enc.encode(CAPTIONS, batch_size=1).pooled, emb.pooled, atol=1e-5, rtol=1e-5)
    enc.save_pretrained(tmp_path / "hf")
    again = load_text_encoder(tmp_path / "hf")
    assert torch.equal(again.encode(CAPTIONS).pooled, emb.pooled)


def test_hf_clip_rejects_two_token_tokenizer(tiny_hf_clip_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_hf_clip_dir, broken)
    (broken / "tokenizer.json").unlink()
    (broken / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1}))
    (broken / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(TLDError, match="has 2 tokens"):
        load_text_encoder({"backend": "hf_clip", "path": str(broken)})


@pytest.fixture(scope="module")
def minilm():
    return load_text_encoder({"backend": "minilm", "max_tokens": 32})


def test_minilm_real_embeddings_rank_by_meaning(minilm):
    assert (minilm.dim, minilm.token_dim, minilm.max_tokens) == (384, 384, 32)
    emb = minilm.encode(["a red car", "a crimson automobile", "a bowl of soup"], tokens=True)
    sim = emb.pooled @ emb.pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.2
    torch.testing.assert_close(emb.pooled.norm(dim=-1), torch.ones(3))
    assert emb.tokens.shape == (3, 32, 384) and emb.mask.sum(1).tolist() == [5, 5, 6]
    assert torch.all(emb.tokens[~emb.mask] == 0)


def test_minilm_save_load(minilm, tmp_path):
    minilm.save_pretrained(tmp_path / "m")
    again = load_text_encoder(tmp_path / "m")
    assert again.max_tokens == 32
    assert torch.equal(again.encode(CAPTIONS).pooled, minilm.encode(CAPTIONS).pooled)


def test_text_encoder_bad_input(clip_enc, tmp_path):
    with pytest.raises(TLDError, match="single string 'a red car'"):
        clip_enc.encode("a red car")
    with pytest.raises(TLDError, match=r"non-strings at \(index, type\) \[\(1, 'int'\)\]"):
        clip_enc.encode(["ok", 3])
    with pytest.raises(TLDError, match="unknown text encoder backend 'bert'"):
        load_text_encoder({"backend": "bert"})
    with pytest.raises(TLDError, match="needs a 'backend' key"):
        load_text_encoder({"model": "ViT-L-14"})
    with pytest.raises(TLDError, match="text encoder folder not found"):
        load_text_encoder(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    with pytest.raises(TLDError, match=r"not a text encoder folder.*found \['notes.txt'\]"):
        load_text_encoder(tmp_path / "junk")
    with pytest.raises(TLDError, match="unknown open_clip model 'ViT-Nope'"):
        load_text_encoder({"backend": "open_clip", "model": "ViT-Nope"})


# ---- images -----------------------------------------------------------------------------------------
def _rgb_at(tensor: torch.Tensor, y: int = 0, x: int = 0) -> list[int]:
    return ((tensor[0, :, y, x] + 1) * 127.5).round().int().tolist()


def test_pil_to_tensor_converts_every_mode():
    from PIL import Image

    from tld.encoders.images import pil_to_tensor

    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 255, 0, 0))  # fully transparent green -> background
    rgba.putpixel((2, 0), (0, 0, 0, 128))  # half transparent black over white -> grey
    t = pil_to_tensor(rgba)
    assert t.shape == (1, 3, 4, 4) and t.dtype == torch.float32
    assert _rgb_at(t) == [255, 0, 0] and _rgb_at(t, 0, 1) == [255, 255, 255]
    assert _rgb_at(t, 0, 2) == [127, 127, 127]
    assert _rgb_at(pil_to_tensor(rgba, background=(0, 0, 255)), 0, 1) == [0, 0, 255]
    assert _rgb_at(pil_to_tensor(Image.new("L", (4, 4), 200))) == [200, 200, 200]
    assert _rgb_at(pil_to_tensor(Image.new("CMYK", (4, 4), (0, 255, 255, 0)))) == [255, 0, 0]
    assert _rgb_at(pil_to_tensor(Image.new("I;16", (4, 4), 65535))) == [255, 255, 255]
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert _rgb_at(pil_to_tensor(pal)) == [10, 20, 30]
    pal.info["transparency"] = 1
    assert _rgb_at(pil_to_tensor(pal)) == [255, 255, 255]


def test_center_crop_resize_keeps_the_middle():
    from PIL import Image

    from tld.encoders.images import pil_to_tensor

    wide = Image.new("RGB", (40, 20), (0, 255, 0))
    wide.paste((255, 0, 0), (10, 0, 30, 20))  # red middle square, green side bands
    t = pil_to_tensor([wide, wide], size=8)
    assert t.shape == (2, 3, 8, 8)
    assert _rgb_at(t, 4, 4) == [255, 0, 0]
    # A squash instead of a crop would leave the outer quarter green; only bicubic bleed remains.
    for y, x in [(0, 0), (7, 7), (3, 0), (3, 7)]:
        r, g, _ = _rgb_at(t, y, x)
        assert r > 200 and g < 40
    assert pil_to_tensor(wide, size=(6, 10)).shape == (1, 3, 6, 10)


def test_tensor_to_pil_round_trip_is_exact():
    from tld.encoders.images import pil_to_tensor, tensor_to_pil

    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, 3, 5, 7), generator=g)
    images = pixels.float() / 127.5 - 1
    pil = tensor_to_pil(images)
    assert [im.size for im in pil] == [(7, 5), (7, 5)] and pil[0].mode == "RGB"
    assert torch.equal(pil_to_tensor(pil), images)
    assert tensor_to_pil(torch.full((3, 2, 2), 5.0))[0].getpixel((0, 0)) == (255, 255, 255)


def test_image_bad_input(tmp_path):
    from PIL import Image

    from tld.encoders.images import load_image, pil_to_tensor, tensor_to_pil

    with pytest.raises(TLDError, match=r"different sizes \[\(4, 4\), \(5, 4\)\]"):
        pil_to_tensor([Image.new("RGB", (4, 4)), Image.new("RGB", (5, 4))])
    with pytest.raises(TLDError, match="empty list"):
        pil_to_tensor([])
    with pytest.raises(TLDError, match="expected a PIL image, got ndarray"):
        pil_to_tensor([torch.zeros(3).numpy()])
    with pytest.raises(TLDError, match=r"\(B, 3, H, W\) or \(3, H, W\), got \(1, 4, 2, 2\)"):
        tensor_to_pil(torch.zeros(1, 4, 2, 2))
    with pytest.raises(TLDError, match="image file not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(TLDError, match="not an image file.*notes.txt"):
        load_image(tmp_path / "notes.txt")
    Image.new("RGB", (64, 64), (9, 99, 199)).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(TLDError, match="cannot decode image .*cut.jpg"):
        load_image(tmp_path / "cut.jpg")
    good = load_image(data)
    assert good.mode == "RGB" and good.size == (64, 64)
    assert max(abs(a - b) for a, b in zip(good.getpixel((5, 5)), (9, 99, 199))) <= 3


def test_open_clip_text_tower_matches_full_clip_encode_text():
    """The extracted tower reproduces open_clip's own CLIP.encode_text (QuickGELU, as OpenAI's weights)."""
    import open_clip
    from helpers import TINY_OPEN_CLIP_CFG

    from tld.encoders.text_open_clip import OpenClipTextEncoder

    cfg = {**TINY_OPEN_CLIP_CFG, "quick_gelu": True}
    torch.manual_seed(3)
    vision = {"image_size": 16, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16}
    clip = open_clip.model.CLIP(cfg["embed_dim"], vision, cfg["text_cfg"], quick_gelu=True).eval()
    enc = OpenClipTextEncoder.from_clip_model(clip, cfg)
    ids = open_clip.tokenizer.SimpleTokenizer(context_length=16)(CAPTIONS)
    with torch.no_grad():
        reference = clip.encode_text(ids)
    torch.testing.assert_close(enc.encode(CAPTIONS).pooled, reference)
    plain_gelu = OpenClipTextEncoder.from_clip_model(clip, {**cfg, "quick_gelu": False})
    assert not torch.allclose(plain_gelu.encode(CAPTIONS).pooled, reference, atol=1e-4)

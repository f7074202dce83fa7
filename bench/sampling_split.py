"""Where text-to-image time goes: text encode, denoiser (all sampling steps), VAE decode.

    OMP_NUM_THREADS=1 python bench/sampling_split.py                     # bundled demo model, 36 x 15
    OMP_NUM_THREADS=1 python bench/sampling_split.py --model 101m --images 4
    python bench/sampling_split.py --model 101m --device cuda --dtype bf16 --compile

`--model demo` (default) is the bundled model (weights/tld-emoji). `--model 101m` is the original
model's shape with random weights, the demo's text encoder (MiniLM) and a small random
AutoencoderKL with the SDXL VAE's 8x downsampling (4 levels of 16-32 channels), so its decode
time is NOT the SDXL VAE's. The three parts are the pipeline's own steps (`conditioning`,
`sample_text_to_image`, `VAE.decode`, which decodes `--decode-batch` rows at a time), each the
best of `--repeats`; the last row is one `pipe(...)` call end to end.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from tld.model import Denoiser, DenoiserConfig
from tld.pipeline import TLDPipeline
from tld.pipeline.sampling import sample_text_to_image

PROMPTS = ["red heart", "blue star", "green apple", "yellow sun", "smiling face", "black cat"]


def best(fn: Callable[[], object], repeats: int, device: torch.device) -> tuple[object, float]:
    result, times = None, []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return result, min(times)


def random_101m(device: str, dtype: str | None) -> TLDPipeline:
    from diffusers import AutoencoderKL

    from tld.encoders.vae import VAE

    demo = TLDPipeline.from_pretrained(device="cpu")
    torch.manual_seed(0)
    vae_model = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
    )
    net = Denoiser(DenoiserConfig.preset("101m").replace(text_dim=demo.text_encoder.dim))
    return TLDPipeline(net, VAE(vae_model, 8.0, "random"), demo.text_encoder, device=device, dtype=dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo", help="demo, 101m, or a model folder")
    ap.add_argument("--images", type=int, default=36)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--decode-batch", type=int, default=16, help="VAE decode rows per call")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, help="float32, float16, bfloat16 (default: the pipeline's)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the denoiser (pipe.compile())")
    args = ap.parse_args()
    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(args.dtype, args.dtype)
    if args.model == "101m":
        pipe = random_101m(args.device, dtype)
    else:
        pipe = TLDPipeline.from_pretrained(None if args.model == "demo" else args.model, args.device, dtype)
    if args.compile:
        pipe.compile()
    device = pipe.device
    prompts = [PROMPTS[k % len(PROMPTS)] for k in range(args.images)]
    call = dict(steps=args.steps, seed=0, progress=False)
    pipe(prompts[:2], **{**call, "steps": 2})  # warm-up (and the compile, when asked)
    job = pipe.make_job(prompts, call)
    h, w = pipe.denoiser.config.latent_size
    shape = (pipe.vae.latent_channels, h, w)

    conds, t_text = best(lambda: pipe.conditioning(job), args.repeats, device)
    cond, uncond = conds

    def denoise() -> torch.Tensor:
        with torch.no_grad():
            return sample_text_to_image(job, pipe.param, pipe.denoiser, shape, device, cond, uncond)

    latents, t_denoise = best(denoise, args.repeats, device)
    _, t_decode = best(lambda: pipe.vae.decode(latents, batch_size=args.decode_batch), args.repeats, device)
    _, t_total = best(lambda: pipe(prompts, **call), 1, device)

    f = pipe.vae.downsample_factor
    print(
        f"model {args.model} ({pipe.denoiser.num_parameters() / 1e6:.1f}M denoiser), {args.images} images "
        f"{h * f}x{w * f} px, {args.steps} steps, cfg {job.settings.cfg}, {device}, {pipe.dtype}, "
        f"{torch.get_num_threads()} threads, compile {args.compile}\n"
    )
    print("| part | seconds | share | per image |")
    print("|---|---|---|---|")
    parts = [("text encode", t_text), ("denoiser (all steps)", t_denoise), ("VAE decode", t_decode)]
    total = sum(t for _, t in parts)
    for name, seconds in parts:
        print(f"| {name} | {seconds:.3f} | {seconds / total:.0%} | {seconds / args.images:.4f} |")
    print(f"| sum of parts | {total:.3f} | 100% | {total / args.images:.4f} |")
    print(f"| pipe(...) end to end | {t_total:.3f} | | {t_total / args.images:.4f} |")


if __name__ == "__main__":
    main()

"""TLDPipeline: prompt -> text encoder -> sampler over the denoiser -> VAE decode -> images.

    pipe = TLDPipeline.from_pretrained("weights/my-model")
    out = pipe("a cute owl", cfg=7, steps=15, seed=11, num_images=4)
    out[0].save("owl.png"); out.seeds      # [11, 12, 13, 14]

Also `img2img`, `inpaint` and `outpaint` (`tld.pipeline.edit`). The sampling core lives in
the generation layer (`tld.generation`), the model folder format in `tld.pipeline.folder`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tld.common import resolve_device, resolve_dtype
from tld.diffusion import get_parameterization
from tld.diffusion.parameterizations import Parameterization
from tld.encoders.text import load_text_encoder
from tld.encoders.vae import VAE
from tld.errors import TLDError
from tld.generation import (
    Job,
    SamplingDefaults,
    default_schedule,
    default_size,
    make_job,
    nudge,
    sample_text_to_image,
)
from tld.generation.run import StepEnd, null_condition
from tld.model import Denoiser
from tld.model.cpu import apply_cpu_kernels
from tld.pipeline import edit
from tld.pipeline.folder import bundled_model_path, local_model_folder, read_model_config, update_config_json
from tld.pipeline.lora import LoraMixin, save_denoiser
from tld.pipeline.sampling import TLDOutput, to_output

__all__ = ["ORIGINAL_SAMPLING", "SamplingDefaults", "TLDOutput", "TLDPipeline"]

# The original release's sampler: DPM-Solver++(2M) on its own t schedule (exponent 1) starting from
# unit noise, cfg 6 and no latent nudges (the defaults of its app).
ORIGINAL_SAMPLING = SamplingDefaults(
    cfg=6.0, steps=15, sampler="dpmpp_2m", schedule="tld", schedule_opts={"exponent": 1.0}, original_init=True
)
ORIGINAL_VAE = "madebyollin/sdxl-vae-fp16-fix"
ORIGINAL_TEXT_ENCODER = {"backend": "open_clip", "model": "ViT-L-14", "pretrained": "openai"}
ORIGINAL_LATENT_SCALE = 8.0


class TLDPipeline(LoraMixin):
    """A denoiser, a VAE, a text encoder and a parameterization, ready to sample images.

    The editing calls (`tld.pipeline.edit`) use four public methods besides the attributes:
    `make_job`, `conditioning`, `finish` and `latent_factor`. LoRA adapters: `tld.pipeline.lora`.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        vae: VAE,
        text_encoder: Any,
        parameterization: Parameterization | str | dict[str, Any] = "tld",
        sampling: SamplingDefaults | dict[str, Any] | None = None,
        text_tokens: bool = False,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        compile: bool = False,
        cpu_kernels: str = "auto",
    ):
        self.denoiser = denoiser.eval().requires_grad_(False)
        self.cpu_kernels = cpu_kernels
        self.vae = vae
        self.text_encoder = text_encoder
        self.param = _as_parameterization(parameterization)
        # A copy, so changing one pipeline's defaults never touches another's (or ORIGINAL_SAMPLING).
        given = sampling.to_dict() if isinstance(sampling, SamplingDefaults) else sampling or {}
        self.sampling = SamplingDefaults.from_dict(given)
        self.text_tokens = bool(text_tokens)
        self._check_components()
        self.to(device, dtype)
        if compile:
            self.compile()

    def compile(self, **options: Any) -> TLDPipeline:
        """torch.compile the denoiser in place (options go to torch.compile); compiles at the first call.

        Worth it on a GPU, where the many sampling steps repay the compile time; each new batch size
        or image size compiles again.
        """
        self.denoiser.compile(**options)
        return self

    def _check_components(self) -> None:
        net = self.denoiser.config
        c = self.vae.latent_channels
        if net.out_channels != c:
            raise TLDError(
                f"denoiser out_channels {net.out_channels} does not match the VAE's {c} latent channels"
            )
        if net.in_channels not in (c, 2 * c + 1):
            raise TLDError(
                f"denoiser in_channels must be {c} (plain) or {2 * c + 1} (inpainting), got {net.in_channels}"
            )
        if net.text_dim and self.text_encoder is None:
            raise TLDError(
                f"the denoiser is text-conditioned (text_dim {net.text_dim}) but no text encoder was given"
            )
        dim = getattr(self.text_encoder, "token_dim" if self.text_tokens else "dim", None)
        if net.text_dim and dim != net.text_dim:
            kind = "per-token" if self.text_tokens else "pooled"
            raise TLDError(
                f"text encoder gives {dim}-d {kind} embeddings but the denoiser expects text_dim {net.text_dim}"
            )

    def to(
        self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None
    ) -> TLDPipeline:
        """Move the denoiser, VAE and text encoder; `dtype` None = float16 on CUDA, float32 elsewhere."""
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.denoiser.to(self.device, self.dtype)
        # CPU kernels (tld.model.cpu) only where the denoiser runs on the CPU; elsewhere the plain net.
        apply_cpu_kernels(self.denoiser, self.cpu_kernels if self.device.type == "cpu" else "off")
        self.vae.to(self.device, self.dtype)
        if self.text_encoder is not None:
            self.text_encoder.to(self.device)  # text embeddings stay float32; the encoder keeps its dtype
        return self

    @property
    def latent_factor(self) -> int:
        """Pixel sizes must be multiples of this: VAE downsampling x patch size."""
        return self.vae.downsample_factor * self.denoiser.config.patch_size

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the images a call without height/width makes."""
        return default_size(self.denoiser.config.latent_size, self.vae.downsample_factor)

    @property
    def is_inpainting_model(self) -> bool:
        net = self.denoiser.config
        return net.in_channels == 2 * net.out_channels + 1

    # ---- loading and saving ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        revision: str | None = None,
        compile: bool = False,
        cpu_kernels: str = "auto",
    ) -> TLDPipeline:
        """Load a model folder (docs/internals.md) or download one from the Hugging Face hub.

        No argument loads the demo model bundled with the package (`bundled_model_path()`);
        `compile=True` torch.compiles the denoiser (`compile`); `cpu_kernels` picks the CPU kernel
        policy ("auto", "onednn", "blas" or "off", `tld.model.cpu`) used while it runs on the CPU.
        """
        if path_or_repo_id is None:
            path_or_repo_id = bundled_model_path()
        folder = local_model_folder(path_or_repo_id, revision)
        config = read_model_config(folder)
        denoiser = Denoiser.from_pretrained(folder)
        device = resolve_device(device)
        vae_ref, text_ref = config["vae"], config.get("text_encoder")
        if isinstance(vae_ref, str):
            vae = VAE.from_pretrained(
                folder / vae_ref if (folder / vae_ref).is_dir() else vae_ref, device=device
            )
        else:
            vae = VAE.from_spec(vae_ref, device=device)
        if isinstance(text_ref, str) and (folder / text_ref).is_dir():
            text_ref = folder / text_ref
        # Class-conditional and unconditional models are exported without a text encoder.
        text_encoder = None if text_ref is None else load_text_encoder(text_ref, device=device)
        return cls(
            denoiser,
            vae,
            text_encoder,
            parameterization=config.get("parameterization", "tld"),
            sampling=config.get("sampling"),
            text_tokens=config.get("text_tokens", False),
            device=device,
            dtype=dtype,
            compile=compile,
            cpu_kernels=cpu_kernels,
        )

    def save_pretrained(self, folder: str | os.PathLike, components: bool = True) -> Path:
        """Write a model folder; `components=False` records the VAE/text encoder specs instead of copies."""
        folder = Path(folder)
        save_denoiser(self.denoiser, folder)  # without adapter layers (fused ones stay in)
        text = self.text_encoder
        if components:
            self.vae.save_pretrained(folder / "vae")
            if text is not None:
                text.save_pretrained(folder / "text_encoder")
        entries = {
            "parameterization": self.param.to_dict(),
            "vae": "vae" if components else self.vae.spec,
            "text_encoder": None if text is None else "text_encoder" if components else text.spec,
            "text_tokens": self.text_tokens,
            "sampling": self.sampling.to_dict(),
        }
        update_config_json(folder, entries)
        return folder

    @classmethod
    def from_original(
        cls,
        state_dict: str | os.PathLike | dict[str, torch.Tensor],
        vae: str | VAE = ORIGINAL_VAE,
        text_encoder: Any = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        variant: str = "released",
    ) -> TLDPipeline:
        """The original TLD release (`state_dict_378000.pth`) with its VAE, CLIP ViT-L/14 and sampler.

        `vae`/`text_encoder` may be hub ids / specs / folders or loaded objects; the VAE always gets
        the original's latent scale 8 and the pipeline the `tld` parameterization. `variant`:
        "released" (the published weights' network) or "main" (checkpoints of upstream's main branch).
        """
        from tld.model.convert import load_original_tld

        denoiser = load_original_tld(state_dict, variant=variant)
        if isinstance(vae, VAE):
            vae = VAE(vae.model, ORIGINAL_LATENT_SCALE, vae.source)
        else:
            vae = VAE.from_pretrained(vae, latent_scale=ORIGINAL_LATENT_SCALE)
        if text_encoder is None or isinstance(text_encoder, dict | str | os.PathLike):
            text_encoder = load_text_encoder(text_encoder or ORIGINAL_TEXT_ENCODER)
        return cls(denoiser, vae, text_encoder, "tld", ORIGINAL_SAMPLING, device=device, dtype=dtype)

    @staticmethod
    def convert_original(
        state_dict: str | os.PathLike | dict[str, torch.Tensor],
        out_dir: str | os.PathLike,
        vae: str = ORIGINAL_VAE,
        text_encoder: dict[str, Any] | None = None,
        variant: str = "released",
    ) -> Path:
        """Write a model folder for the original release without downloading its VAE or CLIP:
        config.json records them as hub specs, fetched when the folder is first loaded."""
        from tld.model.convert import load_original_tld

        folder = Path(out_dir)
        load_original_tld(state_dict, variant=variant).save_pretrained(folder)
        entries = {
            "parameterization": get_parameterization("tld").to_dict(),
            "vae": {"path": vae, "latent_scale": ORIGINAL_LATENT_SCALE},
            "text_encoder": text_encoder or ORIGINAL_TEXT_ENCODER,
            "text_tokens": False,
            "sampling": ORIGINAL_SAMPLING.to_dict(),
        }
        update_config_json(folder, entries)
        return folder

    # ---- text to image -----------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        cfg: float | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        schedule: str | None = None,
        seed: int | Sequence[int] | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        num_images: int = 1,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        progress: bool = True,
        callback_on_step_end: StepEnd | None = None,
        **options: Any,
    ) -> TLDOutput:
        """Text to image; returns a TLDOutput (a sequence of images with their seeds and latents).

        None settings take the model's SamplingDefaults. `options` may override the other
        SamplingDefaults fields (sharp_f, bright_f, threshold, cfg_rescale, cfg_schedule, schedule_opts,
        original_init) and hold `sampler_opts`, a dict for the sampler (e.g. {"eta": 0.5}).
        `callback_on_step_end(step, sigma, latents)` runs after every step; returning False stops
        there and decodes the model's estimate of the clean image from those latents.
        """
        call = dict(
            cfg=cfg, steps=steps, sampler=sampler, schedule=schedule, seed=seed, num_images=num_images
        )
        call.update(negative_prompt=negative_prompt, output_type=output_type, progress=progress, **options)
        job = self.make_job(prompt, call)
        h, w = self._latent_hw(height, width)
        cond, uncond = self.conditioning(job)
        shape = (self.vae.latent_channels, h, w)
        latents = sample_text_to_image(
            job, self.param, self.denoiser, shape, self.device, cond, uncond, callback_on_step_end
        )
        return self.finish(
            job, latents, height=h * self.vae.downsample_factor, width=w * self.vae.downsample_factor
        )

    # ---- image editing: functions of tld.pipeline.edit taking the pipeline first, used as methods ------
    img2img = edit.img2img
    inpaint = edit.inpaint
    outpaint = edit.outpaint

    # ---- the sampling steps every call shares --------------------------------------------------------
    def make_job(self, prompt: str | Sequence[str], call: dict[str, Any]) -> Job:
        """Check a call's arguments against the model's SamplingDefaults; one row per image."""
        return make_job(self.sampling, default_schedule(self.param.name), prompt, **call)

    def _latent_hw(self, height: int | None, width: int | None) -> tuple[int, int]:
        default_h, default_w = self.default_size
        f, step = self.vae.downsample_factor, self.latent_factor
        height = default_h if height is None else height
        width = default_w if width is None else width
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % step:
                raise TLDError(
                    f"{name} must be a positive multiple of {step} pixels (VAE factor {f} x patch "
                    f"{self.denoiser.config.patch_size}), got {value!r}"
                )
        return height // f, width // f

    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Denoiser keyword arguments for these prompts (pooled or per-token text embeddings)."""
        emb = self.text_encoder.encode(prompts, tokens=self.text_tokens)
        if self.text_tokens:
            return {"text_emb": emb.tokens.to(self.device), "text_mask": emb.mask.to(self.device)}
        return {"text_emb": emb.pooled.to(self.device)}

    def _labels(self, job: Job) -> dict[str, torch.Tensor]:
        """class_labels for class-conditional models (no text encoder needed)."""
        n = self.denoiser.config.num_classes
        if not n:
            if job.class_labels is not None:
                raise TLDError("class_labels given, but this model is not class-conditional (num_classes 0)")
            return {}
        if job.class_labels is None:
            raise TLDError(f"this model is class-conditional: pass class_labels (integers in [0, {n}))")
        if not all(0 <= c < n for c in job.class_labels):
            raise TLDError(f"class_labels must be in [0, {n}), got {sorted(set(job.class_labels))}")
        return {"class_labels": torch.tensor(job.class_labels, device=self.device)}

    def conditioning(self, job: Job) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The network's keyword arguments for the guided and the unguided branch (None: no guidance)."""
        keep = torch.zeros(job.batch, dtype=torch.bool, device=self.device)
        text = self.encode_prompts(job.prompts) if self.denoiser.config.text_dim else {}
        cond = {**text, **self._labels(job), "drop_cond": keep}
        if not job.settings.guided():
            return cond, None
        if job.negatives is not None and text:
            return cond, {**cond, **self.encode_prompts(job.negatives)}
        return cond, null_condition(cond)

    def finish(
        self, job: Job, latents: torch.Tensor, known=None, mask=None, paste=None, **extra: Any
    ) -> TLDOutput:
        """Nudge, re-pin the known latent, decode, optionally paste known pixels (pixels, pixel mask)."""
        latents = nudge(latents, job.settings)
        if known is not None:
            latents = mask * latents + (1 - mask) * known
        images = None if job.output_type == "latent" else self.vae.decode(latents)
        if paste is not None and images is not None:
            pixels, mask_px = paste
            images = mask_px * images + (1 - mask_px) * pixels
        return to_output(job, latents, images, job.describe(**extra))


def _as_parameterization(p: Parameterization | str | dict[str, Any]) -> Parameterization:
    if isinstance(p, Parameterization):
        return p
    if isinstance(p, str):
        return get_parameterization(p)
    if isinstance(p, dict) and "name" in p:
        return get_parameterization(**p)
    raise TLDError(f"expected a parameterization name, dict with 'name', or object, got {p!r}")

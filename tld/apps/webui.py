"""The web UI (`tld ui`): gradio over one TLDPipeline.

Text to image: prompt, negative prompt, cfg (and its schedule by noise level), steps, sampler, schedule, seed, number of images and
size; a gallery of PNGs that carry their settings (the files `tld.pipeline.images.save_png` writes),
the seeds shown after each run, a progress bar from the sampler's own tqdm. Edit: inpaint a drawn
mask, outpaint margins, img2img with a strength. All model calls share one queue slot, so the model
runs one batch at a time.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tld.apps.editing import EDIT_MODES, EDIT_SIDES, EditRequest, run_edit
from tld.common import first_line, require
from tld.errors import TLDError

gr = require("gradio", "ui")

if TYPE_CHECKING:
    from tld.pipeline import TLDPipeline
    from tld.pipeline.sampling import TLDOutput

RANDOM_SEED = -1
DEFAULT_SCHEDULE = "model default"


@dataclass
class UIConfig:
    """What the page offers: limits on images and size, where the gallery's PNGs are written."""

    model_name: str = "bundled"
    max_images: int = 8
    max_size: int = 512
    output_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="tld-ui-"))


def seed_arg(seed: float | None) -> int | None:
    """The seed box: -1 or empty = random (the pipeline draws one and reports it)."""
    if seed is None or int(seed) == RANDOM_SEED:
        return None
    return int(seed)


def schedule_text(pieces: list[list[float]] | None) -> str:
    """A cfg schedule as the text box shows it: "2:4,0.5:2" ("" = none)."""
    return ",".join(f"{sigma:g}:{scale:g}" for sigma, scale in pieces or [])


def sampling_args(
    negative: str,
    cfg: float,
    cfg_schedule: str,
    steps: float,
    sampler: str,
    schedule: str,
    seed: float | None,
    n: float,
) -> dict[str, Any]:
    """The pipeline's keyword arguments from the widgets (sliders give floats); an empty cfg schedule
    box is a constant cfg."""
    return {
        "negative_prompt": negative.strip() or None,
        "cfg": float(cfg),
        "cfg_schedule": (cfg_schedule or "").strip() or [],
        "steps": int(steps),
        "sampler": sampler,
        "schedule": None if schedule == DEFAULT_SCHEDULE else schedule,
        "seed": seed_arg(seed),
        "num_images": int(n),
    }


def save_gallery(out: TLDOutput, folder: str | Path, model: str) -> list[tuple[str, str]]:
    """Write each image as a PNG with its settings; (path, caption) pairs for gr.Gallery."""
    from tld.pipeline.images import save_png

    items = []
    for k, image in enumerate(out):
        path = Path(folder) / f"tld-{out.seeds[k]}-{uuid.uuid4().hex[:8]}.png"
        save_png(image, path, {**out.metadata(k), "model": model})
        items.append((str(path), f"seed {out.seeds[k]}"))
    return items


def seeds_text(out: TLDOutput) -> str:
    return "seeds: " + ", ".join(str(s) for s in out.seeds)


@dataclass
class Handlers:
    """What the page's buttons run: a pipeline call, then the gallery's PNG files and the seeds used.

    gr.Progress as a default argument is how gradio shows the sampler's own tqdm bar.
    """

    pipe: TLDPipeline
    config: UIConfig

    def _call(self, fn, *args, **kwargs) -> tuple[list[tuple[str, str]], str]:
        try:
            out = fn(*args, **kwargs)
        except TLDError as exc:
            raise gr.Error(first_line(exc)) from None
        return save_gallery(out, self.config.output_dir, self.config.model_name), seeds_text(out)

    def text_to_image(
        self, prompt, negative, cfg, cfg_schedule, steps, sampler, schedule, seed, n, width, height,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):  # fmt: skip
        args = sampling_args(negative, cfg, cfg_schedule, steps, sampler, schedule, seed, n)
        return self._call(self.pipe, prompt, width=int(width), height=int(height), progress=True, **args)

    def edit(
        self, editor, mode, prompt, negative, cfg, cfg_schedule, steps, sampler, schedule, seed, n, strength,
        left, right, top, bottom,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):  # fmt: skip
        args = sampling_args(negative, cfg, cfg_schedule, steps, sampler, schedule, seed, n)
        args["progress"] = True
        margins = (int(left), int(right), int(top), int(bottom))
        request = EditRequest(mode, prompt, float(strength), margins, self.config.max_size)
        return self._call(run_edit, self.pipe, editor, request, args)


def build_ui(pipe: TLDPipeline, config: UIConfig | None = None) -> gr.Blocks:
    """The gr.Blocks app; `launch_ui` serves it."""
    config = config or UIConfig()
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    handlers = Handlers(pipe, config)
    with gr.Blocks(title="tld", analytics_enabled=False) as demo:
        gr.Markdown(f"## tld: text to image\nmodel: `{config.model_name}`")
        with gr.Tab("Text to image"):
            prompt = gr.Textbox(label="prompt", elem_id="prompt", lines=2)
            settings = _settings_widgets(pipe, config)
            size = _size_widgets(pipe, config)
            run = gr.Button("Generate", variant="primary", elem_id="generate")
            gallery = gr.Gallery(
                label="images", elem_id="gallery", columns=4, format="png", buttons=["download"]
            )
            seeds = gr.Textbox(label="seeds used", elem_id="seeds", interactive=False)
            inputs = [prompt, *settings, *size]
            run.click(handlers.text_to_image, inputs, [gallery, seeds], concurrency_id="model")
        with gr.Tab("Edit"):
            _edit_tab(pipe, config, handlers.edit)
    demo.queue(default_concurrency_limit=1)
    return demo


def _settings_widgets(pipe: TLDPipeline, config: UIConfig) -> list:
    from tld.diffusion import SAMPLERS, SCHEDULES

    s = pipe.sampling
    with gr.Row():
        negative = gr.Textbox(label="negative prompt", scale=2)
        seed = gr.Number(value=RANDOM_SEED, precision=0, label="seed (-1 = random)")
        n = gr.Slider(1, config.max_images, value=1, step=1, label="images")
    with gr.Row():
        cfg = gr.Slider(0, 20, value=s.cfg, step=0.5, label="cfg (guidance; 1 = none)")
        steps = gr.Slider(1, 100, value=s.steps, step=1, label="steps")
        sampler = gr.Dropdown(sorted(SAMPLERS), value=s.sampler, label="sampler")
        schedule = gr.Dropdown(
            [DEFAULT_SCHEDULE, *SCHEDULES], value=s.schedule or DEFAULT_SCHEDULE, label="schedule"
        )
    cfg_schedule = gr.Textbox(
        value=schedule_text(s.cfg_schedule), elem_id="cfg-schedule",
        label="cfg by noise level: SIGMA:SCALE,... ('2:4' = 4 while sigma >= 2, the cfg slider below; "
        "empty = the slider throughout)",
    )  # fmt: skip
    return [negative, cfg, cfg_schedule, steps, sampler, schedule, seed, n]


def _size_widgets(pipe: TLDPipeline, config: UIConfig) -> list:
    h, w = pipe.denoiser.config.latent_size
    f, step = pipe.vae.downsample_factor, pipe.latent_factor
    top = max(config.max_size, h * f, w * f)
    with gr.Row():
        width = gr.Slider(step, top, value=w * f, step=step, label="width")
        height = gr.Slider(step, top, value=h * f, step=step, label="height")
    return [width, height]


def _edit_tab(pipe: TLDPipeline, config: UIConfig, edit) -> None:
    gr.Markdown(
        "Upload an image. **inpaint**: paint over what to redraw. **outpaint**: set the margins. "
        "**img2img**: redraw the whole image; strength 0 keeps it, 1 ignores it."
    )
    step = pipe.latent_factor
    with gr.Row():
        editor = gr.ImageEditor(label="image (paint the mask)", type="pil", elem_id="editor")
        with gr.Column():
            mode = gr.Radio(list(EDIT_MODES), value="inpaint", label="mode")
            prompt = gr.Textbox(label="prompt", lines=2)
            strength = gr.Slider(0, 1, value=0.6, step=0.05, label="img2img strength")
            top = max(step, config.max_size // 2 // step * step)
            margins = [gr.Slider(0, top, value=0, step=step, label=side) for side in EDIT_SIDES]
    settings = _settings_widgets(pipe, config)
    run = gr.Button("Edit", variant="primary", elem_id="edit")
    gallery = gr.Gallery(label="results", columns=4, format="png", buttons=["download"])
    seeds = gr.Textbox(label="seeds used", interactive=False)
    run.click(
        edit, [editor, mode, prompt, *settings, strength, *margins], [gallery, seeds], concurrency_id="model"
    )


def launch_ui(
    pipe: TLDPipeline,
    config: UIConfig,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    block: bool = True,
):
    """Serve the UI; `block=False` returns the running gr.Blocks (call `.close()` to stop it)."""
    demo = build_ui(pipe, config)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=not block,
        quiet=not block,
        ssr_mode=False,
        allowed_paths=[config.output_dir],
    )
    return demo

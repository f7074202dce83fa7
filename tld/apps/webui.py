"""The web UI (`tld ui`): gradio over one TLDPipeline.

Text to image: prompt, negative prompt, cfg (and its schedule by noise level), steps, sampler, schedule, seed, number of images and
size; a gallery of PNGs that carry their settings (written by `tld.pipeline.images.save_png`),
the seeds shown after each run, a progress bar from the sampler's own tqdm. Edit: inpaint a drawn
mask, outpaint margins, img2img with a strength. All model calls share one queue slot, so the model
runs one batch at a time. The handlers take the widgets' values by name (`bind`), never by position.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable
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
AUTH_ENV = "TLD_UI_AUTH"


@dataclass
class UIConfig:
    """What the page offers: limits on images, size and uploads, where the gallery's PNGs are written
    (None = a temporary folder the UI owns and deletes on exit), and the login (None = no login)."""

    model_name: str = "bundled"
    max_images: int = 8
    max_size: int = 512
    output_dir: str | None = None
    auth: tuple[str, str] | None = None
    max_upload_mb: int = 10
    _owned: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.output_dir is None:
            # Deleted by cleanup(), or at interpreter exit by TemporaryDirectory's own finalizer.
            self._owned = tempfile.TemporaryDirectory(prefix="tld-ui-")
            self.output_dir = self._owned.name

    def cleanup(self) -> None:
        """Delete the output folder if the UI made it (a folder given by the caller stays)."""
        if self._owned is not None:
            self._owned.cleanup()


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """'USER:PASS' -> (user, password); None or '' -> None (no login)."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not (sep and user.strip() and password):
        raise TLDError(f"--auth must be USER:PASSWORD (or ${AUTH_ENV}), got a value without both parts")
    return user.strip(), password


def seed_arg(seed: float | None) -> int | None:
    """The seed box: -1 or empty = random (the pipeline draws one and reports it)."""
    if seed is None or int(seed) == RANDOM_SEED:
        return None
    return int(seed)


def schedule_text(pieces: list[list[float]] | None) -> str:
    """A cfg schedule as the text box shows it: "2:4,0.5:2" ("" = none)."""
    return ",".join(f"{sigma:g}:{scale:g}" for sigma, scale in pieces or [])


@dataclass
class SamplingForm:
    """The sampling widgets' values by name (sliders give floats), shared by both tabs."""

    negative: str = ""
    cfg: float = 7.0
    cfg_schedule: str = ""
    steps: float = 15
    sampler: str = "dpmpp_2m"
    schedule: str = DEFAULT_SCHEDULE
    seed: float | None = RANDOM_SEED
    n: float = 1

    def call_args(self) -> dict[str, Any]:
        """The pipeline's keyword arguments; an empty cfg schedule box is a constant cfg."""
        return {
            "negative_prompt": self.negative.strip() or None,
            "cfg": float(self.cfg),
            "cfg_schedule": (self.cfg_schedule or "").strip() or [],
            "steps": int(self.steps),
            "sampler": self.sampler,
            "schedule": None if self.schedule == DEFAULT_SCHEDULE else self.schedule,
            "seed": seed_arg(self.seed),
            "num_images": int(self.n),
        }


def save_gallery(out: TLDOutput, folder: str | Path, model: str) -> list[tuple[str, str]]:
    """Write each image as a PNG with its settings; (path, caption) pairs for gr.Gallery."""
    from tld.pipeline.images import output_images, save_png

    items = []
    for image, meta in output_images(out, model, separate=True):
        path = save_png(image, Path(folder) / f"tld-{meta['seed']}-{uuid.uuid4().hex[:8]}.png", meta)
        items.append((str(path), f"seed {meta['seed']}"))
    return items


def seeds_text(out: TLDOutput) -> str:
    return "seeds: " + ", ".join(str(s) for s in out.seeds)


def bind(widgets: dict[str, Any], handler: Callable[..., Any]) -> Callable[..., Any]:
    """A gradio callback for `handler(**values by name)`. Its inputs are given to gradio as a set, so
    gradio passes one {component: value} dict: no positional order to keep in step with the page.

    gr.Progress as a default argument is how gradio shows the sampler's own tqdm bar.
    """

    def run(values: dict[Any, Any], progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        return handler(**{name: values[widget] for name, widget in widgets.items()})

    return run


@dataclass
class Handlers:
    """What the page's buttons run: a pipeline call, then the gallery's PNG files and the seeds used."""

    pipe: TLDPipeline
    config: UIConfig

    def _call(self, fn, *args, **kwargs) -> tuple[list[tuple[str, str]], str]:
        try:
            out = fn(*args, **kwargs)
        except TLDError as exc:
            raise gr.Error(first_line(exc)) from None
        return save_gallery(out, self.config.output_dir, self.config.model_name), seeds_text(out)

    def text_to_image(self, *, prompt: str, width: float, height: float, **sampling: Any):
        args = SamplingForm(**sampling).call_args()
        return self._call(self.pipe, prompt, width=int(width), height=int(height), progress=True, **args)

    def edit(
        self, *, editor: dict[str, Any] | None, mode: str, prompt: str, strength: float,
        left: float, right: float, top: float, bottom: float, **sampling: Any,
    ):  # fmt: skip
        args = {**SamplingForm(**sampling).call_args(), "progress": True}
        margins = (int(left), int(right), int(top), int(bottom))
        request = EditRequest(
            mode=mode, prompt=prompt, strength=float(strength), margins=margins, max_size=self.config.max_size
        )
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
            widgets = {"prompt": prompt, **_settings_widgets(pipe, config), **_size_widgets(pipe, config)}
            run = gr.Button("Generate", variant="primary", elem_id="generate")
            gallery = gr.Gallery(
                label="images", elem_id="gallery", columns=4, format="png", buttons=["download"]
            )
            seeds = gr.Textbox(label="seeds used", elem_id="seeds", interactive=False)
            run.click(
                bind(widgets, handlers.text_to_image), set(widgets.values()), [gallery, seeds],
                concurrency_id="model",
            )  # fmt: skip
        with gr.Tab("Edit"):
            _edit_tab(pipe, config, handlers.edit)
    demo.queue(default_concurrency_limit=1)
    return demo


def _settings_widgets(pipe: TLDPipeline, config: UIConfig) -> dict[str, Any]:
    """The SamplingForm's widgets, by field name."""
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
    return dict(
        negative=negative, cfg=cfg, cfg_schedule=cfg_schedule, steps=steps, sampler=sampler,
        schedule=schedule, seed=seed, n=n,
    )  # fmt: skip


def _size_widgets(pipe: TLDPipeline, config: UIConfig) -> dict[str, Any]:
    height, width = pipe.default_size
    step = pipe.latent_factor
    top = max(config.max_size, height, width)
    with gr.Row():
        width_slider = gr.Slider(step, top, value=width, step=step, label="width")
        height_slider = gr.Slider(step, top, value=height, step=step, label="height")
    return {"width": width_slider, "height": height_slider}


def _edit_tab(pipe: TLDPipeline, config: UIConfig, edit: Callable[..., Any]) -> None:
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
            margins = {side: gr.Slider(0, top, value=0, step=step, label=side) for side in EDIT_SIDES}
    widgets = {
        "editor": editor, "mode": mode, "prompt": prompt, "strength": strength, **margins,
        **_settings_widgets(pipe, config),
    }  # fmt: skip
    run = gr.Button("Edit", variant="primary", elem_id="edit")
    gallery = gr.Gallery(label="results", columns=4, format="png", buttons=["download"])
    seeds = gr.Textbox(label="seeds used", interactive=False)
    run.click(bind(widgets, edit), set(widgets.values()), [gallery, seeds], concurrency_id="model")


def launch_ui(
    pipe: TLDPipeline,
    config: UIConfig,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    block: bool = True,
):
    """Serve the UI; `block=False` returns the running gr.Blocks (call `.close()` to stop it, then
    `config.cleanup()`). A public `share` link needs a login (`config.auth`). Blocking, the output
    folder is deleted when the server stops."""
    if share and config.auth is None:
        raise TLDError(
            f"--share publishes the UI to anyone with the link: give --auth USER:PASSWORD (or ${AUTH_ENV})"
        )
    demo = build_ui(pipe, config)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            auth=config.auth,
            prevent_thread_lock=not block,
            quiet=not block,
            ssr_mode=False,
            allowed_paths=[config.output_dir],
            max_file_size=config.max_upload_mb * gr.FileSize.MB,
        )
    finally:
        if block:
            config.cleanup()
    return demo

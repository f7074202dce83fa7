"""The HTTP API (`tld serve`): FastAPI over one TLDPipeline, one batch at a time.

    POST /generate   JSON GenerateRequest -> PNG (a grid when n > 1), or JSON with base64 PNGs
    POST /inpaint    multipart: image, mask files + InpaintForm fields -> the same
    GET  /health     status, queue length (never needs the token)
    GET  /models     the loaded model, its defaults, samplers, schedules and the server's limits
    GET  /docs       OpenAPI docs

Every bad input is a 422 whose `detail` is one line; a missing or wrong bearer token a 401; a full
queue a 503. The PNGs carry their prompt, seed and settings in the metadata, as the CLI's do.
"""

from __future__ import annotations

import base64
import hmac
import tempfile
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from tld import __version__
from tld.apps.queue import ModelWorker, QueueFull
from tld.apps.requests import ApiConfig, GenerateRequest, InpaintForm, Settings
from tld.common import first_line, require
from tld.errors import TLDError

require("fastapi", "ui")
require("python_multipart", "ui")  # FastAPI's form parsing

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

if TYPE_CHECKING:
    from PIL import Image

    from tld.pipeline import TLDPipeline
    from tld.pipeline.sampling import TLDOutput


def create_app(pipe: TLDPipeline, config: ApiConfig | None = None) -> FastAPI:
    """The FastAPI app serving `pipe`; the worker thread lives as long as the app runs."""
    config = config or ApiConfig()
    worker = ModelWorker(config.max_pending)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        worker.close()

    app = FastAPI(title="tld", version=__version__, lifespan=lifespan, description=__doc__)
    _add_error_handlers(app)
    auth = [Depends(bearer_check(config.token))] if config.token else []

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": config.model_name,
            "pending": worker.pending,
            "done": worker.completed,
        }

    @app.get("/models", dependencies=auth)
    async def models() -> dict[str, Any]:
        return model_info(pipe, config)

    @app.post("/generate", dependencies=auth, responses=_IMAGE_RESPONSE)
    async def generate(req: GenerateRequest) -> Response:
        check_limits(req, config, req.width, req.height)
        pipe.make_job(req.prompt, req.call_args())  # the pipeline's own checks, before queueing
        out = await worker.run(pipe, req.prompt, width=req.width, height=req.height, **req.call_args())
        return await run_in_threadpool(respond, out, req.response, config.model_name)

    @app.post("/inpaint", dependencies=auth, responses=_IMAGE_RESPONSE)
    async def inpaint(
        form: Annotated[InpaintForm, Form()],
        image: Annotated[UploadFile, File(description="the picture (PNG, JPEG, ...)")],
        mask: Annotated[UploadFile, File(description="same size; white = repaint, black = keep")],
    ) -> Response:
        picture = await read_upload(image, "image")
        mask_image = await read_upload(mask, "mask")
        check_limits(form, config, *picture.size)
        pipe.make_job(form.prompt, form.call_args())
        opts = {"feather": form.feather, "composite": form.composite, **form.call_args()}
        out = await worker.run(pipe.inpaint, picture, mask_image, form.prompt, **opts)
        return await run_in_threadpool(respond, out, form.response, config.model_name)

    return app


_IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "a PNG, or JSON when response='json'"}
}


def bearer_check(token: str) -> Callable[[str | None], None]:
    """A dependency accepting only `Authorization: Bearer <token>`, compared in constant time."""
    expected = token.encode()

    def check(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest runs the whole comparison whatever the first differing byte is.
        if not (hmac.compare_digest(given.strip().encode(), expected) and scheme.lower() == "bearer"):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return check


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(exc.errors())}, status_code=422)

    @app.exception_handler(QueueFull)
    async def busy(_request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": first_line(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(TLDError)
    async def bad_value(_request: Request, exc: TLDError) -> JSONResponse:
        return JSONResponse({"detail": first_line(exc)}, status_code=422)


def validation_message(errors: Any) -> str:
    """pydantic's list of errors as one line: 'steps: Input should be a valid integer; ...'."""
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "header"))
        msg = first_line(ValueError(err.get("msg", "invalid")))
        if err.get("type") == "missing" and not loc:
            msg = "expected a JSON body"
        elif err.get("type") == "json_invalid":
            loc, msg = "", f"the body is not valid JSON ({msg})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def check_limits(req: Settings, config: ApiConfig, width: int | None, height: int | None) -> None:
    """The server's own bounds on one request (the pipeline checks everything else)."""
    if isinstance(req.n, int) and req.n > config.max_images:
        raise TLDError(f"n must be at most {config.max_images} on this server, got {req.n}")
    if req.steps is not None and req.steps > config.max_steps:
        raise TLDError(f"steps must be at most {config.max_steps} on this server, got {req.steps}")
    for name, value in (("width", width), ("height", height)):
        if value is not None and value > config.max_size:
            raise TLDError(f"{name} must be at most {config.max_size} pixels on this server, got {value}")


async def read_upload(upload: UploadFile, what: str) -> Image.Image:
    from tld.encoders.images import load_image

    data = await upload.read()
    if not data:
        raise TLDError(f"{what}: expected an image file, got an empty upload")
    try:
        return load_image(data)
    except TLDError as exc:
        raise TLDError(f"{what}: expected an image file (PNG, JPEG, ...): {first_line(exc)}") from None


def png_bytes(image: Image.Image, metadata: dict[str, Any]) -> bytes:
    """The PNG file `tld.pipeline.images.save_png` writes, as bytes (one writer of the format)."""
    from tld.pipeline.images import save_png

    with tempfile.TemporaryDirectory() as tmp:
        return save_png(image, Path(tmp) / "image.png", metadata).read_bytes()


def respond(out: TLDOutput, kind: str, model: str) -> Response:
    """A PNG (a grid of all images when there are several) or JSON with one base64 PNG per image."""
    from tld.pipeline.images import make_grid

    seeds = ",".join(str(s) for s in out.seeds)
    if kind == "json":
        images = [png_bytes(im, {**out.metadata(k), "model": model}) for k, im in enumerate(out)]
        body = {
            "images": [base64.b64encode(b).decode("ascii") for b in images],
            "seeds": out.seeds,
            "prompts": out.prompts,
            "settings": out.settings,
            "model": model,
        }
        return JSONResponse(body, headers={"X-TLD-Seeds": seeds})
    if len(out) == 1:
        data = png_bytes(out[0], {**out.metadata(0), "model": model})
    else:
        meta = {**out.settings, "prompts": out.prompts, "seeds": out.seeds, "model": model}
        data = png_bytes(make_grid(list(out)), meta)
    return Response(data, media_type="image/png", headers={"X-TLD-Seeds": seeds})


def model_info(pipe: TLDPipeline, config: ApiConfig) -> dict[str, Any]:
    from tld.diffusion import SAMPLERS, SCHEDULES

    h, w = pipe.denoiser.config.latent_size
    f = pipe.vae.downsample_factor
    entry = {
        "name": config.model_name,
        "default_size": {"height": h * f, "width": w * f},
        "size_multiple": pipe.latent_factor,
        "inpainting_model": pipe.is_inpainting_model,
        "sampling": pipe.sampling.to_dict(),
        "device": str(pipe.device),
    }
    return {
        "models": [entry],
        "samplers": sorted(SAMPLERS),
        "schedules": list(SCHEDULES),
        "limits": config.limits(),
    }


def serve(
    model: str | None,
    config: ApiConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str | None = None,
    dtype: str | None = None,
) -> None:
    """Load the model (None = the bundled demo model) and serve it with uvicorn until interrupted."""
    uvicorn = require("uvicorn", "ui")
    from tld.pipeline import TLDPipeline

    pipe = TLDPipeline.from_pretrained(model, device=device, dtype=dtype)
    uvicorn.run(create_app(pipe, config), host=host, port=port, log_level="info")

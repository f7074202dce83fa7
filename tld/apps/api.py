"""The HTTP API (`tld serve`): FastAPI over one TLDPipeline, one batch at a time.

    POST /generate   JSON GenerateRequest -> PNG (a grid when n > 1), or JSON with base64 PNGs
    POST /inpaint    multipart: image, mask files + InpaintForm fields -> the same
    GET  /health     status, queue length (never needs the token)
    GET  /models     the loaded model, its defaults, samplers, schedules and the server's limits
    GET  /docs       OpenAPI docs

Every bad input is a 422 whose `detail` is one short line; a missing or wrong bearer token a 401 and
an oversize body a 413, both decided on the headers before the body is read (tld.apps.guard); a full
queue a 503. Bodies are parsed, checked and decoded in worker threads, so /health never waits on them;
a request whose client disconnects leaves the queue. The PNGs carry their prompt, seed and settings in
the metadata, as the CLI's do.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from tld import __version__
from tld.apps.guard import RequestGuard
from tld.apps.queue import ModelWorker, QueueFull
from tld.apps.requests import ApiConfig, GenerateRequest, InpaintForm, check_limits
from tld.common import first_line, require
from tld.errors import TLDError

require("fastapi", "ui")
require("python_multipart", "ui")  # FastAPI's form parsing

from fastapi import FastAPI, Request, UploadFile  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from pydantic import BaseModel, ValidationError  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.datastructures import FormData  # noqa: E402

if TYPE_CHECKING:
    from PIL import Image

    from tld.pipeline import TLDPipeline
    from tld.pipeline.sampling import TLDOutput


def create_app(pipe: TLDPipeline, config: ApiConfig | None = None) -> FastAPI:
    """The FastAPI app serving `pipe`; the worker thread lives as long as the app runs.

    `app.state.worker` is the ModelWorker (its `pending` is what /health reports).
    """
    config = config or ApiConfig()
    worker = ModelWorker(config.max_pending)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        worker.close()

    app = FastAPI(title="tld", version=__version__, lifespan=lifespan, description=__doc__)
    app.state.worker = worker
    app.add_middleware(RequestGuard, config=config)
    _add_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": config.model_name,
            "pending": worker.pending,
            "done": worker.completed,
            "dropped": worker.dropped,
        }

    @app.get("/models")
    async def models() -> dict[str, Any]:
        return model_info(pipe, config)

    @app.post("/generate", responses=_IMAGE_RESPONSE, openapi_extra=_json_body(GenerateRequest))
    async def generate(request: Request) -> Response:
        body = await request.body()
        req = await run_in_threadpool(_prepare_generate, pipe, config, body)
        out = await worker.run_unless(
            _gone(request), pipe, req.prompt, width=req.width, height=req.height, **req.call_args()
        )
        if out is None:
            return Response(status_code=CLIENT_GONE)
        return await run_in_threadpool(respond, out, req.response, config.model_name)

    @app.post("/inpaint", responses=_IMAGE_RESPONSE, openapi_extra=_form_body())
    async def inpaint(request: Request) -> Response:
        form = await request.form(max_files=2, max_fields=32, max_part_size=config.max_upload_bytes)
        try:
            req, picture, mask = await run_in_threadpool(_prepare_inpaint, pipe, config, form)
        finally:
            await form.close()
        opts = {"feather": req.feather, "composite": req.composite, **req.call_args()}
        out = await worker.run_unless(_gone(request), pipe.inpaint, picture, mask, req.prompt, **opts)
        if out is None:
            return Response(status_code=CLIENT_GONE)
        return await run_in_threadpool(respond, out, req.response, config.model_name)

    return app


# What the logs show for a request whose client left before its images were made (nginx's code).
CLIENT_GONE = 499
_IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "a PNG, or JSON when response='json'"}
}
# Longest `detail` of a 422: an error about a huge input names it, it does not echo it.
MAX_DETAIL = 300


def _gone(request: Request) -> Callable[[], Awaitable[None]]:
    """An awaitable factory that finishes when the client disconnects (the body is read by then)."""

    async def wait() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return wait


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": True}
    return {"requestBody": schema}


def _form_body() -> dict[str, Any]:
    schema = InpaintForm.model_json_schema()
    files = {"type": "string", "format": "binary"}
    schema["properties"].update(image={**files, "description": "the picture (PNG, JPEG, ...)"})
    schema["properties"].update(mask={**files, "description": "same size; white = repaint, black = keep"})
    schema["required"] = [*schema.get("required", []), "image", "mask"]
    return {"requestBody": {"content": {"multipart/form-data": {"schema": schema}}, "required": True}}


def _prepare_generate(pipe: TLDPipeline, config: ApiConfig, body: bytes) -> GenerateRequest:
    """Parse (strict JSON types), bound and check one /generate body; runs in a worker thread."""
    if not body.strip():
        raise TLDError("expected a JSON body")
    try:
        req = GenerateRequest.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise TLDError(validation_message(exc.errors(include_input=False))) from None
    check_limits(req, config, req.width, req.height)
    pipe.make_job(req.prompt, req.call_args())  # the pipeline's own checks, before queueing
    return req


def _prepare_inpaint(
    pipe: TLDPipeline, config: ApiConfig, form: FormData
) -> tuple[InpaintForm, Image.Image, Image.Image]:
    """The /inpaint form's fields checked, then its two images read (sizes from the headers first)."""
    fields: dict[str, str] = {}
    files: dict[str, UploadFile] = {}
    known = set(InpaintForm.model_fields)
    for name, value in form.multi_items():
        if name in fields or name in files:
            raise TLDError(f"{name[:40]}: given more than once")
        if name in ("image", "mask"):
            if isinstance(value, str):
                raise TLDError(f"{name}: expected a file upload, got a text field")
            files[name] = value
        elif name in known and isinstance(value, str):
            fields[name] = value
        else:
            raise TLDError(
                f"{name[:40]!r}: unknown field (expected image, mask and {', '.join(sorted(known))})"
            )
    for name in ("image", "mask"):
        if name not in files:
            raise TLDError(f"{name}: a file upload is required")
    try:
        req = InpaintForm.model_validate(fields)
    except ValidationError as exc:
        raise TLDError(validation_message(exc.errors(include_input=False))) from None
    check_limits(req, config, None, None)
    pipe.make_job(req.prompt, req.call_args())
    picture = read_upload(files["image"].file.read(), "image", config.max_size)
    mask = read_upload(files["mask"].file.read(), "mask", config.max_size)
    return req, picture, mask


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": short(validation_message(exc.errors()))}, status_code=422)

    @app.exception_handler(QueueFull)
    async def busy(_request: Request, exc: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": first_line(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(TLDError)
    async def bad_value(_request: Request, exc: TLDError) -> JSONResponse:
        return JSONResponse({"detail": short(first_line(exc))}, status_code=422)


def short(text: str) -> str:
    """At most MAX_DETAIL characters: a 422 about a 20 MB value must not send the 20 MB back."""
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 20] + f"... ({len(text)} chars)"


def validation_message(errors: Any) -> str:
    """pydantic's list of errors as one line: 'steps: Input should be a valid integer; ...'."""
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "header"))
        msg = first_line(ValueError(err.get("msg", "invalid")))
        if err.get("type") == "missing" and not loc:
            msg = "expected a JSON body"
        elif err.get("type") == "json_invalid":
            loc, msg = "", f"the body is not valid JSON ({msg})"
        parts.append(f"{loc[:60]}: {msg}" if loc else msg)
    return short("; ".join(parts) or "invalid request")


def read_upload(data: bytes, what: str, max_side: int) -> Image.Image:
    """An uploaded image, its size checked from the file's header before any pixel is decoded."""
    from PIL import Image

    from tld.encoders.images import load_image

    if not data:
        raise TLDError(f"{what}: expected an image file, got an empty upload")
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            width, height = header.size
    except Image.DecompressionBombError:
        raise TLDError(
            f"{what}: the image has too many pixels for this server (at most {max_side} a side)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise TLDError(f"{what}: expected an image file (PNG, JPEG, ...): {first_line(exc)}") from None
    for name, value in (("width", width), ("height", height)):
        if value > max_side:
            raise TLDError(f"{what}: {name} must be at most {max_side} pixels on this server, got {value}")
    try:
        return load_image(data)
    except TLDError as exc:
        raise TLDError(f"{what}: expected an image file (PNG, JPEG, ...): {first_line(exc)}") from None


def respond(out: TLDOutput, kind: str, model: str) -> Response:
    """A PNG (a grid of all images when there are several) or JSON with one base64 PNG per image."""
    from tld.pipeline.images import output_images, png_bytes

    seeds = ",".join(str(s) for s in out.seeds)
    if kind == "json":
        images = [png_bytes(im, meta) for im, meta in output_images(out, model, separate=True)]
        body = {
            "images": [base64.b64encode(b).decode("ascii") for b in images],
            "seeds": out.seeds,
            "prompts": out.prompts,
            "settings": out.settings,
            "model": model,
        }
        return JSONResponse(body, headers={"X-TLD-Seeds": seeds})
    [(image, meta)] = output_images(out, model, separate=False)
    return Response(png_bytes(image, meta), media_type="image/png", headers={"X-TLD-Seeds": seeds})


def model_info(pipe: TLDPipeline, config: ApiConfig) -> dict[str, Any]:
    from tld.diffusion import SAMPLERS, SCHEDULES

    height, width = pipe.default_size
    entry = {
        "name": config.model_name,
        "default_size": {"height": height, "width": width},
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

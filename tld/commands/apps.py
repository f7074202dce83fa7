"""`tld ui` (gradio web UI) and `tld serve` (FastAPI + uvicorn HTTP API) over one model; see docs/apps.md."""

from __future__ import annotations

import argparse
import os
import signal

from tld.common import require


def register(subparsers: argparse._SubParsersAction) -> None:
    u = subparsers.add_parser(
        "ui",
        help="web UI: text to image, inpaint, outpaint, img2img in the browser",
        description="Serve the gradio web UI (needs the ui extra). Binds 127.0.0.1 unless --host is given; "
        "a public gradio.live link only with --share.",
    )
    _add_app_arguments(u, port=7860, max_images=8)
    u.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs --auth)")
    u.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        help="require this login (default: $TLD_UI_AUTH; unset = none). Prefer the variable: a command "
        "line is visible to other users of the machine",
    )
    u.set_defaults(func=run_ui)

    s = subparsers.add_parser(
        "serve",
        help="HTTP API: POST /generate, /inpaint; GET /health, /models, /docs",
        description="Serve a model over HTTP (needs the ui extra). Binds 127.0.0.1 unless --host is given.",
    )
    _add_app_arguments(s, port=8000, max_images=4)
    s.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' (default: $TLD_API_TOKEN; unset = no auth). "
        "Prefer the variable: a command line is visible to other users of the machine",
    )
    s.add_argument("--max-steps", type=int, default=100, help="most sampler steps per request (default 100)")
    s.add_argument("--max-pending", type=int, default=64, help="requests queued before 503s (default 64)")
    s.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        metavar="HOST",
        help="a Host header to answer besides 127.0.0.1, localhost and ::1 (repeatable; '*' = any); "
        "needed with --host 0.0.0.0: the name or address clients use",
    )
    s.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        metavar="URL",
        help="a web page origin (https://example.org) whose scripts may call the API (repeatable; '*' = any)",
    )
    s.set_defaults(func=run_serve)


def _add_app_arguments(p: argparse.ArgumentParser, port: int, max_images: int) -> None:
    """What both apps share: the model, where to bind, the per-request limits, device and dtype."""
    p.add_argument("--model", help="model folder or hub repo id (default: the bundled demo model)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=port, help=f"port (default {port})")
    p.add_argument(
        "--max-images", type=int, default=max_images, help=f"most images per request (default {max_images})"
    )
    p.add_argument("--max-size", type=int, default=512, help="largest width/height in pixels (default 512)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", help="float32, float16 or bfloat16 (default: float16 on CUDA)")


def run_ui(args: argparse.Namespace) -> int:
    require("gradio", "ui")
    from tld.apps.webui import AUTH_ENV, UIConfig, launch_ui, parse_auth
    from tld.errors import TLDError

    auth = parse_auth(args.auth if args.auth is not None else os.environ.get(AUTH_ENV))
    if args.share and auth is None:  # refused before minutes of loading
        raise TLDError(
            f"--share publishes the UI to anyone with the link: give --auth USER:PASSWORD (or ${AUTH_ENV})"
        )
    from tld.pipeline import TLDPipeline

    pipe = TLDPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    config = UIConfig(
        model_name=args.model or "bundled", max_images=args.max_images, max_size=args.max_size, auth=auth
    )
    # A service manager stops the UI with SIGTERM: end it as Ctrl-C does, so the output folder goes.
    signal.signal(signal.SIGTERM, _interrupt)
    launch_ui(pipe, config, host=args.host, port=args.port, share=args.share)
    return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_serve(args: argparse.Namespace) -> int:
    require("fastapi", "ui")
    from tld.apps.api import serve
    from tld.apps.requests import LOOPBACK_HOSTS, ApiConfig, token_from_env

    config = ApiConfig(
        allowed_hosts=(*LOOPBACK_HOSTS, *(args.allowed_hosts or [])),
        allowed_origins=tuple(args.allowed_origins or []),
        model_name=args.model or "bundled",
        token=token_from_env(args.token),
        max_images=args.max_images,
        max_steps=args.max_steps,
        max_size=args.max_size,
        max_pending=args.max_pending,
    )
    serve(args.model, config, host=args.host, port=args.port, device=args.device, dtype=args.dtype)
    return 0

"""`tld serve`: the HTTP API (FastAPI + uvicorn) over one model; see docs/apps.md."""

from __future__ import annotations

import argparse

from tld.common import require


def register(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "serve",
        help="HTTP API: POST /generate, /inpaint; GET /health, /models, /docs",
        description="Serve a model over HTTP (needs the ui extra). Binds 127.0.0.1 unless --host is given.",
    )
    s.add_argument("--model", help="model folder or hub repo id (default: the bundled demo model)")
    s.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument(
        "--token",
        help="require 'Authorization: Bearer TOKEN' (default: $TLD_API_TOKEN; unset = no auth). "
        "Prefer the variable: a command line is visible to other users of the machine",
    )
    s.add_argument("--max-images", type=int, default=4, help="most images per request (default 4)")
    s.add_argument("--max-steps", type=int, default=100, help="most sampler steps per request (default 100)")
    s.add_argument("--max-size", type=int, default=512, help="largest width/height in pixels (default 512)")
    s.add_argument("--max-pending", type=int, default=64, help="requests queued before 503s (default 64)")
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    s.add_argument("--dtype", help="float32, float16 or bfloat16 (default: float16 on CUDA)")
    s.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    require("fastapi", "ui")
    from tld.apps.api import serve
    from tld.apps.requests import ApiConfig, token_from_env

    config = ApiConfig(
        model_name=args.model or "bundled",
        token=token_from_env(args.token),
        max_images=args.max_images,
        max_steps=args.max_steps,
        max_size=args.max_size,
        max_pending=args.max_pending,
    )
    serve(args.model, config, host=args.host, port=args.port, device=args.device, dtype=args.dtype)
    return 0

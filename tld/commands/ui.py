"""`tld ui`: the web UI (gradio) over one model; see docs/apps.md."""

from __future__ import annotations

import argparse

from tld.common import require


def register(subparsers: argparse._SubParsersAction) -> None:
    u = subparsers.add_parser(
        "ui",
        help="web UI: text to image, inpaint, outpaint, img2img in the browser",
        description="Serve the gradio web UI (needs the ui extra). Binds 127.0.0.1 unless --host is given; "
        "a public gradio.live link only with --share.",
    )
    u.add_argument("--model", help="model folder or hub repo id (default: the bundled demo model)")
    u.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    u.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    u.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    u.add_argument("--max-images", type=int, default=8, help="most images per run (default 8)")
    u.add_argument("--max-size", type=int, default=512, help="largest width/height in pixels (default 512)")
    u.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    u.add_argument("--dtype", help="float32, float16 or bfloat16 (default: float16 on CUDA)")
    u.set_defaults(func=run_ui)


def run_ui(args: argparse.Namespace) -> int:
    require("gradio", "ui")
    from tld.apps.webui import UIConfig, launch_ui
    from tld.pipeline import TLDPipeline

    pipe = TLDPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    config = UIConfig(model_name=args.model or "bundled", max_images=args.max_images, max_size=args.max_size)
    launch_ui(pipe, config, host=args.host, port=args.port, share=args.share)
    return 0

"""The `tld` command: parses arguments and hands off to the layers below.

Each area registers its own subcommands from a module in `tld/commands/` exposing
`register(subparsers)`; the handler it sets with `set_defaults(func=...)` receives the parsed
namespace and returns an exit code. Errors meant for the user are raised as `TLDError` (or
ValueError/FileNotFoundError) and printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from tld import __version__
from tld.common import DISTRIBUTION, missing_extra
from tld.errors import TLDError

# Modules under tld/commands that contribute subcommands, in the order they appear in --help.
_COMMAND_MODULES = ("info", "preprocess", "train", "generate", "eval", "recipe", "apps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tld", description="Text-to-image latent diffusion with a compact transformer denoiser."
    )
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"tld.commands.{name}").register(sub)
    return parser


def quiet_progress(args: argparse.Namespace) -> None:
    """`--no-progress` or TQDM_DISABLE=1: no bars from tld, nor from transformers and the hub."""
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")
    off = off or getattr(args, "no_progress", False) or getattr(args, "progress", True) is False
    if not off:
        return
    if hasattr(args, "no_progress"):
        args.no_progress = True
    if hasattr(args, "progress"):
        args.progress = False
    if isinstance(getattr(args, "overrides", None), list):  # the trainers: a config field
        args.overrides.append("progress=false")
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging  # its "Loading weights" bar

    disable_progress_bars()
    transformers_logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    quiet_progress(args)
    try:
        try:
            return int(args.func(args) or 0)
        except ModuleNotFoundError as exc:
            # An optional dependency of an extra that is not installed: one line naming the extra.
            extra = missing_extra(exc)
            if extra is None:
                raise
            raise extra from exc
    except (TLDError, ValueError, FileNotFoundError, FileExistsError) as exc:
        if args.debug or os.environ.get("TLD_DEBUG"):
            raise
        print(f"tld {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tld {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

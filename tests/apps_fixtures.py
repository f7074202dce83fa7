"""For the HTTP API's tests: a saved tiny model and uvicorn serving an app on 127.0.0.1 in a thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn
from pipeline_fixtures import tiny_pipeline

from tld.pipeline import TLDPipeline


def save_tiny_model(folder: Path, vae_dir: Path, clip_dir: Path) -> Path:
    """A saved tiny model folder: 16x16 pixels, sizes in multiples of 4."""
    return tiny_pipeline(vae_dir, clip_dir).save_pretrained(folder)


def load_tiny_model(folder: Path) -> TLDPipeline:
    return TLDPipeline.from_pretrained(folder, device="cpu")


class LiveServer:
    """uvicorn serving `app` on a socket bound to a free 127.0.0.1 port, in a thread."""

    def __init__(self, app):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

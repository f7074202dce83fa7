"""The HTTP API (`tld serve`) over a tiny real model: uvicorn on 127.0.0.1 in the test, real HTTP.

Happy paths, every bad input the API promises a one-line 422 for, auth on and off, the FIFO
worker, and a load test of 50 concurrent requests (all answered, identical bytes, still healthy).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the ui extra is not installed")
import httpx  # noqa: E402
from apps_fixtures import LiveServer, load_tiny_model, save_tiny_model  # noqa: E402
from pipeline_fixtures import checker_image  # noqa: E402

from tld.apps.api import create_app  # noqa: E402
from tld.apps.queue import ModelWorker, QueueFull  # noqa: E402
from tld.apps.requests import ApiConfig  # noqa: E402
from tld.pipeline import TLDPipeline  # noqa: E402
from tld.pipeline.images import read_png_metadata  # noqa: E402

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_vae_dir, tiny_clip_dir) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("api_model"), tiny_vae_dir, tiny_clip_dir)


@pytest.fixture(scope="module")
def pipe(model_dir) -> TLDPipeline:
    return load_tiny_model(model_dir)


@pytest.fixture(scope="module")
def server(pipe):
    with LiveServer(create_app(pipe, ApiConfig(model_name="tiny", max_images=4, max_steps=20))) as live:
        yield live


@pytest.fixture(scope="module")
def secured(pipe):
    with LiveServer(create_app(pipe, ApiConfig(model_name="tiny", token=TOKEN))) as live:
        yield live


def png_pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def png_upload(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_generate_png_is_the_pipeline_image_with_its_settings(server, pipe, tmp_path):
    body = {"prompt": "a red heart", "seed": 3, "steps": 4, "cfg": 3.0, "sampler": "euler"}
    r = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-tld-seeds"] == "3"
    expected = pipe("a red heart", seed=3, steps=4, cfg=3.0, sampler="euler", progress=False)[0]
    assert np.array_equal(png_pixels(r.content), np.asarray(expected))
    (tmp_path / "out.png").write_bytes(r.content)
    meta = read_png_metadata(tmp_path / "out.png")
    assert meta["prompt"] == "a red heart" and meta["seed"] == 3 and meta["steps"] == 4
    assert meta["sampler"] == "euler" and meta["model"] == "tiny"
    scheduled = httpx.post(f"{server.url}/generate", json={**body, "cfg_schedule": [[2, 6]]}, timeout=60)
    assert scheduled.status_code == 200, scheduled.text
    expected = pipe("a red heart", seed=3, steps=4, cfg=3.0, cfg_schedule="2:6", sampler="euler", progress=False)
    assert np.array_equal(png_pixels(scheduled.content), np.asarray(expected[0]))
    assert not np.array_equal(png_pixels(scheduled.content), png_pixels(r.content))


def test_generate_json_several_images_and_a_random_seed(server):
    body = {"prompt": "a cat", "n": 2, "steps": 2, "response": "json", "width": 24, "height": 16}
    r = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()
    assert len(data["images"]) == 2 and data["prompts"] == ["a cat", "a cat"]
    first = data["seeds"][0]
    assert data["seeds"] == [first, first + 1] and data["settings"]["steps"] == 2
    for encoded in data["images"]:
        assert png_pixels(base64.b64decode(encoded)).shape == (16, 24, 3)
    grid = httpx.post(f"{server.url}/generate", json={**body, "response": "png"}, timeout=60)
    assert grid.status_code == 200 and png_pixels(grid.content).shape == (16, 24 * 2 + 4, 3)


def test_inpaint_keeps_the_unmasked_pixels(server):
    image = checker_image(16)
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (0, 0, 8, 8))
    files = {"image": ("in.png", png_upload(image)), "mask": ("mask.png", png_upload(mask))}
    form = {"prompt": "a hat", "seed": "1", "steps": "3", "composite": "true"}
    r = httpx.post(f"{server.url}/inpaint", data=form, files=files, timeout=60)
    assert r.status_code == 200, r.text
    out = png_pixels(r.content)
    kept = np.asarray(mask) == 0
    assert np.array_equal(out[kept], np.asarray(image)[kept])
    assert not np.array_equal(out[~kept], np.asarray(image)[~kept])


BAD_GENERATE = {
    "empty body": None,
    "steps 0": {"prompt": "x", "steps": 0},
    "cfg -1": {"prompt": "x", "cfg": -1},
    "unknown sampler": {"prompt": "x", "sampler": "warp_drive"},
    "size not a multiple": {"prompt": "x", "width": 10},
    "n too large": {"prompt": "x", "n": 5},
    "steps over the limit": {"prompt": "x", "steps": 21},
    "size over the limit": {"prompt": "x", "height": 4096},
    "wrong type": {"prompt": "x", "steps": "many"},
    "unknown field": {"prompt": "x", "stepz": 3},
    "unknown schedule": {"prompt": "x", "schedule": "zigzag", "steps": 2},
    "bad cfg schedule": {"prompt": "x", "cfg_schedule": "2:4:1", "steps": 2},
    "not JSON": b"{not json",
}


@pytest.mark.parametrize("case", list(BAD_GENERATE))
def test_bad_generate_requests_get_a_one_line_422(server, case):
    body = BAD_GENERATE[case]
    if isinstance(body, bytes):
        r = httpx.post(f"{server.url}/generate", content=body, headers={"content-type": "application/json"})
    else:
        r = httpx.post(f"{server.url}/generate", json=body, timeout=60)
    assert r.status_code == 422, (case, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail


def test_bad_inpaint_uploads_get_a_one_line_422(server):
    image = png_upload(checker_image(16))
    cases = {
        "not an image": ({"image": ("a.png", b"hello, not a png"), "mask": ("m.png", image)}, "image"),
        "mask of the wrong size": (
            {"image": ("a.png", image), "mask": ("m.png", png_upload(Image.new("L", (8, 8), 255)))},
            "mask size",
        ),
        "missing mask": ({"image": ("a.png", image)}, "mask"),
    }
    for name, (files, word) in cases.items():
        r = httpx.post(f"{server.url}/inpaint", data={"prompt": "x", "steps": "2"}, files=files, timeout=60)
        assert r.status_code == 422, (name, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and word in detail, (name, detail)


def test_health_models_and_docs(server):
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    models = httpx.get(f"{server.url}/models").json()
    assert models["models"][0]["default_size"] == {"height": 16, "width": 16}
    assert models["models"][0]["size_multiple"] == 4 and "dpmpp_2m" in models["samplers"]
    assert models["limits"]["max_images"] == 4
    assert httpx.get(f"{server.url}/docs").status_code == 200
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/generate", "/inpaint", "/health", "/models"} <= set(paths)


def test_auth_token(secured):
    body = {"prompt": "x", "steps": 2, "seed": 0}
    wrong = {"Authorization": "Bearer s3cret-tokem"}
    assert httpx.post(f"{secured.url}/generate", json=body, timeout=60).status_code == 401
    r = httpx.post(f"{secured.url}/generate", json=body, headers=wrong, timeout=60)
    assert r.status_code == 401 and r.json()["detail"] == "missing or wrong bearer token"
    basic = {"Authorization": f"Basic {TOKEN}"}
    assert httpx.post(f"{secured.url}/generate", json=body, headers=basic, timeout=60).status_code == 401
    assert httpx.get(f"{secured.url}/models").status_code == 401
    right = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{secured.url}/generate", json=body, headers=right, timeout=60).status_code == 200
    assert httpx.get(f"{secured.url}/models", headers=right).status_code == 200
    assert httpx.get(f"{secured.url}/health").status_code == 200  # for load balancers: no token


def test_fifty_concurrent_requests_are_all_answered_identically(server):
    body = {"prompt": "a rocket", "seed": 42, "steps": 3}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(client.post("/generate", json=body) for _ in range(50)))

    done_before = httpx.get(f"{server.url}/health").json()["done"]
    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.content for r in responses}) == 1  # same seed, same bytes, whatever the load
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok" and health["pending"] == 0 and health["done"] == done_before + 50
    assert httpx.post(f"{server.url}/generate", json=body, timeout=60).content == responses[0].content


def test_worker_runs_one_job_at_a_time_and_refuses_past_its_bound():
    worker = ModelWorker(max_pending=2)
    release, running, order = threading.Event(), [], []

    def job(k: int) -> int:
        running.append(k)
        assert len(running) == 1  # never two at once
        release.wait(10)
        order.append(k)
        running.remove(k)
        return k

    first, second = worker.submit(job, 1), worker.submit(job, 2)
    with pytest.raises(QueueFull, match="limit 2"):
        worker.submit(job, 3)
    release.set()
    assert (first.result(10), second.result(10)) == (1, 2) and order == [1, 2]
    assert worker.submit(job, 4).result(10) == 4 and worker.pending == 0
    worker.close()


def test_tld_serve_command(model_dir):
    """The real command: binds 127.0.0.1, takes the token from the environment, serves the model."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "TLD_API_TOKEN": TOKEN}
    cmd = [
        sys.executable,
        "-m",
        "tld",
        "serve",
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stdout.read() if proc.stdout else ""
            )
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"prompt": "x", "steps": 2, "seed": 5}
        assert httpx.post(f"{url}/generate", json=body, timeout=60).status_code == 401
        r = httpx.post(f"{url}/generate", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        assert r.status_code == 200 and r.headers["x-tld-seeds"] == "5"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tld_serve_without_a_model_is_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "tld", "serve", "--model", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "model folder not found" in r.stderr


@pytest.mark.parametrize("command, module", [("ui", "gradio"), ("serve", "fastapi"), ("serve", "uvicorn")])
def test_missing_ui_extra_is_one_line(monkeypatch, capsys, command, module):
    from tld.cli import main

    monkeypatch.setitem(sys.modules, module, None)  # import of it fails as if not installed
    monkeypatch.delitem(sys.modules, "tld.apps.api", raising=False)
    assert main([command, "--model", "unused"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"'{module}'" in err and "tld-diffusion[ui]" in err, err


def test_apps_bind_localhost_unless_told():
    from tld.cli import build_parser

    ui, serve = (build_parser().parse_args([command]) for command in ("ui", "serve"))
    assert ui.host == serve.host == "127.0.0.1" and ui.model is serve.model is None
    assert ui.share is False and serve.token is None  # no public link, no token unless given


def test_one_png_writer_for_files_and_responses(pipe, tmp_path):
    """tld generate, the API and the web UI write through output_images + save_png: the same bytes to a
    file, a file object or a response, and the grid metadata listing every prompt and seed."""
    from tld.pipeline.images import output_images, png_bytes, save_png

    out = pipe(["a cat", "a dog"], seed=4, steps=2, progress=False)
    grid, grid_meta = output_images(out, "tiny", separate=False)[0]
    assert grid_meta["prompts"] == ["a cat", "a dog"] and grid_meta["seeds"] == [4, 5]
    assert grid_meta["model"] == "tiny" and grid.size == (16 * 2 + 4, 16)
    pairs = output_images(out, "tiny", separate=True)
    assert [(m["prompt"], m["seed"]) for _, m in pairs] == [("a cat", 4), ("a dog", 5)]
    buf = io.BytesIO()
    assert save_png(grid, buf, grid_meta) is buf
    on_disk = save_png(grid, tmp_path / "grid.png", grid_meta).read_bytes()
    assert buf.getvalue() == on_disk == png_bytes(grid, grid_meta)
    assert read_png_metadata(tmp_path / "grid.png") == grid_meta

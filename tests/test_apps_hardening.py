"""Issue 29's findings against `tld serve`, each as a request that must be refused before any work:
bounded and finite numbers, strict types, unknown fields, short error details, capped bodies with the
token checked first, upload sizes read from the header, Host/Origin checks, abandoned requests that
leave the queue, and the 503 of a full queue."""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the ui extra is not installed")
import httpx  # noqa: E402
from apps_fixtures import LiveServer, load_tiny_model, save_tiny_model  # noqa: E402
from pipeline_fixtures import checker_image  # noqa: E402

from tld.apps.api import create_app  # noqa: E402
from tld.apps.requests import ApiConfig  # noqa: E402

TOKEN = "s3cret-token"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, tiny_vae_dir, tiny_clip_dir):
    return load_tiny_model(save_tiny_model(tmp_path_factory.mktemp("model"), tiny_vae_dir, tiny_clip_dir))


@pytest.fixture(scope="module")
def server(pipe):
    with LiveServer(create_app(pipe, ApiConfig(model_name="tiny", max_steps=20))) as live:
        yield live


@pytest.fixture(scope="module")
def secured(pipe):
    with LiveServer(create_app(pipe, ApiConfig(model_name="tiny", token=TOKEN))) as live:
        yield live


def png_upload(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (1-bit grey) and whose pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def inpaint(url: str, fields: dict[str, str], image: bytes | None = None, mask: bytes | None = None):
    picture = image or png_upload(checker_image(16))
    files = {
        "image": ("in.png", picture),
        "mask": ("m.png", mask or png_upload(Image.new("L", (16, 16), 255))),
    }
    return httpx.post(f"{url}/inpaint", data={"prompt": "x", "steps": "2", **fields}, files=files, timeout=60)


def one_line_422(r: httpx.Response, word: str = "") -> str:
    assert r.status_code == 422, r.text[:300]
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) <= 300, detail[:400]
    assert word in detail, detail
    return detail


@pytest.mark.parametrize("feather", ["100", "1e9", "nan", "inf", "-1"])
def test_inpaint_feather_is_bounded_and_finite(server, feather):
    # Before: feather=1e9 grew memory until the OOM killer (100 took 200 and a 600x600 blur); nan a 500.
    one_line_422(inpaint(server.url, {"feather": feather}), "feather")


@pytest.mark.parametrize("cfg", [b"NaN", b"Infinity", b"-Infinity", b"1e308", b"1e999"])
@pytest.mark.parametrize("response", ["png", "json"])
def test_cfg_must_be_finite_and_bounded(server, cfg, response):
    # Before: 200 with a blank image, or a 500 (NaN with response json).
    body = b'{"prompt": "x", "steps": 2, "response": "%s", "cfg": %s}' % (response.encode(), cfg)
    one_line_422(httpx.post(f"{server.url}/generate", content=body, headers=JSON, timeout=60), "cfg")


@pytest.mark.parametrize(
    "field", [{"steps": "10"}, {"steps": True}, {"n": True}, {"seed": 1.5}, {"width": "16"}, {"cfg": "7"}]
)
def test_generate_types_are_strict(server, field):
    # Before: "steps": "10", "steps": true and "n": true were accepted (documented as a 422).
    one_line_422(httpx.post(f"{server.url}/generate", json={"prompt": "x", **field}, timeout=60))


def test_inpaint_refuses_unknown_fields_and_bad_form_values(server):
    # Before: unknown fields were ignored (a 200).
    one_line_422(inpaint(server.url, {"stepz": "3"}), "stepz")
    one_line_422(inpaint(server.url, {"n": "true"}), "n")
    one_line_422(inpaint(server.url, {"cfg": "nan"}), "cfg")


def test_prompts_are_valid_bounded_text(server):
    # Before: a lone surrogate was a 500 from the tokenizer; a 50 MB prompt came back as PNG metadata.
    body = b'{"prompt": "a \\ud800 cat", "steps": 2}'
    one_line_422(httpx.post(f"{server.url}/generate", content=body, headers=JSON, timeout=60))
    long = {"prompt": "x" * 5000, "steps": 2}
    one_line_422(httpx.post(f"{server.url}/generate", json=long, timeout=60), "prompt")
    negative = {"prompt": "x", "negative_prompt": "y" * 5000, "steps": 2}
    one_line_422(httpx.post(f"{server.url}/generate", json=negative, timeout=60), "negative_prompt")


def test_cfg_schedule_is_bounded_and_errors_do_not_echo_it(server):
    # Before: any length was parsed, and an invalid one's 422 echoed all of it back.
    for schedule in ("2:4:1," * 1500, [[2.0, 4.0]] * 500, "2:1e9", "2:inf", [[1.0, 1e300]]):
        body = {"prompt": "x", "steps": 2, "cfg_schedule": schedule}
        one_line_422(httpx.post(f"{server.url}/generate", json=body, timeout=60), "cfg_schedule")
    infinite = b'{"prompt": "x", "steps": 2, "cfg_schedule": [[1e400, 2]]}'
    one_line_422(httpx.post(f"{server.url}/generate", content=infinite, headers=JSON, timeout=60))
    ok = {"prompt": "x", "steps": 2, "cfg_schedule": "2:4,0.5:2"}
    assert httpx.post(f"{server.url}/generate", json=ok, timeout=60).status_code == 200


def test_bodies_over_the_cap_are_413(server, pipe):
    # Before: no cap; a 100 kB prompt was sampled and copied into the PNG.
    r = httpx.post(f"{server.url}/generate", json={"prompt": "x" * 100_000, "steps": 2}, timeout=60)
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the cap is counted as the body streams in
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    r = httpx.post(f"{server.url}/generate", content=chunks(), headers=JSON, timeout=60)
    assert r.status_code == 413, r.text[:200]
    big = png_upload(Image.effect_noise((1800, 1800), 100))  # about 3 MB, over a 1 MB upload cap
    with LiveServer(create_app(pipe, ApiConfig(max_upload_bytes=1024 * 1024))) as small:
        assert inpaint(small.url, {}, image=big).status_code == 413


def raw_request(url: str, head: str, body: bytes = b"") -> bytes:
    """Send a request's headers and the start of its body; what the server answers (before it has
    the rest of a body that will never come), or b'' if it waits for it."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""


def test_the_token_and_the_size_are_checked_before_the_body_is_read(secured):
    # Before: the server read a whole 1 GB body (12.9 s, 4 GB RSS) before its 401; here it waited forever.
    port = secured.url.rsplit(":", 1)[1]
    head = f"POST /generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    answer = raw_request(secured.url, head + "Content-Length: 1000000000\r\n", b'{"prompt": "')
    assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
    authed = head + f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000000000\r\n"
    assert raw_request(secured.url, authed, b'{"prompt": "').startswith(b"HTTP/1.1 413")


def test_upload_sizes_come_from_the_header_before_decoding(server):
    # Before: a 144-Mpx upload was decoded (830 MB) before the 512-px limit; a 400-Mpx one was a 500.
    one_line_422(inpaint(server.url, {}, image=png_header_only(4000, 3000)), "at most 512 pixels")
    one_line_422(inpaint(server.url, {}, image=png_header_only(20000, 20000)), "too many pixels")
    one_line_422(inpaint(server.url, {}, mask=png_header_only(16, 9000)), "mask")


def test_host_and_origin_are_checked(server, pipe):
    # Before: any Host and any Origin got answers (a web page could spend the server's compute).
    body = {"prompt": "x", "steps": 2}
    for headers in ({"host": "evil.example"}, {"host": "evil.example:80"}, {"origin": "http://evil.example"}):
        r = httpx.post(f"{server.url}/generate", json=body, headers=headers, timeout=60)
        assert r.status_code == 403 and "not allowed" in r.json()["detail"], (headers, r.text)
    same = httpx.post(f"{server.url}/generate", json=body, headers={"origin": server.url}, timeout=60)
    assert same.status_code == 200  # the API's own pages (/docs) call it with their Origin
    for host in ("localhost", "[::1]:8000"):
        assert httpx.get(f"{server.url}/health", headers={"host": host}).status_code == 200
    config = ApiConfig(allowed_hosts=("api.example",), allowed_origins=("https://app.example",))
    with LiveServer(create_app(pipe, config)) as other:
        assert httpx.get(f"{other.url}/health", headers={"host": "api.example"}).status_code == 200
        assert httpx.get(f"{other.url}/health").status_code == 403  # 127.0.0.1 not listed there
        headers = {"host": "api.example", "origin": "https://app.example"}
        assert httpx.post(f"{other.url}/generate", json=body, headers=headers, timeout=60).status_code == 200


def wait_for(predicate, what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_full_queue_is_503_and_abandoned_requests_leave_it(pipe):
    """The worker is held busy; one request waits and its client gives up; the next one meanwhile is a
    503, and once the client has gone its slot is free again and its job is never run."""
    app = create_app(pipe, ApiConfig(model_name="tiny", max_pending=2))
    worker, release = app.state.worker, threading.Event()
    with LiveServer(app) as live:
        blocker = worker.submit(release.wait, 60)
        health = lambda: httpx.get(f"{live.url}/health", timeout=10).json()  # noqa: E731
        body = {"prompt": "x", "steps": 2, "seed": 1}

        def abandon() -> None:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{live.url}/generate", json=body, timeout=1.5)

        quitter = threading.Thread(target=abandon)
        quitter.start()
        wait_for(lambda: health()["pending"] == 2, "the abandoned request was never queued")
        full = httpx.post(f"{live.url}/generate", json=body, timeout=60)
        assert full.status_code == 503 and full.headers["retry-after"] == "5", full.text
        assert "busy" in full.json()["detail"]
        quitter.join(30)
        # Before: the abandoned request kept its slot until it had run (minutes, for 64 of them).
        wait_for(lambda: health()["pending"] == 1, "the abandoned request kept its queue slot")
        assert health()["dropped"] == 1
        release.set()
        blocker.result(30)
        r = httpx.post(f"{live.url}/generate", json=body, timeout=60)
        assert r.status_code == 200
        after = health()
        assert (after["pending"], after["done"], after["dropped"]) == (0, 2, 1)  # the blocker and this one


def test_models_lists_the_limits(server):
    limits = httpx.get(f"{server.url}/models").json()["limits"]
    assert {"max_prompt_chars", "max_feather", "max_cfg", "max_json_bytes", "max_upload_bytes"} <= set(limits)


def test_api_config_refuses_bad_limits():
    from tld.errors import TLDError

    for bad in (
        {"max_feather": float("nan")},
        {"max_cfg": 0},
        {"max_json_bytes": 1.5},
        {"allowed_hosts": ()},
    ):
        with pytest.raises(TLDError):
            ApiConfig(**bad)

"""Load figures for `tld serve` on 127.0.0.1: /health latency idle and under a mixed burst (good
requests, clients that give up, oversize and unauthenticated bodies), how the queue drains, and what an
unauthenticated 1 GB upload costs. Prints one table.

    python bench/apps_load.py                      # the bundled model, CPU
    python bench/apps_load.py --model DIR --good 32 --abandoned 32 --steps 8

The server runs in this process (uvicorn in a thread), so RSS is server + client. Figures depend on
the machine and its load; compare runs made one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import socket
import statistics
import threading
import time
from typing import Any

import httpx
import uvicorn

from tld.apps.api import create_app
from tld.apps.requests import ApiConfig
from tld.pipeline import TLDPipeline

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
    return f"{statistics.median(values) * 1000:.1f} / {p95 * 1000:.1f} / {values[-1] * 1000:.1f}"


async def burst(url: str, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"good": [], "abandoned": [], "oversize": [], "anonymous": [], "health": []}
    stop = asyncio.Event()
    body = {"prompt": "a red heart", "steps": args.steps}
    big = b'{"prompt": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    json_type = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=AUTH) as client:

        async def good(k: int) -> None:
            out["good"].append((await client.post("/generate", json={**body, "seed": k})).status_code)

        async def abandoned(k: int) -> None:
            try:
                r = await client.post("/generate", json={**body, "seed": k}, timeout=args.give_up)
                out["abandoned"].append(r.status_code)
            except httpx.TimeoutException:
                out["abandoned"].append("gave up")

        async def refused(kind: str, sender: httpx.AsyncClient) -> None:
            try:
                r = await sender.post("/generate", content=big, headers=json_type)
                out[kind].append(r.status_code)
            except httpx.TransportError:  # closed before the client could read an answer
                out[kind].append("reset")

        async def oversize() -> None:
            await refused("oversize", client)

        async def anonymous() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=600) as bare:
                await refused("anonymous", bare)

        async def poll() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=600) as probe:
                while not stop.is_set():
                    start = time.perf_counter()
                    await probe.get("/health")
                    out["health"].append(time.perf_counter() - start)
                    await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll())
        start = time.perf_counter()
        # First the clients that give up (they fill the queue), then, once they have gone, the rest.
        await asyncio.gather(*(abandoned(k) for k in range(args.abandoned)))
        await asyncio.sleep(0.2)
        out["pending_after_abandoned"] = (await client.get("/health")).json()["pending"]
        jobs = [good(k) for k in range(args.good)]
        jobs += [oversize() for _ in range(args.oversize)] + [anonymous() for _ in range(args.oversize)]
        await asyncio.gather(*jobs)
        out["seconds"] = time.perf_counter() - start
        stop.set()
        await poller
    return out


def drain(url: str, body: dict[str, Any]) -> tuple[int, str, float]:
    """Right after the burst: `pending`, a new request's status, and seconds until the queue is empty."""
    pending = httpx.get(f"{url}/health", timeout=60).json()["pending"]
    probe = httpx.post(f"{url}/generate", json=body, headers=AUTH, timeout=600).status_code
    start = time.perf_counter()
    while httpx.get(f"{url}/health", timeout=60).json()["pending"]:
        time.sleep(0.1)
    return pending, str(probe), time.perf_counter() - start


def huge_upload(url: str, limit_mb: int) -> str:
    """Send an unauthenticated POST announcing 1 GB, 1 MB at a time, until the server answers."""
    host, port = url.removeprefix("http://").split(":")
    head = f"POST /generate HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {2**30}\r\n\r\n"
    chunk = b"x" * 2**20
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        start, sent = time.perf_counter(), 0
        while sent < limit_mb:
            try:
                answer = sock.recv(256)
                return (
                    f"{answer.split(b' ')[1].decode()} after {sent} MB, {time.perf_counter() - start:.2f} s"
                )
            except BlockingIOError:
                pass
            except (ConnectionResetError, IndexError):
                return f"connection closed after {sent} MB"
            try:
                sock.settimeout(30)
                sock.sendall(chunk)
                sock.setblocking(False)
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                return f"connection closed after {sent} MB"
        return f"no answer after {sent} MB, {time.perf_counter() - start:.2f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--good", type=int, default=16)
    p.add_argument("--abandoned", type=int, default=32)
    p.add_argument("--oversize", type=int, default=4, help="oversize bodies, and as many unauthenticated")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--give-up", type=float, default=0.5, help="seconds an abandoning client waits")
    p.add_argument("--max-pending", type=int, default=16)
    p.add_argument("--huge-mb", type=int, default=128, help="most MB of the 1 GB upload to send")
    args = p.parse_args()
    pipe = TLDPipeline.from_pretrained(args.model, device="cpu")
    app = create_app(pipe, ApiConfig(model_name="bench", token=TOKEN, max_pending=args.max_pending))
    url, server, thread = serve(app)
    body = {"prompt": "warm up", "steps": args.steps}
    httpx.post(f"{url}/generate", json=body, headers=AUTH, timeout=600)
    idle = []
    with httpx.Client(base_url=url) as client:
        for _ in range(50):
            start = time.perf_counter()
            client.get("/health")
            idle.append(time.perf_counter() - start)
    rss0 = rss_mb()
    result = asyncio.run(burst(url, args))
    pending, probe, seconds = drain(url, body)
    rss1 = rss_mb()
    upload = huge_upload(url, args.huge_mb)
    rows = [
        ("/health idle, p50 / p95 / max ms", ms(idle)),
        (
            "/health during the burst, p50 / p95 / max ms",
            f"{ms(result['health'])} ({len(result['health'])} polls)",
        ),
        ("burst wall time, s", f"{result['seconds']:.1f}"),
    ]
    for kind in ("good", "abandoned", "oversize", "anonymous"):
        counts = {str(k): result[kind].count(k) for k in sorted(set(result[kind]), key=str)}
        rows.append((f"{kind} requests ({len(result[kind])}): statuses", str(counts)))
    rows += [
        ("pending 0.2 s after the abandoning clients left", str(result["pending_after_abandoned"])),
        ("pending right after the burst", str(pending)),
        ("a new request right after the burst", probe),
        ("queue empty after, s", f"{seconds:.1f}"),
        ("RSS before / after the burst, MB", f"{rss0:.0f} / {rss1:.0f}"),
        ("unauthenticated 1 GB upload", upload),
        ("RSS after the upload / peak, MB", f"{rss_mb():.0f} / {peak_mb():.0f}"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'figure':<{width}} | value |\n| {'-' * width} | --- |")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    server.should_exit = True
    thread.join(timeout=30)


if __name__ == "__main__":
    main()

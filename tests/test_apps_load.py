"""A small bounded load test of `tld serve` on 127.0.0.1: concurrent good requests, clients that give
up, oversize and unauthenticated bodies, all at once, while /health is polled throughout.

Every good request is answered (200, or 503 when the queue is full), every oversize body is a 413 and
every unauthenticated one a 401, /health answers every poll, the queue drains to empty, and the
process's memory grows by less than a bound. bench/apps_load.py records the same figures at scale.
"""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("fastapi", reason="the ui extra is not installed")
import httpx  # noqa: E402
from apps_fixtures import LiveServer, load_tiny_model, save_tiny_model  # noqa: E402

from tld.apps.api import create_app  # noqa: E402
from tld.apps.requests import ApiConfig  # noqa: E402

TOKEN = "load-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


async def mixed_load(url: str) -> dict[str, list]:
    results: dict[str, list] = {"good": [], "abandoned": [], "oversize": [], "anonymous": [], "health": []}
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=AUTH) as client:

        async def good(k: int) -> None:
            r = await client.post("/generate", json={"prompt": "a cat", "steps": 2, "seed": k})
            results["good"].append(r.status_code)

        async def abandoned(k: int) -> None:
            try:
                r = await client.post(
                    "/generate", json={"prompt": "a dog", "steps": 2, "seed": k}, timeout=0.05
                )
                results["abandoned"].append(r.status_code)
            except httpx.TimeoutException:
                results["abandoned"].append("gave up")

        async def oversize() -> None:
            r = await client.post(
                "/generate", content=b"x" * 300_000, headers={"content-type": "application/json"}
            )
            results["oversize"].append(r.status_code)

        async def anonymous() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=60) as bare:
                r = await bare.post(
                    "/generate", content=b"{" * 200_000, headers={"content-type": "application/json"}
                )
            results["anonymous"].append(r.status_code)

        async def poll() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as probe:
                while not stop.is_set():
                    results["health"].append((await probe.get("/health")).status_code)
                    await asyncio.sleep(0.05)

        poller = asyncio.create_task(poll())
        jobs = [good(k) for k in range(16)] + [abandoned(k) for k in range(8)]
        jobs += [oversize() for _ in range(4)] + [anonymous() for _ in range(4)]
        await asyncio.gather(*jobs)
        stop.set()
        await poller
    return results


def test_mixed_load_keeps_the_server_healthy_and_bounded(tmp_path, tiny_vae_dir, tiny_clip_dir):
    pipe = load_tiny_model(save_tiny_model(tmp_path / "model", tiny_vae_dir, tiny_clip_dir))
    app = create_app(pipe, ApiConfig(model_name="tiny", token=TOKEN, max_pending=8))
    with LiveServer(app) as live:
        httpx.post(f"{live.url}/generate", json={"prompt": "warm up", "steps": 2}, headers=AUTH, timeout=60)
        before = rss_mb()
        results = asyncio.run(mixed_load(live.url))
        grown = rss_mb() - before
        # How many of the 16 find a free slot depends on the machine's speed (8 slots, abandoned
        # requests hold theirs until the disconnect is seen): every one is answered, some served.
        assert set(results["good"]) <= {200, 503} and 200 in results["good"], results["good"]
        assert set(results["abandoned"]) <= {200, 503, "gave up"}, results["abandoned"]
        assert results["oversize"] == [413] * 4 and results["anonymous"] == [401] * 4
        assert results["health"] and set(results["health"]) == {200}
        health = httpx.get(f"{live.url}/health", timeout=10).json()
        for _ in range(400):  # what is still queued finishes (a bound, not a timing)
            if health["pending"] == 0:
                break
            time.sleep(0.05)
            health = httpx.get(f"{live.url}/health", timeout=10).json()
        assert health["pending"] == 0, health
        after = httpx.post(
            f"{live.url}/generate", json={"prompt": "after", "steps": 2}, headers=AUTH, timeout=60
        )
        assert after.status_code == 200  # no slot is left held by a client that went away
        assert grown < 300, f"RSS grew by {grown:.0f} MB"

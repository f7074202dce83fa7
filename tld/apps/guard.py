"""The API's front door, an ASGI middleware that decides on the headers alone, before any body is read.

In order: the Host header must name an allowed host (a web page on another site cannot reach a
loopback server through DNS rebinding); a browser's Origin must be the server's own or an allowed one
(a page elsewhere cannot POST a form to it); the bearer token (constant-time comparison) unless the path
is open; the body must fit its path's cap: a larger Content-Length is a 413 at once, and a body without
one is counted as it streams in and cut off with a 413 past the cap. A refused body is not kept: at
most a few MB of it are read and dropped (`linger`) so the client can read the answer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from tld.apps.requests import ApiConfig

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths that never need the token: the health probe and the API's own documentation.
# How much of a refused body is read and dropped before closing (see `linger`).
LINGER_BYTES = 4 * 1024 * 1024
LINGER_SECONDS = 2.0
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
UPLOAD_PATHS = frozenset({"/inpaint"})


def host_name(host: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1', '[::1]:80' -> '::1', 'LocalHost' -> 'localhost'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestGuard:
    """Host and Origin checks, the bearer token and the body caps of `config`, in front of `app`."""

    def __init__(self, app: ASGIApp, config: ApiConfig):
        self.app = app
        self.config = config
        self.token = config.token.encode() if config.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            status, detail, extra = refusal
            await reply(send, receive, status, detail, extra)
            return
        await self.app(scope, CappedBody(receive, self.cap(scope)), send)

    def cap(self, scope: Scope) -> int:
        """The most body bytes a request to this path may send."""
        return (
            self.config.max_upload_bytes if scope.get("path") in UPLOAD_PATHS else self.config.max_json_bytes
        )

    def refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, dict[str, str]] | None:
        """(status, detail, headers) of the answer that stops this request, or None to let it in."""
        host = headers.get("host", "")
        allowed = self.config.allowed_hosts
        if "*" not in allowed and host_name(host) not in allowed:
            return 403, f"host {host[:80]!r} is not allowed (tld serve --allowed-host)", {}
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin.strip().lower().rstrip("/"), host, scope):
            return 403, f"origin {origin[:80]!r} is not allowed (tld serve --allowed-origin)", {}
        if self.token is not None and scope.get("path") not in OPEN_PATHS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            # compare_digest runs the whole comparison whatever the first differing byte is.
            ok = hmac.compare_digest(given.strip().encode("latin-1"), self.token)
            if not (ok and scheme.lower() == "bearer"):
                return 401, "missing or wrong bearer token", {"www-authenticate": "Bearer"}
        length = headers.get("content-length", "0").strip() or "0"
        cap = self.cap(scope)
        if not length.isdigit():
            return 400, "Content-Length must be a number of bytes", {}
        if int(length) > cap:
            return 413, f"request body over this server's limit of {cap} bytes", {}
        return None

    def origin_allowed(self, origin: str, host: str, scope: Scope) -> bool:
        allowed = self.config.allowed_origins
        same = origin == f"{scope.get('scheme', 'http')}://{host.strip().lower()}"
        return same or "*" in allowed or origin in allowed


class CappedBody:
    """`receive` that raises a 413 (and closes the connection) once more than `cap` body bytes arrived."""

    def __init__(self, receive: Receive, cap: int):
        self.receive, self.cap, self.seen = receive, cap, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.cap:
                if message.get("more_body", False):
                    await linger(self.receive)
                detail = f"request body over this server's limit of {self.cap} bytes"
                raise HTTPException(413, detail, headers={"connection": "close"})
        return message


async def linger(receive: Receive) -> None:
    """Read and drop a little more of a refused body (at most LINGER_BYTES, LINGER_SECONDS) before the
    connection closes, so a client still sending a modest body can read the answer instead of a
    connection reset (as nginx's lingering close); nothing is kept."""
    deadline = time.monotonic() + LINGER_SECONDS
    dropped = 0
    while dropped <= LINGER_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), timeout=left)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        dropped += len(message.get("body", b""))


async def reply(send: Send, receive: Receive, status: int, detail: str, headers: dict[str, str]) -> None:
    """The refusal, its headers first; then a little of the unread body is dropped (`linger`) before
    the last part, after which the server closes the connection rather than read the rest."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await linger(receive)
    await send({"type": "http.response.body", "body": body})

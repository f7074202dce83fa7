"""One worker thread that owns the model: requests wait in arrival order and run one batch at a time.

A request whose client has gone is dropped from the queue (`run_unless`), so abandoned requests do not
hold the slots that new ones need.

A request's images are one batch; requests are not merged into bigger batches. The reason is
reproducibility: per-row seeded noise makes an image independent of its batch in exact arithmetic,
but a matrix product over a batch of 2 is not bit-identical to one over a batch of 1 (measured on the
`small` preset: pixels differ by 1/255), so merging would make "same seed, same bytes" depend on load.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from tld.errors import TLDError, check_int

T = TypeVar("T")


class QueueFull(TLDError):
    """More requests are waiting than the server accepts; the client should retry later."""


class ModelWorker:
    """Runs callables on a single thread, FIFO, with at most `max_pending` waiting or running."""

    def __init__(self, max_pending: int = 64):
        self.max_pending = check_int(max_pending, "max_pending", 1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tld-model")
        self._lock = threading.Lock()
        self._pending = 0
        self.completed = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Requests waiting or running now."""
        return self._pending

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; raises QueueFull instead of queueing past `max_pending`."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise QueueFull(
                    f"server busy: {self._pending} requests queued (limit {self.max_pending}), retry later"
                )
            self._pending += 1
        future = self._executor.submit(fn, *args, **kwargs)
        future.add_done_callback(self._done)
        return future

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`submit`, awaited without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    async def run_unless(
        self, gone: Callable[[], Awaitable[Any]], fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T | None:
        """`run`, but None as soon as the awaitable `gone()` finishes first (the client left): a job
        still queued is dropped and frees its slot at once; a running one finishes unread."""
        future = self.submit(fn, *args, **kwargs)
        result = asyncio.wrap_future(future)
        watcher = asyncio.ensure_future(gone())
        try:
            await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            future.cancel()
            raise
        finally:
            watcher.cancel()
        if result.done():
            return result.result()
        future.cancel()
        result.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody reads it
        return None

    def _done(self, future: Future) -> None:
        with self._lock:
            self._pending -= 1
            if future.cancelled():
                self.dropped += 1
            else:
                self.completed += 1

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

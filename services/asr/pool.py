"""The replica's decode thread(s), shared by every session.

Whisper decodes run off the event loop (CTranslate2 releases the GIL), on a small
executor: with 2 cores shared with the LLM and TTS, one decode at a time is the budget.
`busy` counts decodes really in flight (queued or running in a thread), which is what
the partial-transcript gate needs: a partial is only started when nothing else decodes,
so a final never waits behind more than one partial.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DecodePool:
    def __init__(self, workers: int = 1) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="asr-decode"
        )
        self._in_flight = 0
        self._pending: set[concurrent.futures.Future[Any]] = set()

    @property
    def busy(self) -> bool:
        return self._in_flight > 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Queue ``fn``; cancelling the returned future only helps while it is queued."""
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        inner = self._executor.submit(fn)
        self._pending.add(inner)

        def done(finished: concurrent.futures.Future[T]) -> None:
            # Runs in the decode thread (or here, when cancelled while queued).
            loop.call_soon_threadsafe(self._finished, finished)

        inner.add_done_callback(done)
        return asyncio.wrap_future(inner, loop=loop)

    def _finished(self, finished: concurrent.futures.Future[Any]) -> None:
        self._in_flight -= 1
        self._pending.discard(finished)

    async def wait_idle(self) -> None:
        """Return once every decode submitted so far has finished (also abandoned ones)."""
        pending = [asyncio.wrap_future(f) for f in self._pending if not f.done()]
        if pending:
            await asyncio.wait(pending)
        # Let the threads' completion callbacks run on this loop.
        await asyncio.sleep(0)

    async def aclose(self) -> None:
        """Drop queued decodes and wait for the running one (the model must outlive it)."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

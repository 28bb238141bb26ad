"""Hand generated chunks from a native generation thread to the event loop.

The engine calls back on its own thread once per chunk. The callback never touches
loop state directly: it schedules `TokenStream._push` with ``call_soon_threadsafe``
and returns at once, so generation never waits for the loop and the loop never
waits for generation.

Overflow policy: the buffer holds at most ``maxsize`` events. When it is full and a
text piece arrives while the last buffered event is text too, the two are merged,
so nothing is lost and memory stays bounded (by ``max_tokens``); the merge is
counted. In practice the loop publishes far faster than 2 cores generate, so the
buffer rarely holds more than one piece.

Stopping: `stop()` (any thread) makes the next callback return ``True``, which is how
xllamacpp lets a caller end a stream early; generation stops at the next token. A
prompt still being evaluated is not interruptible: it stops when its first token
comes, so the loop side stops *consuming* at once and publishes nothing more.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.llm.chunks import ChunkEvent, TextPiece


@dataclass(frozen=True)
class StreamClosed:
    """The engine returned: no more events will come."""


StreamEvent = ChunkEvent | StreamClosed


class TokenStream:
    """One generation's events, from the engine thread to one consuming task."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        maxsize: int = 64,
        on_coalesce: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._maxsize = maxsize
        self._items: deque[StreamEvent] = deque()
        self._ready = asyncio.Event()
        self._stop = threading.Event()
        self._on_coalesce = on_coalesce
        self._on_stop: list[Callable[[], object]] = []

    # ---------------------------------------------------------------- engine thread

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def offer(self, events: Sequence[StreamEvent]) -> bool:
        """Queue ``events`` for the loop; ``False`` means stop generating."""
        if self._stop.is_set():
            return False
        if events:
            try:
                self._loop.call_soon_threadsafe(self._push, tuple(events))
            except RuntimeError:  # the loop is closed: nobody will ever read this
                self._stop.set()
                return False
        return True

    def close(self, last: Sequence[ChunkEvent] = ()) -> None:
        """The engine returned (``last``: a failure it raised); wake the consumer."""
        try:
            self._loop.call_soon_threadsafe(self._push, (*last, StreamClosed()))
        except RuntimeError:
            pass  # the loop is gone with its consumer

    # ---------------------------------------------------------------- any thread

    def stop(self) -> None:
        """Ask the engine to stop at its next chunk; idempotent, never blocks."""
        if self._stop.is_set():
            return
        self._stop.set()
        for callback in self._on_stop:
            try:
                self._loop.call_soon_threadsafe(callback)
            except RuntimeError:
                pass  # the loop is gone: so is what the callback would stop

    def add_stop_callback(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` on the loop once `stop()` is called (a remote stream closes
        its connection at once instead of waiting for its next chunk). Loop thread only."""
        if self._stop.is_set():
            self._loop.call_soon(callback)
        else:
            self._on_stop.append(callback)

    # ---------------------------------------------------------------- event loop

    def _push(self, events: tuple[StreamEvent, ...]) -> None:
        for event in events:
            last = self._items[-1] if self._items else None
            if (
                len(self._items) >= self._maxsize
                and isinstance(event, TextPiece)
                and isinstance(last, TextPiece)
            ):
                self._items[-1] = TextPiece(last.text + event.text)
                if self._on_coalesce is not None:
                    self._on_coalesce()
            else:
                self._items.append(event)
        self._ready.set()

    async def next(self) -> StreamEvent:
        """The next event; cancelling is safe (nothing is consumed)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

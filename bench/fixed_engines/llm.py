"""Fixed-delay LLM: ``LlmBegin``, deltas at a fixed rate after a fixed TTFT, ``LlmEnd``.

Each turn runs in its own task so that a cancel (barge-in) stops it at once, as the
real service does; a newer turn replaces an unfinished older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.fixed_engines.settings import FixedSettings
from shared.messages import (
    LlmBegin,
    LlmClose,
    LlmDelta,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    Message,
    ServiceName,
    WireModel,
)
from shared.worker import Publish


def reply_pieces(tokens: int) -> list[str]:
    """The canned answer, one piece per token (short words, like a real tokenizer's)."""
    words = ("sure", " here", " is", " a", " short", " fixed", " answer", " for", " you", ".")
    return [words[i % len(words)] for i in range(tokens)]


class FixedLlmSession:
    def __init__(self, sid: str, publish: Publish, settings: FixedSettings) -> None:
        self.sid = sid
        self._publish = publish
        self._settings = settings
        self._turn: tuple[int, asyncio.Task[None]] | None = None

    async def handle(self, message: Message) -> None:
        match message:
            case LlmTurn(turn=turn):
                self.cancel(turn - 1)
                task = asyncio.create_task(self._answer(turn), name=f"fixed-llm-{self.sid}")
                self._turn = (turn, task)
            case LlmClose():
                # Like the real service: a running answer may finish before the close.
                if self._turn is not None:
                    await asyncio.wait([self._turn[1]], timeout=30)
            case _:
                pass

    def cancel(self, turn: int) -> None:
        if self._turn is not None and self._turn[0] <= turn:
            self._turn[1].cancel()
            self._turn = None

    async def aclose(self) -> None:
        if self._turn is not None:
            task = self._turn[1]
            self._turn = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _answer(self, turn: int) -> None:
        s = self._settings
        started = time.monotonic()
        await self._publish(LlmBegin(sid=self.sid, turn=turn))
        pieces = reply_pieces(s.llm_tokens)
        first_at = started + s.llm_ttft_ms / 1000
        for seq, text in enumerate(pieces):
            # Absolute deadlines: publishing time does not stretch the configured rate.
            due = first_at + seq / s.llm_tokens_per_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self._publish(LlmDelta(sid=self.sid, turn=turn, seq=seq, text=text))
        await self._publish(
            LlmEnd(
                sid=self.sid,
                turn=turn,
                text="".join(pieces),
                ttft_ms=s.llm_ttft_ms,
                tokens=len(pieces),
            )
        )


class FixedLlmEngine:
    service = ServiceName.LLM
    open_types: tuple[type[WireModel], ...] = (LlmOpen,)
    close_types: tuple[type[WireModel], ...] = (LlmClose,)

    def __init__(self, settings: FixedSettings) -> None:
        self.settings = settings

    def load(self) -> None:
        """No model."""

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return ()

    async def open_session(self, message: Message, publish: Publish) -> FixedLlmSession:
        if not isinstance(message, LlmOpen):
            raise TypeError(f"LLM sessions open with llm.open, not {message.type}")
        return FixedLlmSession(message.sid, publish, self.settings)

    async def aclose(self) -> None:
        """Nothing to release."""

"""Fixed-delay TTS: first audio a fixed time after a turn's first text, then real time.

Per turn: `TtsBegin` on the first text, `TtsSegment` and the first `TtsAudio` chunk
``tts_ttfb_ms`` later, then one chunk every ``tts_chunk_ms`` while the text received
so far is owed audio (``tts_ms_per_char`` per character), `TtsEnd` once the final
text's audio is out. The audio is silence: its content costs nothing to produce and
the pipeline treats every byte alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from bench.fixed_engines.settings import FixedSettings
from shared.messages import (
    Message,
    ServiceName,
    TtsAudio,
    TtsBegin,
    TtsClose,
    TtsEnd,
    TtsOpen,
    TtsSegment,
    TtsText,
    WireModel,
)
from shared.worker import Publish


class _Turn:
    """The text of one turn so far; the speaking task waits on ``more``."""

    def __init__(self, turn: int) -> None:
        self.turn = turn
        self.chars = 0
        self.first_text = ""
        self.final = False
        self.more = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class FixedTtsSession:
    def __init__(self, opened: TtsOpen, publish: Publish, settings: FixedSettings) -> None:
        self.sid = opened.sid
        self._rate = opened.sample_rate
        self._publish = publish
        self._settings = settings
        self._chunk = bytes(self._rate * settings.tts_chunk_ms // 1000 * 2)
        self._current: _Turn | None = None
        self._cancelled_upto = 0

    async def handle(self, message: Message) -> None:
        match message:
            case TtsText():
                await self._on_text(message)
            case TtsClose():
                current = self._current
                if current is not None and current.final and current.task is not None:
                    await asyncio.wait([current.task], timeout=30)
            case _:
                pass

    def cancel(self, turn: int) -> None:
        self._cancelled_upto = max(self._cancelled_upto, turn)
        if self._current is not None and self._current.turn <= turn:
            self._stop(self._current)
            self._current = None

    async def aclose(self) -> None:
        current, self._current = self._current, None
        if current is not None and current.task is not None:
            current.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await current.task

    def _stop(self, turn: _Turn) -> None:
        if turn.task is not None:
            turn.task.cancel()

    async def _on_text(self, message: TtsText) -> None:
        if message.turn <= self._cancelled_upto:
            return
        current = self._current
        if current is not None and message.turn < current.turn:
            return
        if current is None or message.turn > current.turn:
            if current is not None:
                self._stop(current)
            current = _Turn(message.turn)
            current.first_text = message.text
            self._current = current
            await self._publish(TtsBegin(sid=self.sid, turn=message.turn))
            current.task = asyncio.create_task(
                self._speak(current, time.monotonic()), name=f"fixed-tts-{self.sid}"
            )
        current.chars += len(message.text)
        current.final = current.final or message.final
        current.more.set()

    async def _speak(self, turn: _Turn, started: float) -> None:
        s = self._settings
        chunk_s = s.tts_chunk_ms / 1000
        first_at = started + s.tts_ttfb_ms / 1000
        await asyncio.sleep(max(0.0, first_at - time.monotonic()))
        await self._publish(TtsSegment(sid=self.sid, turn=turn.turn, index=0, text=turn.first_text))
        sent = 0
        while True:
            owed = turn.chars * s.tts_ms_per_char / s.tts_chunk_ms
            if sent >= owed:
                if turn.final:
                    break
                turn.more.clear()
                await turn.more.wait()
                continue
            # Real time: chunk k leaves at first_at + k * chunk, however late we are.
            await asyncio.sleep(max(0.0, first_at + sent * chunk_s - time.monotonic()))
            await self._publish(
                TtsAudio(
                    sid=self.sid,
                    turn=turn.turn,
                    index=0,
                    seq=sent,
                    pcm=self._chunk,
                    sample_rate=self._rate,
                )
            )
            sent += 1
        await self._publish(
            TtsEnd(sid=self.sid, turn=turn.turn, segments=1, audio_ms=sent * s.tts_chunk_ms)
        )


class FixedTtsEngine:
    service = ServiceName.TTS
    open_types: tuple[type[WireModel], ...] = (TtsOpen,)
    close_types: tuple[type[WireModel], ...] = (TtsClose,)

    def __init__(self, settings: FixedSettings) -> None:
        self.settings = settings

    def load(self) -> None:
        """No model."""

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return ()

    async def open_session(self, message: Message, publish: Publish) -> FixedTtsSession:
        if not isinstance(message, TtsOpen):
            raise TypeError(f"TTS sessions open with tts.open, not {message.type}")
        return FixedTtsSession(message, publish, self.settings)

    async def aclose(self) -> None:
        """Nothing to release."""

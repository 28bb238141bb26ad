"""Fixed-delay ASR: energy endpointing, a canned transcript after a fixed delay.

Publishes what the real ASR session does for an utterance (`VadEvent` per state
change, `SentenceBegin`, `TranscriptFinal`), without partials. Like the real session,
it finalizes inside `handle`, so the session's frames queue behind the "decode".
"""

from __future__ import annotations

import asyncio
import time

from bench.fixed_engines.energy import EnergyEndpointer
from bench.fixed_engines.settings import FixedSettings
from services.asr.endpointer import Action, StateChanged, UtteranceBegan, UtteranceEnded
from shared.messages import (
    AsrClose,
    AsrCommit,
    AsrOpen,
    AudioFrame,
    Message,
    SentenceBegin,
    ServiceName,
    TranscriptFinal,
    VadEvent,
    WireModel,
)
from shared.worker import Publish


class FixedAsrSession:
    def __init__(self, opened: AsrOpen, publish: Publish, settings: FixedSettings) -> None:
        self.sid = opened.sid
        self._publish = publish
        self._settings = settings
        self._manual = opened.manual
        self._ep = EnergyEndpointer(
            opened.vad, threshold=settings.energy_threshold, window_ms=settings.window_ms
        )
        self._index = 0

    async def handle(self, message: Message) -> None:
        match message:
            case AudioFrame(pcm=pcm):
                await self._apply(self._ep.feed(pcm))
            case AsrCommit():
                await self._apply(self._ep.endpointer.end_utterance())
            case AsrClose(flush=flush):
                if flush:
                    await self._apply(self._ep.endpointer.end_utterance())
            case _:
                pass

    def cancel(self, turn: int) -> None:
        """ASR has no turns."""

    async def aclose(self) -> None:
        """Nothing to release."""

    async def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case StateChanged(state=state, start_ms=start, end_ms=end):
                    if not self._manual:
                        await self._publish(
                            VadEvent(
                                sid=self.sid,
                                state=state,
                                start_ms=start,
                                end_ms=end,
                                timestamp=time.time(),
                            )
                        )
                case UtteranceBegan(speech_begin_ms=begin):
                    await self._publish(
                        SentenceBegin(sid=self.sid, index=self._index, begin_ms=begin)
                    )
                case UtteranceEnded(speech_begin_ms=begin, end_ms=end):
                    decided = time.monotonic()
                    # The simulated decode: it holds this session's inbox like a real one.
                    await asyncio.sleep(self._settings.asr_final_ms / 1000)
                    await self._publish(
                        TranscriptFinal(
                            sid=self.sid,
                            index=self._index,
                            begin_ms=begin,
                            end_ms=end,
                            text=self._settings.transcript,
                            language="en",
                            confidence=1.0,
                            decode_ms=(time.monotonic() - decided) * 1000,
                        )
                    )
                    self._index += 1


class FixedAsrEngine:
    service = ServiceName.ASR
    open_types: tuple[type[WireModel], ...] = (AsrOpen,)
    close_types: tuple[type[WireModel], ...] = (AsrClose,)

    def __init__(self, settings: FixedSettings) -> None:
        self.settings = settings

    def load(self) -> None:
        """No model."""

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return ()

    async def open_session(self, message: Message, publish: Publish) -> FixedAsrSession:
        if not isinstance(message, AsrOpen):
            raise TypeError(f"ASR sessions open with asr.open, not {message.type}")
        return FixedAsrSession(message, publish, self.settings)

    async def aclose(self) -> None:
        """Nothing to release."""

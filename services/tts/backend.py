"""The interface every synthesis backend implements."""

from __future__ import annotations

from typing import Protocol

from services.tts.framing import WavAudio
from services.tts.voices import Voice


class SpeechBackend(Protocol):
    """Turns one segment of text into audio.

    ``synthesize`` raises `shared.errors.EngineError` when the engine fails on this
    segment; later calls must work again (a backend restarts what died). Cancelling it
    is safe: the backend stays usable, the audio is discarded.
    """

    def load(self) -> None:
        """Start and warm up (blocking; called in a thread before serving)."""

    async def synthesize(self, text: str, voice: Voice) -> WavAudio: ...

    async def aclose(self) -> None: ...

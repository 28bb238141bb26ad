"""What an ASR session needs from a speech recognizer, embedded or remote."""

from __future__ import annotations

from typing import Protocol

from services.asr.audiobuffer import Samples
from services.asr.decoder import DecodeOptions, DecodeResult


class Transcriber(Protocol):
    """Decodes one utterance; blocking, called on a `services.asr.pool.DecodePool` thread.

    Implemented by `services.asr.decoder.WhisperDecoder` (embedded) and
    `services.asr.remote.RemoteTranscriber` (``/v1/audio/transcriptions``).
    """

    @property
    def options(self) -> DecodeOptions:
        """Caps and the caller's wall-time guard (`services.asr.decoder.wall_guard_s`)."""

    def transcribe(
        self,
        audio: Samples,
        language: str | None,
        *,
        max_new_tokens: int | None = None,
        min_context_s: float | None = None,
    ) -> DecodeResult: ...

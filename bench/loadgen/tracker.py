"""Sans-I/O per-call turn accounting: frame send times and server events in, turns out.

A turn begins when the frame holding an utterance's last voiced audio is sent. The
``SentenceEnd`` that follows belongs to the latest turn still waiting for one (older
waiting turns got no transcript: they stay unanswered); that turn then collects its
first ``LLM_CHAT_DELTA``, its first reply audio and ``TTS_END``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pydantic import BaseModel

ERROR_EVENTS = frozenset({"TaskFailed", "TranscriptionFailed", "LLM_CHAT_ERROR"})


@dataclass
class _Turn:
    voiced_at: float
    endpoint_at: float | None = None
    final_at: float | None = None
    delta_at: float | None = None
    audio_at: float | None = None
    end_at: float | None = None


class TurnResult(BaseModel):
    """One answered turn, in ms. ``endpoint_to_audio_ms`` excludes the VAD silence."""

    voice_to_voice_ms: float
    endpoint_to_audio_ms: float
    endpoint_to_final_ms: float
    final_to_delta_ms: float
    delta_to_audio_ms: float


class CallTracker:
    def __init__(self, voiced: set[int], endpoints: set[int]) -> None:
        self._voiced = voiced
        self._endpoints = endpoints
        self._turns: list[_Turn] = []
        self._answering: _Turn | None = None
        self.errors: Counter[str] = Counter()
        self._stopped = False

    def stopped(self) -> None:
        """The caller asked to end the call; no new turn follows."""
        self._stopped = True

    def frame_sent(self, frame: int, now: float) -> None:
        if frame in self._voiced:
            self._turns.append(_Turn(voiced_at=now))
        elif frame in self._endpoints:
            for turn in reversed(self._turns):
                if turn.endpoint_at is None:
                    turn.endpoint_at = now
                break

    def event(self, name: str, now: float) -> None:
        if name == "SentenceEnd":
            waiting = [t for t in self._turns if t.final_at is None]
            if not waiting:
                # After the stop, ASR flushes the utterance the stop cut short: expected.
                if not self._stopped:
                    self.errors["unexpected_final"] += 1
                return
            waiting[-1].final_at = now
            self._answering = waiting[-1]
        elif name in ERROR_EVENTS:
            self.errors[name] += 1
        elif self._answering is not None:
            if name == "LLM_CHAT_DELTA" and self._answering.delta_at is None:
                self._answering.delta_at = now
            elif name == "TTS_END":
                self._answering.end_at = now

    def audio(self, now: float) -> None:
        if self._answering is not None and self._answering.audio_at is None:
            self._answering.audio_at = now

    def results(self, *, until: float) -> list[TurnResult]:
        """Answered turns; a turn that began before ``until`` unanswered is an error."""
        out: list[TurnResult] = []
        for t in self._turns:
            if (
                t.audio_at is None
                or t.endpoint_at is None
                or t.final_at is None
                or t.delta_at is None
            ):
                if t.voiced_at < until:
                    self.errors["unanswered"] += 1
                continue
            out.append(
                TurnResult(
                    voice_to_voice_ms=(t.audio_at - t.voiced_at) * 1000,
                    endpoint_to_audio_ms=(t.audio_at - t.endpoint_at) * 1000,
                    endpoint_to_final_ms=(t.final_at - t.endpoint_at) * 1000,
                    final_to_delta_ms=(t.delta_at - t.final_at) * 1000,
                    delta_to_audio_ms=(t.audio_at - t.delta_at) * 1000,
                )
            )
        return out

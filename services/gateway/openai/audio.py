"""The audio formats of the OpenAI Realtime protocol and the conversions between them.

Client audio is decoded to PCM16 at the format's own rate (the call core resamples it
once for ASR); reply audio, PCM16 at the TTS rate, is resampled to the format's rate
(only when they differ) and encoded.
"""

from __future__ import annotations

from enum import Enum

from pydantic import JsonValue

from services.gateway.openai.g711 import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from shared.audio import StreamResampler


class AudioFormat(Enum):
    """One wire format: GA type name, beta name, sample rate."""

    PCM16 = ("audio/pcm", "pcm16", 24000)
    ULAW = ("audio/pcmu", "g711_ulaw", 8000)
    ALAW = ("audio/pcma", "g711_alaw", 8000)

    def __init__(self, ga_name: str, beta_name: str, rate: int) -> None:
        self.ga_name = ga_name
        self.beta_name = beta_name
        self.rate = rate

    @classmethod
    def from_ga(cls, name: str) -> AudioFormat:
        for fmt in cls:
            if fmt.ga_name == name:
                return fmt
        raise ValueError(f"unknown audio format {name!r}")

    @classmethod
    def from_beta(cls, name: str) -> AudioFormat:
        for fmt in cls:
            if fmt.beta_name == name:
                return fmt
        raise ValueError(f"unknown audio format {name!r}")

    def ga_json(self) -> dict[str, JsonValue]:
        if self is AudioFormat.PCM16:
            return {"type": self.ga_name, "rate": self.rate}
        return {"type": self.ga_name}

    def decode(self, data: bytes) -> bytes:
        """Wire bytes -> PCM16 at ``self.rate``."""
        match self:
            case AudioFormat.PCM16:
                return data
            case AudioFormat.ULAW:
                return ulaw_to_pcm16(data)
            case AudioFormat.ALAW:
                return alaw_to_pcm16(data)

    def encode(self, pcm: bytes) -> bytes:
        """PCM16 at ``self.rate`` -> wire bytes."""
        match self:
            case AudioFormat.PCM16:
                return pcm
            case AudioFormat.ULAW:
                return pcm16_to_ulaw(pcm)
            case AudioFormat.ALAW:
                return pcm16_to_alaw(pcm)

    def duration_ms(self, wire_bytes: int) -> float:
        bytes_per_sample = 2 if self is AudioFormat.PCM16 else 1
        return wire_bytes / bytes_per_sample / self.rate * 1000.0


class ReplyEncoder:
    """Reply audio of one response -> wire bytes in the session's output format.

    Keeps the resampler's state across the chunks of one response, so chunk edges do
    not click; a new response (or a new rate) starts a fresh stream.
    """

    def __init__(self, fmt: AudioFormat, in_rate: int) -> None:
        self.format = fmt
        self.in_rate = in_rate
        self._resampler = StreamResampler(in_rate, fmt.rate)
        self._odd = b""

    def encode(self, pcm: bytes) -> bytes:
        data = self._odd + pcm
        cut = len(data) - len(data) % 2
        data, self._odd = data[:cut], data[cut:]
        return self.format.encode(self._resampler.process(data)) if data else b""

"""The audio formats of the Coze protocol and the conversions to and from PCM16.

Client audio is decoded to PCM16 mono at the format's own rate (the call core resamples
it once for ASR). Reply audio is asked of TTS at the output rate (8 kHz for G.711), so
here it is only encoded. G.711 is the OpenAI adapter's numpy codec. Opus and MP3 are
refused: see docs/protocols.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.gateway.coze.codec import CozeError, CozeErrorCode
from services.gateway.coze.messages import InputAudio, OutputAudio
from services.gateway.openai.g711 import alaw_to_pcm16, pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16

PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
G711_RATE = 8000
DEFAULT_INPUT_RATE = 16000
_WAV_HEADER_SCAN = 512  # a streamed WAV's header (RIFF, fmt, maybe LIST) fits in this


def _unsupported(message: str, kind: str) -> CozeError:
    return CozeError(message, kind=kind, code=CozeErrorCode.UNSUPPORTED)


@dataclass(frozen=True)
class InputFormat:
    codec: str  # "pcm", "g711a", "g711u"
    rate: int
    channels: int
    wav: bool  # a streamed WAV file: its header precedes the samples

    @classmethod
    def from_config(cls, cfg: InputAudio | None) -> InputFormat:
        """The checked input format; `CozeError` names what is not supported."""
        cfg = cfg or InputAudio()
        if cfg.codec == "opus":
            raise _unsupported(
                "input_audio.codec 'opus' is not supported: send pcm, g711a or g711u",
                "unsupported_codec",
            )
        if cfg.format == "ogg":
            raise _unsupported(
                "input_audio.format 'ogg' is not supported: send pcm or wav", "unsupported_format"
            )
        if cfg.codec in ("g711a", "g711u"):
            if cfg.sample_rate not in (None, G711_RATE):
                raise _unsupported(
                    f"input_audio.sample_rate must be {G711_RATE} for {cfg.codec}", "bad_rate"
                )
            return cls(cfg.codec, G711_RATE, cfg.channel, wav=False)
        rate = cfg.sample_rate or DEFAULT_INPUT_RATE
        if rate not in PCM_RATES:
            raise _unsupported(
                f"input_audio.sample_rate {rate}: use one of {', '.join(map(str, PCM_RATES))}",
                "bad_rate",
            )
        if cfg.bit_depth != 16:
            raise _unsupported(
                f"input_audio.bit_depth {cfg.bit_depth}: only 16-bit PCM is supported",
                "bad_bit_depth",
            )
        return cls("pcm", rate, cfg.channel, wav=cfg.format == "wav")


class InputDecoder:
    """Client audio chunks -> PCM16 mono at ``fmt.rate``; keeps split samples and the
    WAV header state across chunks."""

    def __init__(self, fmt: InputFormat) -> None:
        self.format = fmt
        self._pending = b""
        self._in_header = fmt.wav

    def decode(self, data: bytes) -> bytes:
        if self._in_header:
            data, self._pending = self._pending + data, b""
            data = self._skip_header(data)
            if self._in_header:
                return b""
        fmt = self.format
        if fmt.codec == "g711a":
            pcm = alaw_to_pcm16(data)
        elif fmt.codec == "g711u":
            pcm = ulaw_to_pcm16(data)
        else:
            pcm = data
        frame = 2 * fmt.channels
        pcm = self._pending + pcm
        cut = len(pcm) - len(pcm) % frame
        pcm, self._pending = pcm[:cut], pcm[cut:]
        if fmt.channels == 2 and pcm:
            stereo = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.int32)
            pcm = (stereo.sum(axis=1) // 2).astype("<i2").tobytes()
        return pcm

    def _skip_header(self, data: bytes) -> bytes:
        """Drop a leading RIFF header; wait for more bytes while it may be incomplete."""
        if not data.startswith(b"RIFF"[: len(data)]):
            self._in_header = False  # no header after all: raw samples
            return data
        at = data.find(b"data", 12, _WAV_HEADER_SCAN)
        if at >= 0 and len(data) >= at + 8:
            self._in_header = False
            return data[at + 8 :]
        if len(data) >= _WAV_HEADER_SCAN:
            raise CozeError(
                "input_audio.format is wav but no WAV data chunk starts the stream",
                kind="bad_wav",
                code=CozeErrorCode.INVALID_AUDIO,
            )
        self._pending = data
        return b""


@dataclass(frozen=True)
class OutputFormat:
    codec: str  # "pcm", "g711a", "g711u"
    rate: int

    @classmethod
    def from_config(cls, cfg: OutputAudio | None) -> OutputFormat:
        cfg = cfg or OutputAudio()
        if cfg.codec in ("opus", "mp3"):
            raise _unsupported(
                f"output_audio.codec {cfg.codec!r} is not supported: use pcm, g711a or g711u",
                "unsupported_codec",
            )
        if cfg.codec in ("g711a", "g711u"):
            return cls(cfg.codec, G711_RATE)
        rate = cfg.pcm_config.sample_rate if cfg.pcm_config else 24000
        if rate not in PCM_RATES:
            raise _unsupported(
                f"output_audio.pcm_config.sample_rate {rate}: use one of "
                f"{', '.join(map(str, PCM_RATES))}",
                "bad_rate",
            )
        return cls("pcm", rate)

    def encode(self, pcm: bytes) -> bytes:
        """PCM16 at ``self.rate`` -> wire bytes."""
        if self.codec == "g711a":
            return pcm16_to_alaw(pcm[: len(pcm) - len(pcm) % 2])
        if self.codec == "g711u":
            return pcm16_to_ulaw(pcm[: len(pcm) - len(pcm) % 2])
        return pcm

"""Sans-I/O parsers for what the synthesizer programs write.

* `parse_wav`: a RIFF/WAVE file in memory -> PCM16 mono samples and rate. Accepts the
  header espeak-ng writes to a pipe (``--stdout``), whose sizes are placeholders
  (0x7ffff000) because the length is unknown when the header goes out.
* `StderrFramer`: Piper's log stream -> events. Running as
  ``python -m piper -d DIR``, Piper logs ``INFO:__main__:Wrote DIR/<n>.wav`` once per
  input line, after the file is closed: that line is the only signal that a sentence's
  audio is complete, so it is our framing.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from shared.errors import EngineError

_WAVE_FORMAT_PCM = 1
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class WavAudio:
    """PCM16 mono little-endian samples."""

    pcm: bytes
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate if self.sample_rate else 0.0


def parse_wav(data: bytes) -> WavAudio:
    """Parse a 16-bit mono PCM WAV file; raise `EngineError` for anything else.

    A ``data`` chunk whose declared size runs past the end (a streamed header, or a
    file cut short) yields the samples that are there.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise EngineError("synthesizer output is not a WAV file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise EngineError("WAV fmt chunk is truncated")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from(
                "<HHIIHH", data, body
            )
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise EngineError("WAV data chunk before its fmt chunk")
            tag, channels, rate, bits = fmt
            if tag not in (_WAVE_FORMAT_PCM, _WAVE_FORMAT_EXTENSIBLE) or bits != 16:
                raise EngineError(f"unsupported WAV format (tag {tag}, {bits} bits)")
            if channels != 1:
                raise EngineError(f"expected mono audio, got {channels} channels")
            end = min(body + size, len(data))
            end -= (end - body) % 2  # a half sample at a truncated end is dropped
            return WavAudio(pcm=bytes(data[body:end]), sample_rate=rate)
        pos = body + size + (size & 1)  # RIFF chunks are padded to even sizes
    raise EngineError("WAV file has no data chunk")


@dataclass(frozen=True)
class WavWritten:
    """Piper finished one input line; its audio is in ``path``."""

    path: str


@dataclass(frozen=True)
class LogLine:
    """Any other line Piper printed (warnings, a traceback when it dies)."""

    text: str


PiperEvent = WavWritten | LogLine

_WROTE = re.compile(r"Wrote (?P<path>.+\.wav)\s*$")


class StderrFramer:
    """Turns chunks of Piper's stderr into events; keeps a partial last line."""

    def __init__(self, max_line: int = 64 * 1024) -> None:
        self._partial = b""
        self._max_line = max_line

    def feed(self, chunk: bytes) -> list[PiperEvent]:
        self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        if len(self._partial) > self._max_line:
            # A runaway line without a newline: keep memory bounded, report what we have.
            lines.append(self._partial)
            self._partial = b""
        return [_event(raw) for raw in lines if raw.strip()]

    def close(self) -> list[PiperEvent]:
        """End of stream: a last line without a newline is still an event."""
        rest, self._partial = self._partial, b""
        return [_event(rest)] if rest.strip() else []


def _event(raw: bytes) -> PiperEvent:
    text = raw.decode("utf-8", errors="replace").rstrip("\r")
    match = _WROTE.search(text)
    if match:
        return WavWritten(path=match.group("path"))
    return LogLine(text=text)

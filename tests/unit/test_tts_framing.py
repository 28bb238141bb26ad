"""Parsing what the synthesizer programs write: WAV bytes and Piper's stderr."""

from __future__ import annotations

import io
import struct
import wave

import pytest

from services.tts.framing import LogLine, StderrFramer, WavWritten, parse_wav
from shared.errors import EngineError


def wav_bytes(pcm: bytes, rate: int = 22050, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def test_parse_a_plain_wav() -> None:
    pcm = struct.pack("<4h", 0, 1000, -1000, 32767)
    audio = parse_wav(wav_bytes(pcm))
    assert audio.pcm == pcm
    assert audio.sample_rate == 22050
    assert audio.duration_s == pytest.approx(4 / 22050)


def test_parse_a_streamed_header_with_placeholder_sizes() -> None:
    # What `espeak-ng --stdout` writes to a pipe: sizes unknown, 0x7ffff000 instead.
    pcm = struct.pack("<3h", 5, 6, 7)
    data = bytearray(wav_bytes(pcm))
    struct.pack_into("<I", data, 4, 0x7FFFF024)
    struct.pack_into("<I", data, 40, 0x7FFFF000)
    assert parse_wav(bytes(data)).pcm == pcm


def test_parse_skips_unknown_chunks_and_drops_a_half_sample() -> None:
    pcm = struct.pack("<2h", 1, 2)
    plain = wav_bytes(pcm)
    extra = b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd size, padded
    data = bytearray(plain[:36] + extra + plain[36:] + b"\x01")
    struct.pack_into("<I", data, 36 + len(extra) + 4, len(pcm) + 1)
    assert parse_wav(bytes(data)).pcm == pcm


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a wav file at all",
        wav_bytes(b"\x00\x00" * 4, channels=2),
        wav_bytes(b"\x00" * 4, width=1),
        wav_bytes(b"")[:36],  # no data chunk
    ],
)
def test_parse_rejects_what_we_cannot_play(data: bytes) -> None:
    with pytest.raises(EngineError):
        parse_wav(data)


def test_framer_reports_wrote_lines_split_across_reads() -> None:
    framer = StderrFramer()
    assert framer.feed(b"INFO:__main__:Wro") == []
    assert framer.feed(b"te /tmp/d/123.wav\nWARNING:x:some") == [WavWritten("/tmp/d/123.wav")]
    assert framer.feed(b" warning\r\nINFO:__main__:Wrote /tmp/d/124.wav\n") == [
        LogLine("WARNING:x:some warning"),
        WavWritten("/tmp/d/124.wav"),
    ]


def test_framer_keeps_paths_with_spaces_and_handles_bad_utf8() -> None:
    framer = StderrFramer()
    events = framer.feed(b"INFO:__main__:Wrote /tmp/my dir/1.wav\n\xff\xfe oops\n\n")
    assert events == [WavWritten("/tmp/my dir/1.wav"), LogLine("\ufffd\ufffd oops")]


def test_framer_close_returns_a_last_line_without_newline() -> None:
    framer = StderrFramer()
    assert framer.feed(b"Traceback (most recent call last):\nwave.Error: # channels") == [
        LogLine("Traceback (most recent call last):")
    ]
    assert framer.close() == [LogLine("wave.Error: # channels")]
    assert framer.close() == []


def test_framer_bounds_a_runaway_line() -> None:
    framer = StderrFramer(max_line=10)
    events = framer.feed(b"x" * 25)
    assert events == [LogLine("x" * 25)]
    assert framer.feed(b"INFO:__main__:Wrote /a/b.wav\n") == [WavWritten("/a/b.wav")]

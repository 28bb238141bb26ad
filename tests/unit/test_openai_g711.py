"""G.711 codecs and the protocol's audio formats."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from services.gateway.openai import g711
from services.gateway.openai.audio import AudioFormat, ReplyEncoder

ALL_SAMPLES = np.arange(65536, dtype=np.uint16).view("<i2").tobytes()


def _pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def _samples(pcm: bytes) -> list[int]:
    return [int(x) for x in np.frombuffer(pcm, dtype="<i2")]


def test_ulaw_reference_points() -> None:
    # ITU-T G.711 mu-law (G.191 reference, 14-bit input): 0 is 0xFF, full scale is
    # 0x80 / 0x00, -1 (-1 >> 2 == -1 in 14 bits) is 0x7E.
    assert list(g711.pcm16_to_ulaw(_pcm(0, -1, 32767, -32768, 8159, -8159))) == [
        0xFF,
        0x7E,
        0x80,
        0x00,
        0x9F,
        0x1F,
    ]
    assert _samples(g711.ulaw_to_pcm16(bytes([0xFF, 0x7F, 0x80, 0x00, 0xF0]))) == [
        0,
        0,
        32124,
        -32124,
        120,
    ]


def test_alaw_reference_points() -> None:
    # ITU-T G.711 A-law: even bits inverted (0x55), 0 is 0xD5, full scale 0xAA / 0x2A.
    assert list(g711.pcm16_to_alaw(_pcm(0, -1, 32767, -32768))) == [0xD5, 0x55, 0xAA, 0x2A]
    assert _samples(g711.alaw_to_pcm16(bytes([0xD5, 0x55, 0xAA, 0x2A]))) == [
        8,
        -8,
        32256,
        -32256,
    ]


def test_encode_tables_match_the_reference_implementation() -> None:
    # Digests of the whole encode tables (every PCM16 value), as CPython's audioop
    # (the C reference of Sun's g711.c) computes them.
    ulaw = hashlib.sha256(g711.pcm16_to_ulaw(ALL_SAMPLES)).hexdigest()
    alaw = hashlib.sha256(g711.pcm16_to_alaw(ALL_SAMPLES)).hexdigest()
    assert ulaw == "617fa4850d68d3906597e949f7625fb2fc46db479e29707f33159b3d131721cb"
    assert alaw == "f77c76aa923ee25617453f87514828a12896227f82ff383bf3bb53d6ac7c2a0f"


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(g711.pcm16_to_ulaw, g711.ulaw_to_pcm16), (g711.pcm16_to_alaw, g711.alaw_to_pcm16)],
)
def test_codes_round_trip_and_samples_stay_close(encode: object, decode: object) -> None:
    assert callable(encode) and callable(decode)
    codes = bytes(range(256))
    # Every code decodes to a value that encodes back to itself (except mu-law's
    # "negative zero" 0x7F, which decodes to 0 like 0xFF).
    again = encode(decode(codes))
    mismatches = [c for c, d in zip(codes, again, strict=True) if c != d]
    assert mismatches in ([], [0x7F])
    # Quantisation error stays within half a step of the segment (<= 1/16 relative + 16).
    x = np.frombuffer(ALL_SAMPLES, dtype="<i2").astype(np.int64)
    y = np.frombuffer(decode(encode(ALL_SAMPLES)), dtype="<i2").astype(np.int64)
    assert np.all(np.abs(x - y) <= np.abs(x) // 16 + 16 + 256 * (np.abs(x) > 31000))


def test_odd_pcm_is_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        g711.pcm16_to_ulaw(b"\x00\x01\x02")


def test_formats_decode_and_encode() -> None:
    assert AudioFormat.PCM16.decode(b"\x01\x02") == b"\x01\x02"
    assert AudioFormat.ULAW.decode(b"\xff\xff") == _pcm(0, 0)
    assert AudioFormat.ALAW.encode(_pcm(0)) == b"\xd5"
    assert AudioFormat.ULAW.duration_ms(8000) == 1000.0
    assert AudioFormat.PCM16.duration_ms(48000) == 1000.0
    assert AudioFormat.from_beta("g711_alaw") is AudioFormat.ALAW
    assert AudioFormat.from_ga("audio/pcmu") is AudioFormat.ULAW
    with pytest.raises(ValueError):
        AudioFormat.from_ga("audio/opus")


def test_reply_encoder_resamples_to_the_wire_rate() -> None:
    # One second of a 440 Hz tone at 24 kHz becomes about 8,000 mu-law bytes.
    t = np.arange(24000) / 24000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    enc = ReplyEncoder(AudioFormat.ULAW, 24000)
    out = b"".join(enc.encode(tone[i : i + 961]) for i in range(0, len(tone), 961))
    assert 7500 <= len(out) <= 8000
    decoded = np.frombuffer(g711.ulaw_to_pcm16(out), dtype="<i2").astype(np.float64)
    # Still the same tone: its energy sits at 440 Hz.
    spectrum = np.abs(np.fft.rfft(decoded[:4000]))
    assert abs(np.argmax(spectrum) * 8000 / 4000 - 440) <= 4


def test_reply_encoder_passes_pcm16_through() -> None:
    enc = ReplyEncoder(AudioFormat.PCM16, 24000)
    assert enc.encode(b"\x01\x02\x03") == b"\x01\x02"
    assert enc.encode(b"\x04") == b"\x03\x04"

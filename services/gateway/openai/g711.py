"""G.711 mu-law and A-law codecs (ITU-T G.711), vectorised with numpy lookup tables.

The stdlib ``audioop`` module is gone from Python 3.13, so the codecs are computed here:
decoding is one 256-entry table, encoding one 65,536-entry table indexed by the PCM16
sample's bit pattern, both built once at import from the reference algorithms (the
segment/mantissa construction of the ITU reference and Sun's ``g711.c``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_BIAS = 0x84  # mu-law bias on 16-bit magnitudes (decoding)
_BIAS14 = 0x21  # the same bias on 14-bit magnitudes (encoding)
_CLIP14 = 8159  # largest 14-bit magnitude that still fits after the bias


def _ulaw_encode_one(sample: int) -> int:
    # The ITU reference works on 14-bit samples: shift (flooring), then bias.
    pcm = sample >> 2
    mask = 0xFF
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    pcm = min(pcm, _CLIP14) + _BIAS14
    segment = max(pcm.bit_length() - 6, 0)
    if segment > 7:
        return 0x7F ^ mask
    return ((segment << 4) | ((pcm >> (segment + 1)) & 0x0F)) ^ mask


def _ulaw_decode_one(code: int) -> int:
    code = ~code & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = ((mantissa << 3) + _BIAS) << exponent
    magnitude -= _BIAS
    return -magnitude if code & 0x80 else magnitude


def _alaw_encode_one(sample: int) -> int:
    # A-law works on 13-bit magnitudes: the PCM16 sample shifted right by 3.
    if sample >= 0:
        sign = 0x80
        magnitude = sample >> 3
    else:
        sign = 0
        magnitude = (-sample - 1) >> 3
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = min(magnitude.bit_length() - 5, 7)
        if magnitude >= 4096:
            code = 0x7F  # beyond the last segment: clip
        else:
            code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


def _alaw_decode_one(code: int) -> int:
    code ^= 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    if exponent == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if code & 0x80 else -magnitude


def _encode_table(encode_one: object) -> npt.NDArray[np.uint8]:
    assert callable(encode_one)
    # Index by the sample's unsigned 16-bit pattern, so a view of the PCM as uint16
    # indexes the table directly.
    samples = np.arange(65536, dtype=np.uint16).view(np.int16)
    return np.array([encode_one(int(s)) for s in samples], dtype=np.uint8)


def _decode_table(decode_one: object) -> npt.NDArray[np.int16]:
    assert callable(decode_one)
    return np.array([decode_one(c) for c in range(256)], dtype=np.int16)


ULAW_DECODE = _decode_table(_ulaw_decode_one)
ALAW_DECODE = _decode_table(_alaw_decode_one)
ULAW_ENCODE = _encode_table(_ulaw_encode_one)
ALAW_ENCODE = _encode_table(_alaw_encode_one)


def ulaw_to_pcm16(data: bytes) -> bytes:
    """mu-law bytes -> little-endian PCM16 (one sample per byte)."""
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    """A-law bytes -> little-endian PCM16 (one sample per byte)."""
    return ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].astype("<i2").tobytes()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Little-endian PCM16 -> mu-law bytes. A trailing odd byte is an error."""
    return ULAW_ENCODE[_as_uint16(pcm)].tobytes()


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """Little-endian PCM16 -> A-law bytes. A trailing odd byte is an error."""
    return ALAW_ENCODE[_as_uint16(pcm)].tobytes()


def _as_uint16(pcm: bytes) -> npt.NDArray[np.uint16]:
    if len(pcm) % 2:
        raise ValueError("PCM16 data must have an even number of bytes")
    return np.frombuffer(pcm, dtype="<u2")

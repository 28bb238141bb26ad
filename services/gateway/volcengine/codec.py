"""Sans-I/O framing of the Volcengine live-voice-call binary protocol.

Every WebSocket message is one binary frame::

    byte 0   version (4 bits, 1) | header size (4 bits, in units of 4 bytes, >= 1)
    byte 1   message type (4 bits) | type-specific flags (4 bits)
    byte 2   serialization (4 bits: 0 none, 1 JSON) | compression (4 bits: 0 none, 1 gzip)
    byte 3   reserved
    (header size - 1) * 4 bytes of header extensions (skipped)
    uint32   big-endian payload size
    payload  (gzip-compressed when the compression nibble says so)

`decode_frame` never raises anything but `VolcengineError` for bad input, and bounds
what a gzip payload may inflate to. The reference web frontend wraps each audio frame
in the 8-byte header twice; `unwrap_audio` peels the inner header off.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from shared.errors import ProtocolError

VERSION = 1
_PREFIX = 8  # the 4-byte header plus the uint32 payload size
_GZIP_WBITS = 16 + zlib.MAX_WBITS
MAX_PAYLOAD = 1024 * 1024  # after decompression; a 100 ms frame is 3.2 KB
_E = TypeVar("_E", bound=IntEnum)


class MessageType(IntEnum):
    FULL_CLIENT_REQUEST = 0b0001
    AUDIO_ONLY_REQUEST = 0b0010
    FULL_SERVER_RESPONSE = 0b1001
    AUDIO_ONLY_RESPONSE = 0b1011
    SERVER_ERROR = 0b1111


class Serialization(IntEnum):
    NONE = 0
    JSON = 1


class Compression(IntEnum):
    NONE = 0
    GZIP = 1


class VolcengineError(ProtocolError):
    """A client frame the protocol does not allow; ``kind`` is a fixed metric label."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message, code=kind)
        self.kind = kind


@dataclass(frozen=True)
class Frame:
    """One decoded frame; ``payload`` is already decompressed."""

    type: MessageType
    serialization: Serialization
    compression: Compression
    payload: bytes
    flags: int = 0


def encode_frame(
    msg_type: MessageType,
    payload: bytes,
    *,
    serialization: Serialization = Serialization.NONE,
    compression: Compression = Compression.NONE,
    flags: int = 0,
) -> bytes:
    """One frame with a 4-byte header (no extensions)."""
    if compression is Compression.GZIP:
        payload = gzip_compress(payload)
    header = bytes(
        (
            (VERSION << 4) | 1,
            (int(msg_type) << 4) | (flags & 0x0F),
            (int(serialization) << 4) | int(compression),
            0,
        )
    )
    return header + struct.pack(">I", len(payload)) + payload


def gzip_compress(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=_GZIP_WBITS)
    return compressor.compress(data) + compressor.flush()


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise VolcengineError(
                f"gzip payload inflates beyond {limit} bytes", kind="payload_too_large"
            )
        out += inflater.flush()
    except zlib.error as exc:
        raise VolcengineError(f"payload is not valid gzip: {exc}", kind="bad_gzip") from exc
    if not inflater.eof:
        raise VolcengineError("gzip payload is truncated", kind="bad_gzip")
    if len(out) > limit:
        raise VolcengineError(
            f"gzip payload inflates beyond {limit} bytes", kind="payload_too_large"
        )
    return out


def _enum(cls: type[_E], value: int, what: str, kind: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise VolcengineError(f"unknown {what} {value:#06b}", kind=kind) from None


def decode_frame(data: bytes, *, limit: int = MAX_PAYLOAD) -> Frame:
    """Parse one client frame; `VolcengineError` says what is wrong with it."""
    if len(data) < _PREFIX:
        raise VolcengineError(
            f"frame of {len(data)} bytes is shorter than the 8-byte header", kind="short_frame"
        )
    version, header_words = data[0] >> 4, data[0] & 0x0F
    if version != VERSION:
        raise VolcengineError(
            f"protocol version {version} is not supported: expected {VERSION}",
            kind="bad_version",
        )
    if header_words < 1:
        raise VolcengineError("header size 0: expected at least 1 (4 bytes)", kind="bad_header")
    msg_type = _enum(MessageType, data[1] >> 4, "message type", "unknown_message_type")
    serialization = _enum(Serialization, data[2] >> 4, "serialization", "bad_serialization")
    compression = _enum(Compression, data[2] & 0x0F, "compression", "bad_compression")
    start = header_words * 4
    if len(data) < start + 4:
        raise VolcengineError(
            f"frame of {len(data)} bytes ends inside its {start}-byte header and size",
            kind="short_frame",
        )
    (size,) = struct.unpack_from(">I", data, start)
    body = data[start + 4 :]
    if size != len(body):
        raise VolcengineError(
            f"payload size field says {size} bytes but {len(body)} follow", kind="bad_size"
        )
    if compression is Compression.GZIP:
        body = _gunzip(body, limit)
    elif len(body) > limit:
        raise VolcengineError(
            f"payload of {len(body)} bytes is over the {limit}-byte limit",
            kind="payload_too_large",
        )
    return Frame(msg_type, serialization, compression, body, flags=data[1] & 0x0F)


def unwrap_audio(payload: bytes, *, limit: int = MAX_PAYLOAD) -> bytes:
    """Audio of an audio-only request, without a second header if the client added one.

    The reference frontend frames its audio twice; the inner frame is recognised by a
    version-1 audio-only header whose size field matches exactly, which 8 bytes of
    PCM match by chance with negligible probability.
    """
    if len(payload) < _PREFIX or payload[0] >> 4 != VERSION or payload[0] & 0x0F < 1:
        return payload
    if payload[1] >> 4 != MessageType.AUDIO_ONLY_REQUEST:
        return payload
    try:
        inner = decode_frame(payload, limit=limit)
    except VolcengineError:
        return payload
    return inner.payload


# --------------------------------------------------------------------------- WAV


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """A complete RIFF/WAVE file of PCM16 mono ``pcm`` (what ``decodeAudioData`` reads)."""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        sample_rate,
        sample_rate * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm

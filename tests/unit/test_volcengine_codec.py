"""The Volcengine binary framing: headers, sizes, gzip, double-wrapped audio, WAV."""

from __future__ import annotations

import io
import struct
import wave

import pytest

from services.gateway.volcengine.codec import (
    Compression,
    MessageType,
    Serialization,
    VolcengineError,
    decode_frame,
    encode_frame,
    gzip_compress,
    unwrap_audio,
    wav_bytes,
)


def test_header_layout_matches_the_reference() -> None:
    frame = encode_frame(
        MessageType.FULL_SERVER_RESPONSE, b'{"a":1}', serialization=Serialization.JSON
    )
    assert frame[:4] == bytes([0x11, 0x90, 0x10, 0x00])
    assert struct.unpack(">I", frame[4:8])[0] == 7
    assert frame[8:] == b'{"a":1}'


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("msg_type", list(MessageType))
def test_round_trip(msg_type: MessageType, compression: Compression) -> None:
    payload = b"\x00\x01" * 500
    frame = decode_frame(
        encode_frame(
            msg_type, payload, serialization=Serialization.NONE, compression=compression, flags=3
        )
    )
    assert (frame.type, frame.compression, frame.flags, frame.payload) == (
        msg_type,
        compression,
        3,
        payload,
    )


def test_gzip_payload_is_inflated() -> None:
    raw = b'{"event": "BotUpdateConfig"}'
    data = bytes([0x11, 0x10, 0x11, 0]) + struct.pack(">I", len(gz := gzip_compress(raw))) + gz
    assert decode_frame(data).payload == raw


def test_header_extensions_are_skipped() -> None:
    data = bytes([0x12, 0x20, 0x00, 0]) + b"EXT!" + struct.pack(">I", 2) + b"\x01\x02"
    assert decode_frame(data).payload == b"\x01\x02"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "short_frame"),
        (b"\x11\x20\x00\x00\x00\x00", "short_frame"),
        (bytes([0x21, 0x20, 0, 0, 0, 0, 0, 0]), "bad_version"),
        (bytes([0x10, 0x20, 0, 0, 0, 0, 0, 0]), "bad_header"),
        (bytes([0x11, 0x30, 0, 0, 0, 0, 0, 0]), "unknown_message_type"),
        (bytes([0x11, 0x20, 0x20, 0, 0, 0, 0, 0]), "bad_serialization"),
        (bytes([0x11, 0x20, 0x02, 0, 0, 0, 0, 0]), "bad_compression"),
        (bytes([0x11, 0x20, 0, 0, 0, 0, 0, 5]) + b"abc", "bad_size"),
        (bytes([0x11, 0x20, 0x01, 0, 0, 0, 0, 3]) + b"abc", "bad_gzip"),
        (bytes([0x13, 0x20, 0, 0, 0, 0, 0, 0]), "short_frame"),
    ],
)
def test_malformed_frames_are_refused_with_a_reason(data: bytes, kind: str) -> None:
    with pytest.raises(VolcengineError) as info:
        decode_frame(data)
    assert info.value.kind == kind


def test_truncated_gzip_is_refused() -> None:
    gz = gzip_compress(b"x" * 1000)[:-6]
    data = bytes([0x11, 0x20, 0x01, 0]) + struct.pack(">I", len(gz)) + gz
    with pytest.raises(VolcengineError, match="truncated"):
        decode_frame(data)


def test_gzip_bomb_is_bounded() -> None:
    gz = gzip_compress(bytes(5 * 1024 * 1024))
    data = bytes([0x11, 0x20, 0x01, 0]) + struct.pack(">I", len(gz)) + gz
    with pytest.raises(VolcengineError) as info:
        decode_frame(data)
    assert info.value.kind == "payload_too_large"


def test_double_wrapped_audio_is_unwrapped() -> None:
    pcm = bytes(range(256)) * 12
    inner = encode_frame(MessageType.AUDIO_ONLY_REQUEST, pcm)
    outer = decode_frame(encode_frame(MessageType.AUDIO_ONLY_REQUEST, inner))
    assert unwrap_audio(outer.payload) == pcm
    assert unwrap_audio(pcm) == pcm  # single wrapping: the payload is the audio


def test_audio_that_only_looks_like_a_header_is_kept() -> None:
    # A version-1 audio header whose size does not match is audio, not a frame.
    pcm = bytes([0x11, 0x20, 0, 0, 0, 0, 0, 99]) + bytes(10)
    assert unwrap_audio(pcm) == pcm


def test_wav_is_a_complete_file() -> None:
    pcm = struct.pack("<4h", 0, 1000, -1000, 32767)
    with wave.open(io.BytesIO(wav_bytes(pcm, 24000))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        assert wav.readframes(wav.getnframes()) == pcm

"""Fuzzing the Volcengine binary protocol: whatever a client sends, the answer is the
protocol's own (an error frame), never an exception.

10,000 inputs each: arbitrary bytes to `decode_frame` / `unwrap_audio`, and sessions fed
sequences of valid frames (audio, double-wrapped audio, JSON events, gzip) that are cut,
bit-flipped or re-sized.
"""

from __future__ import annotations

import json
import struct
import typing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.protocol import Output, Refused, SendBytes
from services.gateway.volcengine.codec import (
    Compression,
    MessageType,
    Serialization,
    VolcengineError,
    decode_frame,
    encode_frame,
    unwrap_audio,
)
from services.gateway.volcengine.session import VolcengineSession
from shared.messages import ErrorCode

OUTPUTS = typing.get_args(Output)
FUZZ = settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=64))
def test_arbitrary_bytes(data: bytes) -> None:
    try:
        frame = decode_frame(data, limit=4096)
    except VolcengineError:
        pass
    else:
        assert len(frame.payload) <= 4096
    unwrap_audio(data, limit=4096)  # never raises: not a frame means plain audio


def _json(event: object) -> bytes:
    return json.dumps(event).encode()


_AUDIO = encode_frame(MessageType.AUDIO_ONLY_REQUEST, b"\x01\x00" * 160)
_FRAMES: tuple[bytes, ...] = (
    _AUDIO,
    encode_frame(MessageType.AUDIO_ONLY_REQUEST, _AUDIO),  # the reference's double framing
    encode_frame(MessageType.AUDIO_ONLY_REQUEST, b"\x00" * 3),  # an odd byte
    encode_frame(MessageType.AUDIO_ONLY_REQUEST, b"\x01\x00" * 64, compression=Compression.GZIP),
    encode_frame(
        MessageType.FULL_CLIENT_REQUEST,
        _json({"event": "BotUpdateConfig", "payload": {"speaker": "zh_female_qingqing"}}),
        serialization=Serialization.JSON,
    ),
    encode_frame(
        MessageType.FULL_CLIENT_REQUEST,
        _json({"event": "BotUpdateConfig", "payload": {"speaker": None}}),
        serialization=Serialization.JSON,
        compression=Compression.GZIP,
    ),
    encode_frame(
        MessageType.FULL_CLIENT_REQUEST,
        _json({"event": "Other", "payload": [1]}),
        serialization=Serialization.JSON,
    ),
    encode_frame(MessageType.FULL_CLIENT_REQUEST, b"\xff\xfe", serialization=Serialization.JSON),
    encode_frame(MessageType.FULL_SERVER_RESPONSE, b"{}"),  # a server type from a client
    encode_frame(MessageType.FULL_CLIENT_REQUEST, b"1" * 5000),  # over the int-digit limit
)


def _mutate(frame: bytes, how: int, at: int, byte: int) -> bytes:
    raw = bytearray(frame)
    at %= len(raw)
    if how == 0:
        return bytes(raw)
    if how == 1:
        return bytes(raw[:at])  # cut
    if how == 2:
        raw[at] ^= byte or 1  # flip
        return bytes(raw)
    # Lie about the payload size, or the header size.
    if how == 3:
        struct.pack_into(">I", raw, 4, (byte * 16_777_259) & 0xFFFFFFFF)
    else:
        raw[0] = (raw[0] & 0xF0) | (byte & 0x0F)
    return bytes(raw)


def _check(outputs: list[Output]) -> None:
    for out in outputs:
        assert isinstance(out, OUTPUTS), out
        if isinstance(out, Refused):
            assert any(isinstance(o, SendBytes) for o in outputs)  # the client is told why


# A step is one integer unpacked into (frame, mutation, position, byte): a list of plain
# integers is the cheapest thing for hypothesis to generate, so 10,000 sessions stay fast.
_steps = st.lists(st.integers(0, 2**24 - 1), max_size=5)


def _unpack(step: int) -> tuple[int, int, int, int]:
    return step % (len(_FRAMES) + 2), (step >> 4) % 5, (step >> 8) & 0xFF, step >> 16


@FUZZ
@given(st.booleans(), _steps)
def test_session_never_raises(started: bool, steps: list[int]) -> None:
    session = VolcengineSession({})
    _check(session.opened())
    _check(session.started() if started else session.start_failed(ErrorCode.OVERLOADED, "full"))
    for step in steps:
        index, how, at, byte = _unpack(step)
        if index == len(_FRAMES):
            _check(session.on_text("hello"))
        elif index == len(_FRAMES) + 1:
            session.finished()
        else:
            _check(session.on_binary(_mutate(_FRAMES[index], how, at, byte)))

"""Fuzzing the Volcengine adapter: whatever bytes a client sends, the answer is a frame
of the protocol (forwarded audio, a voice update, or an error frame), never an exception.

10,000 arbitrary byte strings; then fewer (the machine is small) well-formed headers
with arbitrary nibbles, sizes and payloads (gzip too), and full client requests
carrying arbitrary JSON.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.protocol import ForwardAudio, Refused, SendBytes, UpdateCall
from services.gateway.volcengine.codec import (
    MessageType,
    Serialization,
    decode_frame,
    encode_frame,
    gzip_compress,
)
from services.gateway.volcengine.session import VolcengineSession

FUZZ = settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SHAPED = settings(FUZZ, max_examples=1_500)

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


def _session() -> VolcengineSession:
    session = VolcengineSession({})
    session.opened()
    session.started()
    return session


SESSION = _session()  # one session across examples: refusals must leave it usable


def _check(outputs: list[Any]) -> None:
    for out in outputs:
        assert isinstance(out, SendBytes | Refused | ForwardAudio | UpdateCall)
        if isinstance(out, SendBytes):
            frame = decode_frame(out.data)  # our own frames always parse
            assert frame.type is MessageType.SERVER_ERROR
            body = json.loads(frame.payload)
            assert body["event"] == "BotError"
            assert "Traceback" not in body["payload"]["error"]["message"]


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    _check(SESSION.on_binary(data))


@SHAPED
@given(
    version=st.integers(0, 15),
    header_words=st.integers(0, 15),
    msg_type=st.integers(0, 15),
    flags=st.integers(0, 15),
    serialization=st.integers(0, 15),
    compression=st.integers(0, 3),
    payload=st.binary(max_size=200),
    gzip=st.booleans(),
    size_delta=st.sampled_from([0, 0, 0, 1, -1, 2**31]),
    extension=st.binary(min_size=0, max_size=60),
)
def test_structured_frames(
    version: int,
    header_words: int,
    msg_type: int,
    flags: int,
    serialization: int,
    compression: int,
    payload: bytes,
    gzip: bool,
    size_delta: int,
    extension: bytes,
) -> None:
    body = gzip_compress(payload) if gzip else payload
    header = bytes(
        (version << 4 | header_words, msg_type << 4 | flags, serialization << 4 | compression, 0)
    )
    ext = extension[: max(0, header_words - 1) * 4]
    size = (len(body) + size_delta) % 2**32
    _check(SESSION.on_binary(header + ext + struct.pack(">I", size) + body))


@settings(FUZZ, max_examples=500)
@given(event=_json, name=st.sampled_from(["BotUpdateConfig", "BotReady", "x"]), gzip=st.booleans())
def test_full_requests_with_arbitrary_json(event: Any, name: str, gzip: bool) -> None:
    if isinstance(event, dict) and event and isinstance(next(iter(event.values())), dict):
        event = {"event": name, "payload": next(iter(event.values()))}
    data = json.dumps(event).encode()
    frame = encode_frame(
        MessageType.FULL_CLIENT_REQUEST,
        gzip_compress(data) if gzip else data,
        serialization=Serialization.JSON,
    )
    if gzip:  # mark the payload as compressed without compressing it twice
        frame = frame[:2] + bytes([frame[2] | 1]) + frame[3:]
    _check(SESSION.on_binary(frame))

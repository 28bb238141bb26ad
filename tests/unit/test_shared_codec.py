"""The msgpack codec and subject names: pure, no network."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import codec, subjects
from shared.errors import DecodeError
from shared.messages import (
    AudioFrame,
    Batch,
    ChatMessage,
    LlmOpen,
    ServiceName,
    TtsAudio,
    VadEvent,
    VadState,
)


@pytest.mark.parametrize(
    "message",
    [
        AudioFrame(sid="s1", seq=3, pcm=b"\x00\x01" * 160),
        VadEvent(sid="s1", state=VadState.SPEAKING, start_ms=320, end_ms=900, timestamp=1.5),
        LlmOpen(sid="s1", system_prompt="hi", history=(ChatMessage(role="user", content="x"),)),
        TtsAudio(sid="s1", turn=2, index=0, seq=7, pcm=b"\x01\x02", sample_rate=24000),
    ],
)
def test_round_trip(message: object) -> None:
    assert codec.decode(codec.encode(message)) == message  # type: ignore[arg-type]


def test_rejects_unknown_type_and_extra_fields() -> None:
    with pytest.raises(DecodeError):
        codec.decode(msgpack.packb({"type": "nope", "sid": "x"}))
    with pytest.raises(DecodeError):
        codec.decode(msgpack.packb({"type": "asr.commit", "sid": "x", "extra": 1}))
    with pytest.raises(DecodeError):
        codec.decode(msgpack.packb([1, 2, 3]))


@settings(max_examples=10_000, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes) -> None:
    try:
        codec.decode(data)
    except DecodeError:
        pass


def test_subjects_refuse_tokens_that_change_the_subject_shape() -> None:
    assert subjects.session_out("abc") == "session.abc.out"
    assert subjects.worker_in(ServiceName.ASR, "r1") == "asr.w.r1.in"
    for bad in ("a.b", "*", ">", "a b", ""):
        with pytest.raises(ValueError):
            subjects.session_out(bad)


def test_a_batch_of_encoded_messages_decodes_as_the_batch() -> None:
    frames = [AudioFrame(sid="s", seq=i, pcm=bytes(4)) for i in range(3)]
    reply = TtsAudio(sid="t", turn=1, index=0, seq=1, pcm=b"\x01\x02", sample_rate=24000)
    data = codec.encode_batch([codec.encode(m) for m in (*frames, reply)])
    assert data == codec.encode(Batch(items=[*frames, reply]))
    assert codec.decode(data) == Batch(items=[*frames, reply])


@pytest.mark.parametrize(
    "items",
    [
        [],  # empty
        [{"type": "asr.commit", "sid": "s"}],  # not a bulk message
        [{"type": "batch", "items": [{"type": "audio", "sid": "s", "seq": 1, "pcm": b""}]}],
    ],
)
def test_a_batch_holds_only_bulk_messages(items: list[object]) -> None:
    with pytest.raises(DecodeError):
        codec.decode(msgpack.packb({"type": "batch", "items": items}, use_bin_type=True))

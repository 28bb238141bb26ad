"""Fuzzing the msgpack codec: whatever arrives on the bus, `decode` returns a message or
raises `DecodeError`, nothing else.

Three generators, 10,000 inputs each: arbitrary bytes, msgpack maps built from the real
message types and field names with values of any msgpack type, and valid messages with
one field replaced, dropped or added.
"""

from __future__ import annotations

import typing
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import codec
from shared.errors import DecodeError
from shared.messages import (
    AsrOpen,
    AudioFrame,
    Cancel,
    ChatMessage,
    HistoryOp,
    LlmEdit,
    LlmOpen,
    Message,
    TranscriptFinal,
    TtsAudio,
    VadEvent,
    VadState,
    WireModel,
    WorkerSpec,
)

FUZZ = settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

MODELS: tuple[type[WireModel], ...] = typing.get_args(typing.get_args(Message)[0])
TYPES = tuple(str(m.model_fields["type"].default) for m in MODELS)
FIELDS = tuple(sorted({name for m in MODELS for name in m.model_fields}))

_int64 = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_scalars = (
    st.none()
    | st.booleans()
    | _int64
    | st.floats(width=32)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from(TYPES)
)
# One level of nesting, not `st.recursive`: it finds the same classes of bug (a container
# where a scalar belongs, a scalar where a model belongs) at a third of the generation cost,
# which is what lets 10,000 inputs run in seconds. Keys of nested maps include the kinds
# msgpack allows but our decoder must refuse.
_values: st.SearchStrategy[Any] = (
    _scalars
    | st.lists(_scalars, max_size=3)
    | st.dictionaries(st.text(max_size=4) | st.binary(max_size=2) | _int64, _scalars, max_size=2)
)
_field_names = st.sampled_from(FIELDS) | st.text(max_size=8)


def _pack(obj: Any) -> bytes:
    data = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def _decode_or_refuse(data: bytes) -> None:
    try:
        message = codec.decode(data)
    except DecodeError:
        return
    # Whatever was accepted is a real message that survives a round trip.
    assert codec.decode(codec.encode(message)) == message


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_or_refuse(data)


@FUZZ
@given(
    st.sampled_from(TYPES) | _values,
    st.dictionaries(_field_names, _values, max_size=4),
    st.booleans(),
)
def test_maps_with_wrong_fields_and_types(kind: Any, fields: dict[str, Any], typed: bool) -> None:
    body = {**fields, "type": kind} if typed else fields
    _decode_or_refuse(_pack(body))


VALID: tuple[WireModel, ...] = (
    AudioFrame(sid="s1", seq=3, pcm=b"\x00\x01" * 16),
    VadEvent(sid="s1", state=VadState.SPEAKING, start_ms=320, end_ms=900, timestamp=1.5),
    AsrOpen(sid="s1", language="en"),
    LlmOpen(
        sid="s1",
        system_prompt="hi",
        variables={"name": "Ada", "n": [1, 2.5, None]},
        workers=(WorkerSpec(variable_name="mood", prompt="p", json_schema={"type": "object"}),),
        history=(ChatMessage(role="user", content="x", item_id="i1"),),
    ),
    LlmEdit(sid="s1", op=HistoryOp.APPEND, message=ChatMessage(role="assistant", content="y")),
    TranscriptFinal(sid="s1", index=0, begin_ms=0, end_ms=10, text="hello"),
    TtsAudio(sid="s1", turn=2, index=0, seq=7, pcm=b"\x01\x02", sample_rate=24000),
    Cancel(sid="s1", turn=1),
)


@FUZZ
@given(
    st.sampled_from(VALID),
    st.integers(0, 40),
    _field_names,
    st.sampled_from(["replace", "drop", "nest"]),
    _values,
)
def test_valid_messages_with_one_field_broken(
    message: WireModel, pick: int, other: str, how: str, value: Any
) -> None:
    body = message.model_dump(mode="python")
    names = sorted(body)
    # Mostly one of the message's own fields, sometimes any name at all.
    name = names[pick % len(names)] if pick < 30 else other
    if how == "drop":
        body.pop(name, None)
    elif how == "nest":
        body[name] = {"type": body.get("type"), name: value}
    else:
        body[name] = value
    try:
        raw = msgpack.packb(body, default=_enum_value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return  # not representable in msgpack: cannot arrive on the bus
    _decode_or_refuse(raw)


@FUZZ
@given(st.sampled_from(VALID), st.integers(0, 10_000), st.booleans(), st.integers(1, 255))
def test_valid_encodings_cut_or_flipped(message: WireModel, at: int, cut: bool, xor: int) -> None:
    raw = bytearray(codec.encode(message))
    at %= len(raw)
    if cut:
        del raw[at:]
    else:
        raw[at] ^= xor
    _decode_or_refuse(bytes(raw))


def _enum_value(obj: Any) -> Any:
    if hasattr(obj, "value"):
        return obj.value
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(type(obj).__name__)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # the one byte msgpack never uses
        b"\x91" * 100_000 + b"\xc0",  # nested far beyond the unpacker's stack
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 G elements
        b"\xdb\xff\xff\xff\xff",  # a string claiming 4 GB
        b"\x81\x81\xa1a\x01\x01",  # a map as a map key
        b"\x81\x01\x02",  # an integer key
        b"\x82\xc4\x04type\xa5audio\xa3sid\xa1s",  # a bytes key where a name belongs
        b"\x81\xa4type\xa7\xff\xfe\xfd\xfc\xfb\xfa\xf9",  # invalid UTF-8
        b"\xd6\xff\x00\x00\x00\x01",  # a timestamp extension
        b"\xc7\x03\x05abc",  # an unknown extension type
        _pack({"type": ["audio"], "sid": "s"}),  # an unhashable discriminator
        _pack({"type": "audio", "sid": "s", "seq": 2**64 - 1, "pcm": 12}),
        _pack(
            {
                "type": "vad",
                "sid": "s",
                "state": "speaking",
                "start_ms": 0,
                "end_ms": 1,
                "timestamp": float("nan"),
            }
        ),  # non-finite floats would become invalid JSON
        _pack({"type": "llm.open", "sid": "s", "variables": {"x": [float("inf")]}}),
    ],
)
def test_known_hostile_inputs_are_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)

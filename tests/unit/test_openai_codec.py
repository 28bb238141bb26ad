"""Parsing client events: typed events out, or a `RealtimeError` with a stable code."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.realtime import RealtimeErrorEvent

from services.gateway.openai.codec import (
    ErrorCode,
    RealtimeError,
    decode_audio,
    parse_event,
    parse_session,
)
from services.gateway.openai.messages import (
    CLIENT_EVENT_TYPES,
    MAX_AUDIO_B64_CHARS,
    AudioAppend,
    BetaSession,
    GaSession,
    ItemCreate,
    ItemTruncate,
    ResponseCancel,
    SessionStart,
    SessionUpdate,
)
from services.gateway.openai.session import OpenAiSession
from services.gateway.protocol import Refused, SendText


def _refused(text: str) -> RealtimeError:
    with pytest.raises(RealtimeError) as info:
        parse_event(text)
    return info.value


def test_parses_the_events_we_accept() -> None:
    append = parse_event(json.dumps({"type": "input_audio_buffer.append", "audio": "AAA="}))
    assert isinstance(append, AudioAppend) and append.audio == "AAA="
    update = parse_event('{"type": "session.update", "event_id": "e1", "session": {}}')
    assert isinstance(update, SessionUpdate) and update.event_id == "e1"
    start = parse_event(
        json.dumps(
            {
                "type": "session.start",
                "session": {"model": "doubao", "language": "zh", "voice": "zh_female_x"},
            }
        )
    )
    assert isinstance(start, SessionStart) and start.session.language == "zh"
    create = parse_event(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            }
        )
    )
    assert isinstance(create, ItemCreate) and create.item.content[0].text == "hi"
    truncate = parse_event(
        json.dumps(
            {
                "type": "conversation.item.truncate",
                "item_id": "item_1",
                "content_index": 0,
                "audio_end_ms": 1500,
            }
        )
    )
    assert isinstance(truncate, ItemTruncate) and truncate.audio_end_ms == 1500
    assert isinstance(parse_event('{"type": "response.cancel"}'), ResponseCancel)


def test_extra_fields_the_sdk_sends_are_ignored() -> None:
    event = parse_event('{"type": "response.cancel", "response_id": "r", "future_field": 1}')
    assert isinstance(event, ResponseCancel) and event.response_id == "r"


_TRUNCATE = (
    '{"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": %s}'
)


@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ("{nope", ErrorCode.INVALID_JSON, None),
        ("[1, 2]", ErrorCode.INVALID_EVENT, None),
        ('{"event_id": "x"}', ErrorCode.INVALID_EVENT, "type"),
        ('{"type": 3}', ErrorCode.INVALID_EVENT, "type"),
        ('{"type": "output_audio_buffer.clear"}', ErrorCode.UNKNOWN_EVENT, "type"),
        ('{"type": "input_audio_buffer.append"}', ErrorCode.INVALID_VALUE, "audio"),
        ('{"type": "input_audio_buffer.append", "audio": 5}', ErrorCode.INVALID_VALUE, "audio"),
        (
            _TRUNCATE % '"10"',
            ErrorCode.INVALID_VALUE,
            "audio_end_ms",
        ),
        (
            _TRUNCATE % "-1",
            ErrorCode.INVALID_VALUE,
            "audio_end_ms",
        ),
        ('{"type": "conversation.item.delete", "item_id": ""}', ErrorCode.INVALID_VALUE, "item_id"),
    ],
)
def test_bad_frames_get_stable_codes(text: str, code: ErrorCode, param: str | None) -> None:
    err = _refused(text)
    assert err.error_code is code
    assert err.param == param


def test_the_offending_event_id_is_reported() -> None:
    err = _refused('{"type": "nope", "event_id": "evt_42"}')
    assert (err.error_code, err.event_id) == (ErrorCode.UNKNOWN_EVENT, "evt_42")
    err = _refused('{"type": "conversation.item.delete", "event_id": "evt_43"}')
    assert (err.error_code, err.event_id) == (ErrorCode.INVALID_VALUE, "evt_43")


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    deep = '{"type": "session.update", "session": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert _refused(deep).error_code in (ErrorCode.INVALID_JSON, ErrorCode.INVALID_VALUE)


def test_oversized_audio_has_its_own_code() -> None:
    audio = "A" * (MAX_AUDIO_B64_CHARS + 4)
    err = _refused(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
    assert err.error_code is ErrorCode.AUDIO_TOO_LARGE


def test_audio_must_be_strict_base64() -> None:
    assert (
        decode_audio(base64.b64encode(b"\x01\x02\x03").decode(), event_id=None) == b"\x01\x02\x03"
    )
    for bad in ("not base64!", "AAA", "AA=A"):
        with pytest.raises(RealtimeError) as info:
            decode_audio(bad, event_id="e")
        assert info.value.error_code is ErrorCode.INVALID_AUDIO
        assert info.value.event_id == "e"


def test_session_shapes() -> None:
    ga = parse_session(
        {
            "type": "realtime",
            "instructions": "be brief",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}},
            "tracing": "auto",  # ignored
        },
        beta=False,
        event_id=None,
    )
    assert isinstance(ga, GaSession) and ga.instructions == "be brief"
    beta = parse_session(
        {"input_audio_format": "g711_ulaw", "turn_detection": None}, beta=True, event_id=None
    )
    assert isinstance(beta, BetaSession) and "turn_detection" in beta.model_fields_set
    with pytest.raises(RealtimeError) as info:
        parse_session(
            {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 2}}}},
            beta=False,
            event_id="e9",
        )
    assert info.value.param == "session.audio.input.turn_detection.threshold"
    assert info.value.event_id == "e9"


# --------------------------------------------------------------------------- fuzzing

_keys = st.sampled_from(
    [
        "session",
        "audio",
        "item",
        "item_id",
        "content_index",
        "audio_end_ms",
        "response",
        "event_id",
        "response_id",
        "previous_item_id",
        "type",
        "input_audio_format",
        "turn_detection",
        "instructions",
        "content",
        "role",
        "text",
        "format",
        "voice",
    ]
)
_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(["AAAA", "//8=", "audio/pcm", "user", "input_text", "server_vad", "inf"])
)
# Flat but shaped like events: a known (or nearly known) type plus fields we read, with
# leaves, small lists and one level of objects as values.
_value = _leaf | st.lists(_leaf, max_size=3) | st.dictionaries(_keys, _leaf, max_size=3)
_shaped = st.builds(
    lambda kind, fields: {**fields, "type": kind},
    st.sampled_from(sorted(CLIENT_EVENT_TYPES) + ["response.created", ""]),
    st.dictionaries(_keys.filter(lambda k: k != "type"), _value, max_size=4),
)
_frames = (
    _shaped.map(json.dumps)
    | st.text(max_size=60)
    | st.dictionaries(st.text(max_size=6), _value, max_size=3).map(json.dumps)
    | st.binary(max_size=32).map(lambda b: b.decode("latin-1"))
)


def _check_outputs(outputs: list[Any]) -> None:
    for out in outputs:
        if isinstance(out, SendText):
            frame = json.loads(out.text)
            if frame["type"] == "error":
                RealtimeErrorEvent.model_validate(frame)
                assert frame["error"]["type"] == "invalid_request_error"
                assert frame["error"]["code"] in {c.value for c in ErrorCode}


@settings(
    max_examples=10_000,
    deadline=None,
    database=None,  # nothing to replay: a failure prints its falsifying frame
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(frame=_frames, beta=st.booleans())
def test_fuzzed_frames_never_escape_as_exceptions(frame: str, beta: bool) -> None:
    session = OpenAiSession(beta=beta)
    outputs = session.on_text(frame)
    _check_outputs(outputs)
    assert len([o for o in outputs if isinstance(o, Refused)]) <= 1

"""Fuzzing the Coze adapter: whatever a client sends, the answer is the protocol's own
(``error`` events), never an exception, a traceback or an internal detail.

10,000 inputs each: arbitrary text to `parse_event`; valid events with one or two fields
replaced by values of other types, limits or bad base64; and whole sessions of events
and connection callbacks in any order through `CozeSession`. Every `BeginCall` a session
emits is opened by the call core, so accepted settings always make valid wire messages.
"""

from __future__ import annotations

import base64
import copy
import json
import typing
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.call import CallCore
from services.gateway.conversation import ConversationDefaults
from services.gateway.coze.codec import CozeError, parse_event
from services.gateway.coze.session import CozeSession
from services.gateway.protocol import BeginCall, Output, SendText
from shared.messages import ErrorCode

OUTPUTS = typing.get_args(Output)
FUZZ = settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DEFAULTS = ConversationDefaults()

_PCM = base64.b64encode(b"\x01\x00" * 320).decode()
_BASES: tuple[dict[str, Any], ...] = (
    {
        "id": "e1",
        "event_type": "chat.update",
        "data": {
            "chat_config": {
                "conversation_id": "conv-1",
                "user_id": "u1",
                "custom_variables": {"name": "Ada"},
                "parameters": {"city": "Paris"},
            },
            "input_audio": {"format": "pcm", "codec": "pcm", "sample_rate": 16000},
            "output_audio": {
                "codec": "pcm",
                "pcm_config": {"sample_rate": 24000, "frame_size_ms": 100},
                "voice_id": "v1",
            },
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
            "event_subscriptions": ["error", "chat.updated", "conversation.audio.delta"],
            "need_play_prologue": True,
            "prologue_content": "Hello!",
        },
    },
    {"id": "e2", "event_type": "input_audio_buffer.append", "data": {"delta": _PCM}},
    {"id": "e3", "event_type": "input_audio_buffer.complete"},
    {"id": "e4", "event_type": "input_audio_buffer.clear"},
    {"id": "e5", "event_type": "conversation.chat.cancel"},
    {
        "id": "e6",
        "event_type": "conversation.message.create",
        "data": {"role": "user", "content_type": "text", "content": "Hi there"},
    },
    {"id": "e7", "event_type": "conversation.clear"},
)
_PATHS: tuple[tuple[str, ...], ...] = tuple(
    tuple(p.split("."))
    for p in (
        "id",
        "event_type",
        "data",
        "data.delta",
        "data.role",
        "data.content_type",
        "data.content",
        "data.chat_config",
        "data.chat_config.conversation_id",
        "data.chat_config.custom_variables",
        "data.chat_config.parameters.city",
        "data.input_audio",
        "data.input_audio.format",
        "data.input_audio.codec",
        "data.input_audio.sample_rate",
        "data.input_audio.channel",
        "data.input_audio.bit_depth",
        "data.output_audio.codec",
        "data.output_audio.pcm_config.sample_rate",
        "data.output_audio.pcm_config.frame_size_ms",
        "data.output_audio.opus_config",
        "data.output_audio.speech_rate",
        "data.output_audio.voice_id",
        "data.turn_detection.type",
        "data.turn_detection.silence_duration_ms",
        "data.event_subscriptions",
        "data.need_play_prologue",
        "data.prologue_content",
    )
)
_INTERESTING: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    1,
    2,
    8000,
    16000,
    24000,
    44100,
    48000,
    96000,
    2**31,
    10**30,
    0.5,
    1e9,
    float("nan"),
    "",
    "x",
    "pcm",
    "wav",
    "ogg",
    "opus",
    "g711a",
    "g711u",
    "mp3",
    "server_vad",
    "semantic_vad",
    "user",
    "assistant",
    "object_string",
    "error",
    "conversation.message.create",
    "AAA",
    "AAAA",
    "=",
    "QUJD",
    _PCM[:-1],
    "{{ x }}",
    "{%",
    [],
    {},
    [1],
    ["error"],
    {"a": 1},
    [{"type": "text", "text": "hi"}],
)
_value: st.SearchStrategy[Any] = (
    st.sampled_from(_INTERESTING)
    | st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(width=32)
    | st.text(max_size=8)
    | st.integers(60_000, 70_000).map(lambda n: "x" * n)  # beyond text limits (short repr)
)


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = doc
    for step in path[:-1]:
        if not isinstance(node, dict):
            return
        if not isinstance(node.get(step), dict):
            node[step] = {}
        node = node[step]
    if isinstance(node, dict):
        node[path[-1]] = copy.deepcopy(value)


def _check_message(message: str) -> None:
    for leak in ("Traceback", 'File "', "pydantic", "errors.pydantic.dev", "Error("):
        assert leak not in message, message


def _check(outputs: list[Output]) -> None:
    for out in outputs:
        assert isinstance(out, OUTPUTS), out
        if isinstance(out, SendText):
            event = json.loads(out.text)
            if event["event_type"] == "error":
                _check_message(event["data"]["msg"])
        if isinstance(out, BeginCall):
            CallCore(out.options).open()  # accepted settings make valid wire messages


def _parse(text: str) -> None:
    try:
        parse_event(text)
    except CozeError as exc:
        _check_message(str(exc))
    session = CozeSession({}, conversation=DEFAULTS)
    _check(session.on_text(text))


@FUZZ
@given(st.text(max_size=64))
def test_parse_arbitrary_text(text: str) -> None:
    _parse(text)


@FUZZ
@given(
    st.sampled_from(_BASES),
    st.sampled_from(_PATHS),
    _value,
    st.sampled_from(_PATHS),
    _value,
    st.booleans(),
)
def test_events_with_wrong_fields_and_types(
    base: dict[str, Any],
    path1: tuple[str, ...],
    value1: Any,
    path2: tuple[str, ...],
    value2: Any,
    twice: bool,
) -> None:
    doc = copy.deepcopy(base)
    _set(doc, path1, value1)
    if twice:
        _set(doc, path2, value2)
    _parse(json.dumps(doc))


_FRAMES = tuple(json.dumps(b) for b in _BASES)
_FRAMES += (
    json.dumps({**_BASES[0], "data": {"input_audio": {"codec": "g711a"}}}),
    json.dumps({**_BASES[0], "data": {"chat_config": {"conversation_id": "conv-2"}}}),
    json.dumps({**_BASES[0], "data": {"output_audio": {"voice_id": "v2"}}}),
    json.dumps({**_BASES[1], "data": {"delta": "AAA"}}),
    "{",
)


@FUZZ
@given(st.sampled_from(["", "qingqing", "7342"]), st.lists(st.integers(0, 2**16), max_size=8))
def test_session_never_raises(bot_id: str, steps: list[int]) -> None:
    session = CozeSession({"bot_id": [bot_id]} if bot_id else {}, conversation=DEFAULTS)
    _check(session.opened())
    placing = False
    for step in steps:
        action = step % (len(_FRAMES) + 4)
        if action < len(_FRAMES):
            outputs = session.on_text(_FRAMES[action])
        elif action == len(_FRAMES):
            outputs = session.on_binary(b"\x00\x01")
        elif action == len(_FRAMES) + 1 and placing:
            outputs = session.started()
            placing = False
        elif action == len(_FRAMES) + 2 and placing:
            outputs = session.start_failed(ErrorCode.OVERLOADED, "no room")
            placing = False
        else:
            session.finished()
            continue
        _check(outputs)
        placing = placing or any(isinstance(o, BeginCall) for o in outputs)

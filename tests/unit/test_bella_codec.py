"""The Bella codec: every client message parsed, every error case, event frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.bella.codec import (
    SUCCESS_MESSAGE,
    BellaError,
    Status,
    event_frame,
    frame_to_ms,
    ms_to_frame,
    parse_text,
    status_message,
    task_failed,
)
from services.gateway.bella.messages import PING, StartTranscription, StopTranscription


def frame(name: str, payload: Any = None, **header: Any) -> str:
    head = {"message_id": "m", "task_id": "t", "namespace": "SpeechTranscriber", "name": name}
    head.update(header)
    body: dict[str, Any] = {"header": head}
    if payload is not None:
        body["payload"] = payload
    return json.dumps(body)


FULL_START = {
    "format": "pcm",
    "sample_rate": 16000,
    "enable_intermediate_result": True,
    "enable_punctuation_prediction": True,
    "enable_inverse_text_normalization": False,
    "max_sentence_silence": 600,
    "variables": {"name": "Ann"},
    "llm_option": {
        "main": {"model": "qwen", "sys_prompt": "Be brief.", "prompt": "{{x}}", "temperature": 1},
        "workers": [
            {
                "model": "qwen",
                "blocking": True,
                "variable_name": "rewrite",
                "variable_type": "text",
                "sys_prompt": "Rewrite.",
                "prompt": "{{user_message}}",
                "temperature": 0.2,
                "json_schema": {"type": "object"},
            }
        ],
    },
    "tts_option": {"model": "chat-tts", "voice": "zh_female", "sample_rate": 16000},
    "some_future_field": [1, 2, 3],
}


def test_ping() -> None:
    assert parse_text("ping") is PING


def test_full_start_is_parsed() -> None:
    cmd = parse_text(frame("StartTranscription", FULL_START, appkey="default", extra="x"))
    assert isinstance(cmd, StartTranscription)
    p = cmd.payload
    assert cmd.header.task_id == "t" and cmd.header.appkey == "default"
    assert p.sample_rate == 16000 and p.enable_intermediate_result
    assert p.max_sentence_silence == 600 and p.variables == {"name": "Ann"}
    assert p.llm_option is not None and p.llm_option.main is not None
    assert p.llm_option.main.sys_prompt == "Be brief." and p.llm_option.main.temperature == 1.0
    assert p.llm_option.workers[0].blocking and p.llm_option.workers[0].variable_name == "rewrite"
    assert p.tts_option is not None and p.tts_option.voice == "zh_female"
    assert p.tts_option.sample_rate == 16000


def test_minimal_start_takes_defaults() -> None:
    for body in (frame("StartTranscription"), frame("StartTranscription", {})):
        cmd = parse_text(body)
        assert isinstance(cmd, StartTranscription)
        assert cmd.payload.format == "pcm" and cmd.payload.sample_rate == 16000
        assert cmd.payload.llm_option is None and cmd.payload.tts_option is None


def test_stop_is_parsed() -> None:
    cmd = parse_text(frame("StopTranscription", {}))
    assert isinstance(cmd, StopTranscription) and cmd.header.task_id == "t"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("{oops", "malformed_json"),
        ("", "malformed_json"),
        ("[1, 2]", "bad_envelope"),
        ('{"payload": {}}', "bad_envelope"),
        ('{"header": "x"}', "bad_envelope"),
        ('{"header": {"task_id": "t"}}', "bad_header"),
        ('{"header": {"name": 5}}', "bad_header"),
        (frame("StartTranscription", namespace="Other"), "unknown_namespace"),
        (frame("Dance"), "unknown_name"),
        (frame("StartTranscription", {"format": "wav"}), "invalid_payload"),
        (frame("StartTranscription", {"sample_rate": 11025}), "invalid_payload"),
        (frame("StartTranscription", {"sample_rate": "16000"}), "invalid_payload"),
        (frame("StartTranscription", {"sample_rate": 16000.0}), "invalid_payload"),
        (frame("StartTranscription", {"enable_intermediate_result": 1}), "invalid_payload"),
        (frame("StartTranscription", {"max_sentence_silence": 99}), "invalid_payload"),
        (
            frame("StartTranscription", {"llm_option": {"main": {"temperature": -1}}}),
            "invalid_payload",
        ),
        (frame("StartTranscription", {"llm_option": {"workers": {}}}), "invalid_payload"),
        (frame("StartTranscription", {"tts_option": {"sample_rate": 4000}}), "invalid_payload"),
        (frame("StartTranscription", {"variables": []}), "invalid_payload"),
        (frame("StartTranscription", [1]), "invalid_payload"),
    ],
)
def test_errors(text: str, kind: str) -> None:
    with pytest.raises(BellaError) as info:
        parse_text(text)
    assert info.value.kind == kind
    assert info.value.status is Status.CLIENT_ERROR
    assert str(info.value)


def test_error_messages_say_what_is_wrong() -> None:
    with pytest.raises(BellaError) as info:
        parse_text(frame("StartTranscription", {"sample_rate": 44100}))
    assert "payload.sample_rate" in str(info.value) and "44100" in str(info.value)
    assert info.value.task_id == "t"
    with pytest.raises(BellaError) as info:
        parse_text(frame("StartTranscription", {"format": "opus"}))
    assert "unsupported format 'opus'" in str(info.value)


@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        parse_text(text)
    except BellaError:
        pass


def test_event_frame_header() -> None:
    text = event_frame("SentenceEnd", "task", {"result": "你好"}, message_id=lambda: "id-1")
    assert "你好" in text  # not escaped: clients read it as UTF-8
    event = json.loads(text)
    assert event["header"] == {
        "message_id": "id-1",
        "task_id": "task",
        "namespace": "SpeechTranscriber",
        "name": "SentenceEnd",
        "status": 20000000,
        "status_message": "GATEWAY|SUCCESS|Success.",
    }
    assert event["payload"] == {"result": "你好"}
    assert json.loads(event_frame("SESSION_CLOSE", "t"))["payload"] == {}


def test_message_ids_are_fresh() -> None:
    a = json.loads(event_frame("X", "t"))["header"]["message_id"]
    b = json.loads(event_frame("X", "t"))["header"]["message_id"]
    assert a and b and a != b


def test_status_messages() -> None:
    assert status_message(Status.SUCCESS) == SUCCESS_MESSAGE
    assert status_message(Status.CLIENT_ERROR, "bad_request", "no") == "GATEWAY|BAD_REQUEST|no"
    assert status_message(Status.SERVER_ERROR, "timeout", "slow", "LLM") == "LLM|TIMEOUT|slow"


def test_task_failed_frame() -> None:
    err = BellaError("audio before StartTranscription", kind="audio_before_start")
    event = json.loads(task_failed(err, "task-9"))
    assert event["header"]["name"] == "TaskFailed"
    assert event["header"]["status"] == 40000000
    assert event["header"]["task_id"] == "task-9"
    assert event["header"]["status_message"].endswith("audio before StartTranscription")
    server = BellaError("overloaded", kind="overloaded", task_id="own", status=Status.SERVER_ERROR)
    event = json.loads(task_failed(server, "ignored"))
    assert event["header"]["status"] == 50000000 and event["header"]["task_id"] == "own"


@pytest.mark.parametrize(("ms", "frame_index"), [(0, 0), (31, 0), (32, 1), (352, 11), (928, 29)])
def test_ms_to_vad_frames(ms: int, frame_index: int) -> None:
    assert ms_to_frame(ms) == frame_index


@given(st.integers(min_value=0, max_value=10**7))
def test_frames_round_trip(frame_index: int) -> None:
    assert ms_to_frame(frame_to_ms(frame_index)) == frame_index
    assert frame_to_ms(ms_to_frame(frame_to_ms(frame_index) + 31)) == frame_to_ms(frame_index)

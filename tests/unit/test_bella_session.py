"""The Bella adapter: protocol state transitions and the rendering of call events."""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import pytest

from services.gateway.bella.session import BellaSession, BellaState
from services.gateway.call import (
    CallCompleted,
    CallEvent,
    CallFailed,
    CancelReason,
    FirstAudio,
    TurnCancelled,
    TurnFailed,
)
from services.gateway.protocol import BeginCall, EndCall, ForwardAudio, Output, Refused, SendText
from shared.messages import (
    ErrorCode,
    LlmBegin,
    LlmDelta,
    LlmEnd,
    SentenceBegin,
    ServiceName,
    TranscriptFinal,
    TranscriptPartial,
    TtsBegin,
    TtsEnd,
    TtsSegment,
    VadEvent,
    VadState,
)


def session(answer: bool = True) -> BellaSession:
    ids = count(1)
    return BellaSession(answer=answer, new_id=lambda: f"id{next(ids)}")


def msg(name: str, payload: dict[str, Any] | None = None, task_id: str = "task") -> str:
    return json.dumps(
        {
            "header": {"namespace": "SpeechTranscriber", "name": name, "task_id": task_id},
            "payload": payload or {},
        }
    )


def texts(outputs: list[Output]) -> list[dict[str, Any]]:
    return [json.loads(o.text) for o in outputs if isinstance(o, SendText)]


def failed_kind(outputs: list[Output]) -> str:
    events = texts(outputs)
    assert len(events) == 1 and events[0]["header"]["name"] == "TaskFailed"
    assert events[0]["header"]["status"] == 40000000
    refused = [o for o in outputs if isinstance(o, Refused)]
    assert len(refused) == 1
    return refused[0].kind


def started(s: BellaSession, payload: dict[str, Any] | None = None) -> BeginCall:
    outputs = s.on_text(msg("StartTranscription", payload))
    assert len(outputs) == 1 and isinstance(outputs[0], BeginCall)
    event = texts(s.started())[0]
    assert event["header"]["name"] == "TranscriptionStarted"
    assert event["payload"]["session_id"] == s.sid
    return outputs[0]


def test_ping_any_time() -> None:
    s = session()
    assert s.on_text("ping") == [SendText("pong")]
    started(s)
    assert s.on_text("ping") == [SendText("pong")]


def test_start_maps_the_options() -> None:
    s = session()
    begin = started(
        s,
        {
            "sample_rate": 48000,
            "enable_intermediate_result": True,
            "max_sentence_silence": 700,
            "llm_option": {"main": {"sys_prompt": "Be kind.", "temperature": 0.1}},
            "tts_option": {"voice": "amy", "sample_rate": 16000},
        },
    )
    o = begin.options
    assert o.sid == s.sid == "id1" and s.task_id == "task"
    assert (o.client_rate, o.partials, o.vad.silence_duration_ms) == (48000, True, 700)
    assert (o.system_prompt, o.temperature, o.voice, o.tts_rate) == ("Be kind.", 0.1, "amy", 16000)
    assert o.answer is True
    assert s.state is BellaState.STARTED


def test_start_defaults_and_asr_only() -> None:
    s = session(answer=False)
    o = started(s).options
    assert (o.answer, o.client_rate, o.partials, o.voice, o.tts_rate) == (
        False,
        16000,
        False,
        None,
        24000,
    )
    assert o.vad.silence_duration_ms == 500


def test_missing_task_id_gets_one() -> None:
    s = session()
    s.on_text(msg("StartTranscription", task_id=""))
    assert s.task_id == "id1" and s.sid == "id2"


def test_audio_before_start_is_refused_then_forwarded() -> None:
    s = session()
    assert failed_kind(s.on_binary(b"\x00\x00")) == "audio_before_start"
    s.on_text(msg("StartTranscription"))
    # Placement is in progress: still no call to take audio.
    assert failed_kind(s.on_binary(b"\x00\x00")) == "audio_before_start"
    s.started()
    assert s.on_binary(b"\x01\x02") == [ForwardAudio(b"\x01\x02")]


def test_second_start_is_refused() -> None:
    s = session()
    started(s)
    assert failed_kind(s.on_text(msg("StartTranscription"))) == "second_start"
    assert s.state is BellaState.STARTED


def test_stop_needs_the_running_task() -> None:
    s = session()
    assert failed_kind(s.on_text(msg("StopTranscription"))) == "stop_without_task"
    started(s)
    outputs = s.on_text(msg("StopTranscription", task_id="other"))
    assert failed_kind(outputs) == "wrong_task_id"
    assert texts(outputs)[0]["header"]["task_id"] == "task"
    assert s.on_text(msg("StopTranscription")) == [EndCall()]
    assert s.state is BellaState.STOPPING
    assert s.on_binary(b"\x00\x00") == []  # the tail of the client's stream is dropped
    assert failed_kind(s.on_text(msg("StopTranscription"))) == "stop_without_task"


def test_protocol_errors_keep_the_state() -> None:
    s = session()
    started(s)
    for bad in ("{", msg("Nope"), "[]"):
        assert texts(s.on_text(bad))[0]["header"]["name"] == "TaskFailed"
    assert s.state is BellaState.STARTED
    assert texts(s.on_text("{"))[0]["header"]["task_id"] == "task"


def test_start_failed_is_a_server_error() -> None:
    s = session()
    s.on_text(msg("StartTranscription"))
    event = texts(s.start_failed(ErrorCode.OVERLOADED, "overloaded: no asr replica"))[0]
    assert event["header"]["name"] == "TaskFailed"
    assert event["header"]["status"] == 50000000
    assert "overloaded" in event["header"]["status_message"]
    assert s.state is BellaState.CLOSED


def render(event: CallEvent) -> list[dict[str, Any]]:
    s = session()
    started(s)
    return [json.loads(t) for t in s.render(event)]


def one(event: CallEvent) -> tuple[str, int, dict[str, Any]]:
    (e,) = render(event)
    assert e["header"]["task_id"] == "task" and e["header"]["namespace"] == "SpeechTranscriber"
    return e["header"]["name"], e["header"]["status"], e["payload"]


def test_vad_event() -> None:
    name, status, p = one(
        VadEvent(sid="s", state=VadState.SPEAKING, start_ms=352, end_ms=928, timestamp=17.5)
    )
    assert (name, status) == ("VOICE_SPEAKING", 20000000)
    assert p == {
        "start_frame": 11,
        "end_frame": 29,
        "duration": 576,
        "data": None,
        "timestamp": 17.5,
        "latency": -1,
    }


@pytest.mark.parametrize("state", list(VadState))
def test_every_vad_state_has_a_name(state: VadState) -> None:
    name, _, _ = one(VadEvent(sid="s", state=state, start_ms=0, end_ms=0, timestamp=0))
    assert name in {
        "VOICE_QUIET",
        "VOICE_STARTING",
        "VOICE_SPEAKING",
        "VOICE_STOPPING",
        "VOICE_PAUSING",
    }


def test_sentence_events() -> None:
    assert one(SentenceBegin(sid="s", index=2, begin_ms=300)) == (
        "SentenceBegin",
        20000000,
        {"index": 2, "time": 300, "begin_time": 300},
    )
    name, _, p = one(TranscriptPartial(sid="s", index=2, begin_ms=300, end_ms=900, text="hel"))
    assert name == "TranscriptionResultChanged"
    assert p == {
        "index": 2,
        "time": 900,
        "begin_time": 300,
        "result": "hel",
        "words": [],
        "confidence": 0.0,
    }
    name, _, p = one(
        TranscriptFinal(sid="s", index=2, begin_ms=300, end_ms=1200, text="hello", confidence=0.8)
    )
    assert name == "SentenceEnd"
    assert (p["result"], p["time"], p["begin_time"], p["confidence"]) == ("hello", 1200, 300, 0.8)


def test_llm_and_tts_events() -> None:
    assert one(LlmBegin(sid="s", turn=1))[0] == "LLM_CHAT_BEGIN"
    assert one(LlmDelta(sid="s", turn=1, seq=1, text="Hi"))[2]["data"] == "Hi"
    name, _, p = one(LlmEnd(sid="s", turn=1, text="Hi there", ttft_ms=80.0))
    assert (name, p["data"]) == ("LLM_CHAT_END", "Hi there")
    cancelled = TurnCancelled(1, CancelReason.TURN_DETECTED, "", "", 0.0)
    assert one(cancelled)[0] == "LLM_CHAT_CANCELLED"
    assert one(TtsBegin(sid="s", turn=1))[0] == "TTS_BEGIN"
    assert one(FirstAudio(1, 412.6))[::2] == ("TTS_TTFT", {"data": None, "latency": 413})
    assert one(FirstAudio(1, None))[2]["latency"] == -1
    name, _, p = one(TtsSegment(sid="s", turn=1, index=0, text="Hi there."))
    assert (name, p["data"]) == ("TTS_DELTA", "Hi there.")
    assert one(TtsEnd(sid="s", turn=1, segments=1, audio_ms=800.0))[0] == "TTS_END"


def test_turn_failures() -> None:
    name, status, p = one(TurnFailed(1, ServiceName.LLM, ErrorCode.ENGINE_FAILED, "boom"))
    assert (name, status, p["message"]) == ("LLM_CHAT_ERROR", 50000000, "boom")
    name, status, _ = one(TurnFailed(1, ServiceName.TTS, ErrorCode.ENGINE_FAILED, "boom"))
    assert (name, status) == ("TTS_END", 50000000)


def test_call_endings() -> None:
    names = [e["header"]["name"] for e in render(CallCompleted())]
    assert names == ["TranscriptionCompleted", "SESSION_CLOSE"]
    events = render(CallFailed(ServiceName.ASR, ErrorCode.UNKNOWN_SESSION, "lost"))
    assert [e["header"]["name"] for e in events] == ["TranscriptionFailed", "SESSION_CLOSE"]
    assert events[0]["header"]["status"] == 50000000
    assert events[0]["header"]["status_message"] == "ASR|UNKNOWN_SESSION|lost"
    events = render(CallFailed(ServiceName.TTS, ErrorCode.BAD_REQUEST, "unknown voice x"))
    assert events[0]["header"]["name"] == "TaskFailed"
    assert events[0]["header"]["status"] == 40000000
    events = render(CallFailed(None, ErrorCode.TIMEOUT, "no audio for 60 s"))
    assert events[0]["header"]["status_message"] == "GATEWAY|TIMEOUT|no audio for 60 s"

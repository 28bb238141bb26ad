"""The Coze adapter: chat.update, lazy call placement, commands, and a turn's events."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

from services.gateway.call import (
    CallCore,
    CancelReason,
    CommandFailed,
    InputCommitted,
    SpeechStarted,
    SpeechStopped,
    TurnCancelled,
    TurnFailed,
    TurnStarted,
    UserItem,
)
from services.gateway.coze.session import CozePhase, CozeSession
from services.gateway.openai.g711 import ulaw_to_pcm16
from services.gateway.personas import builtin_personas
from services.gateway.protocol import (
    BeginCall,
    CancelResponse,
    ClearInput,
    CommitInput,
    DeleteItem,
    ForwardAudio,
    Output,
    Refused,
    Respond,
    SendText,
    UpdateCall,
)
from shared.messages import (
    ErrorCode,
    LlmDelta,
    LlmEnd,
    ServiceName,
    TranscriptFinal,
    TranscriptPartial,
    TtsEnd,
    TtsSegment,
)

SID = "conv1"


def _session(bot_id: str = "7480061") -> CozeSession:
    counter = itertools.count()
    return CozeSession({"bot_id": [bot_id]}, new_id=lambda: f"e{next(counter)}", clock=lambda: 1.0)


def _send(session: CozeSession, event_type: str, data: Any = None) -> list[Output]:
    frame: dict[str, Any] = {"id": "c1", "event_type": event_type}
    if data is not None:
        frame["data"] = data
    return session.on_text(json.dumps(frame))


def _events(outputs: list[Output] | list[str]) -> list[dict[str, Any]]:
    texts = [o.text if isinstance(o, SendText) else o for o in outputs]
    return [json.loads(t) for t in texts if isinstance(t, str)]


def _types(outputs: list[Output] | list[str]) -> list[str]:
    return [e["event_type"] for e in _events(outputs)]


def _append(session: CozeSession, pcm: bytes) -> list[Output]:
    return _send(session, "input_audio_buffer.append", {"delta": base64.b64encode(pcm).decode()})


def _started(session: CozeSession) -> None:
    out = _append(session, b"\0\0")
    assert isinstance(out[0], BeginCall)
    session.started()


def test_connect_announces_the_chat() -> None:
    [created] = _events(_session().opened())
    assert created["event_type"] == "chat.created"


def test_update_is_echoed_and_shapes_the_call() -> None:
    session = _session()
    update = {
        "chat_config": {"conversation_id": SID, "parameters": {"name": "Ann"}},
        "input_audio": {"format": "pcm", "codec": "pcm", "sample_rate": 16000},
        "output_audio": {"codec": "pcm", "pcm_config": {"sample_rate": 16000}, "voice_id": "en"},
        "turn_detection": {"type": "server_vad", "prefix_padding_ms": 600},
    }
    [updated] = _events(_send(session, "chat.update", update))
    assert updated["event_type"] == "chat.updated"
    assert updated["data"]["input_audio"]["sample_rate"] == 16000
    assert updated["data"]["turn_detection"]["type"] == "server_vad"
    out = _append(session, b"\x01\x00" * 160)
    assert isinstance(out[0], BeginCall) and out[1] == ForwardAudio(b"\x01\x00" * 160)
    options = out[0].options
    assert (options.sid, options.client_rate, options.tts_rate) == (SID, 16000, 16000)
    assert (options.manual, options.voice, options.vad.prefix_padding_ms) == (False, "en", 600)
    assert options.variables == {"name": "Ann"}
    CallCore(options).open()  # the wire messages accept what the adapter asked for


def test_default_is_client_interrupt_with_complete() -> None:
    session = _session()
    _started(session)
    assert session.phase is CozePhase.ACTIVE
    assert _send(session, "input_audio_buffer.complete") == [CommitInput()]
    assert _send(session, "input_audio_buffer.clear") == [ClearInput()]
    assert _types(session.render(InputCommitted("item_1"))) == ["input_audio_buffer.completed"]


def test_complete_in_server_vad_mode_is_an_error() -> None:
    session = _session()
    _send(session, "chat.update", {"turn_detection": {"type": "server_vad"}})
    out = _send(session, "input_audio_buffer.complete")
    assert _events(out)[0]["data"]["code"] == 4003 and isinstance(out[-1], Refused)


def test_bot_id_naming_a_preset_selects_the_persona() -> None:
    session = _session("qingqing")
    out = _append(session, b"\0\0")
    assert isinstance(out[0], BeginCall)
    assert out[0].options.system_prompt == builtin_personas().select("qingqing").system_prompt


def test_g711_input_and_output() -> None:
    session = _session()
    _send(
        session,
        "chat.update",
        {"input_audio": {"codec": "g711u", "format": "pcm"}, "output_audio": {"codec": "g711u"}},
    )
    out = _append(session, b"\xff" * 80)
    assert isinstance(out[0], BeginCall)
    assert (out[0].options.client_rate, out[0].options.tts_rate) == (8000, 8000)
    assert out[1] == ForwardAudio(ulaw_to_pcm16(b"\xff" * 80))
    session.started()
    session.render(TurnStarted(1, "item_a", None))
    [delta] = _events(session.render_audio(1, b"\x00\x10" * 40, 8000))
    assert delta["event_type"] == "conversation.audio.delta"
    assert len(base64.b64decode(delta["data"]["content"])) == 40  # one byte per sample


def test_opus_and_semantic_vad_are_refused_clearly() -> None:
    session = _session()
    for data in (
        {"output_audio": {"codec": "opus", "opus_config": {"bitrate": 16000}}},
        {"input_audio": {"codec": "opus"}},
        {"turn_detection": {"type": "semantic_vad"}},
    ):
        out = _send(session, "chat.update", data)
        [error] = _events(out)
        assert error["event_type"] == "error" and error["data"]["code"] == 4002
        assert "not supported" in error["data"]["msg"]


def test_formats_lock_once_the_call_runs_but_the_voice_changes() -> None:
    session = _session()
    _started(session)
    out = _send(session, "chat.update", {"input_audio": {"sample_rate": 24000}})
    assert _events(out)[0]["data"]["code"] == 4003
    out = _send(session, "chat.update", {"output_audio": {"voice_id": "zh_male"}})
    assert out[0] == UpdateCall(voice="zh_male")
    assert _types(out) == ["chat.updated"]


def test_subscriptions_filter_events() -> None:
    session = _session()
    _send(session, "chat.update", {"event_subscriptions": ["conversation.audio.delta"]})
    _started(session)
    assert session.render(SpeechStarted("item_1", 0)) == []
    assert session.render(TurnStarted(1, "item_a", None)) == []
    assert _types(session.render_audio(1, b"\0\0", 24000)) == ["conversation.audio.delta"]
    out = _send(session, "chat.update", {"event_subscriptions": ["nope.event"]})
    assert out == [Refused("bad_subscriptions")]  # error is not subscribed: nothing is sent


def test_cancel_message_and_clear() -> None:
    session = _session()
    assert _send(session, "conversation.chat.cancel") == []  # nothing runs yet
    out = _send(
        session,
        "conversation.message.create",
        {"role": "user", "content_type": "text", "content": "讲个笑话"},
    )
    assert isinstance(out[0], BeginCall) and out[1:] == [CancelResponse(), Respond("讲个笑话")]
    session.started()
    assert _send(session, "conversation.chat.cancel") == [CancelResponse()]
    session.render(UserItem("item_u", "讲个笑话", spoken=False))
    session.render(TurnStarted(1, "item_a", "item_u"))
    out = _send(session, "conversation.clear")
    assert out[:3] == [CancelResponse(), DeleteItem("item_u"), DeleteItem("item_a")]
    assert _types(out) == ["conversation.cleared"]
    assert session.render(CommandFailed("delete", "unknown_item", "gone")) == []
    out = _send(
        session,
        "conversation.message.create",
        {"role": "assistant", "content_type": "text", "content": "x"},
    )
    assert _events(out)[0]["data"]["code"] == 4002


def test_binary_frames_are_refused() -> None:
    out = _session().on_binary(b"\0\0")
    assert _events(out)[0]["event_type"] == "error" and out[-1] == Refused("binary_frame")


def test_a_turn_renders_in_coze_order() -> None:
    session = _session()
    _send(session, "chat.update", {"turn_detection": {"type": "server_vad"}})
    _started(session)
    out: list[str] = []
    out += session.render(SpeechStarted("item_u", 100))
    out += session.render(TranscriptPartial(sid=SID, index=0, begin_ms=0, end_ms=500, text="你"))
    out += session.render(SpeechStopped("item_u", 900))
    out += session.render(InputCommitted("item_u"))  # server VAD: no completed event
    out += session.render(TranscriptFinal(sid=SID, index=0, begin_ms=0, end_ms=900, text="你好"))
    out += session.render(TurnStarted(1, "item_a", "item_u"))
    out += session.render(LlmDelta(sid=SID, turn=1, seq=1, text="嗨！"))
    out += session.render(TtsSegment(sid=SID, turn=1, index=0, text="嗨！"))
    out += session.render_audio(1, b"\x01\x00" * 10, 24000)
    out += session.render(LlmEnd(sid=SID, turn=1, text="嗨！", ttft_ms=5.0))
    out += session.render(TtsEnd(sid=SID, turn=1, segments=1, audio_ms=1.0))
    events = _events(out)
    assert [e["event_type"] for e in events] == [
        "input_audio_buffer.speech_started",
        "conversation.audio_transcript.update",
        "input_audio_buffer.speech_stopped",
        "conversation.audio_transcript.completed",
        "conversation.chat.created",
        "conversation.chat.in_progress",
        "conversation.message.delta",
        "conversation.audio.sentence_start",
        "conversation.audio.delta",
        "conversation.message.completed",
        "conversation.audio.completed",
        "conversation.chat.completed",
    ]
    by_type = {e["event_type"]: e["data"] for e in events}
    assert by_type["conversation.audio_transcript.completed"] == {"content": "你好"}
    chat = by_type["conversation.chat.created"]
    assert by_type["conversation.message.delta"]["chat_id"] == chat["id"]
    assert by_type["conversation.message.delta"]["content"] == "嗨！"
    audio = by_type["conversation.audio.delta"]
    assert base64.b64decode(audio["content"]) == b"\x01\x00" * 10
    assert audio["content_type"] == "audio" and audio["id"] == "item_a"
    assert by_type["conversation.chat.completed"]["status"] == "completed"


def test_cancel_and_failure_events() -> None:
    session = _session()
    _started(session)
    session.render(TurnStarted(1, "item_a", None))
    out = session.render(TurnCancelled(1, CancelReason.CLIENT_CANCELLED, "item_a", "", 0.0))
    [canceled] = _events(out)
    assert canceled["event_type"] == "conversation.chat.canceled"
    assert canceled["data"]["status"] == "canceled"
    session.render(TurnStarted(2, "item_b", None))
    out = session.render(TurnFailed(2, ServiceName.TTS, ErrorCode.ENGINE_FAILED, "no voice"))
    assert _types(out) == ["error", "conversation.chat.failed"]
    failed = session.start_failed(ErrorCode.OVERLOADED, "full")
    assert _events(failed)[0]["data"] == {"code": 5003, "msg": "full"}


def test_audio_released_after_the_chat_completed_still_goes_out() -> None:
    session = _session()
    _started(session)
    session.render(TurnStarted(1, "item_a", None))
    session.render(TtsEnd(sid=SID, turn=1, segments=1, audio_ms=1.0))
    assert _types(session.render_audio(1, b"\0\0", 24000)) == ["conversation.audio.delta"]

"""The OpenAI Realtime adapter: client events -> commands, call events -> server events.

Every server frame the adapter produces here is validated with the official SDK's
model of that event (GA or beta), so what we send is what the SDK parses.
"""

from __future__ import annotations

import base64
import itertools
import json
import typing
from typing import Any

import numpy as np
import pytest
from openai.types import realtime as ga_types
from openai.types.beta import realtime as beta_types
from pydantic import BaseModel

from services.gateway.call import (
    CallCompleted,
    CallEvent,
    CallFailed,
    CancelReason,
    CommandFailed,
    InputCleared,
    InputCommitted,
    ItemDeleted,
    ItemTruncated,
    SpeechStarted,
    SpeechStopped,
    TurnCancelled,
    TurnFailed,
    TurnStarted,
    UserItem,
)
from services.gateway.openai import g711
from services.gateway.openai.session import OpenAiSession, Phase
from services.gateway.protocol import (
    AddUserText,
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
    TruncateItem,
    UpdateCall,
)
from shared.messages import (
    ErrorCode,
    LlmBegin,
    LlmDelta,
    LlmEnd,
    ServiceName,
    TranscriptFinal,
    TranscriptPartial,
    TtsBegin,
    TtsEnd,
    TtsSegment,
)

SID = "x"


def _sdk_table(union: Any) -> dict[str, type[BaseModel]]:
    """Event type name -> the SDK model of that server event."""
    members = typing.get_args(union)
    if typing.get_origin(union) is typing.Annotated:
        members = typing.get_args(members[0])
    table: dict[str, type[BaseModel]] = {}
    for cls in members:
        for name in typing.get_args(cls.model_fields["type"].annotation):
            table[name] = cls
    return table


GA_EVENTS = _sdk_table(ga_types.RealtimeServerEvent)
BETA_EVENTS = _sdk_table(beta_types.RealtimeServerEvent)


class Client:
    """A session plus every server frame it produced, each checked with the SDK."""

    def __init__(self, **kwargs: Any) -> None:
        counter = itertools.count(1)
        self.session = OpenAiSession(new_id=lambda p: f"{p}_{next(counter)}", **kwargs)
        self.table = BETA_EVENTS if self.session.beta else GA_EVENTS
        self.frames: list[dict[str, Any]] = []
        self.commands: list[Output] = []
        self._take(self.session.opened())

    def _check(self, text: str) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(text)
        model = self.table.get(frame["type"])
        assert model is not None, f"the SDK knows no server event {frame['type']!r}"
        model.model_validate(frame)
        self.frames.append(frame)
        return frame

    def _take(self, outputs: list[Output]) -> list[Output]:
        for out in outputs:
            if isinstance(out, SendText):
                self._check(out.text)
            else:
                self.commands.append(out)
        return outputs

    def send(self, event: dict[str, Any]) -> list[Output]:
        return self._take(self.session.on_text(json.dumps(event)))

    def start(self) -> None:
        """Place the call (as the connection would) with a first audio chunk."""
        outputs = self.send(_append(b"\x00\x00" * 2400))
        assert isinstance(outputs[0], BeginCall)
        self._take(self.session.started())

    def render(self, *events: CallEvent) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in events:
            for text in self.session.render(event):
                assert isinstance(text, str)
                out.append(self._check(text))
        return out

    def audio(self, turn: int, pcm: bytes, rate: int = 24000) -> list[dict[str, Any]]:
        out = []
        for text in self.session.render_audio(turn, pcm, rate):
            assert isinstance(text, str)
            out.append(self._check(text))
        return out

    def last(self) -> dict[str, Any]:
        return self.frames[-1]


def _append(pcm: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}


def _types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


def _error(outputs: list[Output]) -> dict[str, Any]:
    texts = [o for o in outputs if isinstance(o, SendText)]
    assert len(texts) == 1 and any(isinstance(o, Refused) for o in outputs)
    frame = json.loads(texts[0].text)
    assert frame["type"] == "error"
    return dict(frame["error"])


def _spoken_turn(turn: int = 1, user: str = "item_u", answer: str = "item_a") -> list[CallEvent]:
    return [
        SpeechStarted(user, 120),
        TranscriptPartial(sid=SID, index=0, begin_ms=120, end_ms=400, text="what"),
        TranscriptPartial(sid=SID, index=0, begin_ms=120, end_ms=600, text="what time"),
        SpeechStopped(user, 980),
        InputCommitted(user),
        TranscriptFinal(sid=SID, index=0, begin_ms=120, end_ms=980, text="What time is it?"),
        UserItem(user, "What time is it?", spoken=True),
        TurnStarted(turn, answer, user),
        LlmBegin(sid=SID, turn=turn),
        LlmDelta(sid=SID, turn=turn, seq=1, text="It is "),
        TtsBegin(sid=SID, turn=turn),
        TtsSegment(sid=SID, turn=turn, index=0, text="It is"),
    ]


# --------------------------------------------------------------------------- session


def test_session_created_on_connect_in_both_shapes() -> None:
    ga = Client()
    created = ga.frames[0]
    assert created["type"] == "session.created"
    assert created["session"]["id"].startswith("sess_")
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    beta = Client(beta=True)
    assert beta.frames[0]["session"]["input_audio_format"] == "pcm16"
    assert not ga.commands and not beta.commands  # no call before the client needs one


def test_first_update_shapes_the_call_placed_by_the_first_audio() -> None:
    c = Client(model="gpt-realtime")
    c.send(
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "Answer in one sentence.",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcmu"},
                        "turn_detection": {
                            "type": "server_vad",
                            "threshold": 0.6,
                            "prefix_padding_ms": 200,
                            "silence_duration_ms": 700,
                            "create_response": False,
                            "interrupt_response": False,
                        },
                    },
                    "output": {"format": {"type": "audio/pcma"}, "voice": "zh_female"},
                },
                "max_output_tokens": 300,
            },
        }
    )
    updated = c.last()
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert updated["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 700
    assert not c.commands
    outputs = c.send(_append(b"\xff" * 800))
    begin, forward = outputs
    assert isinstance(begin, BeginCall) and isinstance(forward, ForwardAudio)
    o = begin.options
    assert (o.client_rate, o.tts_rate, o.voice, o.max_tokens) == (8000, 8000, "zh_female", 300)
    assert (o.vad.threshold, o.vad.prefix_padding_ms, o.vad.silence_duration_ms) == (0.6, 200, 700)
    assert (o.manual, o.auto_respond, o.interrupt, o.answer) == (False, False, False, True)
    assert o.system_prompt == "Answer in one sentence."
    assert o.llm_model is None  # OpenAI's own model names mean our default
    assert o.sid == c.session.session_id
    assert forward.pcm == bytes(1600)  # mu-law silence decoded to PCM16 at 8 kHz
    assert c.session.phase is Phase.STARTING


def test_manual_turns_and_beta_formats() -> None:
    c = Client(beta=True)
    c.send(
        {
            "type": "session.update",
            "session": {
                "input_audio_format": "g711_alaw",
                "output_audio_format": "pcm16",
                "turn_detection": None,
                "voice": "alloy",
                "temperature": 0.5,
                "model": "qwen-flash",
            },
        }
    )
    assert c.last()["session"]["turn_detection"] is None
    begin = c.send(_append(b"\xd5" * 400))[0]
    assert isinstance(begin, BeginCall)
    o = begin.options
    assert (o.manual, o.auto_respond, o.client_rate, o.tts_rate) == (True, False, 8000, 24000)
    assert (o.voice, o.temperature, o.llm_model) == (None, 0.5, "qwen-flash")


def test_semantic_vad_is_served_by_server_vad() -> None:
    c = Client()
    c.send(
        {
            "type": "session.update",
            "session": {
                "audio": {
                    "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}
                }
            },
        }
    )
    assert c.last()["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
    begin = c.send(_append(bytes(4800)))[0]
    assert isinstance(begin, BeginCall) and begin.options.vad.silence_duration_ms == 300


@pytest.mark.parametrize(
    "session",
    [
        {"type": "transcription"},
        {"type": "transcription", "audio": {"input": {"transcription": {"model": "whisper-1"}}}},
    ],
)
def test_transcription_sessions_do_not_answer(session: dict[str, Any]) -> None:
    c = Client()
    c.send({"type": "session.update", "session": session})
    assert c.last()["session"]["type"] == "transcription"
    begin = c.send(_append(bytes(4800)))[0]
    assert isinstance(begin, BeginCall) and not begin.options.answer
    assert begin.options.asr_model is None
    err = _error(c.send({"type": "response.create", "event_id": "e1"}))
    assert (err["code"], err["event_id"]) == ("invalid_state", "e1")


def test_intent_transcription_and_the_beta_transcription_update() -> None:
    c = Client(kind="transcription")
    assert c.frames[0]["session"]["type"] == "transcription"
    b = Client(beta=True)
    b.send(
        {
            "type": "transcription_session.update",
            "session": {"input_audio_transcription": {"language": "zh"}},
        }
    )
    begin = b.send(_append(bytes(4800)))[0]
    assert isinstance(begin, BeginCall)
    assert (begin.options.answer, begin.options.language) == (False, "zh")


def test_session_start_alias_of_seed_001() -> None:
    c = Client()
    c.send(
        {
            "type": "session.start",
            "session": {
                "model": "doubao-realtime-voice-v1",
                "language": "zh",
                "voice": "zh_female_cancan_mars_bigtts",
                "instructions": "你是一位招生顾问",
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 600},
            },
        }
    )
    assert c.last()["type"] == "session.updated"
    begin = c.send(_append(bytes(4800)))[0]
    assert isinstance(begin, BeginCall)
    o = begin.options
    assert (o.language, o.voice, o.system_prompt) == (
        "zh",
        "zh_female_cancan_mars_bigtts",
        "你是一位招生顾问",
    )
    assert o.vad.silence_duration_ms == 600


def test_bad_settings_are_refused_with_their_param() -> None:
    c = Client()
    err = _error(
        c.send(
            {
                "type": "session.update",
                "event_id": "u1",
                "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
            }
        )
    )
    assert (err["code"], err["param"], err["event_id"]) == (
        "invalid_value",
        "session.audio.input.format.rate",
        "u1",
    )
    tools = [{"type": "function", "name": "f", "parameters": {}}]
    err = _error(c.send({"type": "session.update", "session": {"tools": tools}}))
    assert (err["code"], err["param"]) == ("unsupported_feature", "session.tools")
    # Nothing was applied.
    assert c.session.config.input_format.rate == 24000


def test_mid_call_updates_change_what_can_change() -> None:
    c = Client()
    c.start()
    outputs = c.send(
        {
            "type": "session.update",
            "session": {
                "instructions": "Be terse.",
                "audio": {"output": {"voice": "alloy"}, "input": {"format": {"type": "audio/pcm"}}},
            },
        }
    )
    assert outputs[0] == UpdateCall(system_prompt="Be terse.", voice="auto")
    assert c.last()["type"] == "session.updated"
    err = _error(
        c.send(
            {
                "type": "session.update",
                "session": {"audio": {"input": {"turn_detection": None}}},
            }
        )
    )
    assert (err["code"], err["param"]) == (
        "session_setting_locked",
        "session.audio.input.turn_detection",
    )


# --------------------------------------------------------------------------- a spoken turn


def test_a_spoken_turn_with_server_vad_in_ga_events() -> None:
    c = Client()
    c.start()
    frames = c.render(*_spoken_turn())
    pcm = (np.sin(np.arange(2400) / 5) * 3000).astype("<i2").tobytes()
    frames += c.audio(1, pcm)
    frames += c.render(
        LlmEnd(sid=SID, turn=1, text="It is noon.", ttft_ms=80, tokens=5),
        TtsEnd(sid=SID, turn=1, segments=1, audio_ms=100),
        CallCompleted(),
    )
    assert _types(frames) == [
        "input_audio_buffer.speech_started",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    by_type = {f["type"]: f for f in frames}
    assert by_type["input_audio_buffer.speech_started"]["item_id"] == "item_u"
    assert by_type["input_audio_buffer.speech_started"]["audio_start_ms"] == 120
    assert by_type["input_audio_buffer.committed"]["item_id"] == "item_u"
    deltas = [f["delta"] for f in frames if f["type"].endswith("transcription.delta")]
    assert deltas == ["what", " time"]
    completed = by_type["conversation.item.input_audio_transcription.completed"]
    assert completed["transcript"] == "What time is it?"
    assert completed["usage"] == {"type": "duration", "seconds": 0.86}
    created = by_type["response.created"]["response"]
    assert created["status"] == "in_progress"
    response_id = created["id"]
    assistant = frames[10]
    assert assistant["item"]["id"] == "item_a" and assistant["previous_item_id"] == "item_u"
    audio = by_type["response.output_audio.delta"]
    assert (audio["response_id"], audio["item_id"]) == (response_id, "item_a")
    assert base64.b64decode(audio["delta"]) == pcm
    done = by_type["response.done"]["response"]
    assert (done["id"], done["status"]) == (response_id, "completed")
    assert done["output"][0]["content"][0] == {"type": "output_audio", "transcript": "It is noon."}
    assert done["usage"]["output_tokens"] == 5
    assert by_type["response.output_audio_transcript.done"]["transcript"] == "It is noon."
    # The conversation as the client can retrieve it.
    c.send({"type": "conversation.item.retrieve", "item_id": "item_u"})
    retrieved = c.last()
    assert retrieved["type"] == "conversation.item.retrieved"
    assert retrieved["item"]["content"][0]["transcript"] == "What time is it?"


def test_a_spoken_turn_in_beta_events() -> None:
    c = Client(beta=True)
    c.start()
    frames = c.render(*_spoken_turn())
    frames += c.audio(1, bytes(480))
    frames += c.render(
        LlmEnd(sid=SID, turn=1, text="It is noon.", ttft_ms=80),
        TtsEnd(sid=SID, turn=1, segments=1, audio_ms=10),
    )
    names = _types(frames)
    assert "conversation.item.created" in names and "conversation.item.added" not in names
    assert "conversation.item.done" not in names
    assert names[-7:] == [
        "response.audio_transcript.delta",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    done = frames[-1]["response"]
    assert done["output"][0]["content"][0]["type"] == "audio"
    assert done["modalities"] == ["audio", "text"]


def test_text_only_responses() -> None:
    c = Client()
    c.send({"type": "session.update", "session": {"output_modalities": ["text"]}})
    c.start()
    frames = c.render(TurnStarted(1, "item_a", None), LlmDelta(sid=SID, turn=1, seq=1, text="Hi"))
    assert c.audio(1, bytes(480)) == []  # no audio in a text response
    frames += c.render(
        LlmEnd(sid=SID, turn=1, text="Hi", ttft_ms=1),
        TtsEnd(sid=SID, turn=1, segments=0, audio_ms=0),
    )
    assert "response.output_text.delta" in _types(frames)
    assert "response.output_text.done" in _types(frames)
    assert frames[-1]["response"]["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "Hi",
    }


def test_g711_reply_audio() -> None:
    c = Client()
    c.send(
        {
            "type": "session.update",
            "session": {"audio": {"output": {"format": {"type": "audio/pcmu"}}}},
        }
    )
    c.start()
    c.render(TurnStarted(1, "item_a", None))
    pcm8k = np.array([0, 1000, -1000, 32767], dtype="<i2").tobytes()
    delta = base64.b64decode(c.audio(1, pcm8k, 8000)[0]["delta"])
    assert delta == g711.pcm16_to_ulaw(pcm8k)
    # A TTS rate other than the wire rate is resampled (24 kHz -> 8 kHz: a third).
    total = sum(len(base64.b64decode(f["delta"])) for f in c.audio(1, bytes(48000), 24000))
    assert 7000 <= total <= 8000


# --------------------------------------------------------------------------- cancelling


def test_barge_in_cancels_with_turn_detected_and_nothing_follows() -> None:
    c = Client()
    c.start()
    c.render(*_spoken_turn())
    c.audio(1, bytes(4800))
    frames = c.render(
        SpeechStarted("item_u2", 3000),
        TurnCancelled(1, CancelReason.TURN_DETECTED, "item_a", "It is", 100.0),
    )
    assert _types(frames) == [
        "input_audio_buffer.speech_started",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    done = frames[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert done["output"][0]["status"] == "incomplete"
    assert done["output"][0]["content"][0]["transcript"] == "It is"
    # Late results of the cancelled turn say nothing.
    assert c.render(LlmDelta(sid=SID, turn=1, seq=2, text="noon")) == []
    assert c.audio(1, bytes(4800)) == []
    assert c.render(TtsEnd(sid=SID, turn=1, segments=1, audio_ms=10)) == []
    # Long after (the turn is no longer tracked), still nothing.
    for turn in range(2, 8):
        c.render(TurnStarted(turn, f"item_{turn}", None))
    assert c.audio(1, bytes(4800)) == []
    assert c.render(LlmDelta(sid=SID, turn=1, seq=3, text="late")) == []


def test_client_cancel_and_cancel_before_the_answer_began() -> None:
    c = Client()
    assert c.send({"type": "response.cancel"}) == []  # harmless before any call
    c.start()
    assert c.send({"type": "response.create"}) == [Respond()]
    assert c.send({"type": "response.cancel"}) == [CancelResponse()]
    frames = c.render(
        TurnStarted(1, "item_a", None),
        TurnCancelled(1, CancelReason.CLIENT_CANCELLED, "item_a", "", 0.0),
    )
    assert _types(frames)[0] == "response.created"
    assert frames[-1]["response"]["status_details"]["reason"] == "client_cancelled"
    # A call that ends under an answer: cancelled, with no OpenAI reason.
    frames = c.render(TurnCancelled(2, CancelReason.CALL_ENDED, "item_b", "", 0.0))
    assert _types(frames)[0] == "response.created"
    assert frames[-1]["response"]["status_details"] == {"type": "cancelled"}


def test_failed_turn_and_failed_call() -> None:
    c = Client()
    c.start()
    frames = c.render(
        TurnStarted(1, "item_a", None),
        TurnFailed(1, ServiceName.TTS, ErrorCode.ENGINE_FAILED, "synthesis failed"),
    )
    failed = frames[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["status_details"]["error"]["code"] == "engine_failed"
    frames = c.render(CallFailed(None, ErrorCode.TIMEOUT, "no audio for 60 s"))
    assert frames[-1]["error"] == {
        "type": "server_error",
        "code": "timeout",
        "message": "no audio for 60 s",
    }


def test_start_failed_is_an_error_event() -> None:
    c = Client()
    begin = c.send({"type": "response.create"})[0]
    assert isinstance(begin, BeginCall)
    c._take(c.session.start_failed(ErrorCode.UNKNOWN_MODEL, "no model 'x'"))
    assert c.last()["error"]["type"] == "invalid_request_error"
    assert c.session.phase is Phase.CLOSED
    assert c.send({"type": "response.create"}) == []  # the connection is closing


# --------------------------------------------------------------------------- manual input


def test_manual_commit_and_clear() -> None:
    c = Client()
    c.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    err = _error(c.send({"type": "input_audio_buffer.commit", "event_id": "c0"}))
    assert (err["code"], err["event_id"]) == ("input_audio_buffer_commit_empty", "c0")
    cleared = c.send({"type": "input_audio_buffer.clear"})  # nothing to clear, no call
    assert len(cleared) == 1 and c.last()["type"] == "input_audio_buffer.cleared"
    c.start()  # 100 ms of audio
    assert c.send({"type": "input_audio_buffer.commit"}) == [CommitInput()]
    frames = c.render(
        SpeechStarted("item_u", 0),  # manual mode: OpenAI sends no speech events
        InputCommitted("item_u"),
        UserItem("item_u", "hello", spoken=True),
    )
    assert _types(frames) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    c.send(_append(bytes(4800)))
    assert c.send({"type": "input_audio_buffer.clear"}) == [ClearInput()]
    assert _types(c.render(InputCleared())) == ["input_audio_buffer.cleared"]
    assert _error(c.send({"type": "input_audio_buffer.commit"}))["code"] == (
        "input_audio_buffer_commit_empty"
    )


def test_binary_frames_and_bad_base64() -> None:
    c = Client()
    assert _error(c.session.on_binary(b"\x00\x01"))["code"] == "binary_not_supported"
    bad = {"type": "input_audio_buffer.append", "audio": "!!", "event_id": "a1"}
    err = _error(c.send(bad))
    assert (err["code"], err["event_id"], err["param"]) == ("invalid_audio", "a1", "audio")
    assert c.session.phase is Phase.IDLE


# --------------------------------------------------------------------------- items


def _user_text(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id:
        item["id"] = item_id
    return {"type": "conversation.item.create", "item": item}


def test_typed_messages_truncate_delete_and_retrieve() -> None:
    c = Client()
    outputs = c.send(_user_text("Hello there", "msg_1"))
    assert isinstance(outputs[0], BeginCall)
    assert outputs[1] == AddUserText("Hello there", "msg_1")
    c._take(c.session.started())
    frames = c.render(UserItem("msg_1", "Hello there", spoken=False))
    assert _types(frames) == ["conversation.item.added", "conversation.item.done"]
    assert frames[0]["item"]["content"] == [{"type": "input_text", "text": "Hello there"}]
    assert _error(c.send(_user_text("again", "msg_1")))["code"] == "invalid_value"
    assistant = _user_text("x")
    assistant["item"]["role"] = "assistant"
    assert _error(c.send(assistant))["code"] == "unsupported_feature"
    assert _error(c.send(_user_text("   ")))["code"] == "unsupported_feature"

    c.render(TurnStarted(1, "item_a", "msg_1"))
    c.audio(1, bytes(48000))  # one second
    truncate = {
        "type": "conversation.item.truncate",
        "item_id": "item_a",
        "content_index": 0,
        "audio_end_ms": 400,
    }
    assert c.send(truncate) == [TruncateItem("item_a", 400)]
    frames = c.render(ItemTruncated("item_a", 400, "It"))
    assert frames == [
        {
            "event_id": frames[0]["event_id"],
            "type": "conversation.item.truncated",
            "item_id": "item_a",
            "content_index": 0,
            "audio_end_ms": 400,
        }
    ]
    missing = {**truncate, "item_id": "item_zz"}
    assert _error(c.send(missing))["code"] == "item_not_found"
    assert c.send({"type": "conversation.item.delete", "item_id": "msg_1"}) == [DeleteItem("msg_1")]
    assert _types(c.render(ItemDeleted("msg_1"))) == ["conversation.item.deleted"]
    err = _error(c.send({"type": "conversation.item.retrieve", "item_id": "msg_1"}))
    assert err["code"] == "item_not_found"


def test_core_refusals_become_error_events() -> None:
    c = Client()
    c.start()
    frames = c.render(CommandFailed("respond", "active_response", "an answer is in progress"))
    assert frames[0]["error"]["code"] == "conversation_already_has_active_response"
    frames = c.render(CommandFailed("truncate", "unknown_item", "no answer with id 'x'"))
    assert frames[0]["error"]["code"] == "item_not_found"


def test_out_of_band_responses_are_refused() -> None:
    c = Client()
    err = _error(c.send({"type": "response.create", "response": {"conversation": "none"}}))
    assert (err["code"], err["param"]) == ("unsupported_feature", "response.conversation")

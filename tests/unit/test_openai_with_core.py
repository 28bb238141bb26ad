"""The adapter driving the real call core: what an SDK client sees for whole turns.

The commands the adapter returns are carried out on `CallCore` as the connection does;
the services' replies are their real wire messages. Every frame is checked with the
SDK's model of that event.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from services.gateway.call import Action as CoreAction
from services.gateway.call import (
    CallCore,
    Emit,
    SendAudio,
)
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
    LlmBegin,
    LlmDelta,
    LlmEnd,
    Message,
    TranscriptFinal,
    TtsAudio,
    TtsBegin,
    TtsEnd,
    TtsSegment,
    VadEvent,
    VadState,
)
from tests.unit.test_openai_session import Client, _append, _types


class Call:
    """A client, its adapter and a call core wired as the connection wires them."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.core: CallCore | None = None
        self.now = 0.0
        self.sent: list[dict[str, Any]] = []

    @property
    def sid(self) -> str:
        return self.client.session.session_id

    def send(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        start = len(self.client.frames)
        self._carry_out(self.client.send(event))
        return self.client.frames[start:]

    def _carry_out(self, outputs: list[Output]) -> None:
        for out in outputs:
            core = self.core
            match out:
                case BeginCall():
                    self.core = CallCore(out.options)
                    self.core.open()
                    self.client._take(self.client.session.started())
                case SendText() | Refused():
                    pass
                case _ if core is None:
                    raise AssertionError(f"{out} before the call")
                case ForwardAudio():
                    self._act(core.audio(out.pcm, self.now))
                case CommitInput():
                    self._act(core.commit())
                case ClearInput():
                    self._act(core.clear_input())
                case Respond():
                    self._act(core.respond(out.text))
                case CancelResponse():
                    self._act(core.cancel_response())
                case AddUserText():
                    self._act(core.add_user_text(out.item_id, out.text))
                case TruncateItem():
                    self._act(core.truncate(out.item_id, out.audio_end_ms))
                case DeleteItem():
                    self._act(core.delete_item(out.item_id))
                case UpdateCall():
                    self._act(core.update(system_prompt=out.system_prompt, voice=out.voice))
                case _:
                    raise AssertionError(f"unexpected output {out}")

    def _act(self, actions: list[CoreAction]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for action in actions:
            if isinstance(action, Emit):
                out += self.client.render(action.event)
            elif isinstance(action, SendAudio):
                assert self.core is not None
                out += self.client.audio(action.turn, action.pcm, self.core.options.tts_rate)
                self.core.audio_sent(action.turn, len(action.pcm))
        self.sent += out
        return out

    def service(self, *messages: Message) -> list[dict[str, Any]]:
        assert self.core is not None
        out: list[dict[str, Any]] = []
        for msg in messages:
            self.now += 0.01
            out += self._act(self.core.on_message(msg, self.now))
        return out

    def vad(self, state: VadState, start: int, end: int) -> VadEvent:
        return VadEvent(sid=self.sid, state=state, start_ms=start, end_ms=end, timestamp=0.0)

    def answer(self, turn: int, text: str, pcm: bytes) -> list[Message]:
        s = self.sid
        return [
            LlmBegin(sid=s, turn=turn),
            LlmDelta(sid=s, turn=turn, seq=1, text=text),
            TtsBegin(sid=s, turn=turn),
            TtsSegment(sid=s, turn=turn, index=0, text=text),
            TtsAudio(sid=s, turn=turn, index=0, seq=1, pcm=pcm, sample_rate=24000),
        ]

    def finish(self, turn: int, text: str, audio_ms: float) -> list[Message]:
        s = self.sid
        return [
            LlmEnd(sid=s, turn=turn, text=text, ttft_ms=50.0, tokens=3),
            TtsEnd(sid=s, turn=turn, segments=1, audio_ms=audio_ms),
        ]


def test_server_vad_turn_then_barge_in() -> None:
    call = Call(Client())
    call.send(_append(bytes(96000)))  # 2 s of audio places the call
    frames = call.service(
        call.vad(VadState.STARTING, 100, 132),
        call.vad(VadState.SPEAKING, 100, 300),
        call.vad(VadState.STOPPING, 100, 900),
        TranscriptFinal(sid=call.sid, index=0, begin_ms=100, end_ms=900, text="Hello there"),
    )
    user_item = frames[0]["item_id"]
    assert _types(frames) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]
    assert {f.get("item_id", user_item) for f in frames[:6]} == {user_item}
    answer_item = frames[8]["item"]["id"]
    assert frames[8]["previous_item_id"] == user_item
    pcm = bytes(range(256)) * 30  # 160 ms at 24 kHz
    frames = call.service(*call.answer(1, "Hi! How can I help?", pcm))
    assert _types(frames) == [
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
    ]
    assert base64.b64decode(frames[1]["delta"]) == pcm
    assert frames[1]["item_id"] == answer_item
    # The user speaks over the answer for long enough: it is cut.
    frames = call.service(
        call.vad(VadState.STARTING, 1500, 1532),
        call.vad(VadState.SPEAKING, 1500, 1700),
    )
    call.send(_append(bytes(24000)))  # audio moves the stream clock past the barge-in
    frames = call.sent[-4:]
    assert _types(frames)[-1] == "response.done"
    done = frames[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"]["reason"] == "turn_detected"
    # Nothing of the cancelled answer afterwards.
    assert call.service(*call.finish(1, "Hi! How can I help?", 160.0)) == []


def test_manual_turn_answered_on_response_create() -> None:
    call = Call(Client())
    call.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    call.send(_append(bytes(9600)))
    frames = call.send({"type": "input_audio_buffer.commit"})
    # The committed event comes from the call core.
    assert _types(frames) == ["input_audio_buffer.committed", "conversation.item.added"]
    assert call.sent == frames
    item = call.sent[0]["item_id"]
    frames = call.service(
        TranscriptFinal(sid=call.sid, index=0, begin_ms=0, end_ms=200, text="Tell me a joke")
    )
    assert _types(frames) == [
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assert frames[0]["item_id"] == item
    call.sent.clear()
    call.send({"type": "response.create"})
    assert _types(call.sent)[0] == "response.created"
    # A second response.create while answering is refused by the core.
    call.send({"type": "response.create", "event_id": "r2"})
    assert call.client.last()["type"] == "error"
    assert call.client.last()["error"]["code"] == "conversation_already_has_active_response"
    call.sent.clear()
    pcm = bytes(4800)
    call.service(*call.answer(1, "Why did the chicken...", pcm))
    call.service(*call.finish(1, "Why did the chicken...", 100.0))
    assert _types(call.sent)[-1] == "response.done"
    assert call.sent[-1]["response"]["status"] == "completed"
    answer_item = call.sent[-1]["response"]["output"][0]["id"]
    # The client heard 50 ms of it.
    call.sent.clear()
    call.send(
        {
            "type": "conversation.item.truncate",
            "item_id": answer_item,
            "content_index": 0,
            "audio_end_ms": 50,
        }
    )
    assert _types(call.sent) == ["conversation.item.truncated"]
    assert json.loads(json.dumps(call.sent[0]))["audio_end_ms"] == 50

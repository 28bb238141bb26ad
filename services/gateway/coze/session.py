"""The Coze duplex chat adapter: one WebSocket's protocol state, sans-I/O.

``chat.created`` goes out on connect (`opened`); the call is placed when the client
first needs the pipeline (its first append, complete or message), so the formats and
turn detection of the ``chat.update`` it sends first (as the SDKs and the ESP32 board
do) are what the call is opened with. Until then ``chat.update`` only changes the
pending settings (`services.gateway.coze.config`).

Turn detection: ``server_vad`` lets the gateway's VAD end turns; ``client_interrupt``
(Coze's default, the key-press mode) has the client end them with
``input_audio_buffer.complete``; ``conversation.chat.cancel`` is the key-press
interrupt. One answer is one Coze "chat": ``conversation.chat.created`` /
``in_progress``, text deltas, ``conversation.audio.sentence_start`` before each
sentence's audio, ``conversation.audio.delta``, then ``conversation.message.completed``,
``conversation.audio.completed`` and ``conversation.chat.completed`` (or
``conversation.chat.canceled`` on barge-in or cancel).

    IDLE --first pipeline event: BeginCall--> STARTING --started--> ACTIVE
                                                 +--start_failed--> CLOSED
    (any) --finished--> CLOSED
"""

from __future__ import annotations

import base64
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import assert_never

from pydantic import JsonValue

from services.gateway.call import (
    CallCompleted,
    CallEvent,
    CallFailed,
    CommandFailed,
    FirstAudio,
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
    new_item_id,
)
from services.gateway.conversation import ConversationDefaults
from services.gateway.coze.audio import InputDecoder
from services.gateway.coze.codec import (
    CozeError,
    CozeErrorCode,
    decode_base64,
    error_data,
    event_frame,
    new_event_id,
    parse_event,
)
from services.gateway.coze.config import SessionConfig, apply_update
from services.gateway.coze.messages import (
    AudioAppend,
    AudioClear,
    AudioComplete,
    ChatCancel,
    ChatUpdate,
    ConversationClear,
    MessageCreate,
)
from services.gateway.personas import Persona
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
from shared.errors import ProtocolError
from shared.messages import (
    ErrorCode,
    LlmBegin,
    LlmDelta,
    LlmEnd,
    LlmWorkerEvent,
    SentenceBegin,
    TranscriptFinal,
    TranscriptPartial,
    TtsBegin,
    TtsEnd,
    TtsSegment,
    VadEvent,
)

PROTOCOL = "coze"
_KEEP_ITEMS = 256  # conversation items remembered for conversation.clear (as the core)


class CozePhase(Enum):
    IDLE = auto()
    STARTING = auto()
    ACTIVE = auto()
    CLOSED = auto()


@dataclass
class _Chat:
    """One answer: a Coze chat holding one assistant message."""

    chat_id: str
    message_id: str
    created_at: int
    text: str = ""


class CozeSession:
    """Protocol state of one connection on ``/v1/chat?bot_id=...``."""

    def __init__(
        self,
        query: Mapping[str, Sequence[str]] | None = None,
        *,
        conversation: ConversationDefaults | None = None,
        new_id: Callable[[], str] = new_event_id,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.protocol = PROTOCOL
        self.phase = CozePhase.IDLE
        self.config = SessionConfig()
        self._defaults = conversation or ConversationDefaults()
        self._new_id = new_id
        self._clock = clock
        query = query or {}
        self.bot_id = (query.get("bot_id") or [""])[0][:128]
        self.sid = ""
        self._persona = self._select_persona(self.bot_id)
        self._decoder: InputDecoder | None = None
        self._chats: dict[int, _Chat] = {}
        self._items: deque[str] = deque(maxlen=_KEEP_ITEMS)

    def _select_persona(self, bot_id: str) -> Persona | None:
        """A bot id naming a persona preset selects it; any other uses the default."""
        if bot_id:
            try:
                return self._defaults.personas.select(bot_id)
            except ProtocolError:
                pass  # a Coze bot id (numeric): not one of our presets
        return self._defaults.default_persona

    @property
    def stopping(self) -> bool:
        return False  # the protocol has no stop: clients close the socket

    # ------------------------------------------------------------------ output helpers

    def _event(self, event_type: str, data: JsonValue) -> list[str]:
        if not self.config.wants(event_type):
            return []
        return [event_frame(event_type, data, self._new_id())]

    def _send(self, event_type: str, data: JsonValue) -> list[Output]:
        return [SendText(t) for t in self._event(event_type, data)]

    def _error(self, code: int, message: str) -> list[str]:
        return self._event("error", error_data(code, message))

    def _refuse(self, exc: CozeError) -> list[Output]:
        return [*(SendText(t) for t in self._error(exc.error_code, str(exc))), Refused(exc.kind)]

    # ------------------------------------------------------------------ connection callbacks

    def opened(self) -> list[Output]:
        """The socket was accepted: announce the chat connection."""
        return self._send("chat.created", {"bot_id": self.bot_id})

    def started(self) -> list[Output]:
        self.phase = CozePhase.ACTIVE
        return []

    def start_failed(self, code: ErrorCode, message: str) -> list[Output]:
        self.phase = CozePhase.CLOSED
        client_fault = code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_MODEL)
        number = CozeErrorCode.INVALID_REQUEST if client_fault else CozeErrorCode.SERVER_ERROR
        if code is ErrorCode.OVERLOADED:
            number = CozeErrorCode.OVERLOADED
        return [SendText(t) for t in self._error(number, message)]

    def finished(self) -> None:
        self.phase = CozePhase.CLOSED

    # ------------------------------------------------------------------ client frames

    def on_binary(self, data: bytes) -> list[Output]:
        return self._refuse(
            CozeError(
                "binary frames are not part of this protocol: send input_audio_buffer.append "
                "with base64 audio",
                kind="binary_frame",
            )
        )

    def on_text(self, text: str) -> list[Output]:
        try:
            event = parse_event(text)
            match event:
                case ChatUpdate():
                    return self._on_update(event)
                case AudioAppend():
                    return self._on_append(event)
                case AudioComplete():
                    return self._on_complete()
                case AudioClear():
                    return self._on_clear()
                case ChatCancel():
                    return [CancelResponse()] if self.phase is CozePhase.ACTIVE else []
                case MessageCreate():
                    return self._on_message(event)
                case ConversationClear():
                    return self._on_conversation_clear()
                case _:
                    assert_never(event)
        except CozeError as exc:
            return self._refuse(exc)

    def _ensure_call(self) -> list[Output]:
        """Place the call with the settings so far, once."""
        if self.phase is not CozePhase.IDLE:
            return []
        self.phase = CozePhase.STARTING
        # A conversation id (as ``conversation.chat.created`` hands them out) continues that
        # conversation: its history and settings (docs/resume.md).
        resume = bool(self.config.conversation_id)
        self.sid = self.config.conversation_id or self._new_id()
        self._decoder = InputDecoder(self.config.input)
        options = self.config.call_options(self.sid, self._persona, self._defaults)
        return [BeginCall(options, resume=resume)]

    def _on_update(self, event: ChatUpdate) -> list[Output]:
        new = apply_update(self.config, event.data)
        outputs: list[Output] = []
        if self.phase is not CozePhase.IDLE:
            if new.locked_part() != self.config.locked_part():
                raise CozeError(
                    "input_audio, output_audio format, turn_detection and conversation_id "
                    "cannot change once audio or a message was sent",
                    kind="setting_locked",
                    code=CozeErrorCode.INVALID_STATE,
                )
            if new.voice != self.config.voice and new.voice is not None:
                outputs.append(UpdateCall(voice=new.voice))  # applies from the next answer
        self.config = new
        return [*outputs, *self._send("chat.updated", new.to_json())]

    def _on_append(self, event: AudioAppend) -> list[Output]:
        data = decode_base64(event.data.delta)
        outputs = self._ensure_call()
        if self.phase is CozePhase.CLOSED or self._decoder is None:
            return outputs
        pcm = self._decoder.decode(data)
        return [*outputs, ForwardAudio(pcm)] if pcm else outputs

    def _manual_only(self, event_type: str) -> None:
        if self.config.server_vad:
            raise CozeError(
                f"{event_type} has no effect with server_vad turn detection",
                kind="server_vad_mode",
                code=CozeErrorCode.INVALID_STATE,
            )

    def _on_complete(self) -> list[Output]:
        self._manual_only("input_audio_buffer.complete")
        outputs = self._ensure_call()
        if self.phase is CozePhase.CLOSED:
            return outputs
        return [*outputs, CommitInput()]

    def _on_clear(self) -> list[Output]:
        self._manual_only("input_audio_buffer.clear")
        if self.phase is CozePhase.IDLE:
            return self._send("input_audio_buffer.cleared", {})  # nothing was sent yet
        return [ClearInput()] if self.phase is not CozePhase.CLOSED else []

    def _on_message(self, event: MessageCreate) -> list[Output]:
        data = event.data
        if data.content_type != "text":
            raise CozeError(
                "conversation.message.create: only content_type 'text' is supported",
                kind="unsupported_content",
                code=CozeErrorCode.UNSUPPORTED,
            )
        if data.role == "assistant":
            raise CozeError(
                "conversation.message.create: role 'assistant' is not supported; send the "
                "user's messages",
                kind="unsupported_role",
                code=CozeErrorCode.UNSUPPORTED,
            )
        outputs = self._ensure_call()
        if self.phase is CozePhase.CLOSED:
            return outputs
        # A user message is answered at once, interrupting an answer in progress.
        return [*outputs, CancelResponse(), Respond(data.content)]

    def _on_conversation_clear(self) -> list[Output]:
        outputs: list[Output] = []
        if self.phase in (CozePhase.STARTING, CozePhase.ACTIVE):
            outputs.append(CancelResponse())
            outputs += [DeleteItem(item) for item in self._items]
        self._items.clear()
        return [*outputs, *self._send("conversation.cleared", {})]

    # ------------------------------------------------------------------ server events

    def _chat(self, chat: _Chat, status: str) -> dict[str, JsonValue]:
        return {
            "id": chat.chat_id,
            "conversation_id": self.sid,
            "bot_id": self.bot_id,
            "created_at": chat.created_at,
            "status": status,
        }

    def _message(
        self, chat: _Chat, content: str, content_type: str = "text"
    ) -> dict[str, JsonValue]:
        return {
            "id": chat.message_id,
            "conversation_id": self.sid,
            "bot_id": self.bot_id,
            "role": "assistant",
            "type": "answer",
            "content": content,
            "content_type": content_type,
            "chat_id": chat.chat_id,
        }

    def render_audio(self, turn: int, pcm: bytes, sample_rate: int) -> list[str]:
        chat = self._chats.get(turn)
        if chat is None:
            return []  # audio of an answer we never announced cannot be attributed
        wire = self.config.output.encode(pcm)
        content = base64.b64encode(wire).decode("ascii")
        return self._event("conversation.audio.delta", self._message(chat, content, "audio"))

    def render(self, event: CallEvent) -> list[str]:
        """The text frames a call event becomes (possibly none)."""
        e = self._event
        match event:
            case SpeechStarted():
                return e("input_audio_buffer.speech_started", {})
            case SpeechStopped():
                return e("input_audio_buffer.speech_stopped", {})
            case InputCommitted():
                if self.config.server_vad:
                    return []  # the client did not complete anything
                return e("input_audio_buffer.completed", {})
            case InputCleared():
                return e("input_audio_buffer.cleared", {})
            case TranscriptPartial():
                return e("conversation.audio_transcript.update", {"content": event.text})
            case TranscriptFinal():
                text = event.text.strip()
                if not text:
                    return []
                return e("conversation.audio_transcript.completed", {"content": text})
            case UserItem():
                if event.text:
                    self._items.append(event.item_id)
                return []
            case TurnStarted():
                return self._turn_started(event)
            case LlmDelta():
                chat = self._chats.get(event.turn)
                if chat is None:
                    return []
                chat.text += event.text
                return e("conversation.message.delta", self._message(chat, event.text))
            case LlmEnd():
                chat = self._chats.get(event.turn)
                if chat is None:
                    return []
                return e("conversation.message.completed", self._message(chat, event.text))
            case TtsSegment():
                return e("conversation.audio.sentence_start", {"text": event.text})
            case TtsEnd():
                # The chat stays known: audio held back during a possible barge-in may
                # still be released after this, and it must reach the client.
                chat = self._chats.get(event.turn)
                if chat is None:
                    return []
                return [
                    *e("conversation.audio.completed", self._message(chat, "", "audio")),
                    *e("conversation.chat.completed", self._chat(chat, "completed")),
                ]
            case TurnCancelled():
                chat = self._chats.pop(event.turn, None)
                if chat is None:
                    return []
                return e("conversation.chat.canceled", self._chat(chat, "canceled"))
            case TurnFailed():
                return self._turn_failed(event)
            case CommandFailed():
                if event.command == "delete":
                    return []  # conversation.clear is best effort on items the LLM never saw
                return self._error(CozeErrorCode.INVALID_STATE, event.message)
            case CallFailed():
                return self._error(CozeErrorCode.SERVER_ERROR, event.message)
            case (
                VadEvent()
                | SentenceBegin()
                | LlmBegin()
                | LlmWorkerEvent()
                | TtsBegin()
                | FirstAudio()
                | ItemTruncated()
                | ItemDeleted()
                | CallCompleted()
            ):
                return []  # the protocol has no word for these
            case _:
                assert_never(event)

    def _turn_started(self, event: TurnStarted) -> list[str]:
        chat = _Chat(new_item_id(), event.assistant_item_id, int(self._clock()))
        self._chats = {event.turn: chat}  # an older chat can no longer produce anything
        self._items.append(event.assistant_item_id)
        return [
            *self._event("conversation.chat.created", self._chat(chat, "created")),
            *self._event("conversation.chat.in_progress", self._chat(chat, "in_progress")),
        ]

    def _turn_failed(self, event: TurnFailed) -> list[str]:
        message = f"{event.service.value}: {event.message}"
        frames = self._error(CozeErrorCode.SERVER_ERROR, message)
        chat = self._chats.pop(event.turn, None)
        if chat is not None:
            data = self._chat(chat, "failed")
            data["last_error"] = {"code": int(CozeErrorCode.SERVER_ERROR), "msg": message}
            frames += self._event("conversation.chat.failed", data)
        return frames

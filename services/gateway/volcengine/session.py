"""The Volcengine live-voice-call adapter: one WebSocket's protocol state, sans-I/O.

The call is placed as soon as the socket is accepted (`opened`), and ``BotReady``
with the session id goes out once it runs (`started`). Client frames are binary:
audio-only requests become `ForwardAudio`, ``BotUpdateConfig{speaker}`` becomes
`UpdateCall(voice=...)` (the TTS service applies a voice from the next turn).

Reply audio, as the reference frontend expects it: ``TTSSentenceStart{sentence}``,
then that sentence's audio as one complete WAV file in an audio-only response, and
``TTSDone`` after the answer's last sentence. The adapter buffers the sentence's PCM
(`render_audio` returns nothing meanwhile); a sentence is complete when the next one
starts or the answer ends, and the WAV goes out then as an `AudioOut`, so the
connection still knows what the user heard. ``?audio=pcm`` streams raw PCM16 chunks
instead (an extension for clients that play streams).

Query parameters of ``/api/live_voice_call/chat``: ``session`` (resume an earlier
session of the same API key within the grace period, docs/resume.md: its history and
settings continue; the id is echoed in ``BotReady``; unknown: ``BotError``), ``persona`` (a preset; default: the deployment's,
else Qingqing), ``audio`` (``wav`` or ``pcm``). Half duplex is the gateway-wide
``?duplex=half``.

    CONNECTING --opened: BeginCall--> STARTING --started: BotReady--> ACTIVE
         |                                +--start_failed: BotError--> CLOSED
         +--bad query: error frame, close--> CLOSED        (any) --finished--> CLOSED
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from enum import Enum, StrEnum, auto
from typing import assert_never

from services.gateway.call import (
    CallCompleted,
    CallEvent,
    CallFailed,
    CallOptions,
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
)
from services.gateway.conversation import ConversationDefaults
from services.gateway.personas import Persona
from services.gateway.protocol import (
    AudioOut,
    BeginCall,
    CloseConnection,
    ForwardAudio,
    Output,
    Refused,
    SendBytes,
    UpdateCall,
)
from services.gateway.volcengine.codec import (
    MessageType,
    Serialization,
    VolcengineError,
    decode_frame,
    encode_frame,
    unwrap_audio,
    wav_bytes,
)
from services.gateway.volcengine.messages import (
    BotReady,
    BotReadyPayload,
    BotUpdateConfig,
    SentencePayload,
    SentenceRecognized,
    ServerEvent,
    TTSDone,
    TTSSentenceStart,
    bot_error,
    dump,
    parse_event,
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

PROTOCOL = "volcengine"
CLIENT_RATE = 16000
TTS_RATE = 24000
DEFAULT_PERSONA = "qingqing"
# A resumable id: what we hand out (uuid hex) and what other deployments use (uuids).
# What the session store accepts as a key (shared.state).
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A sentence longer than this goes out in several WAVs: the buffer stays bounded.
MAX_SENTENCE_MS = 30_000
POLICY_VIOLATION = 1008


class AudioDelivery(StrEnum):
    WAV = "wav"  # one complete WAV per sentence (the reference frontend)
    PCM = "pcm"  # raw PCM16 chunks as they come


class VolcState(Enum):
    CONNECTING = auto()
    STARTING = auto()
    ACTIVE = auto()
    CLOSED = auto()


def server_frame(event: ServerEvent) -> bytes:
    return encode_frame(
        MessageType.FULL_SERVER_RESPONSE, dump(event), serialization=Serialization.JSON
    )


def error_frame(code: str, message: str) -> bytes:
    """A server error frame; its JSON body is a ``BotError`` event, as the reference's."""
    return encode_frame(
        MessageType.SERVER_ERROR, dump(bot_error(code, message)), serialization=Serialization.JSON
    )


def _one(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


class VolcengineSession:
    """Protocol state of one connection on ``/api/live_voice_call/chat``."""

    def __init__(
        self,
        query: Mapping[str, Sequence[str]] | None = None,
        *,
        conversation: ConversationDefaults | None = None,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.protocol = PROTOCOL
        self.state = VolcState.CONNECTING
        self._conversation = conversation or ConversationDefaults()
        self._new_id = new_id
        self.sid = ""
        self.resumed = False
        self.delivery = AudioDelivery.WAV
        self._persona: Persona | None = None
        self._refusal: VolcengineError | None = None
        try:
            self._read_query(query or {})
        except VolcengineError as exc:
            self._refusal = exc
        # The current sentence's audio (WAV delivery): turn, PCM at the TTS rate.
        self._turn = 0
        self._ended = 0  # the last turn whose TTS finished (TtsEnd / TurnFailed)
        self._pcm = bytearray()
        self._rate = TTS_RATE

    def _read_query(self, query: Mapping[str, Sequence[str]]) -> None:
        session = _one(query, "session")
        if session:
            if not _SESSION_ID.fullmatch(session):
                raise VolcengineError(
                    "session must be 1-128 letters, digits, '_' or '-'",
                    kind="bad_session",
                )
            self.sid, self.resumed = session, True
        else:
            self.sid = self._new_id()
        audio = _one(query, "audio") or AudioDelivery.WAV.value
        try:
            self.delivery = AudioDelivery(audio)
        except ValueError:
            raise VolcengineError(
                f"audio must be 'wav' or 'pcm', not {audio[:32]!r}", kind="bad_audio"
            ) from None
        selector = _one(query, "persona")
        try:
            if selector:
                self._persona = self._conversation.personas.select(selector)
            else:
                self._persona = self._conversation.default_persona or (
                    self._conversation.personas.select(DEFAULT_PERSONA)
                )
        except ProtocolError as exc:
            raise VolcengineError(str(exc), kind="unknown_persona") from exc

    @property
    def stopping(self) -> bool:
        return False  # the protocol has no stop: the client closes the socket

    def call_options(self) -> CallOptions:
        persona = self._persona
        return CallOptions(
            sid=self.sid,
            client_rate=CLIENT_RATE,
            partials=False,  # the protocol has no partial transcripts
            system_prompt=persona.system_prompt if persona else "",
            voice=persona.voice if persona else None,
            max_history=self._conversation.max_history,
            tts_rate=TTS_RATE,
        )

    # ------------------------------------------------------------------ connection callbacks

    def opened(self) -> list[Output]:
        """The socket was accepted: place the call (or refuse a bad query and close)."""
        if self._refusal is not None:
            self.state = VolcState.CLOSED
            exc = self._refusal
            return [
                SendBytes(error_frame(exc.kind, str(exc))),
                Refused(exc.kind),
                CloseConnection(POLICY_VIOLATION, exc.kind),
            ]
        self.state = VolcState.STARTING
        return [BeginCall(self.call_options(), resume=self.resumed)]

    def started(self) -> list[Output]:
        self.state = VolcState.ACTIVE
        return [SendBytes(server_frame(BotReady(payload=BotReadyPayload(session=self.sid))))]

    def start_failed(self, code: ErrorCode, message: str) -> list[Output]:
        self.state = VolcState.CLOSED
        return [SendBytes(server_frame(bot_error(code.value, message)))]

    def finished(self) -> None:
        self.state = VolcState.CLOSED

    # ------------------------------------------------------------------ client frames

    def on_text(self, text: str) -> list[Output]:
        return self._refuse(
            VolcengineError(
                "text frames are not part of this protocol: send binary frames",
                kind="text_frame",
            )
        )

    def on_binary(self, data: bytes) -> list[Output]:
        try:
            frame = decode_frame(data)
            match frame.type:
                case MessageType.AUDIO_ONLY_REQUEST:
                    return self._on_audio(unwrap_audio(frame.payload))
                case MessageType.FULL_CLIENT_REQUEST:
                    return self._on_event(parse_event(frame.payload))
                case (
                    MessageType.FULL_SERVER_RESPONSE
                    | MessageType.AUDIO_ONLY_RESPONSE
                    | MessageType.SERVER_ERROR
                ):
                    raise VolcengineError(
                        f"message type {frame.type.name.lower()} is sent by the server only",
                        kind="server_message_type",
                    )
                case _:
                    assert_never(frame.type)
        except VolcengineError as exc:
            return self._refuse(exc)

    def _refuse(self, exc: VolcengineError) -> list[Output]:
        return [SendBytes(error_frame(exc.kind, str(exc))), Refused(exc.kind)]

    def _on_audio(self, pcm: bytes) -> list[Output]:
        if self.state is not VolcState.ACTIVE or not pcm:
            return []  # the call ended (or failed to start) while the client still sent
        return [ForwardAudio(pcm)]

    def _on_event(self, event: BotUpdateConfig) -> list[Output]:
        speaker = event.payload.speaker
        if speaker is None or self.state is not VolcState.ACTIVE:
            return []
        return [UpdateCall(voice=speaker)]

    # ------------------------------------------------------------------ server events

    def render_audio(self, turn: int, pcm: bytes, sample_rate: int) -> list[bytes | AudioOut]:
        if self.delivery is AudioDelivery.PCM:
            return [encode_frame(MessageType.AUDIO_ONLY_RESPONSE, pcm)]
        if turn != self._turn:
            self._pcm.clear()  # audio of an older answer can no longer complete
            self._turn = turn
        self._rate = sample_rate
        self._pcm += pcm
        if turn == self._ended:
            # Audio held back during a possible barge-in and released after the answer
            # ended: no sentence boundary will come for it, so it goes out at once.
            return self._flush()
        if len(self._pcm) >= MAX_SENTENCE_MS * sample_rate * 2 // 1000:
            return self._flush()
        return []

    def _flush(self) -> list[bytes | AudioOut]:
        """The buffered sentence as one WAV (nothing if none is buffered)."""
        if not self._pcm:
            return []
        pcm = bytes(self._pcm)
        self._pcm.clear()
        frame = encode_frame(MessageType.AUDIO_ONLY_RESPONSE, wav_bytes(pcm, self._rate))
        return [AudioOut(frame, self._turn, len(pcm))]

    def render(self, event: CallEvent) -> list[bytes | AudioOut]:
        """The frames a call event becomes (possibly none)."""
        match event:
            case TurnStarted():
                self._pcm.clear()
                self._turn = event.turn
                return []
            case TranscriptFinal():
                sentence = event.text.strip()
                if not sentence:
                    return []
                return [
                    server_frame(SentenceRecognized(payload=SentencePayload(sentence=sentence)))
                ]
            case TtsSegment():
                start = TTSSentenceStart(payload=SentencePayload(sentence=event.text))
                return [*self._flush(), server_frame(start)]
            case TtsEnd():
                self._ended = event.turn
                return [*self._flush(), server_frame(TTSDone())]
            case TurnCancelled():
                # Barge-in (or a cancel): the rest of the sentence is never sent; TTSDone
                # puts the reference frontend back in its listening state.
                self._pcm.clear()
                return [server_frame(TTSDone())]
            case TurnFailed():
                self._ended = event.turn
                error = bot_error(event.code.value, f"{event.service.value}: {event.message}")
                return [*self._flush(), server_frame(error), server_frame(TTSDone())]
            case CallFailed():
                return [server_frame(bot_error(event.code.value, event.message))]
            case CommandFailed():
                return [server_frame(bot_error(event.code, event.message))]
            case (
                VadEvent()
                | SentenceBegin()
                | TranscriptPartial()
                | SpeechStarted()
                | SpeechStopped()
                | InputCommitted()
                | InputCleared()
                | UserItem()
                | LlmBegin()
                | LlmDelta()
                | LlmEnd()
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

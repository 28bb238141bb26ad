"""The Bella adapter: one WebSocket's protocol state, sans-I/O.

Client frames become outputs for the connection (`SendText`, `BeginCall`, `EndCall`,
`ForwardAudio`); call events from `services.gateway.call` become Bella event frames.
The connection layer does the I/O (placement, NATS, the socket) and calls back
`started` / `start_failed`.

    IDLE --Start--> STARTING --started--> STARTED --Stop--> STOPPING --finished--> CLOSED
                        +--start_failed--> CLOSED        (any: finished -> CLOSED)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from enum import Enum, auto
from typing import Any, assert_never

from services.gateway.bella.codec import (
    START,
    STOP,
    BellaError,
    Status,
    event_frame,
    ms_to_frame,
    new_message_id,
    parse_text,
    status_message,
    task_failed,
)
from services.gateway.bella.messages import Ping, StartTranscription, StopTranscription
from services.gateway.bella.options import call_options
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
)
from services.gateway.conversation import ConversationDefaults
from services.gateway.protocol import (
    BeginCall,
    EndCall,
    ForwardAudio,
    Output,
    Refused,
    SendText,
)
from shared.messages import (
    ErrorCode,
    LlmBegin,
    LlmDelta,
    LlmEnd,
    LlmWorkerEvent,
    SentenceBegin,
    ServiceName,
    TranscriptFinal,
    TranscriptPartial,
    TtsBegin,
    TtsEnd,
    TtsSegment,
    VadEvent,
    WorkerStatus,
)

PROTOCOL = "bella"


class BellaState(Enum):
    IDLE = auto()
    STARTING = auto()
    STARTED = auto()
    STOPPING = auto()
    CLOSED = auto()


class BellaSession:
    """Protocol state of one connection on ``/v1/audio/realtime`` or ``/v1/audio/asr/stream``."""

    def __init__(
        self,
        *,
        answer: bool,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        message_id: Callable[[], str] = new_message_id,
        conversation: ConversationDefaults | None = None,
    ) -> None:
        self.protocol = PROTOCOL
        self._conversation = conversation or ConversationDefaults()
        self.answer = answer
        self.state = BellaState.IDLE
        self.task_id = ""
        self.sid = ""
        self._new_id = new_id
        self._message_id = message_id

    @property
    def stopping(self) -> bool:
        return self.state is BellaState.STOPPING

    def render_audio(self, turn: int, pcm: bytes, sample_rate: int) -> list[str | bytes]:
        # Bella sends reply audio as raw binary frames at the rate the client asked for.
        return [pcm]

    # ------------------------------------------------------------------ client frames

    def on_text(self, text: str) -> list[Output]:
        try:
            command = parse_text(text)
        except BellaError as exc:
            return self._refuse(exc)
        match command:
            case Ping():
                return [SendText("pong")]
            case StartTranscription():
                return self._on_start(command)
            case StopTranscription():
                return self._on_stop(command)
            case _:
                assert_never(command)

    def on_binary(self, data: bytes) -> list[Output]:
        if self.state is BellaState.STARTED:
            return [ForwardAudio(data)]
        if self.state in (BellaState.STOPPING, BellaState.CLOSED):
            return []  # the tail of the client's stream, sent before it saw our answer
        return self._refuse(
            BellaError(f"audio before {START}: send {START} first", kind="audio_before_start")
        )

    def _refuse(self, exc: BellaError) -> list[Output]:
        return [SendText(task_failed(exc, self.task_id)), Refused(exc.kind)]

    def _on_start(self, cmd: StartTranscription) -> list[Output]:
        if self.state is not BellaState.IDLE:
            return self._refuse(
                BellaError(
                    f"a task is already running: one {START} per connection",
                    kind="second_start",
                    task_id=cmd.header.task_id,
                )
            )
        task_id = cmd.header.task_id or self._new_id()
        resume = cmd.payload.session_id is not None
        sid = cmd.payload.session_id or self._new_id()
        try:
            options = call_options(
                cmd.payload,
                sid=sid,
                answer=self.answer,
                task_id=task_id,
                defaults=self._conversation,
            )
        except BellaError as exc:
            return self._refuse(exc)  # the connection stays usable for a corrected Start
        self.task_id = task_id
        self.sid = sid
        self.state = BellaState.STARTING
        return [BeginCall(options, resume=resume)]

    def _on_stop(self, cmd: StopTranscription) -> list[Output]:
        if self.state is not BellaState.STARTED:
            return self._refuse(
                BellaError(
                    f"{STOP} without a running task",
                    kind="stop_without_task",
                    task_id=cmd.header.task_id,
                )
            )
        if cmd.header.task_id != self.task_id:
            return self._refuse(
                BellaError(
                    f"{STOP} task_id {cmd.header.task_id!r} does not match the running task",
                    kind="wrong_task_id",
                    task_id=self.task_id,
                )
            )
        self.state = BellaState.STOPPING
        return [EndCall()]

    # ------------------------------------------------------------------ connection callbacks

    def started(self) -> list[Output]:
        self.state = BellaState.STARTED
        return [SendText(self._event("TranscriptionStarted", {"session_id": self.sid}))]

    def start_failed(self, code: ErrorCode, message: str) -> list[Output]:
        """Placement failed: the call is closed (the caller closes the socket)."""
        self.state = BellaState.CLOSED
        client_fault = code in (ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_MODEL)
        status = Status.CLIENT_ERROR if client_fault else Status.SERVER_ERROR
        err = BellaError(message, kind=code.value, task_id=self.task_id, status=status)
        return [SendText(task_failed(err, self.task_id))]

    def finished(self) -> None:
        self.state = BellaState.CLOSED

    # ------------------------------------------------------------------ server events

    def _event(
        self,
        name: str,
        payload: dict[str, Any] | None = None,
        *,
        status: Status = Status.SUCCESS,
        message: str = "",
    ) -> str:
        return event_frame(
            name,
            self.task_id,
            payload,
            status=status,
            message=message or status_message(status),
            message_id=self._message_id,
        )

    def render(self, event: CallEvent) -> list[str]:
        """The text frames a call event becomes (possibly none)."""
        e = self._event
        match event:
            case VadEvent():
                return [
                    e(
                        f"VOICE_{event.state.value.upper()}",
                        {
                            "start_frame": ms_to_frame(event.start_ms),
                            "end_frame": ms_to_frame(event.end_ms),
                            "duration": event.end_ms - event.start_ms,
                            "data": None,
                            "timestamp": event.timestamp,
                            "latency": -1,
                        },
                    )
                ]
            case SentenceBegin():
                return [
                    e(
                        "SentenceBegin",
                        {
                            "index": event.index,
                            "time": event.begin_ms,
                            "begin_time": event.begin_ms,
                        },
                    )
                ]
            case TranscriptPartial():
                return [e("TranscriptionResultChanged", _sentence(event, event.text, 0.0))]
            case TranscriptFinal():
                return [e("SentenceEnd", _sentence(event, event.text, event.confidence))]
            case LlmWorkerEvent():
                return [self._worker_event(event)]
            case LlmBegin():
                return [e("LLM_CHAT_BEGIN", {"data": None})]
            case LlmDelta():
                return [e("LLM_CHAT_DELTA", {"data": event.text})]
            case LlmEnd():
                return [e("LLM_CHAT_END", {"data": event.text, "ttft_ms": event.ttft_ms})]
            case TurnCancelled():
                return [e("LLM_CHAT_CANCELLED", {"data": None})]
            case TurnFailed():
                return [self._turn_failed(event)]
            case TtsBegin():
                return [e("TTS_BEGIN", {"data": None})]
            case FirstAudio():
                latency = -1 if event.latency_ms is None else round(event.latency_ms)
                return [e("TTS_TTFT", {"data": None, "latency": latency})]
            case TtsSegment():
                return [e("TTS_DELTA", {"data": event.text, "index": event.index})]
            case TtsEnd():
                return [
                    e(
                        "TTS_END",
                        {
                            "data": None,
                            "segments": event.segments,
                            "audio_ms": event.audio_ms,
                        },
                    )
                ]
            case CallCompleted():
                return [e("TranscriptionCompleted"), e("SESSION_CLOSE")]
            case CallFailed():
                return [self._call_failed(event), e("SESSION_CLOSE")]
            case (
                SpeechStarted()
                | SpeechStopped()
                | InputCommitted()
                | InputCleared()
                | UserItem()
                | TurnStarted()
                | ItemTruncated()
                | ItemDeleted()
                | CommandFailed()
            ):
                return []  # conversation items and client commands: Bella has neither
            case _:
                assert_never(event)

    def _worker_event(self, event: LlmWorkerEvent) -> str:
        name = f"LLM_WORKER_{event.status.value.upper()}"
        payload: dict[str, Any] = {"data": event.result, "variable_name": event.variable_name}
        if event.status is not WorkerStatus.ERROR:
            return self._event(name, payload)
        # A failed worker does not fail the turn: the call goes on without its variable.
        payload["message"] = event.message
        return self._event(
            name,
            payload,
            status=Status.SERVER_ERROR,
            message=status_message(Status.SERVER_ERROR, "worker_failed", event.message, "LLM"),
        )

    def _turn_failed(self, event: TurnFailed) -> str:
        source = event.service.value.upper()
        message = status_message(Status.SERVER_ERROR, event.code.value, event.message, source)
        if event.service is ServiceName.LLM:
            return self._event(
                "LLM_CHAT_ERROR",
                {"data": None, "message": event.message},
                status=Status.SERVER_ERROR,
                message=message,
            )
        # Bella has no TTS error event: the turn's speech ends here, with an error status.
        return self._event(
            "TTS_END",
            {"data": None, "message": event.message},
            status=Status.SERVER_ERROR,
            message=message,
        )

    def _call_failed(self, event: CallFailed) -> str:
        status = Status.CLIENT_ERROR if event.code is ErrorCode.BAD_REQUEST else Status.SERVER_ERROR
        source = event.service.value.upper() if event.service else "GATEWAY"
        name = "TranscriptionFailed" if event.service is ServiceName.ASR else "TaskFailed"
        return self._event(
            name,
            {"data": None, "message": event.message},
            status=status,
            message=status_message(status, event.code.value, event.message, source),
        )


def _sentence(
    event: TranscriptPartial | TranscriptFinal, text: str, confidence: float
) -> dict[str, Any]:
    return {
        "index": event.index,
        "time": event.end_ms,
        "begin_time": event.begin_ms,
        "result": text,
        "words": [],
        "confidence": confidence,
    }

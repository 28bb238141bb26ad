"""The OpenAI Realtime adapter: one WebSocket's protocol state, sans-I/O.

Client events become outputs for the connection (`SendText` replies, `Refused` for
metrics, call commands); call events become server events (JSON text frames).

When the call starts: ``session.created`` goes out on connect (`opened`), but the call
is placed only when the client first needs the pipeline (its first append, commit,
``response.create`` or typed message). Until then ``session.update`` only changes the
pending settings, so the input format, turn detection and session type a client sets
in its first update (as the SDKs do) are what the call is opened with. Once the call
runs, instructions, voice, temperature and output limits still change (`UpdateCall`);
changing a setting the call was opened with is refused (``session_setting_locked``).

The call core names the conversation's items and decides turns; this adapter renders
its events (`SpeechStarted`, `InputCommitted`, `UserItem`, `TurnStarted`...) as
OpenAI server events and keeps a copy of the items for ``conversation.item.retrieve``
and ``previous_item_id``.

    IDLE --first pipeline event: BeginCall--> STARTING --started--> ACTIVE
                                                 +--start_failed--> CLOSED
    (any) --finished--> CLOSED
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import assert_never

from services.gateway.call import (
    CallCompleted,
    CallEvent,
    CallFailed,
    CancelReason,
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
from services.gateway.openai import events as ev
from services.gateway.openai.codec import (
    ErrorCode,
    ErrorType,
    RealtimeError,
    decode_audio,
    parse_event,
    parse_session,
)
from services.gateway.openai.config import (
    SessionConfig,
    SessionKind,
    apply_beta,
    apply_ga,
    check_locked,
)
from services.gateway.openai.conversation import (
    Conversation,
    IdFactory,
    InputItems,
    StoredItem,
    new_id,
    render_item,
)
from services.gateway.openai.messages import (
    AudioAppend,
    AudioClear,
    AudioCommit,
    BetaSession,
    ClientEvent,
    ItemCreate,
    ItemDelete,
    ItemRetrieve,
    ItemTruncate,
    ResponseCancel,
    ResponseCreate,
    SessionStart,
    SessionUpdate,
    TranscriptionSessionUpdate,
)
from services.gateway.openai.responses import ResponseSettings, ResponseState
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
from shared.messages import ErrorCode as CallErrorCode
from shared.messages import (
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

PROTOCOL = "openai"
MIN_COMMIT_MS = 100.0  # OpenAI refuses to commit less than 100 ms of audio

# The core's refusal codes -> ours.
_COMMAND_CODES = {
    "active_response": ErrorCode.ACTIVE_RESPONSE,
    "unknown_item": ErrorCode.ITEM_NOT_FOUND,
    "invalid_value": ErrorCode.INVALID_VALUE,
    "not_supported": ErrorCode.UNSUPPORTED,
}
_CANCEL_REASONS: dict[CancelReason, ev.CancelReason | None] = {
    CancelReason.TURN_DETECTED: "turn_detected",
    CancelReason.CLIENT_CANCELLED: "client_cancelled",
    CancelReason.CALL_ENDED: None,  # OpenAI has no word for it: cancelled, no reason
}


class Phase(Enum):
    IDLE = auto()  # connected; settings may change freely; no call yet
    STARTING = auto()  # BeginCall sent; the connection places the call
    ACTIVE = auto()
    CLOSED = auto()


class Trigger(Enum):
    BEGIN = auto()
    STARTED = auto()
    START_FAILED = auto()
    FINISHED = auto()


TRANSITIONS: dict[tuple[Phase, Trigger], Phase] = {
    (Phase.IDLE, Trigger.BEGIN): Phase.STARTING,
    (Phase.STARTING, Trigger.STARTED): Phase.ACTIVE,
    (Phase.STARTING, Trigger.START_FAILED): Phase.CLOSED,
    **{(p, Trigger.FINISHED): Phase.CLOSED for p in Phase},
}


# What the session store accepts as a key (shared.state).
_RESUMABLE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class OpenAiSession:
    """Protocol state of one connection on ``/v1/realtime``.

    ``beta``: the client sent ``OpenAI-Beta: realtime=v1`` (beta event names and the
    flat session shape). ``kind``: ``transcription`` for ``?intent=transcription``.
    ``model``: the ``?model=`` query parameter. ``resume``: the ``?session_id=`` query
    parameter (our extension, docs/resume.md): continue that earlier session of the
    same API key, with its history and settings.
    """

    def __init__(
        self,
        *,
        beta: bool = False,
        kind: SessionKind = "realtime",
        model: str | None = None,
        new_id: IdFactory = new_id,
        resume: str | None = None,
    ) -> None:
        if resume is not None and not _RESUMABLE_ID.fullmatch(resume):
            raise ValueError("session_id must be 1-128 letters, digits, '_' or '-'")
        self.protocol = PROTOCOL
        self.beta = beta
        self.names = ev.BETA if beta else ev.GA
        self.phase = Phase.IDLE
        self.config = SessionConfig(kind=kind, model=model)
        self._new_id = new_id
        self.session_id = resume or new_id("sess")
        self._resume = resume is not None
        self.conversation = Conversation()
        self.inputs = InputItems()
        self._buffered_ms = 0.0  # audio appended since the last commit / clear / turn end
        self._last_final_s = 0.0  # duration of the last final transcript (usage)
        self._responses: dict[int, ResponseState] = {}

    @property
    def sid(self) -> str:
        return self.session_id

    @property
    def stopping(self) -> bool:
        return False  # the protocol has no "stop": clients just close the socket

    def _event_id(self) -> str:
        return self._new_id("event")

    def _to(self, trigger: Trigger) -> None:
        self.phase = TRANSITIONS.get((self.phase, trigger), self.phase)

    # ------------------------------------------------------------------ connection callbacks

    def opened(self) -> list[Output]:
        """The socket was accepted: announce the session with its default settings."""
        return [self._send(self._session_event("session.created"))]

    def started(self) -> list[Output]:
        self._to(Trigger.STARTED)
        return []

    def start_failed(self, code: CallErrorCode, message: str) -> list[Output]:
        self._to(Trigger.START_FAILED)
        client_fault = code in (CallErrorCode.BAD_REQUEST, CallErrorCode.UNKNOWN_MODEL)
        return [self._send(self._error(code.value, message, server=not client_fault))]

    def finished(self) -> None:
        self._to(Trigger.FINISHED)

    # ------------------------------------------------------------------ client frames

    def on_binary(self, data: bytes) -> list[Output]:
        return self._refuse(
            RealtimeError(
                "binary frames are not part of this protocol: send input_audio_buffer.append "
                "with base64 audio",
                code=ErrorCode.BINARY_NOT_SUPPORTED,
            )
        )

    def on_text(self, text: str) -> list[Output]:
        try:
            return self._dispatch(parse_event(text))
        except RealtimeError as exc:
            return self._refuse(exc)

    def _refuse(self, exc: RealtimeError) -> list[Output]:
        detail = ev.ErrorDetail(
            type=ErrorType.INVALID_REQUEST,
            code=exc.error_code,
            message=str(exc),
            param=exc.param,
            event_id=exc.event_id,
        )
        return [
            self._send(ev.ErrorEvent(event_id=self._event_id(), error=detail)),
            Refused(exc.error_code.value),
        ]

    def _dispatch(self, event: ClientEvent) -> list[Output]:
        if self.phase is Phase.CLOSED:
            return []  # the call is over; the socket closes after our last frames
        match event:
            case SessionUpdate():
                session = parse_session(event.session, beta=self.beta, event_id=event.event_id)
                if isinstance(session, BetaSession):
                    new = apply_beta(self.config, session, event.event_id)
                else:
                    new = apply_ga(self.config, session, event.event_id)
                return self._update(new, event.event_id)
            case SessionStart():
                new = apply_beta(self.config, event.session, event.event_id)
                return self._update(new, event.event_id)
            case TranscriptionSessionUpdate():
                session = parse_session(event.session, beta=True, event_id=event.event_id)
                assert isinstance(session, BetaSession)
                new = apply_beta(self.config, session, event.event_id, kind="transcription")
                return self._update(new, event.event_id)
            case AudioAppend():
                return self._append(event)
            case AudioCommit():
                return self._commit(event)
            case AudioClear():
                self._buffered_ms = 0.0
                if self.phase is Phase.IDLE:
                    return [self._send(ev.Cleared(event_id=self._event_id()))]
                return [ClearInput()]
            case ItemCreate():
                return self._create_item(event)
            case ItemTruncate():
                self._known(event.item_id, event.event_id)
                if event.content_index != 0:
                    raise RealtimeError(
                        "an answer has one content part (index 0)",
                        code=ErrorCode.INVALID_VALUE,
                        param="content_index",
                        event_id=event.event_id,
                    )
                return [TruncateItem(event.item_id, event.audio_end_ms)]
            case ItemDelete():
                self._known(event.item_id, event.event_id)
                return [DeleteItem(event.item_id)]
            case ItemRetrieve():
                item = self._known(event.item_id, event.event_id)
                return [self._send(self._item_event("conversation.item.retrieved", item))]
            case ResponseCreate():
                return self._respond(event)
            case ResponseCancel():
                # Harmless when nothing is answering (the core ignores it then).
                return [] if self.phase is Phase.IDLE else [CancelResponse()]
            case _:
                assert_never(event)

    # ------------------------------------------------------------------ session settings

    def _update(self, new: SessionConfig, event_id: str | None) -> list[Output]:
        outputs: list[Output] = []
        if self.phase is not Phase.IDLE:
            check_locked(self.config, new, event_id)
            old = self.config
            change = UpdateCall(
                system_prompt=new.instructions if new.instructions != old.instructions else None,
                temperature=new.temperature if new.temperature != old.temperature else None,
                max_tokens=new.llm_max_tokens if new.llm_max_tokens != old.llm_max_tokens else None,
                voice=(new.tts_voice or "auto") if new.voice != old.voice else None,
            )
            if change != UpdateCall():
                outputs.append(change)
        self.config = new
        outputs.append(self._send(self._session_event("session.updated")))
        return outputs

    def _session_event(self, kind: str) -> ev.SessionEvent:
        c = self.config
        session = c.beta_json(self.session_id) if self.beta else c.ga_json(self.session_id)
        if kind == "session.created":
            return ev.SessionEvent(
                event_id=self._event_id(), type="session.created", session=session
            )
        return ev.SessionEvent(event_id=self._event_id(), type="session.updated", session=session)

    def _begin(self) -> list[Output]:
        """Place the call now if it is not yet placed."""
        if self.phase is not Phase.IDLE:
            return []
        self._to(Trigger.BEGIN)
        return [BeginCall(self.config.call_options(self.session_id), resume=self._resume)]

    # ------------------------------------------------------------------ commands

    def _append(self, event: AudioAppend) -> list[Output]:
        data = decode_audio(event.audio, event_id=event.event_id)
        if not data:
            return []
        fmt = self.config.input_format
        self._buffered_ms += fmt.duration_ms(len(data))
        return [*self._begin(), ForwardAudio(fmt.decode(data))]

    def _commit(self, event: AudioCommit) -> list[Output]:
        if self._buffered_ms < MIN_COMMIT_MS:
            raise RealtimeError(
                f"buffer too small: {self._buffered_ms:.0f} ms of audio since the last "
                f"commit, at least {MIN_COMMIT_MS:.0f} ms needed",
                code=ErrorCode.COMMIT_EMPTY,
                event_id=event.event_id,
            )
        self._buffered_ms = 0.0
        return [*self._begin(), CommitInput()]

    def _create_item(self, event: ItemCreate) -> list[Output]:
        item = event.item
        if item.type != "message" or item.role != "user":
            raise RealtimeError(
                "only user messages can be created (role 'user', input_text content)",
                code=ErrorCode.UNSUPPORTED,
                param="item.role" if item.type == "message" else "item.type",
                event_id=event.event_id,
            )
        texts = [c.text for c in item.content if c.type == "input_text" and c.text is not None]
        if len(texts) != len(item.content) or not "".join(texts).strip():
            raise RealtimeError(
                "a user message needs non-empty input_text content (audio content is not "
                "supported: append audio instead)",
                code=ErrorCode.UNSUPPORTED,
                param="item.content",
                event_id=event.event_id,
            )
        item_id = item.id or self._new_id("item")
        if item_id in self.conversation:
            raise RealtimeError(
                f"an item with id {item_id!r} already exists",
                code=ErrorCode.INVALID_VALUE,
                param="item.id",
                event_id=event.event_id,
            )
        if event.previous_item_id not in (None, self.conversation.last_id):
            raise RealtimeError(
                "items can only be added at the end of the conversation",
                code=ErrorCode.UNSUPPORTED,
                param="previous_item_id",
                event_id=event.event_id,
            )
        if not self.config.answers:
            raise RealtimeError(
                "a transcription session has no conversation to add messages to",
                code=ErrorCode.INVALID_STATE,
                event_id=event.event_id,
            )
        return [*self._begin(), AddUserText("\n".join(texts), item_id)]

    def _known(self, item_id: str, event_id: str | None) -> StoredItem:
        item = self.conversation.get(item_id)
        if item is None:
            raise RealtimeError(
                f"no item with id {item_id!r}",
                code=ErrorCode.ITEM_NOT_FOUND,
                param="item_id",
                event_id=event_id,
            )
        return item

    def _respond(self, event: ResponseCreate) -> list[Output]:
        if not self.config.answers:
            raise RealtimeError(
                "a transcription session does not create responses",
                code=ErrorCode.INVALID_STATE,
                event_id=event.event_id,
            )
        params = event.response
        if params is not None and params.conversation not in (None, "auto"):
            raise RealtimeError(
                "out-of-band responses (conversation other than 'auto') are not supported",
                code=ErrorCode.UNSUPPORTED,
                param="response.conversation",
                event_id=event.event_id,
            )
        return [*self._begin(), Respond()]

    # ------------------------------------------------------------------ server events

    def render(self, event: CallEvent) -> list[str | bytes]:
        return [ev.dump(e) for e in self._render(event)]

    def _render(self, event: CallEvent) -> list[ev.ServerEvent]:
        match event:
            case (
                VadEvent()
                | SentenceBegin()
                | FirstAudio()
                | TtsBegin()
                | TtsSegment()
                | CallCompleted()
                | LlmWorkerEvent()
            ):
                return []  # nothing in this protocol says these
            case SpeechStarted():
                return self._speech_started(event)
            case SpeechStopped():
                return self._speech_stopped(event)
            case InputCommitted():
                return self._committed(event.item_id)
            case InputCleared():
                self.inputs.clear()
                return [ev.Cleared(event_id=self._event_id())]
            case TranscriptPartial():
                return self._partial(event)
            case TranscriptFinal():
                self._last_final_s = max(event.end_ms - event.begin_ms, 0) / 1000
                return []
            case UserItem():
                return self._user_item(event)
            case TurnStarted():
                return self._response(event.turn, event.assistant_item_id)[1]
            case LlmBegin():
                return self._response(event.turn)[1]
            case LlmDelta():
                state, opening = self._response(event.turn)
                return opening + state.text(event.text)
            case LlmEnd():
                state, opening = self._response(event.turn)
                state.finish_text(event.text, event.tokens)
                return opening
            case TtsEnd():
                state, opening = self._response(event.turn)
                return opening + state.complete()
            case TurnCancelled():
                state, opening = self._response(event.turn, event.item_id)
                return opening + state.stop(_CANCEL_REASONS[event.reason], event.heard_text)
            case TurnFailed():
                state, opening = self._response(event.turn)
                return opening + state.fail(event.code.value, event.message)
            case ItemTruncated():
                item = self.conversation.get(event.item_id)
                if item is not None:
                    item.text = event.text
                return [
                    ev.ItemTruncated(
                        event_id=self._event_id(),
                        item_id=event.item_id,
                        content_index=0,
                        audio_end_ms=event.audio_end_ms,
                    )
                ]
            case ItemDeleted():
                self.conversation.delete(event.item_id)
                return [ev.ItemDeleted(event_id=self._event_id(), item_id=event.item_id)]
            case CommandFailed():
                code = _COMMAND_CODES.get(event.code, ErrorCode.INVALID_STATE)
                return [self._error(code.value, event.message, server=False)]
            case CallFailed():
                return [self._error(event.code.value, event.message, server=True)]
            case _:
                assert_never(event)

    def render_audio(self, turn: int, pcm: bytes, sample_rate: int) -> list[str | bytes]:
        state, opening = self._response(turn)
        return [ev.dump(e) for e in opening + state.audio(pcm, sample_rate)]

    # ------------------------------------------------------------------ user input

    def _speech_started(self, event: SpeechStarted) -> list[ev.ServerEvent]:
        self.inputs.speaking(event.item_id)
        if self.config.turn is None:
            return []  # manual turns: OpenAI reports no speech events
        return [
            ev.SpeechStarted(
                event_id=self._event_id(),
                audio_start_ms=event.audio_start_ms,
                item_id=event.item_id,
            )
        ]

    def _speech_stopped(self, event: SpeechStopped) -> list[ev.ServerEvent]:
        self._buffered_ms = 0.0  # the VAD committed what was buffered
        if self.config.turn is None:
            return []
        return [
            ev.SpeechStopped(
                event_id=self._event_id(), audio_end_ms=event.audio_end_ms, item_id=event.item_id
            )
        ]

    def _committed(self, item_id: str) -> list[ev.ServerEvent]:
        """A spoken user turn is committed: its item exists, its transcript will follow."""
        self.inputs.committed(item_id)
        item = StoredItem(id=item_id, role="user", kind="audio")
        previous = self.conversation.add(item)
        return [
            ev.Committed(event_id=self._event_id(), item_id=item_id, previous_item_id=previous),
            self._item_event(self.names.item_added, item, previous),
        ]

    def _partial(self, event: TranscriptPartial) -> list[ev.ServerEvent]:
        found = self.inputs.delta(event.text)
        if found is None:
            return []
        item_id, delta = found
        return [ev.TranscriptionDelta(event_id=self._event_id(), item_id=item_id, delta=delta)]

    def _user_item(self, event: UserItem) -> list[ev.ServerEvent]:
        events: list[ev.ServerEvent] = []
        if not event.spoken:
            item = StoredItem(
                id=event.item_id, role="user", kind="text", status="completed", text=event.text
            )
            previous = self.conversation.add(item)
            events.append(self._item_event(self.names.item_added, item, previous))
            if not self.beta:
                events.append(self._item_event("conversation.item.done", item, previous))
            return events
        self.inputs.transcribed(event.item_id)
        stored = self.conversation.get(event.item_id)
        if stored is None:  # committed before we knew of it: announce it now
            events += self._committed(event.item_id)
            self.inputs.transcribed(event.item_id)
            stored = self.conversation.get(event.item_id)
            assert stored is not None
        stored.text = event.text
        stored.status = "completed"
        events.append(
            ev.TranscriptionCompleted(
                event_id=self._event_id(),
                item_id=event.item_id,
                transcript=event.text,
                usage=ev.DurationUsage(seconds=self._last_final_s),
            )
        )
        if not self.beta:
            events.append(self._item_event("conversation.item.done", stored))
        return events

    # ------------------------------------------------------------------ responses

    def _response(
        self, turn: int, item_id: str | None = None
    ) -> tuple[ResponseState, list[ev.ServerEvent]]:
        """The response of ``turn``, opened (with its first events) if it is new."""
        known = self._responses.get(turn)
        if known is not None:
            return known, []
        c = self.config
        stale = bool(self._responses) and turn < max(self._responses)
        settings = ResponseSettings(
            names=self.names,
            beta=self.beta,
            modality=c.modality,
            output_format=c.output_format,
            voice=c.voice,
            conversation_id="conv_" + self.session_id.removeprefix("sess_"),
        )
        item = StoredItem(id=item_id or self._new_id("item"), role="assistant", kind=c.modality)
        state = ResponseState(
            id=self._new_id("resp"),
            turn=turn,
            item=item,
            settings=settings,
            event_id=self._event_id,
        )
        if stale:
            # A turn older than the latest that we no longer track: it is long over, and
            # whatever still arrives of it is dropped by a response that is already done.
            state.done = True
            return state, []
        # Only the latest turns matter: older ones are done and never referred to again.
        self._responses = {t: r for t, r in self._responses.items() if t > turn - 4}
        self._responses[turn] = state
        previous = self.conversation.add(item)
        return state, state.open(previous)

    # ------------------------------------------------------------------ helpers

    def _item_event(
        self, kind: ev.ItemEventType, item: StoredItem, previous: str | None = None
    ) -> ev.ItemEvent:
        n = self.names
        rendered = render_item(item, audio_content=n.audio_content, text_content=n.text_content)
        return ev.ItemEvent(
            event_id=self._event_id(), type=kind, item=rendered, previous_item_id=previous
        )

    def _error(self, code: str, message: str, *, server: bool) -> ev.ErrorEvent:
        kind = ErrorType.SERVER if server else ErrorType.INVALID_REQUEST
        detail = ev.ErrorDetail(type=kind, code=code, message=message)
        return ev.ErrorEvent(event_id=self._event_id(), error=detail)

    def _send(self, event: ev.ServerEvent) -> SendText:
        return SendText(ev.dump(event))

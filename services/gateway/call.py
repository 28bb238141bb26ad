"""The call core: one call's pipeline logic, protocol-neutral and sans-I/O.

It takes client audio, the protocol adapters' commands (commit, respond, cancel,
truncate...) and the services' messages, and returns `Action`s for the asyncio layer to
carry out: publish to a service, emit an event to the client's protocol adapter, send
reply audio, drop a cancelled turn's queued audio, finish. It never awaits and never
reads the clock: callers pass ``now`` (``time.monotonic()``).

Events emitted to the adapter are the services' own wire messages where one fits
(`VadEvent`, `TranscriptFinal`, `LlmDelta`, `TtsSegment`...) plus the ones the gateway
makes itself (conversation items, turn starts and cancels, failures, completion); each
protocol renders them in its own words and ignores what its protocol has no word for.

Turn-taking (what interrupts an answer, what is a backchannel, half duplex, manual
commits) is decided by the transition table in `services.gateway.turns`; this module
measures the user's speech and carries out the effects.

Conversation items: every user entry (a committed utterance, typed text) and every
answer has an item id, made here, so protocols that name items (OpenAI Realtime) can;
the LLM history uses the same ids, so truncation and deletion refer to the same entries.

Lifecycle: ``open`` -> ACTIVE -> ``stop`` -> DRAINING (ASR flushes, the current answer
finishes) -> FINISHED; ``hangup`` (client gone) and fatal service errors finish at once.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum, auto

from pydantic import JsonValue

from services.gateway.failover import CallRecovery
from services.gateway.heard import AnswerAudio, word_count
from services.gateway.timeline import AudioTimeline
from services.gateway.turns import Effect, TurnInput, TurnMachine, TurnPolicy, TurnState
from shared.audio import StreamResampler
from shared.messages import (
    AsrClose,
    AsrCommit,
    AsrOpen,
    AudioFrame,
    Cancel,
    ErrorCode,
    HistoryOp,
    LlmBegin,
    LlmClose,
    LlmDelta,
    LlmEdit,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    LlmUpdate,
    LlmWorkerEvent,
    Message,
    SentenceBegin,
    ServiceError,
    ServiceName,
    SessionClosed,
    TranscriptFinal,
    TranscriptPartial,
    TtsAudio,
    TtsBegin,
    TtsClose,
    TtsEnd,
    TtsOpen,
    TtsSegment,
    TtsText,
    TtsUpdate,
    VadEvent,
    VadOptions,
    VadState,
    WireModel,
    WorkerSpec,
)

ASR_RATE = 16000
_KEEP_ANSWERS = 16  # answers remembered for truncation (older ones are history only)
_KEEP_ITEMS = 256  # item ids remembered for deletion

# ServiceErrors without a turn that mean the service no longer holds the session.
_FATAL_CODES = frozenset({ErrorCode.UNKNOWN_SESSION, ErrorCode.OVERLOADED, ErrorCode.BAD_REQUEST})


def _ends_call(error: ServiceError) -> bool:
    if error.code in _FATAL_CODES:
        return True
    # ENGINE_FAILED without a turn is a session that could not open, except from ASR,
    # which also reports one utterance it could not decode that way while the call goes
    # on (an ASR session that never opened shows up as UNKNOWN_SESSION on the next frame).
    return error.code is ErrorCode.ENGINE_FAILED and error.service is not ServiceName.ASR


def new_item_id() -> str:
    return "item_" + uuid.uuid4().hex[:24]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BargeIn:
    """When the user's speech over an answer interrupts it (SPEC section 2: backchannels
    and short noises must not)."""

    min_speech_ms: int = 300  # voiced audio before the answer is cut
    min_words: int = 0  # recognised words before the answer is cut (needs partials)
    resume: bool = False  # hold the answer's audio meanwhile; resume it after a false alarm


@dataclass(frozen=True)
class CallOptions:
    """What a protocol adapter asks for when a call starts."""

    sid: str
    answer: bool = True  # False: transcription only, no LLM/TTS
    client_rate: int = 16000
    partials: bool = True
    vad: VadOptions = field(default_factory=VadOptions)
    manual: bool = False  # the client commits turns; no server turn detection
    auto_respond: bool = True  # a user turn is answered at once (OpenAI create_response)
    interrupt: bool = True  # speech cancels the answer (OpenAI interrupt_response)
    half_duplex: bool = False  # the user is not heard while the assistant talks
    barge_in: BargeIn | None = None  # None: the gateway's settings
    language: str | None = None
    asr_model: str | None = None
    llm_model: str | None = None
    system_prompt: str = ""  # Jinja2 template, rendered by the LLM service
    prompt: str | None = None  # Jinja2 template of the user's turn; None: the words as said
    variables: Mapping[str, JsonValue] = field(default_factory=dict)
    workers: tuple[WorkerSpec, ...] = ()
    temperature: float = 0.7
    max_tokens: int = 256
    max_history: int = 20
    tts_model: str | None = None
    voice: str | None = None
    tts_rate: int = 24000

    def models(self, service: ServiceName) -> tuple[str, ...]:
        """The model names the call asks ``service`` for (checked at assignment)."""
        match service:
            case ServiceName.ASR:
                names = [self.asr_model]
            case ServiceName.LLM:
                names = [self.llm_model, *(w.model for w in self.workers)]
            case ServiceName.TTS:
                names = [self.tts_model]
        return tuple(dict.fromkeys(n for n in names if n))

    @property
    def policy(self) -> TurnPolicy:
        return TurnPolicy(
            auto_respond=self.auto_respond,
            interrupt=self.interrupt,
            half_duplex=self.half_duplex,
            resume=(self.barge_in or BargeIn()).resume,
        )


@dataclass(frozen=True)
class Replicas:
    """The replica of each service that took the call (``None``: not used)."""

    asr: str
    llm: str | None = None
    tts: str | None = None

    def of(self, service: ServiceName) -> str | None:
        return {ServiceName.ASR: self.asr, ServiceName.LLM: self.llm, ServiceName.TTS: self.tts}[
            service
        ]


# --------------------------------------------------------------------------- events


class CancelReason(StrEnum):
    TURN_DETECTED = "turn_detected"  # the user spoke over the answer (barge-in)
    CLIENT_CANCELLED = "client_cancelled"  # the client asked (response.cancel)
    CALL_ENDED = "call_ended"  # the call ends under it (drain timeout, shutdown)


@dataclass(frozen=True)
class SpeechStarted:
    """Server VAD: the user started speaking; the speech becomes input item ``item_id``."""

    item_id: str
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True)
class InputCommitted:
    """The user's audio so far is item ``item_id``; its transcript follows (`UserItem`)."""

    item_id: str


@dataclass(frozen=True)
class InputCleared:
    """Uncommitted input audio was discarded."""


@dataclass(frozen=True)
class UserItem:
    """A user entry joined the conversation: a transcribed utterance or typed text."""

    item_id: str
    text: str
    spoken: bool


@dataclass(frozen=True)
class TurnStarted:
    """An answer starts: it is item ``assistant_item_id``, answering ``user_item_id``."""

    turn: int
    assistant_item_id: str
    user_item_id: str | None  # None: it answers the conversation as it stands


@dataclass(frozen=True)
class FirstAudio:
    """The first audio of a turn's answer is about to be sent."""

    turn: int
    latency_ms: float | None  # from the end of the user's speech; None if unknown


@dataclass(frozen=True)
class TurnCancelled:
    """The answer stopped; nothing more of it reaches the client after this event."""

    turn: int
    reason: CancelReason
    item_id: str
    heard_text: str  # what the user heard of it (what the history keeps)
    heard_ms: float  # how much of its audio was written to the client


@dataclass(frozen=True)
class TurnFailed:
    turn: int
    service: ServiceName
    code: ErrorCode
    message: str


@dataclass(frozen=True)
class ItemTruncated:
    """Answer ``item_id`` now holds only its first ``audio_end_ms`` (``text`` was heard)."""

    item_id: str
    audio_end_ms: int
    text: str


@dataclass(frozen=True)
class ItemDeleted:
    item_id: str


@dataclass(frozen=True)
class CommandFailed:
    """A client command could not be carried out; the call goes on."""

    command: str  # e.g. "respond", "truncate"
    code: str  # stable: "active_response", "unknown_item", "not_supported"
    message: str


@dataclass(frozen=True)
class CallCompleted:
    """A stopped call delivered everything it owed."""


@dataclass(frozen=True)
class CallFailed:
    service: ServiceName | None
    code: ErrorCode
    message: str


CallEvent = (
    VadEvent
    | SentenceBegin
    | TranscriptPartial
    | TranscriptFinal
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | InputCleared
    | UserItem
    | TurnStarted
    | LlmBegin
    | LlmDelta
    | LlmEnd
    | LlmWorkerEvent
    | TtsBegin
    | TtsSegment
    | TtsEnd
    | FirstAudio
    | TurnCancelled
    | TurnFailed
    | ItemTruncated
    | ItemDeleted
    | CommandFailed
    | CallCompleted
    | CallFailed
)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Publish:
    """Send ``message`` to the call's replica of ``service`` (its control subject if asked)."""

    service: ServiceName
    message: WireModel
    control: bool = False
    restore: bool = False  # brings a replacement replica up to date (already accounted for)


@dataclass(frozen=True)
class Emit:
    event: CallEvent


@dataclass(frozen=True)
class SendAudio:
    """Reply audio at the session's TTS rate; ``speech_end_at`` only on a turn's first chunk.

    The connection reports each chunk it really wrote with `CallCore.audio_sent`.
    """

    turn: int
    pcm: bytes
    speech_end_at: float | None = None


@dataclass(frozen=True)
class DropAudio:
    """Audio of turns up to ``turn`` still queued for the client must not be sent."""

    turn: int
    heard_at: float | None = None  # a barge-in: when the interrupting speech came in


@dataclass(frozen=True)
class Finish:
    """The call is over; the adapter's last events were emitted before this."""

    completed: bool


Action = Publish | Emit | SendAudio | DropAudio | Finish


class CallPhase(Enum):
    NEW = auto()
    ACTIVE = auto()
    DRAINING = auto()
    FINISHED = auto()


_CANCEL_REASONS = {
    TurnInput.SPEECH_CONFIRMED: CancelReason.TURN_DETECTED,
    TurnInput.USER_TURN: CancelReason.TURN_DETECTED,
    TurnInput.CANCEL: CancelReason.CLIENT_CANCELLED,
    TurnInput.ABORT: CancelReason.CALL_ENDED,
}


@dataclass
class _Speech:
    """The user's current utterance as server VAD and partials describe it."""

    onset_ms: int
    heard_at: float  # when its onset reached the gateway
    speaking: bool = False  # VAD confirmed it (SPEAKING) and it is not pausing
    announced: bool = False  # SpeechStarted was emitted
    words: int = 0


# --------------------------------------------------------------------------- the core


class CallCore:
    """One call. Every method returns the actions to carry out, in order."""

    def __init__(self, options: CallOptions, new_id: Callable[[], str] = new_item_id) -> None:
        self.options = options
        self.sid = options.sid
        self.barge_in = options.barge_in or BargeIn()
        self.phase = CallPhase.NEW
        self.timeline = AudioTimeline()
        self._new_id = new_id
        self._resampler = StreamResampler(options.client_rate, ASR_RATE)
        self._odd_byte = b""
        self._seq = 0
        self._turns = TurnMachine(options.policy)
        self._turn = 0  # number of the current (or last) turn; 0: none yet
        self._tts_seq = 0
        self._speech_end_at: float | None = None
        self._first_audio_sent = False
        self._held_segments: list[TtsSegment] = []
        self._held_audio: list[SendAudio] = []
        self._holding = False
        self._asr_closed = False
        # Conversation items.
        self._input_item: str | None = None  # what the audio being spoken will become
        self._awaiting: deque[str | None] = deque()  # committed, transcript due (None: cleared)
        self._pending: list[tuple[str, str]] = []  # user entries the LLM has not seen yet
        self._queued = False  # an answer is owed once the current one is done
        self._respond_owed = False  # answer once the awaited transcripts are in
        self._speech: _Speech | None = None
        self._answers: OrderedDict[int, AnswerAudio] = OrderedDict()
        self._items: OrderedDict[str, None] = OrderedDict()  # ids the LLM history holds
        self.recovery = CallRecovery(options.sid)  # what a replacement replica needs

    @property
    def finished(self) -> bool:
        return self.phase is CallPhase.FINISHED

    @property
    def turn(self) -> int:
        return self._turn

    @property
    def answering(self) -> bool:
        """The assistant talks (makes an answer or still plays one out)."""
        return self._turns.talking

    @property
    def turn_state(self) -> TurnState:
        return self._turns.state

    # ------------------------------------------------------------------ client side

    def open(self) -> list[Action]:
        """The services were assigned: open the call's session on each."""
        assert self.phase is CallPhase.NEW
        self.phase = CallPhase.ACTIVE
        o = self.options
        actions: list[Action] = [
            Publish(
                ServiceName.ASR,
                AsrOpen(
                    sid=o.sid,
                    vad=o.vad,
                    language=o.language,
                    # Counting words for barge-in needs partials even if the client does not.
                    partials=o.partials or (o.answer and self.barge_in.min_words > 0),
                    manual=o.manual,
                    model=o.asr_model,
                ),
            )
        ]
        if o.answer:
            actions.append(
                Publish(
                    ServiceName.LLM,
                    LlmOpen(
                        sid=o.sid,
                        model=o.llm_model,
                        system_prompt=o.system_prompt,
                        prompt=o.prompt,
                        variables=dict(o.variables),
                        workers=o.workers,
                        temperature=o.temperature,
                        max_history=o.max_history,
                        max_tokens=o.max_tokens,
                    ),
                )
            )
            actions.append(
                Publish(
                    ServiceName.TTS,
                    TtsOpen(sid=o.sid, voice=o.voice, sample_rate=o.tts_rate, model=o.tts_model),
                )
            )
        return actions

    def audio(self, pcm: bytes, now: float) -> list[Action]:
        """Client audio (PCM16 mono at the client's rate) received at ``now``."""
        if self.phase is not CallPhase.ACTIVE:
            return []  # after a stop the ASR session is closing; late audio has no use
        data = self._odd_byte + pcm
        # A frame may split a sample; keep the odd byte for the next one.
        cut = len(data) - (len(data) % 2)
        data, self._odd_byte = data[:cut], data[cut:]
        if not data:
            return []
        if self._turns.deaf:
            # Half duplex: ASR hears silence of the same length, so its clock and
            # endpointing go on as if the user were quiet.
            data = bytes(len(data))
        actions = self._forward(self._resampler.process(data), now)
        return actions + self._judge_speech()

    def _forward(self, pcm16k: bytes, now: float) -> list[Action]:
        if not pcm16k:
            return []  # the resampler is still filling its filter
        self.timeline.record(len(pcm16k) // 2, now)
        self._seq += 1
        # Built from our own typed values: validating them again for every frame is waste.
        frame = AudioFrame.model_construct(sid=self.sid, seq=self._seq, pcm=pcm16k)
        return [Publish(ServiceName.ASR, frame)]

    def commit(self) -> list[Action]:
        """The audio sent so far is one user turn (manual turn detection)."""
        if self.phase is not CallPhase.ACTIVE:
            return []
        item = self._take_input_item()
        self._awaiting.append(item)
        # ASR answers every commit with one final (empty when nothing was said).
        return [Publish(ServiceName.ASR, AsrCommit(sid=self.sid)), Emit(InputCommitted(item))]

    def clear_input(self) -> list[Action]:
        """Discard the audio sent since the last commit."""
        if self.phase is not CallPhase.ACTIVE:
            return []
        self._awaiting.append(None)  # the final this commit produces is dropped
        self._input_item = None
        self._speech = None
        return [Publish(ServiceName.ASR, AsrCommit(sid=self.sid)), Emit(InputCleared())]

    def respond(self, text: str | None = None) -> list[Action]:
        """Answer now; ``text`` is a typed user turn to add first."""
        if self.phase is not CallPhase.ACTIVE:
            return []
        if not self.options.answer:
            return [self._refuse("respond", "not_supported", "a transcription call never answers")]
        if self._turns.busy:
            return self._apply(TurnInput.RESPOND)  # refused by the table
        actions: list[Action] = []
        if text is not None:
            item = self._new_id()
            self._pending.append((item, text))
            actions.append(Emit(UserItem(item, text, spoken=False)))
        if self._awaiting:
            # A committed utterance is still being transcribed: answer it, not before it.
            self._respond_owed = True
            return actions
        return actions + self._apply(TurnInput.RESPOND)

    def cancel_response(self) -> list[Action]:
        """The client cancels the answer in progress; harmless when there is none."""
        self._respond_owed = False
        self._queued = False
        return self._apply(TurnInput.CANCEL)

    def add_user_text(self, item_id: str, text: str) -> list[Action]:
        """A typed user message joins the conversation without being answered."""
        if not self.options.answer:
            return [self._refuse("add_user_text", "not_supported", "a transcription call")]
        self._pending.append((item_id, text))
        return [Emit(UserItem(item_id, text, spoken=False))]

    def truncate(self, item_id: str, audio_end_ms: int) -> list[Action]:
        """The client played only ``audio_end_ms`` of answer ``item_id``: keep what was heard."""
        answer = next((a for a in self._answers.values() if a.item_id == item_id), None)
        if answer is None:
            return [self._refuse("truncate", "unknown_item", f"no answer with id {item_id!r}")]
        if audio_end_ms < 0 or audio_end_ms > answer.received_ms + 1:
            return [
                self._refuse(
                    "truncate",
                    "invalid_value",
                    f"audio_end_ms {audio_end_ms} is outside the answer's "
                    f"{answer.received_ms:.0f} ms of audio",
                )
            ]
        text = answer.text_until(answer.bytes_at(audio_end_ms))
        return [
            Publish(
                ServiceName.LLM,
                LlmEdit(sid=self.sid, op=HistoryOp.TRUNCATE, item_id=item_id, content=text),
            ),
            Emit(ItemTruncated(item_id, audio_end_ms, text)),
        ]

    def delete_item(self, item_id: str) -> list[Action]:
        for i, (pending_id, _) in enumerate(self._pending):
            if pending_id == item_id:
                del self._pending[i]
                return [Emit(ItemDeleted(item_id))]
        if item_id not in self._items:
            return [self._refuse("delete", "unknown_item", f"no item with id {item_id!r}")]
        del self._items[item_id]
        return [
            Publish(ServiceName.LLM, LlmEdit(sid=self.sid, op=HistoryOp.DELETE, item_id=item_id)),
            Emit(ItemDeleted(item_id)),
        ]

    def update(
        self,
        *,
        system_prompt: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        voice: str | None = None,
        variables: Mapping[str, JsonValue] | None = None,
    ) -> list[Action]:
        """Settings changed mid-call; ``None`` leaves a setting as it is."""
        if not self.options.answer or self.phase is not CallPhase.ACTIVE:
            return []
        actions: list[Action] = []
        if variables is not None:
            actions.append(
                self._refuse("update", "not_supported", "variables are fixed when a call starts")
            )
        if (system_prompt, temperature, max_tokens) != (None, None, None):
            actions.append(
                Publish(
                    ServiceName.LLM,
                    LlmUpdate(
                        sid=self.sid,
                        system_prompt=system_prompt,
                        temperature=temperature,
                        max_tokens=max_tokens,
                    ),
                )
            )
        if voice is not None:
            actions.append(Publish(ServiceName.TTS, TtsUpdate(sid=self.sid, voice=voice)))
        return actions

    def published(self, action: Publish) -> None:
        """The connection sent ``action``'s message to its replica (failover keeps track)."""
        if not action.restore:
            self.recovery.published(action.service, action.message)

    def replica_lost(self, service: ServiceName) -> list[Action]:
        """``service``'s replica died or hung and the connection placed the call on another:
        the messages that bring the new one up to date (to be published to it)."""
        if self.phase in (CallPhase.NEW, CallPhase.FINISHED):
            return []
        if service is ServiceName.ASR and self._asr_closed:
            return []  # its flush already delivered everything
        if service is not ServiceName.ASR and not self.options.answer:
            return []
        speech = self._speech
        messages = self.recovery.restart(
            service,
            answering=self._turns.busy,
            speech_ongoing=speech is not None and speech.announced,
            awaiting=len(self._awaiting),
        )
        return [Publish(service, m, restore=True) for m in messages]

    def audio_sent(self, turn: int, nbytes: int) -> None:
        """The connection wrote ``nbytes`` of ``turn``'s reply audio (PCM16 at the TTS rate)."""
        answer = self._answers.get(turn)
        if answer is None:
            return
        answer.audio_sent(nbytes)
        if turn == self._turn:
            # Effects of PLAYBACK_DONE are none: nothing to carry out.
            self._check_playback()

    def stop(self, now: float) -> list[Action]:
        """The client asked to end: flush ASR, let the current answer finish, then complete."""
        if self.phase is not CallPhase.ACTIVE:
            return []
        actions = self._forward(self._resampler.flush(), now)
        self.phase = CallPhase.DRAINING
        actions.append(Publish(ServiceName.ASR, AsrClose(sid=self.sid, flush=True)))
        return actions + self._maybe_complete()

    def drain_timeout(self) -> list[Action]:
        """A stop took too long: cut the current answer and complete anyway."""
        if self.phase is not CallPhase.DRAINING:
            return []
        actions = self._apply(TurnInput.ABORT)
        self._asr_closed = True
        return actions + self._maybe_complete()

    def hangup(self) -> list[Action]:
        """The client is gone: cancel everything and close the services' sessions."""
        if self.phase in (CallPhase.NEW, CallPhase.FINISHED):
            self.phase = CallPhase.FINISHED
            return []
        # Nobody is left to tell that the answer was cancelled.
        actions = [a for a in self._apply(TurnInput.ABORT) if not isinstance(a, Emit)]
        return actions + self._close_services(flush=False) + [Finish(completed=False)]

    def fail(
        self, code: ErrorCode, message: str, service: ServiceName | None = None
    ) -> list[Action]:
        """End the call now with an error the client is told about."""
        if self.phase in (CallPhase.NEW, CallPhase.FINISHED):
            self.phase = CallPhase.FINISHED
            return [Emit(CallFailed(service, code, message)), Finish(completed=False)]
        actions = self._apply(TurnInput.ABORT)
        actions.append(Emit(CallFailed(service, code, message)))
        return actions + self._close_services(flush=False) + [Finish(completed=False)]

    def _refuse(self, command: str, code: str, message: str) -> Emit:
        return Emit(CommandFailed(command, code, message))

    # ------------------------------------------------------------------ service side

    def on_message(self, msg: Message, now: float) -> list[Action]:
        """A message from one of the call's services arrived at ``now``."""
        if self.phase in (CallPhase.NEW, CallPhase.FINISHED):
            return []
        if isinstance(msg, VadEvent | SentenceBegin | TranscriptPartial | TranscriptFinal):
            # Onto the call's timeline; None: a replacement replica repeats what we had.
            mapped = self.recovery.asr_result(msg)
            if mapped is None:
                return []
            msg = mapped
        match msg:
            case VadEvent():
                return self._on_vad(msg, now)
            case SentenceBegin():
                return [Emit(msg)]
            case TranscriptPartial():
                if self._speech is not None:
                    self._speech.words = word_count(msg.text)
                actions: list[Action] = [Emit(msg)] if self.options.partials else []
                return actions + self._judge_speech()
            case TranscriptFinal():
                return self._on_final(msg)
            case LlmBegin() | LlmDelta() | LlmEnd():
                return self._on_llm(msg) if self._current(msg.turn) else []
            case LlmWorkerEvent():
                # Also after the answer ended (non-blocking workers) or was cancelled
                # (their CANCELLED); never for a turn a newer one replaced.
                return [Emit(msg)] if msg.turn == self._turn else []
            case TtsBegin() | TtsSegment() | TtsAudio() | TtsEnd():
                return self._on_tts(msg, now) if self._current(msg.turn) else []
            case ServiceError():
                return self._on_error(msg)
            case SessionClosed():
                return self._on_closed(msg)
            case _:
                return []  # requests of other services echoed to us: not ours to act on

    def _current(self, turn: int) -> bool:
        # Anything of an older turn was cancelled; the services may still have had it in
        # flight, and none of it may reach the client.
        return self._turns.busy and turn == self._turn

    # ------------------------------------------------------------------ the user's speech

    def _take_input_item(self) -> str:
        item = self._input_item or self._new_id()
        self._input_item = None
        return item

    def _on_vad(self, msg: VadEvent, now: float) -> list[Action]:
        actions: list[Action] = [Emit(msg)]
        speech = self._speech
        match msg.state:
            case VadState.STARTING:
                self._speech = _Speech(onset_ms=msg.start_ms, heard_at=now)
                actions += self._apply(TurnInput.SPEECH_STARTED)
            case VadState.SPEAKING:
                if speech is None:  # an onset we did not see (it started before a clear)
                    speech = self._speech = _Speech(onset_ms=msg.start_ms, heard_at=now)
                speech.speaking = True
                if not speech.announced:
                    speech.announced = True
                    if self._input_item is None:
                        self._input_item = self._new_id()
                    actions.append(Emit(SpeechStarted(self._input_item, msg.start_ms)))
            case VadState.PAUSING:
                if speech is not None:
                    speech.speaking = False
            case VadState.STOPPING:
                if speech is not None and speech.announced:
                    item = self._take_input_item()
                    self._awaiting.append(item)
                    actions.append(Emit(SpeechStopped(item, msg.end_ms)))
                    actions.append(Emit(InputCommitted(item)))
                self._speech = None
            case VadState.QUIET:
                if speech is not None and not speech.announced:
                    # VAD rejected the onset: a noise, no turn follows.
                    self._speech = None
                    actions += self._apply(TurnInput.SPEECH_ENDED)
        return actions + self._judge_speech()

    def _interrupts(self, duration_ms: float, words: int) -> bool:
        b = self.barge_in
        return duration_ms >= b.min_speech_ms and words >= b.min_words

    def _judge_speech(self) -> list[Action]:
        """Confirm a contested answer's interruption once the speech is long enough."""
        speech = self._speech
        if speech is None or not self._turns.contested:
            return []
        if not speech.speaking and self.barge_in.min_speech_ms > 0:
            return []  # only confirmed, ongoing speech counts
        duration = max(0.0, self.timeline.stream_ms - speech.onset_ms)
        if not self._interrupts(duration, speech.words):
            return []
        return self._apply(TurnInput.SPEECH_CONFIRMED)

    def _on_final(self, msg: TranscriptFinal) -> list[Action]:
        actions: list[Action] = []
        if self._awaiting:
            item = self._awaiting.popleft()
        else:
            # Server VAD ended the utterance without our seeing it speak (or a flush).
            item = self._take_input_item()
            actions.append(Emit(InputCommitted(item)))
        self._speech = None
        if item is None:
            return self._owed_response()  # the client cleared this input
        text = msg.text.strip()
        actions += [Emit(msg), Emit(UserItem(item, text, spoken=True))]
        if not self.options.answer:
            return actions + self._maybe_complete()
        if not text:
            return actions + self._apply(TurnInput.SPEECH_ENDED) + self._owed_response()
        self._speech_end_at = self.timeline.received_at(msg.end_ms)
        counts = not self._turns.talking or self._interrupts(
            msg.end_ms - msg.begin_ms, word_count(text)
        )
        event = TurnInput.USER_TURN if counts else TurnInput.BACKCHANNEL
        actions += self._apply(event, user=(item, text))
        return actions + self._owed_response() + self._maybe_complete()

    def _owed_response(self) -> list[Action]:
        if not self._respond_owed or self._awaiting:
            return []
        self._respond_owed = False
        return self._apply(TurnInput.RESPOND)

    # ------------------------------------------------------------------ the answer

    def _on_llm(self, msg: LlmBegin | LlmDelta | LlmEnd) -> list[Action]:
        if isinstance(msg, LlmBegin):
            return [Emit(msg)] if self.recovery.llm_begin(msg.turn) else []
        if isinstance(msg, LlmDelta):
            msg = self.recovery.llm_delta(msg)
            self._tts_seq += 1
            text = TtsText(sid=self.sid, turn=msg.turn, seq=self._tts_seq, text=msg.text)
            return [Emit(msg), Publish(ServiceName.TTS, text)]
        self.recovery.llm_end(msg)
        return [Emit(msg)] + self._apply(TurnInput.LLM_DONE)

    def _on_tts(self, msg: TtsBegin | TtsSegment | TtsAudio | TtsEnd, now: float) -> list[Action]:
        answer = self._answers[self._turn]
        match msg:
            case TtsBegin():
                return [Emit(msg)] if self.recovery.tts_begin(msg.turn) else []
            case TtsSegment():
                segment = self.recovery.tts_segment(msg)
                if segment is None:
                    return []  # a replacement replica speaks the sentence again
                msg = segment
                answer.segment(msg.index, msg.text)
                if not self._first_audio_sent:
                    # Bella and others put "first audio" before the first segment's text;
                    # hold the segment until its audio comes.
                    self._held_segments.append(msg)
                    return []
                return [Emit(msg)]
            case TtsAudio():
                audio = self.recovery.tts_audio(msg)
                if audio is None:
                    return []  # the client already has this audio
                msg = audio
                answer.audio(msg.index, len(msg.pcm))
                return self._on_audio_out(msg, now)
            case TtsEnd():
                actions: list[Action] = [Emit(s) for s in self._held_segments]
                self._held_segments.clear()
                actions += [Emit(msg)] + self._apply(TurnInput.TTS_DONE)
                self._check_playback()
                return actions

    def _on_audio_out(self, msg: TtsAudio, now: float) -> list[Action]:
        if self._first_audio_sent:
            return self._send_audio(SendAudio(msg.turn, msg.pcm))
        self._first_audio_sent = True
        # The client is told the latency as the audio is queued for it; the metric is
        # taken by the I/O layer when the chunk is actually written (`speech_end_at`).
        latency = None if self._speech_end_at is None else (now - self._speech_end_at) * 1000
        actions: list[Action] = [Emit(FirstAudio(msg.turn, latency))]
        actions += [Emit(s) for s in self._held_segments]
        self._held_segments.clear()
        return actions + self._send_audio(
            SendAudio(msg.turn, msg.pcm, speech_end_at=self._speech_end_at)
        )

    def _send_audio(self, send: SendAudio) -> list[Action]:
        if self._holding:
            self._held_audio.append(send)
            return []
        return [send]

    def _check_playback(self) -> None:
        answer = self._answers.get(self._turn)
        if answer is not None and answer.played_out and not self._held_audio:
            self._turns.feed(TurnInput.PLAYBACK_DONE)

    def _on_error(self, msg: ServiceError) -> list[Action]:
        if msg.turn is not None:
            if not self._current(msg.turn):
                return []
            return self._fail_turn(msg)
        if _ends_call(msg):
            return self.fail(msg.code, msg.message, msg.service)
        if msg.service is not ServiceName.ASR and self._turns.busy:
            # A worker's generic failure without a turn: the current answer is what broke.
            return self._fail_turn(msg)
        return []

    def _fail_turn(self, msg: ServiceError) -> list[Action]:
        if msg.service is ServiceName.LLM:
            self.recovery.llm_failed(self._turn)
        failed = TurnFailed(self._turn, msg.service, msg.code, msg.message)
        event = TurnInput.LLM_FAILED if msg.service is ServiceName.LLM else TurnInput.TTS_FAILED
        return [Emit(failed)] + self._apply(event) + self._maybe_complete()

    def _on_closed(self, msg: SessionClosed) -> list[Action]:
        if msg.service is not ServiceName.ASR:
            return []
        if self.phase is CallPhase.DRAINING:
            self._asr_closed = True
            return self._maybe_complete()
        return self.fail(ErrorCode.UNKNOWN_SESSION, "the ASR session ended", ServiceName.ASR)

    # ------------------------------------------------------------------ turns

    def _apply(self, event: TurnInput, *, user: tuple[str, str] | None = None) -> list[Action]:
        actions: list[Action] = []
        for effect in self._turns.feed(event):
            match effect:
                case Effect.CANCEL_TURN:
                    actions += self._cancel_turn(event)
                case Effect.CUT_PLAYBACK:
                    actions += self._cut_playback(event)
                case Effect.START_TURN:
                    if user is not None:
                        self._pending.append(user)
                    actions += self._start_turn()
                case Effect.ADD_USER:
                    if user is not None:
                        self._pending.append(user)
                case Effect.QUEUE_TURN:
                    if user is not None:
                        self._pending.append(user)
                    self._queued = True
                case Effect.START_QUEUED:
                    if self._queued:
                        self._queued = False
                        actions += self._apply(TurnInput.RESPOND)
                case Effect.REFUSE_RESPOND:
                    actions.append(
                        self._refuse(
                            "respond", "active_response", "an answer is already in progress"
                        )
                    )
                case Effect.END_TEXT:
                    self._tts_seq += 1
                    actions.append(
                        Publish(
                            ServiceName.TTS,
                            TtsText(
                                sid=self.sid,
                                turn=self._turn,
                                seq=self._tts_seq,
                                text="",
                                final=True,
                            ),
                        )
                    )
                case Effect.TURN_DONE:
                    actions += self._maybe_complete()
                case Effect.HOLD_AUDIO:
                    self._holding = True
                case Effect.RELEASE_AUDIO:
                    self._holding = False
                    actions += self._held_audio
                    self._held_audio = []
        return actions

    def _start_turn(self) -> list[Action]:
        self._turn += 1
        self._tts_seq = 0
        self._first_audio_sent = False
        self._held_segments.clear()
        item = self._new_id()
        self._answers[self._turn] = AnswerAudio(self._turn, item, self.options.tts_rate)
        while len(self._answers) > _KEEP_ANSWERS:
            self._answers.popitem(last=False)
        pending, self._pending = self._pending, []
        user_item = pending[-1][0] if pending else None
        # Several entries the LLM has not seen yet (typed, then spoken) form one user turn.
        text = "\n".join(t for _, t in pending) if pending else None
        for known in [*(i for i, _ in pending), item]:
            self._items[known] = None
        while len(self._items) > _KEEP_ITEMS:
            self._items.popitem(last=False)
        return [
            Emit(TurnStarted(self._turn, item, user_item)),
            Publish(
                ServiceName.LLM,
                LlmTurn(
                    sid=self.sid,
                    turn=self._turn,
                    text=text,
                    user_item_id=user_item or "",
                    assistant_item_id=item,
                ),
            ),
        ]

    def _heard_at(self, event: TurnInput) -> float | None:
        if event is TurnInput.SPEECH_CONFIRMED and self._speech is not None:
            return self._speech.heard_at
        if event is TurnInput.USER_TURN:
            return self._speech_end_at
        return None

    def _cancel_turn(self, event: TurnInput) -> list[Action]:
        turn = self._turn
        answer = self._answers[turn]
        self._held_segments.clear()
        self._held_audio = []
        self._holding = False
        actions: list[Action] = [
            Publish(ServiceName.LLM, Cancel(sid=self.sid, turn=turn), control=True),
            Publish(ServiceName.TTS, Cancel(sid=self.sid, turn=turn), control=True),
            DropAudio(turn, self._heard_at(event)),
        ]
        reason = _CANCEL_REASONS.get(event)
        if reason is None:
            return actions  # a failure: the client hears of it as a failed turn
        heard = answer.heard_text
        actions.append(
            Emit(TurnCancelled(turn, reason, answer.item_id, heard, round(answer.sent_ms, 1)))
        )
        if reason is not CancelReason.CALL_ENDED:
            # History keeps what the user heard; an empty truncation removes the answer.
            actions.append(
                Publish(
                    ServiceName.LLM,
                    LlmEdit(
                        sid=self.sid,
                        op=HistoryOp.TRUNCATE,
                        item_id=answer.item_id,
                        content=heard,
                    ),
                )
            )
        return actions

    def _cut_playback(self, event: TurnInput) -> list[Action]:
        """The answer is complete but still playing: drop its queued audio."""
        answer = self._answers[self._turn]
        self._held_audio = []
        self._holding = False
        actions: list[Action] = [DropAudio(self._turn, self._heard_at(event))]
        if answer.played_out or event is TurnInput.ABORT:
            return actions
        heard = answer.heard_text
        end_ms = int(answer.sent_ms)
        return actions + [
            Publish(
                ServiceName.LLM,
                LlmEdit(sid=self.sid, op=HistoryOp.TRUNCATE, item_id=answer.item_id, content=heard),
            ),
            Emit(ItemTruncated(answer.item_id, end_ms, heard)),
        ]

    # ------------------------------------------------------------------ ending

    def _maybe_complete(self) -> list[Action]:
        if self.phase is not CallPhase.DRAINING or not self._asr_closed or self._turns.busy:
            return []
        actions: list[Action] = [Emit(CallCompleted())]
        # ASR already closed itself after its flush.
        return actions + self._close_services(flush=None) + [Finish(completed=True)]

    def _close_services(self, *, flush: bool | None) -> list[Action]:
        """Close every session; ``flush=None`` leaves ASR alone (it is closed already)."""
        self.phase = CallPhase.FINISHED
        actions: list[Action] = []
        if flush is not None:
            actions.append(Publish(ServiceName.ASR, AsrClose(sid=self.sid, flush=flush)))
        if self.options.answer:
            actions.append(Publish(ServiceName.LLM, LlmClose(sid=self.sid)))
            actions.append(Publish(ServiceName.TTS, TtsClose(sid=self.sid)))
        return actions

"""The call core: one call's pipeline logic, protocol-neutral and sans-I/O.

It takes client audio, stop/hang-up requests and the services' messages, and returns
`Action`s for the asyncio layer to carry out: publish to a service, emit an event to the
client's protocol adapter, send reply audio, drop a cancelled turn's queued audio, finish.
It never awaits and never reads the clock: callers pass ``now`` (``time.monotonic()``).

Events emitted to the adapter are the services' own wire messages where one fits
(`VadEvent`, `TranscriptFinal`, `LlmDelta`, `TtsSegment`...) plus the few the gateway
makes itself (`FirstAudio`, `TurnCancelled`, `TurnFailed`, `CallCompleted`,
`CallFailed`); each protocol renders them in its own words.

Lifecycle: ``open`` -> ACTIVE -> ``stop`` -> DRAINING (ASR flushes, the current answer
finishes) -> FINISHED; ``hangup`` (client gone) and fatal service errors finish at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, auto

from pydantic import JsonValue

from services.gateway.timeline import AudioTimeline
from services.gateway.turns import Effect, TurnInput, TurnMachine
from shared.audio import StreamResampler
from shared.messages import (
    AsrClose,
    AsrOpen,
    AudioFrame,
    Cancel,
    ErrorCode,
    LlmBegin,
    LlmClose,
    LlmDelta,
    LlmEnd,
    LlmOpen,
    LlmTurn,
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
    VadEvent,
    VadOptions,
    WireModel,
    WorkerSpec,
)

ASR_RATE = 16000

# ServiceErrors without a turn that mean the service no longer holds the session.
_FATAL_CODES = frozenset({ErrorCode.UNKNOWN_SESSION, ErrorCode.OVERLOADED, ErrorCode.BAD_REQUEST})


def _ends_call(error: ServiceError) -> bool:
    if error.code in _FATAL_CODES:
        return True
    # ENGINE_FAILED without a turn is a session that could not open, except from ASR,
    # which also reports one utterance it could not decode that way while the call goes
    # on (an ASR session that never opened shows up as UNKNOWN_SESSION on the next frame).
    return error.code is ErrorCode.ENGINE_FAILED and error.service is not ServiceName.ASR


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class CallOptions:
    """What a protocol adapter asks for when a call starts."""

    sid: str
    answer: bool = True  # False: transcription only, no LLM/TTS
    client_rate: int = 16000
    partials: bool = True
    vad: VadOptions = field(default_factory=VadOptions)
    language: str | None = None
    asr_model: str | None = None
    llm_model: str | None = None
    system_prompt: str = ""  # Jinja2 template, rendered by the LLM service
    prompt: str | None = None  # Jinja2 template of the user's turn; None: the words as said
    variables: Mapping[str, JsonValue] = field(default_factory=dict)
    workers: tuple[WorkerSpec, ...] = ()
    temperature: float = 0.7
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


@dataclass(frozen=True)
class FirstAudio:
    """The first audio of a turn's answer is about to be sent."""

    turn: int
    latency_ms: float | None  # from the end of the user's speech; None if unknown


@dataclass(frozen=True)
class TurnCancelled:
    turn: int


@dataclass(frozen=True)
class TurnFailed:
    turn: int
    service: ServiceName
    code: ErrorCode
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
    | LlmBegin
    | LlmDelta
    | LlmEnd
    | TtsBegin
    | TtsSegment
    | TtsEnd
    | FirstAudio
    | TurnCancelled
    | TurnFailed
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


@dataclass(frozen=True)
class Emit:
    event: CallEvent


@dataclass(frozen=True)
class SendAudio:
    """Reply audio at the session's TTS rate; ``speech_end_at`` only on a turn's first chunk."""

    turn: int
    pcm: bytes
    speech_end_at: float | None = None


@dataclass(frozen=True)
class DropAudio:
    """Audio of turns up to ``turn`` still queued for the client must not be sent."""

    turn: int


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


# --------------------------------------------------------------------------- the core


class CallCore:
    """One call. Every method returns the actions to carry out, in order."""

    def __init__(self, options: CallOptions) -> None:
        self.options = options
        self.sid = options.sid
        self.phase = CallPhase.NEW
        self.timeline = AudioTimeline()
        self._resampler = StreamResampler(options.client_rate, ASR_RATE)
        self._odd_byte = b""
        self._seq = 0
        self._turns = TurnMachine()
        self._turn = 0  # number of the current (or last) turn; 0: none yet
        self._tts_seq = 0
        self._speech_end_at: float | None = None
        self._first_audio_sent = False
        self._held_segments: list[TtsSegment] = []
        self._asr_closed = False

    @property
    def finished(self) -> bool:
        return self.phase is CallPhase.FINISHED

    @property
    def turn(self) -> int:
        return self._turn

    @property
    def answering(self) -> bool:
        return self._turns.busy

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
                    partials=o.partials,
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
        return self._forward(self._resampler.process(data), now)

    def _forward(self, pcm16k: bytes, now: float) -> list[Action]:
        if not pcm16k:
            return []  # the resampler is still filling its filter
        self.timeline.record(len(pcm16k) // 2, now)
        self._seq += 1
        return [Publish(ServiceName.ASR, AudioFrame(sid=self.sid, seq=self._seq, pcm=pcm16k))]

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

    # ------------------------------------------------------------------ service side

    def on_message(self, msg: Message, now: float) -> list[Action]:
        """A message from one of the call's services arrived at ``now``."""
        if self.phase in (CallPhase.NEW, CallPhase.FINISHED):
            return []
        match msg:
            case VadEvent() | SentenceBegin():
                return [Emit(msg)]
            case TranscriptPartial():
                return [Emit(msg)] if self.options.partials else []
            case TranscriptFinal():
                return self._on_final(msg)
            case LlmBegin() | LlmDelta() | LlmEnd():
                return self._on_llm(msg) if self._current(msg.turn) else []
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

    def _on_final(self, msg: TranscriptFinal) -> list[Action]:
        actions: list[Action] = [Emit(msg)]
        if not self.options.answer or not msg.text.strip():
            return actions + self._maybe_complete()
        self._speech_end_at = self.timeline.received_at(msg.end_ms)
        return actions + self._apply(TurnInput.USER_TURN, text=msg.text.strip())

    def _on_llm(self, msg: LlmBegin | LlmDelta | LlmEnd) -> list[Action]:
        if isinstance(msg, LlmBegin):
            return [Emit(msg)]
        if isinstance(msg, LlmDelta):
            self._tts_seq += 1
            text = TtsText(sid=self.sid, turn=msg.turn, seq=self._tts_seq, text=msg.text)
            return [Emit(msg), Publish(ServiceName.TTS, text)]
        return [Emit(msg)] + self._apply(TurnInput.LLM_DONE)

    def _on_tts(self, msg: TtsBegin | TtsSegment | TtsAudio | TtsEnd, now: float) -> list[Action]:
        match msg:
            case TtsBegin():
                return [Emit(msg)]
            case TtsSegment():
                if not self._first_audio_sent:
                    # Bella and others put "first audio" before the first segment's text;
                    # hold the segment until its audio comes.
                    self._held_segments.append(msg)
                    return []
                return [Emit(msg)]
            case TtsAudio():
                return self._on_audio_out(msg, now)
            case TtsEnd():
                actions: list[Action] = [Emit(s) for s in self._held_segments]
                self._held_segments.clear()
                return actions + [Emit(msg)] + self._apply(TurnInput.TTS_DONE)

    def _on_audio_out(self, msg: TtsAudio, now: float) -> list[Action]:
        if self._first_audio_sent:
            return [SendAudio(msg.turn, msg.pcm)]
        self._first_audio_sent = True
        # The client is told the latency as the audio is queued for it; the metric is
        # taken by the I/O layer when the chunk is actually written (`speech_end_at`).
        latency = None if self._speech_end_at is None else (now - self._speech_end_at) * 1000
        actions: list[Action] = [Emit(FirstAudio(msg.turn, latency))]
        actions += [Emit(s) for s in self._held_segments]
        self._held_segments.clear()
        actions.append(SendAudio(msg.turn, msg.pcm, speech_end_at=self._speech_end_at))
        return actions

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

    def _apply(self, event: TurnInput, *, text: str = "") -> list[Action]:
        actions: list[Action] = []
        for effect in self._turns.feed(event):
            match effect:
                case Effect.CANCEL_TURN:
                    actions += self._cancel_turn(
                        announce=event is not TurnInput.LLM_FAILED
                        and event is not TurnInput.TTS_FAILED
                    )
                case Effect.START_TURN:
                    actions += self._start_turn(text)
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
        return actions

    def _start_turn(self, text: str) -> list[Action]:
        self._turn += 1
        self._tts_seq = 0
        self._first_audio_sent = False
        self._held_segments.clear()
        return [Publish(ServiceName.LLM, LlmTurn(sid=self.sid, turn=self._turn, text=text))]

    def _cancel_turn(self, *, announce: bool) -> list[Action]:
        turn = self._turn
        self._held_segments.clear()
        actions: list[Action] = [
            Publish(ServiceName.LLM, Cancel(sid=self.sid, turn=turn), control=True),
            Publish(ServiceName.TTS, Cancel(sid=self.sid, turn=turn), control=True),
            DropAudio(turn),
        ]
        if announce:
            actions.append(Emit(TurnCancelled(turn)))
        return actions

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

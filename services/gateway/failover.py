"""What the call core keeps so a lost replica can be replaced mid-call (sans-I/O).

`CallRecovery` watches what the call told its services (`published`, reported by the
I/O layer as each message goes out) and what they answered (the core's hooks below),
using the pieces of `services.gateway.recovery`. When a replica is lost, `restart`
returns the messages that bring its replacement up to date:

* ASR: ``AsrOpen``, the audio since the last final transcript (with any manual commits
  where they were), and the close of a draining call. Its results are mapped onto the
  call's timeline; the speech events of an utterance the client already heard about
  are swallowed, so the client sees each utterance begin, end and transcribed once.
* LLM: ``LlmOpen`` with the conversation so far, and the answer in progress again with
  ``resume`` set to the text already streamed; the replacement continues after it.
* TTS: ``TtsOpen`` and the text from the first sentence not fully spoken; the audio of
  that sentence the client already has is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.gateway.recovery import (
    AsrReplay,
    AsrResult,
    AsrShift,
    Conversation,
    SentFrame,
    SpeechResume,
)
from shared.messages import (
    AsrClose,
    AsrCommit,
    AsrOpen,
    AudioFrame,
    Cancel,
    ChatMessage,
    HistoryOp,
    LlmDelta,
    LlmEdit,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    LlmUpdate,
    ServiceName,
    TranscriptFinal,
    TtsAudio,
    TtsOpen,
    TtsSegment,
    TtsText,
    TtsUpdate,
    VadEvent,
    VadState,
    WireModel,
)

# Speaking rate assumed before an answer's first sentence finished (synthesized English
# runs at about 12-16 characters a second).
_CHARS_PER_S = 14.0


@dataclass
class _Answer:
    """The answer in progress as the LLM was asked for it and has streamed it."""

    turn: LlmTurn
    pieces: list[str] = field(default_factory=list)
    begun: bool = False  # LlmBegin reached the client


@dataclass
class _Speech:
    """The answer's speech as the TTS was given it and has spoken it."""

    turn: int
    resume: SpeechResume = field(default_factory=SpeechResume)
    final_sent: bool = False
    begun: bool = False  # TtsBegin reached the client
    seq: int = 0  # the last TtsText seq sent


@dataclass
class CallRecovery:
    sid: str
    replay_ms: float = 30_000.0
    asr_open: AsrOpen | None = None
    llm_open: LlmOpen | None = None
    tts_open: TtsOpen | None = None
    replay: AsrReplay = field(init=False)
    shift: AsrShift = field(default_factory=AsrShift)
    conversation: Conversation = field(default_factory=Conversation)
    _stream_ms: float = 0.0  # the call's ASR stream time of the next frame
    _commits: list[int] = field(default_factory=list)  # frame seqs a manual commit followed
    _asr_draining: bool = False
    _answer: _Answer | None = None
    _speech: _Speech | None = None
    # Speech events of utterances replayed to a replacement ASR that the client already
    # heard about: an utterance in progress (its start) and ended ones (start and end).
    _skip_ongoing: bool = False
    _skip_ended: int = 0
    _rebased: bool = False  # a replacement ASR replica took over at least once

    def __post_init__(self) -> None:
        self.replay = AsrReplay(self.replay_ms)

    # ------------------------------------------------------------------ what went out

    def published(self, service: ServiceName, message: WireModel) -> None:
        match message:
            case AsrOpen():
                self.asr_open = message
            case AudioFrame():
                frame = SentFrame(message.seq, self._stream_ms, message.pcm)
                self._stream_ms = frame.end_ms
                self.replay.add(frame)
            case AsrCommit():
                frames = self.replay.frames()
                self._commits.append(frames[-1].seq if frames else 0)
            case AsrClose():
                self._asr_draining = message.flush
            case LlmOpen():
                self.llm_open = message
                if not self.conversation.messages:
                    # A resumed session starts from its stored history.
                    for entry in message.history:
                        self.conversation.add(entry)
            case LlmUpdate():
                if self.llm_open is not None:
                    changed = {
                        k: v
                        for k, v in message.model_dump(
                            include={"system_prompt", "temperature", "max_tokens"}
                        ).items()
                        if v is not None
                    }
                    self.llm_open = self.llm_open.model_copy(update=changed)
            case LlmTurn():
                if message.text is not None:
                    self.conversation.add(
                        ChatMessage(role="user", content=message.text, item_id=message.user_item_id)
                    )
                self._answer = _Answer(message)
            case LlmEdit():
                self._edit(message)
            case Cancel() if service is ServiceName.LLM:
                self._answer_cancelled(message.turn)
            case Cancel() if service is ServiceName.TTS:
                if self._speech is not None and self._speech.turn <= message.turn:
                    self._speech = None
            case TtsOpen():
                self.tts_open = message
            case TtsUpdate():
                if self.tts_open is not None:
                    self.tts_open = self.tts_open.model_copy(update={"voice": message.voice})
            case TtsText():
                speech = self._speech
                if speech is None or speech.turn != message.turn:
                    speech = self._speech = _Speech(message.turn)
                speech.resume.on_text(message.text)
                speech.final_sent = speech.final_sent or message.final
                speech.seq = message.seq
            case _:
                pass

    def _edit(self, edit: LlmEdit) -> None:
        match edit.op:
            case HistoryOp.TRUNCATE:
                self.conversation.truncate(edit.item_id, edit.content)
            case HistoryOp.DELETE:
                self.conversation.delete(edit.item_id)
            case HistoryOp.APPEND:
                if edit.message is not None:
                    self.conversation.add(edit.message)

    def _answer_cancelled(self, turn: int) -> None:
        answer = self._answer
        if answer is None or answer.turn.turn > turn:
            return
        self._answer = None
        # The LLM keeps a cancelled answer's streamed part under its id (the truncation
        # that follows cuts it to what was heard); the copy does the same.
        partial = "".join(answer.pieces)
        if partial and answer.turn.assistant_item_id:
            self.conversation.add(
                ChatMessage(
                    role="assistant", content=partial, item_id=answer.turn.assistant_item_id
                )
            )

    # ------------------------------------------------------------------ what came back

    def asr_result(self, msg: AsrResult) -> AsrResult | None:
        """``msg`` on the call's timeline, or ``None`` when the client already had it."""
        if not self._rebased:
            # The first replica's results are the call's own (and pass as they are).
            if isinstance(msg, TranscriptFinal):
                self.shift.last_final_index = max(self.shift.last_final_index, msg.index)
            mapped: AsrResult | None = msg
        else:
            mapped = self.shift.apply(msg)
        if mapped is None:
            return None
        if isinstance(mapped, VadEvent) and self._skip_vad(mapped.state):
            return None
        if isinstance(mapped, TranscriptFinal):
            self.replay.checkpoint(mapped.end_ms)
            if self._commits:
                # Manual turns: the committed audio is done with, voiced or not.
                upto = self._commits.pop(0)
                done = [f.end_ms for f in self.replay.frames() if f.seq <= upto]
                if done:
                    self.replay.checkpoint(done[-1])
        return mapped

    def _skip_vad(self, state: VadState) -> bool:
        if self._skip_ended:
            if state is VadState.STOPPING:
                self._skip_ended -= 1
            return True
        if self._skip_ongoing:
            if state in (VadState.STOPPING, VadState.QUIET):
                self._skip_ongoing = False
                return state is VadState.QUIET
            return state in (VadState.STARTING, VadState.SPEAKING)
        return False

    def llm_begin(self, turn: int) -> bool:
        """Whether ``LlmBegin`` of ``turn`` is news to the client."""
        answer = self._answer
        if answer is None or answer.turn.turn != turn:
            return True
        news = not answer.begun
        answer.begun = True
        return news

    def llm_delta(self, msg: LlmDelta) -> LlmDelta:
        """A piece of the answer, numbered in the whole answer (a replacement counts anew)."""
        answer = self._answer
        if answer is None or answer.turn.turn != msg.turn:
            return msg
        seq = len(answer.pieces)
        answer.pieces.append(msg.text)
        return msg.model_copy(update={"seq": seq})

    def llm_end(self, msg: LlmEnd) -> None:
        answer = self._answer
        if answer is None or answer.turn.turn != msg.turn:
            return
        self._answer = None
        if msg.text:
            self.conversation.add(
                ChatMessage(
                    role="assistant", content=msg.text, item_id=answer.turn.assistant_item_id
                )
            )

    def llm_failed(self, turn: int) -> None:
        if self._answer is not None and self._answer.turn.turn == turn:
            self._answer = None  # the LLM keeps the user's words, not the answer

    def tts_begin(self, turn: int) -> bool:
        speech = self._speech
        if speech is None or speech.turn != turn:
            return True
        news = not speech.begun
        speech.begun = True
        return news

    def tts_segment(self, msg: TtsSegment) -> TtsSegment | None:
        """The segment numbered in the whole answer; ``None`` if the client had it."""
        speech = self._speech
        if speech is None or speech.turn != msg.turn:
            return msg
        index = msg.index + speech.resume.index_offset
        known = index < len(speech.resume.segments) and bool(speech.resume.segments[index])
        speech.resume.on_segment(msg.index, msg.text)
        return None if known else msg.model_copy(update={"index": index})

    def tts_audio(self, msg: TtsAudio) -> TtsAudio | None:
        speech = self._speech
        if speech is None or speech.turn != msg.turn:
            return msg
        index = msg.index + speech.resume.index_offset
        pcm = speech.resume.on_audio(msg.index, msg.pcm)
        return msg.model_copy(update={"index": index, "pcm": pcm}) if pcm else None

    # ------------------------------------------------------------------ replacement

    def restart(
        self, service: ServiceName, *, answering: bool, speech_ongoing: bool, awaiting: int
    ) -> list[WireModel]:
        """What a replacement replica of ``service`` must be told, in order.

        ``answering``: an answer is still in progress; ``speech_ongoing``: the client was
        told the user started speaking; ``awaiting``: ended utterances whose transcript
        is still due.
        """
        match service:
            case ServiceName.ASR:
                return self._restart_asr(speech_ongoing, awaiting)
            case ServiceName.LLM:
                return self._restart_llm(answering)
            case ServiceName.TTS:
                return self._restart_tts(answering)

    def _restart_asr(self, speech_ongoing: bool, awaiting: int) -> list[WireModel]:
        if self.asr_open is None:
            return []
        frames = self.replay.frames()
        start = self.replay.start_ms
        self._rebased = True
        self.shift.rebase(round(self._stream_ms if start is None else start))
        self._skip_ongoing = speech_ongoing
        self._skip_ended = awaiting if not self.asr_open.manual else 0
        out: list[WireModel] = [self.asr_open]
        commits = list(self._commits)
        for frame in frames:
            out.append(AudioFrame(sid=self.sid, seq=frame.seq, pcm=frame.pcm))
            while commits and commits[0] <= frame.seq:
                commits.pop(0)
                out.append(AsrCommit(sid=self.sid))
        out.extend(AsrCommit(sid=self.sid) for _ in commits)  # commits before any audio
        if self._asr_draining:
            out.append(AsrClose(sid=self.sid, flush=True))
        return out

    def _restart_llm(self, answering: bool) -> list[WireModel]:
        if self.llm_open is None:
            return []
        answer = self._answer if answering else None
        history = self.conversation.history()
        if answer is not None and answer.turn.text is not None and history:
            history = history[:-1]  # its user entry comes again with the turn
        out: list[WireModel] = [self.llm_open.model_copy(update={"history": history})]
        if answer is not None:
            out.append(answer.turn.model_copy(update={"resume": "".join(answer.pieces)}))
        return out

    def _restart_tts(self, answering: bool) -> list[WireModel]:
        if self.tts_open is None:
            return []
        out: list[WireModel] = [self.tts_open]
        speech = self._speech if answering else None
        if speech is not None:
            rate = self.tts_open.sample_rate * 2 / _CHARS_PER_S
            text = speech.resume.resume(estimate=True, bytes_per_char=rate)
            speech.seq += 1
            out.append(
                TtsText(
                    sid=self.sid,
                    turn=speech.turn,
                    seq=speech.seq,
                    text=text,
                    final=speech.final_sent,
                )
            )
        return out

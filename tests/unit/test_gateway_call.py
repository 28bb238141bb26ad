"""The call core: what each input makes the gateway do, without any I/O."""

from __future__ import annotations

import numpy as np
import pytest

from services.gateway.call import (
    Action,
    BargeIn,
    CallCompleted,
    CallCore,
    CallEvent,
    CallFailed,
    CallOptions,
    CallPhase,
    CancelReason,
    CommandFailed,
    DropAudio,
    Emit,
    Finish,
    FirstAudio,
    InputCleared,
    InputCommitted,
    ItemDeleted,
    ItemTruncated,
    Publish,
    SendAudio,
    SpeechStarted,
    SpeechStopped,
    TurnCancelled,
    TurnFailed,
    TurnStarted,
    UserItem,
)
from services.gateway.turns import TurnState
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
)

SID = "call1"
ASR, LLM, TTS = ServiceName.ASR, ServiceName.LLM, ServiceName.TTS


class Ids:
    """Item ids item_1, item_2... in the order the core asks for them."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"item_{self.n}"


def core(**options: object) -> CallCore:
    c = CallCore(CallOptions(sid=SID, **options), new_id=Ids())  # type: ignore[arg-type]
    c.open()
    return c


# Conversation bookkeeping (item ids), asserted by the tests that are about it.
_ITEM_EVENTS = (InputCommitted, UserItem, TurnStarted)


def turn(n: int, text: str | None, user: int | None, assistant: int) -> LlmTurn:
    return LlmTurn(
        sid=SID,
        turn=n,
        text=text,
        user_item_id=f"item_{user}" if user else "",
        assistant_item_id=f"item_{assistant}",
    )


def published(actions: list[Action], service: ServiceName | None = None) -> list[WireModel]:
    return [
        a.message
        for a in actions
        if isinstance(a, Publish) and (service is None or a.service is service)
    ]


def emitted(actions: list[Action]) -> list[object]:
    return [
        a.event for a in actions if isinstance(a, Emit) and not isinstance(a.event, _ITEM_EVENTS)
    ]


def all_events(actions: list[Action]) -> list[CallEvent]:
    return [a.event for a in actions if isinstance(a, Emit)]


def final(text: str, end_ms: int = 1000, index: int = 0) -> TranscriptFinal:
    return TranscriptFinal(sid=SID, index=index, begin_ms=0, end_ms=end_ms, text=text)


def answer_text(c: CallCore, turn: int, text: str = "Hi.") -> list[Action]:
    actions = c.on_message(LlmBegin(sid=SID, turn=turn), 1.0)
    actions += c.on_message(LlmDelta(sid=SID, turn=turn, seq=1, text=text), 1.0)
    return actions


def test_open_opens_every_session() -> None:
    c = CallCore(
        CallOptions(
            sid=SID,
            vad=VadOptions(silence_duration_ms=700),
            partials=False,
            system_prompt="Be brief.",
            temperature=0.2,
            voice="amy",
            tts_rate=16000,
        )
    )
    assert c.phase is CallPhase.NEW
    actions = c.open()
    asr, llm, tts = published(actions)
    assert isinstance(asr, AsrOpen) and asr.vad.silence_duration_ms == 700 and not asr.partials
    assert isinstance(llm, LlmOpen) and (llm.system_prompt, llm.temperature) == ("Be brief.", 0.2)
    assert isinstance(tts, TtsOpen) and (tts.voice, tts.sample_rate) == ("amy", 16000)
    assert c.phase.name == CallPhase.ACTIVE.name  # (`is` after `is NEW` trips mypy's narrowing)


def test_transcription_only_opens_asr_only() -> None:
    c = CallCore(CallOptions(sid=SID, answer=False))
    assert [type(m) for m in published(c.open())] == [AsrOpen]
    actions = c.on_message(final("hello"), 1.0)
    assert emitted(actions) == [final("hello")]
    assert published(actions) == []


def test_audio_at_16k_is_forwarded_as_is_with_sequence_numbers() -> None:
    c = core()
    a1 = published(c.audio(b"\x01\x00" * 1600, 1.0))
    a2 = published(c.audio(b"\x02\x00" * 1600, 1.1))
    assert a1 == [AudioFrame(sid=SID, seq=1, pcm=b"\x01\x00" * 1600)]
    assert isinstance(a2[0], AudioFrame) and a2[0].seq == 2
    assert c.timeline.stream_ms == 200.0


def test_odd_sized_frames_keep_the_split_sample() -> None:
    c = core()
    assert c.audio(b"\x01", 1.0) == []
    (frame,) = published(c.audio(b"\x00\x02\x00", 1.0))
    assert isinstance(frame, AudioFrame) and frame.pcm == b"\x01\x00\x02\x00"


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_other_rates_are_resampled_to_16k(rate: int) -> None:
    c = core(client_rate=rate)
    tone = (np.sin(np.arange(rate) * 2 * np.pi * 440 / rate) * 8000).astype("<i2").tobytes()
    step = rate // 10 * 2
    out = b""
    for i in range(0, len(tone), step):
        out += b"".join(
            m.pcm for m in published(c.audio(tone[i : i + step], 1.0)) if isinstance(m, AudioFrame)
        )
    actions = c.stop(2.0)
    out += b"".join(m.pcm for m in published(actions) if isinstance(m, AudioFrame))
    assert abs(len(out) // 2 - 16000) <= 32
    assert isinstance(published(actions)[-1], AsrClose)


def test_asr_events_pass_through_and_partials_follow_the_option() -> None:
    c = core()
    vad = VadEvent(sid=SID, state=VadState.STARTING, start_ms=0, end_ms=32, timestamp=1.0)
    begin = SentenceBegin(sid=SID, index=0, begin_ms=0)
    partial = TranscriptPartial(sid=SID, index=0, begin_ms=0, end_ms=500, text="he")
    assert emitted(c.on_message(vad, 1.0)) == [vad]
    assert emitted(c.on_message(begin, 1.0)) == [begin]
    assert emitted(c.on_message(partial, 1.0)) == [partial]
    assert core(partials=False).on_message(partial, 1.0) == []


def test_a_final_starts_a_turn_and_the_answer_streams_to_tts() -> None:
    c = core()
    actions = c.on_message(final(" hello "), 1.0)
    assert emitted(actions) == [final(" hello ")]
    assert published(actions) == [turn(1, "hello", user=1, assistant=2)]
    assert all_events(actions) == [
        InputCommitted("item_1"),
        final(" hello "),
        UserItem("item_1", "hello", spoken=True),
        TurnStarted(1, "item_2", "item_1"),
    ]
    assert c.turn == 1 and c.answering

    actions = answer_text(c, 1, "Hi ")
    assert emitted(actions) == [
        LlmBegin(sid=SID, turn=1),
        LlmDelta(sid=SID, turn=1, seq=1, text="Hi "),
    ]
    assert published(actions, TTS) == [TtsText(sid=SID, turn=1, seq=1, text="Hi ")]

    end = LlmEnd(sid=SID, turn=1, text="Hi there.", ttft_ms=50)
    actions = c.on_message(end, 1.0)
    assert emitted(actions) == [end]
    assert published(actions) == [TtsText(sid=SID, turn=1, seq=2, text="", final=True)]

    tts_end = TtsEnd(sid=SID, turn=1, segments=1, audio_ms=500)
    assert emitted(c.on_message(tts_end, 1.0)) == [tts_end]
    assert not c.answering


def test_empty_final_starts_no_turn() -> None:
    c = core()
    actions = c.on_message(final("  "), 1.0)
    assert emitted(actions) == [final("  ")]
    assert published(actions) == [] and c.turn == 0


def test_first_audio_latency_comes_from_the_timeline() -> None:
    c = core()
    c.audio(b"\x00\x00" * 1600, 10.0)  # stream 0-100 ms received at t=10.0
    c.audio(b"\x00\x00" * 1600, 10.1)  # stream 100-200 ms received at t=10.1
    c.on_message(final("hi", end_ms=150), 10.5)
    answer_text(c, 1)
    segment = TtsSegment(sid=SID, turn=1, index=0, text="Hi.")
    actions = c.on_message(TtsBegin(sid=SID, turn=1), 10.6)
    actions += c.on_message(segment, 10.6)
    assert emitted(actions) == [TtsBegin(sid=SID, turn=1)]  # the segment waits for its audio
    audio = TtsAudio(sid=SID, turn=1, index=0, seq=0, pcm=b"\x01\x00", sample_rate=24000)
    actions = c.on_message(audio, 10.9)
    first, held = emitted(actions)
    assert isinstance(first, FirstAudio) and first.turn == 1
    assert first.latency_ms == pytest.approx(800.0)
    assert held == segment
    assert actions[-1] == SendAudio(1, b"\x01\x00", speech_end_at=10.1)
    # Later chunks carry no start time: voice-to-voice is measured once per turn.
    assert c.on_message(audio, 11.0) == [SendAudio(1, b"\x01\x00")]


def test_a_new_final_cancels_the_answer_in_flight() -> None:
    c = core()
    c.on_message(final("first"), 1.0)
    answer_text(c, 1)
    actions = c.on_message(final("second", index=1), 2.0)
    assert published(actions) == [
        Cancel(sid=SID, turn=1),
        Cancel(sid=SID, turn=1),
        # Nothing of it was heard: the answer leaves the history.
        LlmEdit(sid=SID, op=HistoryOp.TRUNCATE, item_id="item_2", content=""),
        turn(2, "second", user=3, assistant=4),
    ]
    assert [a.control for a in actions if isinstance(a, Publish)] == [True, True, False, False]
    assert DropAudio(1, heard_at=None) in actions
    assert emitted(actions) == [
        final("second", index=1),
        TurnCancelled(1, CancelReason.TURN_DETECTED, "item_2", "", 0.0),
    ]
    # Whatever of turn 1 was still in flight is dropped.
    assert c.on_message(LlmDelta(sid=SID, turn=1, seq=2, text="late"), 2.1) == []
    late = TtsAudio(sid=SID, turn=1, index=0, seq=1, pcm=b"\x00\x00", sample_rate=24000)
    assert c.on_message(late, 2.1) == []
    assert c.on_message(LlmEnd(sid=SID, turn=1, text="", ttft_ms=1), 2.1) == []
    assert emitted(c.on_message(LlmBegin(sid=SID, turn=2), 2.2)) == [LlmBegin(sid=SID, turn=2)]


def test_a_final_while_speaking_cancels_too() -> None:
    c = core()
    c.on_message(final("first"), 1.0)
    answer_text(c, 1)
    c.on_message(LlmEnd(sid=SID, turn=1, text="Hi.", ttft_ms=1), 1.0)
    actions = c.on_message(final("again"), 2.0)
    assert TurnCancelled(1, CancelReason.TURN_DETECTED, "item_2", "", 0.0) in emitted(actions)
    assert turn(2, "again", user=3, assistant=4) in published(actions)


def test_stop_flushes_asr_and_completes_once_asr_closed() -> None:
    c = core()
    actions = c.stop(1.0)
    assert published(actions) == [AsrClose(sid=SID, flush=True)]
    assert c.phase is CallPhase.DRAINING
    assert c.audio(b"\x00\x00" * 100, 1.1) == []  # late audio is not sent after the close
    actions = c.on_message(SessionClosed(sid=SID, service=ASR), 1.2)
    assert emitted(actions) == [CallCompleted()]
    assert published(actions) == [LlmClose(sid=SID), TtsClose(sid=SID)]
    assert actions[-1] == Finish(completed=True)
    assert c.finished
    assert c.on_message(final("late"), 1.3) == []


def test_stop_waits_for_the_turn_in_flight_and_for_a_flushed_final() -> None:
    c = core()
    c.on_message(final("question"), 1.0)
    answer_text(c, 1)
    c.stop(1.1)
    assert c.on_message(SessionClosed(sid=SID, service=ASR), 1.2) == []
    c.on_message(LlmEnd(sid=SID, turn=1, text="Hi.", ttft_ms=1), 1.3)
    actions = c.on_message(TtsEnd(sid=SID, turn=1, segments=1, audio_ms=1), 1.4)
    assert emitted(actions)[-1] == CallCompleted()
    assert actions[-1] == Finish(completed=True)

    c = core()
    c.stop(1.0)
    actions = c.on_message(final("one more"), 1.1)  # produced by the flush
    assert turn(1, "one more", user=1, assistant=2) in published(actions)
    assert c.on_message(SessionClosed(sid=SID, service=ASR), 1.2) == []
    assert not c.finished


def test_drain_timeout_cuts_the_answer() -> None:
    c = core()
    c.on_message(final("question"), 1.0)
    c.stop(1.1)
    actions = c.drain_timeout()
    assert emitted(actions) == [
        TurnCancelled(1, CancelReason.CALL_ENDED, "item_2", "", 0.0),
        CallCompleted(),
    ]
    assert Cancel(sid=SID, turn=1) in published(actions)
    assert actions[-1] == Finish(completed=True)


def test_hangup_cancels_and_closes_everything() -> None:
    c = core()
    c.on_message(final("question"), 1.0)
    actions = c.hangup()
    assert emitted(actions) == []
    assert published(actions) == [
        Cancel(sid=SID, turn=1),
        Cancel(sid=SID, turn=1),
        AsrClose(sid=SID, flush=False),
        LlmClose(sid=SID),
        TtsClose(sid=SID),
    ]
    assert actions[-1] == Finish(completed=False)
    assert c.hangup() == []


def test_a_failed_llm_turn_is_reported_and_tts_stopped() -> None:
    c = core()
    c.on_message(final("question"), 1.0)
    err = ServiceError(sid=SID, service=LLM, code=ErrorCode.ENGINE_FAILED, message="x", turn=1)
    actions = c.on_message(err, 1.1)
    assert emitted(actions) == [TurnFailed(1, LLM, ErrorCode.ENGINE_FAILED, "x")]
    assert Cancel(sid=SID, turn=1) in published(actions, TTS)
    assert not c.answering and not c.finished
    # An error about an older turn changes nothing.
    assert c.on_message(err, 1.2) == []


def test_an_error_without_a_turn_fails_the_current_answer() -> None:
    c = core()
    c.on_message(final("question"), 1.0)
    err = ServiceError(sid=SID, service=TTS, code=ErrorCode.INTERNAL, message="x")
    actions = c.on_message(err, 1.1)
    assert emitted(actions) == [TurnFailed(1, TTS, ErrorCode.INTERNAL, "x")]
    assert not c.finished
    for code in (ErrorCode.INTERNAL, ErrorCode.ENGINE_FAILED):
        # One utterance ASR could not decode: the call goes on.
        asr_hiccup = ServiceError(sid=SID, service=ASR, code=code, message="x")
        assert c.on_message(asr_hiccup, 1.2) == []
    assert not c.finished


@pytest.mark.parametrize(
    "code", [ErrorCode.UNKNOWN_SESSION, ErrorCode.ENGINE_FAILED, ErrorCode.BAD_REQUEST]
)
def test_a_lost_session_fails_the_call(code: ErrorCode) -> None:
    c = core()
    actions = c.on_message(ServiceError(sid=SID, service=TTS, code=code, message="gone"), 1.0)
    assert emitted(actions) == [CallFailed(TTS, code, "gone")]
    # What the failed service says next changes nothing.
    assert c.on_message(ServiceError(sid=SID, service=TTS, code=code, message="again"), 1.1) == []
    assert AsrClose(sid=SID, flush=False) in published(actions)
    assert actions[-1] == Finish(completed=False)
    assert c.finished


def test_asr_closing_by_itself_fails_the_call() -> None:
    c = core()
    actions = c.on_message(SessionClosed(sid=SID, service=ASR), 1.0)
    assert isinstance(emitted(actions)[0], CallFailed)
    assert c.finished


def test_fail_ends_the_call_with_a_reason() -> None:
    c = core()
    actions = c.fail(ErrorCode.TIMEOUT, "no audio for 60 s")
    assert emitted(actions) == [CallFailed(None, ErrorCode.TIMEOUT, "no audio for 60 s")]
    assert actions[-1] == Finish(completed=False)
    assert c.fail(ErrorCode.TIMEOUT, "again")[-1] == Finish(completed=False)


# --------------------------------------------------------------------------- barge-in


def vad(state: VadState, start_ms: int, end_ms: int) -> VadEvent:
    return VadEvent(sid=SID, state=state, start_ms=start_ms, end_ms=end_ms, timestamp=0.0)


def tts_audio(turn: int, index: int, nbytes: int) -> TtsAudio:
    return TtsAudio(sid=SID, turn=turn, index=index, seq=0, pcm=b"\x00" * nbytes, sample_rate=24000)


def speaking_answer(c: CallCore) -> None:
    """Turn 1 answers "Hello there. How are you?" in two sentences of 1 s audio each."""
    c.audio(b"\x00\x00" * 16000, 0.0)  # 1 s of the user's audio, stream 0-1000 ms
    c.on_message(final("hi", end_ms=900), 1.0)
    answer_text(c, 1, "Hello there. How are you?")
    c.on_message(TtsBegin(sid=SID, turn=1), 1.1)
    c.on_message(TtsSegment(sid=SID, turn=1, index=0, text="Hello there."), 1.1)
    c.on_message(tts_audio(1, 0, 48000), 1.2)
    c.on_message(TtsSegment(sid=SID, turn=1, index=1, text="How are you?"), 1.3)
    c.on_message(tts_audio(1, 1, 48000), 1.3)


def cancels(actions: list[Action]) -> list[TurnCancelled]:
    return [e for e in emitted(actions) if isinstance(e, TurnCancelled)]


def user_speaks(c: CallCore, now: float, ms: int = 1000) -> list[Action]:
    """Speech starts at stream 1000 ms and lasts ``ms`` of audio."""
    actions = c.on_message(vad(VadState.STARTING, 1000, 1032), now)
    actions += c.on_message(vad(VadState.SPEAKING, 1000, 1150), now + 0.1)
    actions += c.audio(b"\x00\x00" * (16 * ms), now + 0.2)
    return actions


def test_speech_over_the_answer_cancels_it_once_long_enough() -> None:
    c = core()
    speaking_answer(c)
    c.audio_sent(1, 48000 + 24000)  # the first sentence and half the second went out
    actions = c.on_message(vad(VadState.STARTING, 1000, 1032), 5.0)
    assert cancels(actions) == [] and c.turn_state is TurnState.ANSWERING_CONTESTED
    actions = c.on_message(vad(VadState.SPEAKING, 1000, 1150), 5.1)
    assert SpeechStarted("item_3", 1000) in all_events(actions)
    assert cancels(actions) == []  # 150 ms of speech so far (min 300)
    actions = c.audio(b"\x00\x00" * 16 * 400, 5.2)  # the stream reaches 1400 ms
    assert cancels(actions) == [
        TurnCancelled(1, CancelReason.TURN_DETECTED, "item_2", "Hello there. How", 1500.0)
    ]
    assert DropAudio(1, heard_at=5.0) in actions  # from the onset's arrival
    assert LlmEdit(
        sid=SID, op=HistoryOp.TRUNCATE, item_id="item_2", content="Hello there. How"
    ) in published(actions, LLM)
    assert [m for m in published(actions) if isinstance(m, Cancel)] == [Cancel(sid=SID, turn=1)] * 2
    # Nothing of turn 1 passes any more; the user's final starts turn 2.
    assert c.on_message(tts_audio(1, 1, 100), 5.3) == []
    actions = c.on_message(vad(VadState.STOPPING, 1000, 2000), 5.9)
    assert all_events(actions)[1:] == [SpeechStopped("item_3", 2000), InputCommitted("item_3")]
    actions = c.on_message(final("wait a moment", end_ms=2000, index=1), 6.0)
    assert turn(2, "wait a moment", user=3, assistant=4) in published(actions)
    assert cancels(actions) == []


def test_a_backchannel_does_not_interrupt() -> None:
    c = core(barge_in=BargeIn(min_speech_ms=300, min_words=2))
    speaking_answer(c)
    actions = user_speaks(c, 5.0, ms=1000)  # long enough, but no words yet
    actions += c.on_message(
        TranscriptPartial(sid=SID, index=1, begin_ms=1000, end_ms=1500, text="mhm"), 5.3
    )
    actions += c.on_message(vad(VadState.STOPPING, 1000, 1400), 5.4)
    actions += c.on_message(final("Mhm.", end_ms=1400, index=1), 5.5)
    assert cancels(actions) == [] and not any(isinstance(a, DropAudio) for a in actions)
    assert not [m for m in published(actions) if isinstance(m, LlmTurn)]
    assert c.turn_state is TurnState.ANSWERING
    # The answer goes on.
    assert c.on_message(tts_audio(1, 1, 10), 5.6) == [SendAudio(1, b"\x00" * 10)]


def test_enough_words_interrupt() -> None:
    c = core(barge_in=BargeIn(min_speech_ms=300, min_words=2))
    speaking_answer(c)
    user_speaks(c, 5.0)
    partial = TranscriptPartial(sid=SID, index=1, begin_ms=1000, end_ms=1500, text="no wait")
    actions = c.on_message(partial, 5.3)
    assert [e.reason for e in cancels(actions)] == [CancelReason.TURN_DETECTED]


def test_a_rejected_onset_is_a_noise() -> None:
    c = core(barge_in=BargeIn(resume=True))
    speaking_answer(c)
    c.on_message(vad(VadState.STARTING, 1000, 1032), 5.0)
    # Held back while the speech is judged...
    assert c.on_message(tts_audio(1, 1, 10), 5.05) == []
    actions = c.on_message(vad(VadState.QUIET, 1000, 1100), 5.1)
    # ...and resumed when it was nothing.
    assert SendAudio(1, b"\x00" * 10) in actions
    assert cancels(actions) == [] and c.turn_state is TurnState.ANSWERING


def test_zero_minimums_cancel_at_the_onset() -> None:
    c = core(barge_in=BargeIn(min_speech_ms=0))
    speaking_answer(c)
    actions = c.on_message(vad(VadState.STARTING, 1000, 1032), 5.0)
    assert len(cancels(actions)) == 1


def test_cancel_before_the_first_token() -> None:
    c = core(barge_in=BargeIn(min_speech_ms=0))
    c.on_message(final("hi"), 1.0)
    actions = c.on_message(vad(VadState.STARTING, 1000, 1032), 1.01)
    assert cancels(actions) == [TurnCancelled(1, CancelReason.TURN_DETECTED, "item_2", "", 0.0)]
    # The LLM answers late: none of it passes.
    assert answer_text(c, 1) == []
    assert c.on_message(TtsBegin(sid=SID, turn=1), 1.1) == []
    assert not c.answering


def test_cancel_after_the_last_chunk_was_queued_but_not_sent() -> None:
    c = core()
    speaking_answer(c)
    c.on_message(LlmEnd(sid=SID, turn=1, text="Hello there. How are you?", ttft_ms=1), 2.0)
    end = TtsEnd(sid=SID, turn=1, segments=2, audio_ms=2000)
    assert emitted(c.on_message(end, 2.0)) == [end]
    assert c.turn_state.name == "PLAYING" and c.answering
    c.audio_sent(1, 48000)  # only the first sentence went out so far
    actions = user_speaks(c, 5.0)
    # The turn was reported complete: no cancel event, but its queued audio is cut
    # and the history keeps what went out.
    assert cancels(actions) == []
    assert DropAudio(1, heard_at=5.0) in actions
    assert ItemTruncated("item_2", 1000, "Hello there.") in emitted(actions)
    assert LlmEdit(
        sid=SID, op=HistoryOp.TRUNCATE, item_id="item_2", content="Hello there."
    ) in published(actions)
    assert not any(isinstance(m, Cancel) for m in published(actions))
    assert c.turn_state is TurnState.IDLE


def test_the_answer_is_over_once_its_audio_went_out() -> None:
    c = core()
    speaking_answer(c)
    c.on_message(LlmEnd(sid=SID, turn=1, text="", ttft_ms=1), 2.0)
    c.on_message(TtsEnd(sid=SID, turn=1, segments=2, audio_ms=2000), 2.0)
    c.audio_sent(1, 48000)
    assert c.answering
    c.audio_sent(1, 48000)
    assert not c.answering
    actions = user_speaks(c, 5.0)
    assert not any(isinstance(a, DropAudio) for a in actions)  # nothing left to cut
    assert not [e for e in emitted(actions) if isinstance(e, ItemTruncated | TurnCancelled)]


def test_half_duplex_feeds_silence_while_the_assistant_talks() -> None:
    c = core(half_duplex=True)
    loud = b"\x10\x10" * 1600
    assert published(c.audio(loud, 0.0)) == [AudioFrame(sid=SID, seq=1, pcm=loud)]
    c.on_message(final("hi"), 1.0)
    assert published(c.audio(loud, 1.1)) == [AudioFrame(sid=SID, seq=2, pcm=b"\x00" * 3200)]
    assert cancels(user_speaks(c, 1.2)) == []
    assert c.on_message(final("second", index=1), 1.5) != []  # reported, but not answered
    assert c.turn == 1


def test_without_interruptions_a_new_turn_waits() -> None:
    c = core(interrupt=False)
    c.on_message(final("first"), 1.0)
    answer_text(c, 1)
    assert cancels(user_speaks(c, 1.1)) == []
    actions = c.on_message(final("second", index=1), 1.5)
    assert cancels(actions) == [] and c.turn == 1
    c.on_message(LlmEnd(sid=SID, turn=1, text="Hi.", ttft_ms=1), 1.6)
    actions = c.on_message(TtsEnd(sid=SID, turn=1, segments=0, audio_ms=0), 1.7)
    assert turn(2, "second", user=3, assistant=4) in published(actions)


# --------------------------------------------------------------------------- commands


def test_manual_commit_then_respond_waits_for_the_transcript() -> None:
    c = core(manual=True, auto_respond=False)
    actions = c.commit()
    assert published(actions) == [AsrCommit(sid=SID)]
    assert all_events(actions) == [InputCommitted("item_1")]
    assert c.respond() == []  # the transcript is not in yet
    actions = c.on_message(final("what time is it"), 2.0)
    assert all_events(actions) == [
        final("what time is it"),
        UserItem("item_1", "what time is it", spoken=True),
        TurnStarted(1, "item_2", "item_1"),
    ]
    assert published(actions) == [turn(1, "what time is it", user=1, assistant=2)]


def test_manual_opens_asr_in_manual_mode() -> None:
    c = CallCore(CallOptions(sid=SID, manual=True))
    (asr, *_) = published(c.open())
    assert isinstance(asr, AsrOpen) and asr.manual


def test_a_final_without_auto_respond_joins_the_next_answer() -> None:
    c = core(auto_respond=False)
    actions = c.on_message(final("my name is Ann"), 1.0)
    assert published(actions) == []
    actions = c.add_user_text("item_x", "and I like tea")
    assert all_events(actions) == [UserItem("item_x", "and I like tea", spoken=False)]
    actions = c.respond()
    assert published(actions) == [
        LlmTurn(
            sid=SID,
            turn=1,
            text="my name is Ann\nand I like tea",
            user_item_id="item_x",
            assistant_item_id="item_2",
        )
    ]


def test_clear_drops_the_next_transcript() -> None:
    c = core(manual=True, auto_respond=False)
    actions = c.clear_input()
    assert published(actions) == [AsrCommit(sid=SID)]
    assert all_events(actions) == [InputCleared()]
    assert c.on_message(final("never mind"), 1.0) == []
    assert published(c.respond()) == [turn(1, None, user=None, assistant=1)]


def test_respond_with_text_and_while_busy() -> None:
    c = core()
    actions = c.respond("Tell me a joke")
    assert all_events(actions)[0] == UserItem("item_1", "Tell me a joke", spoken=False)
    assert published(actions) == [turn(1, "Tell me a joke", user=1, assistant=2)]
    actions = c.respond()
    assert emitted(actions) == [
        CommandFailed("respond", "active_response", "an answer is already in progress")
    ]
    assert core(answer=False).respond()[0] == Emit(
        CommandFailed("respond", "not_supported", "a transcription call never answers")
    )


def test_cancel_response() -> None:
    c = core()
    assert c.cancel_response() == []  # harmless when idle
    speaking_answer(c)
    c.audio_sent(1, 24000)
    actions = c.cancel_response()
    assert cancels(actions) == [
        TurnCancelled(1, CancelReason.CLIENT_CANCELLED, "item_2", "Hello", 500.0)
    ]
    assert DropAudio(1, heard_at=None) in actions
    assert c.cancel_response() == []


def test_truncate_and_delete() -> None:
    c = core()
    speaking_answer(c)
    actions = c.truncate("item_2", 1500)
    assert published(actions) == [
        LlmEdit(sid=SID, op=HistoryOp.TRUNCATE, item_id="item_2", content="Hello there. How")
    ]
    assert emitted(actions) == [ItemTruncated("item_2", 1500, "Hello there. How")]
    (failed,) = emitted(c.truncate("item_2", 9000))
    assert isinstance(failed, CommandFailed) and failed.code == "invalid_value"
    (failed,) = emitted(c.truncate("nope", 0))
    assert isinstance(failed, CommandFailed) and failed.code == "unknown_item"
    actions = c.delete_item("item_1")
    assert published(actions) == [LlmEdit(sid=SID, op=HistoryOp.DELETE, item_id="item_1")]
    assert emitted(actions) == [ItemDeleted("item_1")]
    assert isinstance(emitted(c.delete_item("item_1"))[0], CommandFailed)
    c.add_user_text("typed", "hello")
    assert c.delete_item("typed") == [Emit(ItemDeleted("typed"))]  # the LLM never saw it


def test_update() -> None:
    c = core()
    actions = c.update(system_prompt="Be terse.", voice="amy", variables={"a": 1})
    assert published(actions) == [
        LlmUpdate(sid=SID, system_prompt="Be terse."),
        TtsUpdate(sid=SID, voice="amy"),
    ]
    assert isinstance(emitted(actions)[0], CommandFailed)
    assert c.update() == []

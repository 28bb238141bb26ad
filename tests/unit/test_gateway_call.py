"""The call core: what each input makes the gateway do, without any I/O."""

from __future__ import annotations

import numpy as np
import pytest

from services.gateway.call import (
    Action,
    CallCompleted,
    CallCore,
    CallFailed,
    CallOptions,
    CallPhase,
    DropAudio,
    Emit,
    Finish,
    FirstAudio,
    Publish,
    SendAudio,
    TurnCancelled,
    TurnFailed,
)
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
    VadState,
    WireModel,
)

SID = "call1"
ASR, LLM, TTS = ServiceName.ASR, ServiceName.LLM, ServiceName.TTS


def core(**options: object) -> CallCore:
    c = CallCore(CallOptions(sid=SID, **options))  # type: ignore[arg-type]
    c.open()
    return c


def published(actions: list[Action], service: ServiceName | None = None) -> list[WireModel]:
    return [
        a.message
        for a in actions
        if isinstance(a, Publish) and (service is None or a.service is service)
    ]


def emitted(actions: list[Action]) -> list[object]:
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
    assert published(actions) == [LlmTurn(sid=SID, turn=1, text="hello")]
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
        LlmTurn(sid=SID, turn=2, text="second"),
    ]
    assert [a.control for a in actions if isinstance(a, Publish)] == [True, True, False]
    assert DropAudio(1) in actions
    assert emitted(actions) == [final("second", index=1), TurnCancelled(1)]
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
    assert TurnCancelled(1) in emitted(actions)
    assert LlmTurn(sid=SID, turn=2, text="again") in published(actions)


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
    assert LlmTurn(sid=SID, turn=1, text="one more") in published(actions)
    assert c.on_message(SessionClosed(sid=SID, service=ASR), 1.2) == []
    assert not c.finished


def test_drain_timeout_cuts_the_answer() -> None:
    c = core()
    c.on_message(final("question"), 1.0)
    c.stop(1.1)
    actions = c.drain_timeout()
    assert emitted(actions) == [TurnCancelled(1), CallCompleted()]
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

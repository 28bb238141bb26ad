"""The call core after a replica is lost: what the replacement is told, and how its
results are merged so the client sees each utterance, answer and sentence once."""

from __future__ import annotations

from services.gateway.call import Action, CallCore, CallOptions, Emit, Publish, SendAudio
from services.gateway.liveness import ProbeOutcome, ProbeTracker, Verdict
from services.gateway.recovery import SpeechResume
from shared.messages import (
    AsrClose,
    AsrCommit,
    AsrOpen,
    AudioFrame,
    ChatMessage,
    HistoryOp,
    LlmBegin,
    LlmDelta,
    LlmEdit,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    SentenceBegin,
    ServiceName,
    TranscriptFinal,
    TtsAudio,
    TtsBegin,
    TtsEnd,
    TtsOpen,
    TtsSegment,
    TtsText,
    VadEvent,
    VadState,
    WireModel,
)

SID = "call1"
ASR, LLM, TTS = ServiceName.ASR, ServiceName.LLM, ServiceName.TTS


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"item_{self.n}"


def run(c: CallCore, actions: list[Action]) -> list[Action]:
    """What the connection does: every published message is reported back."""
    for a in actions:
        if isinstance(a, Publish):
            c.published(a)
    return actions


def core(**options: object) -> CallCore:
    c = CallCore(CallOptions(sid=SID, **options), new_id=Ids())  # type: ignore[arg-type]
    run(c, c.open())
    return c


def feed(c: CallCore, msg: object, now: float = 1.0) -> list[Action]:
    return run(c, c.on_message(msg, now))  # type: ignore[arg-type]


def published(actions: list[Action]) -> list[WireModel]:
    return [a.message for a in actions if isinstance(a, Publish)]


def events(actions: list[Action]) -> list[object]:
    return [a.event for a in actions if isinstance(a, Emit)]


def vad(state: VadState, start: int, end: int) -> VadEvent:
    return VadEvent(sid=SID, state=state, start_ms=start, end_ms=end, timestamp=0.0)


def final(text: str, index: int, begin: int, end: int) -> TranscriptFinal:
    return TranscriptFinal(sid=SID, index=index, begin_ms=begin, end_ms=end, text=text)


def audio_ms(c: CallCore, ms: int, now: float = 0.0) -> list[Action]:
    """``ms`` of the user's audio in 100 ms frames."""
    actions: list[Action] = []
    for _ in range(ms // 100):
        actions += run(c, c.audio(b"\x01\x00" * 1600, now))
    return actions


def test_asr_replacement_gets_the_audio_since_the_last_final_on_the_calls_timeline() -> None:
    c = core(answer=False)
    audio_ms(c, 1000)  # stream 0-1000
    feed(c, vad(VadState.STARTING, 100, 132))
    feed(c, vad(VadState.SPEAKING, 100, 250))
    feed(c, vad(VadState.STOPPING, 100, 800))
    feed(c, final("first", 0, 100, 700))
    audio_ms(c, 500)  # stream 1000-1500: the user speaks again
    feed(c, vad(VadState.STARTING, 1200, 1232))
    feed(c, vad(VadState.SPEAKING, 1200, 1350))

    out = published(run(c, c.replica_lost(ASR)))
    assert isinstance(out[0], AsrOpen)
    frames = [m for m in out if isinstance(m, AudioFrame)]
    # Only the frames after the first utterance's end (700 ms) come again.
    assert sum(len(f.pcm) for f in frames) == 32 * 800
    # Seqs as sent: the replica de-duplicates by seq.
    assert [f.seq for f in frames] == list(range(8, 16))

    # The replacement hears the ongoing utterance from its stream time 0 (call's 700).
    assert events(feed(c, vad(VadState.STARTING, 500, 532))) == []
    assert events(feed(c, vad(VadState.SPEAKING, 500, 650))) == []
    stop = events(feed(c, vad(VadState.STOPPING, 500, 1100)))
    assert vad(VadState.STOPPING, 1200, 1800) in stop
    got = events(feed(c, SentenceBegin(sid=SID, index=0, begin_ms=500)))
    assert got == [SentenceBegin(sid=SID, index=1, begin_ms=1200)]
    got = events(feed(c, final("second", 0, 500, 1000)))
    assert final("second", 1, 1200, 1700) in got
    texts = [e.text for e in got if isinstance(e, TranscriptFinal)]
    assert texts == ["second"]


def test_an_utterance_awaiting_its_transcript_is_not_announced_twice() -> None:
    c = core(answer=False)
    audio_ms(c, 1000)
    feed(c, vad(VadState.STARTING, 100, 132))
    feed(c, vad(VadState.SPEAKING, 100, 250))
    feed(c, vad(VadState.STOPPING, 100, 900))  # the transcript is still due when lost
    run(c, c.replica_lost(ASR))
    replayed = [
        vad(VadState.STARTING, 100, 132),
        vad(VadState.SPEAKING, 100, 250),
        vad(VadState.STOPPING, 100, 900),
    ]
    for msg in replayed:
        assert events(feed(c, msg)) == []
    got = events(feed(c, final("hello", 0, 100, 800)))
    assert [e.text for e in got if isinstance(e, TranscriptFinal)] == ["hello"]


def test_manual_commits_are_replayed_where_they_were() -> None:
    c = core(answer=False, manual=True)
    audio_ms(c, 100)
    run(c, c.commit())
    audio_ms(c, 100)
    out = published(run(c, c.replica_lost(ASR)))
    kinds = [type(m) for m in out]
    assert kinds == [AsrOpen, AudioFrame, AsrCommit, AudioFrame]
    # Once its transcript is in, the commit is not replayed again.
    feed(c, final("", 0, 0, 0))
    out = published(run(c, c.replica_lost(ASR)))
    assert [type(m) for m in out] == [AsrOpen, AudioFrame]


def test_a_draining_call_closes_the_replacement_asr_after_the_replay() -> None:
    c = core(answer=False)
    audio_ms(c, 200)
    run(c, c.stop(1.0))
    out = published(run(c, c.replica_lost(ASR)))
    assert out[-1] == AsrClose(sid=SID, flush=True)


def answered_turn(c: CallCore) -> None:
    """Turn 1 ("hi" -> "Hello there.") completes."""
    feed(c, final("hi", 0, 0, 500))
    feed(c, LlmBegin(sid=SID, turn=1))
    feed(c, LlmDelta(sid=SID, turn=1, seq=0, text="Hello there."))
    feed(c, LlmEnd(sid=SID, turn=1, text="Hello there.", ttft_ms=1))
    feed(c, TtsBegin(sid=SID, turn=1))
    feed(c, TtsSegment(sid=SID, turn=1, index=0, text="Hello there."))
    feed(c, TtsAudio(sid=SID, turn=1, index=0, seq=0, pcm=b"\0" * 480, sample_rate=24000))
    feed(c, TtsEnd(sid=SID, turn=1, segments=1, audio_ms=10))
    c.audio_sent(1, 480)


def test_llm_replacement_gets_the_history_and_continues_the_answer() -> None:
    c = core()
    answered_turn(c)
    feed(c, final("and you", 1, 1000, 1500))
    feed(c, LlmBegin(sid=SID, turn=2))
    feed(c, LlmDelta(sid=SID, turn=2, seq=0, text="I am"))

    out = published(run(c, c.replica_lost(LLM)))
    opened, again = out
    assert isinstance(opened, LlmOpen)
    assert [(m.role, m.content) for m in opened.history] == [
        ("user", "hi"),
        ("assistant", "Hello there."),
    ]
    assert isinstance(again, LlmTurn)
    assert (again.turn, again.text, again.resume) == (2, "and you", "I am")

    # The replacement's begin is not news; its deltas continue the numbering.
    assert events(feed(c, LlmBegin(sid=SID, turn=2))) == []
    got = feed(c, LlmDelta(sid=SID, turn=2, seq=0, text=" fine."))
    assert LlmDelta(sid=SID, turn=2, seq=1, text=" fine.") in events(got)
    assert TtsText(sid=SID, turn=2, seq=2, text=" fine.") in published(got)
    feed(c, LlmEnd(sid=SID, turn=2, text="I am fine.", ttft_ms=1))
    history = [(m.role, m.content) for m in c.recovery.conversation.history()]
    assert history == [
        ("user", "hi"),
        ("assistant", "Hello there."),
        ("user", "and you"),
        ("assistant", "I am fine."),
    ]


def test_llm_replacement_between_turns_only_reopens() -> None:
    c = core()
    answered_turn(c)
    out = published(run(c, c.replica_lost(LLM)))
    assert [type(m) for m in out] == [LlmOpen]


def test_history_copy_follows_truncations() -> None:
    c = core()
    answered_turn(c)
    run(c, c.truncate("item_2", 0))
    history = c.recovery.conversation.history()
    assert [m.role for m in history] == ["user"]
    run(
        c,
        [Publish(LLM, LlmEdit(sid=SID, op=HistoryOp.DELETE, item_id="item_1"))],
    )
    assert c.recovery.conversation.history() == ()


def test_resumed_session_history_seeds_the_copy() -> None:
    c = CallCore(CallOptions(sid=SID), new_id=Ids())
    actions = c.open()
    stored = (ChatMessage(role="user", content="before", item_id="x"),)
    for a in actions:
        if isinstance(a, Publish) and isinstance(a.message, LlmOpen):
            c.published(Publish(LLM, a.message.model_copy(update={"history": stored})))
        elif isinstance(a, Publish):
            c.published(a)
    assert c.recovery.conversation.history() == stored


def test_tts_replacement_speaks_from_the_unfinished_sentence_and_skips_heard_audio() -> None:
    c = core()
    feed(c, final("hi", 0, 0, 500))
    feed(c, LlmBegin(sid=SID, turn=1))
    feed(c, LlmDelta(sid=SID, turn=1, seq=0, text="One. Two. "))
    feed(c, TtsBegin(sid=SID, turn=1))
    feed(c, TtsSegment(sid=SID, turn=1, index=0, text="One."))
    feed(c, TtsAudio(sid=SID, turn=1, index=0, seq=0, pcm=b"\1" * 400, sample_rate=24000))
    feed(c, TtsSegment(sid=SID, turn=1, index=1, text="Two."))
    feed(c, TtsAudio(sid=SID, turn=1, index=1, seq=1, pcm=b"\2" * 100, sample_rate=24000))

    out = published(run(c, c.replica_lost(TTS)))
    assert isinstance(out[0], TtsOpen)
    assert isinstance(out[1], TtsText) and out[1].text.strip() == "Two." and not out[1].final

    assert events(feed(c, TtsBegin(sid=SID, turn=1))) == []
    assert events(feed(c, TtsSegment(sid=SID, turn=1, index=0, text="Two."))) == []
    got = feed(c, TtsAudio(sid=SID, turn=1, index=0, seq=0, pcm=b"\3" * 300, sample_rate=24000))
    sent = [a for a in got if isinstance(a, SendAudio)]
    assert [len(a.pcm) for a in sent] == [200]  # the first 100 bytes were heard already
    # The rest of the answer reaches the replacement as it streams.
    more = feed(c, LlmDelta(sid=SID, turn=1, seq=1, text="Three."))
    assert [m.text for m in published(more) if isinstance(m, TtsText)] == ["Three."]
    seg = events(feed(c, TtsSegment(sid=SID, turn=1, index=1, text="Three.")))
    assert TtsSegment(sid=SID, turn=1, index=2, text="Three.") in seg


def test_nothing_to_restore_after_the_call_finished() -> None:
    c = core()
    run(c, c.hangup())
    assert c.replica_lost(ASR) == [] and c.replica_lost(LLM) == []


def test_after_an_outage_replicas_get_time_to_reconnect_then_a_resync() -> None:
    tracker = ProbeTracker(reconnect_grace=2)
    assert tracker.feed(ProbeOutcome.REPLY) is Verdict.ALIVE
    assert tracker.feed(ProbeOutcome.DISCONNECTED) is Verdict.ALIVE
    # Back, but the replica has not reconnected yet: not dead for the grace.
    assert tracker.feed(ProbeOutcome.NO_RESPONDERS) is Verdict.ALIVE
    assert tracker.feed(ProbeOutcome.NO_RESPONDERS) is Verdict.ALIVE
    assert tracker.feed(ProbeOutcome.REPLY) is Verdict.RESYNC  # messages may be lost
    assert tracker.feed(ProbeOutcome.REPLY) is Verdict.ALIVE


def test_a_replica_that_never_comes_back_after_an_outage_is_dead() -> None:
    tracker = ProbeTracker(reconnect_grace=1)
    tracker.feed(ProbeOutcome.DISCONNECTED)
    assert tracker.feed(ProbeOutcome.NO_RESPONDERS) is Verdict.ALIVE
    assert tracker.feed(ProbeOutcome.NO_RESPONDERS) is Verdict.DEAD


def _two_sentences(delivered: int) -> SpeechResume:
    speech = SpeechResume()
    speech.on_text("The first sentence is here. The second sentence is longer than that one.")
    speech.on_segment(0, "The first sentence is here.")
    speech.on_audio(0, b"a" * 2700)  # 100 bytes a character
    speech.on_segment(1, "The second sentence is longer than that one.")
    speech.on_audio(1, b"b" * delivered)
    return speech


def test_estimated_resume_goes_on_from_the_word_the_audio_reached() -> None:
    speech = _two_sentences(2200)  # half of the second sentence's 4400 estimated bytes
    assert speech.resume(estimate=True) == " longer than that one."
    # The replacement's first sentence continues the second; none of its audio is skipped.
    assert speech.on_segment(0, "longer than that one.") == 1
    assert speech.on_audio(0, b"c" * 10) == b"c" * 10


def test_estimated_resume_skips_a_sentence_that_looks_delivered() -> None:
    speech = _two_sentences(4300)
    assert speech.resume(estimate=True) == ""
    assert speech.index_offset == 2

"""What the gateway keeps to bring a replacement replica up to date."""

from __future__ import annotations

from services.gateway.recovery import AsrReplay, AsrShift, Conversation, SentFrame, SpeechResume
from shared.messages import (
    ChatMessage,
    SentenceBegin,
    TranscriptFinal,
    TranscriptPartial,
    VadEvent,
    VadState,
)

SID = "s1"


def frame(seq: int, start_ms: float, ms: int = 100) -> SentFrame:
    return SentFrame(seq=seq, start_ms=start_ms, pcm=b"\0\0" * 16 * ms)


def test_replay_keeps_frames_after_the_checkpoint() -> None:
    ring = AsrReplay()
    for i in range(10):
        ring.add(frame(i + 1, i * 100))
    ring.checkpoint(450)  # frame 5 (400-500 ms) holds audio after the final
    assert [f.seq for f in ring.frames()] == [5, 6, 7, 8, 9, 10]
    assert ring.start_ms == 400


def test_replay_is_bounded_and_says_so() -> None:
    ring = AsrReplay(max_ms=300)
    for i in range(5):
        ring.add(frame(i + 1, i * 100))
    assert [f.seq for f in ring.frames()] == [3, 4, 5]
    assert ring.overflowed
    ring.checkpoint(500)
    assert ring.frames() == [] and not ring.overflowed and ring.start_ms is None


def test_shift_maps_a_replacement_onto_the_call_timeline() -> None:
    shift = AsrShift()
    final = TranscriptFinal(sid=SID, index=0, begin_ms=100, end_ms=900, text="hello")
    assert shift.apply(final) == final
    shift.rebase(1200)  # the replacement's stream time 0 is the call's 1200 ms
    vad = VadEvent(sid=SID, state=VadState.SPEAKING, start_ms=50, end_ms=60, timestamp=1.0)
    assert shift.apply(vad) == vad.model_copy(update={"start_ms": 1250, "end_ms": 1260})
    begin = shift.apply(SentenceBegin(sid=SID, index=0, begin_ms=50))
    assert begin == SentenceBegin(sid=SID, index=1, begin_ms=1250)
    again = TranscriptFinal(sid=SID, index=0, begin_ms=50, end_ms=700, text="again")
    assert shift.apply(again) == again.model_copy(
        update={"index": 1, "begin_ms": 1250, "end_ms": 1900}
    )


def test_shift_drops_sentences_already_delivered() -> None:
    shift = AsrShift()
    shift.apply(TranscriptFinal(sid=SID, index=0, begin_ms=0, end_ms=500, text="one"))
    shift.apply(TranscriptFinal(sid=SID, index=1, begin_ms=600, end_ms=900, text="two"))
    # A hung replica that wakes up repeats its last sentence: not delivered twice.
    assert (
        shift.apply(TranscriptFinal(sid=SID, index=1, begin_ms=600, end_ms=900, text="two")) is None
    )
    assert shift.apply(TranscriptPartial(sid=SID, index=0, begin_ms=0, end_ms=5, text="o")) is None


def test_conversation_truncates_and_deletes_by_item() -> None:
    conv = Conversation(max_messages=3)
    conv.add(ChatMessage(role="user", content="hi", item_id="u1"))
    conv.add(ChatMessage(role="assistant", content="hello there friend", item_id="a1"))
    conv.truncate("a1", "hello")
    assert conv.history()[-1].content == "hello"
    conv.truncate("a1", "")  # nothing of it was heard
    assert [m.item_id for m in conv.history()] == ["u1"]
    for i in range(4):
        conv.add(ChatMessage(role="user", content=str(i), item_id=f"x{i}"))
    assert [m.item_id for m in conv.history()] == ["x1", "x2", "x3"]
    conv.delete("x2")
    assert [m.item_id for m in conv.history()] == ["x1", "x3"]


def test_speech_resumes_from_the_first_incomplete_sentence() -> None:
    speech = SpeechResume()
    speech.on_text("First one. Second one. Third")
    assert speech.on_segment(0, "First one.") == 0
    assert speech.on_audio(0, b"a" * 100) == b"a" * 100
    assert speech.on_segment(1, "Second one.") == 1
    assert speech.on_audio(1, b"b" * 40) == b"b" * 40
    # The replica dies during the second sentence.
    assert speech.resume() == " Second one. Third"
    # The replacement speaks "Second one." again as its sentence 0, then more.
    assert speech.on_segment(0, "Second one.") == 1
    assert speech.on_audio(0, b"B" * 30) == b""  # heard already
    assert speech.on_audio(0, b"B" * 30) == b"B" * 20  # the last 20 bytes are new
    speech.on_text(" one.")
    assert speech.on_segment(1, "Third one.") == 2
    assert speech.on_audio(1, b"c" * 10) == b"c" * 10
    assert speech.audio_bytes == [100, 60, 10]


def test_speech_resume_twice_and_before_any_sentence() -> None:
    speech = SpeechResume()
    speech.on_text("Hello there.")
    assert speech.resume() == "Hello there."  # nothing began: everything again
    assert speech.on_segment(0, "Hello there.") == 0
    assert speech.on_audio(0, b"x" * 8) == b"x" * 8
    assert speech.resume() == "Hello there."
    assert speech.on_audio(0, b"y" * 10) == b"y" * 2

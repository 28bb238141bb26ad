"""The load generator's turn accounting and call script (sans-I/O parts of bench/)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.loadgen.script import build_cycle, silence
from bench.loadgen.tracker import CallTracker
from shared.messages import VadOptions


def _tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


def test_cycle_marks_one_turn_per_clip_at_the_silence_window() -> None:
    clips = [_tone(1.0), _tone(0.6) + silence(0.2) + _tone(0.6)]
    pcm, cycle = build_cycle(
        clips,
        gap_s=1.0,
        lead_s=0.3,
        frame_ms=20,
        vad=VadOptions(silence_duration_ms=500),
        threshold=300.0,
    )
    assert len(pcm) == cycle.frames * 640
    assert len(cycle.voiced) == len(cycle.endpoints) == 2
    # The turn ends 500 ms (25 frames) after the frame holding the last voiced audio.
    assert [e - v for v, e in zip(cycle.voiced, cycle.endpoints, strict=True)] == [25, 25]
    assert cycle.unit_starts[0] == 0 and cycle.voiced[0] == (300 + 1000) // 20 - 1


def test_a_clip_with_a_long_pause_is_refused() -> None:
    with pytest.raises(ValueError, match="2 turns"):
        build_cycle(
            [_tone(0.5) + silence(1.0) + _tone(0.5)],
            gap_s=1.0,
            lead_s=0.3,
            frame_ms=20,
            vad=VadOptions(silence_duration_ms=500),
            threshold=300.0,
        )


def test_tracker_measures_answered_turns_and_counts_unanswered_ones() -> None:
    tracker = CallTracker(voiced={10, 110}, endpoints={35, 135})
    tracker.frame_sent(10, 1.0)
    tracker.frame_sent(35, 1.5)
    tracker.event("SentenceEnd", 1.7)
    tracker.event("LLM_CHAT_DELTA", 2.0)
    tracker.audio(2.2)
    tracker.audio(2.3)  # later chunks do not move the first-audio time
    tracker.event("TTS_END", 3.0)
    tracker.frame_sent(110, 5.0)  # a second turn nobody answers
    tracker.frame_sent(135, 5.5)
    [turn] = tracker.results(until=6.0)
    assert turn.voice_to_voice_ms == pytest.approx(1200)
    assert turn.endpoint_to_audio_ms == pytest.approx(700)
    assert turn.endpoint_to_final_ms == pytest.approx(200)
    assert turn.final_to_delta_ms == pytest.approx(300)
    assert turn.delta_to_audio_ms == pytest.approx(200)
    assert tracker.errors == {"unanswered": 1}


def test_tracker_error_events_and_finals_after_the_stop() -> None:
    tracker = CallTracker(voiced={10}, endpoints={35})
    tracker.event("SentenceEnd", 0.5)  # no turn waits for it
    tracker.event("TaskFailed", 0.6)
    tracker.stopped()
    tracker.event("SentenceEnd", 0.7)  # the stop's flush: expected
    assert tracker.results(until=1.0) == []
    assert tracker.errors == {"unexpected_final": 1, "TaskFailed": 1}

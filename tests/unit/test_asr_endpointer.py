"""The endpointer over synthetic speech probabilities (32 ms windows)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.asr.endpointer import (
    WINDOW_MS,
    Action,
    Endpointer,
    EndpointerConfig,
    StateChanged,
    UtteranceBegan,
    UtteranceEnded,
)
from shared.messages import VadOptions, VadState

SPEECH, SILENCE, UNSURE = 0.9, 0.05, 0.42


def feed(ep: Endpointer, probability: float, windows: int) -> list[Action]:
    actions: list[Action] = []
    for _ in range(windows):
        actions += ep.process(probability)
    return actions


def states(actions: list[Action]) -> list[VadState]:
    return [a.state for a in actions if isinstance(a, StateChanged)]


def config(**kw: int) -> EndpointerConfig:
    base = {"prefix_padding_ms": 300, "silence_duration_ms": 500, "min_speech_ms": 150}
    base.update(kw)
    return EndpointerConfig(**base)


def test_onset_is_confirmed_after_min_speech() -> None:
    ep = Endpointer(config())
    assert feed(ep, SILENCE, 20) == []
    first = ep.process(SPEECH)
    assert first == [StateChanged(VadState.STARTING, 640, 672)]
    # 150 ms of speech = the 5th window (160 ms), counted from the onset window.
    assert feed(ep, SPEECH, 3) == []
    confirmed = ep.process(SPEECH)
    assert confirmed == [
        StateChanged(VadState.SPEAKING, 640, 800),
        UtteranceBegan(audio_begin_ms=340, speech_begin_ms=640),
    ]
    assert ep.state is VadState.SPEAKING


def test_short_blip_is_rejected() -> None:
    ep = Endpointer(config())
    feed(ep, SILENCE, 10)
    actions = feed(ep, SPEECH, 2) + feed(ep, SILENCE, 30)
    assert states(actions) == [VadState.STARTING, VadState.QUIET]
    assert not any(isinstance(a, (UtteranceBegan, UtteranceEnded)) for a in actions)
    assert ep.state is VadState.QUIET


def test_unsure_windows_neither_start_nor_end_speech() -> None:
    ep = Endpointer(config())
    assert feed(ep, UNSURE, 20) == []
    feed(ep, SPEECH, 10)
    assert feed(ep, UNSURE, 40) == []  # hysteresis: no pause inside speech
    assert ep.state is VadState.SPEAKING


def test_pause_then_resume_stays_one_utterance() -> None:
    ep = Endpointer(config())
    actions = feed(ep, SPEECH, 20) + feed(ep, SILENCE, 8) + feed(ep, SPEECH, 10)
    assert states(actions) == [
        VadState.STARTING,
        VadState.SPEAKING,
        VadState.PAUSING,
        VadState.SPEAKING,
    ]
    assert sum(isinstance(a, UtteranceBegan) for a in actions) == 1
    assert not any(isinstance(a, UtteranceEnded) for a in actions)
    pausing = [a for a in actions if isinstance(a, StateChanged)][2]
    assert pausing.start_ms == 20 * WINDOW_MS  # silence began after the last voiced window


def test_end_of_utterance_after_silence_duration() -> None:
    ep = Endpointer(config(silence_duration_ms=500))
    feed(ep, SILENCE, 5)
    feed(ep, SPEECH, 30)
    speech_end = 35 * WINDOW_MS
    # 500 ms of silence = 16 windows (512 ms); the 15th (480 ms) is not enough.
    assert not any(isinstance(a, UtteranceEnded) for a in feed(ep, SILENCE, 15))
    actions = ep.process(SILENCE)
    assert actions == [
        StateChanged(VadState.STOPPING, 5 * WINDOW_MS, speech_end),
        UtteranceEnded(speech_begin_ms=5 * WINDOW_MS, end_ms=speech_end),
        StateChanged(VadState.QUIET, speech_end, 51 * WINDOW_MS),
    ]
    assert ep.state is VadState.QUIET


def test_prefix_padding_is_clamped_to_stream_start_and_previous_utterance() -> None:
    ep = Endpointer(config(prefix_padding_ms=300, min_speech_ms=0))
    first = feed(ep, SILENCE, 2) + feed(ep, SPEECH, 10)
    begins = [a for a in first if isinstance(a, UtteranceBegan)]
    assert begins == [UtteranceBegan(audio_begin_ms=0, speech_begin_ms=64)]
    ended = feed(ep, SILENCE, 16)
    end_ms = next(a for a in ended if isinstance(a, UtteranceEnded)).end_ms
    second = feed(ep, SILENCE, 1) + feed(ep, SPEECH, 5)
    began = next(a for a in second if isinstance(a, UtteranceBegan))
    # Only 17 windows (544 ms) of silence in between, padding 300: 244 ms back from onset.
    assert began.speech_begin_ms == end_ms + 17 * WINDOW_MS
    assert began.audio_begin_ms == began.speech_begin_ms - 300 >= end_ms


def test_padding_never_overlaps_previous_utterance() -> None:
    ep = Endpointer(config(prefix_padding_ms=2000, min_speech_ms=0, silence_duration_ms=100))
    feed(ep, SPEECH, 10)
    ended = feed(ep, SILENCE, 4)
    end_ms = next(a for a in ended if isinstance(a, UtteranceEnded)).end_ms
    began = next(a for a in feed(ep, SPEECH, 1) if isinstance(a, UtteranceBegan))
    assert began.audio_begin_ms == end_ms


def test_forced_end_while_speaking_and_pausing() -> None:
    ep = Endpointer(config())
    feed(ep, SPEECH, 10)
    forced = ep.end_utterance()
    assert states(forced) == [VadState.STOPPING, VadState.QUIET]
    assert next(a for a in forced if isinstance(a, UtteranceEnded)).end_ms == 10 * WINDOW_MS
    feed(ep, SPEECH, 10)
    feed(ep, SILENCE, 3)
    ended = [a for a in ep.end_utterance() if isinstance(a, UtteranceEnded)]
    assert ended[0].end_ms == 20 * WINDOW_MS  # the last voiced audio, not now
    assert ep.end_utterance() == []


def test_forced_end_of_unconfirmed_onset_drops_it() -> None:
    ep = Endpointer(config())
    feed(ep, SPEECH, 2)
    assert states(ep.end_utterance()) == [VadState.QUIET]


def test_manual_mode_never_ends_on_silence() -> None:
    ep = Endpointer(EndpointerConfig.from_options(VadOptions(), manual=True))
    feed(ep, SPEECH, 10)
    actions = feed(ep, SILENCE, 200)
    assert states(actions) == [VadState.PAUSING]
    assert any(isinstance(a, UtteranceEnded) for a in ep.end_utterance())


def test_long_monologue_is_cut() -> None:
    ep = Endpointer(config(max_utterance_ms=3200))
    actions = feed(ep, SPEECH, 250)
    ends = [a for a in actions if isinstance(a, UtteranceEnded)]
    begins = [a for a in actions if isinstance(a, UtteranceBegan)]
    assert [(e.speech_begin_ms, e.end_ms) for e in ends] == [(0, 3200), (3200, 6400)]
    assert len(begins) == 3 and ep.in_utterance


def test_options_map_from_the_wire() -> None:
    cfg = EndpointerConfig.from_options(
        VadOptions(threshold=0.6, prefix_padding_ms=100, silence_duration_ms=700, min_speech_ms=64)
    )
    assert (cfg.threshold, cfg.prefix_padding_ms, cfg.silence_duration_ms, cfg.min_speech_ms) == (
        0.6,
        100,
        700,
        64,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=400))
def test_any_sequence_keeps_the_invariants(probabilities: list[float]) -> None:
    ep = Endpointer(config(max_utterance_ms=2000))
    open_utterance = False
    last_end = 0
    for p in probabilities:
        for action in ep.process(p):
            if isinstance(action, UtteranceBegan):
                assert not open_utterance
                assert last_end <= action.audio_begin_ms <= action.speech_begin_ms
                open_utterance = True
            elif isinstance(action, UtteranceEnded):
                assert open_utterance
                assert action.speech_begin_ms <= action.end_ms <= ep.now_ms
                last_end = action.end_ms
                open_utterance = False
    assert open_utterance == ep.in_utterance

"""Decode caps, language tags, frame de-duplication and the stream buffer."""

from __future__ import annotations

import numpy as np
import pytest

from services.asr.audiobuffer import StreamBuffer
from services.asr.decoder import (
    DecodeOptions,
    collapse_repeats,
    context_frames,
    decode_cap,
    has_words,
    normalize_language,
    wall_guard_s,
)
from services.asr.dedup import SeqFilter


def test_decode_cap_scales_with_audio_and_is_bounded() -> None:
    opts = DecodeOptions(tokens_per_second=8.0, min_new_tokens=16, max_new_tokens=224)
    assert decode_cap(0.0, opts) == 16
    assert decode_cap(1.0, opts) == 24
    assert decode_cap(2.5, opts) == 36
    assert decode_cap(30.0, opts) == 224
    assert decode_cap(-1.0, opts) == 16
    # Never beyond what Whisper's 448-token context leaves after the prompt.
    assert decode_cap(1000.0, DecodeOptions(max_new_tokens=10_000)) == 400
    caps = [decode_cap(s / 10, opts) for s in range(400)]
    assert caps == sorted(caps)


def test_wall_guard_grows_with_audio() -> None:
    opts = DecodeOptions(guard_base_s=2.0, guard_per_audio_s=1.0)
    assert wall_guard_s(0.0, opts) == 2.0
    assert wall_guard_s(3.0, opts) == 5.0


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("en", "en"),
        ("en-US", "en"),
        ("EN_gb", "en"),
        ("zh", "zh"),
        ("zh-CN", "zh"),
        ("cmn", "zh"),
        ("zh-Hans", "zh"),
        (None, None),
        ("", None),
        ("auto", None),
        ("klingon", None),
    ],
)
def test_language_tags(tag: str | None, expected: str | None) -> None:
    assert normalize_language(tag) == expected


def test_encoder_context_covers_the_audio_within_whisper_window() -> None:
    assert context_frames(270, 10.0) == 1000  # 2.7 s -> the 10 s floor
    assert context_frames(950, 10.0) == 1100  # audio + 1 s, whole seconds
    assert context_frames(2950, 10.0) == 3000  # never past 30 s
    assert context_frames(270, 30.0) == 3000  # stock Whisper padding
    assert context_frames(270, 1.0) == 400


def test_decoder_loops_are_collapsed() -> None:
    assert collapse_repeats("天天天天天天天天天天天天天天天天天天天天") == "天"
    assert (
        collapse_repeats("Here, here, here, here, here, here, here, here, here,").count("here") <= 2
    )
    normal = "Hello, what is the weather like today?"
    assert collapse_repeats(normal) == normal
    assert collapse_repeats("") == ""


def test_punctuation_only_output_is_not_speech() -> None:
    assert not has_words("")
    assert not has_words(" 。...!")
    assert has_words("嗯")
    assert has_words("ok.")


def test_seq_filter_drops_replays() -> None:
    f = SeqFilter()
    accepted = [s for s in [0, 1, 2, 2, 1, 3, 5, 4, 6] if f.accept(s)]
    assert accepted == [0, 1, 2, 3, 5, 6]
    assert f.duplicates == 3


def test_stream_buffer_slices_by_stream_time_after_discards() -> None:
    buf = StreamBuffer(initial_capacity=16)
    samples = np.arange(16_000 * 3, dtype=np.float32)
    for chunk in np.split(samples, 30):  # 100 ms frames, growing past the capacity
        buf.append(chunk)
    assert buf.end_ms == 3000
    np.testing.assert_array_equal(buf.slice(1000, 1100), samples[16_000:17_600])
    buf.discard_before(2000)
    assert buf.start_ms == 2000
    # Clipped to what is held; addresses are unchanged by the discard.
    np.testing.assert_array_equal(buf.slice(1500, 2010), samples[32_000:32_160])
    np.testing.assert_array_equal(buf.slice(2900), samples[46_400:])
    assert len(buf.slice(3100, 3200)) == 0
    buf.append(np.ones(160, dtype=np.float32))
    assert buf.end_ms == 3010

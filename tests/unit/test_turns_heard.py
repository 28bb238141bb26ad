"""What the user heard of an answer, from its sentences and the audio that went out."""

from __future__ import annotations

import pytest

from services.gateway.heard import AnswerAudio, word_count


@pytest.mark.parametrize(
    ("text", "words"),
    [("", 0), ("mhm", 1), ("no, wait a second", 4), ("嗯", 1), ("你好吗", 3), ("OK 好的", 3)],
)
def test_word_count(text: str, words: int) -> None:
    assert word_count(text) == words


def answer() -> AnswerAudio:
    a = AnswerAudio(turn=1, item_id="item_1", sample_rate=24000)
    a.segment(0, "Hello there.")
    a.audio(0, 24000)  # 500 ms
    a.audio(0, 24000)
    a.segment(1, "How are you today?")
    a.audio(1, 48000)
    return a


@pytest.mark.parametrize(
    ("sent", "heard"),
    [
        (0, ""),
        (24000, "Hello"),  # half of "Hello there.": a half-said word is not heard
        (48000, "Hello there."),
        (48000 + 24000, "Hello there. How are"),
        (96000, "Hello there. How are you today?"),
    ],
)
def test_heard_text_follows_the_audio_sent(sent: int, heard: str) -> None:
    a = answer()
    a.audio_sent(sent)
    assert a.heard_text == heard
    assert a.sent_ms == sent / 48


def test_sent_never_exceeds_received_and_ms_maps_to_bytes() -> None:
    a = answer()
    a.audio_sent(10**9)
    assert a.sent == a.received == 96000 and a.played_out
    assert a.bytes_at(1000) == 48000 and a.bytes_at(10**6) == 96000
    assert a.text_until(a.bytes_at(1500)) == "Hello there. How are"


def test_sentences_without_audio_were_not_heard_and_chinese_needs_no_spaces() -> None:
    a = AnswerAudio(turn=1, item_id="i", sample_rate=16000)
    a.segment(0, "你好。")
    a.audio(0, 1000)
    a.segment(1, "今天天气很好。")
    a.audio(1, 1400)
    a.segment(2, "Never said.")
    a.audio_sent(1000 + 700)
    assert a.heard_text == "你好。今天天"


def test_audio_without_a_sentence_counts_but_says_nothing() -> None:
    a = AnswerAudio(turn=1, item_id="i", sample_rate=16000)
    a.audio(0, 100)
    a.audio_sent(100)
    assert a.heard_text == "" and a.played_out

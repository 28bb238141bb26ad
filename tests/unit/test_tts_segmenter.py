"""The sans-I/O segmenter: where streamed text is cut for synthesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.tts.segmenter import Segmenter, SegmenterOptions
from services.tts.text import clean_for_speech


def stream(text: str, step: int, options: SegmenterOptions | None = None) -> list[str]:
    """Feed ``text`` in deltas of ``step`` characters, then flush."""
    seg = Segmenter(options)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += seg.feed(text[i : i + step])
    return out + seg.flush()


def test_first_segment_is_the_first_clause() -> None:
    seg = Segmenter()
    assert seg.feed("Sure, I can help with that.") == ["Sure,"]


def test_first_segment_cuts_after_about_eight_chars_at_a_word_boundary() -> None:
    seg = Segmenter()
    assert seg.feed("Hello") == []
    assert seg.feed(" there") == []  # "there" may still grow: no cut inside it
    assert seg.feed(" my friend") == ["Hello there"]
    assert seg.flush() == ["my friend"]


def test_first_segment_never_cuts_inside_a_word() -> None:
    seg = Segmenter()
    assert seg.feed("Supercalifragilistic") == []
    assert seg.feed("expialidocious is") == ["Supercalifragilisticexpialidocious"]


def test_later_segments_are_whole_sentences_and_tiny_ones_merge() -> None:
    text = "Hi! Sure. I can do that for you, no problem. It takes a minute. Ok."
    assert stream(text, 3) == [
        "Hi!",
        "Sure. I can do that for you, no problem.",
        "It takes a minute.",
        "Ok.",  # a tiny last sentence: the turn ended, nothing left to merge it with
    ]


def test_long_sentence_cuts_at_a_clause_then_at_a_word_under_the_cap() -> None:
    opts = SegmenterOptions(clause_chars=30, max_chars=50)
    words = " ".join(f"word{i}" for i in range(40))
    text = "First, " + "this sentence has a first clause that is long enough, " + words + "."
    segments = stream(text, 5, opts)
    assert segments[0] == "First,"
    assert segments[1] == "this sentence has a first clause that is long enough,"
    for s in segments[2:]:
        assert sum(ch.isalnum() for ch in s) <= 50
    assert " ".join(segments).split() == clean_for_speech(text).split()


def test_decimal_numbers_and_thousands_are_not_split() -> None:
    text = "Okay then. The price is 3.5 dollars, or 1,000 cents at 3:30 today. Really."
    segments = stream(text, 2)
    joined = " | ".join(segments)
    assert "3.5" in joined and "1,000" in joined and "3:30" in joined
    assert not any(s.endswith(("3.", "1,", "3:")) for s in segments)


def test_abbreviations_do_not_end_sentences() -> None:
    seg = Segmenter()
    seg.feed("Okay, ")
    assert seg.feed("Dr. Smith said e.g. apples are good for you. Then") == [
        "Dr. Smith said e.g. apples are good for you."
    ]


def test_period_at_end_of_buffer_waits_for_the_next_delta() -> None:
    seg = Segmenter()
    seg.feed("Okay, ")
    assert seg.feed("the value is 3.") == []
    assert seg.feed("5 percent higher than before. And") == [
        "the value is 3.5 percent higher than before."
    ]


def test_chinese_boundaries() -> None:
    text = "你好！我是你的语音助手，很高兴认识你。今天我们聊点什么呢？"
    assert stream(text, 2) == ["你好！", "我是你的语音助手，很高兴认识你。", "今天我们聊点什么呢？"]


def test_chinese_first_segment_without_punctuation_is_capped() -> None:
    seg = Segmenter(SegmenterOptions(first_max_chars=10))
    out = seg.feed("我觉得这个问题非常有意思因为它涉及很多方面")
    assert out == ["我觉得这个问题非常有"]


def test_chinese_punctuation_cuts_without_waiting() -> None:
    seg = Segmenter()
    assert seg.feed("好的，") == ["好的，"]


def test_newlines_cut_and_list_markers_are_not_read() -> None:
    text = "Okay.\nHere are the steps:\n1. Open the box.\n2. Take out the phone.\n- Charge it fully first\n"
    assert stream(text, 4) == [
        "Okay.",
        "Here are the steps:",
        "Open the box.",
        "Take out the phone.",
        "Charge it fully first",
    ]


def test_markdown_and_emoji_are_stripped() -> None:
    text = (
        "## Great question! 🎉 The **answer** is `42` \u2014 see [the docs](http://x.y/z). 😀👍\n"
    )
    segments = stream(text, 5)
    joined = " ".join(segments)
    for symbol in ("#", "*", "`", "🎉", "😀", "👍", "http", "[", "]"):
        assert symbol not in joined
    assert "the docs" in joined and "answer" in joined and "42" in joined


def test_segments_without_speakable_characters_are_skipped() -> None:
    assert stream("*** \n --- \n 🎉🎉 \n ... \n", 3) == []
    seg = Segmenter()
    assert seg.feed("...\n") == []
    assert seg.feed("Hi, you.") == ["Hi,"]  # the first speakable segment is still "first"


def test_flush_returns_the_rest_and_resets() -> None:
    seg = Segmenter()
    assert seg.feed("Well") == []
    assert seg.flush() == ["Well"]
    assert seg.flush() == []
    assert seg.pending == ""


def test_closing_quotes_stay_with_their_sentence() -> None:
    text = 'Well, he said "stop it now." Then he left the room quietly.'
    assert stream(text, 4)[1] == 'he said "stop it now."'
    assert stream("他说：“好的。”然后走了。", 3) == ["他说：", "“好的。”然后走了。"]


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=9), min_size=1, max_size=60),
    seps=st.lists(
        st.sampled_from([" ", ", ", ". ", "! ", "? ", "; ", "\n", " 3.5 "]),
        min_size=60,
        max_size=60,
    ),
    step=st.integers(min_value=1, max_value=17),
)
def test_any_delta_split_keeps_every_word_whole_and_in_order(
    words: list[str], seps: list[str], step: int
) -> None:
    text = "".join(w + s for w, s in zip(words, seps, strict=False))
    segments = stream(text, step)
    assert " ".join(segments).split() == clean_for_speech(text).split()
    assert all(s.strip() for s in segments)

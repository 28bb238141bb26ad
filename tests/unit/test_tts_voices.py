"""Voice names, automatic choice by language, and what text is read aloud."""

from __future__ import annotations

import pytest

from services.tts.text import Language, clean_for_speech, is_speakable, language_of
from services.tts.voices import (
    ENGLISH_JOE,
    MANDARIN_FEMALE,
    MANDARIN_MALE,
    UnknownVoiceError,
    list_voices,
    resolve_voice,
    voice_for_text,
)


@pytest.mark.parametrize(
    ("name", "voice"),
    [
        ("en", ENGLISH_JOE),
        ("en_US-joe-medium", ENGLISH_JOE),
        ("joe", ENGLISH_JOE),
        ("EN-US", ENGLISH_JOE),
        ("zh", MANDARIN_MALE),
        ("cmn", MANDARIN_MALE),
        ("zh_female", MANDARIN_FEMALE),
        ("cmn-latn-pinyin", MANDARIN_MALE),
        ("zh_female_tianmeixiaoyuan_moon_bigtts", MANDARIN_FEMALE),
        ("zh_male_beijingxiaoye_emo_v2_mars_bigtts", MANDARIN_MALE),
    ],
)
def test_aliases(name: str, voice: object) -> None:
    assert resolve_voice(name) is voice


@pytest.mark.parametrize("name", [None, "", "auto", "AUTO"])
def test_automatic(name: str | None) -> None:
    assert resolve_voice(name) is None


def test_unknown_voice_names_the_known_ones() -> None:
    with pytest.raises(UnknownVoiceError) as info:
        resolve_voice("klingon")
    assert "klingon" in str(info.value) and "en_US-joe-medium" in str(info.value)


def test_list_voices_has_every_voice_once() -> None:
    names = [v.name for v in list_voices()]
    assert names[0] == "en_US-joe-medium"
    assert sorted(names) == sorted(set(names)) and "zh_female" in names


def test_each_segment_is_read_by_a_voice_of_its_language() -> None:
    assert voice_for_text(None, "Hello there.") is ENGLISH_JOE
    assert voice_for_text(None, "你好，世界。") is MANDARIN_MALE
    assert voice_for_text(MANDARIN_FEMALE, "我喜欢 Python。") is MANDARIN_FEMALE
    # Neither engine can read the other's script: fall back to that language's default.
    assert voice_for_text(MANDARIN_FEMALE, "See you soon.") is ENGLISH_JOE
    assert voice_for_text(ENGLISH_JOE, "谢谢") is MANDARIN_MALE


def test_text_helpers() -> None:
    assert language_of("abc 3.5") is Language.ENGLISH
    assert language_of("OK，好的") is Language.MANDARIN
    assert not is_speakable("... !? 🎉 **")
    assert is_speakable("好") and is_speakable("7")
    assert clean_for_speech("> **Note**: use `pip`\n* item two 👍") == "Note: use pip item two"

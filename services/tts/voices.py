"""The voices this service offers, their aliases, and how a session's choice is resolved.

A session's voice is a `Voice` or ``None`` (automatic). Each voice speaks one language;
text in the other language is read by that language's default voice, because neither
engine can read the other's script (Piper's English voice spells Chinese characters as
"chinese letter", espeak-ng's pinyin voice reads English words as pinyin syllables).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.tts.text import Language, language_of


class Backend(StrEnum):
    PIPER = "piper"
    ESPEAK = "espeak"


@dataclass(frozen=True)
class Voice:
    name: str
    language: Language
    backend: Backend
    engine_voice: str  # the name the backend program knows it by
    description: str
    aliases: tuple[str, ...] = ()


ENGLISH_JOE = Voice(
    name="en_US-joe-medium",
    language=Language.ENGLISH,
    backend=Backend.PIPER,
    engine_voice="en_US-joe-medium",
    description="English (US), male, Piper neural voice, 22.05 kHz",
    aliases=("en", "en-us", "en_us", "english", "joe", "en_male", "en-us-joe"),
)
MANDARIN_MALE = Voice(
    name="zh_male",
    language=Language.MANDARIN,
    backend=Backend.ESPEAK,
    # The plain "cmn" voice of Debian 12's espeak-ng reads tone digits in English;
    # this one reads Chinese characters (and pinyin) as Mandarin.
    engine_voice="cmn-latn-pinyin",
    description="Mandarin, male, espeak-ng formant voice",
    aliases=("zh", "zh-cn", "zh_cn", "cmn", "mandarin", "chinese", "cmn-latn-pinyin"),
)
MANDARIN_FEMALE = Voice(
    name="zh_female",
    language=Language.MANDARIN,
    backend=Backend.ESPEAK,
    engine_voice="cmn-latn-pinyin+f3",
    description="Mandarin, female, espeak-ng formant voice",
    aliases=("zh-female", "cmn_female", "cmn-female"),
)

VOICES: tuple[Voice, ...] = (ENGLISH_JOE, MANDARIN_MALE, MANDARIN_FEMALE)
DEFAULT_BY_LANGUAGE: dict[Language, Voice] = {
    Language.ENGLISH: ENGLISH_JOE,
    Language.MANDARIN: MANDARIN_MALE,
}
AUTO_NAMES = frozenset({"", "auto", "default"})

# Speaker ids in the style of Volcengine's ("zh_female_tianmei_moon_bigtts"): the
# family prefix picks our nearest voice, so such clients work without a mapping table.
_FAMILY_PREFIXES: tuple[tuple[str, Voice], ...] = (
    ("zh_female_", MANDARIN_FEMALE),
    ("zh_male_", MANDARIN_MALE),
    ("en_female_", ENGLISH_JOE),
    ("en_male_", ENGLISH_JOE),
)

_BY_NAME: dict[str, Voice] = {
    key.lower(): voice for voice in VOICES for key in (voice.name, *voice.aliases)
}


class UnknownVoiceError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown voice {name!r}; available: auto, "
            + ", ".join(f"{v.name} ({', '.join(v.aliases)})" for v in VOICES)
        )
        self.name = name


def list_voices() -> list[Voice]:
    """Every voice a session may ask for (``TtsOpen.voice``), default first."""
    return list(VOICES)


def resolve_voice(name: str | None) -> Voice | None:
    """A requested voice name -> a `Voice`, or ``None`` for automatic choice.

    Raises `UnknownVoiceError` for a name we cannot serve.
    """
    if name is None:
        return None
    key = name.strip().lower()
    if key in AUTO_NAMES:
        return None
    if key in _BY_NAME:
        return _BY_NAME[key]
    for prefix, voice in _FAMILY_PREFIXES:
        if key.startswith(prefix):
            return voice
    raise UnknownVoiceError(name)


def voice_for_text(choice: Voice | None, text: str) -> Voice:
    """The voice that reads ``text`` (one segment) for a session that chose ``choice``."""
    language = language_of(text)
    if choice is not None and choice.language == language:
        return choice
    return DEFAULT_BY_LANGUAGE[language]

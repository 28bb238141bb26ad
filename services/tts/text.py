"""What of an LLM's text is read aloud: markdown and emoji removal, language detection.

Pure functions, no state: the segmenter calls them on each segment it cuts.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Language(StrEnum):
    ENGLISH = "en"
    MANDARIN = "zh"


# Markdown links keep their label: "[the docs](https://...)" is read as "the docs".
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
# List markers and block quotes at the start of a line: "- item", "* item", "1. item",
# "2) item", "> quote". Numbered markers would otherwise be read as "one", "two"...
_LINE_MARKER = re.compile(r"(?m)^[ \t]*(?:[-*+>\u2022\u25e6\u25aa\u00b7]|\d{1,3}[.)])[ \t]+")
# Symbols that only format text: emphasis, headings, code, strikethrough (deleted)...
_FORMATTING = re.compile(r"[*#`~]+")
# ... and separators between words: table bars, underscores, bullets (become spaces).
_SEPARATORS = re.compile(r"[|_\u2022\u25e6\u25aa]+")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+(?=[,.!?;:\u3001\u3002\uff01\uff0c\uff1a\uff1b\uff1f])")
# Runs of dashes/equals used as rules ("---", "===").
_RULES = re.compile(r"(?:-{2,}|={2,})")


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x1F000 <= cp <= 0x1FAFF  # emoticons, pictographs, transport, flags, symbols ext.
        or 0x2600 <= cp <= 0x27BF  # misc symbols and dingbats
        or 0x2B00 <= cp <= 0x2BFF  # stars and arrows used as emoji
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or cp == 0x200D  # zero-width joiner inside emoji sequences
        or 0xE0000 <= cp <= 0xE007F  # tag characters (subdivision flags)
    )


def clean_for_speech(text: str) -> str:
    """Drop what would be read aloud as symbols; collapse whitespace to single spaces."""
    text = _LINK.sub(r"\1", text)
    text = _LINE_MARKER.sub(" ", text)
    text = _RULES.sub(" ", text)
    text = _FORMATTING.sub("", text)
    text = _SEPARATORS.sub(" ", text)
    text = "".join(ch for ch in text if not _is_emoji(ch))
    text = _SPACES.sub(" ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub("", text)


def is_speakable(text: str) -> bool:
    """True when a synthesizer has something to say: a letter or digit in any script.

    Piper crashes on a line with nothing to pronounce ("..."): it opens a WAV file and
    never sets its format. This check is what keeps such lines away from it.
    """
    return any(ch.isalnum() for ch in text)


def speakable_length(text: str) -> int:
    """Characters that carry speech (letters, digits, CJK), ignoring spaces and punctuation."""
    return sum(1 for ch in text if ch.isalnum())


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK unified ideographs
        or 0x3400 <= cp <= 0x4DBF  # extension A
        or 0x20000 <= cp <= 0x2A6DF  # extension B
        or 0xF900 <= cp <= 0xFAFF  # compatibility ideographs
    )


def has_cjk(text: str) -> bool:
    return any(is_cjk(ch) for ch in text)


def language_of(text: str) -> Language:
    """Mandarin as soon as a segment holds Chinese characters, English otherwise.

    A Chinese answer quoting an English word stays Mandarin (espeak-ng's Mandarin voice
    switches to English for Latin words); Piper's English voice cannot read Chinese at all.
    """
    return Language.MANDARIN if has_cjk(text) else Language.ENGLISH


def single_line(text: str) -> str:
    """Piper reads one sentence per stdin line: a newline inside would split the request."""
    return _SPACES.sub(" ", text).strip()

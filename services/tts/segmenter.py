"""Sans-I/O sentence segmentation of streamed LLM text.

`Segmenter.feed` takes text deltas as the LLM produces them and returns the segments
that are complete; `Segmenter.flush` returns the rest at the end of the turn. One
instance per turn. No clock, no I/O: the caller decides when to synthesize.

Where it cuts:

* **first segment** of a turn: as early as possible, so audio starts while the LLM is
  still writing: at the first clause boundary (``. ! ? ; : ,`` and ``。！？；，、：``,
  newlines) or, without one, at the first word boundary once ``first_chars`` speakable
  characters are buffered. Never inside a word; Chinese text, which has no spaces,
  waits for punctuation up to ``first_max_chars``.
* **later segments**: whole sentences; a sentence shorter than ``min_chars`` merges with
  the next ("Sure. Here is how." is one segment); a clause boundary cuts only a long
  sentence (``clause_chars``); nothing grows beyond ``max_chars``.

A boundary after ASCII punctuation needs the next character to be known and to be a
space (or a Chinese character): so "3.5", "1,000", "3:30", "a.m." and "e.g." never
cut, an ellipsis cuts only after its last dot, and a period at the very end of the
buffer waits for the next delta (it may be the "." of "3.5").
Chinese punctuation cuts at once. Segments are cleaned of markdown and emoji
(`services.tts.text.clean_for_speech`); a segment with nothing speakable is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from services.tts.text import clean_for_speech, is_cjk, is_speakable, speakable_length


@dataclass(frozen=True)
class SegmenterOptions:
    first_chars: int = 8  # the first segment cuts at a word boundary after this many
    first_max_chars: int = 24  # ... or anywhere (between CJK characters) after this many
    min_chars: int = 12  # a shorter sentence merges with the next
    clause_chars: int = 80  # a sentence longer than this may cut at a comma/colon
    max_chars: int = 200  # hard cap (piper synthesizes a whole segment before any audio)


class _Kind(Enum):
    STRONG = auto()  # end of sentence
    WEAK = auto()  # end of clause
    NEWLINE = auto()
    WORD = auto()  # whitespace after a word
    CJK = auto()  # between two Chinese characters (no word boundary is marked)


_ASCII_STRONG = frozenset(".!?;")
_ASCII_WEAK = frozenset(",:")
_CJK_STRONG = frozenset("。！？；．")
_CJK_WEAK = frozenset("，、：")
# Closing quotes/brackets stay with the sentence they close.
_CLOSERS = frozenset("\"')]}”’」』）》")
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "etc", "no", "approx"}
)


class Segmenter:
    """Cuts one turn's streamed text into segments to synthesize (see module docstring)."""

    def __init__(self, options: SegmenterOptions | None = None) -> None:
        self.options = options or SegmenterOptions()
        self._buf = ""
        self._first = True

    @property
    def pending(self) -> str:
        """Text received but not yet returned as a segment."""
        return self._buf

    def feed(self, delta: str) -> list[str]:
        """Add a delta; return the segments it completes (possibly none)."""
        self._buf += delta
        out: list[str] = []
        while (cut := self._find_cut()) is not None:
            self._emit(self._buf[:cut], out)
            self._buf = self._buf[cut:]
        return out

    def flush(self) -> list[str]:
        """End of the turn: everything left, cut only to respect ``max_chars``."""
        out: list[str] = []
        while speakable_length(self._buf) > self.options.max_chars:
            cut = self._hard_cut(self._buf)
            self._emit(self._buf[:cut], out)
            self._buf = self._buf[cut:]
        self._emit(self._buf, out)
        self._buf = ""
        return out

    # ------------------------------------------------------------------ internals

    def _emit(self, piece: str, out: list[str]) -> None:
        text = clean_for_speech(piece)
        if is_speakable(text):
            out.append(text)
            self._first = False

    def _find_cut(self) -> int | None:
        """Index where the buffer should be cut now, or None to wait for more text."""
        opts = self.options
        buf = self._buf
        for end, kind in _boundaries(buf):
            length = speakable_length(buf[:end])
            if self._first:
                if kind in (_Kind.STRONG, _Kind.WEAK, _Kind.NEWLINE):
                    return end
                if kind is _Kind.WORD and length >= opts.first_chars:
                    return end
                if kind is _Kind.CJK and length >= opts.first_max_chars:
                    return end
                continue
            if kind is _Kind.NEWLINE:
                return end
            if kind is _Kind.STRONG and length >= opts.min_chars:
                return end
            if kind is _Kind.WEAK and length >= opts.clause_chars:
                return end
            if length >= opts.max_chars:
                return self._hard_cut(buf)
        return None

    def _hard_cut(self, buf: str) -> int:
        """The last word (or CJK character) boundary within ``max_chars``."""
        best: int | None = None
        for end, _kind in _boundaries(buf):
            if speakable_length(buf[:end]) > self.options.max_chars:
                break
            best = end
        if best is not None and best > 0:
            return best
        # One "word" longer than the cap (a URL, a hash): cut it by characters.
        count = 0
        for i, ch in enumerate(buf):
            count += ch.isalnum()
            if count >= self.options.max_chars:
                return i + 1
        return len(buf)


def _boundaries(buf: str) -> list[tuple[int, _Kind]]:
    """Every place the buffer could be cut, as (end index, kind), in order.

    Only boundaries that later text cannot invalidate are reported: an ASCII period at
    the end of the buffer may yet turn into "3.5", so it waits.
    """
    found: list[tuple[int, _Kind]] = []
    n = len(buf)
    i = 0
    while i < n:
        ch = buf[i]
        if ch == "\n":
            found.append((i + 1, _Kind.NEWLINE))
        elif ch in _CJK_STRONG or ch in _CJK_WEAK:
            end = _skip_closers(buf, i + 1)
            found.append((end, _Kind.STRONG if ch in _CJK_STRONG else _Kind.WEAK))
            i = end
            continue
        elif ch in _ASCII_STRONG or ch in _ASCII_WEAK:
            end = _skip_closers(buf, i + 1)
            if end < n and _ends_clause(buf, i, end):
                found.append((end, _Kind.STRONG if ch in _ASCII_STRONG else _Kind.WEAK))
            i = end
            continue
        elif ch.isspace():
            if i > 0 and not buf[i - 1].isspace():
                found.append((i, _Kind.WORD))
        elif is_cjk(ch) and i + 1 < n and is_cjk(buf[i + 1]):
            found.append((i + 1, _Kind.CJK))
        i += 1
    return found


def _skip_closers(buf: str, i: int) -> int:
    while i < len(buf) and buf[i] in _CLOSERS:
        i += 1
    return i


def _ends_clause(buf: str, mark: int, after: int) -> bool:
    """Whether ASCII punctuation at ``mark`` (closers up to ``after``) ends a clause."""
    nxt = buf[after]
    if not (nxt.isspace() or is_cjk(nxt)):
        return False  # "3.5", "1,000", "a.m.", "...": the text continues
    if buf[mark] != ".":
        return True
    word_start = mark
    while word_start > 0 and not buf[word_start - 1].isspace():
        word_start -= 1
    word = buf[word_start:mark]
    if word.lower() in _ABBREVIATIONS:
        return False
    # "1. " at the start of a line is a list marker, not the end of a sentence.
    at_line_start = word_start == 0 or buf[word_start - 1] == "\n"
    return not (word.isdigit() and at_line_start)

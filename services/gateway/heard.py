"""What the user heard of an answer: its sentences, their audio, and how much went out.

Barge-in and client truncation keep in the history only what was actually said. TTS
reports each sentence (`TtsSegment`) before its audio (`TtsAudio` with the same index);
the connection reports each chunk it really wrote (`CallCore.audio_sent`). The heard text
is every sentence whose audio went out in full, plus the share of the next one that its
sent audio covers (cut back to a word boundary). Sans-I/O.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass
class _Segment:
    index: int
    text: str
    nbytes: int = 0  # audio received for it so far (PCM16 bytes)


def _is_cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def word_count(text: str) -> int:
    """Words of ``text``: space-separated tokens, every CJK character counting as one."""
    count = 0
    for token in text.split():
        cjk = sum(1 for c in token if _is_cjk(c))
        rest = any(c.isalnum() and not _is_cjk(c) for c in token)
        count += cjk + (1 if rest else 0)
    return count


def _join(parts: list[str]) -> str:
    out = ""
    for part in parts:
        part = part.strip()
        if not part:
            continue
        # Chinese sentences follow each other without a space; others need one.
        glue = "" if not out or _is_cjk(out[-1]) or _is_cjk(part[0]) else " "
        out += glue + part
    return out


def _cut(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text``, not ending inside a word."""
    keep = int(len(text) * fraction)
    if keep >= len(text):
        return text
    if keep <= 0:
        return ""
    head = text[:keep]
    if _is_cjk(text[keep - 1]) or text[keep].isspace():
        return head
    # Mid-word: a half-said word was not heard.
    space = head.rfind(" ")
    return head[:space] if space >= 0 else ""


class AnswerAudio:
    """One answer (turn) of the assistant: its sentences and its audio, sent and not."""

    def __init__(self, turn: int, item_id: str, sample_rate: int) -> None:
        self.turn = turn
        self.item_id = item_id
        self.sample_rate = sample_rate
        self.received = 0  # PCM16 bytes that TTS delivered
        self.sent = 0  # PCM16 bytes written to the client
        self._segments: list[_Segment] = []

    def segment(self, index: int, text: str) -> None:
        self._segments.append(_Segment(index, text))

    def audio(self, index: int, nbytes: int) -> None:
        self.received += nbytes
        for seg in reversed(self._segments):
            if seg.index == index:
                seg.nbytes += nbytes
                return
        # Audio without its sentence (a TTS that reports none): it counts, says nothing.
        self._segments.append(_Segment(index, "", nbytes))

    def audio_sent(self, nbytes: int) -> None:
        self.sent = min(self.received, self.sent + nbytes)

    @property
    def played_out(self) -> bool:
        return self.sent >= self.received

    def ms(self, nbytes: int) -> float:
        return nbytes / 2 / self.sample_rate * 1000

    @property
    def sent_ms(self) -> float:
        return self.ms(self.sent)

    @property
    def received_ms(self) -> float:
        return self.ms(self.received)

    def bytes_at(self, ms: float) -> int:
        """PCM16 bytes of the first ``ms`` milliseconds (even, within what was received)."""
        n = int(ms * self.sample_rate / 1000) * 2
        return max(0, min(n, self.received))

    def text_until(self, nbytes: int) -> str:
        """The words whose audio lies within the first ``nbytes`` of the answer."""
        parts: list[str] = []
        left = nbytes
        for seg in self._segments:
            if seg.nbytes == 0:
                break  # a sentence whose audio has not come was not heard
            if left >= seg.nbytes:
                # A sentence still being synthesised counts as heard once all its
                # audio so far went out: the rest of it is not known yet.
                parts.append(seg.text)
                left -= seg.nbytes
                continue
            parts.append(_cut(seg.text, left / seg.nbytes))
            break
        return _join(parts)

    @property
    def heard_text(self) -> str:
        return self.text_until(self.sent)

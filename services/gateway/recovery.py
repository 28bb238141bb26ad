"""What a call needs to survive the loss of a replica, kept by the gateway (sans-I/O).

When a replica that holds one of our calls dies or hangs (`services.gateway.liveness`),
the call is placed on another replica of the same service and brought up to date there:

* ASR: the audio since the last final transcript is replayed from `AsrReplay`, a bounded
  ring of the frames sent. The new replica counts stream time and sentence indexes from
  zero, so `AsrShift` maps its messages back onto the call's own timeline and drops
  sentences the client was already given (a hung replica may wake up and repeat one).
* LLM: the conversation so far is re-opened from `Conversation`, the gateway's copy of
  what was said (it also is what the session store persists), and an answer that was
  being streamed is resumed after the text the client already has.
* TTS: the current answer's text is re-sent from the first sentence that was not fully
  delivered; `SpeechResume` skips the audio of that sentence the client already heard.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from shared.messages import (
    ChatMessage,
    SentenceBegin,
    TranscriptFinal,
    TranscriptPartial,
    VadEvent,
)

# --------------------------------------------------------------------------- ASR


@dataclass(frozen=True)
class SentFrame:
    seq: int
    start_ms: float  # stream time of the frame's first sample
    pcm: bytes  # PCM16 mono 16 kHz
    # Derived once: read several times for every frame of every call.
    duration_ms: float = field(init=False)
    end_ms: float = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "duration_ms", len(self.pcm) / 32.0)
        object.__setattr__(self, "end_ms", self.start_ms + self.duration_ms)


class AsrReplay:
    """Frames sent to ASR since its last checkpoint, at most ``max_ms`` of them."""

    def __init__(self, max_ms: float = 30_000.0) -> None:
        self.max_ms = max_ms
        self._frames: deque[SentFrame] = deque()
        self._ms = 0.0
        self.overflowed = False  # the oldest audio of the utterance could not be kept

    def add(self, frame: SentFrame) -> None:
        self._frames.append(frame)
        self._ms += frame.duration_ms
        while self._ms > self.max_ms and len(self._frames) > 1:
            old = self._frames.popleft()
            self._ms -= old.duration_ms
            self.overflowed = True

    def checkpoint(self, stream_ms: float) -> None:
        """Everything before ``stream_ms`` was transcribed and delivered: forget it."""
        while self._frames and self._frames[0].end_ms <= stream_ms:
            old = self._frames.popleft()
            self._ms -= old.duration_ms
        self.overflowed = False

    def frames(self) -> list[SentFrame]:
        return list(self._frames)

    @property
    def start_ms(self) -> float | None:
        return self._frames[0].start_ms if self._frames else None


AsrResult = VadEvent | SentenceBegin | TranscriptPartial | TranscriptFinal


@dataclass
class AsrShift:
    """Maps a replacement ASR replica's stream time and sentence indexes onto the call's.

    ``offset_ms`` is the call's stream time of the first replayed frame; ``first_index``
    the index the replacement's sentence 0 gets. Sentences at or below the last final
    index already delivered are dropped.
    """

    offset_ms: int = 0
    first_index: int = 0
    last_final_index: int = -1

    def apply(self, msg: AsrResult) -> AsrResult | None:
        o = self.offset_ms
        match msg:
            case VadEvent():
                return msg.model_copy(
                    update={"start_ms": msg.start_ms + o, "end_ms": msg.end_ms + o}
                )
            case SentenceBegin():
                index = msg.index + self.first_index
                if index <= self.last_final_index:
                    return None
                return msg.model_copy(update={"index": index, "begin_ms": msg.begin_ms + o})
            case TranscriptPartial() | TranscriptFinal():
                index = msg.index + self.first_index
                if index <= self.last_final_index:
                    return None
                if isinstance(msg, TranscriptFinal):
                    self.last_final_index = index
                return msg.model_copy(
                    update={"index": index, "begin_ms": msg.begin_ms + o, "end_ms": msg.end_ms + o}
                )

    def rebase(self, offset_ms: int) -> None:
        """A new replica starts: its stream time 0 is ``offset_ms`` of the call's."""
        self.offset_ms = offset_ms
        self.first_index = self.last_final_index + 1


# --------------------------------------------------------------------------- LLM


@dataclass
class Conversation:
    """The gateway's copy of the history, as the services were told it (bounded)."""

    max_messages: int = 200
    messages: list[ChatMessage] = field(default_factory=list)

    def add(self, message: ChatMessage) -> None:
        self.messages.append(message)
        if len(self.messages) > self.max_messages:
            del self.messages[: len(self.messages) - self.max_messages]

    def truncate(self, item_id: str, content: str) -> None:
        for i, m in enumerate(self.messages):
            if m.item_id == item_id:
                if content:
                    self.messages[i] = m.model_copy(update={"content": content})
                else:
                    del self.messages[i]
                return

    def delete(self, item_id: str) -> None:
        self.messages = [m for m in self.messages if m.item_id != item_id]

    def history(self) -> tuple[ChatMessage, ...]:
        return tuple(self.messages)


# --------------------------------------------------------------------------- TTS

_DELIVERED = 0.85  # this much of a sentence's estimated audio: take it as all of it
_MIN_RATE_CHARS = 12  # finished text needed to estimate the audio per character


def _words_until(text: str, fraction: float) -> str:
    """The first ``fraction`` of ``text``, cut after a whole word."""
    end = int(len(text) * max(0.0, min(1.0, fraction)))
    if end >= len(text):
        return text
    space = text.rfind(" ", 0, end + 1)
    return text[:space] if space > 0 else ""


@dataclass
class SpeechResume:
    """Tracks one answer's speech so a replacement TTS replica can pick it up.

    Sentences (segments) of the answer are numbered by the TTS replica that spoke them;
    a sentence is complete once the next one begins. After a loss the text from the first
    incomplete sentence on is spoken again by the replacement, whose sentence 0 is ours
    ``resumed_index``; the audio of that sentence the client already got is skipped.
    """

    text_sent: str = ""  # the whole answer text given to TTS so far
    segments: list[str] = field(default_factory=list)  # texts of sentences begun
    audio_bytes: list[int] = field(default_factory=list)  # audio delivered per sentence
    index_offset: int = 0
    skip_bytes: int = 0  # audio of the resumed sentence still to skip

    def on_text(self, text: str) -> None:
        self.text_sent += text

    def on_segment(self, index: int, text: str) -> int:
        """A sentence began on the current replica; returns its index in the answer."""
        answer_index = index + self.index_offset
        while len(self.segments) <= answer_index:
            self.segments.append("")
            self.audio_bytes.append(0)
        self.segments[answer_index] = text
        return answer_index

    def on_audio(self, index: int, pcm: bytes) -> bytes:
        """Audio of a sentence from the current replica; returns what the client lacks."""
        answer_index = index + self.index_offset
        if answer_index == self.index_offset and self.skip_bytes:
            skipped = min(self.skip_bytes, len(pcm))
            self.skip_bytes -= skipped
            pcm = pcm[skipped:]
        while len(self.audio_bytes) <= answer_index:
            self.segments.append("")
            self.audio_bytes.append(0)
        self.audio_bytes[answer_index] += len(pcm)
        return pcm

    def resume(self, *, estimate: bool = False, bytes_per_char: float | None = None) -> str:
        """Switch to a replacement replica; returns the text it must speak.

        By default the unfinished sentence is spoken again and the audio the client has
        of it is skipped: exact, but the replacement synthesizes the whole sentence before
        anything new comes out (seconds for a long one). With ``estimate`` the sentence's
        length in audio is estimated from the answer's finished sentences (audio bytes
        per character; ``bytes_per_char`` before any sentence finished): a sentence that
        looks delivered is skipped, and one that is not resumes from the word the
        delivered audio reached (a word may be said twice).
        """
        done = max(0, len(self.segments) - 1)  # the last begun sentence may be incomplete
        cursor = 0
        for text in self.segments[:done]:
            found = self.text_sent.find(text.strip(), cursor) if text.strip() else -1
            if found >= 0:
                cursor = found + len(text.strip())
        self.index_offset = done
        # Delivered audio of that sentence stays counted: only what goes beyond it is new.
        self.skip_bytes = self.audio_bytes[done] if done < len(self.audio_bytes) else 0
        del self.segments[done + 1 :]
        rate = (self._bytes_per_char(done) or bytes_per_char) if estimate else None
        current = self.segments[done].strip() if done < len(self.segments) else ""
        found = self.text_sent.find(current, cursor) if current else -1
        if rate is None or found < 0 or not self.skip_bytes:
            return self.text_sent[cursor:]
        fraction = self.skip_bytes / (rate * len(current))
        if fraction >= _DELIVERED:
            self.skip_bytes = 0
            self.index_offset = done + 1  # the replacement starts with the next sentence
            return self.text_sent[found + len(current) :]
        heard = _words_until(current, fraction)
        if not heard:
            return self.text_sent[cursor:]  # not one word yet: say it all, skip the audio
        # The replacement's first sentence continues this one.
        self.skip_bytes = 0
        return self.text_sent[found + len(heard) :]

    def _bytes_per_char(self, done: int) -> float | None:
        chars = sum(len(t.strip()) for t in self.segments[:done])
        audio = sum(self.audio_bytes[:done])
        # Short sentences are mostly the synthesizer's leading and trailing silence.
        return audio / chars if chars >= _MIN_RATE_CHARS and audio else None

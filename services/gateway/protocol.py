"""What a client protocol adapter and the connection layer say to each other.

Each client protocol (Bella, OpenAI Realtime, ...) is a sans-I/O adapter implementing
`ProtocolSession`: client frames in, `Output`s out; call events (`CallEvent`) in, frames
out. The connection layer (`services.gateway.connection`) does the I/O: it places the
call, drives the protocol-neutral `CallCore` with the commands below and writes frames.

Commands map one to one onto `CallCore` methods; an adapter only emits those its
protocol has (Bella: `BeginCall`, `ForwardAudio`, `EndCall`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import JsonValue

from services.gateway.call import CallEvent, CallOptions
from shared.messages import ErrorCode

# --------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class SendText:
    """A text frame for the client."""

    text: str


@dataclass(frozen=True)
class SendBytes:
    """A binary frame for the client (not reply audio: that goes through `render_audio`)."""

    data: bytes


@dataclass(frozen=True)
class AudioOut:
    """Reply audio an adapter held back and sends now (e.g. one WAV per sentence).

    ``render`` or ``render_audio`` may return it: the frame belongs to ``turn`` (dropped
    if the turn is cancelled first) and, once written, counts ``pcm_bytes`` of the
    turn's PCM (at the TTS rate) as heard. `render_audio` frames that are not
    `AudioOut` count the chunk they were made from.
    """

    data: str | bytes
    turn: int
    pcm_bytes: int


@dataclass(frozen=True)
class Refused:
    """A client frame was refused (its error frame is in the same output); for metrics."""

    kind: str


@dataclass(frozen=True)
class CloseConnection:
    """Close the socket after the frames before this one (e.g. a fatal protocol error)."""

    code: int
    reason: str


# --------------------------------------------------------------------------- call commands


@dataclass(frozen=True)
class BeginCall:
    """Assign replicas and open the call with these options.

    ``resume``: ``options.sid`` names an earlier session of the client's to continue
    (its stored settings and history apply); unknown to the client's key: refused.
    """

    options: CallOptions
    resume: bool = False


@dataclass(frozen=True)
class ForwardAudio:
    """Client audio, PCM16 mono at ``CallOptions.client_rate``."""

    pcm: bytes


@dataclass(frozen=True)
class EndCall:
    """The client asked to stop: drain the call (the current answer finishes)."""


@dataclass(frozen=True)
class CommitInput:
    """Manual turn detection: the audio sent so far is one user turn."""


@dataclass(frozen=True)
class ClearInput:
    """Discard audio sent since the last commit (not yet transcribed)."""


@dataclass(frozen=True)
class Respond:
    """Answer now: ``text`` is a user turn to add first; ``None`` answers the history."""

    text: str | None = None


@dataclass(frozen=True)
class CancelResponse:
    """The client cancels the answer in progress (harmless when none is)."""


@dataclass(frozen=True)
class AddUserText:
    """A user message typed rather than spoken, added to the history without answering."""

    text: str
    item_id: str


@dataclass(frozen=True)
class TruncateItem:
    """The client played only ``audio_end_ms`` of an answer: keep what was heard."""

    item_id: str
    audio_end_ms: int


@dataclass(frozen=True)
class DeleteItem:
    item_id: str


@dataclass(frozen=True)
class UpdateCall:
    """Settings changed mid-call; ``None`` leaves a setting as it is."""

    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    voice: str | None = None
    variables: dict[str, JsonValue] | None = None


CallCommand = (
    BeginCall
    | ForwardAudio
    | EndCall
    | CommitInput
    | ClearInput
    | Respond
    | CancelResponse
    | AddUserText
    | TruncateItem
    | DeleteItem
    | UpdateCall
)

Output = SendText | SendBytes | Refused | CloseConnection | CallCommand


# --------------------------------------------------------------------------- the adapter


class ProtocolSession(Protocol):
    """One connection's protocol state (sans-I/O)."""

    protocol: str  # metric label, e.g. "bella", "openai"

    @property
    def stopping(self) -> bool:
        """The client asked to end the call (its silence is not idleness)."""

    def on_text(self, text: str) -> list[Output]: ...

    def on_binary(self, data: bytes) -> list[Output]: ...

    def render(self, event: CallEvent) -> Sequence[str | bytes | AudioOut]:
        """Frames that tell the client about ``event``."""

    def render_audio(
        self, turn: int, pcm: bytes, sample_rate: int
    ) -> Sequence[str | bytes | AudioOut]:
        """Frames carrying reply audio (PCM16 mono at ``sample_rate``) of ``turn``."""

    def started(self) -> list[Output]:
        """The call was placed and opened."""

    def start_failed(self, code: ErrorCode, message: str) -> list[Output]:
        """Placement failed; the connection closes after these outputs."""

    def finished(self) -> None:
        """The call is over (its last events were rendered)."""

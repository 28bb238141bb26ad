"""Server events we send, as pydantic models, and their GA / beta names.

Every model here parses with the official SDK's type of the same event (the unit tests
check each one against ``openai.types.realtime`` and ``openai.types.beta.realtime``).
Events whose name differs between the GA and the beta protocol take the name from
`Names`; the shapes are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, JsonValue


class ServerModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class Names:
    """Event and content names of one protocol version."""

    item_added: Literal["conversation.item.added", "conversation.item.created"]
    audio_delta: Literal["response.output_audio.delta", "response.audio.delta"]
    audio_done: Literal["response.output_audio.done", "response.audio.done"]
    transcript_delta: Literal[
        "response.output_audio_transcript.delta", "response.audio_transcript.delta"
    ]
    transcript_done: Literal[
        "response.output_audio_transcript.done", "response.audio_transcript.done"
    ]
    text_delta: Literal["response.output_text.delta", "response.text.delta"]
    text_done: Literal["response.output_text.done", "response.text.done"]
    audio_content: Literal["output_audio", "audio"]  # an assistant item's audio content
    text_content: Literal["output_text", "text"]


GA = Names(
    item_added="conversation.item.added",
    audio_delta="response.output_audio.delta",
    audio_done="response.output_audio.done",
    transcript_delta="response.output_audio_transcript.delta",
    transcript_done="response.output_audio_transcript.done",
    text_delta="response.output_text.delta",
    text_done="response.output_text.done",
    audio_content="output_audio",
    text_content="output_text",
)
BETA = Names(
    item_added="conversation.item.created",
    audio_delta="response.audio.delta",
    audio_done="response.audio.done",
    transcript_delta="response.audio_transcript.delta",
    transcript_done="response.audio_transcript.done",
    text_delta="response.text.delta",
    text_done="response.text.done",
    audio_content="audio",
    text_content="text",
)

ItemStatus = Literal["in_progress", "completed", "incomplete"]
CancelReason = Literal["turn_detected", "client_cancelled"]
ItemEventType = Literal[
    "conversation.item.added",
    "conversation.item.created",
    "conversation.item.done",
    "conversation.item.retrieved",
]
ResponseStatus = Literal["in_progress", "completed", "cancelled", "failed", "incomplete"]


# --------------------------------------------------------------------------- parts


class Content(ServerModel):
    type: str  # input_audio, input_text, output_audio / audio, output_text / text
    text: str | None = None
    transcript: str | None = None


class Item(ServerModel):
    id: str
    object: Literal["realtime.item"] = "realtime.item"
    type: Literal["message"] = "message"
    status: ItemStatus
    role: Literal["user", "assistant", "system"]
    content: list[Content]


class ErrorDetail(ServerModel):
    type: str
    code: str
    message: str
    param: str | None = None
    event_id: str | None = None


class StatusError(ServerModel):
    type: str
    code: str
    message: str


class StatusDetails(ServerModel):
    type: Literal["completed", "cancelled", "failed", "incomplete"]
    reason: CancelReason | None = None
    error: StatusError | None = None


class Usage(ServerModel):
    total_tokens: int
    input_tokens: int
    output_tokens: int


class Response(ServerModel):
    """A response, with both the GA and the beta settings fields (clients take theirs)."""

    id: str
    object: Literal["realtime.response"] = "realtime.response"
    status: ResponseStatus
    status_details: StatusDetails | None = None
    output: list[Item]
    conversation_id: str | None = None
    usage: Usage | None = None
    # GA
    output_modalities: list[Literal["audio", "text"]] | None = None
    audio: dict[str, JsonValue] | None = None
    # beta
    modalities: list[Literal["audio", "text"]] | None = None
    output_audio_format: str | None = None
    voice: str | None = None


class Part(ServerModel):
    type: Literal["audio", "text"]
    transcript: str | None = None
    text: str | None = None


class DurationUsage(ServerModel):
    type: Literal["duration"] = "duration"
    seconds: float


# --------------------------------------------------------------------------- events


class ServerEvent(ServerModel):
    event_id: str


class SessionEvent(ServerEvent):
    type: Literal["session.created", "session.updated"]
    session: dict[str, Any]


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


class SpeechStarted(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class Committed(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class Cleared(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class ItemEvent(ServerEvent):
    type: ItemEventType
    item: Item
    previous_item_id: str | None = None


class ItemTruncated(ServerEvent):
    type: Literal["conversation.item.truncated"] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


class ItemDeleted(ServerEvent):
    type: Literal["conversation.item.deleted"] = "conversation.item.deleted"
    item_id: str


class TranscriptionDelta(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


class TranscriptionCompleted(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: DurationUsage


class ResponseEvent(ServerEvent):
    type: Literal["response.created", "response.done"]
    response: Response


class OutputItemEvent(ServerEvent):
    type: Literal["response.output_item.added", "response.output_item.done"]
    response_id: str
    output_index: int = 0
    item: Item


class ContentEvent(ServerEvent):
    """An event about one content part of one output item of a response."""

    response_id: str
    item_id: str
    output_index: int = 0
    content_index: int = 0


class ContentPartEvent(ContentEvent):
    type: Literal["response.content_part.added", "response.content_part.done"]
    part: Part


class DeltaEvent(ContentEvent):
    """Audio, audio transcript or text delta (the name says which)."""

    type: Literal[
        "response.output_audio.delta",
        "response.audio.delta",
        "response.output_audio_transcript.delta",
        "response.audio_transcript.delta",
        "response.output_text.delta",
        "response.text.delta",
    ]
    delta: str


class AudioDone(ContentEvent):
    type: Literal["response.output_audio.done", "response.audio.done"]


class TranscriptDone(ContentEvent):
    type: Literal["response.output_audio_transcript.done", "response.audio_transcript.done"]
    transcript: str


class TextDone(ContentEvent):
    type: Literal["response.output_text.done", "response.text.done"]
    text: str


def dump(event: ServerEvent) -> str:
    """The text frame of one server event.

    ``None`` fields are left out, except inside ``session`` objects, where ``null``
    means something (``turn_detection: null`` is manual mode).
    """
    if isinstance(event, SessionEvent):
        return event.model_dump_json()
    return event.model_dump_json(exclude_none=True)

"""Client events of the OpenAI Realtime protocol we accept, as pydantic models.

The official SDKs send more than we act on (tools, tracing, noise reduction...): unknown
fields are ignored (``extra="ignore"``) unless acting on them matters, in which case the
session logic refuses them with a clear error. Types are strict where a wrong type
would otherwise be guessed at (a string where a number belongs is an error).

Two session shapes: the GA one (``session.type``, nested ``audio.input`` /
``audio.output``) and the beta one (flat ``input_audio_format``, ``voice``,
``turn_detection``...), used by clients that connect with ``OpenAI-Beta: realtime=v1``
and by seed 001's ``session.start``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MAX_TEXT_CHARS = 32_000  # instructions and typed messages (the LLM's own limit)
MAX_ID_CHARS = 64
MAX_AUDIO_B64_CHARS = 4 * 1024 * 1024  # one append: 3 MiB of audio (> 60 s of PCM16 24 kHz)

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS)]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class ClientModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)


# --------------------------------------------------------------------------- session (GA)


class TurnDetection(ClientModel):
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=2000)
    silence_duration_ms: int | None = Field(default=None, ge=100, le=5000)
    create_response: bool | None = None
    interrupt_response: bool | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    idle_timeout_ms: int | None = Field(default=None, ge=0)


class Transcription(ClientModel):
    model: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    language: str | None = Field(default=None, max_length=16)
    prompt: Text | None = None


class AudioFormatSpec(ClientModel):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: int | None = None


class AudioInput(ClientModel):
    format: AudioFormatSpec | None = None
    transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None


class VoiceId(ClientModel):
    id: Id


class AudioOutput(ClientModel):
    format: AudioFormatSpec | None = None
    voice: Annotated[str, Field(max_length=MAX_ID_CHARS)] | VoiceId | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)


class AudioConfig(ClientModel):
    input: AudioInput | None = None
    output: AudioOutput | None = None


class GaSession(ClientModel):
    """``session`` of a GA ``session.update`` (realtime or transcription)."""

    type: Literal["realtime", "transcription"] | None = None
    model: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    instructions: Text | None = None
    output_modalities: list[Literal["text", "audio"]] | None = Field(
        default=None, min_length=1, max_length=1
    )
    audio: AudioConfig | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] | None = None
    # Not in the GA schema (the beta one has it); accepted because clients send it.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    tools: list[dict[str, Any]] | None = None


# --------------------------------------------------------------------------- session (beta)


BetaFormat = Literal["pcm16", "g711_ulaw", "g711_alaw"]


class BetaSession(ClientModel):
    """``session`` of a beta ``session.update`` and of seed 001's ``session.start``."""

    model: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    modalities: list[Literal["text", "audio"]] | None = Field(
        default=None, min_length=1, max_length=2
    )
    instructions: Text | None = None
    voice: Annotated[str, Field(max_length=MAX_ID_CHARS)] | None = None
    input_audio_format: BetaFormat | None = None
    output_audio_format: BetaFormat | None = None
    input_audio_transcription: Transcription | None = None
    turn_detection: TurnDetection | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_response_output_tokens: Annotated[int, Field(ge=1, le=4096)] | Literal["inf"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=1.5)
    language: str | None = Field(default=None, max_length=16)  # seed 001
    tools: list[dict[str, Any]] | None = None


# --------------------------------------------------------------------------- items


class ContentPart(ClientModel):
    type: Literal["input_text", "input_audio", "text", "output_text", "audio", "output_audio"]
    text: Text | None = None
    transcript: Text | None = None


class Item(ClientModel):
    """A conversation item a client creates: we take typed user messages."""

    id: Id | None = None
    type: Literal["message", "function_call", "function_call_output"] = "message"
    role: Literal["user", "assistant", "system"] | None = None
    content: list[ContentPart] = Field(default=[], max_length=16)


# --------------------------------------------------------------------------- events


class Event(ClientModel):
    event_id: Id | None = None


class SessionUpdate(Event):
    type: Literal["session.update"]
    session: dict[str, Any]  # GA or beta shape: parsed by the codec, which knows which


class SessionStart(Event):
    type: Literal["session.start"]
    session: BetaSession = BetaSession()


class TranscriptionSessionUpdate(Event):
    """Beta transcription-only sessions."""

    type: Literal["transcription_session.update"]
    session: dict[str, Any]


class AudioAppend(Event):
    type: Literal["input_audio_buffer.append"]
    audio: str = Field(max_length=MAX_AUDIO_B64_CHARS)


class AudioCommit(Event):
    type: Literal["input_audio_buffer.commit"]


class AudioClear(Event):
    type: Literal["input_audio_buffer.clear"]


class ItemCreate(Event):
    type: Literal["conversation.item.create"]
    item: Item
    previous_item_id: Id | None = None


class ItemTruncate(Event):
    type: Literal["conversation.item.truncate"]
    item_id: Id
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ItemDelete(Event):
    type: Literal["conversation.item.delete"]
    item_id: Id


class ItemRetrieve(Event):
    type: Literal["conversation.item.retrieve"]
    item_id: Id


class ResponseParams(ClientModel):
    conversation: str | None = None
    instructions: Text | None = None
    output_modalities: list[Literal["text", "audio"]] | None = None
    modalities: list[Literal["text", "audio"]] | None = None


class ResponseCreate(Event):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(Event):
    type: Literal["response.cancel"]
    response_id: Id | None = None


ClientEvent = Annotated[
    SessionUpdate
    | SessionStart
    | TranscriptionSessionUpdate
    | AudioAppend
    | AudioCommit
    | AudioClear
    | ItemCreate
    | ItemTruncate
    | ItemDelete
    | ItemRetrieve
    | ResponseCreate
    | ResponseCancel,
    Field(discriminator="type"),
]
CLIENT_EVENT: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = frozenset(
    {
        "session.update",
        "session.start",
        "transcription_session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.truncate",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "response.create",
        "response.cancel",
    }
)
GA_SESSION: TypeAdapter[GaSession] = TypeAdapter(GaSession)
BETA_SESSION: TypeAdapter[BetaSession] = TypeAdapter(BetaSession)

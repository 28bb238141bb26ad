"""Client events of the Coze duplex chat protocol, as pydantic models.

Every frame is JSON ``{"id", "event_type", "data"}``. Clients (the Coze SDKs, the
ESP32 board) send more than we act on: documented fields are modelled, unknown extra
fields are tolerated (``extra="ignore"``), and types are checked strictly, so a string
where a number belongs is refused with an ``error`` event rather than guessed at.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Text = Annotated[str, StringConstraints(max_length=64_000)]
Token = Annotated[str, StringConstraints(max_length=256)]


class CozeModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)


# --------------------------------------------------------------------------- chat.update


class ChatConfig(CozeModel):
    conversation_id: Token | None = None  # our extension: also the resumable session id
    user_id: Token | None = None
    auto_save_history: bool = True
    meta_data: dict[str, Any] = {}
    custom_variables: dict[str, Any] = {}  # Jinja2 variables of the persona's prompt
    extra_params: dict[str, Any] = {}
    parameters: dict[str, Any] = {}  # also variables (the ESP32 demo sends these)


class InputAudio(CozeModel):
    format: Literal["pcm", "wav", "ogg"] = "pcm"
    codec: Literal["pcm", "opus", "g711a", "g711u"] = "pcm"
    sample_rate: int | None = None  # None: 16000 for pcm, 8000 for G.711
    channel: int = Field(default=1, ge=1, le=2)
    bit_depth: int = 16


class PcmConfig(CozeModel):
    sample_rate: int = 24000
    frame_size_ms: float | None = Field(default=None, ge=0, le=1000)


class OpusConfig(CozeModel):
    sample_rate: int | None = None
    bitrate: int | None = None
    use_cbr: bool | None = None
    frame_size_ms: float | None = None


class OutputAudio(CozeModel):
    codec: Literal["pcm", "opus", "g711a", "g711u", "mp3"] = "pcm"
    pcm_config: PcmConfig | None = None
    opus_config: OpusConfig | None = None
    speech_rate: int = Field(default=0, ge=-50, le=100)
    loudness_rate: int = Field(default=0, ge=-50, le=100)
    voice_id: Token | None = None


class TurnDetection(CozeModel):
    type: Literal["server_vad", "client_interrupt", "semantic_vad"] = "client_interrupt"
    prefix_padding_ms: int | None = Field(default=None, ge=0, le=2000)
    silence_duration_ms: int | None = Field(default=None, ge=100, le=5000)


class ChatUpdateData(CozeModel):
    chat_config: ChatConfig | None = None
    input_audio: InputAudio | None = None
    output_audio: OutputAudio | None = None
    turn_detection: TurnDetection | None = None
    event_subscriptions: list[Annotated[str, StringConstraints(max_length=100)]] | None = Field(
        default=None, max_length=64
    )
    need_play_prologue: bool = False
    prologue_content: Text | None = None


# --------------------------------------------------------------------------- events


class _Event(CozeModel):
    id: Token = ""


class ChatUpdate(_Event):
    event_type: Literal["chat.update"]
    data: ChatUpdateData = ChatUpdateData()


class AppendData(CozeModel):
    delta: str = Field(max_length=2 * 1024 * 1024)  # base64


class AudioAppend(_Event):
    event_type: Literal["input_audio_buffer.append"]
    data: AppendData


class AudioComplete(_Event):
    event_type: Literal["input_audio_buffer.complete"]


class AudioClear(_Event):
    event_type: Literal["input_audio_buffer.clear"]


class ChatCancel(_Event):
    event_type: Literal["conversation.chat.cancel"]


class MessageData(CozeModel):
    role: Literal["user", "assistant"]
    content_type: Literal["text", "object_string"] = "text"
    content: Text


class MessageCreate(_Event):
    event_type: Literal["conversation.message.create"]
    data: MessageData


class ConversationClear(_Event):
    event_type: Literal["conversation.clear"]


ClientEvent = (
    ChatUpdate
    | AudioAppend
    | AudioComplete
    | AudioClear
    | ChatCancel
    | MessageCreate
    | ConversationClear
)

EVENT_MODELS: dict[str, type[ClientEvent]] = {
    "chat.update": ChatUpdate,
    "input_audio_buffer.append": AudioAppend,
    "input_audio_buffer.complete": AudioComplete,
    "input_audio_buffer.clear": AudioClear,
    "conversation.chat.cancel": ChatCancel,
    "conversation.message.create": MessageCreate,
    "conversation.clear": ConversationClear,
}

# Every downlink event of the protocol (a subscription may name any of them, also the
# few we never send).
SERVER_EVENTS = frozenset(
    {
        "chat.created",
        "chat.updated",
        "conversation.chat.created",
        "conversation.chat.in_progress",
        "conversation.message.delta",
        "conversation.audio_transcript.update",
        "conversation.audio_transcript.completed",
        "conversation.audio.sentence_start",
        "conversation.audio.delta",
        "conversation.audio.completed",
        "conversation.message.completed",
        "conversation.chat.completed",
        "conversation.chat.canceled",
        "conversation.chat.failed",
        "conversation.chat.requires_action",
        "conversation.cleared",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.completed",
        "input_audio_buffer.cleared",
        "error",
    }
)

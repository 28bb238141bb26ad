"""Every message that crosses NATS, one frozen pydantic model each.

The bus carries a discriminated union on the ``type`` field; `shared.codec` turns
any of these into msgpack bytes and back. Session id (``sid``) and sequence
numbers live in the body, not in NATS headers: headers cost ~40% of publish
throughput in nats-py (see ARCHITECTURE.md).

Families, by direction:

* control plane: `AssignRequest` -> `AssignReply` (request/reply on ``<svc>.assign``)
* gateway -> ASR replica: `AsrOpen`, `AudioFrame`, `AsrCommit`, `AsrClose`
* ASR -> session: `VadEvent`, `SentenceBegin`, `TranscriptPartial`, `TranscriptFinal`
* gateway -> LLM replica: `LlmOpen`, `LlmTurn`, `LlmUpdate`, `LlmEdit`, `LlmClose`
* LLM -> session: `LlmBegin`, `LlmDelta`, `LlmEnd`, `LlmWorkerEvent`
* gateway -> TTS replica: `TtsOpen`, `TtsText`, `TtsUpdate`, `TtsClose`
* TTS -> session: `TtsBegin`, `TtsSegment`, `TtsAudio`, `TtsEnd`
* any direction: `Cancel` (on the control subject, ahead of data), `ServiceError`,
  `SessionClosed`
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter


class WireModel(BaseModel):
    """Base of every wire message: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ServiceName(StrEnum):
    ASR = "asr"
    LLM = "llm"
    TTS = "tts"


class ErrorCode(StrEnum):
    """Stable error codes peers may rely on (never a repr or a traceback)."""

    OVERLOADED = "overloaded"
    BAD_REQUEST = "bad_request"
    UNKNOWN_SESSION = "unknown_session"
    ENGINE_FAILED = "engine_failed"
    TIMEOUT = "timeout"
    INTERNAL = "internal"
    UNKNOWN_MODEL = "unknown_model"  # no configured backend serves the requested model


# --------------------------------------------------------------------------- control plane


class AssignRequest(WireModel):
    """Ask for a replica; ``models`` are the model names the call will use there.

    A replica that has no backend for one of them refuses with ``UNKNOWN_MODEL``, so a
    bad model name fails the call at its start, not in the middle of it.
    """

    type: Literal["assign"] = "assign"
    sid: str
    models: tuple[str, ...] = ()


class AssignReply(WireModel):
    type: Literal["assign_reply"] = "assign_reply"
    sid: str
    replica: str
    ok: bool = True
    code: ErrorCode | None = None
    message: str = ""


# --------------------------------------------------------------------------- ASR


class VadOptions(WireModel):
    """Server VAD settings; defaults follow SPEC section 2."""

    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=2000)
    silence_duration_ms: int = Field(default=500, ge=100, le=5000)
    min_speech_ms: int = Field(default=150, ge=0, le=5000)


class AsrOpen(WireModel):
    type: Literal["asr.open"] = "asr.open"
    sid: str
    vad: VadOptions = VadOptions()
    language: str | None = None
    partials: bool = True
    manual: bool = False  # client commits turns; no server endpointing
    model: str | None = None  # routing-table name; None: the replica's default engine


class AudioFrame(WireModel):
    """PCM16 mono 16 kHz, already resampled by the gateway."""

    type: Literal["audio"] = "audio"
    sid: str
    seq: int
    pcm: bytes


class AsrCommit(WireModel):
    """Manual mode: end the current utterance now."""

    type: Literal["asr.commit"] = "asr.commit"
    sid: str


class AsrClose(WireModel):
    """Stop the session; with ``flush`` a pending utterance is finalized first."""

    type: Literal["asr.close"] = "asr.close"
    sid: str
    flush: bool = True


class VadState(StrEnum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"
    PAUSING = "pausing"


class VadEvent(WireModel):
    type: Literal["vad"] = "vad"
    sid: str
    state: VadState
    start_ms: int
    end_ms: int
    timestamp: float  # wall clock of the ASR replica when it decided


class SentenceBegin(WireModel):
    type: Literal["sentence.begin"] = "sentence.begin"
    sid: str
    index: int
    begin_ms: int


class TranscriptPartial(WireModel):
    type: Literal["transcript.partial"] = "transcript.partial"
    sid: str
    index: int
    begin_ms: int
    end_ms: int
    text: str


class TranscriptFinal(WireModel):
    type: Literal["transcript.final"] = "transcript.final"
    sid: str
    index: int
    begin_ms: int
    end_ms: int  # stream time of the last voiced audio of the utterance
    text: str
    language: str = ""
    confidence: float = 0.0
    decode_ms: float = 0.0  # wall time the decoder took after end of speech


# --------------------------------------------------------------------------- LLM


class ChatMessage(WireModel):
    role: Literal["system", "user", "assistant"]
    content: str
    item_id: str = ""  # the client protocol's id of this history entry, if it has one


class VariableType(StrEnum):
    TEXT = "text"
    JSON = "json"


class WorkerSpec(WireModel):
    """A Bella ``llm_option.workers[]`` entry: a prompt run around the main model.

    ``sys_prompt`` and ``prompt`` are Jinja2 templates (rendered sandboxed by the LLM
    service) over ``history_messages``, ``user_message`` and ``variables``. A blocking
    worker runs before the main model and its output becomes ``variables[variable_name]``;
    a non-blocking one runs alongside and only reports.
    """

    model: str | None = None
    blocking: bool = True
    variable_name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    variable_type: VariableType = VariableType.TEXT
    sys_prompt: str = Field(default="", max_length=32_000)
    prompt: str = Field(default="", max_length=32_000)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=256, ge=1, le=4096)
    json_schema: dict[str, JsonValue] | None = None


class LlmOpen(WireModel):
    """Open a conversation. ``system_prompt`` and ``prompt`` are Jinja2 templates.

    ``prompt`` renders the user's turn for the main model (``None``: the user's words as
    they are); ``variables`` are the session's template variables.
    """

    type: Literal["llm.open"] = "llm.open"
    sid: str
    model: str | None = None  # routing-table name; None: the replica's default engine
    system_prompt: str = Field(default="", max_length=32_000)
    prompt: str | None = Field(default=None, max_length=32_000)
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    workers: tuple[WorkerSpec, ...] = Field(default=(), max_length=8)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_history: int = Field(default=20, ge=0, le=200)
    max_tokens: int = Field(default=256, ge=1, le=4096)
    history: tuple[ChatMessage, ...] = ()


class LlmTurn(WireModel):
    """Answer a user turn. ``text=None``: answer the conversation as it stands.

    The user's words (if any) and the answer enter the history under the given item ids.
    """

    type: Literal["llm.turn"] = "llm.turn"
    sid: str
    turn: int
    text: str | None
    user_item_id: str = ""
    assistant_item_id: str = ""
    # Failover: the answer's start the client already has (from a replica that was lost);
    # the model continues after it instead of starting over.
    resume: str = ""


class LlmUpdate(WireModel):
    """Change a running conversation's settings; ``None`` leaves a field as it is."""

    type: Literal["llm.update"] = "llm.update"
    sid: str
    system_prompt: str | None = Field(default=None, max_length=32_000)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)


class HistoryOp(StrEnum):
    APPEND = "append"  # add ``message`` at the end
    TRUNCATE = "truncate"  # the entry ``item_id`` now reads ``content`` (what was heard)
    DELETE = "delete"  # remove the entry ``item_id``


class LlmEdit(WireModel):
    """Edit the conversation history (barge-in truncation, client item operations).

    A truncation to an empty ``content`` removes the entry: an answer nobody heard was
    never said.
    """

    type: Literal["llm.edit"] = "llm.edit"
    sid: str
    op: HistoryOp
    item_id: str = ""
    content: str = ""
    message: ChatMessage | None = None  # APPEND only


class LlmClose(WireModel):
    type: Literal["llm.close"] = "llm.close"
    sid: str


class LlmBegin(WireModel):
    type: Literal["llm.begin"] = "llm.begin"
    sid: str
    turn: int


class LlmDelta(WireModel):
    type: Literal["llm.delta"] = "llm.delta"
    sid: str
    turn: int
    seq: int
    text: str


class LlmEnd(WireModel):
    type: Literal["llm.end"] = "llm.end"
    sid: str
    turn: int
    text: str
    ttft_ms: float
    tokens: int = 0


class WorkerStatus(StrEnum):
    BEGIN = "begin"
    END = "end"
    CANCELLED = "cancelled"
    ERROR = "error"


class LlmWorkerEvent(WireModel):
    """A worker of the chain started, finished, was cancelled or failed for ``turn``.

    ``result`` is the worker's output (``END``; JSON workers: the JSON text);
    ``message`` says what went wrong (``ERROR``). A failed worker never fails the turn.
    """

    type: Literal["llm.worker"] = "llm.worker"
    sid: str
    turn: int
    variable_name: str
    status: WorkerStatus
    result: str | None = None
    message: str = ""


# --------------------------------------------------------------------------- TTS


class TtsOpen(WireModel):
    type: Literal["tts.open"] = "tts.open"
    sid: str
    voice: str | None = None
    sample_rate: int = Field(default=24000, ge=8000, le=48000)
    model: str | None = None  # routing-table name; None: the replica's default engine


class TtsUpdate(WireModel):
    """Change the voice of a running session, from the next turn on."""

    type: Literal["tts.update"] = "tts.update"
    sid: str
    voice: str


class TtsText(WireModel):
    """A piece of the answer's text as the LLM streams it; ``final`` ends the turn."""

    type: Literal["tts.text"] = "tts.text"
    sid: str
    turn: int
    seq: int
    text: str
    final: bool = False


class TtsClose(WireModel):
    type: Literal["tts.close"] = "tts.close"
    sid: str


class TtsBegin(WireModel):
    type: Literal["tts.begin"] = "tts.begin"
    sid: str
    turn: int


class TtsSegment(WireModel):
    """A sentence starts; its audio follows as `TtsAudio` with the same ``index``."""

    type: Literal["tts.segment"] = "tts.segment"
    sid: str
    turn: int
    index: int
    text: str


class TtsAudio(WireModel):
    """PCM16 mono at the session's rate."""

    type: Literal["tts.audio"] = "tts.audio"
    sid: str
    turn: int
    index: int
    seq: int
    pcm: bytes
    sample_rate: int


class TtsEnd(WireModel):
    type: Literal["tts.end"] = "tts.end"
    sid: str
    turn: int
    segments: int
    audio_ms: float


# --------------------------------------------------------------------------- any direction


class Cancel(WireModel):
    """Stop the work of ``turn`` (or every turn up to it) for this session."""

    type: Literal["cancel"] = "cancel"
    sid: str
    turn: int


class ServiceError(WireModel):
    type: Literal["error"] = "error"
    sid: str
    service: ServiceName
    code: ErrorCode
    message: str
    turn: int | None = None


class SessionClosed(WireModel):
    """A service finished a session (after a flush, if one was asked)."""

    type: Literal["session.closed"] = "session.closed"
    sid: str
    service: ServiceName


# Bulk messages: the real-time streams (a call's audio, its spoken answer). The bus may
# hold them for a few milliseconds and send those of one subject as one `Batch`.
BulkMessage = Annotated[AudioFrame | TtsAudio, Field(discriminator="type")]
BULK_TYPES: tuple[type[WireModel], ...] = (AudioFrame, TtsAudio)
MAX_BATCH_ITEMS = 4096


class Batch(WireModel):
    """Bulk messages of one subject, in publish order, sent as one NATS message.

    Only the bus builds and opens batches: subscribers see the items one by one.
    """

    type: Literal["batch"] = "batch"
    items: list[BulkMessage] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


Message = Annotated[
    AssignRequest
    | AssignReply
    | AsrOpen
    | AudioFrame
    | AsrCommit
    | AsrClose
    | VadEvent
    | SentenceBegin
    | TranscriptPartial
    | TranscriptFinal
    | LlmOpen
    | LlmTurn
    | LlmUpdate
    | LlmEdit
    | LlmClose
    | LlmBegin
    | LlmDelta
    | LlmEnd
    | LlmWorkerEvent
    | TtsOpen
    | TtsUpdate
    | TtsText
    | TtsClose
    | TtsBegin
    | TtsSegment
    | TtsAudio
    | TtsEnd
    | Cancel
    | ServiceError
    | SessionClosed
    | Batch,
    Field(discriminator="type"),
]

MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)

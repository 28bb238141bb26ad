"""Client messages of the Bella realtime protocol, as pydantic models.

Clients (the reference Java and TypeScript demos) send more than we act on; every
documented field is modelled, unknown extra fields are tolerated (``extra="ignore"``),
and types are checked strictly: a string where a number belongs is refused with
`TaskFailed` rather than guessed at.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAMESPACE = "SpeechTranscriber"
CLIENT_RATES = (8000, 16000, 24000, 48000)


class BellaModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)


class Header(BellaModel):
    name: str
    namespace: str = NAMESPACE
    # Bounded: ``task_id`` is echoed in every event of the task, so an unbounded one would
    # turn one large Start frame into megabytes of output (the reference uses 32 hex digits).
    message_id: str = Field(default="", max_length=128)
    task_id: str = Field(default="", max_length=128)
    appkey: str = Field(default="", max_length=128)


class LlmMain(BellaModel):
    model: str | None = None
    sys_prompt: str | None = None
    prompt: str | None = None  # Jinja2 template rewriting the user message
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)


class LlmWorker(BellaModel):
    """A worker prompt run around the main model; `services.llm.chain` runs it.

    ``variable_type`` is ``text`` (also ``string``/``str``) or ``json`` (also
    ``object``); without one, a worker with a ``json_schema`` is ``json``. A
    ``json_schema`` may be an object or JSON text.
    """

    model: str | None = None
    blocking: bool = False
    variable_name: str | None = None
    variable_type: str | None = None
    sys_prompt: str | None = None
    prompt: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    json_schema: dict[str, Any] | str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=4096)  # our extension; default 256


class LlmOption(BellaModel):
    main: LlmMain | None = None
    workers: list[LlmWorker] = []


class TtsOption(BellaModel):
    model: str | None = None
    voice: str | None = None
    sample_rate: int = Field(default=24000, ge=8000, le=48000)


class StartPayload(BellaModel):
    format: str = "pcm"
    sample_rate: int = 16000
    enable_intermediate_result: bool = False
    enable_punctuation_prediction: bool = True
    enable_inverse_text_normalization: bool = True
    max_sentence_silence: int | None = Field(default=None, ge=100, le=5000)  # ms
    variables: dict[str, Any] = {}
    llm_option: LlmOption | None = None
    tts_option: TtsOption | None = None
    # Our extension: a persona preset ("qingqing", "qingqing:en"); see docs/conversation.md.
    persona: str | None = Field(default=None, max_length=100)
    # Our extension: the ``session_id`` of an earlier TranscriptionStarted to continue
    # that conversation (within the resume grace period; docs/resume.md).
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,128}$")

    @field_validator("format")
    @classmethod
    def _pcm_only(cls, value: str) -> str:
        if value.lower() != "pcm":
            raise ValueError(f"unsupported format {value!r}: only 'pcm' is supported")
        return "pcm"

    @field_validator("sample_rate")
    @classmethod
    def _known_rate(cls, value: int) -> int:
        if value not in CLIENT_RATES:
            raise ValueError(
                f"unsupported sample_rate {value}: use one of {', '.join(map(str, CLIENT_RATES))}"
            )
        return value


class StartTranscription(BellaModel):
    header: Header
    payload: StartPayload = StartPayload()


class StopTranscription(BellaModel):
    header: Header
    payload: dict[str, Any] = {}


class Ping:
    """The text frame ``ping``, answered ``pong``."""


PING = Ping()
ClientCommand = StartTranscription | StopTranscription | Ping

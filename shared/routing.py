"""The model routing table: which backend serves a model name, per service.

A call names its models (Bella ``llm_option.main.model``, ``tts_option.model``,
worker models, an ASR model); each replica looks the name up here. A name maps to

* ``embedded``: the replica's own offline engine (Whisper, Qwen via llama.cpp,
  Piper/espeak-ng), or
* ``openai``: a remote server speaking the OpenAI-compatible HTTP APIs
  (``/v1/chat/completions``, ``/v1/audio/transcriptions``, ``/v1/audio/speech``):
  vLLM, Ollama, llama.cpp's server, DashScope compatible mode, Volcengine Ark, OpenAI.

The table is a TOML file (``VOICE_MODELS_FILE``)::

    [defaults]            # what a call that names no model gets (optional)
    llm = "qwen-flash"

    [llm.qwen-flash]
    backend = "openai"
    base_url = "https://dashscope.aliyuncs.com/compatible-mode/v1"
    model = "qwen-flash"              # the name at the provider
    api_key_env = "DASHSCOPE_API_KEY" # the key itself never sits in the file

The embedded engines are always in the table under their own names
(`EMBEDDED_MODELS`), so a replica with no file serves exactly what it always did.
Everything here is pure: reading the file and the environment happens in
`load_routing` and `HttpRoute.api_key`, called once at start-up.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError
from shared.messages import ServiceName

EMBEDDED_MODELS: dict[ServiceName, str] = {
    ServiceName.ASR: "whisper-base",
    ServiceName.LLM: "qwen2.5-0.5b",
    ServiceName.TTS: "embedded",
}
"""The name each service's embedded engine is known by; always routed."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmbeddedRoute(_Strict):
    """The replica's own offline engine."""

    backend: Literal["embedded"] = "embedded"


class HttpRoute(_Strict):
    """What every OpenAI-compatible endpoint needs: where, who, how long, how often."""

    backend: Literal["openai"]
    base_url: str  # up to and including the version path, e.g. "http://127.0.0.1:8000/v1"
    model: str  # the model's name at the provider
    api_key_env: str | None = None  # None: no Authorization header (local servers)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    # Longest silence between two bytes of a response (a stalled stream).
    read_timeout_s: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_s: float = Field(default=0.25, ge=0)  # doubled per attempt
    max_retry_after_s: float = Field(default=10.0, ge=0)  # cap on a server's Retry-After
    max_connections: int = Field(default=16, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    extra_body: dict[str, JsonValue] = Field(default_factory=dict)  # merged into each request

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(
                "api_key_env names an environment variable (e.g. DASHSCOPE_API_KEY); "
                "never put the key itself in the file"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _no_auth_header(cls, value: dict[str, str]) -> dict[str, str]:
        if any(k.lower() == "authorization" for k in value):
            raise ValueError("set the key through api_key_env, not an Authorization header")
        return value

    def api_key(self) -> str | None:
        """The key from the environment; raises `ConfigError` if the variable is unset."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise ConfigError(
                f"model {self.model!r} at {self.base_url} needs ${self.api_key_env}, "
                "which is not set"
            )
        return key


class ChatRoute(HttpRoute):
    """``/v1/chat/completions`` (streamed)."""


class TranscriptionRoute(HttpRoute):
    """``/v1/audio/transcriptions``: one request per endpointed utterance."""

    language: str | None = None  # None: the session's language, else the server detects
    prompt: str | None = None
    # Utterances transcribed at once by one replica for this model.
    concurrency: int = Field(default=8, ge=1, le=256)


class SpeechRoute(HttpRoute):
    """``/v1/audio/speech``: one request per text segment, the audio streamed back."""

    response_format: Literal["pcm", "wav"] = "pcm"
    sample_rate: int = Field(default=24000, ge=8000, le=48000)  # of "pcm" responses
    # Session voice name -> the provider's voice; a name not listed is refused.
    voices: dict[str, str] = Field(default_factory=dict)
    default_voice: str  # the provider's voice for a session that names none (or "auto")
    speed: float | None = Field(default=None, gt=0.25, le=4.0)

    def provider_voice(self, name: str | None) -> str:
        """The provider's voice for a session's ``name``; raises `KeyError` if unmapped."""
        if name is None or name.strip().lower() in ("", "auto", "default"):
            return self.default_voice
        if name in self.voices:
            return self.voices[name]
        lowered = {k.lower(): v for k, v in self.voices.items()}
        return lowered[name.strip().lower()]


AsrRoute = Annotated[EmbeddedRoute | TranscriptionRoute, Field(discriminator="backend")]
LlmRoute = Annotated[EmbeddedRoute | ChatRoute, Field(discriminator="backend")]
TtsRoute = Annotated[EmbeddedRoute | SpeechRoute, Field(discriminator="backend")]
Route = EmbeddedRoute | TranscriptionRoute | ChatRoute | SpeechRoute


class Defaults(_Strict):
    """The model a call gets when it names none; unset: the embedded engine."""

    asr: str | None = None
    llm: str | None = None
    tts: str | None = None


class RoutingTable(_Strict):
    """Model name -> route, per service; build with `load_routing` or `parse_routing`."""

    defaults: Defaults = Field(default_factory=Defaults)
    asr: dict[str, AsrRoute] = Field(default_factory=dict)
    llm: dict[str, LlmRoute] = Field(default_factory=dict)
    tts: dict[str, TtsRoute] = Field(default_factory=dict)

    def routes(self, service: ServiceName) -> dict[str, Route]:
        table: dict[str, Route]
        match service:
            case ServiceName.ASR:
                table = dict(self.asr)
            case ServiceName.LLM:
                table = dict(self.llm)
            case ServiceName.TTS:
                table = dict(self.tts)
        return table

    def models(self, service: ServiceName) -> frozenset[str]:
        """Every name ``service`` serves (the embedded one included)."""
        return frozenset(self.routes(service))

    def default_model(self, service: ServiceName) -> str:
        name: str | None = getattr(self.defaults, service.value)
        return name if name is not None else EMBEDDED_MODELS[service]

    def resolve(self, service: ServiceName, name: str | None) -> tuple[str, Route]:
        """``(name, route)`` for a requested model (None: the default); `KeyError` if unknown."""
        key = self.default_model(service) if name is None else name
        return key, self.routes(service)[key]


def _with_embedded(table: RoutingTable) -> RoutingTable:
    """Add the embedded engines and check every default names a route."""
    merged: dict[str, dict[str, Route]] = {}
    for service, embedded in EMBEDDED_MODELS.items():
        routes = table.routes(service)
        existing = routes.get(embedded)
        if existing is not None and not isinstance(existing, EmbeddedRoute):
            raise ConfigError(
                f"[{service.value}.{embedded}] is the embedded engine's name; "
                "give the remote model another name"
            )
        routes[embedded] = EmbeddedRoute()
        default = getattr(table.defaults, service.value)
        if default is not None and default not in routes:
            raise ConfigError(
                f"defaults.{service.value} = {default!r} names no [{service.value}.*] model"
            )
        merged[service.value] = routes
    return table.model_copy(update=merged)


def parse_routing(data: dict[str, object], *, source: str = "<config>") -> RoutingTable:
    """Validate a parsed TOML document; raises `ConfigError` naming what is wrong."""
    try:
        table = RoutingTable.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"bad model routing table {source}: {problems}") from exc
    return _with_embedded(table)


def embedded_only() -> RoutingTable:
    """The table of a replica without a configuration file."""
    return _with_embedded(RoutingTable())


def load_routing(path: Path | None) -> RoutingTable:
    """Read the TOML table at ``path`` (None: embedded engines only)."""
    if path is None:
        return embedded_only()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"model routing table not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"model routing table {path} is not valid TOML: {exc}") from exc
    return parse_routing(data, source=str(path))


class RoutingSettings(BaseSettings):
    """``VOICE_MODELS_FILE``: the routing table every replica of the deployment reads."""

    model_config = SettingsConfigDict(env_prefix="VOICE_", extra="ignore")

    models_file: Path | None = None

    def load(self) -> RoutingTable:
        return load_routing(self.models_file)

"""Gateway settings, read once from ``GATEWAY_*`` (and the common ``NATS_URL``/``VOICE_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.settings import CommonSettings


class GatewaySettings(CommonSettings):
    """``GATEWAY_HOST``, ``GATEWAY_PORT``, ``GATEWAY_API_KEYS`` (comma-separated), limits."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # NoDecode: the variable is a plain comma-separated list, not JSON.
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    # A secrets file (one key per line, ``#`` comments), re-read when it changes.
    api_keys_file: Path | None = None
    # A 100 ms frame at 48 kHz is 9.6 KB; a Start with long prompts stays far below this.
    max_frame_bytes: int = Field(default=256 * 1024, ge=4096)
    max_call_s: float = Field(default=3600.0, gt=0)
    # Seconds without client audio before a call is closed; the name of the voice-call
    # service this replaces is accepted too (docs/conversation.md).
    idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices("GATEWAY_IDLE_TIMEOUT_S", "VOICE_CALL_IDLE_TIMEOUT"),
    )
    # Conversation history kept per call, in messages (user and assistant each count).
    max_history: int = Field(
        default=20,
        ge=0,
        le=200,
        validation_alias=AliasChoices("GATEWAY_MAX_HISTORY", "VOICE_CALL_MAX_HISTORY"),
    )
    # Persona preset for sessions that name none ("" = the LLM's plain voice assistant),
    # e.g. "qingqing" or "qingqing:en"; see services/gateway/personas.py.
    default_persona: str = ""
    max_calls_per_key: int = Field(default=20, ge=1)
    # Per-connection client frame budgets (services.gateway.ratelimit): ~10x real-time
    # 48 kHz audio, with bursts of ``rate_burst_s`` seconds for uploads faster than real time.
    max_frames_per_s: float = Field(default=200.0, gt=0)
    max_bytes_per_s: float = Field(default=1024 * 1024, gt=0)
    rate_burst_s: float = Field(default=5.0, gt=0)
    drain_grace_s: float = Field(default=20.0, ge=0)
    # How long a session outlives its connection and can be resumed (docs/resume.md).
    resume_grace_s: float = Field(default=60.0, gt=0, le=86400)
    # This replica's name as the owner of its sessions ("": a random one at start).
    replica_id: str = Field(default="", max_length=64)
    # How long a stopped call may take to finish its last answer before it is cut.
    stop_timeout_s: float = Field(default=30.0, gt=0)
    # Frames waiting for a client; a client that lets this many pile up is not reading.
    outbound_queue: int = Field(default=512, ge=8)
    # Service messages waiting for one call's core; the producer (NATS callback) blocks.
    inbound_queue: int = Field(default=512, ge=8)
    assign_timeout_s: float = Field(default=2.0, gt=0)
    # A send that cannot get into the socket for this long means the client stopped reading.
    send_timeout_s: float = Field(default=5.0, gt=0)
    close_timeout_s: float = Field(default=2.0, gt=0)
    # Barge-in: speech over an answer cuts it once it lasted this long and holds this many
    # recognised words (backchannels such as "mhm" must not); ``resume`` holds the answer's
    # audio meanwhile and plays it on after a false alarm.
    barge_in_min_speech_ms: int = Field(default=300, ge=0, le=5000)
    barge_in_min_words: int = Field(default=0, ge=0, le=20)
    barge_in_resume: bool = False

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

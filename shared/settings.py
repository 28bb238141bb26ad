"""Settings common to every process, read once from the environment at the edge."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.bus import BusOptions
from shared.eventloop import EventLoop


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


class CommonSettings(BaseSettings):
    """``NATS_URL``, ``VOICE_DATA_DIR``, ``VOICE_LOG_LEVEL``, ``VOICE_LOG_JSON``,
    ``VOICE_BUS_LINGER_MS``, ``VOICE_EVENT_LOOP``."""

    model_config = SettingsConfigDict(env_prefix="VOICE_", extra="ignore", populate_by_name=True)

    nats_url: str = Field(
        default="nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL", "VOICE_NATS_URL")
    )
    # Explicit aliases: a subclass's own env_prefix (ASR_, LLM_...) must not hide these.
    data_dir: Path = Field(
        default_factory=lambda: project_root() / ".data",
        validation_alias=AliasChoices("VOICE_DATA_DIR"),
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("VOICE_LOG_LEVEL"))
    log_json: bool = Field(default=False, validation_alias=AliasChoices("VOICE_LOG_JSON"))
    event_loop: EventLoop = Field(
        default=EventLoop.UVLOOP, validation_alias=AliasChoices("VOICE_EVENT_LOOP")
    )
    # How long audio waits on the bus to travel with other audio of its subject (0: never).
    bus_linger_ms: float = Field(
        default=5.0, ge=0.0, le=50.0, validation_alias=AliasChoices("VOICE_BUS_LINGER_MS")
    )

    @property
    def model_cache(self) -> Path:
        return self.data_dir / "models"

    def bus_options(self, name: str) -> BusOptions:
        return BusOptions(url=self.nats_url, name=name, bulk_linger_s=self.bus_linger_ms / 1000)


class WorkerSettings(CommonSettings):
    """Settings of an ASR/LLM/TTS replica; subclasses set their own env prefix."""

    health_host: str = "127.0.0.1"
    health_port: int = 0  # 0: an ephemeral port, printed at start
    max_sessions: int = Field(default=8, ge=1)
    replica_name: str = ""  # informative only; the replica id comes from nats.micro

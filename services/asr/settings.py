"""``ASR_*`` settings of an ASR replica, read once in ``__main__``."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from services.asr.decoder import DecodeOptions
from shared.settings import WorkerSettings, project_root


class AsrSettings(WorkerSettings):
    """Replica settings; ``ASR_`` prefix (``ASR_MAX_SESSIONS``, ``ASR_MODEL_DIR``...).

    The data directory and logging also honour the project-wide ``VOICE_*`` names, so
    one ``VOICE_DATA_DIR`` serves every service.
    """

    model_config = SettingsConfigDict(env_prefix="ASR_", extra="ignore")

    data_dir: Path = Field(
        default_factory=lambda: project_root() / ".data",
        validation_alias=AliasChoices("ASR_DATA_DIR", "VOICE_DATA_DIR"),
    )
    log_level: str = Field(
        default="INFO", validation_alias=AliasChoices("ASR_LOG_LEVEL", "VOICE_LOG_LEVEL")
    )
    log_json: bool = Field(
        default=False, validation_alias=AliasChoices("ASR_LOG_JSON", "VOICE_LOG_JSON")
    )

    # A user's own CTranslate2 Whisper directory; unset: the verified packaged base model.
    model_dir: Path | None = None
    threads: int = Field(default=2, ge=1, le=64)
    decode_workers: int = Field(default=1, ge=1, le=8)
    beam_size: int = Field(default=1, ge=1, le=10)
    warm_up: bool = True

    partial_interval_ms: int = Field(default=400, ge=100)
    # Start the speculative final decode this long after a pause begins (0: at once).
    speculate_after_ms: int = Field(default=0, ge=0)
    max_utterance_ms: int = Field(default=28_000, ge=1_000, le=29_000)
    vad_unsure_margin: float = Field(default=0.15, ge=0.0, le=0.5)

    tokens_per_second: float = Field(default=8.0, gt=0)
    min_new_tokens: int = Field(default=16, ge=1)
    max_new_tokens: int = Field(default=224, ge=8, le=400)
    guard_base_s: float = Field(default=2.0, gt=0)
    guard_per_audio_s: float = Field(default=1.0, ge=0)
    no_speech_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    # Shortest encoder input in seconds (30: Whisper's stock padding, slowest, most robust).
    min_context_s: float = Field(default=10.0, ge=1.0, le=30.0)
    # Partials' encoder context; unset: the finals' (a partial decode can then be adopted
    # as the final's when a pause follows it).
    partial_context_s: float | None = Field(default=None, ge=1.0, le=30.0)
    # Auto-detect sessions keep the language of a final detected this confidently.
    language_lock_probability: float = Field(default=0.7, ge=0.0, le=1.0)

    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(
            beam_size=self.beam_size,
            tokens_per_second=self.tokens_per_second,
            min_new_tokens=self.min_new_tokens,
            max_new_tokens=self.max_new_tokens,
            guard_base_s=self.guard_base_s,
            guard_per_audio_s=self.guard_per_audio_s,
            no_speech_threshold=self.no_speech_threshold,
            min_context_s=self.min_context_s,
        )

"""``BENCH_FIXED_*`` settings: the delays the fixed-delay engines simulate."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import WorkerSettings


class FixedSettings(WorkerSettings):
    """One set for the three services (each replica reads the part it needs)."""

    model_config = SettingsConfigDict(env_prefix="BENCH_FIXED_", extra="ignore")

    # A benchmark replica is limited by the bus, not by a model: let it take many calls.
    max_sessions: int = Field(default=2000, ge=1)
    log_level: str = "WARNING"

    # ASR: a frame is voiced when its RMS (int16 units) reaches this; the endpointer
    # (the real service's, fed one decision per window) turns that into utterances.
    energy_threshold: float = Field(default=300.0, gt=0)
    window_ms: int = Field(default=20, ge=10, le=100)
    asr_final_ms: float = Field(default=150.0, ge=0)  # end of utterance -> TranscriptFinal
    transcript: str = "this is a fixed delay transcript"

    # LLM: LlmBegin at once, the first delta after ``llm_ttft_ms``, then ``llm_tokens``
    # deltas in all at ``llm_tokens_per_s``.
    llm_ttft_ms: float = Field(default=250.0, ge=0)
    llm_tokens: int = Field(default=12, ge=1, le=1000)
    llm_tokens_per_s: float = Field(default=40.0, gt=0)

    # TTS: the first audio ``tts_ttfb_ms`` after a turn's first text, then audio in real
    # time, ``tts_ms_per_char`` of it per character of text, in ``tts_chunk_ms`` chunks.
    tts_ttfb_ms: float = Field(default=150.0, ge=0)
    tts_ms_per_char: float = Field(default=25.0, gt=0)
    tts_chunk_ms: int = Field(default=100, ge=10, le=1000)

"""Settings of an LLM replica, read once from ``LLM_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from shared.settings import WorkerSettings, project_root


class LlmSettings(WorkerSettings):
    """``LLM_MODEL_PATH``, ``LLM_THREADS``, ``LLM_MAX_SESSIONS``, ``LLM_CTX_PER_SESSION``...

    The common fields (data dir, log level) keep their ``VOICE_*`` names too: with the
    ``LLM_`` prefix alone a stack that sets ``VOICE_DATA_DIR`` for every service would
    silently send this one to the default model cache.
    """

    model_config = SettingsConfigDict(env_prefix="LLM_", extra="ignore")

    data_dir: Path = Field(
        default_factory=lambda: project_root() / ".data",
        validation_alias=AliasChoices("LLM_DATA_DIR", "VOICE_DATA_DIR"),
    )
    log_level: str = Field(
        default="INFO", validation_alias=AliasChoices("LLM_LOG_LEVEL", "VOICE_LOG_LEVEL")
    )
    log_json: bool = Field(
        default=False, validation_alias=AliasChoices("LLM_LOG_JSON", "VOICE_LOG_JSON")
    )

    # Each session gets its own llama.cpp slot (KV cache), ~48 MiB at 4096 tokens for
    # the 0.5B model; on 2 cores more concurrent answers than this would not be real time.
    max_sessions: int = Field(default=4, ge=1, le=64)
    model_path: Path | None = None  # a GGUF of your own instead of the packaged Qwen 0.5B
    threads: int = Field(default=2, ge=1, le=64)
    # Per slot: a ~600-token persona + 20 short spoken messages + the answer fit in 4096.
    ctx_per_session: int = Field(default=4096, ge=512, le=131072)
    max_tokens_limit: int = Field(default=512, ge=1, le=4096)  # caps LlmOpen.max_tokens
    prefill: bool = True  # evaluate the system prompt when the session opens
    prompt_cache_mib: int = Field(default=256, ge=0)  # llama.cpp's host-RAM prompt cache
    engine_verbosity: int = Field(default=0, ge=-1, le=5)  # llama.cpp log level; 0 = quiet
    # One JSON line per generation with the rendered messages (debugging templates and
    # worker chains). It records what callers said: off unless an operator sets a path.
    prompt_log: Path | None = None
    # False: a replica for remote models only (see the routing table, VOICE_MODELS_FILE);
    # the packaged Qwen model is then never loaded.
    embedded: bool = True

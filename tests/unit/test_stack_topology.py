"""Pure parts of the local stack: replica specs, API key file, event-order checker."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.stack.topology import StackOptions, dev_api_key, parse_replicas, service_specs
from tests.support.bella_order import order_violations


def test_parse_replicas() -> None:
    assert parse_replicas("") == {"asr": 1, "llm": 1, "tts": 1}
    assert parse_replicas("asr=2,tts=3") == {"asr": 2, "llm": 1, "tts": 3}
    for bad in ("gpu=2", "asr", "asr=0", "asr=x", "asr=99"):
        with pytest.raises(ValueError):
            parse_replicas(bad)


def test_service_specs_start_every_replica_then_the_gateway(tmp_path: Path) -> None:
    options = StackOptions(data_dir=tmp_path, replicas={"asr": 2, "llm": 1, "tts": 2})
    specs = service_specs(options, "nats://127.0.0.1:1", ("k",))
    assert [s.name for s in specs] == ["asr-1", "asr-2", "llm-1", "tts-1", "tts-2", "gateway"]
    assert specs[-1].env["GATEWAY_API_KEYS"] == "k"
    assert all(s.env["NATS_URL"] == "nats://127.0.0.1:1" for s in specs)


def test_dev_api_key_is_stable(tmp_path: Path) -> None:
    key = dev_api_key(tmp_path)
    assert key.startswith("dev-") and dev_api_key(tmp_path) == key
    assert (tmp_path / "dev-api-key").stat().st_mode & 0o077 == 0


def test_order_checker() -> None:
    good = [
        "SentenceBegin",
        "TranscriptionResultChanged",
        "SentenceEnd",
        "LLM_CHAT_BEGIN",
        "LLM_CHAT_DELTA",
        "TTS_BEGIN",
        "TTS_TTFT",
        "audio",
        "LLM_CHAT_END",
        "audio",
        "TTS_END",
    ]
    assert order_violations(good) == []
    bad = [
        "SentenceBegin",
        "SentenceEnd",
        "LLM_CHAT_BEGIN",
        "TTS_BEGIN",
        "LLM_CHAT_DELTA",
        "TTS_TTFT",
        "audio",
        "LLM_CHAT_END",
        "TTS_END",
    ]
    assert order_violations(bad) == ["LLM_CHAT_DELTA after TTS_BEGIN"]
    assert order_violations(["SentenceBegin"])[0].startswith("missing")

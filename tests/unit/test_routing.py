"""The model routing table: parsing, embedded defaults, clear errors for bad files."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.messages import ServiceName
from shared.routing import (
    EMBEDDED_MODELS,
    ChatRoute,
    EmbeddedRoute,
    SpeechRoute,
    TranscriptionRoute,
    embedded_only,
    load_routing,
    parse_routing,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "models"

GOOD = """
[defaults]
llm = "qwen-flash"

[llm.qwen-flash]
backend = "openai"
base_url = "https://dashscope.aliyuncs.com/compatible-mode/v1/"
model = "qwen-flash"
api_key_env = "DASHSCOPE_API_KEY"
extra_body = { enable_thinking = false }

[llm."qwen2.5-coder:3b"]
backend = "embedded"

[asr.whisper-1]
backend = "openai"
base_url = "http://127.0.0.1:8000/v1"
model = "whisper-1"

[tts.tts-1]
backend = "openai"
base_url = "https://api.openai.com/v1"
model = "tts-1"
default_voice = "alloy"
voices = { zh_female = "nova", Joe = "onyx" }
"""


def test_embedded_engines_are_always_routed() -> None:
    table = embedded_only()
    for service, name in EMBEDDED_MODELS.items():
        assert table.models(service) == frozenset({name})
        assert table.resolve(service, None) == (name, EmbeddedRoute())


def test_a_file_adds_remote_models_and_a_default() -> None:
    table = parse_routing(tomllib.loads(GOOD))
    name, route = table.resolve(ServiceName.LLM, None)
    assert name == "qwen-flash" and isinstance(route, ChatRoute)
    assert route.base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"
    assert route.extra_body == {"enable_thinking": False}
    assert table.models(ServiceName.LLM) == {"qwen-flash", "qwen2.5-coder:3b", "qwen2.5-0.5b"}
    assert isinstance(table.resolve(ServiceName.ASR, "whisper-1")[1], TranscriptionRoute)
    assert table.resolve(ServiceName.ASR, None)[0] == "whisper-base"
    speech = table.resolve(ServiceName.TTS, "tts-1")[1]
    assert isinstance(speech, SpeechRoute)
    assert speech.provider_voice(None) == "alloy"
    assert speech.provider_voice("auto") == "alloy"
    assert speech.provider_voice("zh_female") == "nova"
    assert speech.provider_voice("joe") == "onyx"
    with pytest.raises(KeyError):
        speech.provider_voice("nobody")
    with pytest.raises(KeyError):
        table.resolve(ServiceName.LLM, "gpt-9")


def test_the_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    route = parse_routing(tomllib.loads(GOOD)).resolve(ServiceName.LLM, "qwen-flash")[1]
    assert isinstance(route, ChatRoute)
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"\$DASHSCOPE_API_KEY"):
        route.api_key()
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test")
    assert route.api_key() == "sk-test"


HTTP = '[llm.x]\nbackend = "openai"\nbase_url = "http://h"\nmodel = "m"\n'


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[llm.x]\nbackend = "openai"\nmodel = "m"', "base_url"),
        ('[llm.x]\nbackend = "grpc"', "backend"),
        ('[llm.x]\nbackend = "openai"\nbase_url = "ftp://h"\nmodel = "m"', "http"),
        (HTTP + 'api_key_env = "sk-abc123-secret"', "never put the key"),
        (HTTP + 'headers = { Authorization = "Bearer k" }', "api_key_env"),
        (HTTP + "timeout = 3", "timeout"),
        (HTTP.replace("llm", "tts"), "default_voice"),
        ('[defaults]\nllm = "nope"', "names no"),
        (HTTP.replace("x", '"qwen2.5-0.5b"', 1), "embedded engine's name"),
        ('[video.x]\nbackend = "embedded"', "video"),
    ],
)
def test_bad_tables_say_what_is_wrong(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_routing(tomllib.loads(toml))


def test_load_routing_reports_missing_and_broken_files(tmp_path: Path) -> None:
    assert load_routing(None) == embedded_only()
    with pytest.raises(ConfigError, match="not found"):
        load_routing(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[llm\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_routing(broken)


def test_the_shipped_examples_are_valid() -> None:
    files = sorted(EXAMPLES.glob("*.toml"))
    assert len(files) >= 6
    for path in files:
        table = load_routing(path)
        remote = [
            name
            for service in ServiceName
            for name, route in table.routes(service).items()
            if not isinstance(route, EmbeddedRoute)
        ]
        assert remote, f"{path.name} routes nothing remotely"

"""Bella StartTranscription -> call options: workers, templates, personas, worker events."""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import pytest

from services.gateway.bella.session import BellaSession
from services.gateway.conversation import ConversationDefaults
from services.gateway.personas import PersonaBook, builtin_personas, parse_preset
from services.gateway.protocol import BeginCall, Refused, SendText
from services.gateway.settings import GatewaySettings
from shared.errors import ConfigError
from shared.messages import LlmWorkerEvent, VariableType, WorkerStatus

SEED_WORKER = {
    "model": "qwen2.5-coder:3b",
    "blocking": True,
    "variable_name": "rewrite_user_message",
    "sys_prompt": "你是一个user message rewrite专家",
    "prompt": "{% for message in history_messages %}{{{ message.content }}}{% endfor %}"
    "\n<user_message>\n {{user_message}}\n</user_message>",
}


def session(conversation: ConversationDefaults | None = None) -> BellaSession:
    ids = count(1)
    return BellaSession(answer=True, new_id=lambda: f"id{next(ids)}", conversation=conversation)


def start(s: BellaSession, payload: dict[str, Any]) -> list[Any]:
    frame = {
        "header": {"namespace": "SpeechTranscriber", "name": "StartTranscription", "task_id": "t1"},
        "payload": payload,
    }
    return s.on_text(json.dumps(frame))


def options(payload: dict[str, Any], conversation: ConversationDefaults | None = None) -> Any:
    outputs = start(session(conversation), payload)
    assert len(outputs) == 1 and isinstance(outputs[0], BeginCall), outputs
    return outputs[0].options


def refusal(payload: dict[str, Any]) -> tuple[str, str]:
    s = session()
    outputs = start(s, payload)
    refused = [o for o in outputs if isinstance(o, Refused)]
    frames = [json.loads(o.text) for o in outputs if isinstance(o, SendText)]
    assert len(refused) == 1 and frames[0]["header"]["name"] == "TaskFailed"
    assert frames[0]["header"]["status"] == 40000000
    # The connection stays usable: a corrected Start is accepted.
    assert isinstance(start(s, {})[0], BeginCall)
    return refused[0].kind, frames[0]["payload"]["message"]


def test_full_llm_option_is_mapped() -> None:
    o = options(
        {
            "variables": {"city": "Oslo"},
            "llm_option": {
                "main": {
                    "model": "qwen2.5-coder:3b",
                    "sys_prompt": "Hi {{ city }}",
                    "prompt": "{{ rewrite_user_message }}",
                    "temperature": 0.3,
                },
                "workers": [
                    SEED_WORKER,
                    {
                        "variable_name": "intent",
                        "json_schema": '{"type": "object"}',
                        "max_tokens": 32,
                    },
                ],
            },
            "tts_option": {"model": "chat-tts", "voice": "zh_female"},
        }
    )
    assert (o.llm_model, o.tts_model, o.voice) == ("qwen2.5-coder:3b", "chat-tts", "zh_female")
    assert (o.system_prompt, o.prompt, o.temperature) == (
        "Hi {{ city }}",
        "{{ rewrite_user_message }}",
        0.3,
    )
    assert dict(o.variables) == {"city": "Oslo"}
    rewrite, intent = o.workers
    assert rewrite.blocking and rewrite.model == "qwen2.5-coder:3b"
    assert rewrite.prompt == SEED_WORKER["prompt"]
    assert not intent.blocking and intent.variable_type is VariableType.JSON
    assert intent.json_schema == {"type": "object"} and intent.max_tokens == 32
    assert o.max_history == 20


def test_default_model_names_mean_the_deployment_default() -> None:
    o = options({"llm_option": {"main": {"model": "default"}}, "tts_option": {"model": "auto"}})
    assert (o.llm_model, o.tts_model) == (None, None)


@pytest.mark.parametrize(
    ("payload", "kind", "text"),
    [
        ({"llm_option": {"workers": [{"prompt": "x"}]}}, "bad_worker", "variable_name is required"),
        (
            {"llm_option": {"workers": [{"variable_name": "a", "variable_type": "xml"}]}},
            "bad_worker",
            "use 'text' or 'json'",
        ),
        (
            {"llm_option": {"workers": [{"variable_name": "a", "json_schema": "{nope"}]}},
            "bad_worker",
            "not valid JSON",
        ),
        (
            {"llm_option": {"workers": [{"variable_name": "a", "json_schema": {"type": 5}}]}},
            "bad_worker",
            "json_schema is invalid",
        ),
        ({"llm_option": {"workers": [{"variable_name": "a b"}]}}, "bad_worker", "variable_name"),
        (
            {"llm_option": {"main": {"sys_prompt": "{{ ''.__class__.__mro__ }}"}}},
            "bad_template",
            "'__mro__' is not allowed",
        ),
        ({"llm_option": {"main": {"prompt": "{% if %}"}}}, "bad_template", "syntax error"),
        (
            {"llm_option": {"main": {"prompt": "{{ cty }}"}}, "variables": {"city": "x"}},
            "bad_template",
            "unknown variable cty",
        ),
        ({"persona": "nobody"}, "unknown_persona", "available: qingqing"),
    ],
)
def test_bad_sessions_fail_at_start(payload: dict[str, Any], kind: str, text: str) -> None:
    got_kind, message = refusal(payload)
    assert got_kind == kind and text in message, message


def test_personas() -> None:
    zh = options({"persona": "qingqing"})
    assert "乔青青" in zh.system_prompt and zh.voice == "zh_female"
    en = options({"persona": "Doreen:en"})
    assert "Qingqing" in en.system_prompt and en.voice == "en_US-joe-medium"
    own = options(
        {
            "persona": "qingqing",
            "llm_option": {"main": {"sys_prompt": "Mine."}},
            "tts_option": {"voice": "zh_male"},
        }
    )
    assert (own.system_prompt, own.voice) == ("Mine.", "zh_male")
    assert options({}).system_prompt == ""  # no default persona: the LLM's own default


def test_default_persona_and_history_from_settings() -> None:
    settings = GatewaySettings(default_persona="qingqing:en", max_history=6)
    defaults = ConversationDefaults.from_settings(settings)
    o = options({}, defaults)
    assert "Doreen" in o.system_prompt and o.max_history == 6
    with pytest.raises(ConfigError, match="GATEWAY_DEFAULT_PERSONA"):
        ConversationDefaults.from_settings(GatewaySettings(default_persona="nobody"))


def test_seed_setting_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_CALL_IDLE_TIMEOUT", "45")
    monkeypatch.setenv("VOICE_CALL_MAX_HISTORY", "10")
    settings = GatewaySettings()
    assert (settings.idle_timeout_s, settings.max_history) == (45.0, 10)


def test_preset_files_are_checked() -> None:
    assert builtin_personas().names == ("qingqing",)
    with pytest.raises(ConfigError, match="broken.toml"):
        parse_preset('name = "x"\n', "broken.toml")
    preset = parse_preset(
        'name = "x"\ndefault_language = "fr"\n[languages.en]\nsystem_prompt = "Hi"\n', "x.toml"
    )
    with pytest.raises(ConfigError, match="default_language"):
        PersonaBook([preset])


@pytest.mark.parametrize("status", list(WorkerStatus))
def test_worker_events_are_rendered(status: WorkerStatus) -> None:
    s = session()
    result = '{"intent": "music"}' if status is WorkerStatus.END else None
    event = LlmWorkerEvent(
        sid="s",
        turn=1,
        variable_name="intent",
        status=status,
        result=result,
        message="bad json" if status is WorkerStatus.ERROR else "",
    )
    (frame,) = s.render(event)
    parsed = json.loads(frame)
    assert parsed["header"]["name"] == f"LLM_WORKER_{status.value.upper()}"
    assert parsed["payload"]["variable_name"] == "intent"
    assert parsed["payload"]["data"] == result
    if status is WorkerStatus.ERROR:
        assert parsed["header"]["status"] == 50000000
        assert parsed["payload"]["message"] == "bad json"
    else:
        assert parsed["header"]["status"] == 20000000

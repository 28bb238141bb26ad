"""End to end: a real websockets client speaks to the whole stack (gateway, ASR, LLM, TTS
as separate processes over a real NATS), with speech made by espeak-ng at test time."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio

from services.stack.bella_client import BellaCall
from services.stack.runner import RunningStack, running_stack
from services.stack.topology import StackOptions
from shared.audio import rms_dbfs
from shared.settings import CommonSettings
from tests.support.bella_order import order_violations
from tests.support.natsserver import free_port
from tests.support.speech import silence, synthesize

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

API_KEY = "e2e-test-key"


@pytest.fixture(scope="module")
def prompt_log() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="e2e-prompts-") as d:
        yield Path(d) / "prompts.jsonl"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: object, prompt_log: Path) -> AsyncIterator[RunningStack]:
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        nats_url=nats_server.url,
        gateway_port=free_port(),
        api_keys=(API_KEY,),
        # The LLM records what its models were given: the worker chain tests read it.
        extra_env={"LLM_PROMPT_LOG": str(prompt_log)},
    )
    async with running_stack(options, echo=lambda line: None) as running:
        yield running


@pytest.fixture(scope="module")
def speech_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="speech-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def question(speech_dir: Path) -> bytes:
    return synthesize("What is the capital of France?", speech_dir)


def _start_payload(**extra: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "format": "pcm",
        "sample_rate": 16000,
        "enable_intermediate_result": True,
        "enable_punctuation_prediction": True,
        "enable_inverse_text_normalization": True,
        "llm_option": {
            "main": {
                "model": "default",
                "temperature": 0.2,
                "sys_prompt": "You are a helpful voice assistant. Answer in one short sentence.",
            }
        },
        "tts_option": {"sample_rate": 24000},
    }
    payload.update(extra)
    return payload


async def test_spoken_turn_is_answered_with_speech(stack: RunningStack, question: bytes) -> None:
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        started = await call.start(_start_payload())
        assert started.name == "TranscriptionStarted", started.header
        assert started.header["status"] == 20000000

        await call.send_audio(question + silence(1.5))
        end = await call.wait_for(lambda r: r.name == "SentenceEnd", timeout_s=30)
        assert "capital" in end.payload["result"].lower()
        assert "france" in end.payload["result"].lower()
        await call.wait_for(lambda r: r.name == "TTS_END", timeout_s=90)
        await call.wait_for(lambda r: r.name == "LLM_CHAT_END", timeout_s=30)

        names = call.names()
        assert order_violations(names) == []
        assert any(n.startswith("VOICE_") for n in names)
        deltas = [r.payload["data"] for r in call.received if r.name == "LLM_CHAT_DELTA"]
        assert "".join(deltas).strip()
        ttft = next(r for r in call.received if r.name == "TTS_TTFT")
        assert ttft.payload["latency"] > 0

        audio = call.audio()
        seconds = len(audio) / 2 / 24000
        assert seconds >= 0.5
        assert rms_dbfs(audio) > -40.0  # speech, not silence

        stop_at = len(call.received)
        await call.stop()
        tail = call.names()[stop_at:]
        assert tail[-2:] == ["TranscriptionCompleted", "SESSION_CLOSE"]
    finally:
        await call.aclose()


async def test_asr_only_endpoint_returns_transcripts_only(
    stack: RunningStack, question: bytes
) -> None:
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/asr/stream", stack.api_key)
    try:
        started = await call.start(
            {"format": "pcm", "sample_rate": 16000, "enable_intermediate_result": True}
        )
        assert started.name == "TranscriptionStarted"
        await call.send_audio(question + silence(1.0), realtime=False)
        end = await call.wait_for(lambda r: r.name == "SentenceEnd", timeout_s=30)
        assert "france" in end.payload["result"].lower()
        await call.stop()
        names = call.names()
        assert not [n for n in names if n.startswith(("LLM_", "TTS_"))]
        assert call.audio() == b""
        assert names[-2:] == ["TranscriptionCompleted", "SESSION_CLOSE"]
    finally:
        await call.aclose()


async def test_stop_mid_utterance_drains_the_answer(stack: RunningStack, question: bytes) -> None:
    """StopTranscription right after speech: the pending utterance is still recognized
    and answered before TranscriptionCompleted and SESSION_CLOSE."""
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        started = await call.start(_start_payload(tts_option={"sample_rate": 16000}))
        assert started.name == "TranscriptionStarted"
        await call.send_audio(question + silence(0.2), realtime=False)
        await call.stop(timeout_s=120)
        names = call.names()
        assert "SentenceEnd" in names
        assert "LLM_CHAT_END" in names
        assert names.index("TTS_END") < names.index("TranscriptionCompleted")
        assert names[-2:] == ["TranscriptionCompleted", "SESSION_CLOSE"]
        audio = np.frombuffer(call.audio(), dtype="<i2")
        assert audio.size / 16000 >= 0.5  # 16 kHz output as asked
    finally:
        await call.aclose()


# --------------------------------------------------------------------------- worker chain

# The Bella documentation's rewrite worker, verbatim (its JSON text, decoded).
SEED_REWRITE_WORKER = json.loads(
    r"""{"model": "default", "blocking": true, "variable_name": "rewrite_user_message",
    "sys_prompt": "你是一个user message rewrite专家,负责将基于voice转录的用户消息进行改写,让其更通顺和连贯,同时完成必须的指代消歧。不要解释,直接改写,如果不需要改写,则直接输出用户的原始内容",
    "prompt": "## 用户历史对话\n<history_messages>\n{% for message in history_messages %}\n{% if message.role == \"user\" %}\n <user timestamp=\"{{loop.index}}\">{{{ message.content }}}</user>\n{% elif message.role == \"assistant\" %}\n <agent timestamp=\"{{loop.index}}\">{{{ message.content }}}</agent>\n{% endif %}\n{% endfor %}\n\n</history_messages>\n\n## 用户最新消息\n<user_message>\n {{user_message}}\n</user_message>\n\n请进行消息改写吧!\n"}"""
)


async def test_worker_chain_through_the_gateway(
    stack: RunningStack, question: bytes, prompt_log: Path
) -> None:
    workers = [
        # Verbatim but for our max_tokens extension, which keeps the test short.
        {**SEED_REWRITE_WORKER, "temperature": 0.0, "max_tokens": 24},
        {
            "blocking": True,
            "variable_name": "info",
            "variable_type": "json",
            "temperature": 0.0,
            "max_tokens": 16,
            "sys_prompt": "You output JSON only.",
            "prompt": 'Output exactly this JSON and nothing else: {"city": "Paris"}',
            "json_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
        {
            "blocking": False,
            "variable_name": "never",
            "variable_type": "json",
            "json_schema": {"required": ["never_there_key"]},
            "prompt": "Say hello.",
            "max_tokens": 4,
        },
    ]
    payload = _start_payload(
        llm_option={
            "main": {
                "temperature": 0.0,
                "sys_prompt": "Answer in a few words. City: {{ info.city }}.",
            },
            "workers": workers,
        },
    )
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        started = await call.start(payload)
        assert started.name == "TranscriptionStarted", started.payload
        await call.send_audio(question + silence(1.5), realtime=False)
        await call.wait_for(lambda r: r.name == "LLM_CHAT_END", timeout_s=180)
        await call.wait_for(
            lambda r: r.name == "LLM_WORKER_ERROR" and r.payload["variable_name"] == "never",
            timeout_s=60,
        )
        sid = started.payload["session_id"]
        names = call.names()
        # Blocking workers report before the answer begins.
        chat_begin = names.index("LLM_CHAT_BEGIN")
        ends = {
            r.payload["variable_name"]: (i, r)
            for i, r in enumerate(call.received)
            if r.name == "LLM_WORKER_END"
        }
        assert set(ends) == {"rewrite_user_message", "info"}, ends
        assert all(i < chat_begin for i, _ in ends.values())
        assert names.index("SentenceEnd") < names.index("LLM_WORKER_BEGIN") < chat_begin
        error = next(r for r in call.received if r.name == "LLM_WORKER_ERROR")
        assert error.header["status"] == 50000000 and "json" in error.payload["message"].lower()

        main = [r for r in _prompts(prompt_log, sid) if r["stage"] == "main"]
        assert len(main) == 1
        system, user = main[0]["messages"][0], main[0]["messages"][-1]
        # The rewrite replaced the user's words; the JSON result filled the system prompt.
        assert user == {"role": "user", "content": ends["rewrite_user_message"][1].payload["data"]}
        assert json.loads(ends["info"][1].payload["data"]) == {"city": "Paris"}
        assert system["content"] == "Answer in a few words. City: Paris."
    finally:
        await call.aclose()


async def test_template_reaching_python_internals_is_refused(stack: RunningStack) -> None:
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        payload = _start_payload(
            llm_option={"main": {"sys_prompt": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}}
        )
        failed = await call.start(payload)
        assert failed.name == "TaskFailed"
        assert failed.header["status"] == 40000000
        assert "is not allowed" in failed.payload["message"]
    finally:
        await call.aclose()


def _prompts(path: Path, sid: str) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["sid"] == sid]

"""A gateway dies mid-conversation (SIGKILL); the client reconnects to a second gateway
replica with its session id and the conversation goes on: the LLM's next prompt holds the
earlier turn. Real processes (two gateways, ASR, LLM, TTS) on one real NATS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.stack.bella_client import BellaCall
from services.stack.runner import RunningStack, running_stack
from services.stack.supervisor import ChildSpec
from services.stack.topology import StackOptions
from shared.settings import CommonSettings
from tests.support.natsserver import LocalNats, free_port
from tests.support.speech import silence, synthesize

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

API_KEY = "failover-test-key"


@pytest.fixture(scope="module")
def prompt_log() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="failover-prompts-") as d:
        yield Path(d) / "prompts.jsonl"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: LocalNats, prompt_log: Path) -> AsyncIterator[RunningStack]:
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        nats_url=nats_server.url,
        gateway_port=free_port(),
        api_keys=(API_KEY,),
        extra_env={"LLM_PROMPT_LOG": str(prompt_log)},
    )
    async with running_stack(options, echo=lambda line: None) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def second_gateway(stack: RunningStack) -> str:
    """Another gateway replica on the same NATS; the supervisor stops it with the stack."""
    port = free_port()
    line = await stack.supervisor.start(
        ChildSpec(
            name="gateway-2",
            argv=(sys.executable, "-m", "services.gateway"),
            ready_marker="READY",
            env={
                "NATS_URL": stack.nats_url,
                "VOICE_DATA_DIR": str(CommonSettings().data_dir),
                "GATEWAY_PORT": str(port),
                "GATEWAY_API_KEYS": API_KEY,
            },
            restart=False,
        )
    )
    assert f":{port}" in line, line
    return f"ws://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    d = tmp_path_factory.mktemp("speech")
    return synthesize("What is the capital of France?", d), synthesize("Say that again.", d)


def payload(**extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "format": "pcm",
        "sample_rate": 16000,
        "llm_option": {
            "main": {
                "temperature": 0.0,
                "max_tokens": 32,
                "sys_prompt": "You are a voice assistant. Answer in one short sentence.",
            }
        },
    }
    body.update(extra)
    return body


def prompts(path: Path, sid_prefix: str) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    records = [json.loads(line) for line in lines]
    return [r for r in records if r["sid"].startswith(sid_prefix) and r["stage"] == "main"]


async def test_a_conversation_survives_its_gateway_being_killed(
    stack: RunningStack, second_gateway: str, speech: tuple[bytes, bytes], prompt_log: Path
) -> None:
    first_question, second_question = speech
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        started = await call.start(payload())
        assert started.name == "TranscriptionStarted", started.header
        sid = str(started.payload["session_id"])
        await call.send_audio(first_question + silence(1.5), realtime=False)
        await call.wait_for(lambda r: r.name == "LLM_CHAT_END", timeout_s=120)
        await call.wait_for(lambda r: r.name == "TTS_END", timeout_s=120)
        answer = "".join(r.payload["data"] for r in call.received if r.name == "LLM_CHAT_DELTA")
        assert answer.strip()

        pid = stack.supervisor.pid_of("gateway")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # no drain, no detach: the process is just gone
        async with asyncio.timeout(30):
            await call.ws.wait_closed()
    finally:
        await call.aclose()

    again = await BellaCall.open(f"{second_gateway}/v1/audio/realtime", stack.api_key)
    try:
        # Other settings asked for: the session keeps its own.
        resumed = await again.start(payload(session_id=sid, llm_option=None))
        assert resumed.name == "TranscriptionStarted", resumed.payload
        assert resumed.payload["session_id"] == sid
        await again.send_audio(second_question + silence(1.5), realtime=False)
        await again.wait_for(lambda r: r.name == "LLM_CHAT_END", timeout_s=120)
    finally:
        await again.aclose()

    # The resumed call's LLM session is a new one (its id is the session's plus a suffix),
    # opened with the stored history: its first prompt holds the turn made before the kill.
    (prompt, *_) = prompts(prompt_log, f"{sid}-")
    messages = prompt["messages"]
    assert messages[0] == {
        "role": "system",
        "content": "You are a voice assistant. Answer in one short sentence.",
    }
    earlier = messages[1:-1]
    assert [m["role"] for m in earlier] == ["user", "assistant"], messages
    assert "france" in earlier[0]["content"].lower()
    assert earlier[1]["content"].strip() == answer.strip()
    assert messages[-1]["role"] == "user"

"""End to end on the Coze duplex chat protocol: a websockets client, configured as the
ESP32 board of seed 004 configures itself (server VAD, 16 kHz PCM up; PCM down here),
speaks to the whole stack (gateway, ASR, LLM, TTS over a real NATS, real models) with
real speech made by espeak-ng at test time; then a key-press turn (client_interrupt,
G.711 mu-law both ways) on a second connection."""

from __future__ import annotations

import asyncio
import base64
import json
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from services.gateway.openai.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from services.stack.runner import RunningStack, running_stack
from services.stack.topology import StackOptions
from shared.audio import rms_dbfs
from shared.settings import CommonSettings
from tests.support.natsserver import free_port
from tests.support.speech import silence, synthesize

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

API_KEY = "coze-e2e-key"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: Any) -> AsyncIterator[RunningStack]:
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        nats_url=nats_server.url,
        gateway_port=free_port(),
        api_keys=(API_KEY,),
        extra_env={"LLM_MAX_TOKENS_LIMIT": "40"},
    )
    async with running_stack(options, echo=lambda line: None) as running:
        yield running


@pytest.fixture(scope="module")
def speech_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="speech-") as d:
        yield Path(d)


async def _send(ws: ClientConnection, event_type: str, data: Any = None) -> None:
    frame: dict[str, Any] = {"id": "evt", "event_type": event_type}
    if data is not None:
        frame["data"] = data
    await ws.send(json.dumps(frame))


async def _until(
    ws: ClientConnection, seen: list[dict[str, Any]], event_type: str, timeout: float
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            assert isinstance(raw, str)
            event: dict[str, Any] = json.loads(raw)
            seen.append(event)
            assert event["event_type"] != "error", event
            if event["event_type"] == event_type:
                return event


async def _append_all(ws: ClientConnection, wire: bytes, chunk: int) -> None:
    for i in range(0, len(wire), chunk):
        delta = base64.b64encode(wire[i : i + chunk]).decode()
        await _send(ws, "input_audio_buffer.append", {"delta": delta})


def _types(seen: list[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in seen]


async def test_server_vad_turn_like_the_esp32_board(stack: RunningStack, speech_dir: Path) -> None:
    question = synthesize("What is the capital of France?", speech_dir)
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    seen: list[dict[str, Any]] = []
    async with connect(
        f"{stack.gateway_url}/v1/chat?bot_id=7480061", additional_headers=headers
    ) as ws:
        await _until(ws, seen, "chat.created", 30)
        await _send(
            ws,
            "chat.update",
            {
                "chat_config": {"user_id": "userid_123", "parameters": {"custom_var_1": "x"}},
                "input_audio": {"format": "pcm", "codec": "pcm", "sample_rate": 16000},
                "turn_detection": {
                    "type": "server_vad",
                    "prefix_padding_ms": 600,
                    "silence_duration_ms": 500,
                },
                "output_audio": {"codec": "pcm", "pcm_config": {"sample_rate": 24000}},
            },
        )
        await _until(ws, seen, "chat.updated", 10)
        await _append_all(ws, question + silence(1.5), 3200)
        await _until(ws, seen, "conversation.chat.completed", 120)

    types = _types(seen)
    transcript = next(
        e for e in seen if e["event_type"] == "conversation.audio_transcript.completed"
    )
    assert "france" in transcript["data"]["content"].lower()
    expected = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "conversation.audio_transcript.completed",
        "conversation.chat.created",
        "conversation.chat.in_progress",
        "conversation.message.delta",
        "conversation.audio.sentence_start",
        "conversation.audio.delta",
        "conversation.audio.completed",
        "conversation.chat.completed",
    ]
    firsts = [types.index(t) for t in expected]
    assert firsts == sorted(firsts), types
    # The text may be complete before any audio of it is (a short answer, a busy TTS):
    # it only has to follow every text delta and come before the chat completes.
    done = types.index("conversation.message.completed")
    assert max(i for i, t in enumerate(types) if t == "conversation.message.delta") < done
    assert done < types.index("conversation.chat.completed")
    assert types.index("conversation.audio.completed") > max(
        i for i, t in enumerate(types) if t == "conversation.audio.delta"
    )
    pcm = b"".join(
        base64.b64decode(e["data"]["content"])
        for e in seen
        if e["event_type"] == "conversation.audio.delta"
    )
    assert len(pcm) / 2 / 24000 >= 0.5
    assert rms_dbfs(pcm) > -40.0  # speech, not silence


async def test_key_press_turn_with_g711(stack: RunningStack, speech_dir: Path) -> None:
    question = synthesize("What is the capital of France?", speech_dir, rate=8000)
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    seen: list[dict[str, Any]] = []
    async with connect(
        f"{stack.gateway_url}/v1/chat?bot_id=7480061", additional_headers=headers
    ) as ws:
        await _until(ws, seen, "chat.created", 30)
        await _send(
            ws,
            "chat.update",
            {
                "input_audio": {"format": "pcm", "codec": "g711u", "sample_rate": 8000},
                "output_audio": {"codec": "g711u"},
                "event_subscriptions": [
                    "input_audio_buffer.completed",
                    "conversation.audio_transcript.completed",
                    "conversation.audio.delta",
                    "conversation.chat.completed",
                    "error",
                ],
            },
        )
        await _append_all(ws, pcm16_to_ulaw(question), 800)
        await _send(ws, "input_audio_buffer.complete")  # the key is released
        await _until(ws, seen, "conversation.chat.completed", 120)

    types = set(_types(seen[1:]))  # after chat.created, sent before the subscription
    assert types == {
        "input_audio_buffer.completed",
        "conversation.audio_transcript.completed",
        "conversation.audio.delta",
        "conversation.chat.completed",
    }
    wire = b"".join(
        base64.b64decode(e["data"]["content"])
        for e in seen
        if e["event_type"] == "conversation.audio.delta"
    )
    assert len(wire) / 8000 >= 0.5  # one byte per sample at 8 kHz
    assert rms_dbfs(ulaw_to_pcm16(wire)) > -40.0

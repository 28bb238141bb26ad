"""End to end on the Volcengine live-voice-call protocol: a websockets client speaks the
4-byte-header binary protocol (audio double-wrapped, as the reference frontend does) to
the whole stack (gateway, ASR, LLM, TTS over a real NATS, real models), with real speech
made by espeak-ng at test time, and gets one complete WAV per sentence back."""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
import wave
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from services.gateway.volcengine.codec import (
    MessageType,
    Serialization,
    decode_frame,
    encode_frame,
)
from services.stack.runner import RunningStack, running_stack
from services.stack.topology import StackOptions
from shared.audio import rms_dbfs
from shared.settings import CommonSettings
from tests.support.natsserver import free_port
from tests.support.speech import silence, synthesize

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

API_KEY = "volc-e2e-key"
FRAME = 3200  # 100 ms at 16 kHz


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
def question() -> Iterator[bytes]:
    with tempfile.TemporaryDirectory(prefix="speech-") as d:
        yield synthesize("What is the capital of France?", Path(d))


@dataclass
class Received:
    events: list[dict[str, Any]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)  # event names and "WAV"
    wavs: list[bytes] = field(default_factory=list)


async def _receive_until(ws: ClientConnection, got: Received, name: str, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            data = await ws.recv()
            assert isinstance(data, bytes), "every frame of this protocol is binary"
            frame = decode_frame(data)
            if frame.type is MessageType.AUDIO_ONLY_RESPONSE:
                got.order.append("WAV")
                got.wavs.append(frame.payload)
                continue
            assert frame.type is MessageType.FULL_SERVER_RESPONSE, frame
            event = json.loads(frame.payload)
            got.events.append(event)
            got.order.append(event["event"])
            if event["event"] == name:
                return


def _url(stack: RunningStack, query: str) -> str:
    return f"{stack.gateway_url}/api/live_voice_call/chat?{query}"


async def test_spoken_turn_gets_sentence_wavs(stack: RunningStack, question: bytes) -> None:
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    got = Received()
    async with connect(_url(stack, "persona=qingqing:en"), additional_headers=headers) as ws:
        await _receive_until(ws, got, "BotReady", 30)
        session = got.events[-1]["payload"]["session"]
        assert session
        update = {"event": "BotUpdateConfig", "payload": {"speaker": "en_US-joe-medium"}}
        body = json.dumps(update).encode()
        await ws.send(
            encode_frame(MessageType.FULL_CLIENT_REQUEST, body, serialization=Serialization.JSON)
        )
        audio = question + silence(1.5)
        for i in range(0, len(audio), FRAME):
            inner = encode_frame(MessageType.AUDIO_ONLY_REQUEST, audio[i : i + FRAME])
            await ws.send(encode_frame(MessageType.AUDIO_ONLY_REQUEST, inner))
        await _receive_until(ws, got, "TTSDone", 120)

    recognized = next(e for e in got.events if e["event"] == "SentenceRecognized")
    assert "france" in recognized["payload"]["sentence"].lower()
    assert "BotError" not in got.order
    answer = got.order[got.order.index("SentenceRecognized") + 1 :]
    assert answer[0] == "TTSSentenceStart" and answer[-1] == "TTSDone"
    # Each sentence: its start event, then exactly one WAV.
    assert answer[:-1] == ["TTSSentenceStart", "WAV"] * (len(answer) // 2)
    pcm = b""
    for data in got.wavs:
        with wave.open(io.BytesIO(data)) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
            pcm += w.readframes(w.getnframes())
    assert len(pcm) / 2 / 24000 >= 0.5
    assert rms_dbfs(pcm) > -40.0  # speech, not silence

    # Reconnecting with the session id resumes it: BotReady echoes the id.
    again = Received()
    async with connect(_url(stack, f"session={session}"), additional_headers=headers) as ws:
        await _receive_until(ws, again, "BotReady", 30)
    assert again.events[-1]["payload"] == {"session": session}

"""End to end: a real websockets client speaks to the whole stack (gateway, ASR, LLM, TTS
as separate processes over a real NATS), with speech made by espeak-ng at test time."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: object) -> AsyncIterator[RunningStack]:
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        nats_url=getattr(nats_server, "url"),
        gateway_port=free_port(),
        api_keys=(API_KEY,),
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
        "llm_option": {"main": {"model": "default", "temperature": 0.2,
                                "sys_prompt": "You are a helpful voice assistant. "
                                              "Answer in one short sentence."}},
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
        started = await call.start({"format": "pcm", "sample_rate": 16000,
                                    "enable_intermediate_result": True})
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


async def test_stop_mid_utterance_drains_the_answer(
    stack: RunningStack, question: bytes
) -> None:
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

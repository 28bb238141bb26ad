"""Capacity with real replicas: when every replica is full a new call is refused at once
with a clear overloaded error, and the call already running is not degraded."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from services.stack.bella_client import BellaCall
from services.stack.runner import RunningStack, running_stack
from services.stack.topology import StackOptions
from shared.settings import CommonSettings
from tests.support.natsserver import free_port
from tests.support.speech import silence, synthesize

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

START = {
    "format": "pcm",
    "sample_rate": 16000,
    "llm_option": {"main": {"sys_prompt": "Answer in one short sentence.", "temperature": 0.2}},
    "tts_option": {"sample_rate": 16000},
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: Any) -> AsyncIterator[RunningStack]:
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        nats_url=nats_server.url,
        gateway_port=free_port(),
        api_keys=("overload-key",),
        # One call fills the LLM: the next one finds no replica with room.
        extra_env={"LLM_MAX_SESSIONS": "1"},
    )
    async with running_stack(options, echo=lambda line: None) as running:
        yield running


async def test_a_call_beyond_capacity_is_refused_and_the_first_goes_on(
    stack: RunningStack,
) -> None:
    url = f"{stack.gateway_url}/v1/audio/realtime"
    first = await BellaCall.open(url, stack.api_key)
    try:
        started = await first.start(START)
        assert started.name == "TranscriptionStarted", started.header

        second = await BellaCall.open(url, stack.api_key)
        try:
            refused = await second.start(START)
            assert refused.name == "TaskFailed"
            assert "overloaded" in refused.header["status_message"]
        finally:
            await second.aclose()

        with tempfile.TemporaryDirectory() as d:
            question = synthesize("What is the capital of France?", Path(d))
        await first.send_audio(question + silence(1.5))
        end = await first.wait_for(lambda r: r.name == "SentenceEnd", timeout_s=60)
        assert "france" in end.payload["result"].lower()
        await first.wait_for(lambda r: r.name == "TTS_END", timeout_s=120)
        assert first.audio()
        await first.stop()
    finally:
        await first.aclose()

"""End to end barge-in through the Bella protocol: real speech over an answer that is
still being made cancels it across the services, nothing more of it reaches the client,
and the interruption is answered instead (the whole stack, real NATS, real models)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
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

API_KEY = "barge-in-test-key"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats_server: Any) -> AsyncIterator[RunningStack]:
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        nats_url=nats_server.url,
        gateway_port=free_port(),
        api_keys=(API_KEY,),
        # Long enough that the first answer is still being made when the user cuts in,
        # short enough to keep the test fast.
        extra_env={"LLM_MAX_TOKENS_LIMIT": "40"},
    )
    async with running_stack(options, echo=lambda line: None) as running:
        yield running


@pytest.fixture(scope="module")
def speech_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="speech-") as d:
        yield Path(d)


async def test_speech_over_an_answer_cancels_it_and_is_answered(
    stack: RunningStack, speech_dir: Path
) -> None:
    question = synthesize("Tell me a long story about a brave little dragon.", speech_dir)
    interruption = synthesize("Stop please. What is two plus two?", speech_dir)
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        started = await call.start(
            {
                "format": "pcm",
                "sample_rate": 16000,
                "enable_intermediate_result": True,
                "llm_option": {
                    "main": {"temperature": 0.2, "sys_prompt": "You are a storyteller."}
                },
                "tts_option": {"sample_rate": 24000},
            }
        )
        assert started.name == "TranscriptionStarted", started.header
        await call.send_audio(question + silence(1.0), realtime=False)
        # The answer is being spoken: cut in (at the pace of a real microphone).
        await call.wait_for(lambda r: r.name == "audio", timeout_s=60)
        talking = asyncio.create_task(call.send_audio(interruption + silence(1.5)))
        try:
            cancelled = await call.wait_for(lambda r: r.name == "LLM_CHAT_CANCELLED", timeout_s=30)
            at = call.received.index(cancelled)
            end = await call.wait_for(lambda r: r.name == "SentenceEnd", after=at, timeout_s=30)
            assert "plus" in end.payload["result"].lower(), end.payload
            # The new answer speaks (its first audio is enough: the CPU is shared).
            begin = await call.wait_for(lambda r: r.name == "TTS_BEGIN", after=at, timeout_s=90)
            await call.wait_for(
                lambda r: r.name == "audio", after=call.received.index(begin), timeout_s=90
            )
        finally:
            await talking
        after = call.received[at + 1 :]
        names = [r.name for r in after]
        # Nothing of the cancelled answer after its cancel: no text, no audio until the
        # new answer begins.
        new_answer = names.index("LLM_CHAT_BEGIN")
        assert "LLM_CHAT_DELTA" not in names[:new_answer]
        assert "LLM_CHAT_END" not in names[:new_answer]
        first_new_tts = names.index("TTS_BEGIN")
        assert "audio" not in names[:first_new_tts], names[:first_new_tts]
        # ...and the new answer speaks.
        assert "audio" in names[first_new_tts:]
        assert "LLM_CHAT_CANCELLED" not in names
    finally:
        await call.aclose()

"""Failover end to end: a stack with two replicas of each service over a NATS server the
test controls. A replica that holds the call is killed (SIGKILL) or frozen (SIGSTOP)
mid-utterance or mid-answer; the gateway moves the call to the other replica and the
client still gets the utterance transcribed once and answered once. NATS itself is
killed and restarted on the same port and store mid-call: everyone reconnects.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from services.stack.bella_client import BellaCall, Received
from services.stack.holders import StackLog
from services.stack.runner import RunningStack, running_stack
from services.stack.topology import StackOptions
from shared.settings import CommonSettings
from tests.support.bella_order import order_violations
from tests.support.natsserver import LocalNats, free_port
from tests.support.speech import silence, synthesize

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

API_KEY = "failover-test-key"
COUNTING = "Do what the user asks. Write numbers as English words, separated by commas."


@pytest.fixture(scope="module")
def nats() -> Iterator[LocalNats]:
    server = LocalNats()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack_log() -> StackLog:
    return StackLog()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(nats: LocalNats, stack_log: StackLog) -> AsyncIterator[RunningStack]:
    options = StackOptions(
        data_dir=CommonSettings().data_dir,
        nats_url=nats.url,
        gateway_port=free_port(),
        api_keys=(API_KEY,),
        replicas={"asr": 2, "llm": 2, "tts": 2},
    )
    async with running_stack(options, echo=stack_log) as running:
        yield running


@pytest.fixture(scope="module")
def speech_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="speech-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def question(speech_dir: Path) -> bytes:
    return synthesize("What is the capital of France?", speech_dir)


@pytest.fixture(scope="module")
def count_request(speech_dir: Path) -> bytes:
    # A long answer, so the loss lands in the middle of it.
    return synthesize("Please count from one to twenty.", speech_dir)


def _payload(system: str = "Answer in one short sentence.") -> dict[str, object]:
    return {
        "format": "pcm",
        "sample_rate": 16000,
        "enable_intermediate_result": True,
        "llm_option": {"main": {"temperature": 0.0, "max_tokens": 60, "sys_prompt": system}},
        "tts_option": {"sample_rate": 16000},
    }


async def _kill(stack: RunningStack, stack_log: StackLog, service: str, sig: int) -> str:
    """Signal the process whose replica holds the call; returns its replica id."""
    holder = await stack_log.holder(service)
    pid = stack.supervisor.pid_of(holder.child)
    assert pid is not None
    os.kill(pid, sig)
    return holder.replica


async def _moved(stack_log: StackLog, service: str, replica: str, after: int) -> None:
    await stack_log.wait_line(
        lambda line: f"{service} of call" in line and f"moved from {replica}" in line,
        after=after,
        timeout_s=20,
    )


async def _answered_once(call: BellaCall, heard: str = "france") -> tuple[Received, Received]:
    """The turn completes; the utterance was transcribed once and answered once."""
    await call.wait_for(lambda r: r.name == "TTS_END", timeout_s=120)
    end = await call.wait_for(lambda r: r.name == "LLM_CHAT_END", timeout_s=30)
    finals = [r for r in call.received if r.name == "SentenceEnd"]
    assert len(finals) == 1, [f.payload for f in finals]
    assert heard in finals[0].payload["result"].lower()
    assert call.names().count("LLM_CHAT_END") == 1
    assert call.names().count("TTS_END") == 1
    deltas = "".join(r.payload["data"] for r in call.received if r.name == "LLM_CHAT_DELTA")
    # Nothing of the answer was lost or said twice on its way to the client.
    assert deltas == end.payload["data"]
    assert order_violations(call.names()) == []
    return finals[0], end


async def _finish(call: BellaCall) -> None:
    await call.stop(timeout_s=60)
    assert call.names()[-2:] == ["TranscriptionCompleted", "SESSION_CLOSE"]


async def test_asr_killed_mid_utterance(
    stack: RunningStack, stack_log: StackLog, question: bytes
) -> None:
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        assert (await call.start(_payload())).name == "TranscriptionStarted"
        half = len(question) // 2 // 3200 * 3200
        await call.send_audio(question[:half])
        mark = len(stack_log.lines)
        replica = await _kill(stack, stack_log, "asr", signal.SIGKILL)
        await call.send_audio(question[half:] + silence(1.5))
        await _moved(stack_log, "asr", replica, mark)
        await _answered_once(call)
        await _finish(call)
    finally:
        await call.aclose()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["kill", "stop"])
async def test_llm_lost_mid_answer(
    stack: RunningStack, stack_log: StackLog, count_request: bytes, sig: int
) -> None:
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    frozen: int | None = None
    try:
        assert (await call.start(_payload(COUNTING))).name == "TranscriptionStarted"
        await call.send_audio(count_request + silence(1.5), realtime=False)
        await call.wait_for(lambda r: r.name == "LLM_CHAT_DELTA", timeout_s=60)
        mark = len(stack_log.lines)
        holder = await stack_log.holder("llm")
        frozen = stack.supervisor.pid_of(holder.child)
        assert frozen is not None
        os.kill(frozen, sig)
        await _moved(stack_log, "llm", holder.replica, mark)
        _, end = await _answered_once(call, "count")
        words = end.payload["data"].lower()
        # Continued, not restarted: the count is said once.
        assert words.count("three") == 1 and "ten" in words, words
        await _finish(call)
    finally:
        if sig == signal.SIGSTOP and frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        await call.aclose()


async def test_tts_killed_mid_answer(
    stack: RunningStack, stack_log: StackLog, count_request: bytes
) -> None:
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        assert (await call.start(_payload(COUNTING))).name == "TranscriptionStarted"
        await call.send_audio(count_request + silence(1.5), realtime=False)
        await call.wait_for(lambda r: r.name == "audio", timeout_s=90)
        mark = len(stack_log.lines)
        replica = await _kill(stack, stack_log, "tts", signal.SIGKILL)
        await _moved(stack_log, "tts", replica, mark)
        await _answered_once(call, "count")
        assert len(call.audio()) / 2 / 16000 >= 1.0
        await _finish(call)
    finally:
        await call.aclose()


async def test_nats_restarted_mid_call(
    stack: RunningStack, nats: LocalNats, question: bytes
) -> None:
    call = await BellaCall.open(f"{stack.gateway_url}/v1/audio/realtime", stack.api_key)
    try:
        assert (await call.start(_payload())).name == "TranscriptionStarted"
        await call.send_audio(silence(0.5))
        await asyncio.to_thread(nats.restart)
        await call.send_audio(question + silence(1.5))
        await _answered_once(call)
        await _finish(call)
    finally:
        await call.aclose()

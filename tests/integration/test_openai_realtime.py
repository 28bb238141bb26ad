"""End to end with the official `openai` SDK as the client: ``/v1/realtime`` on the whole
stack (gateway, ASR, LLM, TTS over a real NATS, real models), with real speech made by
espeak-ng at test time. Answers are kept short (LLM_MAX_TOKENS_LIMIT) to stay fast."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from openai import AsyncOpenAI

from services.stack.runner import RunningStack, running_stack
from services.stack.topology import StackOptions
from shared.settings import CommonSettings
from tests.support.natsserver import free_port
from tests.support.speech import silence, synthesize

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

API_KEY = "openai-e2e-key"
RATE = 24000
MODEL = "gpt-realtime"  # any name: the gateway answers with its own models
AUDIO_PCM = {"type": "audio/pcm", "rate": RATE}


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


@pytest.fixture(scope="module")
def question(speech_dir: Path) -> bytes:
    return synthesize("What is the capital of France?", speech_dir, rate=RATE)


@dataclass
class Client:
    """An SDK connection plus every server event it received, in order."""

    conn: Any
    events: list[Any] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    closed: bool = False

    async def read(self) -> None:
        try:
            async for event in self.conn:
                self.events.append(event)
                async with self.changed:
                    self.changed.notify_all()
        finally:
            self.closed = True
            async with self.changed:
                self.changed.notify_all()

    async def wait_for(
        self, match: Callable[[Any], bool], *, after: int = 0, timeout_s: float = 60.0
    ) -> Any:
        async with asyncio.timeout(timeout_s):
            async with self.changed:
                while True:
                    for event in self.events[after:]:
                        if match(event):
                            return event
                    if self.closed:
                        raise ConnectionError(f"closed; got {self.types()}")
                    await self.changed.wait()

    async def wait_type(self, kind: str, *, after: int = 0, timeout_s: float = 60.0) -> Any:
        return await self.wait_for(lambda e: e.type == kind, after=after, timeout_s=timeout_s)

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def index(self, event: Any) -> int:
        return next(i for i, e in enumerate(self.events) if e is event)

    async def speak(self, pcm: bytes, *, realtime: bool, frame_ms: int = 100) -> None:
        step = RATE * 2 * frame_ms // 1000
        t0 = asyncio.get_running_loop().time()
        for i, offset in enumerate(range(0, len(pcm), step)):
            if realtime:
                delay = t0 + i * frame_ms / 1000 - asyncio.get_running_loop().time()
                if delay > 0:
                    await asyncio.sleep(delay)  # paced like a microphone
            chunk = base64.b64encode(pcm[offset : offset + step]).decode()
            await self.conn.input_audio_buffer.append(audio=chunk)


@contextlib.asynccontextmanager
async def realtime(stack: RunningStack, session: Any, **connect: Any) -> AsyncIterator[Client]:
    http_url = stack.gateway_url.replace("ws://", "http://", 1) + "/v1"
    sdk = AsyncOpenAI(base_url=http_url, api_key=stack.api_key, max_retries=0)
    async with sdk.realtime.connect(model=MODEL, **connect) as conn:
        client = Client(conn)
        reader = asyncio.create_task(client.read())
        try:
            created = await client.wait_type("session.created", timeout_s=10)
            assert created.session.id
            await conn.session.update(session=session)
            await client.wait_type("session.updated", timeout_s=10)
            yield client
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    await sdk.close()


def voice_session(turn_detection: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "realtime",
        "instructions": "You are a helpful voice assistant. Answer in one short sentence.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": AUDIO_PCM,
                "transcription": {"model": "whisper-1"},
                "turn_detection": turn_detection,
            },
            "output": {"format": AUDIO_PCM},
        },
    }


def audio_of(client: Client, response_id: str) -> bytes:
    return b"".join(
        base64.b64decode(e.delta)
        for e in client.events
        if e.type == "response.output_audio.delta" and e.response_id == response_id
    )


async def test_server_vad_conversation_with_barge_in(
    stack: RunningStack, question: bytes, speech_dir: Path
) -> None:
    """A spoken turn is answered; speech over the next answer cancels it (turn_detected),
    nothing of it follows the cancel, and the interruption is answered."""
    story = synthesize("Tell me a long story about a brave little dragon.", speech_dir, rate=RATE)
    interruption = synthesize("Stop please. What is two plus two?", speech_dir, rate=RATE)
    vad = {"type": "server_vad", "silence_duration_ms": 500}
    async with realtime(stack, voice_session(vad)) as c:
        await c.speak(question + silence(1.0, RATE), realtime=False)
        await c.wait_type("input_audio_buffer.speech_started")
        await c.wait_type("input_audio_buffer.speech_stopped")
        committed = await c.wait_type("input_audio_buffer.committed")
        done = await c.wait_for(
            lambda e: e.type == "conversation.item.input_audio_transcription.completed"
        )
        assert done.item_id == committed.item_id
        assert "france" in done.transcript.lower()
        first = await c.wait_type("response.done", timeout_s=120)
        assert first.response.status == "completed"
        assert len(audio_of(c, first.response.id)) > RATE  # more than half a second

        mark = len(c.events)
        await c.speak(story + silence(1.0, RATE), realtime=False)
        delta = await c.wait_type("response.output_audio.delta", after=mark, timeout_s=120)
        talking = asyncio.create_task(c.speak(interruption + silence(1.5, RATE), realtime=True))
        try:
            cancelled = await c.wait_type("response.done", after=mark, timeout_s=60)
            assert cancelled.response.id == delta.response_id
            assert cancelled.response.status == "cancelled"
            assert cancelled.response.status_details.reason == "turn_detected"
            at = c.index(cancelled)
            heard = await c.wait_for(
                lambda e: (
                    e.type == "conversation.item.input_audio_transcription.completed"
                    and "plus" in e.transcript.lower()
                ),
                after=at,
            )
            assert heard.transcript
            new = await c.wait_type("response.created", after=at, timeout_s=60)
            await c.wait_for(
                lambda e: (
                    e.type == "response.output_audio.delta" and e.response_id == new.response.id
                ),
                after=at,
                timeout_s=120,
            )
        finally:
            await talking
        stale = [
            e.type
            for e in c.events[at + 1 :]
            if getattr(e, "response_id", None) == cancelled.response.id
        ]
        assert stale == [], stale


async def test_manual_commit_then_response_create(stack: RunningStack, question: bytes) -> None:
    async with realtime(stack, voice_session(None)) as c:
        await c.speak(question, realtime=False)
        await c.conn.input_audio_buffer.commit()
        committed = await c.wait_type("input_audio_buffer.committed")
        await c.conn.response.create()
        done = await c.wait_type("response.done", timeout_s=120)
        assert done.response.status == "completed"
        assert len(audio_of(c, done.response.id)) > 0
        transcript = next(
            e for e in c.events if e.type == "conversation.item.input_audio_transcription.completed"
        )
        assert transcript.item_id == committed.item_id
        assert "france" in transcript.transcript.lower()
        # Manual mode never detects speech by itself.
        assert "input_audio_buffer.speech_started" not in c.types()


async def test_text_turn_and_response_cancel(stack: RunningStack) -> None:
    async with realtime(stack, voice_session(None)) as c:
        await c.conn.response.cancel()  # nothing active: harmless
        await c.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Say hello to Ann."}],
            }
        )
        await c.conn.response.create()
        done = await c.wait_type("response.done", timeout_s=120)
        assert done.response.status == "completed"
        transcript = "".join(
            e.delta for e in c.events if e.type == "response.output_audio_transcript.delta"
        )
        assert transcript.strip()
        assert "error" not in c.types()

        mark = len(c.events)
        await c.conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Count from one to twenty."}],
            }
        )
        await c.conn.response.create()
        created = await c.wait_type("response.created", after=mark)
        await c.conn.response.cancel()
        done = await c.wait_type("response.done", after=mark, timeout_s=60)
        assert done.response.id == created.response.id
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"


async def test_transcription_only_session(stack: RunningStack, question: bytes) -> None:
    session = {
        "type": "transcription",
        "audio": {
            "input": {
                "format": AUDIO_PCM,
                "transcription": {"model": "whisper-1"},
                "turn_detection": {"type": "server_vad"},
            }
        },
    }
    async with realtime(stack, session, extra_query={"intent": "transcription"}) as c:
        await c.speak(question + silence(1.0, RATE), realtime=False)
        done = await c.wait_type("conversation.item.input_audio_transcription.completed")
        assert "france" in done.transcript.lower()
        assert not [t for t in c.types() if t.startswith("response.")]

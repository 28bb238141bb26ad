"""Turn plumbing with a stand-in synthesizer: what must hold whatever the engine does."""

from __future__ import annotations

import asyncio

from services.tts.framing import WavAudio
from services.tts.metrics import TtsMetrics
from services.tts.session import TtsSession
from services.tts.turn import TEXT_QUEUE_SIZE, TurnOptions
from services.tts.voices import Voice
from shared.messages import TtsBegin, TtsText, WireModel


async def test_cancel_releases_a_producer_blocked_on_a_full_text_queue() -> None:
    never = asyncio.Event()
    published: list[WireModel] = []

    async def stuck_engine(text: str, voice: Voice) -> WavAudio:
        await never.wait()  # an engine that never answers
        raise AssertionError("unreachable")

    begun = asyncio.Event()

    async def publish(message: WireModel) -> None:
        published.append(message)
        begun.set()

    session = TtsSession("sid-turn", None, stuck_engine, publish, TurnOptions(), TtsMetrics())
    many = "".join(f"Sentence number {i} is here. " for i in range(TEXT_QUEUE_SIZE + 10))
    feeding = asyncio.create_task(
        session.handle(TtsText(sid="sid-turn", turn=1, seq=0, text=many, final=True))
    )
    async with asyncio.timeout(5):
        await begun.wait()  # TtsBegin goes out before the text is queued
    assert isinstance(published[0], TtsBegin)
    # Blocked for good: the queue is full and the engine never takes the next segment.
    _done, pending = await asyncio.wait([feeding], timeout=0.3)
    assert pending
    assert session.current_turn is not None
    session.cancel(1)
    async with asyncio.timeout(5):
        await feeding
    await session.aclose()
    assert published == [published[0]]

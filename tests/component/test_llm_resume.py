"""Failover on the LLM side, with the real model: a turn that carries ``resume`` (the
answer's start the client already has from a lost replica) is continued, not restarted,
and the history holds the whole answer once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from services.llm.engine import EngineOptions, LlmEngine
from services.llm.metrics import LlmMetrics
from services.llm.prompt import continue_answer
from services.llm.settings import LlmSettings
from shared.messages import LlmDelta, LlmEnd, LlmOpen, LlmTurn, ServiceError, WireModel

QUESTION = "Count from one to ten in words, separated by commas."
RESUME = "One, two, three, four,"


@pytest.fixture(scope="module")
def engine() -> Iterator[LlmEngine]:
    settings = LlmSettings()
    eng = LlmEngine(EngineOptions(model_cache=settings.model_cache, slots=1), LlmMetrics())
    eng.load()
    try:
        yield eng
    finally:
        asyncio.run(eng.aclose())


def test_continue_answer_appends_the_started_answer() -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert continue_answer(messages, "") == messages
    assert continue_answer(messages, "Hel")[-1] == {"role": "assistant", "content": "Hel"}


async def test_a_resumed_turn_continues_the_answer(engine: LlmEngine) -> None:
    got: list[WireModel] = []
    done = asyncio.Event()

    async def publish(message: WireModel) -> None:
        got.append(message)
        if isinstance(message, LlmEnd | ServiceError):
            done.set()

    session = await engine.open_session(
        LlmOpen(sid="resume1", temperature=0.0, max_tokens=40), publish
    )
    try:
        await session.handle(
            LlmTurn(
                sid="resume1",
                turn=3,
                text=QUESTION,
                user_item_id="u",
                assistant_item_id="a",
                resume=RESUME,
            )
        )
        async with asyncio.timeout(60):
            await done.wait()
        end = got[-1]
        assert isinstance(end, LlmEnd), end
        continuation = "".join(m.text for m in got if isinstance(m, LlmDelta))
        # The deltas carry only what follows; the end carries the whole answer.
        assert end.text == RESUME + continuation
        words = continuation.lower()
        assert "five" in words and "one," not in words, continuation
        assert [(m.role, m.content) for m in session.history] == [
            ("user", QUESTION),
            ("assistant", end.text),
        ]
    finally:
        await session.aclose()

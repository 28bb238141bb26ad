"""The LLM engine and its sessions in-process, with the real model: prefill benefit,
exact cancel semantics, superseding turns, engine errors. One model load per module."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Iterator

import pytest

from services.llm.engine import EngineOptions, LlmEngine
from services.llm.metrics import LlmMetrics
from services.llm.session import LlmSession
from services.llm.settings import LlmSettings
from shared.messages import (
    ChatMessage,
    ErrorCode,
    LlmBegin,
    LlmDelta,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    ServiceError,
    WireModel,
)

# A long persona (~600 tokens), like the ones Bella sessions send.
RULES = [
    "greet the caller warmly and say your name is Aria",
    "keep every answer under three short sentences",
    "never read out links, code or lists; describe them in words instead",
    "if the caller sounds upset, acknowledge the feeling before answering",
    "when you do not know something, say so plainly and offer to help another way",
    "use the caller's name once you know it, but not in every sentence",
    "confirm numbers such as dates, amounts and phone numbers by repeating them",
    "do not give medical, legal or financial advice; suggest a professional",
    "prefer everyday words to technical jargon",
    "end the call politely when the caller says goodbye",
]


def persona(name: str) -> str:
    lines = [f"You are {name}, the voice assistant of a small bookshop called Paper Lantern."]
    for round_ in range(3):
        lines += [f"Rule {round_ * 10 + i + 1}: {rule}." for i, rule in enumerate(RULES)]
    lines.append("The shop opens at nine in the morning and closes at seven in the evening.")
    return " ".join(lines)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlmEngine]:
    settings = LlmSettings()
    eng = LlmEngine(
        EngineOptions(model_cache=settings.model_cache, slots=3, max_tokens_limit=512),
        LlmMetrics(),
    )
    started = time.monotonic()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    eng.load()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"\n[llm] load + warm-up {time.monotonic() - started:.1f} s, "
        f"peak RSS {rss_before / 1024:.0f} -> {rss_after / 1024:.0f} MiB"
    )
    try:
        yield eng
    finally:
        asyncio.run(eng.aclose())


class Capture:
    """The publish callback: records everything, wakes waiters."""

    def __init__(self) -> None:
        self.messages: list[WireModel] = []
        self.changed = asyncio.Event()

    async def __call__(self, message: WireModel) -> None:
        self.messages.append(message)
        self.changed.set()

    async def wait_for(self, predicate: type[WireModel], turn: int, timeout_s: float = 60) -> int:
        """Index of the first ``predicate`` message of ``turn``."""
        async with asyncio.timeout(timeout_s):
            while True:
                for i, m in enumerate(self.messages):
                    if (
                        isinstance(m, (predicate, ServiceError))
                        and getattr(m, "turn", None) == turn
                    ):
                        assert isinstance(m, predicate), m
                        return i
                self.changed.clear()
                await self.changed.wait()

    def of_turn(self, turn: int) -> list[WireModel]:
        return [m for m in self.messages if getattr(m, "turn", None) == turn]


async def open_session(
    engine: LlmEngine, capture: Capture, *, prefill: bool | None = None, **fields: object
) -> LlmSession:
    message = LlmOpen(sid="s" + str(time.monotonic_ns()), temperature=0.0, **fields)  # type: ignore[arg-type]
    return await engine.open_session(message, capture, prefill=prefill)


async def ttft_of_first_turn(engine: LlmEngine, system: str, *, prefill: bool) -> float:
    capture = Capture()
    session = await open_session(engine, capture, prefill=prefill, system_prompt=system)
    try:
        await session.wait_prefilled()
        await session.handle(LlmTurn(sid=session.sid, turn=1, text="When do you open?"))
        end = capture.messages[await capture.wait_for(LlmEnd, 1)]
        assert isinstance(end, LlmEnd) and end.text
        return end.ttft_ms
    finally:
        await session.aclose()


async def test_prefilled_system_prompt_makes_the_first_answer_faster(engine: LlmEngine) -> None:
    # Different personas, so neither can reuse the other's cached prompt.
    cold = await ttft_of_first_turn(engine, persona("Aria"), prefill=False)
    warm = await ttft_of_first_turn(engine, persona("Nova"), prefill=True)
    print(
        f"\n[llm] ~600-token persona, first-turn ttft: no prefill {cold:.0f} ms, prefilled {warm:.0f} ms"
    )


async def test_cancel_is_final_and_keeps_the_partial_answer_out_of_history(
    engine: LlmEngine,
) -> None:
    capture = Capture()
    session = await open_session(engine, capture, max_tokens=200)
    try:
        await session.handle(
            LlmTurn(sid=session.sid, turn=1, text="Count from one to one hundred in words.")
        )
        await capture.wait_for(LlmDelta, 1)
        session.cancel(1)
        cancelled_at = len(capture.messages)
        await session.handle(LlmTurn(sid=session.sid, turn=2, text="Say hello."))
        end = await capture.wait_for(LlmEnd, 2)
        assert not [m for m in capture.messages[cancelled_at:] if getattr(m, "turn", None) == 1]
        assert not [m for m in capture.of_turn(1) if isinstance(m, LlmEnd)]
        assert session.history[0] == ChatMessage(
            role="user", content="Count from one to one hundred in words."
        )
        assert session.history[1].role == "user"  # no partial answer between the two
        assert len(session.history) == 3
        assert end > cancelled_at
    finally:
        await session.aclose()


async def test_a_new_turn_cancels_the_running_one(engine: LlmEngine) -> None:
    capture = Capture()
    session = await open_session(engine, capture, max_tokens=200)
    try:
        await session.handle(
            LlmTurn(sid=session.sid, turn=1, text="Tell me a long story about a lighthouse.")
        )
        await capture.wait_for(LlmDelta, 1)
        await session.handle(LlmTurn(sid=session.sid, turn=2, text="What is two plus two?"))
        superseded_at = len(capture.messages)
        end = capture.messages[await capture.wait_for(LlmEnd, 2)]
        assert isinstance(end, LlmEnd)
        assert "4" in end.text or "four" in end.text.lower()
        assert not [m for m in capture.messages[superseded_at:] if getattr(m, "turn", None) == 1]
        assert not [m for m in capture.of_turn(1) if isinstance(m, LlmEnd)]
    finally:
        await session.aclose()


async def test_a_turn_cancelled_before_it_arrives_is_skipped(engine: LlmEngine) -> None:
    capture = Capture()
    session = await open_session(engine, capture, prefill=False)
    try:
        session.cancel(3)  # the cancel travels ahead of the queued turn
        await session.handle(LlmTurn(sid=session.sid, turn=3, text="Hello?"))
        await session.handle(LlmTurn(sid=session.sid, turn=4, text="Say yes."))
        await capture.wait_for(LlmEnd, 4)
        assert capture.of_turn(3) == []
        assert isinstance(capture.of_turn(4)[0], LlmBegin)
    finally:
        await session.aclose()


async def test_an_engine_failure_becomes_a_service_error(engine: LlmEngine) -> None:
    capture = Capture()
    session = await open_session(engine, capture, prefill=False)
    try:
        # Far more than a slot's context: the engine refuses it.
        await session.handle(LlmTurn(sid=session.sid, turn=1, text="word " * 6000))
        error = capture.messages[await capture.wait_for(ServiceError, 1)]
        assert isinstance(error, ServiceError)
        assert error.code == ErrorCode.ENGINE_FAILED and error.turn == 1
        assert not [m for m in capture.of_turn(1) if isinstance(m, LlmEnd)]
        # The session stays usable.
        await session.handle(LlmTurn(sid=session.sid, turn=2, text="Say yes."))
        await capture.wait_for(LlmEnd, 2)
    finally:
        await session.aclose()


async def test_decode_speed(engine: LlmEngine) -> None:
    capture = Capture()
    session = await open_session(engine, capture, max_tokens=64)
    try:
        await session.wait_prefilled()
        started = time.monotonic()
        await session.handle(
            LlmTurn(sid=session.sid, turn=1, text="Describe the sea in four sentences.")
        )
        end = capture.messages[await capture.wait_for(LlmEnd, 1)]
        assert isinstance(end, LlmEnd) and end.tokens > 5
        elapsed = time.monotonic() - started - end.ttft_ms / 1000
        print(
            f"\n[llm] warm ttft {end.ttft_ms:.0f} ms, {end.tokens} tokens, "
            f"{(end.tokens - 1) / max(elapsed, 1e-3):.1f} tokens/s decode, "
            f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
        )
    finally:
        await session.aclose()

"""An LLM session's history operations and checks that need no generation."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.llm.metrics import LlmMetrics
from services.llm.session import LlmSession, SessionOptions
from services.llm.templates import PromptTemplateError
from shared.messages import (
    ChatMessage,
    ErrorCode,
    HistoryOp,
    LlmEdit,
    LlmOpen,
    LlmUpdate,
    ServiceError,
)


def make(opened: LlmOpen, published: list[Any], released: list[int]) -> LlmSession:
    async def publish(message: Any) -> None:
        published.append(message)

    def start(request: dict[str, Any], stream: Any) -> None:
        raise AssertionError("no generation expected")

    return LlmSession(
        opened,
        publish=publish,
        start=start,
        metrics=LlmMetrics(CollectorRegistry()),
        options=SessionOptions(prefill=False),
        slot=0,
        release_slot=lambda: released.append(0),
    )


def test_bad_template_refuses_the_open_and_frees_the_slot() -> None:
    released: list[int] = []
    with pytest.raises(PromptTemplateError, match="unknown variable"):
        make(LlmOpen(sid="s", system_prompt="{{ nope }}"), [], released)
    assert released == [0]


async def test_edits_and_updates() -> None:
    history = (
        ChatMessage(role="user", content="hi", item_id="u1"),
        ChatMessage(role="assistant", content="hello there, how are you", item_id="a1"),
    )
    published: list[Any] = []
    released: list[int] = []
    session = make(LlmOpen(sid="s", history=history), published, released)
    await session.handle(LlmEdit(sid="s", op=HistoryOp.TRUNCATE, item_id="a1", content="hello"))
    assert session.history[-1].content == "hello"
    appended = ChatMessage(role="user", content="again", item_id="u2")
    await session.handle(LlmEdit(sid="s", op=HistoryOp.APPEND, message=appended))
    await session.handle(LlmEdit(sid="s", op=HistoryOp.DELETE, item_id="u1"))
    assert [m.item_id for m in session.history] == ["a1", "u2"]

    await session.handle(LlmUpdate(sid="s", system_prompt="{{ ''.__class__ }}"))
    (error,) = published
    assert isinstance(error, ServiceError) and error.code is ErrorCode.BAD_REQUEST
    assert "not allowed" in error.message
    await session.handle(LlmUpdate(sid="s", system_prompt="Be brief.", temperature=0.1))
    assert len(published) == 1
    await session.aclose()
    assert released == [0]

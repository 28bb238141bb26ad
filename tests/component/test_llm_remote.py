"""Remote chat models against a real OpenAI-compatible server: llama.cpp's own HTTP
server (from the xllamacpp wheel) serving the packaged Qwen model in a subprocess.

One server for the module; the engine routes by model name, sessions cannot tell a
remote answer from an embedded one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.llm.chunks import ChunkEvent, Finished, TextPiece
from services.llm.engine import EngineOptions, LlmEngine
from services.llm.metrics import LlmMetrics
from services.llm.remote import RemoteChat
from services.llm.settings import LlmSettings
from services.llm.stream import StreamClosed, TokenStream
from shared.messages import LlmBegin, LlmDelta, LlmEnd, LlmOpen, LlmTurn, ServiceError, WireModel
from shared.modelfiles import QWEN_05B, ensure_model
from shared.remote import RemoteMetrics
from shared.routing import ChatRoute, parse_routing
from tests.support.servers import listening_server


@pytest.fixture(scope="module")
def model_path() -> Path:
    return ensure_model(QWEN_05B, LlmSettings().model_cache) / QWEN_05B.filename


@pytest.fixture(scope="module")
def chat_url(model_path: Path) -> Iterator[str]:
    with listening_server(["tests.support.chat_server", str(model_path)]) as url:
        yield url + "/v1"


def route(url: str, **fields: object) -> ChatRoute:
    return ChatRoute.model_validate(
        {"backend": "openai", "base_url": url, "model": "qwen", "read_timeout_s": 60} | fields
    )


async def collect(stream: TokenStream) -> list[ChunkEvent]:
    events: list[ChunkEvent] = []
    async with asyncio.timeout(60):
        while not isinstance(event := await stream.next(), StreamClosed):
            events.append(event)
    return events


def ask(text: str, max_tokens: int = 24) -> dict[str, object]:
    return {
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "cache_prompt": True,
        "id_slot": 0,  # llama.cpp-only fields: dropped on the way to a remote server
    }


async def test_remote_chat_streams_an_answer_with_usage(chat_url: str) -> None:
    metrics = RemoteMetrics("llm", CollectorRegistry())
    chat = RemoteChat("local-qwen", route(chat_url), metrics)
    stream = TokenStream(asyncio.get_running_loop())
    try:
        await chat.generate(ask("Say hello in three words."), stream)
        events = await collect(stream)
    finally:
        await chat.aclose()
    text = "".join(e.text for e in events if isinstance(e, TextPiece))
    assert text.strip(), events
    finished = events[-1]
    assert isinstance(finished, Finished), events
    assert finished.reason in ("stop", "length")
    assert finished.tokens is not None and 0 < finished.tokens <= 24
    assert finished.prompt_tokens is not None and finished.prompt_tokens > 5
    completion = metrics.tokens.labels("llm", "local-qwen", "completion")._value.get()
    assert completion == finished.tokens
    assert metrics.requests.labels("llm", "local-qwen", "ok")._value.get() == 1


async def test_a_session_routed_to_a_remote_model(chat_url: str) -> None:
    table = parse_routing(
        {
            "defaults": {"llm": "local-qwen"},
            "llm": {
                "local-qwen": {
                    "backend": "openai",
                    "base_url": chat_url,
                    "model": "q",
                    "read_timeout_s": 60,
                }
            },
        }
    )
    engine = LlmEngine(
        EngineOptions(model_cache=Path("unused"), embedded=False), LlmMetrics(), table
    )
    assert engine.unknown_models(("local-qwen", "qwen2.5-0.5b")) == ("qwen2.5-0.5b",)
    engine.load()  # no embedded model to load: only the HTTP client
    out: asyncio.Queue[WireModel] = asyncio.Queue(maxsize=1000)

    async def publish(message: WireModel) -> None:
        out.put_nowait(message)

    session = await engine.open_session(
        LlmOpen(sid="s1", system_prompt="You are terse.", temperature=0.0, max_tokens=24),
        publish,
    )
    assert session.slot is None  # no llama.cpp slot is held for a remote model
    try:
        await session.handle(LlmTurn(sid="s1", turn=1, text="What colour is the sky?"))
        received: list[WireModel] = []
        async with asyncio.timeout(60):
            while not isinstance(message := await out.get(), LlmEnd | ServiceError):
                received.append(message)
        assert isinstance(message, LlmEnd), message
        assert isinstance(received[0], LlmBegin)
        deltas = [m.text for m in received if isinstance(m, LlmDelta)]
        assert deltas and "".join(deltas) == message.text
        assert message.tokens > 0
        assert [m.role for m in session.history] == ["user", "assistant"]
    finally:
        await session.aclose()
        await engine.aclose()


async def test_an_unknown_model_fails_the_request_with_a_clear_code() -> None:
    engine = LlmEngine(
        EngineOptions(model_cache=Path("unused"), embedded=False),
        LlmMetrics(),
        parse_routing(
            {
                "defaults": {"llm": "x"},
                "llm": {
                    "x": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}
                },
            }
        ),
    )
    engine.load()
    stream = TokenStream(asyncio.get_running_loop())
    try:
        engine.start_generation(ask("hi") | {"model": "nope"}, stream)
        events = await collect(stream)
    finally:
        await engine.aclose()
    assert [getattr(e, "code", None) for e in events] == ["unknown_model"]

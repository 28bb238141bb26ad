"""Error paths of the remote chat client, on `httpx.MockTransport`: timeouts, 429 with
Retry-After, a 500 then success, malformed and truncated streams, cancel mid-stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from prometheus_client import CollectorRegistry

from services.llm.chunks import ChunkEvent, Failed, Finished, TextPiece
from services.llm.remote import RemoteChat
from services.llm.stream import StreamClosed, TokenStream
from shared.remote import RemoteMetrics
from shared.routing import ChatRoute

ROUTE = ChatRoute(
    backend="openai",
    base_url="http://remote.test/v1",
    model="m",
    api_key_env=None,
    max_retries=2,
    retry_backoff_s=0.0,
    max_retry_after_s=1.0,
)
REQUEST = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def sse(*payloads: str) -> bytes:
    return "".join(f"data: {p}\n\n" for p in payloads).encode()


ANSWER = sse(
    '{"choices":[{"delta":{"content":"Hel"}}]}',
    '{"choices":[{"delta":{"content":"lo"}}]}',
    '{"choices":[{"delta":{},"finish_reason":"stop"}]}',
    '{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2}}',
    "[DONE]",
)


def ok(body: bytes = ANSWER) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


class Server:
    """Answers requests from a script of responses (or exceptions), and counts them."""

    def __init__(self, *script: httpx.Response | Exception | Callable[[], httpx.Response]):
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step() if callable(step) else step


async def run(
    server: Server | httpx.AsyncBaseTransport, route: ChatRoute = ROUTE
) -> tuple[list[ChunkEvent], RemoteMetrics]:
    metrics = RemoteMetrics("llm", CollectorRegistry())
    transport = (
        server if isinstance(server, httpx.AsyncBaseTransport) else httpx.MockTransport(server)
    )
    chat = RemoteChat("m", route, metrics, transport=transport)
    stream = TokenStream(asyncio.get_running_loop())
    events: list[ChunkEvent] = []
    try:
        await chat.generate(REQUEST, stream)
        async with asyncio.timeout(5):
            while not isinstance(event := await stream.next(), StreamClosed):
                events.append(event)
    finally:
        await chat.aclose()
    return events, metrics


def text_of(events: list[ChunkEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextPiece))


async def test_a_clean_answer() -> None:
    server = Server(ok())
    events, metrics = await run(server)
    assert text_of(events) == "Hello"
    assert events[-1] == Finished(reason="stop", tokens=2, prompt_tokens=4)
    assert metrics.tokens.labels("llm", "m", "completion")._value.get() == 2
    body = server.requests[0].read()
    assert b'"model":"m"' in body and b'"stream":true' in body
    assert server.requests[0].url == "http://remote.test/v1/chat/completions"


async def test_429_with_retry_after_is_retried() -> None:
    server = Server(httpx.Response(429, headers={"retry-after": "0"}), ok())
    events, metrics = await run(server)
    assert text_of(events) == "Hello"
    assert len(server.requests) == 2
    assert metrics.retries.labels("llm", "m", "429")._value.get() == 1


async def test_429_asking_for_too_long_a_wait_fails_at_once() -> None:
    server = Server(httpx.Response(429, headers={"retry-after": "120"}), ok())
    events, _ = await run(server)
    assert events == [Failed(code="remote_http_429")]
    assert len(server.requests) == 1


async def test_500_then_success() -> None:
    server = Server(httpx.Response(500, text="boom"), ok())
    events, metrics = await run(server)
    assert text_of(events) == "Hello"
    assert metrics.requests.labels("llm", "m", "ok")._value.get() == 1


async def test_persistent_503_gives_up_after_the_retries() -> None:
    server = Server(httpx.Response(503))
    events, _ = await run(server)
    assert events == [Failed(code="remote_http_503")]
    assert len(server.requests) == 1 + ROUTE.max_retries


async def test_a_client_error_is_not_retried() -> None:
    server = Server(httpx.Response(401, json={"error": {"message": "bad key"}}), ok())
    events, _ = await run(server)
    assert events == [Failed(code="remote_http_401")]
    assert len(server.requests) == 1


async def test_connection_refused_is_retried_then_reported() -> None:
    server = Server(httpx.ConnectError("refused"))
    events, metrics = await run(server)
    assert events == [Failed(code="remote_unreachable")]
    assert len(server.requests) == 1 + ROUTE.max_retries
    assert metrics.retries.labels("llm", "m", "connect")._value.get() == ROUTE.max_retries


async def test_a_read_timeout_is_reported_not_retried() -> None:
    server = Server(httpx.ReadTimeout("slow"), ok())
    events, _ = await run(server)
    assert events == [Failed(code="remote_timeout")]
    assert len(server.requests) == 1


async def test_malformed_sse_data() -> None:
    body = sse('{"choices":[{"delta":{"content":"Hi"}}]}', "{this is not json")
    events, metrics = await run(Server(ok(body)))
    assert events == [TextPiece("Hi"), Failed(code="bad_chunk")]
    assert metrics.requests.labels("llm", "m", "bad_chunk")._value.get() == 1


async def test_a_200_that_is_not_an_event_stream() -> None:
    response = httpx.Response(200, json={"choices": []})
    events, _ = await run(Server(response))
    assert events == [Failed(code="bad_chunk")]


async def test_an_error_object_mid_stream() -> None:
    body = sse('{"choices":[{"delta":{"content":"Hi"}}]}', '{"error":{"type":"overloaded"}}')
    events, _ = await run(Server(ok(body)))
    assert events == [TextPiece("Hi"), Failed(code="overloaded")]


async def test_a_truncated_stream_is_a_failure_and_not_retried() -> None:
    server = Server(ok(sse('{"choices":[{"delta":{"content":"Hel"}}]}')), ok())
    events, _ = await run(server)
    assert events == [TextPiece("Hel"), Failed(code="truncated_stream")]
    assert len(server.requests) == 1  # text was already out: never retried


class SlowStream(httpx.AsyncByteStream):
    """One chunk, then silence until closed."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield sse('{"choices":[{"delta":{"content":"Hi"}}]}')
        await asyncio.Event().wait()  # the server never says more
        yield b""

    async def aclose(self) -> None:
        self.closed.set()


async def test_cancel_closes_a_silent_stream_at_once() -> None:
    body = SlowStream()

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)

    metrics = RemoteMetrics("llm", CollectorRegistry())
    chat = RemoteChat("m", ROUTE, metrics, transport=httpx.MockTransport(handler))
    stream = TokenStream(asyncio.get_running_loop())
    task = asyncio.create_task(chat.generate(REQUEST, stream))
    stream.add_stop_callback(task.cancel)
    try:
        async with asyncio.timeout(5):
            assert await stream.next() == TextPiece("Hi")
            stream.stop()
            await body.closed.wait()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await chat.aclose()
    assert metrics.requests.labels("llm", "m", "cancelled")._value.get() == 1

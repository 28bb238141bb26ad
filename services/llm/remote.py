"""A chat model behind an OpenAI-compatible ``/v1/chat/completions`` (streamed) endpoint.

vLLM, Ollama, llama.cpp's server, DashScope compatible mode, Volcengine Ark and OpenAI
all speak it. The answer arrives as server-sent events, one chat-completion chunk per
``data:`` line, ended by ``data: [DONE]``; with ``stream_options.include_usage`` a last
chunk with empty ``choices`` carries the token usage.

`RemoteChat.generate` feeds the same `services.llm.chunks` events into the session's
`TokenStream` as the embedded engine does, so a session cannot tell them apart. It runs
as a task on the event loop (no thread): `TokenStream.stop` cancels that task, which
closes the HTTP stream at once, even while the server is silent.

Failure codes (the `Failed` event a session reports): ``remote_http_<status>``,
``remote_unreachable``, ``remote_timeout``, ``bad_chunk`` (not JSON, or an error
object mid-stream), ``truncated_stream`` (the connection ended before ``[DONE]`` or a
finish reason). Retries happen only before the first token (`shared.remote`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from services.llm.chunks import ChunkEvent, Failed, Finished, parse_chunk
from services.llm.stream import TokenStream
from shared.remote import RemoteError, RemoteMetrics, RetryPolicy, client_options, send_async
from shared.routing import ChatRoute

log = logging.getLogger(__name__)

# Request fields every OpenAI-compatible server understands; llama.cpp's own
# (``id_slot``, ``cache_prompt``) would be refused by some providers.
_OPENAI_FIELDS = frozenset(
    {
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
    }
)


def chat_body(request: Mapping[str, Any], route: ChatRoute) -> dict[str, Any]:
    """The provider's request body for one of our engine requests (pure)."""
    body: dict[str, Any] = {k: v for k, v in request.items() if k in _OPENAI_FIELDS}
    schema = request.get("json_schema")
    if schema is not None and "response_format" not in body:
        # llama.cpp's shorthand for structured output, in OpenAI's words.
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }
    body.update(route.extra_body)
    body["model"] = route.model
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass
class ChunkAssembler:
    """Sans-I/O: SSE ``data`` payloads in, chunk events out, the finish held to the end.

    The finish reason comes one chunk before the usage, so `Finished` is only emitted by
    `end`, with the usage folded in.
    """

    finished: Finished | None = None
    done: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def feed(self, data: str) -> list[ChunkEvent]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            return [Failed(code="bad_chunk")]
        if not isinstance(chunk, dict):
            return [Failed(code="bad_chunk")]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = _int_or_none(usage.get("prompt_tokens"))
            self.completion_tokens = _int_or_none(usage.get("completion_tokens"))
        out: list[ChunkEvent] = []
        for event in parse_chunk(chunk):
            if isinstance(event, Finished):
                self.finished = event
            else:
                out.append(event)
        return out

    def end(self) -> list[ChunkEvent]:
        """The events once the stream ended: the finish, or `Failed` if it was cut short."""
        if self.finished is None and not self.done:
            return [Failed(code="truncated_stream")]
        base = self.finished or Finished(reason="stop")
        return [
            Finished(
                reason=base.reason,
                tokens=self.completion_tokens
                if self.completion_tokens is not None
                else base.tokens,
                tokens_per_s=base.tokens_per_s,
                prompt_tokens=(
                    self.prompt_tokens if self.prompt_tokens is not None else base.prompt_tokens
                ),
                cached_tokens=base.cached_tokens,
            )
        ]


def _failure_code(exc: RemoteError) -> str:
    if exc.status is not None:
        return f"remote_http_{exc.status}"
    if "timed out" in str(exc):
        return "remote_timeout"
    return "remote_unreachable"


class RemoteChat:
    """One routing-table chat model on a remote server; shared by every session."""

    def __init__(
        self,
        name: str,
        route: ChatRoute,
        metrics: RemoteMetrics,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.route = route
        self._metrics = metrics
        self._policy = RetryPolicy.of(route)
        # The key is read once, at start-up: a missing variable fails the replica then.
        self._client = httpx.AsyncClient(
            **client_options(route, api_key=route.api_key()), transport=transport
        )

    async def generate(self, request: Mapping[str, Any], stream: TokenStream) -> None:
        """Stream one answer into ``stream`` and close it; never raises (but cancels)."""
        body = chat_body(request, self.route)
        what = f"chat model {self.name}"
        assembler = ChunkAssembler()
        last: list[ChunkEvent] = []
        result = "cancelled"  # what the metric says if the task is cancelled
        try:
            response = await send_async(
                self._client,
                lambda: self._client.build_request("POST", "chat/completions", json=body),
                self._policy,
                what=what,
                on_retry=self._metrics.retry_counter(self.name),
            )
            try:
                result = await self._relay(response, assembler, stream)
            finally:
                await response.aclose()
            if result == "ok":
                last = assembler.end()
        except RemoteError as exc:
            log.warning("%s", exc)
            last = [Failed(code=_failure_code(exc))]
        except SSEError as exc:  # not an event stream at all
            log.warning("%s: %s", what, exc)
            last = [Failed(code="bad_chunk")]
        except httpx.TimeoutException:
            log.warning("%s: stream stalled for %.1f s", what, self.route.read_timeout_s)
            last = [Failed(code="remote_timeout")]
        except httpx.HTTPError as exc:  # the connection broke mid-answer
            log.warning("%s: stream broke: %s", what, type(exc).__name__)
            last = [Failed(code="truncated_stream")]
        finally:
            failed = next((e for e in last if isinstance(e, Failed)), None)
            self._metrics.request_done(self.name, result if failed is None else failed.code)
            self._metrics.usage(
                self.name, prompt=assembler.prompt_tokens, completion=assembler.completion_tokens
            )
        stream.close(last)

    async def _relay(
        self, response: httpx.Response, assembler: ChunkAssembler, stream: TokenStream
    ) -> str:
        """Pass events on until the answer ends; its outcome for the metric."""
        async for sse in EventSource(response).aiter_sse():
            events = assembler.feed(sse.data)
            if not stream.offer(events):
                return "cancelled"
            failed = next((e for e in events if isinstance(e, Failed)), None)
            if failed is not None:
                log.warning("chat model %s sent %s", self.name, failed.code)
                return failed.code
            if assembler.done:
                break
        return "ok"

    async def aclose(self) -> None:
        await self._client.aclose()

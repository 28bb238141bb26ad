"""HTTP plumbing shared by the remote (OpenAI-compatible) backends of every service.

* `RetryPolicy` is the sans-I/O decision: given an attempt and how it failed, wait how
  long before the next one, or give up. Retryable: connection failures (nothing reached
  the server), 408, 429 (honouring ``Retry-After``, capped) and 5xx. Anything else (a
  400, a 401 for a bad key, a read timeout once the server has the request) is final.
* `send_async` / `send_sync` run that policy around one request and return the first
  response with a 2xx status, still unread (``stream=True``), so a streaming caller
  only ever retries *before* its first token.
* `RemoteError` carries the HTTP status and whether a retry might have helped.

Only status codes and short messages reach logs and peers, never response bodies
beyond a short excerpt (they may echo the prompt).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter

from shared.errors import EngineError
from shared.routing import HttpRoute

log = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({408, 429})
_BODY_EXCERPT = 200
# Failures where the request certainly or very likely never reached the model.
_RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,  # a kept-alive connection the server had already closed
)


class RemoteError(EngineError):
    """A remote model server failed; ``status`` is its HTTP status (None: no response)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message, retryable=retryable)
        self.status = status


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def is_retryable_status(status: int) -> bool:
    return status in _RETRYABLE_STATUS or 500 <= status <= 599


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    backoff_s: float = 0.25
    max_retry_after_s: float = 10.0

    @classmethod
    def of(cls, route: HttpRoute) -> RetryPolicy:
        return cls(route.max_retries, route.retry_backoff_s, route.max_retry_after_s)

    def delay(
        self, attempt: int, *, status: int | None = None, retry_after: float | None = None
    ) -> float | None:
        """Wait before attempt ``attempt + 1`` (``attempt`` counts from 0), or None: give up.

        ``status`` None means the connection failed before any response.
        """
        if attempt >= self.max_retries:
            return None
        if status is not None and not is_retryable_status(status):
            return None
        if retry_after is not None:
            if retry_after > self.max_retry_after_s:
                return None  # the server asks for longer than a live call can wait
            return retry_after
        return float(self.backoff_s * 2.0**attempt)


def client_options(route: HttpRoute, *, api_key: str | None) -> dict[str, Any]:
    """Keyword arguments for `httpx.AsyncClient` / `httpx.Client` talking to ``route``."""
    headers = dict(route.headers)
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return {
        "base_url": route.base_url + "/",
        "headers": headers,
        "timeout": httpx.Timeout(
            connect=route.connect_timeout_s,
            read=route.read_timeout_s,
            write=route.read_timeout_s,
            pool=route.connect_timeout_s,
        ),
        "limits": httpx.Limits(
            max_connections=route.max_connections,
            max_keepalive_connections=route.max_connections,
        ),
    }


def _excerpt(body: bytes) -> str:
    text = body[:_BODY_EXCERPT].decode("utf-8", "replace").strip()
    return " ".join(text.split())


def _status_error(response: httpx.Response, body: bytes, what: str) -> RemoteError:
    return RemoteError(
        f"{what}: HTTP {response.status_code} {_excerpt(body)}".rstrip(),
        status=response.status_code,
        retryable=is_retryable_status(response.status_code),
    )


OnRetry = Callable[[str], None]
"""Told the reason of each retry ("connect", "429", "503"...), for a metric."""


async def send_async(
    client: httpx.AsyncClient,
    build: Callable[[], httpx.Request],
    policy: RetryPolicy,
    *,
    what: str,
    on_retry: OnRetry | None = None,
) -> httpx.Response:
    """The first 2xx response to ``build()``, unread; the caller closes it.

    Raises `RemoteError`. Cancelling is safe: a response in hand is closed.
    """
    attempt = 0
    while True:
        try:
            response = await client.send(build(), stream=True)
        except _RETRYABLE_ERRORS as exc:
            delay = policy.delay(attempt)
            if delay is None:
                raise RemoteError(f"{what}: {type(exc).__name__}", retryable=True) from exc
            reason = "connect"
        except httpx.TimeoutException as exc:
            raise RemoteError(f"{what}: timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise RemoteError(f"{what}: {type(exc).__name__}") from exc
        else:
            if response.is_success:
                return response
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = policy.delay(attempt, status=response.status_code, retry_after=retry_after)
            if delay is None:
                raise _status_error(response, body, what)
            reason = str(response.status_code)
        log.info("%s: retrying in %.2f s (%s)", what, delay, reason)
        if on_retry is not None:
            on_retry(reason)
        await asyncio.sleep(delay)
        attempt += 1


def send_sync(
    client: httpx.Client,
    build: Callable[[], httpx.Request],
    policy: RetryPolicy,
    *,
    what: str,
    on_retry: OnRetry | None = None,
) -> httpx.Response:
    """`send_async` for a worker thread (blocking); the response is already read."""
    attempt = 0
    while True:
        try:
            response = client.send(build())
        except _RETRYABLE_ERRORS as exc:
            delay = policy.delay(attempt)
            if delay is None:
                raise RemoteError(f"{what}: {type(exc).__name__}", retryable=True) from exc
            reason = "connect"
        except httpx.TimeoutException as exc:
            raise RemoteError(f"{what}: timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise RemoteError(f"{what}: {type(exc).__name__}") from exc
        else:
            if response.is_success:
                return response
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = policy.delay(attempt, status=response.status_code, retry_after=retry_after)
            if delay is None:
                raise _status_error(response, response.content, what)
            reason = str(response.status_code)
        log.info("%s: retrying in %.2f s (%s)", what, delay, reason)
        if on_retry is not None:
            on_retry(reason)
        time.sleep(delay)  # a decode thread, never the event loop
        attempt += 1


class RemoteMetrics:
    """Remote-backend figures on a service's registry; ``model`` is a routing-table name."""

    def __init__(self, service: str, registry: CollectorRegistry) -> None:
        self.service = service
        self.requests = Counter(
            "voice_remote_requests_total",
            "Requests to remote model servers by outcome (ok, or a failure code)",
            ["service", "model", "result"],
            registry=registry,
        )
        self.retries = Counter(
            "voice_remote_retries_total",
            "Retried remote requests by reason (connect, or the HTTP status)",
            ["service", "model", "reason"],
            registry=registry,
        )
        self.tokens = Counter(
            "voice_remote_tokens_total",
            "Tokens a remote chat model reported (kind: prompt, completion)",
            ["service", "model", "kind"],
            registry=registry,
        )

    def request_done(self, model: str, result: str) -> None:
        self.requests.labels(self.service, model, result).inc()

    def retry_counter(self, model: str) -> OnRetry:
        def count(reason: str) -> None:
            self.retries.labels(self.service, model, reason).inc()

        return count

    def usage(self, model: str, *, prompt: int | None, completion: int | None) -> None:
        if prompt:
            self.tokens.labels(self.service, model, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(self.service, model, "completion").inc(completion)

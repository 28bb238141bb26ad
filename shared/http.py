"""Plain HTTP answers (health, readiness, metrics) served by the `websockets` server.

Both the gateway and the workers use `websockets`' ``process_request`` hook, so one
well-kept server library handles every socket we open; a request that is not a
WebSocket upgrade is answered here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

ReadyCheck = Callable[[], Awaitable[tuple[bool, str]]]


def response(status: HTTPStatus, body: bytes | str, content_type: str = "text/plain") -> Response:
    data = body.encode() if isinstance(body, str) else body
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
        ]
    )
    return Response(status.value, status.phrase, headers, data)


async def health_response(
    path: str, registry: CollectorRegistry, ready: ReadyCheck
) -> Response | None:
    """Answer ``/healthz``, ``/readyz`` and ``/metrics``; ``None`` for any other path."""
    if path == "/healthz":
        return response(HTTPStatus.OK, "ok\n")
    if path == "/readyz":
        ok, why = await ready()
        return response(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, why + "\n")
    if path == "/metrics":
        return response(HTTPStatus.OK, generate_latest(registry), CONTENT_TYPE_LATEST)
    return None


def path_of(request: Request) -> str:
    return request.path.split("?", 1)[0]

"""The gateway server: routes, authentication before the upgrade, health, drain.

Wiring lives here: which path is served by which protocol, and the HTTP answers given
in ``process_request`` before any WebSocket exists (health endpoints, 404, 401/403/429).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus

import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from services.gateway.auth import CallLimiter, KeyRing, presented_key
from services.gateway.connection import BellaConnection, Context
from services.gateway.metrics import GatewayMetrics, RejectReason
from services.gateway.settings import GatewaySettings
from shared.bus import NatsBus
from shared.http import health_response, path_of, response

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True)
class Route:
    """A WebSocket endpoint: which protocol adapter, with or without an answer."""

    endpoint: str  # metric label
    answer: bool  # LLM + TTS, or transcription only


ROUTES: dict[str, Route] = {
    "/v1/audio/realtime": Route("bella_realtime", answer=True),
    "/v1/audio/asr/stream": Route("bella_asr", answer=False),
}


@dataclass(frozen=True)
class _Admission:
    route: Route
    key_id: int


class Gateway:
    """Serves every endpoint on one port; `start`, then `drain` and/or `aclose`."""

    def __init__(
        self,
        settings: GatewaySettings,
        bus: NatsBus,
        metrics: GatewayMetrics,
        ready: ReadyCheck,
    ) -> None:
        self._settings = settings
        self._ctx = Context(settings=settings, bus=bus, metrics=metrics)
        self._metrics = metrics
        self._ready = ready
        self._keys = KeyRing(settings.api_keys)
        self._limiter = CallLimiter(settings.max_calls_per_key)
        self._admitted: dict[ServerConnection, _Admission] = {}
        self._calls: set[BellaConnection] = set()
        self._server: Server | None = None
        self._tg = asyncio.TaskGroup()
        self._draining = False
        self.port = 0
        if not len(self._keys):
            log.warning("no API keys configured (GATEWAY_API_KEYS): every call is refused")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self._tg.__aenter__()
        s = self._settings
        self._server = await websockets.serve(
            self._handle,
            s.host,
            s.port,
            process_request=self._process_request,
            max_size=s.max_frame_bytes,
            close_timeout=s.close_timeout_s,
            # Compression costs CPU per audio frame for almost no gain on PCM.
            compression=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]

    async def drain(self, grace_s: float) -> None:
        """Stop accepting, let calls finish within ``grace_s``, then end the rest. Idempotent."""
        if self._server is None:
            return
        self._draining = True
        self._server.close(close_connections=False)
        calls = list(self._calls)
        if calls and grace_s > 0:
            log.info("draining: waiting up to %.0f s for %d call(s)", grace_s, len(calls))
            await asyncio.wait(
                [asyncio.ensure_future(c.wait_closed()) for c in calls], timeout=grace_s
            )
        left = list(self._calls)
        for call in left:
            await call.shutdown()
        if left:
            await asyncio.wait(
                [asyncio.ensure_future(c.wait_closed()) for c in left],
                timeout=self._settings.close_timeout_s + 1.0,
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.close_timeout_s + 1.0):
                await self._server.wait_closed()
        log.info(
            "drained: %d call(s) finished in the grace period, %d ended",
            len(calls) - len(left),
            len(left),
        )

    async def aclose(self) -> None:
        """Drain without grace and release everything; safe to call twice."""
        await self.drain(0.0)
        if self._server is not None:
            self._server = None
            await self._tg.__aexit__(None, None, None)

    @property
    def draining(self) -> bool:
        return self._draining

    async def ready(self) -> tuple[bool, str]:
        if self._draining:
            return False, "draining"
        return await self._ready()

    # ------------------------------------------------------------------ HTTP, before upgrade

    async def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = path_of(request)
        answer = await health_response(path, self._metrics.registry, self.ready)
        if answer is not None:
            return answer
        route = ROUTES.get(path)
        if route is None:
            self._metrics.rejected(RejectReason.NOT_FOUND)
            return response(HTTPStatus.NOT_FOUND, "not found\n")
        key = presented_key(request.headers, request.path)
        if key is None:
            self._metrics.rejected(RejectReason.MISSING_KEY)
            return response(HTTPStatus.UNAUTHORIZED, "missing API key\n")
        key_id = self._keys.identify(key)
        if key_id is None:
            self._metrics.rejected(RejectReason.UNKNOWN_KEY)
            return response(HTTPStatus.FORBIDDEN, "unknown API key\n")
        if self._draining:
            self._metrics.rejected(RejectReason.DRAINING)
            return response(HTTPStatus.SERVICE_UNAVAILABLE, "draining\n")
        if not self._limiter.acquire(key_id):
            self._metrics.rejected(RejectReason.OVER_KEY_LIMIT)
            return response(
                HTTPStatus.TOO_MANY_REQUESTS, "too many concurrent calls for this key\n"
            )
        self._admitted[conn] = _Admission(route, key_id)
        # Released when the TCP connection is gone, whether or not the upgrade completed
        # (a client may vanish between this check and the handler).
        self._tg.create_task(self._release_when_closed(conn, key_id))
        return None

    async def _release_when_closed(self, conn: ServerConnection, key_id: int) -> None:
        try:
            await conn.wait_closed()
        finally:
            self._limiter.release(key_id)
            self._admitted.pop(conn, None)

    # ------------------------------------------------------------------ WebSocket

    async def _handle(self, ws: ServerConnection) -> None:
        admission = self._admitted.get(ws)
        if admission is None:  # cannot happen: every upgrade went through _process_request
            await ws.close(CloseCode.INTERNAL_ERROR, "not admitted")
            return
        call = BellaConnection(
            ws, self._ctx, answer=admission.route.answer, endpoint=admission.route.endpoint
        )
        self._calls.add(call)
        try:
            await call.run()
        finally:
            self._calls.discard(call)

"""The gateway server: routes, authentication before the upgrade, health, drain.

Wiring lives here: which path is served by which protocol, and the HTTP answers given
in ``process_request`` before any WebSocket exists (health endpoints, 404, 401/403/429).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from services.gateway.auth import CallLimiter, KeyRing, presented_key, redact_handshake_logs
from services.gateway.bella.session import BellaSession
from services.gateway.connection import CallConnection, Context
from services.gateway.conversation import ConversationDefaults
from services.gateway.coze.session import CozeSession
from services.gateway.liveness import ReplicaMonitor
from services.gateway.metrics import GatewayMetrics, RejectReason
from services.gateway.openai.session import OpenAiSession
from services.gateway.protocol import Output, ProtocolSession
from services.gateway.settings import GatewaySettings
from services.gateway.volcengine.session import VolcengineSession
from shared.bus import NatsBus
from shared.http import health_response, path_of, response
from shared.state import SessionStore

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], Awaitable[tuple[bool, str]]]


class Protocol(StrEnum):
    BELLA = "bella"
    OPENAI = "openai"
    VOLCENGINE = "volcengine"
    COZE = "coze"


@dataclass(frozen=True)
class Route:
    """A WebSocket endpoint: which protocol adapter, with or without an answer."""

    endpoint: str  # metric label
    protocol: Protocol
    answer: bool  # LLM + TTS, or transcription only (OpenAI: the session type decides)


ROUTES: dict[str, Route] = {
    "/v1/audio/realtime": Route("bella_realtime", Protocol.BELLA, answer=True),
    "/v1/audio/asr/stream": Route("bella_asr", Protocol.BELLA, answer=False),
    "/v1/realtime": Route("openai_realtime", Protocol.OPENAI, answer=True),
    "/api/live_voice_call/chat": Route("volcengine_chat", Protocol.VOLCENGINE, answer=True),
    "/v1/chat": Route("coze_chat", Protocol.COZE, answer=True),
}


@dataclass(frozen=True)
class _Adapter:
    session: ProtocolSession
    greeting: list[Output]
    drain_code: int
    half_duplex: bool = False


def _half_duplex(query: dict[str, list[str]]) -> bool:
    """``?duplex=half`` on any endpoint: the user is not heard while the assistant talks."""
    value = query.get("duplex", ["full"])[0]
    if value not in ("full", "half"):
        raise ValueError(f"duplex must be 'full' or 'half', not {value!r}")
    return value == "half"


def _adapter(route: Route, request: Request, conversation: ConversationDefaults) -> _Adapter:
    """The protocol adapter of a new connection, from its route and upgrade request."""
    query = parse_qs(urlsplit(request.path).query)
    half = _half_duplex(query)
    if route.protocol is Protocol.BELLA:
        bella = BellaSession(answer=route.answer, conversation=conversation)
        return _Adapter(bella, [], CloseCode.GOING_AWAY, half)
    if route.protocol is Protocol.VOLCENGINE:
        volc = VolcengineSession(query, conversation=conversation)
        return _Adapter(volc, volc.opened(), CloseCode.GOING_AWAY, half)
    if route.protocol is Protocol.COZE:
        coze = CozeSession(query, conversation=conversation)
        return _Adapter(coze, coze.opened(), CloseCode.GOING_AWAY, half)
    intent = query.get("intent", [""])[0]
    model = query.get("model", [None])[0]
    # Beta clients announce themselves; they get the beta event names and session shape.
    beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "").replace(" ", "")
    session = OpenAiSession(
        beta=beta,
        kind="transcription" if intent == "transcription" else "realtime",
        model=model,
        resume=query.get("session_id", [None])[0],  # our extension: docs/resume.md
    )
    # 1012 (service restart) on drain: the SDKs reconnect, to another replica.
    return _Adapter(session, session.opened(), CloseCode.SERVICE_RESTART, half)


@dataclass(frozen=True)
class _Admission:
    route: Route
    key_id: str
    adapter: _Adapter


class Gateway:
    """Serves every endpoint on one port; `start`, then `drain` and/or `aclose`."""

    def __init__(
        self,
        settings: GatewaySettings,
        bus: NatsBus,
        metrics: GatewayMetrics,
        ready: ReadyCheck,
        store: SessionStore | None = None,
    ) -> None:
        self._settings = settings
        # Checked once at start: a wrong GATEWAY_DEFAULT_PERSONA stops the gateway.
        self._conversation = ConversationDefaults.from_settings(settings)
        # Owner of this replica's sessions in the store; unique per process by default.
        self.replica_id = settings.replica_id or f"gw-{uuid.uuid4().hex[:12]}"
        self._monitor = ReplicaMonitor(bus.nc)
        self._ctx = Context(
            settings=settings,
            bus=bus,
            metrics=metrics,
            monitor=self._monitor,
            store=store,
            replica_id=self.replica_id,
        )
        self._metrics = metrics
        self._ready = ready
        self._keys = KeyRing(settings.api_keys, file=settings.api_keys_file)
        redact_handshake_logs()
        self._limiter = CallLimiter(settings.max_calls_per_key)
        self._admitted: dict[ServerConnection, _Admission] = {}
        self._calls: set[CallConnection] = set()
        self._server: Server | None = None
        self._tg = asyncio.TaskGroup()
        self._draining = False
        self.port = 0
        if not len(self._keys):
            log.warning("no API keys configured (GATEWAY_API_KEYS[_FILE]): every call is refused")

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
            await self._monitor.aclose()

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
        try:
            adapter = _adapter(route, request, self._conversation)
        except ValueError as exc:
            self._metrics.rejected(RejectReason.BAD_REQUEST)
            return response(HTTPStatus.BAD_REQUEST, f"{exc}\n")
        if not self._limiter.acquire(key_id):
            self._metrics.rejected(RejectReason.OVER_KEY_LIMIT)
            return response(
                HTTPStatus.TOO_MANY_REQUESTS, "too many concurrent calls for this key\n"
            )
        self._admitted[conn] = _Admission(route, key_id, adapter)
        # Released when the TCP connection is gone, whether or not the upgrade completed
        # (a client may vanish between this check and the handler).
        self._tg.create_task(self._release_when_closed(conn, key_id))
        return None

    async def _release_when_closed(self, conn: ServerConnection, key_id: str) -> None:
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
        adapter = admission.adapter
        call = CallConnection(
            ws,
            self._ctx,
            adapter.session,
            endpoint=admission.route.endpoint,
            greeting=adapter.greeting,
            drain_code=adapter.drain_code,
            half_duplex=adapter.half_duplex,
            key_id=admission.key_id,
        )
        self._calls.add(call)
        try:
            await call.run()
        finally:
            self._calls.discard(call)

"""The replica runtime shared by the ASR, LLM and TTS services.

A replica:

1. loads its engine (models) off the event loop, then
2. joins the control plane: a ``nats.micro`` service named after the service, with an
   ``assign`` endpoint in the service's queue group. One replica answers each request
   with its id (the micro service id, so ``$SRV.PING.<svc>.<id>`` probes it). At
   capacity the endpoint is unsubscribed, so the queue group only offers the request to
   replicas with room; with none left the requester gets no-responders at once.
3. serves the data plane: ``<svc>.w.<id>.in`` (one call's messages, in order, into a
   bounded per-session inbox drained by that session's task) and ``<svc>.w.<id>.ctl``
   (cancels, applied at once, ahead of any queued data).

Sessions are created by an open message and finished by a close message; a session
that hears nothing for ``idle_timeout_s`` is closed, so a vanished gateway leaks nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import websockets
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service, ServiceConfig
from prometheus_client import Counter
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request as HttpRequest
from websockets.http11 import Response

from shared import codec, subjects
from shared.bus import NatsBus
from shared.errors import DecodeError, ProtocolError
from shared.http import health_response, path_of, response
from shared.messages import (
    AssignReply,
    AssignRequest,
    Cancel,
    ErrorCode,
    Message,
    ServiceError,
    ServiceName,
    SessionClosed,
    WireModel,
)
from shared.metrics import ServiceMetrics
from shared.settings import WorkerSettings

log = logging.getLogger(__name__)

Publish = Callable[[WireModel], Awaitable[None]]


class SessionWorker(Protocol):
    """One call's state inside a replica."""

    async def handle(self, message: Message) -> None:
        """Process one data-plane message; called in arrival order, one at a time."""

    def cancel(self, turn: int) -> None:
        """Stop the work of ``turn`` now; must not block (runs ahead of queued data)."""

    async def aclose(self) -> None:
        """Release the session's resources; called once, also after errors."""


class Engine(Protocol):
    """What a service plugs into the runtime."""

    service: ServiceName
    open_types: tuple[type[WireModel], ...]
    close_types: tuple[type[WireModel], ...]

    def load(self) -> None:
        """Load models (blocking; run in a thread before the replica takes calls)."""

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        """The names in ``models`` this replica has no backend for (routing table)."""

    async def open_session(self, message: Message, publish: Publish) -> SessionWorker:
        """Create the session an open message asks for."""

    async def aclose(self) -> None:
        """Release engine resources (subprocesses, model memory)."""


class _Idle:
    """Put in a session's inbox by the idle sweep: the session heard nothing for too long."""


_IDLE = _Idle()


@dataclass
class _Slot:
    worker: SessionWorker
    inbox: asyncio.Queue[Message | _Idle]
    task: asyncio.Task[None] | None = None
    # Monotonic time of the last message. An idle sweep over all sessions replaces a
    # timeout around every inbox read: a timer per audio frame cost more than the frame.
    last: float = field(default_factory=time.monotonic)


class WorkerRuntime:
    """Runs one replica of a service until SIGTERM/SIGINT or `stop()`."""

    def __init__(
        self,
        engine: Engine,
        settings: WorkerSettings,
        metrics: ServiceMetrics,
        *,
        inbox_size: int = 600,
        idle_timeout_s: float = 180.0,
        drain_grace_s: float = 10.0,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.inbox_size = inbox_size
        self.idle_timeout_s = idle_timeout_s
        self.drain_grace_s = drain_grace_s
        self.replica_id = ""
        self._svc = engine.service
        self._bus: NatsBus | None = None
        self._micro: Service | None = None
        self._sessions: dict[str, _Slot] = {}
        self._reserved: dict[str, float] = {}  # sid -> monotonic time of assignment
        self._accepting = True
        self._assign_open = False
        self._ready = False
        self._stop = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._message_counters: dict[tuple[str, type], Counter] = {}
        self._dropped_inbox_full = metrics.dropped.labels(self._svc.value, "inbox_full")
        metrics.session_capacity.labels(self._svc.value).set(settings.max_sessions)

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        health = await websockets.serve(
            self._never_upgrade,
            self.settings.health_host,
            self.settings.health_port,
            process_request=self._process_http,
        )
        port = next(iter(health.sockets)).getsockname()[1]
        log.info("%s health on http://%s:%d", self._svc.value, self.settings.health_host, port)
        try:
            started = time.monotonic()
            await asyncio.to_thread(self.engine.load)
            log.info("%s engine loaded in %.1f s", self._svc.value, time.monotonic() - started)
            self._bus = await NatsBus.connect(
                self.settings.bus_options(f"{self._svc.value}-worker"), self.metrics
            )
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                sweeper = tg.create_task(self._sweep_idle(), name="idle-sweep")
                await self._join_planes()
                self._ready = True
                # The line the launcher and tests wait for.
                print(
                    f"READY {self._svc.value} replica={self.replica_id} health_port={port}",
                    flush=True,
                )
                await self._stop.wait()
                await self._drain()
                sweeper.cancel()
        finally:
            self._ready = False
            health.close()
            await health.wait_closed()
            if self._micro is not None:
                with contextlib.suppress(Exception):
                    await self._micro.stop()
            if self._bus is not None:
                await self._bus.aclose()
            await self.engine.aclose()
            log.info("%s replica %s stopped", self._svc.value, self.replica_id)

    async def _join_planes(self) -> None:
        assert self._bus is not None
        self._micro = await add_service(
            self._bus.nc,
            ServiceConfig(
                name=self._svc.value,
                version="0.1.0",
                description=f"{self._svc.value} replica",
                queue_group=self._svc.value,
            ),
        )
        self.replica_id = self._micro.id
        await self._bus.subscribe(subjects.worker_in(self._svc, self.replica_id), self._on_data)
        await self._bus.subscribe(subjects.worker_ctl(self._svc, self.replica_id), self._on_ctl)
        await self._micro.add_endpoint(
            name="assign", subject=subjects.assign(self._svc), handler=self._on_assign
        )
        self._assign_open = True
        await self._bus.nc.flush()

    async def _drain(self) -> None:
        """Stop taking calls, give running ones a grace period, then cancel the rest."""
        self._accepting = False
        await self._update_gate()
        self._ready = False
        deadline = time.monotonic() + self.drain_grace_s
        while self._sessions and time.monotonic() < deadline:
            tasks = [s.task for s in self._sessions.values() if s.task is not None]
            if not tasks:
                break
            await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for slot in list(self._sessions.values()):
            if slot.task is not None:
                slot.task.cancel()

    # ------------------------------------------------------------------ control plane

    async def _on_assign(self, req: Request) -> None:
        try:
            msg = codec.decode(req.data)
        except DecodeError:
            await req.respond_error("400", "bad assign request")
            return
        if not isinstance(msg, AssignRequest):
            await req.respond_error("400", "expected an assign request")
            return
        self._expire_reservations()
        unknown = self.engine.unknown_models(msg.models)
        if unknown:
            self.metrics.assignments.labels(self._svc.value, "unknown_model").inc()
            reply = AssignReply(
                sid=msg.sid,
                replica=self.replica_id,
                ok=False,
                code=ErrorCode.UNKNOWN_MODEL,
                message=f"no {self._svc.value} backend is configured for model "
                + ", ".join(repr(m) for m in unknown),
            )
        elif not self._accepting or self._load() >= self.settings.max_sessions:
            # Lost a race with the gate: say so; the requester retries on another replica.
            self.metrics.assignments.labels(self._svc.value, "full").inc()
            reply = AssignReply(
                sid=msg.sid,
                replica=self.replica_id,
                ok=False,
                code=ErrorCode.OVERLOADED,
                message="replica full",
            )
        else:
            self._reserved[msg.sid] = time.monotonic()
            self.metrics.assignments.labels(self._svc.value, "accepted").inc()
            reply = AssignReply(sid=msg.sid, replica=self.replica_id)
        await req.respond(codec.encode(reply))
        await self._update_gate()

    def _load(self) -> int:
        return len(self._sessions) + len(self._reserved)

    def _expire_reservations(self) -> None:
        # A gateway that asked but never opened (it died, or another service refused).
        cutoff = time.monotonic() - 15.0
        for sid in [s for s, t in self._reserved.items() if t < cutoff]:
            del self._reserved[sid]

    async def _update_gate(self) -> None:
        """Serve ``assign`` only while there is room (and we are not draining)."""
        if self._micro is None:
            return
        want_open = self._accepting and self._load() < self.settings.max_sessions
        if want_open == self._assign_open:
            return
        endpoint = next(e for e in self._micro._endpoints if e._name == "assign")
        # nats-py 2.16 (pinned) exposes no public pause; its Endpoint subscribes in
        # _start and unsubscribes in _stop, which is exactly the gate we need.
        if want_open:
            await endpoint._start()
        else:
            await endpoint._stop()
        self._assign_open = want_open

    # ------------------------------------------------------------------ data plane

    def _count(self, direction: str, message: WireModel) -> None:
        # Labelled children cached: a label lookup per audio frame is measurable.
        key = (direction, message.__class__)
        counter = self._message_counters.get(key)
        if counter is None:
            counter = self.metrics.messages.labels(
                self._svc.value, direction, message.__class__.__name__
            )
            self._message_counters[key] = counter
        counter.inc()

    async def _publish(self, message: WireModel) -> None:
        assert self._bus is not None
        sid = getattr(message, "sid")  # noqa: B009 - WireModel itself declares no sid
        self._count("out", message)
        await self._bus.publish(subjects.session_out(sid), message)

    async def _on_ctl(self, message: Message) -> None:
        if isinstance(message, Cancel):
            slot = self._sessions.get(message.sid)
            if slot is not None:
                slot.worker.cancel(message.turn)

    async def _on_data(self, message: Message) -> None:
        self._count("in", message)
        sid = getattr(message, "sid", "")
        if isinstance(message, self.engine.open_types):
            await self._open(sid, message)
            return
        slot = self._sessions.get(sid)
        if slot is None:
            if not isinstance(message, self.engine.close_types):
                await self._publish(
                    ServiceError(
                        sid=sid,
                        service=self._svc,
                        code=ErrorCode.UNKNOWN_SESSION,
                        message=f"{self._svc.value} replica has no session {sid}",
                    )
                )
            return
        slot.last = time.monotonic()
        self._deliver(slot, message)

    def _deliver(self, slot: _Slot, item: Message | _Idle) -> None:
        if slot.inbox.full():
            # Drop-oldest: the freshest audio matters most in a live call.
            slot.inbox.get_nowait()
            self._dropped_inbox_full.inc()
        slot.inbox.put_nowait(item)

    async def _sweep_idle(self) -> None:
        interval = min(5.0, max(0.05, self.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - self.idle_timeout_s
            for slot in list(self._sessions.values()):
                if slot.last < cutoff:
                    slot.last = float("inf")  # told once
                    self._deliver(slot, _IDLE)

    async def _open(self, sid: str, message: Message) -> None:
        assert self._tg is not None
        self._reserved.pop(sid, None)
        if sid in self._sessions:
            log.warning("session %s opened twice; keeping the first", sid)
            return
        try:
            worker = await self.engine.open_session(message, self._publish)
        except ProtocolError as exc:
            # The request itself is wrong (bad template, unknown voice...): say what, once.
            known = {c.value for c in ErrorCode}
            code = ErrorCode(exc.code) if exc.code in known else ErrorCode.BAD_REQUEST
            self.metrics.errors.labels(self._svc.value, code.value).inc()
            await self._publish(
                ServiceError(sid=sid, service=self._svc, code=code, message=str(exc))
            )
            return
        except Exception as exc:
            log.exception("cannot open session %s", sid)
            self.metrics.errors.labels(self._svc.value, ErrorCode.ENGINE_FAILED.value).inc()
            await self._publish(
                ServiceError(
                    sid=sid,
                    service=self._svc,
                    code=ErrorCode.ENGINE_FAILED,
                    message=f"cannot open {self._svc.value} session: {type(exc).__name__}",
                )
            )
            return
        slot = _Slot(worker=worker, inbox=asyncio.Queue(maxsize=self.inbox_size))
        self._sessions[sid] = slot
        self.metrics.sessions_active.labels(self._svc.value).set(len(self._sessions))
        slot.task = self._tg.create_task(self._run_session(sid, slot), name=f"session-{sid}")

    async def _run_session(self, sid: str, slot: _Slot) -> None:
        closed_cleanly = False
        try:
            while True:
                message = await slot.inbox.get()
                if isinstance(message, _Idle):
                    log.info("session %s idle for %.0f s; closing", sid, self.idle_timeout_s)
                    break
                try:
                    await slot.worker.handle(message)
                except Exception:
                    log.exception("session %s failed handling %s", sid, message.type)
                    self.metrics.errors.labels(self._svc.value, ErrorCode.INTERNAL.value).inc()
                    await self._publish(
                        ServiceError(
                            sid=sid,
                            service=self._svc,
                            code=ErrorCode.INTERNAL,
                            message=f"{self._svc.value} failed on {message.type}",
                        )
                    )
                if isinstance(message, self.engine.close_types):
                    closed_cleanly = True
                    break
        finally:
            self._sessions.pop(sid, None)
            self.metrics.sessions_active.labels(self._svc.value).set(len(self._sessions))
            try:
                await slot.worker.aclose()
            finally:
                if closed_cleanly:
                    await self._publish(SessionClosed(sid=sid, service=self._svc))
                await self._update_gate()

    # ------------------------------------------------------------------ HTTP

    async def _ready_check(self) -> tuple[bool, str]:
        if not self._ready:
            return False, "not ready"
        if self._bus is None or not self._bus.connected:
            return False, "nats disconnected"
        return True, "ready"

    async def _process_http(self, conn: ServerConnection, request: HttpRequest) -> Response:
        answer = await health_response(path_of(request), self.metrics.registry, self._ready_check)
        return answer or response(HTTPStatus.NOT_FOUND, "not found\n")

    async def _never_upgrade(self, conn: ServerConnection) -> None:
        await conn.close(1008, "no websocket here")

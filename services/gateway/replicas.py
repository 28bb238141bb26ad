"""The replicas that serve one call, watched and replaced when one dies or hangs (I/O).

Each service's replica is watched through the gateway's `ReplicaMonitor`; when it is lost the call is placed
on another replica of the service, which the call core then brings up to date
(`CallCore.replica_lost`). The old replica is told to close the session in case it was
only hung: when it wakes up it must not go on serving the call.

Each placement of a service gets its own session id on the wire (``<sid>-<svc><n>``,
the call's own sid for the first), so the results of a replica that was replaced, which
a hung one may still publish when it wakes up, are told apart from its replacement's
and dropped: they arrive on a subject the call no longer listens to, or with a sid that
is not the service's current one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.subscription import Subscription

from services.gateway.call import Replicas
from services.gateway.liveness import ProbeOptions, ReplicaMonitor, Verdict
from shared import subjects
from shared.bus import Handler, NatsBus
from shared.errors import BusError, OverloadedError
from shared.messages import (
    AsrClose,
    Cancel,
    LlmBegin,
    LlmClose,
    LlmDelta,
    LlmEnd,
    LlmWorkerEvent,
    Message,
    SentenceBegin,
    ServiceError,
    ServiceName,
    SessionClosed,
    TranscriptFinal,
    TranscriptPartial,
    TtsAudio,
    TtsBegin,
    TtsClose,
    TtsEnd,
    TtsSegment,
    VadEvent,
    WireModel,
)
from shared.placement import assign_replica

log = logging.getLogger(__name__)

_ALL_TURNS = 2**31 - 1  # a Cancel stops its turn and every earlier one

OnReplaced = Callable[[ServiceName], Awaitable[None]]
OnFailed = Callable[[ServiceName, str], Awaitable[None]]


@dataclass(frozen=True)
class FailoverOptions:
    probe: ProbeOptions = field(default_factory=ProbeOptions)
    # A hung replica still belongs to the assign queue group and may take the request
    # without answering: short attempts, several of them, reach a live one quickly.
    assign_timeout_s: float = 0.5
    assign_attempts: int = 6
    # How long a call stays on a replica that does not answer probes when no other
    # replica of its service is up, before it is ended (a replica really stuck).
    stay_on_hung_s: float = 10.0


@dataclass
class _Placement:
    replica: str
    session_sid: str
    moving: bool = False  # being replaced: nothing is sent until the new one is up


def sender(message: Message) -> ServiceName | None:
    """The service that published ``message`` on a session's output subject."""
    match message:
        case VadEvent() | SentenceBegin() | TranscriptPartial() | TranscriptFinal():
            return ServiceName.ASR
        case LlmBegin() | LlmDelta() | LlmEnd() | LlmWorkerEvent():
            return ServiceName.LLM
        case TtsBegin() | TtsSegment() | TtsAudio() | TtsEnd():
            return ServiceName.TTS
        case ServiceError() | SessionClosed():
            return message.service
        case _:
            return None


def _close(service: ServiceName, sid: str) -> WireModel:
    match service:
        case ServiceName.ASR:
            return AsrClose(sid=sid, flush=False)
        case ServiceName.LLM:
            return LlmClose(sid=sid)
        case ServiceName.TTS:
            return TtsClose(sid=sid)


class CallReplicas:
    """Where each of one call's services is served, kept up to date on failures."""

    def __init__(
        self,
        bus: NatsBus,
        sid: str,
        replicas: Replicas,
        *,
        models: Callable[[ServiceName], tuple[str, ...]],
        handler: Handler,
        monitor: ReplicaMonitor,
        on_replaced: OnReplaced,
        on_failed: OnFailed,
        options: FailoverOptions = FailoverOptions(),
    ) -> None:
        self.sid = sid
        self._bus = bus
        self._models = models
        self._handler = handler
        self._monitor = monitor
        self._on_replaced = on_replaced
        self._on_failed = on_failed
        self._options = options
        self._placements: dict[ServiceName, _Placement] = {}
        for service in ServiceName:
            replica = replicas.of(service)
            if replica is not None:
                self._placements[service] = _Placement(replica, sid)
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._counter = 0
        self.failovers = 0  # replicas replaced so far

    def _period(self) -> float:
        """Roughly how long a silent replica takes to be called hung."""
        probe = self._options.probe
        return probe.misses_to_hung * max(probe.interval_s, probe.timeout_s)

    def start(self, tg: asyncio.TaskGroup) -> None:
        """Watch every replica, in tasks of the connection's TaskGroup."""
        for service in self._placements:
            self._tasks.append(tg.create_task(self._guard(service), name=f"watch-{service.value}"))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def aclose(self) -> None:
        self.stop()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - the bus closed under us at shutdown
                log.debug("unsubscribe failed: %s", exc)
        self._subs.clear()

    def replica(self, service: ServiceName) -> str | None:
        placement = self._placements.get(service)
        return None if placement is None else placement.replica

    # ------------------------------------------------------------------ routing

    def route(self, service: ServiceName, message: WireModel) -> tuple[str, WireModel] | None:
        """The replica to send ``message`` to and the message under its session id;
        ``None``: not now (the call core restores it on the replacement)."""
        placement = self._placements.get(service)
        if placement is None or placement.moving:
            return None
        if placement.session_sid != self.sid:
            message = message.model_copy(update={"sid": placement.session_sid})
        return placement.replica, message

    def settle(self, service: ServiceName) -> None:
        """The replacement is about to be restored: messages go to it from now on.

        The caller restores it before anything else is sent (under its send lock).
        """
        placement = self._placements.get(service)
        if placement is not None:
            placement.moving = False

    def accepts(self, message: Message) -> bool:
        """Whether ``message`` comes from a service's current session (not a replaced one)."""
        service = sender(message)
        placement = None if service is None else self._placements.get(service)
        if placement is None:
            return True
        return getattr(message, "sid", None) == placement.session_sid

    # ------------------------------------------------------------------ failover

    async def _guard(self, service: ServiceName) -> None:
        loop = asyncio.get_running_loop()
        unanswered_since: float | None = None  # first HUNG verdict of a streak we sat out
        last_hung = 0.0
        while True:
            placement = self._placements[service]
            verdict = await self._monitor.watch(service, placement.replica)
            if verdict is Verdict.HUNG:
                now = loop.time()
                # A streak: verdicts come every few probe periods while it stays silent.
                if unanswered_since is not None and now - last_hung > 4 * self._period():
                    unanswered_since = None  # it answered in between
                last_hung = now
                if unanswered_since is None:
                    unanswered_since = now
                stayed = now - unanswered_since
                if (
                    stayed < self._options.stay_on_hung_s
                    and not await self._monitor.another_replica(service, placement.replica)
                ):
                    # Overloaded rather than hung, most likely (a replica whose loop is
                    # starved of CPU misses probes too): with nowhere to go, moving the
                    # call would only end it. It stays, and is watched again.
                    log.warning(
                        "%s replica %s does not answer and no other replica is up: "
                        "call %s stays on it",
                        service.value,
                        placement.replica,
                        self.sid,
                    )
                    continue
            unanswered_since = None
            try:
                await self._replace(service, placement, resync=verdict is Verdict.RESYNC)
                self.failovers += 1
                await self._on_replaced(service)
            except Exception as exc:  # noqa: BLE001 - any failure ends the call cleanly
                # (BusError, OverloadedError, nats-py's own types): the client gets a
                # close it can resume from instead of a crashed connection.
                log.warning("%s replica lost and none replaces it: %s", service.value, exc)
                await self._on_failed(service, str(exc) or type(exc).__name__)
                return

    async def _replace(self, service: ServiceName, old: _Placement, *, resync: bool) -> None:
        """Move the service's session to a new one (``resync``: any replica, even the old)."""
        # In case it is only hung (or, after an outage, alive): it stops the session's
        # work at once and drops the session.
        try:
            if service is not ServiceName.ASR:
                await self._bus.publish(
                    subjects.worker_ctl(service, old.replica),
                    Cancel(sid=old.session_sid, turn=_ALL_TURNS),
                )
            await self._bus.publish(
                subjects.worker_in(service, old.replica), _close(service, old.session_sid)
            )
        except BusError as exc:
            log.debug("could not tell %s to close: %s", old.replica, exc)
        self._counter += 1
        session_sid = f"{self.sid}-{service.value}{self._counter}"
        # From now on only the new session's results count (the old one's close, or a
        # hung replica's stale output, must not reach the call).
        self._placements[service] = _Placement(old.replica, session_sid, moving=True)
        # Listening (confirmed by a round trip) before the new replica hears of the call.
        self._subs.append(
            await self._bus.subscribe(subjects.session_out(session_sid), self._handler)
        )
        try:
            await self._bus.nc.flush(timeout=1)
        except Exception as exc:  # nats-py raises several unrelated types here
            raise BusError(f"NATS flush failed: {exc.__class__.__name__}") from exc
        replica = ""
        for _ in range(self._options.assign_attempts):
            try:
                replica = await assign_replica(
                    self._bus,
                    service,
                    session_sid,
                    models=self._models(service),
                    timeout_s=self._options.assign_timeout_s,
                    attempts=1,
                )
            except OverloadedError:
                # The lost replica may still be registered for a moment; ask again.
                await asyncio.sleep(self._options.probe.interval_s)
                continue
            except BusError as exc:
                if "timed out" not in str(exc):
                    raise
                continue  # a hung member of the queue group took the request
            if replica != old.replica or resync:
                break
        if not replica or (replica == old.replica and not resync):
            raise OverloadedError(service.value)
        # Still moving: `settle` opens it for traffic once the call core restored it.
        self._placements[service] = _Placement(replica, session_sid, moving=True)
        log.warning(
            "%s of call %s moved from %s to %s", service.value, self.sid, old.replica, replica
        )

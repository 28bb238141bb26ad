"""Client side of the control plane: ask a service for a replica for one call."""

from __future__ import annotations

from shared import subjects
from shared.bus import Bus
from shared.errors import BusError, OverloadedError, UnknownModelError
from shared.messages import AssignReply, AssignRequest, ErrorCode, ServiceName


async def assign_replica(
    bus: Bus,
    service: ServiceName,
    sid: str,
    *,
    models: tuple[str, ...] = (),
    timeout_s: float = 2.0,
    attempts: int = 3,
) -> str:
    """Return the id of a replica of ``service`` that accepted ``sid``.

    A full replica unsubscribes from ``<svc>.assign``; when none has room the request
    fails at once with no-responders, which becomes `OverloadedError`. A replica that
    lost the race to its own gate answers ``ok=False``: try again, the queue group picks
    another member.

    A replica without a backend for one of ``models`` answers ``UNKNOWN_MODEL``: every
    replica of a service shares one configuration, so that is final
    (`UnknownModelError`).

    Cancelling is safe: at worst a reservation expires on the replica.
    """
    for _ in range(attempts):
        try:
            reply = await bus.request(
                subjects.assign(service),
                AssignRequest(sid=sid, models=models),
                timeout_s=timeout_s,
            )
        except BusError as exc:
            if "no responders" in str(exc):
                raise OverloadedError(service.value) from exc
            raise
        if isinstance(reply, AssignReply) and reply.ok:
            return reply.replica
        if isinstance(reply, AssignReply) and reply.code is ErrorCode.UNKNOWN_MODEL:
            raise UnknownModelError(service.value, reply.message)
    raise OverloadedError(service.value)

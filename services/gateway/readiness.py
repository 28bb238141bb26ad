"""Readiness: NATS is connected and every service has a replica that answers a ping.

Each service's replicas form a ``nats.micro`` service named after it, so a request on
``$SRV.PING.<service>`` reaches every replica and the first answer is enough. The result
is cached for ``ttl_s`` so a probe storm (Kubernetes, load balancers) costs a few
requests per second, not one per probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared.messages import ServiceName


def ping_any_subject(service: ServiceName) -> str:
    """``$SRV.PING.<service>``: any replica of the service answers."""
    return f"$SRV.PING.{service.value}"


class ReplicaProbe:
    def __init__(
        self,
        nc: Client,
        services: tuple[ServiceName, ...] = (ServiceName.ASR, ServiceName.LLM, ServiceName.TTS),
        *,
        ttl_s: float = 1.0,
        timeout_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._nc = nc
        self._services = services
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._clock = clock
        self._cached: tuple[float, bool, str] | None = None

    async def check(self) -> tuple[bool, str]:
        if not self._nc.is_connected:
            return False, "nats disconnected"
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < self._ttl_s:
            return self._cached[1], self._cached[2]
        answers = await asyncio.gather(*(self._ping(s) for s in self._services))
        missing = [s.value for s, ok in zip(self._services, answers, strict=True) if not ok]
        result = (False, "no replica of " + ", ".join(missing)) if missing else (True, "ready")
        self._cached = (self._clock(), *result)
        return result

    async def _ping(self, service: ServiceName) -> bool:
        try:
            await self._nc.request(ping_any_subject(service), b"", timeout=self._timeout_s)
        except (NoRespondersError, NatsTimeoutError):
            return False
        except Exception:  # noqa: BLE001 - disconnected mid-request and the like: not ready
            return False
        return True

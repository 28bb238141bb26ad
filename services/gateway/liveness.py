"""Notice when a replica that holds one of our calls dies or hangs.

A killed replica is noticed by NATS at once (its connection closes, so its subjects have
no responders); a hung one (SIGSTOP, a stuck event loop) keeps its TCP connection and
would only be dropped after the server's write deadline, seconds too late for a call.
So the gateway probes each replica it uses with the ``nats.micro`` PING every
``interval_s``: no responders means dead, ``misses`` timeouts in a row mean hung
(ARCHITECTURE.md, "Liveness": 42-158 ms to notice in the prototype).

While the gateway itself is disconnected from NATS nothing can be concluded about
anyone, so probes are skipped rather than counted as misses. Once it is back, the
replicas need a moment to reconnect too: "no responders" is not taken for death during
a grace of probes. What was published meanwhile may be lost (the server drops messages
for subjects nobody subscribes to yet), so the first reply after an outage ends the
watch with RESYNC: the call's sessions are then opened afresh and brought up to date,
as after a loss, on the same replica if it is the one the placement picks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from nats.aio.client import Client
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from shared import subjects
from shared.messages import ServiceName

log = logging.getLogger(__name__)


class Verdict(Enum):
    ALIVE = "alive"
    DEAD = "dead"  # nobody serves the replica's subjects any more
    HUNG = "hung"  # it is connected but does not answer
    RESYNC = "resync"  # alive, but messages may have been lost while NATS was down


class ProbeOutcome(Enum):
    REPLY = "reply"
    NO_RESPONDERS = "no_responders"
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"  # our own connection is down: no information


@dataclass
class ProbeTracker:
    """Turns probe outcomes into a verdict (sans-I/O)."""

    misses_to_hung: int = 3
    reconnect_grace: int = 50  # probes after an outage before "no responders" means dead
    misses: int = 0
    outage: bool = False  # our connection dropped since the last reply
    grace_left: int = 0

    def feed(self, outcome: ProbeOutcome) -> Verdict:
        match outcome:
            case ProbeOutcome.REPLY:
                self.misses = 0
                if self.outage:
                    self.outage = False
                    return Verdict.RESYNC
                return Verdict.ALIVE
            case ProbeOutcome.NO_RESPONDERS:
                if self.outage and self.grace_left > 0:
                    self.grace_left -= 1  # it may still be reconnecting
                    return Verdict.ALIVE
                return Verdict.DEAD
            case ProbeOutcome.TIMEOUT:
                self.misses += 1
                return Verdict.HUNG if self.misses >= self.misses_to_hung else Verdict.ALIVE
            case ProbeOutcome.DISCONNECTED:
                self.outage = True
                self.grace_left = self.reconnect_grace
                return Verdict.ALIVE


OnLost = Callable[[ServiceName, str, Verdict], Awaitable[None]]


@dataclass(frozen=True)
class ProbeOptions:
    interval_s: float = 0.1
    timeout_s: float = 0.2
    misses_to_hung: int = 3
    reconnect_grace: int = 50


class ReplicaWatch:
    """Probes one replica until it is lost (then calls ``on_lost`` once) or cancelled."""

    def __init__(
        self,
        nc: Client,
        service: ServiceName,
        replica: str,
        on_lost: OnLost,
        options: ProbeOptions = ProbeOptions(),
    ) -> None:
        self.service = service
        self.replica = replica
        self._nc = nc
        self._on_lost = on_lost
        self._options = options
        self._subject = subjects.micro_ping(service, replica)

    async def probe(self) -> ProbeOutcome:
        if not self._nc.is_connected:
            return ProbeOutcome.DISCONNECTED
        try:
            await self._nc.request(self._subject, b"", timeout=self._options.timeout_s)
        except NoRespondersError:
            return ProbeOutcome.NO_RESPONDERS
        except NatsTimeoutError:
            # A timeout while our connection dropped says nothing about the replica.
            return ProbeOutcome.TIMEOUT if self._nc.is_connected else ProbeOutcome.DISCONNECTED
        except ConnectionClosedError:
            return ProbeOutcome.DISCONNECTED
        return ProbeOutcome.REPLY

    async def run(self) -> Verdict:
        """Return the verdict that ended the watch (DEAD, HUNG or RESYNC).

        ``on_lost`` is called first, for DEAD and HUNG only.
        """
        tracker = ProbeTracker(
            misses_to_hung=self._options.misses_to_hung,
            reconnect_grace=self._options.reconnect_grace,
        )
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            verdict = tracker.feed(await self.probe())
            if verdict is Verdict.RESYNC:
                log.info("%s replica %s is back after an outage", self.service.value, self.replica)
                return verdict
            if verdict is not Verdict.ALIVE:
                log.warning("%s replica %s is %s", self.service.value, self.replica, verdict.value)
                await self._on_lost(self.service, self.replica, verdict)
                return verdict
            # Probe at a steady rate: a slow reply shortens the wait before the next one.
            await asyncio.sleep(max(0.0, self._options.interval_s - (loop.time() - started)))

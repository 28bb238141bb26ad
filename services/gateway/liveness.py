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
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from nats.aio.client import Client
from nats.aio.msg import Msg
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
    LATE = "late"  # our own event loop ran late during the probe: no information


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
            case ProbeOutcome.LATE:
                return Verdict.ALIVE  # neither a miss nor a reply


OnLost = Callable[[ServiceName, str, Verdict], Awaitable[None]]


class LagMeter:
    """How late this process's event loop runs, from a task that sleeps in small steps.

    An overloaded gateway reads a probe's reply late: the reply waits in the socket while
    the probe's own timeout fires. Counting that as a miss would declare every replica
    hung and end every call exactly when the gateway is busiest, so a probe that timed
    out while the loop ran late says nothing (`ProbeOutcome.LATE`).
    """

    def __init__(self, step_s: float = 0.02) -> None:
        self._step_s = step_s
        self.late_at = float("-inf")  # loop time of the last late wake-up

    async def run(self, threshold_s: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self._step_s
            await asyncio.sleep(self._step_s)
            now = loop.time()
            if now - due > threshold_s:
                self.late_at = now

    def late_since(self, since: float) -> bool:
        return self.late_at >= since


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
        lag: LagMeter | None = None,
    ) -> None:
        self.service = service
        self.replica = replica
        self._nc = nc
        self._on_lost = on_lost
        self._options = options
        self._lag = lag
        self._subject = subjects.micro_ping(service, replica)

    async def probe(self) -> ProbeOutcome:
        if not self._nc.is_connected:
            return ProbeOutcome.DISCONNECTED
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self._nc.request(self._subject, b"", timeout=self._options.timeout_s)
        except NoRespondersError:
            return ProbeOutcome.NO_RESPONDERS
        except NatsTimeoutError:
            # A timeout while our connection dropped says nothing about the replica,
            # nor one our own loop noticed late (the reply may be waiting unread).
            if not self._nc.is_connected:
                return ProbeOutcome.DISCONNECTED
            overslept = loop.time() - started > 1.5 * self._options.timeout_s
            if overslept or (self._lag is not None and self._lag.late_since(started)):
                return ProbeOutcome.LATE
            return ProbeOutcome.TIMEOUT
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


class ReplicaMonitor:
    """One probe per replica for the whole gateway, however many calls it serves.

    Every call used to probe each of its replicas itself: at 100 calls that was 3,000
    requests a second against three replicas, enough load on its own to make them miss
    probes and be declared hung. Calls now `watch` a replica; the first watcher starts
    its probe, the verdict that ends it is handed to every watcher, and the probe stops
    when the last watcher leaves. All probe tasks are owned here and cancelled by `aclose`.
    """

    def __init__(self, nc: Client, options: ProbeOptions = ProbeOptions()) -> None:
        self._nc = nc
        self._options = options
        self._probes: dict[tuple[ServiceName, str], _Probe] = {}
        self._closed = False
        self.lag = LagMeter()
        self._asking: dict[tuple[ServiceName, str], asyncio.Future[bool]] = {}
        self._lag_task: asyncio.Task[None] | None = None

    @property
    def probing(self) -> int:
        """Replicas being probed now (one probe each, whatever the number of calls)."""
        return len(self._probes)

    async def watch(self, service: ServiceName, replica: str) -> Verdict:
        """Wait until ``replica`` is lost (DEAD, HUNG) or must be resynced (RESYNC)."""
        if self._closed:
            raise RuntimeError("the replica monitor is closed")
        key = (service, replica)
        probe = self._probes.get(key)
        if self._lag_task is None:
            # Late by a quarter of the probe timeout: a reply may then miss its deadline.
            threshold = self._options.timeout_s / 4
            self._lag_task = asyncio.create_task(self.lag.run(threshold), name="loop-lag")
        if probe is None:
            probe = _Probe()
            watch = ReplicaWatch(self._nc, service, replica, _nothing, self._options, self.lag)
            probe.task = asyncio.create_task(
                self._run(key, probe, watch), name=f"probe-{service.value}-{replica}"
            )
            self._probes[key] = probe
        waiter: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        probe.waiters.add(waiter)
        try:
            return await waiter
        finally:
            probe.waiters.discard(waiter)
            if not probe.waiters and self._probes.get(key) is probe:
                # Nobody left to tell: stop probing (a later watcher starts afresh).
                if probe.task is not None:
                    probe.task.cancel()
                self._forget(key, probe)

    async def another_replica(self, service: ServiceName, excluding: str) -> bool:
        """Whether a replica of ``service`` other than ``excluding`` answers a ping within
        the probe timeout (all replicas are asked at once; nothing is reserved).

        The calls that get one verdict ask together: they share one ping."""
        key = (service, excluding)
        asking = self._asking.get(key)
        if asking is None:
            asking = asyncio.ensure_future(self._ask_others(service, excluding))
            self._asking[key] = asking
            asking.add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(asking)

    async def _ask_others(self, service: ServiceName, excluding: str) -> bool:
        found = asyncio.Event()

        async def on_reply(msg: Msg) -> None:
            try:
                replica = json.loads(msg.data).get("id")
            except (ValueError, AttributeError):
                return
            if replica and replica != excluding:
                found.set()

        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, cb=on_reply)
        try:
            await self._nc.publish(subjects.micro_ping_all(service), b"", reply=inbox)
            async with asyncio.timeout(self._options.timeout_s):
                await found.wait()
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _run(self, key: tuple[ServiceName, str], probe: _Probe, watch: ReplicaWatch) -> None:
        try:
            verdict = await watch.run()
        except Exception as exc:  # noqa: BLE001 - handed to the watchers, not swallowed
            # Not a verdict: each watching call handles it as its own failure.
            self._forget(key, probe)
            for waiter in probe.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        # The verdict ends this probe: later watchers of the same replica (after a
        # RESYNC it may be placed again) start a new one.
        self._forget(key, probe)
        for waiter in probe.waiters:
            if not waiter.done():
                waiter.set_result(verdict)

    def _forget(self, key: tuple[ServiceName, str], probe: _Probe) -> None:
        if self._probes.get(key) is probe:
            del self._probes[key]
        if not self._probes and self._lag_task is not None:
            # No call watches anything: an idle gateway need not wake 50 times a second.
            self._lag_task.cancel()
            self._lag_task = None

    async def aclose(self) -> None:
        self._closed = True
        for asking in self._asking.values():
            asking.cancel()
        tasks = [p.task for p in self._probes.values() if p.task is not None]
        if self._lag_task is not None:
            tasks.append(self._lag_task)
            self._lag_task = None
        self._probes.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class _Probe:
    waiters: set[asyncio.Future[Verdict]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


async def _nothing(service: ServiceName, replica: str, verdict: Verdict) -> None:
    # The monitor hands the verdict to its watchers once `run` returns.
    return None

"""The message bus: a small interface we own, and its NATS implementation.

Services talk to each other only through `Bus`. `NatsBus` applies the settings that
matter for real-time audio (ARCHITECTURE.md): endless reconnects with a short wait,
a small publish buffer while disconnected (buffered audio is stale anyway), explicit
per-subscription pending limits, and slow-consumer errors, reconnects and the traffic
per subject (messages and bytes, each way) routed into metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError, OutboundBufferLimitError, SlowConsumerError
from nats.errors import TimeoutError as NatsTimeoutError

from shared import codec
from shared.errors import BusError, DecodeError
from shared.messages import BULK_TYPES, MAX_BATCH_ITEMS, Batch, Message, WireModel

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class BusOptions:
    url: str = "nats://127.0.0.1:4222"
    name: str = "voice"
    # Frames of one call arrive every 20-100 ms; hundreds pending means seconds of lag.
    pending_msgs_limit: int = 2000
    pending_bytes_limit: int = 32 * 1024 * 1024
    reconnect_time_wait_s: float = 0.25
    ping_interval_s: int = 5
    connect_timeout_s: float = 2.0
    publish_buffer_bytes: int = 256 * 1024
    # Bulk messages (audio) are held this long and sent per subject as one `Batch`:
    # every NATS message costs a socket write here and a wake-up of the server and of
    # the receiver, which at hundreds of calls costs more CPU than the audio itself.
    # 0 sends each at once.
    bulk_linger_s: float = 0.005
    bulk_max_bytes: int = 256 * 1024  # sent early past this much (NATS max payload: 1 MiB)


class BusCounters(Protocol):
    """What the bus reports; implemented by each service's metrics container."""

    def slow_consumer(self) -> None: ...
    def reconnected(self) -> None: ...
    def disconnected(self) -> None: ...
    def dropped_publish(self) -> None: ...
    def bad_message(self) -> None: ...
    def bus_message(self, direction: str, subject: str, size: int) -> None:
        """One message of ``size`` payload bytes went ``"in"`` or ``"out"`` on ``subject``."""


class _NullCounters:
    def slow_consumer(self) -> None: ...
    def reconnected(self) -> None: ...
    def disconnected(self) -> None: ...
    def dropped_publish(self) -> None: ...
    def bad_message(self) -> None: ...
    def bus_message(self, direction: str, subject: str, size: int) -> None: ...


class Bus(Protocol):
    """Publish/subscribe/request of wire messages."""

    @property
    def connected(self) -> bool: ...

    async def publish(self, subject: str, message: WireModel) -> None: ...

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str = ""
    ) -> Subscription: ...

    async def request(self, subject: str, message: WireModel, *, timeout_s: float) -> Message: ...

    async def aclose(self) -> None: ...


class _Bulk:
    """Bulk messages waiting for the linger to end: encoded, per subject, in order."""

    def __init__(self) -> None:
        self.subjects: dict[str, list[bytes]] = {}
        self.size = 0

    def add(self, subject: str, data: bytes) -> None:
        self.subjects.setdefault(subject, []).append(data)
        self.size += len(data)

    def __bool__(self) -> bool:
        return self.size > 0

    def take(self) -> list[tuple[str, bytes, int]]:
        """(subject, payload, messages in it) per subject; leaves this empty."""
        out: list[tuple[str, bytes, int]] = []
        for subject, items in self.subjects.items():
            for start in range(0, len(items), MAX_BATCH_ITEMS):
                chunk = items[start : start + MAX_BATCH_ITEMS]
                payload = chunk[0] if len(chunk) == 1 else codec.encode_batch(chunk)
                out.append((subject, payload, len(chunk)))
        self.subjects = {}
        self.size = 0
        return out


class NatsBus:
    """`Bus` over nats-py.

    Bulk messages (`BULK_TYPES`) linger up to ``bulk_linger_s`` and go out per subject
    as one `Batch`; any other message first sends what lingers, so the order of this
    connection's messages on each subject is exactly the order of the publish calls.
    Subscribers get a batch's items one by one, as if each had come alone.
    """

    def __init__(self, nc: Client, options: BusOptions, counters: BusCounters) -> None:
        self._nc = nc
        self._options = options
        self._counters = counters
        self._bulk = _Bulk()
        self._bulk_due = asyncio.Event()
        self._lingerer: asyncio.Task[None] | None = None  # started by the first bulk message

    @classmethod
    async def connect(cls, options: BusOptions, counters: BusCounters | None = None) -> NatsBus:
        counters = counters or _NullCounters()

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, SlowConsumerError):
                counters.slow_consumer()
            else:
                log.warning("nats error: %s", exc)

        async def on_reconnect() -> None:
            counters.reconnected()
            log.info("nats reconnected")

        async def on_disconnect() -> None:
            counters.disconnected()
            log.warning("nats disconnected")

        try:
            nc = await nats.connect(
                options.url,
                name=options.name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=options.reconnect_time_wait_s,
                ping_interval=options.ping_interval_s,
                connect_timeout=options.connect_timeout_s,
                pending_size=options.publish_buffer_bytes,
                allow_reconnect=True,
                error_cb=on_error,
                reconnected_cb=on_reconnect,
                disconnected_cb=on_disconnect,
            )
        except Exception as exc:  # nats-py raises several unrelated types on connect
            raise BusError(f"cannot connect to NATS at {options.url}: {exc}") from exc
        return cls(nc, options, counters)

    @property
    def nc(self) -> Client:
        """The raw client, for nats.micro and JetStream."""
        return self._nc

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def publish(self, subject: str, message: WireModel) -> None:
        data = codec.encode(message)
        if self._options.bulk_linger_s > 0 and isinstance(message, BULK_TYPES):
            self._bulk.add(subject, data)
            if self._bulk.size >= self._options.bulk_max_bytes:
                await self.flush_bulk()
            elif not self._bulk_due.is_set():
                self._bulk_due.set()
                if self._lingerer is None:
                    self._lingerer = asyncio.create_task(self._linger(), name="bus-linger")
            return
        if self._bulk:
            await self.flush_bulk()  # what was published before goes first
        await self._send(subject, data, 1)

    async def flush_bulk(self) -> None:
        """Send the lingering bulk messages now."""
        self._bulk_due.clear()
        for subject, payload, count in self._bulk.take():
            await self._send(subject, payload, count)

    async def _send(self, subject: str, data: bytes, count: int) -> None:
        try:
            await self._nc.publish(subject, data)
        except OutboundBufferLimitError:
            # Disconnected with a full buffer: the audio would be stale by the time it
            # arrived; the sender's replay covers what matters.
            for _ in range(count):
                self._counters.dropped_publish()
            return
        self._counters.bus_message("out", subject, len(data))

    async def _linger(self) -> None:
        while True:
            await self._bulk_due.wait()
            await asyncio.sleep(self._options.bulk_linger_s)
            try:
                await self.flush_bulk()
            except Exception:  # the bus must keep lingering whatever one send did
                log.exception("sending bulk messages failed")

    async def subscribe(self, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
        async def on_msg(msg: Msg) -> None:
            self._counters.bus_message("in", msg.subject, len(msg.data))
            try:
                message = codec.decode(msg.data)
            except DecodeError as exc:
                self._counters.bad_message()
                log.warning("dropping undecodable message on %s: %s", msg.subject, exc)
                return
            items = message.items if isinstance(message, Batch) else (message,)
            for item in items:
                try:
                    await handler(item)
                except Exception:
                    log.exception("handler failed on %s", msg.subject)

        return await self._nc.subscribe(
            subject,
            queue=queue,
            cb=on_msg,
            pending_msgs_limit=self._options.pending_msgs_limit,
            pending_bytes_limit=self._options.pending_bytes_limit,
        )

    async def request(self, subject: str, message: WireModel, *, timeout_s: float) -> Message:
        data = codec.encode(message)
        self._counters.bus_message("out", subject, len(data))
        try:
            reply = await self._nc.request(subject, data, timeout=timeout_s)
        except NoRespondersError as exc:
            raise BusError(f"no responders on {subject}") from exc
        except NatsTimeoutError as exc:
            raise BusError(f"request to {subject} timed out") from exc
        if reply.headers and reply.headers.get("Nats-Service-Error-Code"):
            raise BusError(f"{subject}: {reply.headers.get('Nats-Service-Error')}")
        self._counters.bus_message("in", reply.subject, len(reply.data))
        return codec.decode(reply.data)

    async def aclose(self) -> None:
        """Drain subscriptions and close; safe to call twice."""
        if self._nc.is_closed:
            return
        if self._lingerer is not None:
            self._lingerer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lingerer
            self._lingerer = None
        try:
            await self.flush_bulk()
        except Exception as exc:  # noqa: BLE001 - closing anyway; the audio is stale
            log.debug("unsent bulk messages at close: %s", exc)
        try:
            async with asyncio.timeout(5):
                await self._nc.drain()
        except Exception as exc:  # noqa: BLE001 (drain times out or fails when disconnected)
            log.debug("drain failed: %s", exc)
            await self._nc.close()

"""``python -m services.gateway``: serve the client protocols until SIGTERM/SIGINT.

Prints ``READY gateway url=ws://HOST:PORT`` once it accepts calls (the launcher and tests
wait for that line). Shutdown: readiness goes false, no new calls, running calls get
``GATEWAY_DRAIN_GRACE_S`` to finish, the rest are ended (with the adapter's resumable
close code: 1012 for OpenAI clients, 1001 otherwise; their sessions stay resumable on
another replica for ``GATEWAY_RESUME_GRACE_S``), then NATS is drained. A second signal
during the grace period ends the calls at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from services.gateway.app import Gateway
from services.gateway.metrics import GatewayMetrics
from services.gateway.readiness import ReplicaProbe
from services.gateway.settings import GatewaySettings
from shared import eventloop
from shared.bus import NatsBus
from shared.errors import BusError, ConfigError
from shared.logs import setup_logging
from shared.state import SessionStore, StateOptions

log = logging.getLogger("services.gateway")


async def serve(settings: GatewaySettings) -> int:
    metrics = GatewayMetrics()
    try:
        bus = await NatsBus.connect(settings.bus_options("gateway"), metrics)
    except BusError as exc:
        log.error("%s", exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        store = await SessionStore.open(bus.nc, StateOptions(grace_s=settings.resume_grace_s))
    except (BusError, ConfigError) as exc:
        log.error("session store: %s", exc)
        await bus.aclose()
        return 1
    probe = ReplicaProbe(bus.nc)
    gateway = Gateway(settings, bus, metrics, probe.check, store=store)
    try:
        await gateway.start()
        log.info("gateway replica %s", gateway.replica_id)
        print(f"READY gateway url=ws://{settings.host}:{gateway.port}", flush=True)
        await stop.wait()
        stop.clear()
        log.info("stopping: draining calls for up to %.0f s", settings.drain_grace_s)
        drain = asyncio.create_task(gateway.drain(settings.drain_grace_s), name="drain")
        forced = asyncio.create_task(stop.wait(), name="second-signal")
        try:
            await asyncio.wait((drain, forced), return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        if not drain.done():
            # A second signal: no more grace; `aclose` ends the calls left.
            log.info("second signal: ending the calls now")
            drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
    finally:
        await gateway.aclose()
        await bus.aclose()
    log.info("gateway stopped")
    return 0


def main() -> int:
    settings = GatewaySettings()
    setup_logging(settings.log_level, settings.log_json, name="gateway")
    return eventloop.run(serve(settings), settings.event_loop)


if __name__ == "__main__":
    sys.exit(main())

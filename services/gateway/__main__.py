"""``python -m services.gateway``: serve the client protocols until SIGTERM/SIGINT.

Prints ``READY gateway url=ws://HOST:PORT`` once it accepts calls (the launcher and tests
wait for that line). Shutdown: readiness goes false, no new calls, running calls get
``GATEWAY_DRAIN_GRACE_S`` to finish, the rest are ended, then NATS is drained.
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
from shared.bus import NatsBus
from shared.errors import BusError
from shared.logs import setup_logging

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
    probe = ReplicaProbe(bus.nc)
    gateway = Gateway(settings, bus, metrics, probe.check)
    try:
        await gateway.start()
        print(f"READY gateway url=ws://{settings.host}:{gateway.port}", flush=True)
        await stop.wait()
        log.info("stopping: draining calls for up to %.0f s", settings.drain_grace_s)
        await gateway.drain(settings.drain_grace_s)
    finally:
        await gateway.aclose()
        await bus.aclose()
    log.info("gateway stopped")
    return 0


def main() -> int:
    settings = GatewaySettings()
    setup_logging(settings.log_level, settings.log_json, name="gateway")
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())

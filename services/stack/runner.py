"""Bring a whole local stack up and down (used by ``./run up``, tests and benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from services.stack.supervisor import Supervisor
from services.stack.topology import StackOptions, dev_api_key, nats_spec, service_specs


@dataclass(frozen=True)
class RunningStack:
    supervisor: Supervisor
    nats_url: str
    gateway_url: str  # ws://host:port
    api_key: str
    api_keys: tuple[str, ...]


@contextlib.asynccontextmanager
async def running_stack(
    options: StackOptions, *, echo: Callable[[str], None] | None = None
) -> AsyncIterator[RunningStack]:
    """Start NATS (unless given), every replica and the gateway; stop all on exit.

    Workers start concurrently (model loading is the slow part); the gateway starts
    last so that when it reports ready, calls can be served.
    """
    api_keys = options.api_keys or (dev_api_key(options.data_dir),)
    async with Supervisor(echo=echo) as sup:
        started = time.monotonic()
        if options.nats_url:
            nats_url = options.nats_url
        else:
            await sup.start(nats_spec(options))
            nats_url = f"nats://127.0.0.1:{options.nats_port}"
        specs = service_specs(options, nats_url, api_keys)
        workers, gateway = specs[:-1], specs[-1]
        await asyncio.gather(*(sup.start(spec) for spec in workers))
        line = await sup.start(gateway)
        url = (
            line.split("url=", 1)[1].split()[0]
            if "url=" in line
            else (f"ws://{options.gateway_host}:{options.gateway_port}")
        )
        if echo:
            echo(f"[stack] ready in {time.monotonic() - started:.1f} s")
        yield RunningStack(sup, nats_url, url, api_keys[0], api_keys)

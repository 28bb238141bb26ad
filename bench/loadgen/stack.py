"""The process set a load run measures: NATS, N replicas per worker, M gateways.

``fixed`` mode starts `bench.fixed_engines` replicas in place of the real workers; the
NATS server and the gateway are the product's, started exactly as the stack runner
starts them (`services.stack.topology`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from services.stack.supervisor import Supervisor
from services.stack.topology import SERVICES, StackOptions, nats_spec, service_specs
from tests.support.natsserver import free_port

API_KEY = "bench-load-key"


@dataclass(frozen=True)
class BenchStack:
    supervisor: Supervisor
    gateway_urls: tuple[str, ...]
    api_key: str
    names: tuple[str, ...]  # every process, as named in the supervisor

    @property
    def gateway_url(self) -> str:
        return self.gateway_urls[0]

    def pids(self) -> dict[str, list[int]]:
        """Processes by role; every gateway replica counts as "gateway" (CPU summed)."""
        out: dict[str, list[int]] = {}
        for name in self.names:
            pid = self.supervisor.pid_of(name)
            if pid:
                role = "gateway" if name.startswith("gateway") else name
                out.setdefault(role, []).append(pid)
        return out


@contextlib.asynccontextmanager
async def bench_stack(
    *,
    mode: str,
    replicas: int,
    data_dir: Path,
    scratch_dir: Path,
    fixed_env: dict[str, str],
    echo: Callable[[str], None],
    gateways: int = 1,
) -> AsyncIterator[BenchStack]:
    options = StackOptions(
        data_dir=data_dir,
        replicas={s: replicas for s in SERVICES},
        nats_port=free_port(),
        gateway_port=free_port(),
        api_keys=(API_KEY,),
        # One key places every simulated call; the per-key cap guards tenants, not load.
        extra_env={"GATEWAY_MAX_CALLS_PER_KEY": "100000"},
    )
    async with Supervisor(echo=echo) as sup:
        # Its JetStream store goes to scratch space: runs must not share one.
        nats = nats_spec(dataclasses.replace(options, data_dir=scratch_dir))
        await sup.start(dataclasses.replace(nats, restart=False))
        specs = service_specs(options, f"nats://127.0.0.1:{options.nats_port}", options.api_keys)
        workers, gateway = specs[:-1], specs[-1]
        if mode == "fixed":
            workers = [
                dataclasses.replace(
                    w,
                    argv=(sys.executable, "-m", "bench.fixed_engines", w.name.split("-")[0]),
                    env={**w.env, **fixed_env},
                )
                for w in workers
            ]
        # A benchmark must not measure a restarted process as if nothing happened.
        workers = [dataclasses.replace(w, restart=False) for w in workers]
        # Concurrently: loading the real engines' models is the slow part.
        await asyncio.gather(*(sup.start(spec) for spec in workers))
        # Gateway replicas side by side, each on its own port (stateless: any may take a call).
        gateway_specs = [dataclasses.replace(gateway, restart=False)]
        for g in range(2, gateways + 1):
            env = {**gateway.env, "GATEWAY_PORT": str(free_port())}
            gateway_specs.append(
                dataclasses.replace(gateway, name=f"gateway-{g}", env=env, restart=False)
            )
        urls = []
        for spec in gateway_specs:
            line = await sup.start(spec)
            urls.append(line.split("url=", 1)[1].split()[0])
        names = ("nats", *(w.name for w in workers), *(g.name for g in gateway_specs))
        yield BenchStack(sup, tuple(urls), API_KEY, names)

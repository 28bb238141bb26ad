"""A real Prometheus (Debian's binary) for tests: own port, own temp TSDB, short scrapes."""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.natsserver import free_port


class LocalPrometheus:
    """Scrapes ``targets`` (job name -> ``host:port``) every ``scrape_interval_s``."""

    def __init__(self, targets: Mapping[str, str], *, scrape_interval_s: float = 1.0) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="prometheus-")
        root = Path(self._dir.name)
        self._config = root / "prometheus.yml"
        interval = f"{round(scrape_interval_s * 1000)}ms"
        self._config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": interval, "scrape_timeout": interval},
                    "scrape_configs": [
                        {"job_name": job, "static_configs": [{"targets": [target]}]}
                        for job, target in targets.items()
                    ],
                }
            )
        )
        self._data = root / "data"
        self._log = root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Launch the server; `wait_ready` then waits until it serves queries."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found: install Debian's prometheus package")
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self._config}",
                    f"--storage.tsdb.path={self._data}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        async def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self._log.read_text()[-2000:]}")
            try:
                async with httpx.AsyncClient(timeout=1.0) as client:
                    return (await client.get(f"{self.url}/-/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await poll_until(ready, timeout_s, "prometheus ready")

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector; raises on a PromQL error."""
        async with httpx.AsyncClient(timeout=10.0) as client:
            reply = await client.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = reply.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._dir.cleanup()


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    return [v for v in (float(s["value"][1]) for s in result) if math.isfinite(v)]


async def poll_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.2
) -> None:
    """Wait for a condition another process makes true (no event to wait on, so poll)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        # Polling another process: it offers no event to wait on.
        await asyncio.sleep(every_s)

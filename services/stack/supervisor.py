"""Start, watch and stop the processes of a local stack, the way Kubernetes would.

Each child is a separate program. A child is ready when it prints its ready line
(``READY ...`` for our services, ``Server is ready`` for nats-server); its output is
relayed with a ``[name]`` prefix so progress (model loading) stays visible. A child
that dies unexpectedly is restarted with exponential backoff while the others keep
serving. `aclose` stops everything in reverse start order: SIGTERM, a grace period,
then SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

log = logging.getLogger(__name__)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the supervisor dies, even by SIGKILL.

    Without it a killed supervisor leaves a whole stack of orphans holding memory and
    ports (Linux only; elsewhere the orderly shutdown path is all there is).
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]
    ready_marker: str
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 300.0
    restart: bool = True


class ChildFailedError(RuntimeError):
    """A child exited or timed out before printing its ready line."""


@dataclass
class _Child:
    spec: ChildSpec
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    ready_line: str = ""
    restarts: int = 0
    stopping: bool = False


class Supervisor:
    """Owns the child processes of one stack; every task it starts lives in its TaskGroup."""

    def __init__(
        self,
        *,
        echo: Callable[[str], None] | None = None,
        max_backoff_s: float = 10.0,
        stop_grace_s: float = 15.0,
    ) -> None:
        self._echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
        self._children: list[_Child] = []
        self._max_backoff_s = max_backoff_s
        self._stop_grace_s = stop_grace_s
        self._tg = asyncio.TaskGroup()
        self._entered = False
        self.restarts_total = 0

    async def __aenter__(self) -> Self:
        await self._tg.__aenter__()
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self, spec: ChildSpec) -> str:
        """Start a child and wait for its ready line; return that line."""
        child = _Child(spec)
        self._children.append(child)
        await self._spawn(child)
        self._tg.create_task(self._watch(child), name=f"watch-{spec.name}")
        return await self._wait_ready(child)

    async def _spawn(self, child: _Child) -> None:
        env = {**os.environ, **child.spec.env, "PYTHONUNBUFFERED": "1"}
        child.ready = asyncio.Event()
        child.proc = await asyncio.create_subprocess_exec(
            *child.spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            preexec_fn=_die_with_parent,
        )

    async def _wait_ready(self, child: _Child) -> str:
        assert child.proc is not None
        ready = asyncio.create_task(child.ready.wait())
        exited = asyncio.create_task(child.proc.wait())
        try:
            done, _ = await asyncio.wait(
                {ready, exited},
                timeout=child.spec.ready_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for t in (ready, exited):
                t.cancel()
        if ready in done and child.ready.is_set():
            return child.ready_line
        if exited in done:
            raise ChildFailedError(f"{child.spec.name} exited with {child.proc.returncode}")
        raise ChildFailedError(f"{child.spec.name} not ready in {child.spec.ready_timeout_s:.0f} s")

    async def _relay(self, child: _Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        while True:
            raw = await child.proc.stdout.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            if not child.ready.is_set() and child.spec.ready_marker in line:
                child.ready_line = line
                child.ready.set()
            self._echo(f"[{child.spec.name}] {line}")

    async def _watch(self, child: _Child) -> None:
        backoff = 0.5
        while True:
            assert child.proc is not None
            started = time.monotonic()
            await self._relay(child)
            code = await child.proc.wait()
            if child.stopping or not child.spec.restart:
                return
            if time.monotonic() - started > 30:
                backoff = 0.5  # it ran fine for a while: this is a new failure
            self._echo(
                f"[stack] {child.spec.name} exited with {code}; restarting in {backoff:.1f} s"
            )
            await asyncio.sleep(backoff)  # backoff before restart, not waiting for a condition
            backoff = min(backoff * 2, self._max_backoff_s)
            if child.stopping:
                return
            child.restarts += 1
            self.restarts_total += 1
            await self._spawn(child)

    def names(self) -> list[str]:
        """Every child's name, in start order."""
        return [child.spec.name for child in self._children]

    def pid_of(self, name: str) -> int | None:
        for child in self._children:
            if child.spec.name == name and child.proc is not None:
                return child.proc.pid
        return None

    async def aclose(self) -> None:
        """Stop every child in reverse start order; idempotent."""
        for child in reversed(self._children):
            child.stopping = True
            await self._terminate(child)
        if self._entered:
            self._entered = False
            await self._tg.__aexit__(None, None, None)

    async def _terminate(self, child: _Child) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self._stop_grace_s):
                await proc.wait()
        except TimeoutError:
            log.warning("%s ignored SIGTERM; killing", child.spec.name)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

"""Which process of a local stack serves calls now: for failover tests and benchmarks.

Every worker prints ``READY <svc> replica=<id> health_port=<port>`` when it starts (and
again after a restart, as a new replica). `StackLog` is the stack's echo callback: it
remembers the latest of those lines per child and every line, so a caller can find
the child whose replica holds a session (its ``voice_sessions_active`` gauge) and wait
for a line such as the gateway's failover notice.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

_READY = re.compile(
    r"^\[(?P<child>[\w-]+)\] .*READY (?P<svc>\w+) replica=(?P<replica>\S+) "
    r"health_port=(?P<port>\d+)"
)
_ACTIVE = re.compile(r'^voice_sessions_active\{service="\w+"\} (?P<value>[\d.]+)$', re.MULTILINE)


@dataclass(frozen=True)
class Replica:
    child: str  # the supervisor's name for the process, e.g. "asr-2"
    service: str
    replica: str
    health_port: int


@dataclass
class StackLog:
    """The stack's echo: keeps every line (bounded) and the latest replica of each child."""

    print_lines: bool = False
    max_lines: int = 200_000  # indexes stay valid below this
    replicas: dict[str, Replica] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # monotonic arrival of each line
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, line: str) -> None:
        if self.print_lines:
            print(line)
        self.lines.append(line)
        self.times.append(time.monotonic())
        if len(self.lines) > self.max_lines:
            del self.lines[: len(self.lines) - self.max_lines]
            del self.times[: len(self.times) - self.max_lines]
        m = _READY.match(line)
        if m:
            self.replicas[m["child"]] = Replica(m["child"], m["svc"], m["replica"], int(m["port"]))
        self._changed.set()

    async def wait_line(
        self, match: Callable[[str], bool], *, after: int = 0, timeout_s: float = 30.0
    ) -> int:
        """Index of the first line from index ``after`` on that matches."""
        async with asyncio.timeout(timeout_s):
            while True:
                for i in range(after, len(self.lines)):
                    if match(self.lines[i]):
                        return i
                self._changed.clear()
                await self._changed.wait()

    async def holder(self, service: str) -> Replica:
        """The replica of ``service`` that serves a session now (exactly one must)."""
        found = []
        for r in [r for r in self.replicas.values() if r.service == service]:
            try:
                active = await asyncio.to_thread(_sessions_active, r.health_port)
            except OSError:
                continue  # a killed or restarting process
            if active > 0:
                found.append(r)
        if len(found) != 1:
            raise LookupError(f"{len(found)} {service} replicas serve a session: {found}")
        return found[0]


def _sessions_active(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        text = reply.read().decode()
    m = _ACTIVE.search(text)
    return float(m["value"]) if m else 0.0

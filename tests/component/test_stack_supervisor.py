"""The supervisor restarts a dead child and stops every child on close."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from services.stack.supervisor import ChildFailedError, ChildSpec, Supervisor

CHILD = (
    "import signal, sys, threading\n"
    "print('booting', flush=True)\n"
    "print('READY child', flush=True)\n"
    "threading.Event().wait()\n"
)


async def test_restarts_a_killed_child_and_stops_it_on_close() -> None:
    ready_lines: asyncio.Queue[str] = asyncio.Queue(maxsize=10)

    def echo(line: str) -> None:
        if "READY" in line:
            ready_lines.put_nowait(line)

    async with Supervisor(echo=echo, max_backoff_s=0.5) as sup:
        line = await sup.start(ChildSpec("child", (sys.executable, "-c", CHILD), "READY"))
        assert line == "READY child"
        await asyncio.wait_for(ready_lines.get(), 5)
        first = sup.pid_of("child")
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await asyncio.wait_for(ready_lines.get(), 20)  # the restarted child is ready again
        second = sup.pid_of("child")
        assert second not in (None, first)
        assert sup.restarts_total == 1
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)  # type: ignore[arg-type]


async def test_a_child_that_exits_before_ready_fails_start() -> None:
    async with Supervisor(echo=lambda _: None) as sup:
        spec = ChildSpec(
            "bad", (sys.executable, "-c", "raise SystemExit(3)"), "READY", restart=False
        )
        with pytest.raises(ChildFailedError, match="exited with 3"):
            await sup.start(spec)


PARENT = (
    "import asyncio, sys\n"
    "from services.stack.supervisor import ChildSpec, Supervisor\n"
    "async def main():\n"
    "    async with Supervisor(echo=lambda _: None) as sup:\n"
    "        await sup.start(ChildSpec('child', (sys.executable, '-c', sys.argv[1]), 'READY'))\n"
    "        print(sup.pid_of('child'), flush=True)\n"
    "        await asyncio.Event().wait()\n"
    "asyncio.run(main())\n"
)


async def test_children_die_with_a_killed_supervisor() -> None:
    """A supervisor killed with SIGKILL cannot stop its children: the kernel does."""
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, CHILD, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    child = int((await asyncio.wait_for(parent.stdout.readline(), 20)).decode())
    parent.kill()
    await parent.wait()
    # The child is not ours to wait for; /proc tells when it is gone (or a zombie of init).
    async with asyncio.timeout(10):
        while _alive(child):
            await asyncio.sleep(0.05)  # noqa: sleep-ok  (polling /proc, which has no event)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"

"""Which event loop a service process runs on.

uvloop by default: every audio frame costs a socket read, a parse and a task wake-up
on the gateway and again on the workers, and uvloop does the loop's part of that (the
selector, callbacks, timers, transports) in C. ``VOICE_EVENT_LOOP=asyncio`` runs the
stock loop, e.g. to rule the loop out when chasing a bug.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from enum import StrEnum
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


class EventLoop(StrEnum):
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def run(main: Coroutine[Any, Any, T], loop: EventLoop = EventLoop.UVLOOP) -> T:
    """`asyncio.run` on the chosen loop."""
    factory = uvloop.new_event_loop if loop is EventLoop.UVLOOP else None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)

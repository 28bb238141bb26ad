"""One load-client process: ``python -m bench.loadgen.client CONFIG.json RESULT.json``.

One event loop (uvloop when installed) drives many calls. Frames are pre-cut from the
shared cycle and pre-serialized as WebSocket frames; one pacer task sends every call's next frame, spreading the calls over
``phase_groups`` ticks per frame so they do not all burst at once. The pacer's own
lateness is measured: when it grows, the client, not the gateway, is the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from bench.loadgen.script import Cycle
from bench.loadgen.tracker import CallTracker, TurnResult


class ClientConfig(BaseModel):
    urls: list[str]  # gateway replicas; call k goes to urls[k % len(urls)]
    api_key: str
    call_ids: list[int]
    start_at: float  # time.time() when the first call connects (all processes agree)
    ramp_s: float  # calls connect spread over this long
    duration_s: float  # how long each call streams
    phase_groups: int = 4
    start_payload: dict[str, Any]
    cycle_path: str
    cycle: Cycle
    reply_grace_s: float  # turns younger than this at the end are not counted unanswered
    # Longer than the gateway's own stop timeout (30 s), which finishes the answer first.
    stop_timeout_s: float = 45.0


class ClientResult(BaseModel):
    calls: int
    calls_started: int
    calls_completed: int
    turns: list[TurnResult]
    errors: dict[str, int]
    pacer_late_ms: dict[str, float]
    frames_sent: int


def _header(task_id: str, name: str) -> dict[str, str]:
    return {
        "message_id": uuid.uuid4().hex,
        "task_id": task_id,
        "namespace": "SpeechTranscriber",
        "name": name,
        "appkey": "default",
    }


class Call:
    """One simulated caller: its socket, its place in the cycle, its turns."""

    def __init__(self, call_id: int, config: ClientConfig, frames: list[bytes]) -> None:
        cycle = config.cycle
        self.call_id = call_id
        self.config = config
        self.frames = frames
        self.next_frame = cycle.unit_starts[call_id % len(cycle.unit_starts)]
        self.tracker = CallTracker(set(cycle.voiced), set(cycle.endpoints))
        self.ws: ClientConnection | None = None
        self.task_id = uuid.uuid4().hex
        self.streaming = False
        self.stream_until = 0.0
        self.started = asyncio.Event()
        self.closed = asyncio.Event()
        self.completed = False
        self.sent = 0

    async def run(self, start_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        try:
            self.ws = await connect(
                self.config.urls[self.call_id % len(self.config.urls)] + "/v1/audio/realtime",
                additional_headers={"Authorization": f"Bearer {self.config.api_key}"},
                open_timeout=30,
                max_size=2**22,
            )
        except (OSError, TimeoutError, Exception) as exc:  # noqa: BLE001 - counted, not raised
            self.tracker.errors[f"connect:{type(exc).__name__}"] += 1
            return
        reader = asyncio.create_task(self._read(), name=f"reader-{self.call_id}")
        try:
            start = {
                "header": _header(self.task_id, "StartTranscription"),
                "payload": self.config.start_payload,
            }
            await self.ws.send(json.dumps(start))
            try:
                async with asyncio.timeout(30):
                    await self.started.wait()
            except TimeoutError:
                self.tracker.errors["start_timeout"] += 1
                return
            if self.closed.is_set():
                return
            self.stream_until = time.monotonic() + self.config.duration_s
            self.streaming = True  # the pacer sends from now on
            await self.closed.wait()
        finally:
            self.streaming = False
            with contextlib.suppress(Exception):
                await self.ws.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def stop(self) -> None:
        """Send StopTranscription; the reader marks the call done on SESSION_CLOSE."""
        self.streaming = False
        self.tracker.stopped()
        assert self.ws is not None
        stop = {"header": _header(self.task_id, "StopTranscription"), "payload": {}}
        try:
            await self.ws.send(json.dumps(stop))
            async with asyncio.timeout(self.config.stop_timeout_s):
                await self.closed.wait()
        except TimeoutError:
            self.tracker.errors["stop_timeout"] += 1
            self.closed.set()
        except Exception as exc:  # noqa: BLE001 - counted, not raised
            self.tracker.errors[f"stop:{type(exc).__name__}"] += 1
            self.closed.set()

    async def send_frame(self, now: float) -> None:
        assert self.ws is not None
        if self.ws.state is not State.OPEN:
            raise ConnectionError("not open")
        frame = self.next_frame
        # The frame as the client would serialize it (masked, binary), built once for all
        # calls: at hundreds of calls the client's own framing would compete with the
        # gateway for the same cores. Whole frames only, so websockets' own writes
        # (pongs, the close) never interleave inside one.
        self.ws.transport.write(self.frames[frame])
        self.sent += 1
        self.tracker.frame_sent(frame, time.monotonic())
        self.next_frame = (frame + 1) % len(self.frames)

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.tracker.audio(now)
                    continue
                name = json.loads(message).get("header", {}).get("name", "?")
                self.tracker.event(name, now)
                if name == "TranscriptionStarted":
                    self.started.set()
                elif name == "SESSION_CLOSE":
                    self.completed = not self.streaming
                    break
                elif name == "TaskFailed" and not self.started.is_set():
                    break
        except Exception as exc:  # noqa: BLE001 - a dropped call is a counted error
            self.tracker.errors[f"closed:{type(exc).__name__}"] += 1
        finally:
            if self.streaming:
                self.tracker.errors["closed_by_server"] += 1
            self.streaming = False
            self.started.set()
            self.closed.set()


class Pacer:
    """Sends each streaming call one frame per frame period, in phase groups."""

    def __init__(self, calls: list[Call], frame_ms: int, groups: int) -> None:
        self.calls = calls
        self.tick_s = frame_ms / 1000 / groups
        self.groups = groups
        self.late: list[float] = []
        self.stoppers: set[asyncio.Task[None]] = set()

    async def run(self, until: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        while not until.is_set():
            due = t0 + k * self.tick_s
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.monotonic()
            self.late.append(max(0.0, loop.time() - due))
            for call in self.calls[k % self.groups :: self.groups]:
                if not call.streaming:
                    continue
                if now >= call.stream_until:
                    call.streaming = False
                    task = asyncio.create_task(call.stop(), name=f"stop-{call.call_id}")
                    self.stoppers.add(task)
                    task.add_done_callback(self.stoppers.discard)
                    continue
                try:
                    await call.send_frame(now)
                except Exception:  # noqa: BLE001 - the reader counts the close
                    call.streaming = False
            k += 1


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


async def run(config: ClientConfig) -> ClientResult:
    pcm = Path(config.cycle_path).read_bytes()
    step = 16000 * config.cycle.frame_ms // 1000 * 2
    frames = [
        Frame(Opcode.BINARY, pcm[i : i + step]).serialize(mask=True)
        for i in range(0, len(pcm), step)
    ]
    calls = [Call(i, config, frames) for i in config.call_ids]
    pacer = Pacer(calls, config.cycle.frame_ms, config.phase_groups)
    done = asyncio.Event()
    n = len(config.call_ids)
    async with asyncio.TaskGroup() as tg:
        pacing = tg.create_task(pacer.run(done))
        runs = [
            tg.create_task(call.run(config.start_at + config.ramp_s * c / max(1, n)))
            for c, call in enumerate(calls)
        ]
        await asyncio.gather(*runs, return_exceptions=True)
        done.set()
        await pacing
        for task in list(pacer.stoppers):
            task.cancel()
    turns: list[TurnResult] = []
    errors: Counter[str] = Counter()
    for call in calls:
        # Turns whose answer could still have been under way at the stop do not count.
        cutoff = call.stream_until - config.reply_grace_s
        turns += call.tracker.results(until=cutoff)
        errors.update(call.tracker.errors)
    late_ms = [x * 1000 for x in pacer.late]
    return ClientResult(
        calls=n,
        calls_started=sum(1 for c in calls if c.stream_until > 0),
        calls_completed=sum(1 for c in calls if c.completed),
        turns=turns,
        errors=dict(errors),
        pacer_late_ms={
            "p50": _pct(late_ms, 50),
            "p99": _pct(late_ms, 99),
            "max": max(late_ms, default=float("nan")),
        },
        frames_sent=sum(c.sent for c in calls),
    )


def main() -> int:
    config = ClientConfig.model_validate_json(Path(sys.argv[1]).read_text())
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(config))
    else:
        result = uvloop.run(run(config))
    Path(sys.argv[2]).write_text(result.model_dump_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

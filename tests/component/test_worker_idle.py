"""A replica closes a session that hears nothing for its idle timeout, and only such a one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared import subjects
from shared.bus import BusOptions, NatsBus
from shared.messages import AsrClose, AsrOpen, AudioFrame, Message, ServiceName, WireModel
from shared.metrics import ServiceMetrics
from shared.settings import WorkerSettings
from shared.worker import Publish, SessionWorker, WorkerRuntime

IDLE_S = 0.3


class RecordingSession:
    def __init__(self) -> None:
        self.handled: list[Message] = []
        self.closed = asyncio.Event()

    async def handle(self, message: Message) -> None:
        self.handled.append(message)

    def cancel(self, turn: int) -> None:
        return None

    async def aclose(self) -> None:
        self.closed.set()


class RecordingEngine:
    service = ServiceName.ASR
    open_types: tuple[type[WireModel], ...] = (AsrOpen,)
    close_types: tuple[type[WireModel], ...] = (AsrClose,)

    def __init__(self) -> None:
        self.sessions: dict[str, RecordingSession] = {}
        self.opened = asyncio.Event()

    def load(self) -> None:
        return None

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return ()

    async def open_session(self, message: Message, publish: Publish) -> SessionWorker:
        assert isinstance(message, AsrOpen)
        session = RecordingSession()
        self.sessions[message.sid] = session
        self.opened.set()
        return session

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def replica(nats_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    engine = RecordingEngine()
    monkeypatch.setenv("NATS_URL", nats_server.url)
    runtime = WorkerRuntime(engine, WorkerSettings(), ServiceMetrics("asr"), idle_timeout_s=IDLE_S)
    joined = asyncio.Event()
    join = runtime._join_planes

    async def join_and_tell() -> None:
        await join()
        joined.set()

    monkeypatch.setattr(runtime, "_join_planes", join_and_tell)
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(20):
            await joined.wait()
        yield runtime, engine
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 20)


async def test_a_silent_session_is_closed_and_a_talking_one_is_not(
    nats_server: Any, replica: Any
) -> None:
    runtime, engine = replica
    bus = await NatsBus.connect(BusOptions(url=nats_server.url, name="idle-test"))
    try:
        subject = subjects.worker_in(ServiceName.ASR, runtime.replica_id)
        await bus.publish(subject, AsrOpen(sid="talking"))
        await bus.publish(subject, AsrOpen(sid="silent"))
        async with asyncio.timeout(10):
            while len(engine.sessions) < 2:
                engine.opened.clear()
                await engine.opened.wait()
        silent, talking = engine.sessions["silent"], engine.sessions["talking"]
        # Audio every 50 ms for twice the idle timeout: the talking call stays open
        # while the silent one is closed.
        for seq in range(int(2 * IDLE_S / 0.05)):
            await bus.publish(subject, AudioFrame(sid="talking", seq=seq, pcm=bytes(640)))
            await asyncio.sleep(0.05)  # noqa: sleep-ok - pacing the audio, not a wait
        await asyncio.wait_for(silent.closed.wait(), 5)
        assert not talking.closed.is_set()
        assert len(talking.handled) > 0
        # Once quiet, it goes too.
        await asyncio.wait_for(talking.closed.wait(), 5)
    finally:
        await bus.aclose()

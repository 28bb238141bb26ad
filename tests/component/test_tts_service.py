"""``python -m services.tts`` as a real process on a real NATS: what a gateway sees."""

from __future__ import annotations

import asyncio
import os
import re
import select
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from shared import subjects
from shared.audio import duration_ms, rms_dbfs
from shared.bus import BusOptions, NatsBus
from shared.messages import (
    Cancel,
    ErrorCode,
    Message,
    ServiceError,
    ServiceName,
    TtsAudio,
    TtsBegin,
    TtsClose,
    TtsEnd,
    TtsOpen,
    TtsSegment,
    TtsText,
)
from shared.placement import assign_replica

# Without a Docker engine, the `nats_server` fixture's docker probe leaks an unclosed
# unix socket; its ResourceWarning surfaces in whichever test the garbage collector
# happens to run during. This module opens no unix sockets of its own.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket fd=[0-9]+, family=1, type=1"
    ":pytest.PytestUnraisableExceptionWarning"
)

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"^READY tts replica=(?P<replica>\S+) health_port=(?P<port>\d+)")

ENGLISH = (
    "Sure! The weather today is sunny with a high of 23.5 degrees. "
    "It should stay dry until the evening, so it is a good day for a walk."
)
CHINESE = "你好！今天天气很好，最高气温二十三度。晚上之前都不会下雨，很适合出去散步。"


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    replica: str
    health_port: int
    log: Path


@pytest.fixture(scope="module")
def tts_replica(nats_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    log = tmp_path_factory.mktemp("tts") / "tts.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TTS_", "NATS_"))}
    env.update({"NATS_URL": nats_server.url, "TTS_MAX_SESSIONS": "8"})
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.tts"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log_file,
        )
    try:
        assert proc.stdout is not None
        # Readiness is the READY line on stdout (after Piper is loaded and warm).
        deadline = time.monotonic() + 90
        buffered = b""
        match = None
        while match is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                pytest.fail(f"tts did not become ready:\n{log.read_text()[-3000:]}")
            ready, _, _ = select.select([proc.stdout], [], [], remaining)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                buffered += chunk
                for line in buffered.decode(errors="replace").splitlines():
                    match = match or READY.match(line)
        yield Replica(proc, match.group("replica"), int(match.group("port")), log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


class TtsCall:
    """One session, the way the gateway drives it."""

    def __init__(self, bus: NatsBus, replica: str, sid: str) -> None:
        self.bus = bus
        self.replica = replica
        self.sid = sid
        self.received: list[Message] = []
        self.closed = False
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=10_000)

    async def _on_message(self, message: Message) -> None:
        self._inbox.put_nowait(message)

    async def start(self, voice: str | None = None, sample_rate: int = 24000) -> None:
        await self.bus.subscribe(subjects.session_out(self.sid), self._on_message)
        await self.bus.nc.flush()
        await self.send(TtsOpen(sid=self.sid, voice=voice, sample_rate=sample_rate))

    async def send(self, message: TtsOpen | TtsText | TtsClose) -> None:
        await self.bus.publish(subjects.worker_in(ServiceName.TTS, self.replica), message)

    async def cancel(self, turn: int) -> None:
        await self.bus.publish(
            subjects.worker_ctl(ServiceName.TTS, self.replica), Cancel(sid=self.sid, turn=turn)
        )

    async def say(self, turn: int, text: str, step: int = 7) -> None:
        """Stream ``text`` in small deltas, as an LLM would."""
        pieces = [text[i : i + step] for i in range(0, len(text), step)]
        for seq, piece in enumerate(pieces):
            final = seq == len(pieces) - 1
            await self.send(TtsText(sid=self.sid, turn=turn, seq=seq, text=piece, final=final))

    async def close(self) -> None:
        """End the session, as the gateway does when the call ends."""
        await self.send(TtsClose(sid=self.sid))
        await self.until(lambda m: m.type == "session.closed")
        self.closed = True

    async def until(self, predicate: Any, timeout_s: float = 60) -> Message:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self._inbox.get()
                self.received.append(message)
                if predicate(message):
                    return message

    async def until_end(self, turn: int, timeout_s: float = 60) -> list[Message]:
        await self.until(lambda m: isinstance(m, TtsEnd) and m.turn == turn, timeout_s)
        return [m for m in self.received if getattr(m, "turn", None) == turn]


@pytest_asyncio.fixture
async def bus(nats_server: Any) -> AsyncIterator[NatsBus]:
    b = await NatsBus.connect(BusOptions(url=nats_server.url, name="tts-test"))
    try:
        yield b
    finally:
        await b.aclose()


NewCall = Callable[[], Awaitable[TtsCall]]


@pytest_asyncio.fixture
async def new_call(bus: NatsBus, tts_replica: Replica) -> AsyncIterator[NewCall]:
    """Assigns sessions the gateway's way; closes those opened, so the replica has room."""
    calls: list[TtsCall] = []

    async def make() -> TtsCall:
        sid = "t" + uuid.uuid4().hex[:12]
        assigned = await assign_replica(bus, ServiceName.TTS, sid)
        assert assigned == tts_replica.replica
        calls.append(TtsCall(bus, assigned, sid))
        return calls[-1]

    yield make
    for call in calls:
        if not call.closed and any(isinstance(m, TtsBegin) for m in call.received):
            await call.close()


def audio_of(messages: list[Message]) -> list[TtsAudio]:
    return [m for m in messages if isinstance(m, TtsAudio)]


async def test_english_turn_streams_segments_and_audio(new_call: NewCall) -> None:
    call = await new_call()
    await call.start()
    await call.say(1, ENGLISH)
    turn = await call.until_end(1)

    assert isinstance(turn[0], TtsBegin)
    segments = [m for m in turn if isinstance(m, TtsSegment)]
    assert [s.index for s in segments] == list(range(len(segments)))
    assert len(segments) >= 2
    assert segments[0].text == "Sure!"  # the first segment is the short one
    assert len(segments[1].text) > len(segments[0].text)
    assert "23.5" in " ".join(s.text for s in segments)
    # Each segment announces itself before its audio.
    for seg in segments:
        first_chunk = next(m for m in turn if isinstance(m, TtsAudio) and m.index == seg.index)
        assert turn.index(seg) < turn.index(first_chunk)

    chunks = audio_of(turn)
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert {c.sample_rate for c in chunks} == {24000}
    for seg in segments:  # 100 ms chunks (4,800 bytes at 24 kHz); a segment's last may be short
        sizes = [len(c.pcm) for c in chunks if c.index == seg.index]
        assert set(sizes[:-1]) <= {4800} and 0 < sizes[-1] <= 4800
    pcm = b"".join(c.pcm for c in chunks)
    seconds = duration_ms(pcm, 24000) / 1000
    assert 4.0 < seconds < 15.0, seconds  # ~25 words
    assert rms_dbfs(pcm) > -35  # digital silence is -inf, room noise about -60
    end = turn[-1]
    assert isinstance(end, TtsEnd)
    assert end.segments == len(segments)
    assert end.audio_ms == pytest.approx(seconds * 1000, abs=1)


async def test_mandarin_turn(new_call: NewCall) -> None:
    call = await new_call()
    await call.start(voice="zh")
    await call.say(1, CHINESE, step=3)
    turn = await call.until_end(1)
    segments = [m.text for m in turn if isinstance(m, TtsSegment)]
    assert segments[0] == "你好！"
    assert "".join(segments) == CHINESE
    pcm = b"".join(c.pcm for c in audio_of(turn))
    assert 4.0 < duration_ms(pcm, 24000) / 1000 < 20.0
    assert rms_dbfs(pcm) > -35


async def test_sixteen_khz_output(new_call: NewCall) -> None:
    call = await new_call()
    await call.start(voice="en", sample_rate=16000)
    await call.say(1, "Hello, this is a short test.")
    chunks = audio_of(await call.until_end(1))
    assert {c.sample_rate for c in chunks} == {16000}
    assert max(len(c.pcm) for c in chunks) == 3200  # 100 ms at 16 kHz
    seconds = duration_ms(b"".join(c.pcm for c in chunks), 16000) / 1000
    assert 1.0 < seconds < 5.0


async def test_cancel_mid_turn_stops_its_audio(new_call: NewCall) -> None:
    call = await new_call()
    await call.start()
    long_text = " ".join([ENGLISH] * 4)
    await call.say(1, long_text, step=40)
    await call.until(lambda m: isinstance(m, TtsAudio) and m.turn == 1)
    await call.cancel(1)
    # The next turn's TtsBegin can only come after the cancel was handled (a newer turn
    # also cancels an unfinished one), so anything of turn 1 after it would be a leak.
    await call.say(2, "Okay.")
    await call.until(lambda m: isinstance(m, TtsBegin) and m.turn == 2)
    begin2 = len(call.received)
    await call.until_end(2)
    assert not [m for m in call.received[begin2:] if getattr(m, "turn", None) == 1]
    assert not [m for m in call.received if isinstance(m, TtsEnd) and m.turn == 1]
    spoken = [m for m in call.received if isinstance(m, TtsSegment) and m.turn == 1]
    assert len(spoken) < 6  # the full answer has 12 sentences


async def test_unknown_voice_is_refused_clearly(new_call: NewCall) -> None:
    call = await new_call()
    await call.start(voice="klingon")
    error = await call.until(lambda m: isinstance(m, ServiceError))
    assert isinstance(error, ServiceError)
    assert error.code is ErrorCode.BAD_REQUEST and "klingon" in error.message
    # The session was not opened.
    await call.say(1, "Hello.")
    late = await call.until(
        lambda m: isinstance(m, ServiceError) and m.code is ErrorCode.UNKNOWN_SESSION
    )
    assert isinstance(late, ServiceError)


async def test_close_and_metrics(new_call: NewCall, tts_replica: Replica) -> None:
    call = await new_call()
    await call.start()
    await call.say(1, "Goodbye.")
    await call.close()
    assert any(isinstance(m, TtsEnd) for m in call.received)
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{tts_replica.health_port}/metrics")).text
    count = re.search(
        r'^voice_tts_first_audio_seconds_count\{service="tts"\} (\S+)$', text, re.MULTILINE
    )
    assert count is not None and float(count.group(1)) >= 1
    assert "voice_engine_real_time_factor_count" in text

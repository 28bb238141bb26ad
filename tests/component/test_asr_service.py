"""``python -m services.asr`` as a process on a real NATS: assign, open, stream, close.

The replica is started once for the module and is ready when it prints its READY line.
Speech comes from espeak-ng; frames of 100 ms go to the replica's direct subject.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from shared import subjects
from shared.bus import BusOptions, NatsBus
from shared.messages import (
    AsrClose,
    AsrOpen,
    AudioFrame,
    Message,
    SentenceBegin,
    ServiceName,
    SessionClosed,
    TranscriptFinal,
    TranscriptPartial,
    VadEvent,
    VadOptions,
    VadState,
)
from shared.placement import assign_replica
from tests.component.test_asr_engine import ENGLISH, frames, silence, speech_pcm

pytestmark = [
    pytest.mark.skipif(
        shutil.which("espeak-ng") is None or shutil.which("sox") is None,
        reason="needs espeak-ng and sox to make test speech",
    ),
    pytest.mark.asyncio(loop_scope="module"),
    # tests/support/natsserver.py's docker_available() leaves the Docker client's unix
    # socket open when no engine answers; its ResourceWarning surfaces at our setup.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
MANDARIN = "我想喝一杯咖啡，谢谢。"  # 谢 is simplified (traditional: 謝)


@dataclass
class Replica:
    bus: NatsBus
    health_port: int
    log: Path


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("speech")
    return {
        "en": speech_pcm(directory, ENGLISH),
        # The plain ``cmn`` voice of Debian's espeak-ng reads tone digits in English;
        # the pinyin voice gives Mandarin Whisper can recognise.
        "zh": speech_pcm(directory, MANDARIN, voice="cmn-latn-pinyin"),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replica(
    nats_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Replica]:
    log = tmp_path_factory.mktemp("asr") / "asr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASR_", "NATS_"))}
    env.update(NATS_URL=nats_server.url, ASR_HEALTH_PORT="0", ASR_MAX_SESSIONS="4")
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.asr",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(120):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"ASR replica exited:\n{log.read_text()}")
                if line.startswith("READY asr"):
                    break
        port = int(line.rsplit("health_port=", 1)[1])
        bus = await NatsBus.connect(BusOptions(url=nats_server.url, name="asr-test"))
        try:
            yield Replica(bus=bus, health_port=port, log=log)
        finally:
            await bus.aclose()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Call:
    """One session as a gateway sees it: its replica and what comes back."""

    def __init__(self, replica: Replica, sid: str, target: str) -> None:
        self.replica, self.sid, self.target = replica, sid, target
        self.received: list[tuple[float, Message]] = []
        self._changed = asyncio.Condition()
        self.seq = 0

    @classmethod
    async def open(cls, replica: Replica, **options: Any) -> Call:
        sid = uuid.uuid4().hex[:12]
        target = await assign_replica(replica.bus, ServiceName.ASR, sid)
        call = cls(replica, sid, subjects.worker_in(ServiceName.ASR, target))
        await replica.bus.subscribe(subjects.session_out(sid), call._on_message)
        await replica.bus.publish(call.target, AsrOpen(sid=sid, **options))
        return call

    async def _on_message(self, message: Message) -> None:
        async with self._changed:
            self.received.append((time.monotonic(), message))
            self._changed.notify_all()

    def of(self, kind: type) -> list[Any]:
        return [m for _, m in self.received if isinstance(m, kind)]

    async def wait_for(self, kind: type, count: int = 1, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.of(kind)) >= count)

    async def send(self, pcm: bytes, *, realtime: bool) -> None:
        started = time.monotonic()
        for i, chunk in enumerate(frames(pcm)):
            await self.replica.bus.publish(
                self.target, AudioFrame(sid=self.sid, seq=self.seq, pcm=chunk)
            )
            self.seq += 1
            if realtime:
                # A microphone's clock, not a wait for a condition.
                await asyncio.sleep(max(0.0, started + (i + 1) * 0.1 - time.monotonic()))

    async def close(self, flush: bool = True) -> None:
        await self.replica.bus.publish(self.target, AsrClose(sid=self.sid, flush=flush))
        await self.wait_for(SessionClosed)


async def test_two_english_utterances(replica: Replica, speech: dict[str, bytes]) -> None:
    call = await Call.open(replica, language="en", vad=VadOptions(silence_duration_ms=500))
    speech_ms = len(speech["en"]) // 32
    # Real time while speaking, so partials have a chance to come back before the end.
    await call.send(silence(300) + speech["en"], realtime=True)
    await call.send(silence(1000), realtime=False)
    await call.wait_for(TranscriptFinal)
    await call.send(speech["en"] + silence(1000), realtime=False)
    await call.wait_for(TranscriptFinal, 2)
    await call.close()

    begins, finals = call.of(SentenceBegin), call.of(TranscriptFinal)
    assert [b.index for b in begins] == [0, 1]
    assert [f.index for f in finals] == [0, 1]
    for final in finals:
        assert "weather" in final.text.lower(), final.text
        assert final.language == "en" and 0.0 < final.confidence <= 1.0
        assert final.end_ms - final.begin_ms == pytest.approx(speech_ms, abs=400)
    assert 150 <= finals[0].begin_ms <= 600
    assert finals[1].begin_ms > finals[0].end_ms + 900
    partials = [p for p in call.of(TranscriptPartial) if p.index == 0]
    assert partials, "no partial transcript while speaking"
    assert all(finals[0].begin_ms == p.begin_ms and p.end_ms <= finals[0].end_ms for p in partials)

    # Per utterance: STARTING -> SPEAKING (-> PAUSING -> SPEAKING)* -> PAUSING -> STOPPING -> QUIET,
    # with SentenceBegin right after SPEAKING and the final between STOPPING and QUIET.
    order = [
        m.state.value if isinstance(m, VadEvent) else m.type
        for _, m in call.received
        if isinstance(m, (VadEvent, SentenceBegin, TranscriptFinal))
    ]
    first = order[: order.index("quiet") + 1]
    assert first[:3] == ["starting", "speaking", "sentence.begin"]
    assert first[-4:] == ["pausing", "stopping", "transcript.final", "quiet"]
    stopping = [m for m in call.of(VadEvent) if m.state is VadState.STOPPING]
    assert [(s.start_ms, s.end_ms) for s in stopping] == [(f.begin_ms, f.end_ms) for f in finals]
    # Nothing of an utterance comes after its final.
    final_at = {m.index: t for t, m in call.received if isinstance(m, TranscriptFinal)}
    assert all(t <= final_at[m.index] for t, m in call.received if isinstance(m, TranscriptPartial))


async def test_close_with_flush_finalizes_the_utterance_in_progress(
    replica: Replica, speech: dict[str, bytes]
) -> None:
    call = await Call.open(replica, language="en")
    await call.send(silence(200) + speech["en"], realtime=False)  # no trailing silence
    await call.close(flush=True)
    (final,) = call.of(TranscriptFinal)
    assert "weather" in final.text.lower()
    received = [m for _, m in call.received]
    assert received.index(final) < received.index(call.of(SessionClosed)[0])


@pytest.mark.parametrize("language", ["zh-CN", None])
async def test_mandarin_comes_out_in_simplified_chinese(
    replica: Replica, speech: dict[str, bytes], language: str | None
) -> None:
    call = await Call.open(replica, language=language, partials=False)
    await call.send(silence(200) + speech["zh"] + silence(1000), realtime=False)
    await call.wait_for(TranscriptFinal)
    await call.close()
    (final,) = call.of(TranscriptFinal)
    assert final.language == "zh"
    assert "咖啡" in final.text, final.text
    assert "谢" in final.text and "謝" not in final.text, final.text


async def test_metrics_record_final_latency(replica: Replica) -> None:
    async with httpx.AsyncClient() as client:
        body = (await client.get(f"http://127.0.0.1:{replica.health_port}/metrics")).text
    count = next(
        float(line.split()[-1])
        for line in body.splitlines()
        if line.startswith('voice_asr_final_latency_seconds_count{service="asr"}')
    )
    assert count >= 1
    assert 'voice_engine_real_time_factor_count{service="asr"}' in body

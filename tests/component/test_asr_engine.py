"""The ASR engine in-process, without a bus: real Silero VAD and Whisper on espeak-ng speech.

Covers what needs a clock: the event loop stays responsive while Whisper decodes, the
final is decoded during the silence window, partials arrive while the user speaks; and
manual mode. Prints the measured figures (decode time, partial cadence, RTF).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import statistics
import subprocess
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from services.asr.engine import AsrEngine
from services.asr.metrics import AsrMetrics
from services.asr.session import AsrSession
from services.asr.settings import AsrSettings
from shared.messages import (
    AsrClose,
    AsrCommit,
    AsrOpen,
    AudioFrame,
    SentenceBegin,
    TranscriptFinal,
    TranscriptPartial,
    VadEvent,
    WireModel,
)
from shared.metrics import ServiceMetrics

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="needs espeak-ng and sox to make test speech",
)

FRAME_BYTES = 3200  # 100 ms of PCM16 at 16 kHz
ENGLISH = "Hello, what is the weather like today?"


def speech_pcm(directory: Path, text: str, voice: str = "en-us") -> bytes:
    """PCM16 mono 16 kHz speech from espeak-ng, resampled by sox."""
    raw, out = directory / f"{abs(hash((text, voice)))}.wav", directory / "out16.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True)
    with wave.open(str(out)) as w:
        data: bytes = w.readframes(w.getnframes())
    return data


def silence(ms: int) -> bytes:
    return b"\0" * (ms * 32)


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


class Collector:
    """What a session published, with the loop time it arrived at; awaitable conditions."""

    def __init__(self) -> None:
        self.items: list[tuple[float, WireModel]] = []
        self._changed = asyncio.Condition()

    async def publish(self, message: WireModel) -> None:
        async with self._changed:
            self.items.append((time.monotonic(), message))
            self._changed.notify_all()

    def of(self, kind: type[WireModel]) -> list[WireModel]:
        return [m for _, m in self.items if isinstance(m, kind)]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(predicate)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return speech_pcm(tmp_path_factory.mktemp("speech"), ENGLISH)


@pytest.fixture(scope="module")
def loaded_engine() -> Iterator[AsrEngine]:
    """Whisper loaded once for the module (the load is the slow part)."""
    engine = AsrEngine(AsrSettings(), AsrMetrics(ServiceMetrics("asr")))
    engine.load()
    yield engine


@pytest_asyncio.fixture
async def engine(loaded_engine: AsrEngine) -> AsyncIterator[AsrEngine]:
    yield loaded_engine
    # Each test's loop ends here: no decode (an abandoned partial, say) may outlive it.
    async with asyncio.timeout(30):
        await loaded_engine.context.pool.wait_idle()


async def stream(session: AsrSession, pcm: bytes, *, realtime: bool, first_seq: int = 0) -> int:
    """Feed 100 ms frames; ``realtime`` paces them like a microphone would."""
    started = time.monotonic()
    seq = first_seq
    for i, chunk in enumerate(frames(pcm)):
        await session.handle(AudioFrame(sid="s", seq=seq, pcm=chunk))
        seq += 1
        if realtime:
            # A microphone's clock, not a wait for a condition.
            await asyncio.sleep(max(0.0, started + (i + 1) * 0.1 - time.monotonic()))
    return seq


async def test_realtime_utterance_speculative_final_and_responsive_loop(
    engine: AsrEngine, speech: bytes
) -> None:
    out = Collector()
    session = await engine.open_session(AsrOpen(sid="s", language="en"), out.publish)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)  # noqa: sleep-ok (measures loop lag)
            lags.append(time.monotonic() - before - 0.01)

    registry = engine.metrics.base.registry

    def speculative_used() -> float:
        labels = {"service": "asr", "result": "used"}
        return registry.get_sample_value("voice_asr_speculative_total", labels) or 0.0

    used_before = speculative_used()
    try:
        async with asyncio.TaskGroup() as tg:
            tick = tg.create_task(ticker())
            await stream(session, silence(300) + speech + silence(1000), realtime=True)
            await out.wait_for(lambda: bool(out.of(TranscriptFinal)))
            tick.cancel()
    finally:
        await session.aclose()

    final = out.of(TranscriptFinal)[0]
    assert isinstance(final, TranscriptFinal)
    assert "weather" in final.text.lower()
    assert speculative_used() == used_before + 1  # decoded during the silence window
    partial_times = [t for t, m in out.items if isinstance(m, TranscriptPartial)]
    assert partial_times, "no partial transcript while speaking"
    # The loop never stalled behind a decode (CTranslate2 runs off the loop, GIL released).
    assert max(lags) < 0.25, f"event loop stalled {max(lags) * 1000:.0f} ms"
    gaps = [b - a for a, b in itertools.pairwise(partial_times)]
    print(
        f"\n[asr] final decode_ms={final.decode_ms:.0f} partials={len(partial_times)} "
        f"gap_median={statistics.median(gaps) if gaps else float('nan'):.2f}s "
        f"loop_lag_max={max(lags) * 1000:.0f}ms"
    )


async def test_manual_mode_waits_for_commit(engine: AsrEngine, speech: bytes) -> None:
    out = Collector()
    session = await engine.open_session(
        AsrOpen(sid="s", language="en", manual=True, partials=False), out.publish
    )
    try:
        seq = await stream(session, silence(200) + speech + silence(1500), realtime=False)
        await out.wait_for(lambda: bool(out.of(SentenceBegin)))
        assert out.of(TranscriptFinal) == []  # silence does not end a manual turn
        await session.handle(AsrCommit(sid="s"))
        await out.wait_for(lambda: bool(out.of(TranscriptFinal)))
        # A commit with nothing said since gets an empty final (one final per commit).
        await stream(session, silence(500), realtime=False, first_seq=seq)
        await session.handle(AsrCommit(sid="s"))
        await session.handle(AsrClose(sid="s"))
    finally:
        await session.aclose()
    assert out.of(VadEvent) == []
    final, empty = out.of(TranscriptFinal)
    assert isinstance(final, TranscriptFinal) and isinstance(empty, TranscriptFinal)
    assert "weather" in final.text.lower() and final.index == 0
    assert empty.text == "" and empty.index == 1


async def test_replayed_frames_do_not_shift_stream_time(engine: AsrEngine, speech: bytes) -> None:
    out = Collector()
    session = await engine.open_session(AsrOpen(sid="s", language="en"), out.publish)
    audio = frames(silence(300) + speech + silence(1000))
    try:
        for i, chunk in enumerate(audio):
            await session.handle(AudioFrame(sid="s", seq=i, pcm=chunk))
            if i % 5 == 4:  # a sender replaying its last frames after a failover
                for j in range(i - 2, i + 1):
                    await session.handle(AudioFrame(sid="s", seq=j, pcm=audio[j]))
        await out.wait_for(lambda: bool(out.of(TranscriptFinal)))
    finally:
        await session.aclose()
    (final,) = out.of(TranscriptFinal)
    assert isinstance(final, TranscriptFinal)
    speech_ms = len(speech) // 32
    assert 200 <= final.begin_ms <= 600
    assert final.end_ms - final.begin_ms <= speech_ms + 100
    assert "weather" in final.text.lower()

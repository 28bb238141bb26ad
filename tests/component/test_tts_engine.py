"""The TTS engine in-process with its real programs (Piper, espeak-ng), no bus.

What the bus cannot show precisely: the exact point a cancel takes effect, a Piper
crash in the middle of a sentence, and which voice read which segment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from services.tts.engine import TtsEngine
from services.tts.framing import WavAudio
from services.tts.metrics import TtsMetrics
from services.tts.piper import PiperBackend
from services.tts.session import TtsSession
from services.tts.settings import TtsSettings
from services.tts.turn import TurnOptions
from services.tts.voices import ENGLISH_JOE, MANDARIN_FEMALE, MANDARIN_MALE, Backend, Voice
from shared.audio import rms_dbfs
from shared.errors import EngineError, ProtocolError
from shared.messages import (
    ErrorCode,
    ServiceError,
    TtsAudio,
    TtsBegin,
    TtsClose,
    TtsEnd,
    TtsOpen,
    TtsSegment,
    TtsText,
    WireModel,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

LONG_ANSWER = (
    "Okay, here is the plan. First we walk to the station near the river. "
    "Then we take the train to the old town and have lunch by the harbour. "
    "After that we visit the museum, which opens at two in the afternoon. "
    "Finally we come back home before it gets dark outside."
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[TtsEngine]:
    eng = TtsEngine(TtsSettings(), TtsMetrics())
    await asyncio.to_thread(eng.load)
    try:
        yield eng
    finally:
        await eng.aclose()


class Recorder:
    """Collects what a session publishes; lets a test await a condition."""

    def __init__(self) -> None:
        self.messages: list[WireModel] = []
        self._changed = asyncio.Event()

    async def publish(self, message: WireModel) -> None:
        self.messages.append(message)
        self._changed.set()

    async def wait_for(self, predicate: type[WireModel], turn: int, timeout_s: float = 30) -> None:
        async with asyncio.timeout(timeout_s):
            while not any(
                isinstance(m, predicate) and getattr(m, "turn", None) == turn for m in self.messages
            ):
                self._changed.clear()
                await self._changed.wait()

    def of_turn(self, turn: int) -> list[WireModel]:
        return [m for m in self.messages if getattr(m, "turn", None) == turn]


def open_session(
    engine: TtsEngine, rec: Recorder, voice: Voice | None = None, synthesize: object = None
) -> TtsSession:
    return TtsSession(
        "sid-engine",
        voice,
        synthesize or engine.synthesize,
        rec.publish,  # type: ignore[arg-type]
        TurnOptions(sample_rate=24000, chunk_ms=100),
        engine.metrics,
    )


async def piper_idle(engine: TtsEngine) -> None:
    """Wait until the abandoned sentence of a cancelled turn has left Piper."""
    backend = engine.backends[Backend.PIPER]
    assert isinstance(backend, PiperBackend)
    await backend.synthesize("Idle.", ENGLISH_JOE)


async def test_cancel_stops_the_turn_at_once(engine: TtsEngine) -> None:
    rec = Recorder()
    session = open_session(engine, rec)
    await session.handle(TtsText(sid="sid-engine", turn=1, seq=0, text=LONG_ANSWER, final=True))
    await rec.wait_for(TtsAudio, turn=1)
    turn = session.current_turn
    assert turn is not None
    session.cancel(1)
    published_at_cancel = len(rec.messages)
    await asyncio.wait([turn.task])
    await piper_idle(engine)
    # Text of the cancelled turn still in flight is dropped, not spoken.
    await session.handle(TtsText(sid="sid-engine", turn=1, seq=1, text="More text.", final=True))
    await session.handle(TtsText(sid="sid-engine", turn=2, seq=0, text="Next one.", final=True))
    await rec.wait_for(TtsEnd, turn=2)
    after = rec.messages[published_at_cancel:]
    assert not [m for m in after if getattr(m, "turn", None) == 1]
    assert not [m for m in rec.messages if isinstance(m, TtsEnd) and m.turn == 1]
    spoken = [m for m in rec.of_turn(1) if isinstance(m, TtsSegment)]
    assert 1 <= len(spoken) < 4
    await session.aclose()


async def test_newer_turn_replaces_an_unfinished_one(engine: TtsEngine) -> None:
    rec = Recorder()
    session = open_session(engine, rec)
    await session.handle(TtsText(sid="sid-engine", turn=5, seq=0, text=LONG_ANSWER, final=False))
    await rec.wait_for(TtsAudio, turn=5)
    await session.handle(TtsText(sid="sid-engine", turn=6, seq=0, text="All right.", final=True))
    begin6 = next(i for i, m in enumerate(rec.messages) if isinstance(m, TtsBegin) and m.turn == 6)
    await rec.wait_for(TtsEnd, turn=6)
    assert not [m for m in rec.messages[begin6:] if getattr(m, "turn", None) == 5]
    await session.aclose()


async def test_close_speaks_out_a_complete_turn(engine: TtsEngine) -> None:
    rec = Recorder()
    session = open_session(engine, rec)
    await session.handle(TtsText(sid="sid-engine", turn=1, seq=0, text="Bye for now.", final=True))
    await session.handle(TtsClose(sid="sid-engine"))
    assert isinstance(rec.messages[-1], TtsEnd) and rec.messages[-1].segments == 1
    await session.aclose()


async def test_voice_change_applies_from_the_next_turn(engine: TtsEngine) -> None:
    used: list[tuple[str, Voice]] = []

    async def spy(text: str, voice: Voice) -> WavAudio:
        used.append((text, voice))
        return await engine.synthesize(text, voice)

    rec = Recorder()
    session = open_session(engine, rec, voice=None, synthesize=spy)
    await session.handle(TtsText(sid="sid-engine", turn=1, seq=0, text="你好，", final=False))
    session.set_voice("zh_female")  # mid-turn: this turn keeps its voice
    await session.handle(TtsText(sid="sid-engine", turn=1, seq=1, text="再见。", final=True))
    await rec.wait_for(TtsEnd, turn=1)
    await session.handle(TtsText(sid="sid-engine", turn=2, seq=0, text="谢谢你。", final=True))
    await rec.wait_for(TtsEnd, turn=2)
    assert [v for _, v in used] == [MANDARIN_MALE, MANDARIN_MALE, MANDARIN_FEMALE]
    audio = b"".join(m.pcm for m in rec.of_turn(2) if isinstance(m, TtsAudio))
    assert rms_dbfs(audio) > -35
    await session.aclose()


async def test_piper_crash_fails_one_sentence_and_the_next_works(engine: TtsEngine) -> None:
    backend = engine.backends[Backend.PIPER]
    assert isinstance(backend, PiperBackend)
    pid_before = backend.processes[0].pid
    restarts = engine.metrics.engine_restarts.labels("tts")._value.get()
    # A line with nothing to pronounce makes Piper 1.8 exit mid-sentence (the session
    # never sends one; here it is a real, deterministic crash).
    with pytest.raises(EngineError):
        await backend.synthesize("...", ENGLISH_JOE)
    audio = await backend.synthesize("Back again.", ENGLISH_JOE)
    assert audio.duration_s > 0.3 and rms_dbfs(audio.pcm) > -35
    assert backend.processes[0].pid != pid_before
    assert engine.metrics.engine_restarts.labels("tts")._value.get() == restarts + 1


async def test_a_failed_segment_reports_engine_failed_and_the_turn_goes_on(
    engine: TtsEngine,
) -> None:
    backend = engine.backends[Backend.PIPER]

    async def crash_on_boom(text: str, voice: Voice) -> WavAudio:
        return await backend.synthesize("..." if "boom" in text else text, voice)

    rec = Recorder()
    session = open_session(engine, rec, synthesize=crash_on_boom)
    text = "Hello there. This sentence goes boom right now. And this one is fine again."
    await session.handle(TtsText(sid="sid-engine", turn=3, seq=0, text=text, final=True))
    await rec.wait_for(TtsEnd, turn=3)
    errors = [m for m in rec.of_turn(3) if isinstance(m, ServiceError)]
    assert [e.code for e in errors] == [ErrorCode.ENGINE_FAILED]
    segments = [m.text for m in rec.of_turn(3) if isinstance(m, TtsSegment)]
    assert segments == ["Hello there.", "And this one is fine again."]
    end = rec.of_turn(3)[-1]
    assert isinstance(end, TtsEnd) and end.segments == 2
    await session.aclose()


async def test_unknown_voice_is_a_bad_request(engine: TtsEngine) -> None:
    rec = Recorder()
    with pytest.raises(ProtocolError):
        await engine.open_session(TtsOpen(sid="sid-engine", voice="klingon"), rec.publish)
    [error] = rec.messages
    assert isinstance(error, ServiceError) and error.code is ErrorCode.BAD_REQUEST
    assert "klingon" in error.message


async def test_mandarin_backend_speaks_chinese(engine: TtsEngine) -> None:
    audio = await engine.synthesize("今天天气很好。", MANDARIN_MALE)
    assert audio.sample_rate == 22050
    assert 0.8 < audio.duration_s < 5 and rms_dbfs(audio.pcm) > -35

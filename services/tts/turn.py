"""One turn of speech: streamed text in, ordered segments of audio out.

`TurnSynthesis` owns one task, which runs two loops in a TaskGroup:

* the synthesizer takes segments in order and turns each into audio at the session's
  rate, while
* the publisher sends the previous segment: `TtsSegment`, then its `TtsAudio` chunks
  (~``chunk_ms`` each, ``seq`` increasing across the turn), and after the final segment
  `TtsEnd`.

So segment k+1 is being synthesized while k is published, and text keeps arriving
(`add_text`) while both run. Queues: segments waiting for synthesis (bounded; when
full, `add_text` waits: backpressure onto the session's inbox) and synthesized
segments waiting to be published (two at most; the synthesizer waits).

`cancel` is immediate: it raises a flag every publish checks, then cancels the task;
a sentence being synthesized is abandoned (its engine finishes it and drops it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from services.tts.framing import WavAudio
from services.tts.metrics import TtsMetrics
from services.tts.segmenter import Segmenter, SegmenterOptions
from services.tts.voices import Voice, voice_for_text
from shared.audio import BYTES_PER_SAMPLE, duration_ms, resample_pcm16
from shared.errors import EngineError
from shared.messages import (
    ErrorCode,
    ServiceError,
    ServiceName,
    TtsAudio,
    TtsEnd,
    TtsSegment,
    WireModel,
)

Synthesize = Callable[[str, Voice], Awaitable[WavAudio]]
Publish = Callable[[WireModel], Awaitable[None]]

TEXT_QUEUE_SIZE = 64  # segments; an answer of 256 tokens makes ~20
READY_QUEUE_SIZE = 2  # synthesized segments ahead of the publisher


@dataclass(frozen=True)
class TurnOptions:
    sample_rate: int = 24000
    chunk_ms: int = 100
    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)


@dataclass(frozen=True)
class _Text:
    text: str
    cut_at: float  # monotonic time the segment was complete


@dataclass(frozen=True)
class _Audio:
    text: str
    cut_at: float
    pcm: bytes


@dataclass(frozen=True)
class _Failed:
    text: str


class TurnSynthesis:
    """Speech of one turn of one session (see module docstring)."""

    def __init__(
        self,
        sid: str,
        turn: int,
        voice: Voice | None,
        synthesize: Synthesize,
        publish: Publish,
        options: TurnOptions,
        metrics: TtsMetrics,
        log: logging.LoggerAdapter[logging.Logger],
        *,
        started_at: float,
    ) -> None:
        self.sid = sid
        self.turn = turn
        self._voice = voice
        self._synthesize = synthesize
        self._publish = publish
        self._options = options
        self._metrics = metrics
        self._log = log
        self._started_at = started_at
        self._segmenter = Segmenter(options.segmenter)
        self._texts: asyncio.Queue[_Text | None] = asyncio.Queue(maxsize=TEXT_QUEUE_SIZE)
        self._ready: asyncio.Queue[_Audio | _Failed | None] = asyncio.Queue(
            maxsize=READY_QUEUE_SIZE
        )
        self._task: asyncio.Task[None] | None = None
        self._cancelled = False
        self._ended = False
        self.final_received = False

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"tts-turn-{self.sid}-{self.turn}"
        )

    @property
    def task(self) -> asyncio.Task[None]:
        assert self._task is not None, "start() first"
        return self._task

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    @property
    def finished(self) -> bool:
        """`TtsEnd` is out (the task may still be unwinding), or the task ended."""
        return self._ended or self.done

    def cancel(self) -> None:
        """Stop now: nothing more of this turn is published. Never blocks."""
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()

    async def add_text(self, text: str, final: bool) -> None:
        """Feed a delta of the answer; ``final`` ends the turn's text."""
        if self.final_received:
            self._log.warning("text for turn %d after its final text; ignored", self.turn)
            return
        segments = self._segmenter.feed(text)
        if final:
            segments += self._segmenter.flush()
            self.final_received = True
        now = time.monotonic()
        for segment in segments:
            await self._enqueue(_Text(segment, now))
        if final:
            await self._enqueue(None)

    async def _enqueue(self, item: _Text | None) -> None:
        if self.done:
            return  # a cancelled or failed turn drains nothing
        try:
            self._texts.put_nowait(item)
            return
        except asyncio.QueueFull:
            pass
        # Full: wait for room, but not past the end of the turn (a cancel while we wait
        # would otherwise leave the session's inbox stuck behind this put forever).
        put = asyncio.ensure_future(self._texts.put(item))
        try:
            await asyncio.wait([put, self.task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()

    # ------------------------------------------------------------------ the task

    async def _run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._synthesize_segments())
                tg.create_task(self._publish_segments())
        except Exception:  # noqa: BLE001 - a bug in one turn is reported, not fatal to the call
            self._log.exception("turn %d failed", self.turn)
            self._metrics.errors.labels(ServiceName.TTS.value, ErrorCode.INTERNAL.value).inc()
            await self._emit(
                ServiceError(
                    sid=self.sid,
                    service=ServiceName.TTS,
                    code=ErrorCode.INTERNAL,
                    message="speech synthesis failed for this turn",
                    turn=self.turn,
                )
            )

    async def _synthesize_segments(self) -> None:
        while (item := await self._texts.get()) is not None:
            voice = voice_for_text(self._voice, item.text)
            started = time.monotonic()
            try:
                audio = await self._synthesize(item.text, voice)
            except EngineError as exc:
                self._log.warning("turn %d: %s failed on a segment: %s", self.turn, voice.name, exc)
                self._metrics.count_segment("failed")
                await self._ready.put(_Failed(item.text))
                continue
            elapsed = time.monotonic() - started
            self._metrics.observe_synthesis(elapsed, audio.duration_s)
            pcm = resample_pcm16(audio.pcm, audio.sample_rate, self._options.sample_rate)
            if not pcm:
                self._metrics.count_segment("empty")
                continue
            await self._ready.put(_Audio(item.text, item.cut_at, pcm))
        await self._ready.put(None)

    async def _publish_segments(self) -> None:
        rate = self._options.sample_rate
        chunk_bytes = max(1, rate * self._options.chunk_ms // 1000) * BYTES_PER_SAMPLE
        index = seq = 0
        audio_ms = 0.0
        while (item := await self._ready.get()) is not None:
            if isinstance(item, _Failed):
                self._metrics.errors.labels(
                    ServiceName.TTS.value, ErrorCode.ENGINE_FAILED.value
                ).inc()
                await self._emit(
                    ServiceError(
                        sid=self.sid,
                        service=ServiceName.TTS,
                        code=ErrorCode.ENGINE_FAILED,
                        message="speech synthesis failed for one segment; the turn continues",
                        turn=self.turn,
                    )
                )
                continue
            await self._emit(TtsSegment(sid=self.sid, turn=self.turn, index=index, text=item.text))
            for start in range(0, len(item.pcm), chunk_bytes):
                await self._emit(
                    TtsAudio(
                        sid=self.sid,
                        turn=self.turn,
                        index=index,
                        seq=seq,
                        pcm=item.pcm[start : start + chunk_bytes],
                        sample_rate=rate,
                    )
                )
                if start == 0:
                    now = time.monotonic()
                    self._metrics.observe_segment(now - item.cut_at)
                    if seq == 0:
                        self._metrics.observe_first_audio(now - self._started_at)
                seq += 1
            self._metrics.count_segment("spoken")
            audio_ms += duration_ms(item.pcm, rate)
            index += 1
        await self._emit(TtsEnd(sid=self.sid, turn=self.turn, segments=index, audio_ms=audio_ms))
        self._ended = True

    async def _emit(self, message: WireModel) -> None:
        # cancel() may run between two publishes of one loop iteration: the flag makes
        # "nothing after the cancel" hold without waiting for the task to notice.
        if not self._cancelled:
            await self._publish(message)

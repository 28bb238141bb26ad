"""One call's ASR: frames -> VAD -> endpointer -> Whisper partials and finals.

Latency comes first. The final decode is overlapped with the silence window: when a
pause begins inside an utterance, the utterance so far is decoded speculatively; if the
silence completes with no new speech that result is the final (so ``decode_ms``, counted
from the end-of-utterance decision, is near 0 when the decode finished in time); if
speech resumes the result is discarded.

Partials re-decode the growing utterance every ``partial_interval_ms`` of audio while
the user speaks, but only when the replica's decode thread is idle: a final then waits
behind at most one partial, and a partial whose utterance has already been finalized is
never published.

Stream time (ms from the session's first accepted sample) orders everything here; the
wall clock only stamps events and measures latency.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from services.asr.audiobuffer import SAMPLE_RATE, Samples, StreamBuffer
from services.asr.decoder import (
    DecodeResult,
    normalize_language,
    wall_guard_s,
)
from services.asr.dedup import SeqFilter
from services.asr.endpointer import (
    Action,
    Endpointer,
    EndpointerConfig,
    StateChanged,
    UtteranceBegan,
    UtteranceEnded,
)
from services.asr.metrics import SERVICE, AsrMetrics
from services.asr.pool import DecodePool
from services.asr.transcriber import Transcriber
from services.asr.vad import SpeechDetector
from shared.audio import pcm16_to_float
from shared.logs import SessionLogger
from shared.messages import (
    AsrClose,
    AsrCommit,
    AsrOpen,
    AudioFrame,
    ErrorCode,
    Message,
    SentenceBegin,
    ServiceError,
    ServiceName,
    TranscriptFinal,
    TranscriptPartial,
    VadEvent,
    VadState,
)
from shared.worker import Publish

log = logging.getLogger(__name__)

# Audio kept after the last voiced window for the final decode: Whisper clips a word
# whose last phoneme touches the end of the buffer.
_TAIL_MS = 64


@dataclass(frozen=True)
class SessionContext:
    """What every session of a replica shares (the model, the decode thread, metrics)."""

    decoder: Transcriber  # the embedded Whisper or a remote model
    pool: DecodePool
    metrics: AsrMetrics
    partial_interval_ms: int = 400
    speculate_after_ms: int = 0
    max_utterance_ms: int = 28_000
    unsure_margin: float = 0.15
    language_lock_probability: float = 0.7
    # Encoder context of partials; None: the finals' (then a partial can become the final).
    partial_context_s: float | None = None
    partials: bool = True  # False: finals only, whatever the session asks (remote models)


@dataclass
class _Speculation:
    """A decode of the utterance from its start up to ``audio_end_ms``."""

    future: asyncio.Future[DecodeResult]
    audio_end_ms: int
    owned: bool = True  # False: a partial's decode, adopted; its partial still wants it


@dataclass
class _Utterance:
    index: int
    audio_begin_ms: int
    speech_begin_ms: int
    last_partial_at_ms: int
    speech_end_wall: float  # monotonic time the last voiced audio was processed
    last_partial_text: str = ""
    speculation: _Speculation | None = field(default=None)
    partial: _Speculation | None = field(default=None)  # the latest partial decode


class AsrSession:
    """`shared.worker.SessionWorker` for one ASR call."""

    def __init__(
        self, open_msg: AsrOpen, publish: Publish, ctx: SessionContext, detector: SpeechDetector
    ) -> None:
        self.sid = open_msg.sid
        self._publish = publish
        self._ctx = ctx
        self._detector = detector
        self._manual = open_msg.manual
        self._partials = open_msg.partials and ctx.partials
        # None: detect per decode until a confident final fixes the call's language.
        self._requested_language = normalize_language(open_msg.language)
        self._language: str | None = None
        self._endpointer = Endpointer(
            EndpointerConfig.from_options(
                open_msg.vad,
                manual=open_msg.manual,
                max_utterance_ms=ctx.max_utterance_ms,
                unsure_margin=ctx.unsure_margin,
            )
        )
        self._buffer = StreamBuffer()
        self._seq = SeqFilter()
        self._utt: _Utterance | None = None
        self._next_index = 0
        self._pause_began_ms = 0
        self._partial_task: asyncio.Task[None] | None = None
        self._log = SessionLogger(log, {"sid": self.sid})

    # ------------------------------------------------------------------ SessionWorker

    async def handle(self, message: Message) -> None:
        match message:
            case AudioFrame():
                await self._on_audio(message)
            case AsrCommit():
                ended = self._endpointer.end_utterance()
                await self._apply_all(ended)
                if not any(isinstance(a, UtteranceEnded) for a in ended):
                    # Every commit gets exactly one final, empty when nothing was said, so
                    # the gateway can match commits to transcripts.
                    now = self._endpointer.now_ms
                    await self._publish(
                        TranscriptFinal(
                            sid=self.sid, index=self._next_index, begin_ms=now, end_ms=now, text=""
                        )
                    )
            case AsrClose(flush=flush):
                if flush:
                    await self._apply_all(self._endpointer.end_utterance())
            case _:
                self._log.debug("ignoring %s", message.type)

    def cancel(self, turn: int) -> None:
        """ASR has no turns: what the user said is never cancelled."""

    async def aclose(self) -> None:
        utt, self._utt = self._utt, None
        if utt is not None and utt.speculation is not None and utt.speculation.owned:
            utt.speculation.future.cancel()
        task, self._partial_task = self._partial_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    # ------------------------------------------------------------------ audio path

    async def _on_audio(self, frame: AudioFrame) -> None:
        if not self._seq.accept(frame.seq):
            self._ctx.metrics.base.dropped.labels(SERVICE, "duplicate_frame").inc()
            return
        try:
            samples = pcm16_to_float(frame.pcm)
        except ValueError:
            self._ctx.metrics.base.dropped.labels(SERVICE, "bad_audio").inc()
            return
        self._buffer.append(samples)
        for probability in self._detector.feed(samples):
            voiced_before = self._endpointer.last_voiced_ms
            await self._apply_all(self._endpointer.process(probability))
            if self._utt is not None and self._endpointer.last_voiced_ms != voiced_before:
                self._utt.speech_end_wall = time.monotonic()
            self._maybe_speculate()
        self._trim()
        self._maybe_partial()

    async def _apply_all(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case StateChanged(state=state, start_ms=start, end_ms=end):
                    await self._on_state(state, start, end)
                case UtteranceBegan(audio_begin_ms=audio_begin, speech_begin_ms=speech_begin):
                    await self._begin(audio_begin, speech_begin)
                case UtteranceEnded(end_ms=end):
                    await self._finalize(end)

    async def _on_state(self, state: VadState, start_ms: int, end_ms: int) -> None:
        if state is VadState.PAUSING:
            self._pause_began_ms = start_ms
        elif state is VadState.SPEAKING and self._utt is not None:
            self._discard_speculation(self._utt)
        if not self._manual:
            # Manual sessions chose client-side turn-taking: no voice-activity events.
            await self._publish(
                VadEvent(
                    sid=self.sid,
                    state=state,
                    start_ms=start_ms,
                    end_ms=end_ms,
                    timestamp=time.time(),
                )
            )

    async def _begin(self, audio_begin_ms: int, speech_begin_ms: int) -> None:
        self._utt = _Utterance(
            index=self._next_index,
            audio_begin_ms=audio_begin_ms,
            speech_begin_ms=speech_begin_ms,
            last_partial_at_ms=speech_begin_ms,
            speech_end_wall=time.monotonic(),
        )
        self._next_index += 1
        await self._publish(
            SentenceBegin(sid=self.sid, index=self._utt.index, begin_ms=speech_begin_ms)
        )

    def _trim(self) -> None:
        if self._utt is not None:
            self._buffer.discard_before(self._utt.audio_begin_ms)
            return
        # Keep what a future onset may reach back to: the onset candidate confirmation
        # window plus the prefix padding.
        config = self._endpointer.config
        keep = config.prefix_padding_ms + config.min_speech_ms + 2 * config.window_ms
        self._buffer.discard_before(self._endpointer.now_ms - keep)

    # ------------------------------------------------------------------ decoding

    def _decode_language(self) -> str | None:
        return self._requested_language or self._language

    def _submit(
        self, audio: Samples, kind: str, *, min_context_s: float | None = None
    ) -> asyncio.Future[DecodeResult]:
        decoder, language, metrics = self._ctx.decoder, self._decode_language(), self._ctx.metrics
        future = self._ctx.pool.submit(
            lambda: decoder.transcribe(audio, language, min_context_s=min_context_s)
        )

        def observe(done: asyncio.Future[DecodeResult]) -> None:
            if not done.cancelled() and done.exception() is None:
                result = done.result()
                metrics.observe_decode(kind, result.elapsed_s, result.rtf)

        future.add_done_callback(observe)
        return future

    def _maybe_speculate(self) -> None:
        utt = self._utt
        if utt is None or self._manual or utt.speculation is not None:
            return
        if self._endpointer.state is not VadState.PAUSING:
            return
        if self._endpointer.now_ms - self._pause_began_ms < self._ctx.speculate_after_ms:
            return
        partial = utt.partial
        if (
            partial is not None
            and not partial.future.cancelled()
            and partial.audio_end_ms >= self._endpointer.last_voiced_ms
        ):
            # The partial decode in flight (or just done) already holds every voiced
            # window: it is the final's decode, and a second one would queue behind it.
            utt.speculation = _Speculation(partial.future, partial.audio_end_ms, owned=False)
            self._ctx.metrics.speculative.labels(SERVICE, "adopted_partial").inc()
            return
        end = self._buffer.end_ms
        utt.speculation = _Speculation(
            future=self._submit(self._buffer.slice(utt.audio_begin_ms, end), "speculative"),
            audio_end_ms=end,
        )

    def _discard_speculation(self, utt: _Utterance) -> None:
        if utt.speculation is None:
            return
        # Cancelling only helps while it is queued; a running decode finishes unseen.
        if utt.speculation.owned:
            utt.speculation.future.cancel()
        utt.speculation = None
        self._ctx.metrics.speculative.labels(SERVICE, "discarded").inc()

    def _maybe_partial(self) -> None:
        utt = self._utt
        if not self._partials or utt is None or self._endpointer.state is not VadState.SPEAKING:
            return
        if self._partial_task is not None and not self._partial_task.done():
            return
        if self._ctx.pool.busy:
            return  # the CPU budget: never queue a partial behind other decodes
        now = self._buffer.end_ms
        if now - utt.last_partial_at_ms < self._ctx.partial_interval_ms:
            return
        utt.last_partial_at_ms = now
        audio = self._buffer.slice(utt.audio_begin_ms, now)
        context = self._ctx.partial_context_s
        future = self._submit(audio, "partial", min_context_s=context)
        if context is None:
            # Decoded exactly like a final (same start, same caps, same context): when a
            # pause follows, `_maybe_speculate` may adopt it as the final's decode.
            utt.partial = _Speculation(future, now, owned=False)
        self._partial_task = asyncio.create_task(
            self._publish_partial(utt, future, now), name=f"asr-partial-{self.sid}"
        )

    async def _publish_partial(
        self, utt: _Utterance, future: asyncio.Future[DecodeResult], end_ms: int
    ) -> None:
        metrics = self._ctx.metrics
        try:
            result = await future
        except Exception:  # noqa: BLE001 - a failed partial must not end the call
            self._log.exception("partial decode failed")
            metrics.partials.labels(SERVICE, "failed").inc()
            return
        # A final has priority: once the utterance is being finalized, its partials are stale.
        if self._utt is not utt:
            metrics.partials.labels(SERVICE, "stale").inc()
            return
        if not result.text or result.text == utt.last_partial_text:
            metrics.partials.labels(SERVICE, "unchanged").inc()
            return
        utt.last_partial_text = result.text
        metrics.partials.labels(SERVICE, "published").inc()
        await self._publish(
            TranscriptPartial(
                sid=self.sid,
                index=utt.index,
                begin_ms=utt.speech_begin_ms,
                end_ms=end_ms,
                text=result.text,
            )
        )

    async def _finalize(self, end_ms: int) -> None:
        utt, self._utt = self._utt, None
        if utt is None:
            return
        metrics = self._ctx.metrics
        decided = time.monotonic()
        spec = utt.speculation
        if spec is not None and not spec.future.cancelled():
            future = spec.future
            audio_s = (spec.audio_end_ms - utt.audio_begin_ms) / 1000
            metrics.speculative.labels(SERVICE, "used").inc()
        else:
            audio = self._buffer.slice(utt.audio_begin_ms, end_ms + _TAIL_MS)
            audio_s = len(audio) / SAMPLE_RATE
            future = self._submit(audio, "final")
        # Waiting may include one decode already running (a partial, or another session's).
        guard = wall_guard_s(audio_s, self._ctx.decoder.options) * (1 + self._ctx.pool.in_flight)
        text, language, confidence = "", "", 0.0
        try:
            async with asyncio.timeout(guard):
                result = await future
        except TimeoutError:
            # Whisper looping or the CPU starved: the best text we have is the last partial.
            self._log.warning("final decode of utterance %d exceeded %.1f s", utt.index, guard)
            metrics.finals.labels(SERVICE, "timeout").inc()
            text = utt.last_partial_text
        except Exception:  # noqa: BLE001 - reported to the peer; the call goes on
            self._log.exception("final decode failed")
            metrics.finals.labels(SERVICE, "failed").inc()
            metrics.base.errors.labels(SERVICE, ErrorCode.ENGINE_FAILED.value).inc()
            await self._publish(
                ServiceError(
                    sid=self.sid,
                    service=ServiceName.ASR,
                    code=ErrorCode.ENGINE_FAILED,
                    message="speech recognition failed for this utterance",
                )
            )
            return
        else:
            text, language = result.text, result.language
            confidence = min(1.0, math.exp(result.avg_logprob)) if text else 0.0
            self._lock_language(result)
            if not text:
                # Silence or noise that passed the VAD: the VAD events went out, no final.
                self._log.info(
                    "utterance %d: no speech (no_speech_prob %.2f)",
                    utt.index,
                    result.no_speech_prob,
                )
                metrics.finals.labels(SERVICE, "no_speech").inc()
                return
        if not text:
            return
        now = time.monotonic()
        await self._publish(
            TranscriptFinal(
                sid=self.sid,
                index=utt.index,
                begin_ms=utt.speech_begin_ms,
                end_ms=end_ms,
                text=text,
                language=language,
                confidence=confidence,
                decode_ms=(now - decided) * 1000.0,
            )
        )
        metrics.finals.labels(SERVICE, "published").inc()
        metrics.finalize.labels(SERVICE).observe(now - decided)
        metrics.final_latency.labels(SERVICE).observe(now - utt.speech_end_wall)

    def _lock_language(self, result: DecodeResult) -> None:
        # Detection costs an extra encoder pass per decode; a call keeps its language.
        if (
            self._requested_language is None
            and self._language is None
            and result.text
            and result.language_probability >= self._ctx.language_lock_probability
        ):
            self._language = result.language
            self._log.info(
                "language detected: %s (p=%.2f)", result.language, result.language_probability
            )

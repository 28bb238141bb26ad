"""The ASR `shared.worker.Engine`: Whisper + the decode thread, sessions on demand."""

from __future__ import annotations

import asyncio
import logging
import time

from services.asr.decoder import WhisperDecoder
from services.asr.metrics import AsrMetrics
from services.asr.pool import DecodePool
from services.asr.session import AsrSession, SessionContext
from services.asr.settings import AsrSettings
from services.asr.vad import SpeechDetector
from shared.errors import EngineError
from shared.messages import AsrClose, AsrOpen, Message, ServiceName, WireModel
from shared.modelfiles import WHISPER_BASE, ensure_model
from shared.worker import Publish

log = logging.getLogger(__name__)


class AsrEngine:
    service = ServiceName.ASR
    open_types: tuple[type[WireModel], ...] = (AsrOpen,)
    close_types: tuple[type[WireModel], ...] = (AsrClose,)

    def __init__(self, settings: AsrSettings, metrics: AsrMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._ctx: SessionContext | None = None

    @property
    def context(self) -> SessionContext:
        if self._ctx is None:
            raise EngineError("ASR engine is not loaded")
        return self._ctx

    # Model names this replica serves (the routing table); the embedded engine's own
    # name is always one of them.
    models: frozenset[str] = frozenset({"whisper-base"})

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in models if m not in self.models)

    def load(self) -> None:
        """Verify and load Whisper, warm it up once, check the VAD loads. Blocking."""
        if self._ctx is not None:
            return
        s = self.settings
        model_dir = s.model_dir or ensure_model(WHISPER_BASE, s.model_cache)
        decoder = WhisperDecoder(
            model_dir, threads=s.threads, workers=s.decode_workers, options=s.decode_options()
        )
        started = time.monotonic()
        decoder.load()
        log.info("whisper loaded from %s in %.2f s", model_dir, time.monotonic() - started)
        if s.warm_up:
            result = decoder.warm_up()
            log.info("whisper warm-up decode took %.2f s", result.elapsed_s)
        SpeechDetector()  # fail at start-up, not on the first call, if the VAD cannot load
        self._ctx = SessionContext(
            decoder=decoder,
            pool=DecodePool(s.decode_workers),
            metrics=self.metrics,
            partial_interval_ms=s.partial_interval_ms,
            speculate_after_ms=s.speculate_after_ms,
            max_utterance_ms=s.max_utterance_ms,
            unsure_margin=s.vad_unsure_margin,
            language_lock_probability=s.language_lock_probability,
            partial_context_s=s.partial_context_s,
        )

    async def open_session(self, message: Message, publish: Publish) -> AsrSession:
        if not isinstance(message, AsrOpen):
            raise TypeError(f"ASR sessions open with asr.open, not {message.type}")
        ctx = self.context
        # Building the VAD's native model takes ~100 ms: keep it off the event loop.
        detector = await asyncio.to_thread(SpeechDetector)
        return AsrSession(message, publish, ctx, detector)

    async def aclose(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            await ctx.pool.aclose()

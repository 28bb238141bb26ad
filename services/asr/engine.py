"""The ASR `shared.worker.Engine`: Whisper + the decode thread, sessions on demand.

A session's model (``AsrOpen.model``; None: the routing table's default) picks its
`SessionContext`: the embedded Whisper with its decode thread, or a remote
``/v1/audio/transcriptions`` model with a pool of its own (HTTP waits, not CPU).
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.asr.decoder import WhisperDecoder
from services.asr.metrics import AsrMetrics
from services.asr.pool import DecodePool
from services.asr.remote import RemoteTranscriber
from services.asr.session import AsrSession, SessionContext
from services.asr.settings import AsrSettings
from services.asr.vad import SpeechDetector
from shared.errors import EngineError, ProtocolError
from shared.messages import AsrClose, AsrOpen, Message, ServiceName, WireModel
from shared.modelfiles import WHISPER_BASE, ensure_model
from shared.remote import RemoteMetrics
from shared.routing import RoutingTable, TranscriptionRoute, embedded_only
from shared.worker import Publish

log = logging.getLogger(__name__)


class AsrEngine:
    service = ServiceName.ASR
    open_types: tuple[type[WireModel], ...] = (AsrOpen,)
    close_types: tuple[type[WireModel], ...] = (AsrClose,)

    def __init__(
        self, settings: AsrSettings, metrics: AsrMetrics, routing: RoutingTable | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.routing = routing if routing is not None else embedded_only()
        # Model names this replica serves: the routing table (the embedded one included).
        self.models = self.routing.models(ServiceName.ASR)
        self._remote_metrics = RemoteMetrics(ServiceName.ASR.value, metrics.base.registry)
        self._ctx: SessionContext | None = None
        self._remote: dict[str, SessionContext] = {}

    @property
    def context(self) -> SessionContext:
        if self._ctx is None:
            raise EngineError("ASR engine is not loaded")
        return self._ctx

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in models if m not in self.models)

    def load(self) -> None:
        """Verify and load Whisper, warm it up once, check the VAD loads, set up the
        remote models (a missing API key variable fails here). Blocking."""
        if self._ctx is not None:
            return
        s = self.settings
        for name, route in self.routing.routes(ServiceName.ASR).items():
            if isinstance(route, TranscriptionRoute):
                self._remote[name] = SessionContext(
                    decoder=RemoteTranscriber(name, route, self._remote_metrics),
                    pool=DecodePool(route.concurrency),
                    metrics=self.metrics,
                    max_utterance_ms=s.max_utterance_ms,
                    unsure_margin=s.vad_unsure_margin,
                    language_lock_probability=s.language_lock_probability,
                    partials=False,
                )
                log.info("ASR model %s -> %s (%s)", name, route.base_url, route.model)
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
        ctx = self.context_for(message.model)
        # Building the VAD's native model takes ~100 ms: keep it off the event loop.
        detector = await asyncio.to_thread(SpeechDetector)
        return AsrSession(message, publish, ctx, detector)

    def context_for(self, model: str | None) -> SessionContext:
        """The context of ``model`` (None: the default); `ProtocolError` if unknown."""
        try:
            name, route = self.routing.resolve(ServiceName.ASR, model)
        except KeyError as exc:
            raise ProtocolError(f"no ASR model named {model!r}", code="unknown_model") from exc
        if not isinstance(route, TranscriptionRoute):
            return self.context
        ctx = self._remote.get(name)
        if ctx is None:
            raise EngineError("ASR engine is not loaded")
        return ctx

    async def aclose(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            await ctx.pool.aclose()
        remote, self._remote = self._remote, {}
        for rctx in remote.values():
            await rctx.pool.aclose()
            if isinstance(rctx.decoder, RemoteTranscriber):
                rctx.decoder.close()

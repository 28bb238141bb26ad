"""The TTS `shared.worker.Engine`: backends by voice, sessions by `TtsOpen`."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from services.tts.backend import SpeechBackend
from services.tts.espeak import EspeakBackend
from services.tts.framing import WavAudio
from services.tts.metrics import TtsMetrics
from services.tts.piper import PiperBackend, PiperProcess
from services.tts.session import TtsSession
from services.tts.settings import TtsSettings
from services.tts.text import is_speakable
from services.tts.turn import TurnOptions
from services.tts.voices import Backend, UnknownVoiceError, Voice, resolve_voice
from shared.errors import EngineError, ProtocolError
from shared.messages import (
    ErrorCode,
    Message,
    ServiceError,
    ServiceName,
    TtsClose,
    TtsOpen,
    WireModel,
)
from shared.worker import Publish

log = logging.getLogger(__name__)


def default_backends(settings: TtsSettings, metrics: TtsMetrics) -> dict[Backend, SpeechBackend]:
    """The embedded engines: Piper for English, espeak-ng for Mandarin."""
    model, config = settings.piper_files()
    procs = [
        PiperProcess(
            settings.piper_python,
            model,
            config,
            None if settings.piper_workdir is None else settings.piper_workdir / f"piper-{i}",
            on_restart=metrics.engine_restarted,
        )
        for i in range(settings.piper_procs)
    ]
    return {
        Backend.PIPER: PiperBackend(procs, timeout_s=settings.synth_timeout_s),
        Backend.ESPEAK: EspeakBackend(
            settings.espeak_binary,
            words_per_minute=settings.espeak_words_per_minute,
            timeout_s=settings.synth_timeout_s,
            max_procs=settings.espeak_max_procs,
        ),
    }


class TtsEngine:
    """Plugs TTS into `shared.worker.WorkerRuntime`."""

    service = ServiceName.TTS
    open_types: tuple[type[WireModel], ...] = (TtsOpen,)
    close_types: tuple[type[WireModel], ...] = (TtsClose,)

    def __init__(
        self,
        settings: TtsSettings,
        metrics: TtsMetrics,
        backends: Mapping[Backend, SpeechBackend] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        # Fail at start-up, not on the first call, if the default voice is unknown.
        resolve_voice(settings.default_voice)
        self.backends = (
            dict(backends) if backends is not None else default_backends(settings, metrics)
        )

    # Model names this replica serves (the routing table); the embedded engine's own
    # name is always one of them.
    models: frozenset[str] = frozenset({"embedded"})

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in models if m not in self.models)

    def load(self) -> None:
        for backend in self.backends.values():
            backend.load()

    async def synthesize(self, text: str, voice: Voice) -> WavAudio:
        """One segment with the backend of ``voice``; raises `EngineError`."""
        if not is_speakable(text):
            # Piper exits on a line with nothing to pronounce; never send one.
            raise EngineError("nothing speakable in the segment")
        backend = self.backends.get(voice.backend)
        if backend is None:
            raise EngineError(f"no {voice.backend.value} backend in this replica")
        return await backend.synthesize(text, voice)

    async def open_session(self, message: Message, publish: Publish) -> TtsSession:
        if not isinstance(message, TtsOpen):
            raise TypeError(f"expected tts.open, got {message.type}")
        try:
            voice = resolve_voice(
                message.voice if message.voice is not None else self.settings.default_voice
            )
        except UnknownVoiceError as exc:
            self.metrics.errors.labels(self.service.value, ErrorCode.BAD_REQUEST.value).inc()
            # The runtime reports any failure to open as ENGINE_FAILED; the caller needs
            # to know it asked for something wrong, so say so first, then refuse.
            await publish(
                ServiceError(
                    sid=message.sid,
                    service=self.service,
                    code=ErrorCode.BAD_REQUEST,
                    message=str(exc),
                )
            )
            raise ProtocolError(str(exc)) from exc
        return TtsSession(
            message.sid,
            voice,
            self.synthesize,
            publish,
            TurnOptions(
                sample_rate=message.sample_rate,
                chunk_ms=self.settings.chunk_ms,
                segmenter=self.settings.segmenter_options(),
            ),
            self.metrics,
            close_drain_s=self.settings.close_drain_s,
        )

    async def aclose(self) -> None:
        for backend in self.backends.values():
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing the %s backend failed", type(backend).__name__)

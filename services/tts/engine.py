"""The TTS `shared.worker.Engine`: backends by voice, sessions by `TtsOpen`.

A session's model (``TtsOpen.model``; None: the routing table's default) is either the
embedded engines (Piper, espeak-ng; voices from `services.tts.voices`) or a remote
``/v1/audio/speech`` model (`services.tts.remote`; voices from the routing table).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NoReturn

from services.tts.backend import SpeechBackend
from services.tts.espeak import EspeakBackend
from services.tts.framing import WavAudio
from services.tts.metrics import TtsMetrics
from services.tts.piper import PiperBackend, PiperProcess
from services.tts.remote import RemoteSpeech
from services.tts.session import TtsSession
from services.tts.settings import TtsSettings
from services.tts.text import is_speakable
from services.tts.turn import Synthesize, TurnOptions
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
from shared.remote import RemoteMetrics
from shared.routing import RoutingTable, SpeechRoute, embedded_only
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
        routing: RoutingTable | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.routing = routing if routing is not None else embedded_only()
        # Model names this replica serves: the routing table (the embedded one included).
        self.models = self.routing.models(ServiceName.TTS)
        self._remote_metrics = RemoteMetrics(ServiceName.TTS.value, metrics.registry)
        self._remotes: dict[str, RemoteSpeech] = {}
        # Fail at start-up, not on the first call, if the default voice is unknown.
        resolve_voice(settings.default_voice)
        self.backends = (
            dict(backends) if backends is not None else default_backends(settings, metrics)
        )

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in models if m not in self.models)

    def load(self) -> None:
        """Start the embedded engines, set up the remote models (a missing API key
        variable fails here). Blocking."""
        for name, route in self.routing.routes(ServiceName.TTS).items():
            if isinstance(route, SpeechRoute) and name not in self._remotes:
                self._remotes[name] = RemoteSpeech(name, route, self._remote_metrics)
                log.info("TTS model %s -> %s (%s)", name, route.base_url, route.model)
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
            name, route = self.routing.resolve(ServiceName.TTS, message.model)
        except KeyError:
            await self._refuse(message, publish, f"no TTS model named {message.model!r}")
        if isinstance(route, SpeechRoute):
            return await self._open_remote(message, publish, name, route)
        try:
            voice = resolve_voice(
                message.voice if message.voice is not None else self.settings.default_voice
            )
        except UnknownVoiceError as exc:
            await self._refuse(message, publish, str(exc))
        return self._session(message, publish, voice, self.synthesize)

    async def _open_remote(
        self, message: TtsOpen, publish: Publish, name: str, route: SpeechRoute
    ) -> TtsSession:
        remote = self._remotes.get(name)
        if remote is None:
            raise EngineError("TTS engine is not loaded")
        try:
            provider_voice = route.provider_voice(message.voice)
        except KeyError:
            known = ", ".join(sorted(route.voices)) or "none"
            await self._refuse(
                message, publish, f"model {name} has no voice {message.voice!r}; voices: {known}"
            )

        async def synthesize(text: str, _voice: Voice) -> WavAudio:
            # The embedded voice chosen per segment's language means nothing here: the
            # provider's voice reads every language it reads.
            if not is_speakable(text):
                raise EngineError("nothing speakable in the segment")
            return await remote.synthesize(text, provider_voice)

        return self._session(message, publish, None, synthesize)

    def _session(
        self, message: TtsOpen, publish: Publish, voice: Voice | None, synthesize: Synthesize
    ) -> TtsSession:
        return TtsSession(
            message.sid,
            voice,
            synthesize,
            publish,
            TurnOptions(
                sample_rate=message.sample_rate,
                chunk_ms=self.settings.chunk_ms,
                segmenter=self.settings.segmenter_options(),
            ),
            self.metrics,
            close_drain_s=self.settings.close_drain_s,
        )

    async def _refuse(self, message: TtsOpen, publish: Publish, reason: str) -> NoReturn:
        self.metrics.errors.labels(self.service.value, ErrorCode.BAD_REQUEST.value).inc()
        # The runtime reports any failure to open as ENGINE_FAILED; the caller needs
        # to know it asked for something wrong, so say so first, then refuse.
        await publish(
            ServiceError(
                sid=message.sid,
                service=self.service,
                code=ErrorCode.BAD_REQUEST,
                message=reason,
            )
        )
        raise ProtocolError(reason)

    async def aclose(self) -> None:
        remotes, self._remotes = self._remotes, {}
        for remote in remotes.values():
            await remote.aclose()
        for backend in self.backends.values():
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing the %s backend failed", type(backend).__name__)

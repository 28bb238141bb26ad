"""TTS metrics: the common service counters plus the synthesis stages."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from shared.messages import ServiceName
from shared.metrics import ServiceMetrics

_SVC = ServiceName.TTS.value


class TtsMetrics(ServiceMetrics):
    """One container per replica, on an injected registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(_SVC, registry)
        self.first_audio = self.stage_histogram(
            "voice_tts_first_audio_seconds",
            "First text of a turn received -> first audio of that turn published",
        )
        self.segment_latency = self.stage_histogram(
            "voice_tts_segment_latency_seconds",
            "A segment's text complete -> its first audio published",
        )
        self.synthesis = self.stage_histogram(
            "voice_tts_synthesis_seconds", "Engine wall time to synthesize one segment"
        )
        self.engine_restarts = Counter(
            "voice_tts_engine_restarts_total",
            "Synthesizer programs restarted after a failure",
            ["service"],
            registry=self.registry,
        )
        self.segments = Counter(
            "voice_tts_segments_total",
            "Segments by outcome",
            ["service", "outcome"],
            registry=self.registry,
        )

        # Known label values exist from the start, so rates see the first observation.
        self.engine_rtf.labels(_SVC)
        self.engine_restarts.labels(_SVC)

    def observe_first_audio(self, seconds: float) -> None:
        self.first_audio.labels(_SVC).observe(seconds)

    def observe_segment(self, latency_s: float) -> None:
        self.segment_latency.labels(_SVC).observe(latency_s)

    def observe_synthesis(self, seconds: float, audio_s: float) -> None:
        self.synthesis.labels(_SVC).observe(seconds)
        if audio_s > 0:
            self.engine_rtf.labels(_SVC).observe(seconds / audio_s)

    def count_segment(self, outcome: str) -> None:
        self.segments.labels(_SVC, outcome).inc()

    def engine_restarted(self) -> None:
        self.engine_restarts.labels(_SVC).inc()

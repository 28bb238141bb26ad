"""ASR stage metrics, added to the service's `ServiceMetrics` registry."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics import ServiceMetrics

SERVICE = "asr"
DECODE_KINDS = ("partial", "speculative", "final")


class AsrMetrics:
    def __init__(self, base: ServiceMetrics) -> None:
        self.base = base
        r = base.registry
        self.final_latency = base.stage_histogram(
            "voice_asr_final_latency_seconds",
            "End of speech (last voiced audio received) to final transcript published",
        )
        self.finalize = base.stage_histogram(
            "voice_asr_finalize_seconds",
            "End-of-utterance decision to final transcript published (decode left to wait for)",
        )
        self.decode = Histogram(
            "voice_asr_decode_seconds",
            "Whisper decode wall time by kind",
            ["service", "kind"],
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
            registry=r,
        )
        self.speculative = Counter(
            "voice_asr_speculative_total",
            "Final decodes started during the silence window, by outcome",
            ["service", "result"],
            registry=r,
        )
        self.partials = Counter(
            "voice_asr_partials_total",
            "Partial transcripts by outcome",
            ["service", "result"],
            registry=r,
        )
        self.finals = Counter(
            "voice_asr_finals_total",
            "Ended utterances by outcome",
            ["service", "result"],
            registry=r,
        )

        # Known label values exist from the start, so rates see the first observation.
        base.engine_rtf.labels(SERVICE)
        for kind in DECODE_KINDS:
            self.decode.labels(SERVICE, kind)

    def observe_decode(self, kind: str, elapsed_s: float, rtf: float) -> None:
        self.decode.labels(SERVICE, kind).observe(elapsed_s)
        self.base.engine_rtf.labels(SERVICE).observe(rtf)

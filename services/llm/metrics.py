"""The LLM replica's metrics: the shared service counters plus generation figures."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.metrics import ServiceMetrics

_SERVICE = "llm"


class LlmMetrics(ServiceMetrics):
    """One container per process, on an injected registry; no per-session labels."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(_SERVICE, registry)
        r = self.registry
        self.ttft = self.stage_histogram(
            "voice_llm_ttft_seconds", "Time from a turn's arrival to its first answer token"
        )
        self.prefill = self.stage_histogram(
            "voice_llm_prefill_seconds", "Time to evaluate a session's system prompt at open"
        )
        self.tokens_per_second = Histogram(
            "voice_llm_tokens_per_second",
            "Decode speed of one answer",
            ["service"],
            buckets=(2, 5, 10, 15, 20, 30, 40, 50, 60, 80, 100, 150, 250),
            registry=r,
        )
        self.tokens = Counter(
            "voice_llm_generated_tokens_total", "Answer tokens generated", ["service"], registry=r
        )
        self.turns = Counter(
            "voice_llm_turns_total",
            "Turns by outcome (completed, cancelled, failed, skipped)",
            ["service", "result"],
            registry=r,
        )
        self.coalesced = Counter(
            "voice_llm_chunks_coalesced_total",
            "Text chunks merged because the loop fell behind the generation thread",
            ["service"],
            registry=r,
        )

        self.workers = Counter(
            "voice_llm_worker_runs_total",
            "Worker runs by outcome (completed, error, cancelled)",
            ["service", "result"],
            registry=r,
        )
        self.worker_seconds = self.stage_histogram(
            "voice_llm_worker_seconds", "Time one worker took, from its start to its result"
        )

        # Known label values exist from the start, so rates see the first observation.
        self.tokens_per_second.labels(_SERVICE)
        self.tokens.labels(_SERVICE)
        self.coalesced.labels(_SERVICE)
        for outcome in ("completed", "cancelled", "failed", "skipped"):
            self.turns.labels(_SERVICE, outcome)

    def worker_finished(self, result: str) -> None:
        self.workers.labels(_SERVICE, result).inc()

    def turn_finished(self, result: str) -> None:
        self.turns.labels(_SERVICE, result).inc()

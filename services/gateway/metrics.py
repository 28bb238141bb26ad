"""The gateway's metrics container: the common service metrics plus call-level figures.

Labels stay low-cardinality: protocol/endpoint names and fixed reasons, never a session
id or an API key.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.gateway.call import CallFailed
from shared.metrics import ServiceMetrics


class RejectReason(StrEnum):
    """Why a call was refused (a fixed set, so it can be a label)."""

    NOT_FOUND = "not_found"
    MISSING_KEY = "missing_key"
    UNKNOWN_KEY = "unknown_key"
    OVER_KEY_LIMIT = "over_key_limit"
    OVERLOADED = "overloaded"
    DRAINING = "draining"
    BUS_FAILED = "bus_failed"
    UNKNOWN_MODEL = "unknown_model"
    BAD_REQUEST = "bad_request"  # e.g. an invalid query parameter


class GatewayMetrics(ServiceMetrics):
    """Metrics of one gateway process; implements `shared.bus.BusCounters` too."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("gateway", registry)
        r = self.registry
        self.voice_to_voice = self.stage_histogram(
            "voice_gateway_voice_to_voice_seconds",
            "End of user speech (client audio received) to first reply audio sent",
        )
        self.barge_in_stop = self.stage_histogram(
            "voice_gateway_barge_in_stop_seconds",
            "Interrupting speech received from the client to the interrupted answer's audio "
            "stopped (queued audio dropped, LLM and TTS told to cancel)",
        )
        self.barge_in_audio = self.stage_histogram(
            "voice_gateway_barge_in_audio_seconds",
            "Interrupting speech received from the client to the last frame of the "
            "interrupted answer's audio written to it",
        )
        self.calls_active = Gauge(
            "voice_gateway_calls_active", "Calls this gateway holds now", ["endpoint"], registry=r
        )
        self.calls = Counter(
            "voice_gateway_calls_total",
            "Calls accepted (WebSocket upgraded), by endpoint",
            ["endpoint"],
            registry=r,
        )
        self.calls_rejected = Counter(
            "voice_gateway_calls_rejected_total",
            "Calls refused, by reason",
            ["reason"],
            registry=r,
        )
        self.protocol_errors = Counter(
            "voice_gateway_protocol_errors_total",
            "Client messages refused, by protocol and kind",
            ["protocol", "kind"],
            registry=r,
        )
        self.slow_clients = Counter(
            "voice_gateway_slow_clients_total", "Clients disconnected for not reading", registry=r
        )
        self.cancelled_turns = Counter(
            "voice_gateway_cancelled_turns_total",
            "Answers cancelled by a newer user turn",
            registry=r,
        )

        for reason in RejectReason:
            self.calls_rejected.labels(reason.value)
        # The common per-service gauge, derived from the per-endpoint one so the two can
        # never disagree; read at scrape time.
        self.sessions_active.labels(self.service).set_function(self._calls_now)

    def _calls_now(self) -> float:
        return sum(s.value for m in self.calls_active.collect() for s in m.samples)

    def call_started(self, endpoint: str) -> None:
        self.calls.labels(endpoint).inc()
        self.calls_active.labels(endpoint).inc()

    def call_ended(self, endpoint: str) -> None:
        self.calls_active.labels(endpoint).dec()

    def call_event(self, event: object) -> None:
        """Count a failed call by its stable error code (the event goes to the client)."""
        if isinstance(event, CallFailed):
            self.errors.labels(self.service, event.code.value).inc()

    def barge_in_stopped(self, heard_at: float, now: float) -> None:
        self.barge_in_stop.labels(self.service).observe(now - heard_at)

    def barge_in_audio_stopped(self, heard_at: float, last_written_at: float) -> None:
        self.barge_in_audio.labels(self.service).observe(last_written_at - heard_at)

    def rejected(self, reason: RejectReason) -> None:
        self.calls_rejected.labels(reason.value).inc()

    def protocol_error(self, protocol: str, kind: str) -> None:
        self.protocol_errors.labels(protocol, kind).inc()

"""The gateway's metrics container: the common service metrics plus call-level figures.

Labels stay low-cardinality: protocol/endpoint names and fixed reasons, never a session
id or an API key.
"""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge

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


class GatewayMetrics(ServiceMetrics):
    """Metrics of one gateway process; implements `shared.bus.BusCounters` too."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("gateway", registry)
        r = self.registry
        self.voice_to_voice = self.stage_histogram(
            "voice_gateway_voice_to_voice_seconds",
            "End of user speech (client audio received) to first reply audio sent",
        )
        self.calls_active = Gauge(
            "voice_gateway_calls_active", "Calls this gateway holds now", ["endpoint"], registry=r
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

    def rejected(self, reason: RejectReason) -> None:
        self.calls_rejected.labels(reason.value).inc()

    def protocol_error(self, protocol: str, kind: str) -> None:
        self.protocol_errors.labels(protocol, kind).inc()

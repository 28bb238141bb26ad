"""Prometheus metrics common to every service, on an injected registry.

Names end in units, labels are low-cardinality: never a session or user id.
Each service adds its own stage histograms to the same container.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Dense between 50 and 500 ms, where the per-stage budgets of a voice call live.
LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4,
    0.45, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
)


class ServiceMetrics:
    """Counters every service has; implements `shared.bus.BusCounters`."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.service = service
        self.sessions_active = Gauge(
            "voice_sessions_active", "Sessions this process serves now", ["service"], registry=r
        )
        self.session_capacity = Gauge(
            "voice_session_capacity", "Sessions this process may serve at most", ["service"],
            registry=r,
        )
        self.assignments = Counter(
            "voice_assignments_total", "Assignment requests by result", ["service", "result"],
            registry=r,
        )
        self.messages = Counter(
            "voice_messages_total", "Bus messages by direction and type",
            ["service", "direction", "type"], registry=r,
        )
        self.dropped = Counter(
            "voice_dropped_total", "Messages dropped, by reason", ["service", "reason"], registry=r
        )
        self.slow_consumers = Counter(
            "voice_nats_slow_consumers_total", "NATS slow-consumer errors", ["service"], registry=r
        )
        self.reconnects = Counter(
            "voice_nats_reconnects_total", "NATS reconnections", ["service"], registry=r
        )
        self.errors = Counter(
            "voice_errors_total", "Errors by stable code", ["service", "code"], registry=r
        )
        self.engine_rtf = Histogram(
            "voice_engine_real_time_factor", "Engine processing time / audio duration",
            ["service"], buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
            registry=r,
        )

    def stage_histogram(self, name: str, doc: str) -> Histogram:
        """A latency histogram in seconds with the shared buckets."""
        return Histogram(name, doc, ["service"], buckets=LATENCY_BUCKETS_S, registry=self.registry)

    # BusCounters
    def slow_consumer(self) -> None:
        self.slow_consumers.labels(self.service).inc()

    def reconnected(self) -> None:
        self.reconnects.labels(self.service).inc()

    def dropped_publish(self) -> None:
        self.dropped.labels(self.service, "publish_buffer_full").inc()

    def bad_message(self) -> None:
        self.dropped.labels(self.service, "undecodable").inc()

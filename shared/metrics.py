"""Prometheus metrics common to every service, on an injected registry.

Names end in units, labels are low-cardinality: never a session or user id. Subjects
carry replica and session ids, so bus traffic is counted per subject *family*
(`subject_family`), never per subject. Each service adds its own stage histograms to the
same container. Every metric is documented in docs/operations.md.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from shared.messages import ErrorCode, ServiceName

# Dense between 50 and 500 ms, where the per-stage budgets of a voice call live.
# fmt: off
LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4,
    0.45, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
)
# fmt: on

# First tokens of the subjects built in shared/subjects.py.
_SERVICES = frozenset({"asr", "llm", "tts", "gateway"})
_WORKERS = frozenset(s.value for s in ServiceName)
ASSIGN_RESULTS = ("accepted", "full", "unknown_model")
# Drop reasons every process has (the bus's) and every replica has (its session inbox).
_BUS_DROPS = ("publish_buffer_full", "undecodable")
_WORKER_DROPS = ("inbox_full",)


def subject_family(subject: str) -> str:
    """The label for a subject: its shape with replica/session ids replaced by ``*``.

    ``asr.w.<replica>.in`` -> ``asr.w.*.in``, ``session.<sid>.out`` -> ``session.*.out``,
    ``llm.assign`` stays; reply inboxes, ``$``-subjects and anything unknown collapse into
    one family each, so a label value can never be an id.
    """
    parts = subject.split(".")
    if parts[0] == "_INBOX":
        return "_INBOX"
    if parts[0].startswith("$"):
        return parts[0]
    if len(parts) == 3 and parts[0] == "session" and parts[2] == "out":
        return "session.*.out"
    if parts[0] in _SERVICES:
        if len(parts) == 2 and parts[1] == "assign":
            return subject
        if len(parts) == 4 and parts[1] == "w" and parts[3] in ("in", "ctl"):
            return f"{parts[0]}.w.*.{parts[3]}"
    return "other"


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
            "voice_session_capacity",
            "Sessions this process may serve at most",
            ["service"],
            registry=r,
        )
        self.assignments = Counter(
            "voice_assignments_total",
            "Assignment requests by result",
            ["service", "result"],
            registry=r,
        )
        self.messages = Counter(
            "voice_messages_total",
            "Bus messages by direction and type",
            ["service", "direction", "type"],
            registry=r,
        )
        self.bus_messages = Counter(
            "voice_bus_messages_total",
            "NATS messages by direction and subject family",
            ["service", "direction", "family"],
            registry=r,
        )
        self.bus_bytes = Counter(
            "voice_bus_bytes_total",
            "NATS payload bytes by direction and subject family",
            ["service", "direction", "family"],
            registry=r,
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
        self.disconnects = Counter(
            "voice_nats_disconnects_total", "NATS connection losses", ["service"], registry=r
        )
        self.errors = Counter(
            "voice_errors_total", "Errors by stable code", ["service", "code"], registry=r
        )
        self.engine_rtf = Histogram(
            "voice_engine_real_time_factor",
            "Engine processing time / audio duration",
            ["service"],
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
            registry=r,
        )
        # Children resolved once per (direction, family): `labels()` costs a dict lookup
        # and a lock per call, and this runs for every audio frame.
        self._bus_children: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        # Series of every known label value exist from the start, so rates, ratios and
        # alerts see zeros instead of nothing (the label sets are fixed and small).
        self.slow_consumers.labels(service)
        self.reconnects.labels(service)
        self.disconnects.labels(service)
        for code in ErrorCode:
            self.errors.labels(service, code.value)
        for reason in _BUS_DROPS:
            self.dropped.labels(service, reason)
        if service in _WORKERS:
            for result in ASSIGN_RESULTS:
                self.assignments.labels(service, result)
            for reason in _WORKER_DROPS:
                self.dropped.labels(service, reason)
        # CPU and resident memory of this process (process_*), for the capacity dashboard.
        ProcessCollector(registry=r)

    def stage_histogram(self, name: str, doc: str) -> Histogram:
        """A latency histogram in seconds with the shared buckets, for this service."""
        histogram = Histogram(
            name, doc, ["service"], buckets=LATENCY_BUCKETS_S, registry=self.registry
        )
        histogram.labels(self.service)
        return histogram

    # BusCounters
    def slow_consumer(self) -> None:
        self.slow_consumers.labels(self.service).inc()

    def reconnected(self) -> None:
        self.reconnects.labels(self.service).inc()

    def disconnected(self) -> None:
        self.disconnects.labels(self.service).inc()

    def dropped_publish(self) -> None:
        self.dropped.labels(self.service, "publish_buffer_full").inc()

    def bad_message(self) -> None:
        self.dropped.labels(self.service, "undecodable").inc()

    def bus_message(self, direction: str, subject: str, size: int) -> None:
        family = subject_family(subject)
        children = self._bus_children.get((direction, family))
        if children is None:
            children = (
                self.bus_messages.labels(self.service, direction, family),
                self.bus_bytes.labels(self.service, direction, family),
            )
            self._bus_children[(direction, family)] = children
        children[0].inc()
        children[1].inc(size)

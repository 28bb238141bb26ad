"""The services' Prometheus metrics: lint-clean, unit-suffixed, no per-session labels,
every one documented, and the bus's per-subject-family traffic counters on a real NATS."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.asr.metrics import AsrMetrics
from services.gateway.call import CallFailed
from services.gateway.metrics import GatewayMetrics
from services.llm.metrics import LlmMetrics
from services.tts.metrics import TtsMetrics
from shared import subjects
from shared.bus import BusOptions, NatsBus
from shared.messages import Cancel, ErrorCode, Message, ServiceName
from shared.metrics import ServiceMetrics, subject_family
from shared.settings import project_root

FORBIDDEN_LABELS = {"sid", "session", "session_id", "user", "user_id", "key", "api_key", "subject"}
# Histograms whose values are not durations.
UNITLESS_HISTOGRAMS = {"voice_engine_real_time_factor", "voice_llm_tokens_per_second"}


def _registries() -> dict[str, CollectorRegistry]:
    asr = ServiceMetrics("asr")
    AsrMetrics(asr)
    return {
        "gateway": GatewayMetrics().registry,
        "asr": asr.registry,
        "llm": LlmMetrics().registry,
        "tts": TtsMetrics().registry,
    }


def _families(registry: CollectorRegistry) -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names), for our own metrics (not process_*)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for family in registry.collect():
        if not family.name.startswith("voice_"):
            continue
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        name = family.name + ("_total" if family.type == "counter" else "")
        out[name] = (family.type, labels)
    return out


@pytest.mark.parametrize("service", ["gateway", "asr", "llm", "tts"])
def test_metrics_pass_promtool_lint(service: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's prometheus package (./run setup)")
    text = generate_latest(_registries()[service]).decode()
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", ["gateway", "asr", "llm", "tts"])
def test_metric_names_and_labels_follow_conventions(service: str) -> None:
    families = _families(_registries()[service])
    assert families
    for name, (kind, labels) in families.items():
        assert not labels & FORBIDDEN_LABELS, name
        assert re.fullmatch(r"voice_[a-z0-9_]+", name), name
        if kind == "histogram" and name not in UNITLESS_HISTOGRAMS:
            assert name.endswith("_seconds"), name
        if kind == "gauge":
            assert not name.endswith("_total"), name


def test_every_metric_is_documented() -> None:
    doc = (project_root() / "docs" / "operations.md").read_text()
    names = {name for reg in _registries().values() for name in _families(reg)}
    missing = sorted(name for name in names if f"`{name}`" not in doc)
    assert missing == []


def test_subject_families_never_carry_ids() -> None:
    replica, sid = uuid.uuid4().hex, "s-" + uuid.uuid4().hex
    cases = {
        subjects.worker_in(ServiceName.ASR, replica): "asr.w.*.in",
        subjects.worker_ctl(ServiceName.TTS, replica): "tts.w.*.ctl",
        subjects.session_out(sid): "session.*.out",
        subjects.assign(ServiceName.LLM): "llm.assign",
        subjects.micro_ping(ServiceName.ASR, replica): "$SRV",
        f"_INBOX.{replica}.1": "_INBOX",
        f"custom.{sid}": "other",
        f"asr.w.{replica}.extra.in": "other",
    }
    for subject, family in cases.items():
        assert subject_family(subject) == family, subject


def test_series_exist_before_the_first_event() -> None:
    """Rates and alerts need zeros, not absent series, for the known label values."""
    text = generate_latest(_registries()["asr"]).decode()
    assert 'voice_errors_total{code="engine_failed",service="asr"} 0.0' in text
    assert 'voice_assignments_total{result="full",service="asr"} 0.0' in text
    assert 'voice_asr_final_latency_seconds_count{service="asr"} 0.0' in text
    assert 'voice_nats_slow_consumers_total{service="asr"} 0.0' in text


def test_gateway_counts_failed_calls_by_code_and_its_sessions() -> None:
    metrics = GatewayMetrics()
    metrics.call_started("bella_realtime")
    metrics.call_started("bella_asr")
    metrics.call_event(CallFailed(ServiceName.LLM, ErrorCode.ENGINE_FAILED, "boom"))
    metrics.call_event(object())  # any other event: not an error
    metrics.barge_in_stopped(heard_at=10.0, now=10.25)
    registry = metrics.registry

    def value(name: str, labels: dict[str, str]) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("voice_errors_total", {"service": "gateway", "code": "engine_failed"}) == 1
    assert value("voice_errors_total", {"service": "gateway", "code": "internal"}) == 0
    assert value("voice_sessions_active", {"service": "gateway"}) == 2
    assert value("voice_gateway_calls_total", {"endpoint": "bella_asr"}) == 1
    metrics.call_ended("bella_asr")
    assert value("voice_sessions_active", {"service": "gateway"}) == 1
    labels = {"service": "gateway"}
    assert value("voice_gateway_barge_in_stop_seconds_sum", labels) == 0.25
    assert value("voice_gateway_barge_in_stop_seconds_bucket", {**labels, "le": "0.2"}) == 0
    assert value("voice_gateway_barge_in_stop_seconds_bucket", {**labels, "le": "0.25"}) == 1


async def test_bus_counts_messages_and_bytes_per_subject_family(nats_server: Any) -> None:
    url = nats_server.url
    metrics = ServiceMetrics("asr")
    bus = await NatsBus.connect(BusOptions(url=url, name="metrics-test"), metrics)
    try:
        got: asyncio.Queue[Message] = asyncio.Queue(maxsize=10)

        async def handler(message: Message) -> None:
            got.put_nowait(message)

        replica = uuid.uuid4().hex
        subject = subjects.worker_in(ServiceName.ASR, replica)
        await bus.subscribe(subject, handler)
        await bus.nc.flush()
        for turn in range(3):
            await bus.publish(subject, Cancel(sid="s1", turn=turn))
        for _ in range(3):
            async with asyncio.timeout(5):
                await got.get()
    finally:
        await bus.aclose()
    reg = metrics.registry
    for direction in ("in", "out"):
        labels = {"service": "asr", "direction": direction, "family": "asr.w.*.in"}
        assert reg.get_sample_value("voice_bus_messages_total", labels) == 3
        size = reg.get_sample_value("voice_bus_bytes_total", labels)
        assert size is not None and size > 3 * len(b"cancel")
    text = generate_latest(reg).decode()
    assert replica not in text

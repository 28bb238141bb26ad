"""Keys, the per-key limit, the audio timeline and the settings."""

from __future__ import annotations

import pytest

from services.gateway.auth import CallLimiter, KeyRing, presented_key
from services.gateway.settings import GatewaySettings
from services.gateway.timeline import AudioTimeline


@pytest.mark.parametrize(
    ("headers", "target", "key"),
    [
        ({"Authorization": "Bearer abc"}, "/v1/audio/realtime", "abc"),
        ({"Authorization": "bearer  abc "}, "/x", "abc"),
        ({}, "/v1/audio/realtime?model=m&api_key=k1", "k1"),
        ({}, "/v1/audio/realtime?token=k2", "k2"),
        ({"Authorization": "Bearer h"}, "/x?api_key=q", "h"),
        ({"Authorization": "Basic abc"}, "/x", None),
        ({"Authorization": "Bearer "}, "/x?api_key=", None),
        ({}, "/x", None),
    ],
)
def test_presented_key(headers: dict[str, str], target: str, key: str | None) -> None:
    assert presented_key(headers, target) == key


def test_key_ring() -> None:
    ring = KeyRing(("alpha", "beta"))
    assert ring.identify("alpha") == 0
    assert ring.identify("beta") == 1
    assert ring.identify("alph") is None
    assert ring.identify("") is None
    assert KeyRing(()).identify("alpha") is None


def test_call_limiter() -> None:
    limiter = CallLimiter(2)
    assert limiter.acquire(0) and limiter.acquire(0)
    assert not limiter.acquire(0)
    assert limiter.acquire(1)
    limiter.release(0)
    assert limiter.held(0) == 1
    assert limiter.acquire(0)
    for _ in range(3):
        limiter.release(1)
    assert limiter.held(1) == 0


def test_timeline_maps_stream_time_to_receive_time() -> None:
    t = AudioTimeline()
    assert t.received_at(0) is None
    t.record(1600, 10.0)  # 0-100 ms
    t.record(0, 99.0)  # nothing new: ignored
    t.record(1600, 10.1)  # 100-200 ms
    assert t.received_at(0) == 10.0
    assert t.received_at(100) == 10.0
    assert t.received_at(100.1) == 10.1
    assert t.received_at(5000) == 10.1  # beyond what arrived: the latest
    assert t.stream_ms == 200.0


def test_timeline_is_bounded() -> None:
    t = AudioTimeline(capacity=3)
    for i in range(10):
        t.record(160, float(i))
    assert t.received_at(0) == 7.0  # older instants map to the oldest kept


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", " a,b ,, c")
    monkeypatch.setenv("GATEWAY_PORT", "9000")
    monkeypatch.setenv("GATEWAY_IDLE_TIMEOUT_S", "5")
    monkeypatch.setenv("NATS_URL", "nats://example:4222")
    s = GatewaySettings()
    assert s.api_keys == ("a", "b", "c")
    assert (s.host, s.port, s.idle_timeout_s) == ("127.0.0.1", 9000, 5.0)
    assert s.nats_url == "nats://example:4222"


def test_settings_defaults() -> None:
    s = GatewaySettings()
    assert (s.host, s.port, s.api_keys, s.idle_timeout_s) == ("127.0.0.1", 8080, (), 60.0)

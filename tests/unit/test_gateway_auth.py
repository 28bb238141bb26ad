"""Keys, the per-key limit, the audio timeline and the settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from services.gateway.auth import CallLimiter, KeyRing, key_id, parse_key_lines, presented_key
from services.gateway.settings import GatewaySettings
from services.gateway.timeline import AudioTimeline
from shared.errors import ConfigError


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
    assert ring.identify("alpha") == key_id("alpha")
    assert ring.identify("beta") == key_id("beta")
    assert ring.identify("alph") is None
    assert ring.identify("alphaa") is None
    assert ring.identify("") is None
    assert ring.identify("x" * 100_000) is None
    assert KeyRing(()).identify("alpha") is None
    assert len(KeyRing(("a", "b", "a"))) == 2


def test_key_ids_are_stable_short_and_reveal_nothing() -> None:
    kid = key_id("s3cret-key-value")
    assert kid == key_id("s3cret-key-value")  # every replica names a key alike
    assert kid != key_id("s3cret-key-valuf")
    assert kid.startswith("k-") and len(kid) == 14
    assert "s3cret" not in kid


def test_key_file_parsing() -> None:
    text = "# production keys\n\n  key-one  \n#key-disabled\nkey-two\r\n"
    assert parse_key_lines(text) == ("key-one", "key-two")
    with pytest.raises(ConfigError, match="line 2") as err:
        parse_key_lines("ok\nnot a-key\n")
    assert "not a-key" not in str(err.value)  # errors say where, never the secret
    with pytest.raises(ConfigError):
        parse_key_lines("a,b\n")


def test_keys_from_variable_and_file(tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text("# mounted secret\nfile-key\nshared\n")
    ring = KeyRing(("env-key", "shared"), file=secret)
    assert ring.key_ids == (key_id("env-key"), key_id("shared"), key_id("file-key"))
    assert ring.identify("file-key") == key_id("file-key")
    assert ring.identify("env-key") == key_id("env-key")


def test_missing_or_bad_key_file_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        KeyRing((), file=tmp_path / "absent")
    bad = tmp_path / "bad"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError):
        KeyRing((), file=bad)
    long = tmp_path / "long"
    long.write_text("k" * 600)
    with pytest.raises(ConfigError, match="longer"):
        KeyRing((), file=long)


def test_key_file_rotation(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Kubernetes-style rotation: the mounted path is a symlink swapped to a new file."""
    caplog.set_level(logging.DEBUG, logger="services.gateway.auth")
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.write_text("old-key-aaaa\n")
    v2.write_text("new-key-bbbb\nold-key-aaaa\n")
    mounted = tmp_path / "api-keys"
    mounted.symlink_to(v1)
    ring = KeyRing((), file=mounted)
    assert ring.identify("new-key-bbbb") is None
    assert not ring.reload_if_changed()  # unchanged: not re-read

    tmp_link = tmp_path / "next"
    tmp_link.symlink_to(v2)
    tmp_link.replace(mounted)
    assert ring.identify("new-key-bbbb") == key_id("new-key-bbbb")

    v1.write_text("only-key-cccc\n")
    tmp_link = tmp_path / "next"
    tmp_link.symlink_to(v1)
    tmp_link.replace(mounted)
    assert ring.identify("new-key-bbbb") is None  # revoked
    assert ring.identify("old-key-aaaa") is None
    assert ring.identify("only-key-cccc") == key_id("only-key-cccc")

    # Mid-rotation garbage or a vanished file keeps the last good keys, and says so.
    mounted.unlink()
    assert ring.identify("only-key-cccc") == key_id("only-key-cccc")
    mounted.write_text("two words\n")
    assert ring.identify("only-key-cccc") == key_id("only-key-cccc")
    assert "not reloaded" in caplog.text and "unreadable" in caplog.text

    # No key ever reaches a log line, only fingerprints.
    for secret in ("old-key-aaaa", "new-key-bbbb", "only-key-cccc", "two words"):
        assert secret not in caplog.text
    assert key_id("only-key-cccc") in caplog.text


def test_call_limiter() -> None:
    limiter = CallLimiter(2)
    assert limiter.acquire("k-a") and limiter.acquire("k-a")
    assert not limiter.acquire("k-a")
    assert limiter.acquire("k-b")
    limiter.release("k-a")
    assert limiter.held("k-a") == 1
    assert limiter.acquire("k-a")
    for _ in range(3):
        limiter.release("k-b")
    assert limiter.held("k-b") == 0


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
    monkeypatch.setenv("GATEWAY_API_KEYS_FILE", "/run/secrets/gateway/api-keys")
    s = GatewaySettings()
    assert s.api_keys == ("a", "b", "c")
    assert s.api_keys_file == Path("/run/secrets/gateway/api-keys")
    assert (s.host, s.port, s.idle_timeout_s) == ("127.0.0.1", 9000, 5.0)
    assert s.nats_url == "nats://example:4222"


def test_settings_defaults() -> None:
    s = GatewaySettings()
    assert (s.host, s.port, s.api_keys, s.idle_timeout_s) == ("127.0.0.1", 8080, (), 60.0)
    assert s.api_keys_file is None

"""The gateway's door: HTTP answers before the upgrade, and Bella protocol errors, with a
real websockets client against the gateway on 127.0.0.1 port 0 and a real NATS.

None of these needs a service replica: every refusal happens before placement.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.gateway.app import Gateway
from services.gateway.metrics import GatewayMetrics
from services.gateway.readiness import ReplicaProbe
from services.gateway.settings import GatewaySettings
from shared.bus import BusOptions, NatsBus
from tests.support.natsserver import LocalNats

KEY = "protocol-test-key"
OTHER_KEY = "second-key"
TIMEOUT = 5.0


@asynccontextmanager
async def running_gateway(url: str, **overrides: Any) -> AsyncIterator[Gateway]:
    settings = GatewaySettings(
        port=0, api_keys=(KEY, OTHER_KEY), nats_url=url, drain_grace_s=0.0, **overrides
    )
    metrics = GatewayMetrics()
    bus = await NatsBus.connect(BusOptions(url=url, name="gateway-test"), metrics)
    gateway = Gateway(settings, bus, metrics, ReplicaProbe(bus.nc, timeout_s=0.2).check)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.aclose()
        await bus.aclose()


@pytest.fixture(scope="module")
def own_nats() -> Iterator[LocalNats]:
    """A nats-server for this module. (The session-wide ``nats_server`` fixture first probes
    for Docker, and where no Docker daemon exists that probe leaks a socket, which
    ``filterwarnings = error`` turns into a failure of whichever test runs next.)"""
    server = LocalNats()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def gateway(own_nats: LocalNats) -> AsyncIterator[Gateway]:
    async with running_gateway(own_nats.url, max_calls_per_key=2) as gw:
        yield gw


def ws_url(gw: Gateway, path: str = "/v1/audio/realtime") -> str:
    return f"ws://127.0.0.1:{gw.port}{path}"


def http_url(gw: Gateway, path: str) -> str:
    return f"http://127.0.0.1:{gw.port}{path}"


@asynccontextmanager
async def client(
    gw: Gateway, path: str = "/v1/audio/realtime", key: str | None = KEY
) -> AsyncIterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with connect(ws_url(gw, path), additional_headers=headers) as ws:
        yield ws


async def status_of(gw: Gateway, path: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with connect(ws_url(gw, path), additional_headers=headers):
            pass
    return info.value.response.status_code


def message(name: str, payload: dict[str, Any] | None = None, task_id: str = "t-1") -> str:
    header = {
        "message_id": uuid.uuid4().hex,
        "task_id": task_id,
        "namespace": "SpeechTranscriber",
        "name": name,
        "appkey": "default",
    }
    return json.dumps({"header": header, "payload": payload or {}})


async def next_event(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        frame = await ws.recv()
    assert isinstance(frame, str)
    event: dict[str, Any] = json.loads(frame)
    return event


async def expect_task_failed(ws: ClientConnection, fragment: str) -> dict[str, Any]:
    event = await next_event(ws)
    header = event["header"]
    assert header["name"] == "TaskFailed", event
    assert header["status"] == 40000000
    assert header["namespace"] == "SpeechTranscriber"
    assert fragment in header["status_message"], header["status_message"]
    assert header["message_id"]
    return event


async def still_usable(ws: ClientConnection) -> None:
    await ws.send("ping")
    async with asyncio.timeout(TIMEOUT):
        assert await ws.recv() == "pong"


# --------------------------------------------------------------------------- HTTP


async def test_unknown_path_is_404(gateway: Gateway) -> None:
    assert await status_of(gateway, "/v1/nothing", {"Authorization": f"Bearer {KEY}"}) == 404


async def test_missing_key_is_401(gateway: Gateway) -> None:
    assert await status_of(gateway, "/v1/audio/realtime") == 401
    assert await status_of(gateway, "/v1/audio/realtime", {"Authorization": "Basic abc"}) == 401


async def test_unknown_key_is_403(gateway: Gateway) -> None:
    assert await status_of(gateway, "/v1/audio/realtime", {"Authorization": "Bearer nope"}) == 403
    assert await status_of(gateway, "/v1/audio/asr/stream?api_key=nope") == 403


async def test_key_in_the_query_is_accepted(gateway: Gateway) -> None:
    for query in (f"api_key={KEY}", f"token={KEY}"):
        async with connect(ws_url(gateway, f"/v1/audio/realtime?model=x&{query}")) as ws:
            await still_usable(ws)


async def test_over_the_per_key_limit_is_429_until_a_call_ends(gateway: Gateway) -> None:
    async with client(gateway), client(gateway) as second:
        assert await status_of(gateway, f"/v1/audio/realtime?token={KEY}") == 429
        # The limit is per key: another key still gets in.
        async with client(gateway, key=OTHER_KEY) as other:
            await still_usable(other)
        await second.close()
        # The slot is released when the server sees the TCP close, which may trail the
        # client's view by a loop iteration: each refused attempt is a full round trip.
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    async with client(gateway) as third:
                        await still_usable(third)
                    break
                except InvalidStatus as exc:
                    assert exc.response.status_code == 429


async def test_healthz_and_metrics(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        health = await http.get(http_url(gateway, "/healthz"))
        assert health.status_code == 200
        await status_of(gateway, "/v1/audio/realtime")  # one rejection to count
        metrics = await http.get(http_url(gateway, "/metrics"))
    assert metrics.status_code == 200
    body = metrics.text
    for name in (
        "voice_gateway_voice_to_voice_seconds",
        "voice_gateway_calls_active",
        "voice_gateway_calls_rejected_total",
        "voice_gateway_protocol_errors_total",
    ):
        assert name in body
    assert 'voice_gateway_calls_rejected_total{reason="missing_key"} 1.0' in body


async def test_readyz_is_503_without_service_replicas(own_nats: LocalNats) -> None:
    # Nothing in this module runs a replica on this NATS.
    async with running_gateway(own_nats.url) as gw, httpx.AsyncClient() as http:
        ready = await http.get(http_url(gw, "/readyz"))
    assert ready.status_code == 503
    assert "asr" in ready.text and "llm" in ready.text and "tts" in ready.text


# --------------------------------------------------------------------------- Bella errors


async def test_ping_pong(gateway: Gateway) -> None:
    async with client(gateway) as ws:
        await still_usable(ws)


async def test_malformed_json_is_task_failed_and_the_socket_still_works(gateway: Gateway) -> None:
    async with client(gateway) as ws:
        await ws.send("{not json")
        await expect_task_failed(ws, "malformed JSON")
        await ws.send(json.dumps([1, 2]))
        await expect_task_failed(ws, "header")
        await still_usable(ws)


async def test_unknown_name_is_task_failed(gateway: Gateway) -> None:
    async with client(gateway) as ws:
        await ws.send(message("DoSomething", task_id="abc"))
        event = await expect_task_failed(ws, "DoSomething")
        assert event["header"]["task_id"] == "abc"
        await still_usable(ws)


async def test_audio_before_start_is_task_failed(gateway: Gateway) -> None:
    async with client(gateway) as ws:
        await ws.send(b"\x00\x00" * 160)
        await expect_task_failed(ws, "audio before StartTranscription")
        await still_usable(ws)


async def test_stop_without_a_task_is_task_failed(gateway: Gateway) -> None:
    async with client(gateway) as ws:
        await ws.send(message("StopTranscription"))
        await expect_task_failed(ws, "without a running task")
        await still_usable(ws)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"sample_rate": 44100}, "unsupported sample_rate 44100"),
        ({"sample_rate": "16000"}, "sample_rate"),
        ({"format": "opus"}, "unsupported format"),
        ({"enable_intermediate_result": "yes"}, "enable_intermediate_result"),
        ({"llm_option": {"main": {"temperature": 3.5}}}, "temperature"),
        ({"max_sentence_silence": 10}, "max_sentence_silence"),
    ],
)
async def test_invalid_start_is_task_failed(
    gateway: Gateway, payload: dict[str, Any], fragment: str
) -> None:
    async with client(gateway) as ws:
        await ws.send(message("StartTranscription", payload))
        await expect_task_failed(ws, fragment)
        await still_usable(ws)


async def test_protocol_errors_are_counted(gateway: Gateway) -> None:
    async with client(gateway) as ws:
        await ws.send("{")
        await expect_task_failed(ws, "malformed")
    async with httpx.AsyncClient() as http:
        body = (await http.get(http_url(gateway, "/metrics"))).text
    assert 'voice_gateway_protocol_errors_total{kind="malformed_json",protocol="bella"} 1.0' in body


async def test_oversized_frame_closes_with_1009(own_nats: LocalNats) -> None:
    async with running_gateway(own_nats.url, max_frame_bytes=4096) as gw, client(gw) as ws:
        await ws.send(b"\x00" * 8192)
        async with asyncio.timeout(TIMEOUT):
            await ws.wait_closed()
        assert ws.close_code == 1009


async def test_a_flooding_client_is_closed_with_1008(own_nats: LocalNats) -> None:
    limits = {"max_frames_per_s": 10.0, "rate_burst_s": 1.0}
    async with running_gateway(own_nats.url, **limits) as gw, client(gw) as ws:
        # Ten frames are the burst; the rest are over the rate. Pings are answered while
        # the client stays within it, so the refusal is the limiter's, not the protocol's.
        for _ in range(40):
            try:
                await ws.send("ping")
            except ConnectionClosed:  # the server may close while we still send
                break
        async with asyncio.timeout(TIMEOUT):
            await ws.wait_closed()
        assert ws.close_code == 1008
        assert ws.close_reason is not None and "rate limit" in ws.close_reason
        async with httpx.AsyncClient() as http:
            body = (await http.get(http_url(gw, "/metrics"))).text
    assert 'kind="too_many_frames",protocol="bella"} 1.0' in body


async def test_the_process_prints_ready_and_stops_on_sigterm(own_nats: LocalNats) -> None:
    env = {
        **os.environ,
        "NATS_URL": own_nats.url,
        "GATEWAY_PORT": "0",
        "GATEWAY_API_KEYS": KEY,
        "GATEWAY_DRAIN_GRACE_S": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.gateway",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("READY gateway url=ws://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        async with connect(
            f"ws://127.0.0.1:{port}/v1/audio/realtime",
            additional_headers={"Authorization": f"Bearer {KEY}"},
        ) as ws:
            await still_usable(ws)
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(TIMEOUT):
                await ws.wait_closed()
            assert ws.close_code == 1001
        async with asyncio.timeout(TIMEOUT):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

"""Session resume across gateway replicas: two in-process gateways, each with its own NATS
connection and `SessionStore` over the same JetStream buckets, a real websockets client,
and the TEST-ONLY scripted replicas of `test_gateway_calls` (they record what the new
LLM session is opened with)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import nats
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.gateway.app import Gateway
from services.gateway.metrics import GatewayMetrics
from services.gateway.readiness import ReplicaProbe
from services.gateway.settings import GatewaySettings
from services.stack.bella_client import BellaCall
from shared.bus import BusOptions, NatsBus
from shared.messages import ChatMessage, LlmOpen, LlmTurn, ServiceName, TtsOpen
from shared.state import SessionStore, StateOptions
from tests.component.test_gateway_calls import (
    KEY,
    TIMEOUT,
    call_on,
    own_nats,
    payload,
    scripted,
    sid_of,
    ws_url,
)
from tests.support.natsserver import LocalNats

__all__ = ["own_nats"]  # the module-scoped NATS fixture, shared

OTHER_KEY = "resume-other-key"


@pytest.fixture
async def state_options(own_nats: LocalNats) -> AsyncIterator[StateOptions]:
    """Buckets of this test alone, deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    options = StateOptions(sessions_bucket=f"sessions_{tag}", history_bucket=f"history_{tag}")
    yield options
    nc = await nats.connect(own_nats.url)
    try:
        js = nc.jetstream()
        for bucket in (options.sessions_bucket, options.history_bucket):
            await js.delete_key_value(bucket)
    finally:
        await nc.close()


@asynccontextmanager
async def replica(url: str, state: StateOptions, name: str) -> AsyncIterator[Gateway]:
    """One gateway replica, as ``python -m services.gateway`` wires it."""
    settings = GatewaySettings(
        port=0, api_keys=(KEY, OTHER_KEY), nats_url=url, drain_grace_s=0.0, replica_id=name
    )
    metrics = GatewayMetrics()
    bus = await NatsBus.connect(BusOptions(url=url, name=name), metrics)
    store = await SessionStore.open(bus.nc, state)
    gateway = Gateway(settings, bus, metrics, ReplicaProbe(bus.nc).check, store=store)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.aclose()
        await bus.aclose()


@asynccontextmanager
async def reader(url: str, state: StateOptions) -> AsyncIterator[SessionStore]:
    nc = await nats.connect(url)
    try:
        yield await SessionStore.open(nc, state)
    finally:
        await nc.close()


async def hang_up(gateway: Gateway, call: BellaCall) -> None:
    """Drop the connection and wait until its gateway has released the call (the session
    state written and detached)."""
    (connection,) = gateway._calls
    await call.aclose()
    async with asyncio.timeout(TIMEOUT):
        await connection.wait_closed()


def resumed_open(fakes: Any, svc: ServiceName, kind: type[Any], sid: str) -> Any:
    """The open of the resumed call: its service sessions are new ones, not ``sid``."""
    (opened,) = [m for m in fakes.of_type(svc, kind) if m.sid.startswith(f"{sid}-")]
    return opened


async def test_a_session_resumes_on_another_replica_with_history_and_settings(
    own_nats: LocalNats, state_options: StateOptions
) -> None:
    url = own_nats.url
    async with (
        scripted(url) as fakes,
        replica(url, state_options, "gw-a") as first,
        replica(url, state_options, "gw-b") as second,
        reader(url, state_options) as store,
    ):
        call = await BellaCall.open(ws_url(first), KEY)
        sid = sid_of(await call.start(payload()))
        await fakes.say(sid, "what is the capital of France", end_ms=1000)
        await call.wait_for(lambda r: r.name == "TTS_END", timeout_s=TIMEOUT)
        (turn,) = fakes.of_type(ServiceName.LLM, LlmTurn)
        await hang_up(first, call)

        record = await store.get(sid)
        assert record is not None
        assert record.value.owner is None and record.value.detached_at is not None
        assert record.value.key_id != "" and record.value.turn == 1

        # The client comes back on the other replica, asking for other settings: the
        # session keeps its own.
        changed = payload(
            session_id=sid,
            llm_option={"main": {"sys_prompt": "Be verbose.", "temperature": 1.5}},
            tts_option={"sample_rate": 24000, "voice": "jane"},
        )
        async with call_on(second) as again:
            assert sid_of(await again.start(changed)) == sid
            # Each service's subscription delivers on its own: wait for both opens.
            await fakes.wait_until(
                lambda: (
                    len(fakes.of_type(ServiceName.LLM, LlmOpen)) == 2
                    and len(fakes.of_type(ServiceName.TTS, TtsOpen)) == 2
                )
            )
            opened = resumed_open(fakes, ServiceName.LLM, LlmOpen, sid)
            assert opened.history == (
                ChatMessage(
                    role="user",
                    content="what is the capital of France",
                    item_id=turn.user_item_id,
                ),
                ChatMessage(
                    role="assistant", content="Hello there.", item_id=turn.assistant_item_id
                ),
            )
            assert (opened.system_prompt, opened.temperature) == ("Be brief.", 0.3)
            assert resumed_open(fakes, ServiceName.TTS, TtsOpen, sid).voice == "joe"
            owner = await store.get(sid)
            assert owner is not None and owner.value.owner == "gw-b"

            # The conversation goes on, and is written on the new replica.
            await fakes.say(opened.sid, "and of Spain", end_ms=2000)
            await again.wait_for(lambda r: r.name == "TTS_END", timeout_s=TIMEOUT)
            (connection,) = second._calls
        await connection.wait_closed()
        history = await store.history(sid)
        assert [m.content for m in history.value.items] == [
            "what is the capital of France",
            "Hello there.",
            "and of Spain",
            "Hello there.",
        ]


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
async def test_unknown_and_foreign_sessions_are_refused(
    own_nats: LocalNats, state_options: StateOptions, key: str
) -> None:
    url = own_nats.url
    async with scripted(url), replica(url, state_options, "gw-a") as gateway:
        async with call_on(gateway) as call:
            sid = sid_of(await call.start(payload()))
            (connection,) = gateway._calls
        await connection.wait_closed()
        # KEY: a session that does not exist; OTHER_KEY: KEY's session, not its own.
        target = "no-such-session" if key == KEY else sid
        call = await BellaCall.open(ws_url(gateway), key)
        try:
            failed = await call.start(payload(session_id=target))
            assert failed.name == "TaskFailed", failed.header
            assert "unknown session" in failed.payload["message"]
            async with asyncio.timeout(TIMEOUT):
                await call.ws.wait_closed()
        finally:
            await call.aclose()


async def _line_with(stream: asyncio.StreamReader, text: str) -> str:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"the gateway's output ended before {text!r}")
        line = raw.decode(errors="replace")
        if text in line:
            return line


async def test_sigterm_drains_then_a_second_one_ends_calls_resumably(
    own_nats: LocalNats,
) -> None:
    """SIGTERM: not ready, no new calls, the call in flight goes on; a second SIGTERM
    ends it at once (1001 for Bella) and leaves its session resumable."""
    env = {
        **os.environ,
        "NATS_URL": own_nats.url,
        "GATEWAY_PORT": "0",
        "GATEWAY_API_KEYS": KEY,
        "GATEWAY_DRAIN_GRACE_S": "120",  # longer than the test: only the signal ends it
        "GATEWAY_REPLICA_ID": "gw-sigterm",
        "VOICE_LOG_JSON": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.gateway",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(30):
            line = await _line_with(proc.stdout, "READY gateway")
        base = line.split("url=", 1)[1].strip()
        http = "http" + base.removeprefix("ws")
        async with scripted(own_nats.url), reader(own_nats.url, StateOptions()) as store:
            call = await BellaCall.open(f"{base}/v1/audio/realtime", KEY)
            try:
                sid = sid_of(await call.start(payload()))
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(TIMEOUT):
                    await _line_with(proc.stderr, "draining calls")
                # Not ready: the listener is closed (or, while it closes, 503).
                async with httpx.AsyncClient() as client:
                    try:
                        status: int | None = (await client.get(f"{http}/readyz")).status_code
                    except httpx.ConnectError:
                        status = None
                assert status in (None, 503)
                with pytest.raises((InvalidStatus, OSError)):
                    await BellaCall.open(f"{base}/v1/audio/realtime", KEY)
                # The call in flight is still served.
                await call.send_text("ping")
                await call.wait_for(lambda r: r.name == "pong", timeout_s=TIMEOUT)
                assert not call.closed

                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(TIMEOUT):
                    await call.ws.wait_closed()
                assert call.ws.close_code == 1001
            finally:
                await call.aclose()
            async with asyncio.timeout(TIMEOUT):
                assert await proc.wait() == 0
            record = await store.get(sid)
            assert record is not None and record.value.owner is None  # resumable
            await store.delete(sid)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _openai_turn(ws: Any, text: str) -> list[dict[str, Any]]:
    """A typed user message and a response to it; the events until ``response.done``."""
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT):
        while not events or events[-1]["type"] not in ("response.done", "error"):
            frame = await ws.recv()
            events.append(json.loads(frame))
    return events


async def test_openai_clients_resume_with_the_session_id_query_parameter(
    own_nats: LocalNats, state_options: StateOptions
) -> None:
    url = own_nats.url
    headers = {"Authorization": f"Bearer {KEY}"}
    async with (
        scripted(url) as fakes,
        replica(url, state_options, "gw-a") as first,
        replica(url, state_options, "gw-b") as second,
    ):
        async with connect(
            ws_url(first, "/v1/realtime?model=any"), additional_headers=headers
        ) as ws:
            created = json.loads(await ws.recv())
            sid = created["session"]["id"]
            assert (await _openai_turn(ws, "hello"))[-1]["type"] == "response.done"
            (connection,) = first._calls
        await connection.wait_closed()

        path = f"/v1/realtime?model=any&session_id={sid}"
        async with connect(ws_url(second, path), additional_headers=headers) as ws:
            created = json.loads(await ws.recv())
            assert created["session"]["id"] == sid
            assert (await _openai_turn(ws, "again"))[-1]["type"] == "response.done"
        opened = resumed_open(fakes, ServiceName.LLM, LlmOpen, sid)
        assert [(m.role, m.content) for m in opened.history] == [
            ("user", "hello"),
            ("assistant", "Hello there."),
        ]

        path = "/v1/realtime?model=any&session_id=no-such-session"
        async with connect(ws_url(second, path), additional_headers=headers) as ws:
            await ws.recv()  # session.created
            error = (await _openai_turn(ws, "hi"))[-1]
            assert error["type"] == "error" and "unknown session" in error["error"]["message"]
            async with asyncio.timeout(TIMEOUT):
                await ws.wait_closed()
            assert ws.close_code == 1000


async def _coze_until(ws: Any, event_type: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            event = json.loads(await ws.recv())
            if event["event_type"] in (event_type, "error"):
                return dict(event)


async def test_coze_clients_resume_with_the_conversation_id(
    own_nats: LocalNats, state_options: StateOptions
) -> None:
    url = own_nats.url
    headers = {"Authorization": f"Bearer {KEY}"}

    def frame(event_type: str, data: dict[str, Any]) -> str:
        return json.dumps({"id": "e1", "event_type": event_type, "data": data})

    def message(text: str) -> str:
        return frame("conversation.message.create", {"role": "user", "content": text})

    async with scripted(url) as fakes, replica(url, state_options, "gw-a") as gateway:
        async with connect(ws_url(gateway, "/v1/chat"), additional_headers=headers) as ws:
            await ws.send(message("hello"))
            created = await _coze_until(ws, "conversation.chat.created")
            sid = created["data"]["conversation_id"]
            await _coze_until(ws, "conversation.chat.completed")
            (connection,) = gateway._calls
        await connection.wait_closed()

        for conversation, known in ((sid, True), ("no-such-conversation", False)):
            async with connect(ws_url(gateway, "/v1/chat"), additional_headers=headers) as ws:
                update = {"chat_config": {"conversation_id": conversation}}
                await ws.send(frame("chat.update", update))
                assert (await _coze_until(ws, "chat.updated"))["event_type"] == "chat.updated"
                await ws.send(message("again"))
                if known:
                    created = await _coze_until(ws, "conversation.chat.created")
                    assert created["data"]["conversation_id"] == sid
                    await fakes.wait_until(
                        lambda: len(fakes.of_type(ServiceName.LLM, LlmOpen)) == 2
                    )
                    opened = resumed_open(fakes, ServiceName.LLM, LlmOpen, sid)
                    assert [m.content for m in opened.history] == ["hello", "Hello there."]
                    continue
                error = await _coze_until(ws, "error")
                assert "unknown session" in error["data"]["msg"], error
                async with asyncio.timeout(TIMEOUT):
                    await ws.wait_closed()
                assert ws.close_code == 1000

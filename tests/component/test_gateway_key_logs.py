"""API keys stay out of the logs even when websockets logs handshakes at DEBUG."""

from __future__ import annotations

import logging

import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from services.gateway.auth import redact, redact_handshake_logs

QUERY_KEY = "query-secret-7f3a9c"
HEADER_KEY = "header-secret-51be02"


def test_redact() -> None:
    assert redact(f"GET /v1/audio/realtime?model=m&api_key={QUERY_KEY}&x=1 HTTP/1.1") == (
        "GET /v1/audio/realtime?model=m&api_key=<redacted>&x=1 HTTP/1.1"
    )
    assert redact(f"/x?token={QUERY_KEY}") == "/x?token=<redacted>"
    assert redact(f"Bearer {HEADER_KEY}") == "Bearer <redacted>"
    assert redact("nothing secret here") == "nothing secret here"


async def test_handshake_debug_logs_carry_no_keys(caplog: pytest.LogCaptureFixture) -> None:
    redact_handshake_logs()
    redact_handshake_logs()  # idempotent: one filter
    assert len(logging.getLogger("websockets.server").filters) == 1
    caplog.set_level(logging.DEBUG, logger="websockets")

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/audio/realtime?api_key={QUERY_KEY}"
        headers = {"Authorization": f"Bearer {HEADER_KEY}"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"

    assert "/v1/audio/realtime?api_key=<redacted>" in caplog.text  # the line was logged
    assert "Bearer <redacted>" in caplog.text
    assert QUERY_KEY not in caplog.text
    assert HEADER_KEY not in caplog.text

"""A Bella realtime client: places a call over a real WebSocket.

Used by ``./run call``, the end-to-end tests and the benchmarks. It records every
server event and audio frame with its receive time, so callers can check order and
measure latency from the client's side of the socket.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


@dataclass(frozen=True)
class Received:
    """One server frame: a JSON event (``name``) or binary audio (``name == "audio"``)."""

    name: str
    at: float  # time.monotonic() at receipt
    header: dict[str, Any] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)
    audio: bytes = b""


@dataclass
class BellaCall:
    """One call; use `open` to create it. Not thread-safe; one task drives it."""

    ws: ClientConnection
    task_id: str
    received: list[Received] = field(default_factory=list)
    on_event: Callable[[Received], None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reader: asyncio.Task[None] | None = None
    closed: bool = False

    @classmethod
    async def open(
        cls,
        url: str,
        api_key: str,
        *,
        on_event: Callable[[Received], None] | None = None,
        open_timeout_s: float = 10.0,
    ) -> BellaCall:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {api_key}"},
            open_timeout=open_timeout_s,
            max_size=2**22,
        )
        call = cls(ws=ws, task_id=uuid.uuid4().hex, on_event=on_event)
        call._reader = asyncio.create_task(call._read(), name="bella-client-reader")
        return call

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                now = time.monotonic()
                if isinstance(frame, bytes):
                    item = Received("audio", now, audio=frame)
                elif frame == "pong":
                    item = Received("pong", now)
                else:
                    data = json.loads(frame)
                    header = data.get("header", {})
                    item = Received(header.get("name", "?"), now, header, data.get("payload") or {})
                self.received.append(item)
                if self.on_event:
                    self.on_event(item)
                async with self._changed:
                    self._changed.notify_all()
        finally:
            self.closed = True
            async with self._changed:
                self._changed.notify_all()

    # ---------------------------------------------------------------- sending

    def _header(self, name: str) -> dict[str, str]:
        return {
            "message_id": uuid.uuid4().hex,
            "task_id": self.task_id,
            "namespace": "SpeechTranscriber",
            "name": name,
            "appkey": "default",
        }

    async def start(self, payload: dict[str, Any], *, timeout_s: float = 30.0) -> Received:
        """Send StartTranscription; return TranscriptionStarted (or the failure event)."""
        await self.ws.send(
            json.dumps({"header": self._header("StartTranscription"), "payload": payload})
        )
        return await self.wait_for(
            lambda r: r.name in ("TranscriptionStarted", "TaskFailed"), timeout_s=timeout_s
        )

    async def send_audio(
        self, pcm: bytes, *, sample_rate: int = 16000, frame_ms: int = 100, realtime: bool = True
    ) -> float:
        """Stream PCM16 in frames; at real-time pace unless ``realtime`` is false.

        Returns the monotonic time the last frame was sent.
        """
        step = sample_rate * 2 * frame_ms // 1000
        t0 = time.monotonic()
        sent_at = t0
        for i, offset in enumerate(range(0, len(pcm), step)):
            if realtime:
                # Pace like a microphone: frame i is due at t0 + i * frame_ms.
                due = t0 + i * frame_ms / 1000.0
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.ws.send(pcm[offset : offset + step])
            sent_at = time.monotonic()
        return sent_at

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def stop(self, *, timeout_s: float = 60.0) -> Received:
        """Send StopTranscription and wait for SESSION_CLOSE."""
        await self.ws.send(json.dumps({"header": self._header("StopTranscription"), "payload": {}}))
        return await self.wait_for(lambda r: r.name == "SESSION_CLOSE", timeout_s=timeout_s)

    # ---------------------------------------------------------------- waiting

    async def wait_for(
        self, match: Callable[[Received], bool], *, timeout_s: float = 30.0, after: int = 0
    ) -> Received:
        """Wait for the first received item (from index ``after``) that matches."""
        async with asyncio.timeout(timeout_s):
            async with self._changed:
                while True:
                    for item in self.received[after:]:
                        if match(item):
                            return item
                    if self.closed:
                        raise ConnectionError("connection closed while waiting")
                    await self._changed.wait()

    def names(self) -> list[str]:
        return [r.name for r in self.received]

    def audio(self, *, since: int = 0) -> bytes:
        return b"".join(r.audio for r in self.received[since:] if r.name == "audio")

    async def aclose(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            try:
                async with asyncio.timeout(5):
                    await self._reader
            except (TimeoutError, ConnectionError, OSError):
                self._reader.cancel()
            except Exception:  # noqa: BLE001, S110 - the reader already reported the close
                pass

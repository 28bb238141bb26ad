"""The protocol-neutral connection in calls: barge-in over a real socket and a real NATS,
with the TEST-ONLY scripted replicas of `test_gateway_calls`, and OpenAI's drain code."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.gateway.app import Gateway
from shared.messages import (
    AudioFrame,
    HistoryOp,
    LlmEdit,
    LlmTurn,
    ServiceName,
    TtsAudio,
    VadEvent,
    VadState,
)
from tests.component.test_gateway_calls import (
    KEY,
    TIMEOUT,
    call_on,
    own_nats,
    payload,
    running_gateway,
    scripted,
    sid_of,
    ws_url,
)
from tests.support.natsserver import LocalNats

__all__ = ["own_nats"]  # the module-scoped NATS fixture, shared


def sample(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name, {"service": "gateway"})
    return 0.0 if value is None else value


async def test_speech_over_an_answer_cancels_it_and_keeps_what_was_heard(
    own_nats: LocalNats,
) -> None:
    async with (
        scripted(own_nats.url) as fakes,
        running_gateway(own_nats.url, barge_in_min_speech_ms=0) as gateway,
        call_on(gateway) as call,
    ):
        sid = sid_of(await call.start(payload()))
        await fakes.say(sid, "hang on", end_ms=1000)  # the LLM says "Thinking." and hangs
        audio = await call.wait_for(lambda r: r.name == "audio")
        assert audio.audio == bytes([1]) * 480
        # The user starts speaking over it.
        onset = VadEvent(sid=sid, state=VadState.STARTING, start_ms=2000, end_ms=2032, timestamp=0)
        await fakes.out(onset)
        cancelled = await call.wait_for(lambda r: r.name == "LLM_CHAT_CANCELLED")
        await fakes.wait_until(
            lambda: fakes.cancels[ServiceName.LLM] == [1] and fakes.cancels[ServiceName.TTS] == [1]
        )
        # The history keeps what went out before the cancel: the one sentence spoken.
        await fakes.wait_until(lambda: bool(fakes.of_type(ServiceName.LLM, LlmEdit)))
        (edit,) = fakes.of_type(ServiceName.LLM, LlmEdit)
        (turn,) = fakes.of_type(ServiceName.LLM, LlmTurn)
        assert edit == LlmEdit(
            sid=sid, op=HistoryOp.TRUNCATE, item_id=turn.assistant_item_id, content="Thinking."
        )
        # Late output of the cancelled turn never reaches the client.
        late = TtsAudio(sid=sid, turn=1, index=5, seq=9, pcm=bytes([1]) * 480, sample_rate=24000)
        await fakes.out(late)
        await fakes.say(sid, "what now", index=1, end_ms=3000)
        await call.wait_for(lambda r: r.name == "TTS_END", after=call.received.index(cancelled))
        after = call.received[call.received.index(cancelled) :]
        assert all(r.audio != bytes([1]) * 480 for r in after if r.name == "audio")
        assert any(r.audio == bytes([2]) * 480 for r in after if r.name == "audio")
        registry = gateway_registry(gateway)
        assert sample(registry, "voice_gateway_barge_in_stop_seconds_count") == 1
        assert sample(registry, "voice_gateway_barge_in_audio_seconds_count") == 1


def gateway_registry(gateway: Gateway) -> CollectorRegistry:
    # The registry /metrics would show.
    return gateway._metrics.registry


async def test_openai_calls_close_with_1012_when_the_gateway_drains(own_nats: LocalNats) -> None:
    async with (
        scripted(own_nats.url),
        running_gateway(own_nats.url) as gateway,
        connect(
            ws_url(gateway, "/v1/realtime?model=any"),
            additional_headers={"Authorization": f"Bearer {KEY}"},
        ) as ws,
    ):
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        await gateway.drain(0.0)
        async with asyncio.timeout(TIMEOUT):
            await ws.wait_closed()
        # Service restart: the SDKs reconnect (to another replica).
        assert ws.close_code == 1012


async def test_half_duplex_is_asked_in_the_query(own_nats: LocalNats) -> None:
    async with scripted(own_nats.url) as fakes, running_gateway(own_nats.url) as gateway:
        async with call_on(gateway, "/v1/audio/realtime?duplex=half") as call:
            sid = sid_of(await call.start(payload()))
            await fakes.say(sid, "hang on", end_ms=1000)  # the answer never ends
            await call.wait_for(lambda r: r.name == "audio")
            await call.send_audio(b"\x10\x10" * 1600, realtime=False)
            await fakes.wait_until(lambda: bool(fakes.of_type(ServiceName.ASR, AudioFrame)))
            # While the assistant talks, ASR hears silence of the same length.
            (frame,) = fakes.of_type(ServiceName.ASR, AudioFrame)
            assert frame.pcm == bytes(len(frame.pcm)) and len(frame.pcm) > 0
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                ws_url(gateway, "/v1/audio/realtime?duplex=quarter"),
                additional_headers={"Authorization": f"Bearer {KEY}"},
            ):
                pass
        assert refused.value.response.status_code == 400

"""Audio lingers on the bus and travels per subject as one batch, in order, on a real NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared import codec
from shared.bus import BusOptions, NatsBus
from shared.messages import AsrCommit, AudioFrame, Batch, Message, TtsAudio

PCM = bytes(640)  # 20 ms of 16 kHz PCM16


class Inbox:
    """What a subscriber's handler got, and a way to wait for a count of it."""

    def __init__(self) -> None:
        self.items: list[Message] = []
        self._changed = asyncio.Event()

    async def handler(self, message: Message) -> None:
        self.items.append(message)
        self._changed.set()

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Message]:
        async with asyncio.timeout(timeout_s):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.items


class Wire:
    """Raw NATS messages on a subject, as the server carried them."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def cb(self, msg: Msg) -> None:
        self.payloads.append(msg.data)


@pytest.fixture
async def raw(nats_server: Any) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url)
    try:
        yield nc
    finally:
        await nc.close()


async def _bus(url: str, **options: Any) -> NatsBus:
    return await NatsBus.connect(BusOptions(url=url, name="batch-test", **options))


def _frames(sid: str, first: int, count: int) -> list[AudioFrame]:
    return [AudioFrame(sid=sid, seq=first + i, pcm=PCM) for i in range(count)]


async def test_lingering_audio_goes_as_one_batch_and_keeps_its_order(
    nats_server: Any, raw: Client
) -> None:
    subject = "test.batch.order"
    inbox, wire = Inbox(), Wire()
    receiver = await _bus(nats_server.url, bulk_linger_s=0)
    sender = await _bus(nats_server.url, bulk_linger_s=0.05)
    try:
        await receiver.subscribe(subject, inbox.handler)
        await raw.subscribe(subject, cb=wire.cb)
        await receiver.nc.flush()
        await raw.flush()
        sent: list[Message] = [*_frames("a", 1, 50), AsrCommit(sid="a"), *_frames("a", 51, 50)]
        for message in sent:
            await sender.publish(subject, message)
        got = await inbox.wait_for(len(sent))
        assert got == sent  # one by one, in publish order, nothing lost
        # The commit sent the 50 lingering frames before itself; the rest lingered.
        assert [type(codec.decode(p)) for p in wire.payloads] == [Batch, AsrCommit, Batch]
    finally:
        await sender.aclose()
        await receiver.aclose()


async def test_without_linger_each_message_goes_alone(nats_server: Any, raw: Client) -> None:
    subject = "test.batch.off"
    inbox, wire = Inbox(), Wire()
    receiver = await _bus(nats_server.url, bulk_linger_s=0)
    sender = await _bus(nats_server.url, bulk_linger_s=0)
    try:
        await receiver.subscribe(subject, inbox.handler)
        await raw.subscribe(subject, cb=wire.cb)
        await receiver.nc.flush()
        await raw.flush()
        sent = _frames("b", 1, 20)
        for message in sent:
            await sender.publish(subject, message)
        assert await inbox.wait_for(len(sent)) == sent
        await raw.flush()
        assert len(wire.payloads) == len(sent)
    finally:
        await sender.aclose()
        await receiver.aclose()


async def test_each_subject_gets_its_own_batch(nats_server: Any) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    receiver = await _bus(nats_server.url, bulk_linger_s=0)
    sender = await _bus(nats_server.url, bulk_linger_s=0.02)
    try:
        await receiver.subscribe("test.batch.a", inbox_a.handler)
        await receiver.subscribe("test.batch.b", inbox_b.handler)
        await receiver.nc.flush()
        audio = _frames("a", 1, 5)
        replies = [
            TtsAudio(sid="b", turn=1, index=0, seq=i, pcm=PCM, sample_rate=24000) for i in range(5)
        ]
        for frame, reply in zip(audio, replies, strict=True):
            await sender.publish("test.batch.a", frame)
            await sender.publish("test.batch.b", reply)
        assert await inbox_a.wait_for(5) == audio
        assert await inbox_b.wait_for(5) == replies
    finally:
        await sender.aclose()
        await receiver.aclose()


async def test_close_sends_what_lingers(nats_server: Any) -> None:
    inbox = Inbox()
    receiver = await _bus(nats_server.url, bulk_linger_s=0)
    sender = await _bus(nats_server.url, bulk_linger_s=30.0)  # would never go on its own
    try:
        await receiver.subscribe("test.batch.close", inbox.handler)
        await receiver.nc.flush()
        sent = _frames("c", 1, 10)
        for message in sent:
            await sender.publish("test.batch.close", message)
        await sender.aclose()
        assert await inbox.wait_for(len(sent)) == sent
    finally:
        await receiver.aclose()


async def test_a_full_batch_goes_before_the_linger_ends(nats_server: Any) -> None:
    inbox = Inbox()
    receiver = await _bus(nats_server.url, bulk_linger_s=0)
    sender = await _bus(nats_server.url, bulk_linger_s=30.0, bulk_max_bytes=2000)
    try:
        await receiver.subscribe("test.batch.full", inbox.handler)
        await receiver.nc.flush()
        sent = _frames("d", 1, 3)  # 3 x ~700 bytes passes 2000
        for message in sent:
            await sender.publish("test.batch.full", message)
        assert await inbox.wait_for(3) == sent
    finally:
        await sender.aclose()
        await receiver.aclose()

"""The gateway in calls: a real websockets client, a real NATS, and TEST-ONLY scripted
stand-ins for the ASR/LLM/TTS replicas (defined below, never used by product code).

The stand-ins answer ``<svc>.assign`` and ``$SRV.PING.<svc>``, record what the gateway
publishes, and echo scripted results on ``session.<sid>.out``; the test itself plays the
ASR's part by publishing transcripts. They run on a NATS of this module's own, so no
other test's replicas can answer the same assign subjects.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.gateway.app import Gateway
from services.gateway.metrics import GatewayMetrics
from services.gateway.readiness import ReplicaProbe
from services.gateway.settings import GatewaySettings
from services.stack.bella_client import BellaCall, Received
from shared import codec, subjects
from shared.bus import BusOptions, NatsBus
from shared.messages import (
    AsrClose,
    AsrOpen,
    AssignReply,
    AssignRequest,
    AudioFrame,
    Batch,
    Cancel,
    ErrorCode,
    LlmBegin,
    LlmClose,
    LlmDelta,
    LlmEnd,
    LlmTurn,
    Message,
    SentenceBegin,
    ServiceError,
    ServiceName,
    SessionClosed,
    TranscriptFinal,
    TranscriptPartial,
    TtsAudio,
    TtsBegin,
    TtsClose,
    TtsEnd,
    TtsOpen,
    TtsSegment,
    TtsText,
    VadEvent,
    VadState,
    WireModel,
)
from tests.support.bella_order import order_violations
from tests.support.natsserver import LocalNats

KEY = "calls-test-key"
ALL = (ServiceName.ASR, ServiceName.LLM, ServiceName.TTS)
TIMEOUT = 10.0


# --------------------------------------------------------------------------- test-only services


class ScriptedServices:
    """TEST-ONLY replicas of asr/llm/tts that follow a fixed script.

    LLM: a turn whose text starts with "hang" streams one delta and never ends (until
    cancelled); one starting with "slow" waits for `release` before ending; any other
    answers "Hello there." in two deltas. TTS: speaks each delta as one segment with one
    audio chunk whose bytes are the turn number, and ends after the final text. ASR: on
    a flushing close it first says `final_on_flush` (if set), then closes.
    """

    def __init__(self, nc: Client, services: tuple[ServiceName, ...] = ALL) -> None:
        self.nc = nc
        self.services = services
        self.received: dict[ServiceName, list[Message]] = {s: [] for s in ALL}
        self.cancels: dict[ServiceName, list[int]] = {s: [] for s in ALL}
        self.changed = asyncio.Condition()
        self.release = asyncio.Event()
        self.final_on_flush = ""
        self.bad_voice = "no-such-voice"
        self.silent: set[ServiceName] = set()  # these answer no pings
        self.pinged_all: dict[ServiceName, int] = {s: 0 for s in ALL}
        self._tts_index: dict[int, int] = {}
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def replica(service: ServiceName) -> str:
        return f"scripted-{service.value}"

    async def start(self) -> None:
        for svc in self.services:
            self._subs.append(
                await self.nc.subscribe(
                    subjects.assign(svc), queue=svc.value, cb=self._assign_cb(svc)
                )
            )
            self._subs.append(
                await self.nc.subscribe(subjects.micro_ping_all(svc), cb=self._pong_all(svc))
            )
            # The gateway probes each replica it uses (liveness).
            self._subs.append(
                await self.nc.subscribe(
                    subjects.micro_ping(svc, self.replica(svc)), cb=self._pong_one(svc)
                )
            )
            self._subs.append(
                await self.nc.subscribe(
                    subjects.worker_in(svc, self.replica(svc)), cb=self._data_cb(svc)
                )
            )
            self._subs.append(
                await self.nc.subscribe(
                    subjects.worker_ctl(svc, self.replica(svc)), cb=self._ctl_cb(svc)
                )
            )
        await self.nc.flush()

    async def stop(self) -> None:
        for sub in self._subs:
            await sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _assign_cb(self, svc: ServiceName) -> Any:
        async def cb(msg: Msg) -> None:
            request = codec.decode(msg.data)
            assert isinstance(request, AssignRequest)
            sid = request.sid
            await msg.respond(codec.encode(AssignReply(sid=sid, replica=self.replica(svc))))

        return cb

    def _pong_one(self, svc: ServiceName) -> Any:
        async def cb(msg: Msg) -> None:
            if svc in self.silent:
                return  # as a replica whose loop is stuck
            await msg.respond(json.dumps({"id": self.replica(svc)}).encode())

        return cb

    def _pong_all(self, svc: ServiceName) -> Any:
        async def cb(msg: Msg) -> None:
            self.pinged_all[svc] += 1
            await self._notify()
            if svc not in self.silent:
                await msg.respond(json.dumps({"id": self.replica(svc)}).encode())

        return cb

    def _ctl_cb(self, svc: ServiceName) -> Any:
        async def cb(msg: Msg) -> None:
            message = codec.decode(msg.data)
            assert isinstance(message, Cancel)
            self.cancels[svc].append(message.turn)
            await self._notify()

        return cb

    def _data_cb(self, svc: ServiceName) -> Any:
        async def cb(msg: Msg) -> None:
            decoded = codec.decode(msg.data)
            # Audio arrives batched: unpacked as a real replica's bus does.
            for message in decoded.items if isinstance(decoded, Batch) else (decoded,):
                self.received[svc].append(message)
                await self._notify()
                if isinstance(message, LlmTurn) and (message.text or "").startswith("slow"):
                    # A waiting script must not hold up this subscription's later messages.
                    task = asyncio.get_running_loop().create_task(self._script(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    await self._script(message)

        return cb

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def out(self, message: WireModel) -> None:
        sid = str(getattr(message, "sid"))  # noqa: B009 - every message sent here has one
        await self.nc.publish(subjects.session_out(sid), codec.encode(message))

    async def _script(self, m: Message) -> None:
        match m:
            case AsrClose(flush=True) if self.final_on_flush:
                await self.say(m.sid, self.final_on_flush, index=99)
                await self.out(SessionClosed(sid=m.sid, service=ServiceName.ASR))
            case AsrClose(flush=True):
                await self.out(SessionClosed(sid=m.sid, service=ServiceName.ASR))
            case LlmTurn():
                await self._answer(m)
            case TtsOpen(voice=self.bad_voice):
                await self.out(
                    ServiceError(
                        sid=m.sid,
                        service=ServiceName.TTS,
                        code=ErrorCode.BAD_REQUEST,
                        message=f"unknown voice {m.voice}",
                    )
                )
            case TtsText():
                await self._speak(m)
            case _:
                pass

    async def _answer(self, m: LlmTurn) -> None:
        sid, turn = m.sid, m.turn
        await self.out(LlmBegin(sid=sid, turn=turn))
        if (m.text or "").startswith("hang"):
            await self.out(LlmDelta(sid=sid, turn=turn, seq=1, text="Thinking."))
            return
        await self.out(LlmDelta(sid=sid, turn=turn, seq=1, text="Hello "))
        if (m.text or "").startswith("slow"):
            await self.release.wait()
        await self.out(LlmDelta(sid=sid, turn=turn, seq=2, text="there."))
        await self.out(LlmEnd(sid=sid, turn=turn, text="Hello there.", ttft_ms=5.0))

    async def _speak(self, m: TtsText) -> None:
        sid, turn = m.sid, m.turn
        if m.final:
            count = self._tts_index.pop(turn, 0)
            await self.out(TtsEnd(sid=sid, turn=turn, segments=count, audio_ms=10.0 * count))
            return
        index = self._tts_index.get(turn, 0)
        self._tts_index[turn] = index + 1
        if index == 0:
            await self.out(TtsBegin(sid=sid, turn=turn))
        await self.out(TtsSegment(sid=sid, turn=turn, index=index, text=m.text))
        pcm = bytes([turn]) * 480
        await self.out(TtsAudio(sid=sid, turn=turn, index=index, seq=0, pcm=pcm, sample_rate=24000))

    async def say(self, sid: str, text: str, *, index: int = 0, end_ms: int = 100) -> None:
        """Play the ASR: one sentence with a partial and its final."""
        await self.out(
            VadEvent(sid=sid, state=VadState.STARTING, start_ms=0, end_ms=64, timestamp=1.0)
        )
        await self.out(SentenceBegin(sid=sid, index=index, begin_ms=0))
        await self.out(
            TranscriptPartial(sid=sid, index=index, begin_ms=0, end_ms=end_ms, text=text[:2])
        )
        await self.out(
            TranscriptFinal(
                sid=sid, index=index, begin_ms=0, end_ms=end_ms, text=text, confidence=0.9
            )
        )

    async def wait_until(self, check: Any) -> None:
        async with asyncio.timeout(TIMEOUT):
            async with self.changed:
                await self.changed.wait_for(check)

    def of_type(self, svc: ServiceName, kind: type[WireModel]) -> list[Any]:
        return [m for m in self.received[svc] if isinstance(m, kind)]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def own_nats() -> Iterator[LocalNats]:
    server = LocalNats()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def running_gateway(url: str, **overrides: Any) -> AsyncIterator[Gateway]:
    settings = GatewaySettings(
        port=0, api_keys=(KEY,), nats_url=url, drain_grace_s=0.0, **overrides
    )
    metrics = GatewayMetrics()
    bus = await NatsBus.connect(BusOptions(url=url, name="gateway-test"), metrics)
    gateway = Gateway(settings, bus, metrics, ReplicaProbe(bus.nc).check)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.aclose()
        await bus.aclose()


@asynccontextmanager
async def scripted(
    url: str, services: tuple[ServiceName, ...] = ALL
) -> AsyncIterator[ScriptedServices]:
    nc = await nats.connect(url)
    fakes = ScriptedServices(nc, services)
    await fakes.start()
    try:
        yield fakes
    finally:
        fakes.release.set()
        await fakes.stop()
        await nc.close()


@pytest.fixture
async def env(own_nats: LocalNats) -> AsyncIterator[tuple[Gateway, ScriptedServices]]:
    async with scripted(own_nats.url) as fakes, running_gateway(own_nats.url) as gateway:
        yield gateway, fakes


def ws_url(gateway: Gateway, path: str = "/v1/audio/realtime") -> str:
    return f"ws://127.0.0.1:{gateway.port}{path}"


def payload(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "format": "pcm",
        "sample_rate": 16000,
        "enable_intermediate_result": True,
        "llm_option": {"main": {"sys_prompt": "Be brief.", "temperature": 0.3}},
        "tts_option": {"sample_rate": 24000, "voice": "joe"},
    }
    body.update(extra)
    return body


@asynccontextmanager
async def call_on(gateway: Gateway, path: str = "/v1/audio/realtime") -> AsyncIterator[BellaCall]:
    call = await BellaCall.open(ws_url(gateway, path), KEY)
    try:
        yield call
    finally:
        await call.aclose()


def sid_of(started: Received) -> str:
    assert started.name == "TranscriptionStarted", started.header
    return str(started.payload["session_id"])


# --------------------------------------------------------------------------- tests


async def test_a_turn_is_answered_in_order_and_stop_completes(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, fakes = env
    async with call_on(gateway) as call:
        started = await call.start(payload())
        assert started.header["status"] == 20000000
        assert started.header["status_message"] == "GATEWAY|SUCCESS|Success."
        sid = sid_of(started)
        await fakes.wait_until(lambda: fakes.of_type(ServiceName.ASR, AsrOpen))
        assert fakes.of_type(ServiceName.ASR, AsrOpen)[0].partials is True
        await call.send_audio(b"\x01\x00" * 1600 * 3, realtime=False)
        await fakes.wait_until(lambda: len(fakes.of_type(ServiceName.ASR, AudioFrame)) >= 3)

        await fakes.say(sid, "hi there")
        await call.wait_for(lambda r: r.name == "TTS_END")
        await call.wait_for(lambda r: r.name == "LLM_CHAT_END")
        names = call.names()
        assert order_violations(names) == [], names
        assert names.index("VOICE_STARTING") < names.index("SentenceBegin")
        ttft = next(r for r in call.received if r.name == "TTS_TTFT")
        assert ttft.payload["latency"] >= 0
        assert call.audio() == bytes([1]) * 960
        end = next(r for r in call.received if r.name == "SentenceEnd")
        assert end.payload["result"] == "hi there"
        assert end.payload["confidence"] == 0.9
        assert all(r.header.get("task_id") == call.task_id for r in call.received if r.header)
        # Every delta reached TTS, then the end of the text.
        texts = fakes.of_type(ServiceName.TTS, TtsText)
        assert [t.text for t in texts] == ["Hello ", "there.", ""]
        assert texts[-1].final and [t.seq for t in texts] == [1, 2, 3]
        turns = fakes.of_type(ServiceName.LLM, LlmTurn)
        assert [(t.turn, t.text) for t in turns] == [(1, "hi there")]

        at = len(call.received)
        await call.stop()
        assert call.names()[at:] == ["TranscriptionCompleted", "SESSION_CLOSE"]
        closes = fakes.of_type(ServiceName.ASR, AsrClose)
        assert closes and closes[0].flush is True
        await fakes.wait_until(
            lambda: (
                fakes.of_type(ServiceName.LLM, LlmClose)
                and fakes.of_type(ServiceName.TTS, TtsClose)
            )
        )
        async with asyncio.timeout(TIMEOUT):
            await call.ws.wait_closed()
        assert call.ws.close_code == 1000
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{gateway.port}/metrics")).text
    assert 'voice_gateway_voice_to_voice_seconds_count{service="gateway"} 1.0' in metrics


async def test_stop_waits_for_the_answer_in_flight(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, fakes = env
    async with call_on(gateway) as call:
        sid = sid_of(await call.start(payload()))
        await fakes.say(sid, "slow question")
        await call.wait_for(lambda r: r.name == "LLM_CHAT_DELTA")
        stop = {"header": call._header("StopTranscription"), "payload": {}}
        await call.send_text(json.dumps(stop))
        await fakes.wait_until(lambda: fakes.of_type(ServiceName.ASR, AsrClose))
        assert "TranscriptionCompleted" not in call.names()
        fakes.release.set()
        await call.wait_for(lambda r: r.name == "SESSION_CLOSE")
        names = call.names()
        assert order_violations(names) == [], names
        assert "LLM_CHAT_END" in names and "LLM_CHAT_CANCELLED" not in names
        assert names[-3] in ("TTS_END", "LLM_CHAT_END")
        assert names[-2:] == ["TranscriptionCompleted", "SESSION_CLOSE"]


async def test_stop_answers_the_sentence_the_flush_produced(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, fakes = env
    fakes.final_on_flush = "and goodbye"
    async with call_on(gateway) as call:
        sid_of(await call.start(payload()))
        await call.stop()
        names = call.names()
        assert order_violations(names) == [], names
        assert names[-2:] == ["TranscriptionCompleted", "SESSION_CLOSE"]
        assert [t.text for t in fakes.of_type(ServiceName.LLM, LlmTurn)] == ["and goodbye"]


async def test_new_final_cancels_the_answer_in_flight(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, fakes = env
    async with call_on(gateway) as call:
        sid = sid_of(await call.start(payload()))
        await fakes.say(sid, "hang on")
        await call.wait_for(lambda r: r.name == "audio")
        # Long enough to interrupt (a 100 ms "mhm" would be a backchannel).
        await fakes.say(sid, "never mind", index=1, end_ms=1000)
        cancelled = await call.wait_for(lambda r: r.name == "LLM_CHAT_CANCELLED")
        await call.wait_for(lambda r: r.name == "TTS_END")
        await fakes.wait_until(
            lambda: fakes.cancels[ServiceName.LLM] == [1] and fakes.cancels[ServiceName.TTS] == [1]
        )
        after = call.received[call.received.index(cancelled) :]
        assert all(r.audio != bytes([1]) * 480 for r in after if r.name == "audio")
        assert any(r.audio == bytes([2]) * 480 for r in after if r.name == "audio")
        assert [t.turn for t in fakes.of_type(ServiceName.LLM, LlmTurn)] == [1, 2]


async def test_empty_final_starts_no_turn(env: tuple[Gateway, ScriptedServices]) -> None:
    gateway, fakes = env
    async with call_on(gateway) as call:
        sid = sid_of(await call.start(payload()))
        await fakes.say(sid, "  ")
        await fakes.say(sid, "hello", index=1)
        await call.wait_for(lambda r: r.name == "TTS_END")
        assert call.names().count("SentenceEnd") == 2
        assert [t.text for t in fakes.of_type(ServiceName.LLM, LlmTurn)] == ["hello"]


async def test_client_audio_is_resampled_to_16k(env: tuple[Gateway, ScriptedServices]) -> None:
    gateway, fakes = env
    async with call_on(gateway) as call:
        sid_of(await call.start(payload(sample_rate=48000)))
        await call.send_audio(b"\x00\x01" * 48000, sample_rate=48000, realtime=False)
        await call.stop()
        frames = fakes.of_type(ServiceName.ASR, AudioFrame)
        total = sum(len(f.pcm) for f in frames) // 2
        assert abs(total - 16000) <= 64
        assert [f.seq for f in frames] == list(range(1, len(frames) + 1))


async def test_start_options_reach_the_services(env: tuple[Gateway, ScriptedServices]) -> None:
    gateway, fakes = env
    async with call_on(gateway) as call:
        sid_of(
            await call.start(
                payload(max_sentence_silence=800, tts_option={"voice": "amy", "sample_rate": 16000})
            )
        )
        await fakes.wait_until(
            lambda: (
                fakes.of_type(ServiceName.ASR, AsrOpen) and fakes.of_type(ServiceName.TTS, TtsOpen)
            )
        )
        asr = fakes.of_type(ServiceName.ASR, AsrOpen)[0]
        assert asr.vad.silence_duration_ms == 800
        tts = fakes.of_type(ServiceName.TTS, TtsOpen)[0]
        assert (tts.voice, tts.sample_rate) == ("amy", 16000)


async def test_disconnect_cancels_and_closes_every_session(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, fakes = env
    call = await BellaCall.open(ws_url(gateway), KEY)
    sid = sid_of(await call.start(payload()))
    await fakes.say(sid, "hang on")
    await call.wait_for(lambda r: r.name == "LLM_CHAT_DELTA")
    await call.aclose()
    await fakes.wait_until(
        lambda: (
            fakes.of_type(ServiceName.LLM, LlmClose) and fakes.of_type(ServiceName.TTS, TtsClose)
        )
    )
    closes = fakes.of_type(ServiceName.ASR, AsrClose)
    assert closes and closes[-1].flush is False
    assert fakes.cancels[ServiceName.LLM] == [1]


async def test_asr_only_endpoint_sends_transcripts_only(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, fakes = env
    async with call_on(gateway, "/v1/audio/asr/stream") as call:
        sid = sid_of(await call.start({"format": "pcm", "sample_rate": 16000}))
        await fakes.say(sid, "only words")
        await call.stop()
        names = call.names()
        assert "SentenceEnd" in names
        assert "TranscriptionResultChanged" not in names  # partials were not asked for
        assert not [n for n in names if n.startswith(("LLM_", "TTS_"))]
        assert names[-2:] == ["TranscriptionCompleted", "SESSION_CLOSE"]
        assert not fakes.received[ServiceName.LLM] and not fakes.received[ServiceName.TTS]


async def test_second_start_and_wrong_task_id_are_refused_and_the_call_goes_on(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, fakes = env
    async with call_on(gateway) as call:
        sid = sid_of(await call.start(payload()))
        at = len(call.received)
        start = {"header": call._header("StartTranscription"), "payload": payload()}
        await call.send_text(json.dumps(start))
        failed = await call.wait_for(lambda r: r.name == "TaskFailed", after=at)
        assert failed.header["status"] == 40000000
        assert "already" in failed.header["status_message"]
        at = len(call.received)
        header = call._header("StopTranscription") | {"task_id": "not-the-task"}
        await call.send_text(json.dumps({"header": header, "payload": {}}))
        wrong = await call.wait_for(lambda r: r.name == "TaskFailed", after=at)
        assert "task_id" in wrong.header["status_message"]
        await fakes.say(sid, "still here")
        await call.wait_for(lambda r: r.name == "TTS_END")
        await call.stop()
        assert call.names()[-2:] == ["TranscriptionCompleted", "SESSION_CLOSE"]


async def test_unknown_voice_fails_the_call_with_a_client_error(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, fakes = env
    async with call_on(gateway) as call:
        sid_of(await call.start(payload(tts_option={"voice": fakes.bad_voice})))
        failed = await call.wait_for(lambda r: r.name == "TaskFailed")
        assert failed.header["status"] == 40000000
        assert "unknown voice" in failed.header["status_message"]
        await call.wait_for(lambda r: r.name == "SESSION_CLOSE")
        async with asyncio.timeout(TIMEOUT):
            await call.ws.wait_closed()


async def test_readyz_is_200_when_every_service_answers(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, _ = env
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{gateway.port}/readyz")
    assert r.status_code == 200, r.text


async def test_no_replica_means_overloaded(own_nats: LocalNats) -> None:
    async with (
        scripted(own_nats.url, (ServiceName.ASR,)),
        running_gateway(own_nats.url) as gateway,
        call_on(gateway) as call,
    ):
        failed = await call.start(payload())
        assert failed.name == "TaskFailed"
        assert failed.header["status"] == 50000000
        assert "overloaded" in failed.header["status_message"]
        async with asyncio.timeout(TIMEOUT):
            await call.ws.wait_closed()
        assert call.ws.close_code == 1013


async def test_idle_call_is_ended(own_nats: LocalNats) -> None:
    async with (
        scripted(own_nats.url),
        running_gateway(own_nats.url, idle_timeout_s=0.3) as gateway,
        call_on(gateway) as call,
    ):
        sid_of(await call.start(payload()))
        failed = await call.wait_for(lambda r: r.name == "TaskFailed")
        assert "no audio" in failed.header["status_message"]
        await call.wait_for(lambda r: r.name == "SESSION_CLOSE")


async def test_drain_ends_calls_left_after_the_grace(own_nats: LocalNats) -> None:
    async with scripted(own_nats.url), running_gateway(own_nats.url) as gateway:
        async with call_on(gateway) as call:
            sid_of(await call.start(payload()))
            await gateway.drain(0.1)
            failed = await call.wait_for(lambda r: r.name == "TaskFailed")
            assert failed.header["status"] == 50000000
            async with asyncio.timeout(TIMEOUT):
                await call.ws.wait_closed()
            assert call.ws.close_code == 1001
        with pytest.raises((OSError, ConnectionClosed)):
            async with connect(
                ws_url(gateway), additional_headers={"Authorization": f"Bearer {KEY}"}
            ):
                pass


async def test_a_silent_replica_with_nowhere_to_go_keeps_its_call(
    env: tuple[Gateway, ScriptedServices],
) -> None:
    gateway, fakes = env
    async with call_on(gateway) as call:
        started = await call.start(payload())
        assert started.name == "TranscriptionStarted"
        await fakes.wait_until(lambda: fakes.of_type(ServiceName.ASR, AsrOpen))
        # The ASR replica stops answering probes (a starved loop looks the same as a
        # stuck one). Once the gateway calls it hung it looks for another replica...
        fakes.silent.add(ServiceName.ASR)
        await fakes.wait_until(lambda: fakes.pinged_all[ServiceName.ASR] >= 1)
        # ...finds none, so the call stays where it is rather than ending.
        fakes.silent.discard(ServiceName.ASR)
        before = len(fakes.of_type(ServiceName.ASR, AudioFrame))
        await call.send_audio(b"\x01\x00" * 1600, realtime=False)
        await fakes.wait_until(lambda: len(fakes.of_type(ServiceName.ASR, AudioFrame)) > before)
        assert len(fakes.of_type(ServiceName.ASR, AsrOpen)) == 1  # not moved
        assert "TaskFailed" not in call.names()
        sid = sid_of(started)
        await fakes.say(sid, "hello")
        await call.wait_for(lambda r: r.name == "TTS_END")

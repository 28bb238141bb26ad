"""The asyncio layer of one client WebSocket, whatever its protocol: it only moves data.

Per connection, in one TaskGroup:

* the reader (the task that runs `run`) reads the socket, feeds the protocol adapter
  (a `ProtocolSession`) and carries out its outputs on the call core;
* the inbound task takes the services' messages from a bounded queue (fed by this call's
  NATS subscription) into the call core;
* the writer sends events and reply audio from a bounded outbound queue, and tells the
  core which reply audio really went out (what the user heard, for barge-in).

Decisions live in the adapter (protocol) and `CallCore` (pipeline); here they are
carried out. Overflow policies: the inbound queue blocks its producer (the NATS
subscription callback, whose own pending limits then apply and count slow consumers);
the outbound queue never blocks: a client that lets it fill up is not reading and is
disconnected (`SlowClientError`) instead of being buffered without bound.

Cancelled turns: the core says `DropAudio(turn)`; every queued audio frame of that turn
(or an older one) is skipped by the writer, so nothing of it reaches the client after the
cancel event, which is queued after the drop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import assert_never

from nats.aio.subscription import Subscription
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from services.gateway.call import (
    Action,
    BargeIn,
    CallCore,
    CallOptions,
    DropAudio,
    Emit,
    Finish,
    Publish,
    Replicas,
    SendAudio,
)
from services.gateway.liveness import ReplicaMonitor
from services.gateway.metrics import GatewayMetrics, RejectReason
from services.gateway.persistence import (
    CallPersistence,
    StateRefused,
    open_state,
    with_history,
)
from services.gateway.protocol import (
    AddUserText,
    AudioOut,
    BeginCall,
    CancelResponse,
    ClearInput,
    CloseConnection,
    CommitInput,
    DeleteItem,
    EndCall,
    ForwardAudio,
    Output,
    ProtocolSession,
    Refused,
    Respond,
    SendBytes,
    SendText,
    TruncateItem,
    UpdateCall,
)
from services.gateway.ratelimit import (
    MessageRateLimiter,
    RateLimits,
    frame_size,
    refusal_reason,
)
from services.gateway.ratelimit import Verdict as RateVerdict
from services.gateway.replicas import CallReplicas
from services.gateway.settings import GatewaySettings
from shared import subjects
from shared.bus import NatsBus
from shared.errors import BusError, OverloadedError, UnknownModelError
from shared.logs import SessionLogger
from shared.messages import ErrorCode, Message, ServiceName
from shared.placement import assign_replica
from shared.state import SessionStore

log = logging.getLogger(__name__)


class SlowClientError(Exception):
    """The client does not read what we send it."""


@dataclass(frozen=True)
class Context:
    """What every connection of one gateway process shares."""

    settings: GatewaySettings
    bus: NatsBus
    metrics: GatewayMetrics
    monitor: ReplicaMonitor  # one liveness probe per replica, shared by all calls
    store: SessionStore | None = None  # None: sessions cannot be resumed
    replica_id: str = ""  # this gateway, as the owner of its sessions in the store


@dataclass(frozen=True)
class _Out:
    data: str | bytes
    turn: int | None = None  # reply audio: which turn it belongs to
    pcm_bytes: int = 0  # reply audio: PCM16 bytes at the TTS rate this frame completes
    speech_end_at: float | None = None  # a turn's first audio: start of voice-to-voice


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class CallConnection:
    """One client connection on any endpoint; `run` returns when it is closed.

    ``greeting``: outputs to carry out as soon as the socket is accepted (e.g. OpenAI's
    ``session.created``). ``drain_code``: the close code when the gateway drains and the
    call must end (1001 going away; OpenAI clients reconnect on 1012 service restart).
    ``half_duplex``: the client asked for it when connecting (whatever its protocol says).
    """

    def __init__(
        self,
        ws: ServerConnection,
        ctx: Context,
        session: ProtocolSession,
        *,
        endpoint: str,
        greeting: Sequence[Output] = (),
        drain_code: int = CloseCode.GOING_AWAY,
        half_duplex: bool = False,
        key_id: str = "",
    ) -> None:
        self._ws = ws
        self._ctx = ctx
        self._settings = ctx.settings
        self._metrics = ctx.metrics
        self._endpoint = endpoint
        self._session = session
        self._greeting = list(greeting)
        self._drain_code = drain_code
        self._half_duplex = half_duplex
        self._key_id = key_id  # the API key's id: a key resumes only its own sessions
        self._persist: CallPersistence | None = None
        self._core: CallCore | None = None
        self._replicas: Replicas | None = None
        self._failover: CallReplicas | None = None  # watches and replaces lost replicas
        # Service messages go out one at a time, so a replacement replica's restore is
        # not interleaved with newer messages (an audio frame overtaking the replay).
        self._send_lock = asyncio.Lock()
        self._sub: Subscription | None = None
        self._inbound: asyncio.Queue[Message] = asyncio.Queue(maxsize=self._settings.inbound_queue)
        self._out: asyncio.Queue[_Out | _Close] = asyncio.Queue(
            maxsize=self._settings.outbound_queue
        )
        self._tg: asyncio.TaskGroup | None = None
        self._inbound_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._call_over = asyncio.Event()  # the call's last events are queued
        self._closed = asyncio.Event()  # `run` returned
        self._closing = False  # a close frame is queued: stop reading for timeouts
        self._dropped_turn = 0  # queued audio of turns up to this one is not sent
        self._last_write: tuple[int, float] = (0, 0.0)  # (turn, when) of the last audio sent
        self._started_at = time.monotonic()
        self._last_audio_at = self._started_at
        self._log = SessionLogger(log, {"sid": ""})
        s = self._settings
        self._rate = MessageRateLimiter(
            RateLimits(s.max_frames_per_s, s.max_bytes_per_s, s.rate_burst_s), self._started_at
        )

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve the connection until it closes. Cancelling it hangs the call up."""
        self._metrics.call_started(self._endpoint)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                writer = tg.create_task(self._write_loop(), name="call-writer")
                limits = tg.create_task(self._watch_limits(), name="call-limits")
                try:
                    await self._apply(self._greeting)
                    await self._read_loop()
                finally:
                    limits.cancel()
                    self._stop_tasks(writer)
        except* SlowClientError:
            self._metrics.slow_clients.inc()
            self._log.warning("client does not read its events; disconnecting")
        finally:
            try:
                await self._release()
            finally:
                self._metrics.call_ended(self._endpoint)
                self._closed.set()

    async def shutdown(self, reason: str = "the gateway is shutting down") -> None:
        """End the call now (after the drain grace) and close with the drain code."""
        if self._closing:
            return
        try:
            if self._core is not None and not self._core.finished:
                actions = self._core.fail(ErrorCode.INTERNAL, reason)
                await self._execute(actions, self._drain_code)
            else:
                self._enqueue_close(self._drain_code, reason)
        except SlowClientError:
            # Its queue is full, so a close frame cannot get through: cut the connection;
            # `run` then finishes and releases the call.
            self._ws.transport.abort()

    def _stop_tasks(self, writer: asyncio.Task[None]) -> None:
        # The reader is done: the socket is closed (or closing). A writer sending our close
        # frame finishes on its own, bounded by the close timeout; otherwise stop it.
        if not self._closing:
            writer.cancel()
        for task in (self._inbound_task, self._drain_task):
            if task is not None:
                task.cancel()
        if self._failover is not None:
            self._failover.stop()

    async def _release(self) -> None:
        """Whatever happened, the services must not keep this call alive."""
        if self._core is not None and not self._core.finished:
            try:
                async with asyncio.timeout(2.0):
                    await self._execute(self._core.hangup(), None)
            except (TimeoutError, BusError, SlowClientError) as exc:
                self._log.warning("could not close the call's sessions: %s", exc)
        if self._persist is not None:
            # Written out and detached: resumable (on any replica) for the grace period.
            await self._persist.aclose()
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - the bus closed under us at shutdown
                self._log.debug("unsubscribe failed: %s", exc)
            self._sub = None
        if self._failover is not None:
            await self._failover.aclose()

    # ------------------------------------------------------------------ reader

    def _limit_left(self) -> float | None:
        """Seconds until the idle or call-length limit; ``None`` once closing."""
        if self._closing:
            return None  # the close handshake has its own timeout
        now = time.monotonic()
        core = self._core
        active = core is not None and not core.finished
        if active and core is not None and (core.answering or self._session.stopping):
            # The user listens to the answer (or has stopped): a client that sends no
            # audio meanwhile is not idle, so the idle clock restarts.
            self._last_audio_at = now
        left = self._last_audio_at + self._settings.idle_timeout_s - now
        if active:
            left = min(left, self._started_at + self._settings.max_call_s - now)
        return max(0.0, left)

    async def _watch_limits(self) -> None:
        """End the call at its idle or length limit.

        One sleeping task per call rather than a timeout around every read: arming and
        cancelling a timer for each 20 ms frame was a measurable part of a frame's cost.
        """
        while True:
            left = self._limit_left()
            if left is None:
                return
            if left > 0:
                await asyncio.sleep(left)
                continue
            await self._on_timeout()
            if not self._closing:
                await asyncio.sleep(1.0)  # the call could not be ended now; try again

    async def _read_loop(self) -> None:
        while True:
            try:
                frame = await self._ws.recv()
            except ConnectionClosed:
                return
            verdict = self._rate.admit(frame_size(frame), time.monotonic())
            if verdict is not RateVerdict.OK:
                await self._on_rate_limited(verdict)
                continue
            if isinstance(frame, str):
                outputs = self._session.on_text(frame)
            else:
                outputs = self._session.on_binary(frame)
            await self._apply(outputs)

    async def _on_rate_limited(self, verdict: RateVerdict) -> None:
        """A client flooding us is cut off: its frames are not queued or processed."""
        if self._closing:
            return
        reason = refusal_reason(verdict, self._rate.limits)
        self._metrics.protocol_error(self._session.protocol, verdict.value)
        self._log.warning("closing: %s", reason)
        if self._core is not None and not self._core.finished:
            await self._execute(
                self._core.fail(ErrorCode.BAD_REQUEST, reason), CloseCode.POLICY_VIOLATION
            )
        else:
            self._enqueue_close(CloseCode.POLICY_VIOLATION, reason)

    async def _on_timeout(self) -> None:
        left = self._limit_left()
        if left is None or left > 0:
            return  # an answer started (or a close) while we waited: not idle after all
        now = time.monotonic()
        over_length = now - self._started_at >= self._settings.max_call_s
        reason = (
            f"maximum call length of {self._settings.max_call_s:.0f} s reached"
            if over_length
            else f"no audio for {self._settings.idle_timeout_s:.0f} s"
        )
        self._log.info("ending call: %s", reason)
        if self._core is not None and not self._core.finished:
            await self._execute(
                self._core.fail(ErrorCode.TIMEOUT, reason), CloseCode.NORMAL_CLOSURE
            )
        else:
            self._enqueue_close(CloseCode.NORMAL_CLOSURE, reason)

    async def _apply(self, outputs: list[Output]) -> None:
        for out in outputs:
            match out:
                case SendText():
                    self._enqueue(_Out(out.text))
                case SendBytes():
                    self._enqueue(_Out(out.data))
                case Refused():
                    self._metrics.protocol_error(self._session.protocol, out.kind)
                case CloseConnection():
                    self._enqueue_close(out.code, out.reason)
                case BeginCall():
                    await self._begin(out.options, resume=out.resume)
                case ForwardAudio():
                    now = time.monotonic()
                    self._last_audio_at = now
                    if self._core is not None:
                        await self._execute(self._core.audio(out.pcm, now), None)
                case EndCall():
                    if self._core is not None:
                        await self._execute(self._core.stop(time.monotonic()), None)
                        if not self._core.finished and self._tg is not None:
                            self._drain_task = self._tg.create_task(self._drain_watch())
                case _:
                    await self._command(out)

    async def _command(
        self,
        out: CommitInput
        | ClearInput
        | Respond
        | CancelResponse
        | AddUserText
        | TruncateItem
        | DeleteItem
        | UpdateCall,
    ) -> None:
        core = self._core
        if core is None:
            # The adapter places the call before its first command; a failed placement
            # already told the client and is closing.
            self._log.debug("command %s without a call", type(out).__name__)
            return
        match out:
            case CommitInput():
                actions = core.commit()
            case ClearInput():
                actions = core.clear_input()
            case Respond():
                actions = core.respond(out.text)
            case CancelResponse():
                actions = core.cancel_response()
            case AddUserText():
                actions = core.add_user_text(out.item_id, out.text)
            case TruncateItem():
                actions = core.truncate(out.item_id, out.audio_end_ms)
            case DeleteItem():
                actions = core.delete_item(out.item_id)
            case UpdateCall():
                actions = core.update(
                    system_prompt=out.system_prompt,
                    temperature=out.temperature,
                    max_tokens=out.max_tokens,
                    voice=out.voice,
                    variables=out.variables,
                )
            case _:
                assert_never(out)
        await self._execute(actions, None)

    # ------------------------------------------------------------------ starting a call

    def _with_defaults(self, options: CallOptions) -> CallOptions:
        if self._half_duplex:
            options = dataclasses.replace(options, half_duplex=True)
        if options.barge_in is not None:
            return options
        s = self._settings
        barge_in = BargeIn(
            min_speech_ms=s.barge_in_min_speech_ms,
            min_words=s.barge_in_min_words,
            resume=s.barge_in_resume,
        )
        return dataclasses.replace(options, barge_in=barge_in)

    async def _begin(self, options: CallOptions, *, resume: bool = False) -> None:
        options = self._with_defaults(options)
        self._log = SessionLogger(log, {"sid": options.sid})
        state = await open_state(
            self._ctx.store,
            options,
            resume=resume,
            key_id=self._key_id,
            protocol=self._session.protocol,
            owner=self._ctx.replica_id,
            logger=self._log,
        )
        if isinstance(state, StateRefused):
            await self._apply(self._session.start_failed(state.code, state.message))
            self._enqueue_close(state.close_code, state.reason)
            return
        options, self._persist = state.options, state.persistence
        try:
            # Subscribed (and confirmed by a round trip) before anyone, the services or the
            # client, hears of the call, so no early result can miss us.
            self._sub = await self._ctx.bus.subscribe(
                subjects.session_out(options.sid), self._on_bus
            )
            await self._flush()
            self._replicas = await self._assign(options)
        except OverloadedError as exc:
            self._metrics.rejected(RejectReason.OVERLOADED)
            self._log.warning("no room for the call: %s", exc)
            await self._apply(
                self._session.start_failed(ErrorCode.OVERLOADED, f"overloaded: {exc}")
            )
            self._enqueue_close(CloseCode.TRY_AGAIN_LATER, "overloaded")
            return
        except UnknownModelError as exc:
            self._metrics.rejected(RejectReason.UNKNOWN_MODEL)
            self._log.warning("model refused: %s", exc)
            await self._apply(self._session.start_failed(ErrorCode.UNKNOWN_MODEL, str(exc)))
            self._enqueue_close(CloseCode.NORMAL_CLOSURE, "unknown model")
            return
        except BusError as exc:
            self._metrics.rejected(RejectReason.BUS_FAILED)
            self._log.warning("placement failed: %s", exc)
            await self._apply(
                self._session.start_failed(ErrorCode.INTERNAL, "the service bus is unavailable")
            )
            self._enqueue_close(CloseCode.TRY_AGAIN_LATER, "bus unavailable")
            return
        core = CallCore(options)
        self._core = core
        assert self._tg is not None
        self._inbound_task = self._tg.create_task(self._inbound_loop(core), name="call-inbound")
        self._start_failover(core, options)
        self._last_audio_at = time.monotonic()
        await self._execute(with_history(core.open(), state.history), None)
        await self._apply(self._session.started())
        self._log.info("call started (replicas %s)", self._replicas)

    async def _flush(self) -> None:
        try:
            await self._ctx.bus.nc.flush(timeout=max(1, round(self._settings.assign_timeout_s)))
        except Exception as exc:  # nats-py raises several unrelated types here
            raise BusError(f"NATS flush failed: {exc.__class__.__name__}") from exc

    async def _assign(self, options: CallOptions) -> Replicas:
        bus, sid = self._ctx.bus, options.sid
        timeout = self._settings.assign_timeout_s

        async def one(service: ServiceName) -> str:
            models = options.models(service)
            return await assign_replica(bus, service, sid, models=models, timeout_s=timeout)

        asr = await one(ServiceName.ASR)
        if not options.answer:
            return Replicas(asr=asr)
        return Replicas(asr=asr, llm=await one(ServiceName.LLM), tts=await one(ServiceName.TTS))

    # ------------------------------------------------------------------ services -> core

    def _start_failover(self, core: CallCore, options: CallOptions) -> None:
        assert self._replicas is not None and self._tg is not None

        async def replaced(service: ServiceName) -> None:
            assert self._failover is not None
            async with self._send_lock:
                self._failover.settle(service)
                # Only publishes: the restore of the replacement, before anything newer.
                for action in core.replica_lost(service):
                    assert isinstance(action, Publish)
                    await self._send(action)

        async def failed(service: ServiceName, reason: str) -> None:
            message = f"the {service.value} replica was lost and none could take over: {reason}"
            await self._execute(core.fail(ErrorCode.OVERLOADED, message, service), None)

        self._failover = CallReplicas(
            self._ctx.bus,
            options.sid,
            self._replicas,
            models=options.models,
            handler=self._on_bus,
            monitor=self._ctx.monitor,
            on_replaced=replaced,
            on_failed=failed,
        )
        self._failover.start(self._tg)

    async def _on_bus(self, message: Message) -> None:
        if self._failover is not None and not self._failover.accepts(message):
            return  # from a replica the call was moved away from
        # Blocking put: back-pressure lands on this subscription's NATS pending limits.
        await self._inbound.put(message)

    async def _inbound_loop(self, core: CallCore) -> None:
        while True:
            message = await self._inbound.get()
            await self._execute(core.on_message(message, time.monotonic()), None)

    async def _drain_watch(self) -> None:
        """Bound how long a stopped call may take to deliver its last answer."""
        try:
            async with asyncio.timeout(self._settings.stop_timeout_s):
                await self._call_over.wait()
        except TimeoutError:
            if (task := asyncio.current_task()) is not None and task.cancelling():
                raise
            if self._core is not None:
                self._log.warning("stop did not finish in %.0f s", self._settings.stop_timeout_s)
                await self._execute(self._core.drain_timeout(), None)

    # ------------------------------------------------------------------ actions

    async def _execute(self, actions: list[Action], close_code: int | None) -> None:
        """Carry out the core's actions in order. ``close_code`` overrides 1000 on Finish."""
        if self._persist is not None:
            self._persist.observe(actions)
        for action in actions:
            match action:
                case Publish():
                    await self._publish(action)
                case Emit():
                    self._metrics.call_event(action.event)
                    for frame in self._session.render(action.event):
                        if isinstance(frame, AudioOut):
                            frame_out = _Out(frame.data, frame.turn, frame.pcm_bytes)
                            self._enqueue(frame_out)
                        else:
                            self._enqueue(_Out(frame))
                case SendAudio():
                    self._send_audio(action)
                case DropAudio():
                    self._drop(action)
                case Finish():
                    self._session.finished()
                    self._call_over.set()
                    code = close_code or CloseCode.NORMAL_CLOSURE
                    self._enqueue_close(
                        code, "call completed" if action.completed else "call ended"
                    )
                case _:
                    assert_never(action)

    def _send_audio(self, action: SendAudio) -> None:
        assert self._core is not None
        rate = self._core.options.tts_rate
        frames = self._session.render_audio(action.turn, action.pcm, rate)
        plain = [i for i, f in enumerate(frames) if not isinstance(f, AudioOut)]
        for i, frame in enumerate(frames):
            if isinstance(frame, AudioOut):
                # Audio the adapter held back: it says how much of the answer it carries.
                self._enqueue(_Out(frame.data, frame.turn, frame.pcm_bytes))
                continue
            last = i == plain[-1]
            self._enqueue(
                _Out(
                    frame,
                    turn=action.turn,
                    # The chunk counts as heard once its last frame is written.
                    pcm_bytes=len(action.pcm) if last else 0,
                    speech_end_at=action.speech_end_at if i == plain[0] else None,
                )
            )

    def _drop(self, action: DropAudio) -> None:
        self._dropped_turn = max(self._dropped_turn, action.turn)
        self._metrics.cancelled_turns.inc()
        if action.heard_at is None:
            return
        now = time.monotonic()
        self._metrics.barge_in_stopped(action.heard_at, now)
        # A frame being written right now still goes out; the writer skips the rest.
        turn, written_at = self._last_write
        if turn == action.turn:
            self._metrics.barge_in_audio_stopped(action.heard_at, max(written_at, action.heard_at))

    async def _publish(self, action: Publish) -> None:
        async with self._send_lock:
            await self._send(action)

    async def _send(self, action: Publish) -> None:
        assert self._replicas is not None and self._core is not None
        # Recorded even when not sent now: a replacement replica is brought up to date.
        self._core.published(action)
        message = action.message
        replica: str | None
        if self._failover is not None:
            routed = self._failover.route(action.service, message)
            if routed is None:
                return
            replica, message = routed
        else:
            replica = self._replicas.of(action.service)
        if replica is None:
            return
        if action.control:
            subject = subjects.worker_ctl(action.service, replica)
        else:
            subject = subjects.worker_in(action.service, replica)
        await self._ctx.bus.publish(subject, message)

    # ------------------------------------------------------------------ writer

    def _enqueue(self, item: _Out) -> None:
        if self._closing:
            return  # nothing goes out after the close frame
        try:
            self._out.put_nowait(item)
        except asyncio.QueueFull:
            raise SlowClientError() from None

    def _enqueue_close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        try:
            self._out.put_nowait(_Close(code, reason))
        except asyncio.QueueFull:
            raise SlowClientError() from None
        self._closing = True

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self._out.get()
                if isinstance(item, _Close):
                    await self._ws.close(item.code, item.reason)
                    return
                if item.turn is not None and item.turn <= self._dropped_turn:
                    continue  # audio of a cancelled turn
                try:
                    async with asyncio.timeout(self._settings.send_timeout_s):
                        await self._ws.send(item.data)
                except TimeoutError:
                    raise SlowClientError() from None
                if item.turn is None:
                    continue
                now = time.monotonic()
                self._last_write = (item.turn, now)
                if item.pcm_bytes and self._core is not None:
                    self._core.audio_sent(item.turn, item.pcm_bytes)
                if item.speech_end_at is not None:
                    self._metrics.voice_to_voice.labels("gateway").observe(now - item.speech_end_at)
        except ConnectionClosed:
            return

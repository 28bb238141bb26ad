"""One call's conversation inside an LLM replica.

Per turn: ``LlmBegin``, one ``LlmDelta`` per generated piece, ``LlmEnd`` with the
whole text; then the exchange is added to the capped history. The generation of a
turn runs as a task owned by the session, so `handle` returns at once and the next
message (a newer turn, a close) is handled while the answer streams.

Cancelling (barge-in, or a newer turn) is synchronous and final: the turn's task is
cancelled, so nothing more is published for it; the engine is told to stop at its
next token; the user's words stay in the history, the partial answer does not (the
gateway knows what was actually heard). A turn that was cancelled before it was
even handled (the cancel travels ahead of data) is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.llm.chunks import Failed, Finished, TextPiece
from services.llm.metrics import LlmMetrics
from services.llm.prompt import (
    build_messages,
    cap_history,
    chat_request,
    conversation_only,
    effective_system_prompt,
    record_turn,
)
from services.llm.stream import StreamClosed, TokenStream
from shared.logs import SessionLogger
from shared.messages import (
    ChatMessage,
    ErrorCode,
    LlmBegin,
    LlmClose,
    LlmDelta,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    Message,
    ServiceError,
    ServiceName,
)
from shared.worker import Publish

log = logging.getLogger(__name__)

StartGeneration = Callable[[dict[str, Any], TokenStream], None]
"""Submit a request to the engine's threads; events arrive on the stream."""

_SERVICE = ServiceName.LLM.value


@dataclass(frozen=True)
class SessionOptions:
    ctx_per_session: int = 4096
    max_tokens_limit: int = 512
    prefill: bool = True
    close_grace_s: float = 30.0  # how long LlmClose lets a running answer finish
    budget_margin_tokens: int = 32  # room for template tokens the estimate misses


@dataclass
class _Generation:
    turn: int
    user_text: str
    task: asyncio.Task[None] | None = None
    stream: TokenStream | None = None
    settled: bool = False  # answered, failed or cancelled: the history already says so


class LlmSession:
    """Implements `shared.worker.SessionWorker` for one call."""

    def __init__(
        self,
        opened: LlmOpen,
        *,
        publish: Publish,
        start: StartGeneration,
        metrics: LlmMetrics,
        options: SessionOptions,
        slot: int | None,
        release_slot: Callable[[], None],
    ) -> None:
        self.sid = opened.sid
        self.slot = slot
        self._publish = publish
        self._start = start
        self._metrics = metrics
        self._options = options
        self._release_slot = release_slot
        self._system = effective_system_prompt(opened.system_prompt)
        self._temperature = opened.temperature
        self._max_history = opened.max_history
        self._max_tokens = min(opened.max_tokens, options.max_tokens_limit)
        self._budget_tokens = (
            options.ctx_per_session - self._max_tokens - options.budget_margin_tokens
        )
        self._history = cap_history(conversation_only(opened.history), opened.max_history)
        self._current: _Generation | None = None
        self._cancelled_upto: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._prefilled = asyncio.Event()
        self._closed = False
        self._log = SessionLogger(log, {"sid": self.sid})

    # ------------------------------------------------------------------ public

    @property
    def history(self) -> tuple[ChatMessage, ...]:
        return self._history

    def start_prefill(self) -> None:
        """Evaluate the system prompt (and any history) now, so turn one starts warm."""
        if self._options.prefill and self.slot is not None:
            self._spawn(self._prefill(), "prefill")
        else:
            self._prefilled.set()

    async def wait_prefilled(self) -> None:
        """Return once the prefill has finished (or was not needed); safe to cancel."""
        await self._prefilled.wait()

    async def handle(self, message: Message) -> None:
        match message:
            case LlmTurn():
                await self._begin_turn(message)
            case LlmClose():
                await self._finish_running()
            case _:
                self._log.warning("ignoring %s", message.type)

    def cancel(self, turn: int) -> None:
        """Stop ``turn`` and every earlier one; never blocks."""
        if self._cancelled_upto is None or turn > self._cancelled_upto:
            self._cancelled_upto = turn
        gen = self._current
        if gen is not None and gen.turn <= turn:
            self._abandon(gen)

    async def aclose(self) -> None:
        """Stop everything the session runs and give its slot back; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._current is not None:
            self._abandon(self._current)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        self._release_slot()

    # ------------------------------------------------------------------ turns

    async def _begin_turn(self, message: LlmTurn) -> None:
        if self._cancelled_upto is not None and message.turn <= self._cancelled_upto:
            self._log.info("turn %d was cancelled before it started", message.turn)
            self._metrics.turn_finished("skipped")
            return
        previous = self._current
        if previous is not None:
            self._abandon(previous)
            if previous.task is not None:
                # Its task ends at its next await; wait so turns never overlap.
                await asyncio.wait([previous.task])
        gen = _Generation(turn=message.turn, user_text=message.text)
        self._current = gen
        gen.task = self._spawn(self._run(gen), f"turn-{message.turn}")

    def _abandon(self, gen: _Generation) -> None:
        if self._current is gen:
            self._current = None
        if gen.stream is not None:
            gen.stream.stop()
        if gen.task is not None:
            gen.task.cancel()
        if not gen.settled:
            gen.settled = True
            self._history = record_turn(self._history, gen.user_text, None, self._max_history)
            self._metrics.turn_finished("cancelled")
            self._log.info("turn %d cancelled", gen.turn)

    async def _finish_running(self) -> None:
        gen = self._current
        if gen is None or gen.task is None:
            return
        _, pending = await asyncio.wait([gen.task], timeout=self._options.close_grace_s)
        if pending:
            self._abandon(gen)
            await asyncio.wait(pending)

    async def _run(self, gen: _Generation) -> None:
        started = time.monotonic()
        messages = build_messages(
            self._system, self._history, gen.user_text,
            max_history=self._max_history, budget_tokens=self._budget_tokens,
        )
        request = chat_request(
            messages, max_tokens=self._max_tokens, temperature=self._temperature, slot=self.slot
        )
        stream = self._new_stream()
        gen.stream = stream
        pieces: list[str] = []
        first_token_at: float | None = None
        finished: Finished | None = None
        try:
            await self._publish(LlmBegin(sid=self.sid, turn=gen.turn))
            self._start(request, stream)
            while True:
                event = await stream.next()
                match event:
                    case TextPiece(text=text):
                        if first_token_at is None:
                            first_token_at = time.monotonic()
                            self._metrics.ttft.labels(_SERVICE).observe(first_token_at - started)
                        await self._publish(
                            LlmDelta(sid=self.sid, turn=gen.turn, seq=len(pieces), text=text)
                        )
                        pieces.append(text)
                    case Finished():
                        finished = event
                    case Failed(code=code):
                        await self._fail(gen, code)
                        return
                    case StreamClosed():
                        break
        except Exception:  # noqa: BLE001 - logged; the peer gets a stable code, not a trace
            self._log.exception("turn %d failed", gen.turn)
            await self._fail(gen, "internal")
            return
        finally:
            stream.stop()
            if self._current is gen:
                self._current = None
        await self._complete(gen, "".join(pieces), started, first_token_at, finished)

    async def _complete(
        self,
        gen: _Generation,
        text: str,
        started: float,
        first_token_at: float | None,
        finished: Finished | None,
    ) -> None:
        now = time.monotonic()
        tokens = finished.tokens if finished and finished.tokens is not None else 0
        rate = finished.tokens_per_s if finished else None
        if rate is None and first_token_at is not None and now > first_token_at and tokens > 1:
            rate = (tokens - 1) / (now - first_token_at)
        if rate:
            self._metrics.tokens_per_second.labels(_SERVICE).observe(rate)
        self._metrics.tokens.labels(_SERVICE).inc(tokens)
        self._metrics.turn_finished("completed")
        gen.settled = True
        self._history = record_turn(self._history, gen.user_text, text, self._max_history)
        ttft_ms = 1000.0 * ((first_token_at or now) - started)
        await self._publish(
            LlmEnd(sid=self.sid, turn=gen.turn, text=text, ttft_ms=ttft_ms, tokens=tokens)
        )

    async def _fail(self, gen: _Generation, code: str) -> None:
        self._log.warning("turn %d: engine failed (%s)", gen.turn, code)
        gen.settled = True
        self._history = record_turn(self._history, gen.user_text, None, self._max_history)
        self._metrics.turn_finished("failed")
        self._metrics.errors.labels(_SERVICE, ErrorCode.ENGINE_FAILED.value).inc()
        await self._publish(
            ServiceError(
                sid=self.sid, service=ServiceName.LLM, code=ErrorCode.ENGINE_FAILED,
                message=f"llm engine failed: {code}", turn=gen.turn,
            )
        )

    # ------------------------------------------------------------------ prefill

    async def _prefill(self) -> None:
        started = time.monotonic()
        messages = build_messages(
            self._system, self._history, None,
            max_history=self._max_history, budget_tokens=self._budget_tokens,
        )
        # One token is the least the engine generates; the point is the cached prompt.
        request = chat_request(messages, max_tokens=1, temperature=0.0, slot=self.slot)
        stream = self._new_stream()
        try:
            self._start(request, stream)
            while True:
                event = await stream.next()
                if isinstance(event, Failed):
                    self._log.warning("prefill failed (%s)", event.code)
                elif isinstance(event, StreamClosed):
                    break
            self._metrics.prefill.labels(_SERVICE).observe(time.monotonic() - started)
            self._log.info("prefilled in %.2f s", time.monotonic() - started)
        except Exception:  # noqa: BLE001 - logged; prefill is an optimisation only
            # The turn that follows evaluates the prompt itself and reports any real failure.
            self._log.exception("prefill failed")
        finally:
            stream.stop()
            self._prefilled.set()

    # ------------------------------------------------------------------ helpers

    def _new_stream(self) -> TokenStream:
        return TokenStream(
            asyncio.get_running_loop(),
            on_coalesce=self._metrics.coalesced.labels(_SERVICE).inc,
        )

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            coro, name=f"llm-{self.sid}-{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

"""One call's conversation inside an LLM replica.

Per turn: the workers of the chain (``LlmWorkerEvent`` BEGIN, then END or ERROR each;
see `services.llm.chain`), then ``LlmBegin``, one ``LlmDelta`` per generated piece,
``LlmEnd`` with the whole text; then the exchange is added to the capped history. The
generation of a turn runs as a task owned by the session, so `handle` returns at once
and the next message (a newer turn, an edit, a close) is handled while it runs.

The session's templates are compiled when it opens: a bad one raises a
`ProtocolError`, which the replica runtime reports as ``bad_request``.

Cancelling (barge-in, or a newer turn) is synchronous and final: the turn's task and
its workers are cancelled, so nothing more is published for it but the workers'
``CANCELLED`` reports; the engine is told to stop at its next token; the user's words
stay in the history. The partial answer is kept only when the turn named an
``assistant_item_id``: the gateway then truncates it to what was heard with an
`LlmEdit`; without an id it is dropped. A turn that was cancelled before it was even
handled (the cancel travels ahead of data) is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from services.llm.chain import (
    WorkerOutputError,
    compile_conversation,
    main_system,
    main_user_content,
    turn_user_message,
)
from services.llm.chunks import Failed, Finished, TextPiece
from services.llm.metrics import LlmMetrics
from services.llm.prompt import (
    apply_edit,
    build_messages,
    cap_history,
    chat_request,
    continue_answer,
    conversation_only,
    record_turn,
)
from services.llm.promptlog import PromptLog, PromptRecord
from services.llm.stream import StreamClosed, TokenStream
from services.llm.templates import PromptTemplateError
from services.llm.workers import TurnInput, TurnWorkerDeps, TurnWorkers
from shared.logs import SessionLogger
from shared.messages import (
    ChatMessage,
    ErrorCode,
    LlmBegin,
    LlmClose,
    LlmDelta,
    LlmEdit,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    LlmUpdate,
    LlmWorkerEvent,
    Message,
    ServiceError,
    ServiceName,
    WorkerStatus,
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
    prompt_log: Path | None = None  # LLM_PROMPT_LOG: every rendered prompt, as JSON lines
    # The engine continues a final assistant message (llama.cpp does); a remote
    # OpenAI-compatible model is not known to, so a resumed answer starts over there.
    continues_answers: bool = True


@dataclass
class _Generation:
    turn: int
    user_text: str | None
    user_item_id: str = ""
    assistant_item_id: str = ""
    resume: str = ""  # the answer's start the client already has (failover)
    task: asyncio.Task[None] | None = None
    stream: TokenStream | None = None
    workers: TurnWorkers | None = None
    pieces: list[str] = field(default_factory=list)
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
        try:
            self._conversation = compile_conversation(
                opened.system_prompt, opened.prompt, opened.variables, opened.workers
            )
        except Exception:
            release_slot()  # the engine gave us a slot; nobody else would free it
            raise
        self._opened = opened
        self._model = opened.model
        self._variables: dict[str, JsonValue] = dict(opened.variables)
        self._temperature = opened.temperature
        self._max_history = opened.max_history
        self._set_max_tokens(opened.max_tokens)
        self._history = cap_history(conversation_only(opened.history), opened.max_history)
        self._prompt_log = PromptLog(options.prompt_log) if options.prompt_log else None
        self._worker_sets: list[TurnWorkers] = []
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
            case LlmEdit():
                self._edit(message)
            case LlmUpdate():
                await self._update(message)
            case LlmClose():
                await self._finish_running()
            case _:
                self._log.warning("ignoring %s", message.type)

    def cancel(self, turn: int) -> None:
        """Stop ``turn`` and every earlier one (and their workers); never blocks."""
        if self._cancelled_upto is None or turn > self._cancelled_upto:
            self._cancelled_upto = turn
        gen = self._current
        if gen is not None and gen.turn <= turn:
            self._abandon(gen)
        self._cancel_workers(upto=turn, report=True)

    async def aclose(self) -> None:
        """Stop everything the session runs and give its slot back; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._current is not None:
            self._abandon(self._current, report=False)
        for task in self._tasks:
            task.cancel()
        workers = self._worker_sets
        self._worker_sets = []
        for chain in workers:
            await chain.aclose()
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
        # A finished turn's non-blocking workers belong to a conversation that moved on.
        self._cancel_workers(upto=message.turn - 1, report=True)
        gen = _Generation(
            turn=message.turn,
            user_text=message.text,
            user_item_id=message.user_item_id,
            assistant_item_id=message.assistant_item_id,
            resume=self._resumable(message),
        )
        self._current = gen
        gen.task = self._spawn(self._run(gen), f"turn-{message.turn}")

    def _resumable(self, message: LlmTurn) -> str:
        if not message.resume or self._options.continues_answers:
            return message.resume
        self._log.warning(
            "turn %d: the model cannot continue an answer; it starts over", message.turn
        )
        return ""

    def _abandon(self, gen: _Generation, *, report: bool = True) -> None:
        if self._current is gen:
            self._current = None
        if gen.stream is not None:
            gen.stream.stop()
        if gen.task is not None:
            gen.task.cancel()
        if gen.workers is not None:
            self._cancel_chain(gen.workers, report=report)
        if not gen.settled:
            gen.settled = True
            # With an item id the gateway will truncate the answer to what was heard.
            partial = gen.resume + "".join(gen.pieces) if gen.assistant_item_id else None
            self._history = record_turn(
                self._history,
                gen.user_text,
                partial,
                self._max_history,
                user_item_id=gen.user_item_id,
                assistant_item_id=gen.assistant_item_id,
            )
            self._metrics.turn_finished("cancelled")
            self._log.info("turn %d cancelled", gen.turn)

    def _cancel_workers(self, *, upto: int, report: bool) -> None:
        for chain in self._worker_sets:
            if chain.turn <= upto:
                self._cancel_chain(chain, report=report)
        self._worker_sets = [c for c in self._worker_sets if c.running]

    def _cancel_chain(self, chain: TurnWorkers, *, report: bool) -> None:
        names = chain.cancel()
        if names and report and not self._closed:
            self._spawn(self._report_cancelled(chain.turn, names), f"cancelled-{chain.turn}")

    async def _report_cancelled(self, turn: int, names: list[str]) -> None:
        for name in names:
            await self._publish(
                LlmWorkerEvent(
                    sid=self.sid, turn=turn, variable_name=name, status=WorkerStatus.CANCELLED
                )
            )

    async def _finish_running(self) -> None:
        gen = self._current
        if gen is not None and gen.task is not None:
            _, pending = await asyncio.wait([gen.task], timeout=self._options.close_grace_s)
            if pending:
                self._abandon(gen)
                await asyncio.wait(pending)
        for chain in self._worker_sets:
            await chain.wait(self._options.close_grace_s)

    # ------------------------------------------------------------------ history, settings

    def _edit(self, edit: LlmEdit) -> None:
        self._history, found = apply_edit(
            self._history,
            edit.op,
            item_id=edit.item_id,
            content=edit.content,
            message=edit.message,
            max_history=self._max_history,
        )
        if not found:
            # Normal after a cancel without a partial answer, or once the cap dropped it.
            self._log.info("history %s of unknown item %r: nothing to do", edit.op, edit.item_id)

    async def _update(self, update: LlmUpdate) -> None:
        if update.system_prompt is not None:
            o = self._opened
            try:
                self._conversation = compile_conversation(
                    update.system_prompt, o.prompt, o.variables, o.workers
                )
            except PromptTemplateError as exc:
                await self._publish(
                    ServiceError(
                        sid=self.sid,
                        service=ServiceName.LLM,
                        code=ErrorCode.BAD_REQUEST,
                        message=str(exc),
                    )
                )
                return
        if update.temperature is not None:
            self._temperature = update.temperature
        if update.max_tokens is not None:
            self._set_max_tokens(update.max_tokens)

    def _set_max_tokens(self, max_tokens: int) -> None:
        self._max_tokens = min(max_tokens, self._options.max_tokens_limit)
        self._budget_tokens = (
            self._options.ctx_per_session - self._max_tokens - self._options.budget_margin_tokens
        )

    # ------------------------------------------------------------------ a turn

    async def _run_workers(self, gen: _Generation, user_message: str) -> dict[str, JsonValue]:
        workers = self._conversation.workers
        if not workers:
            return {}
        chain = TurnWorkers(
            workers,
            TurnInput(
                sid=self.sid,
                turn=gen.turn,
                history=self._history,
                user_message=user_message,
                variables=self._variables,
                model=self._model,
            ),
            TurnWorkerDeps(
                publish=self._publish,
                generate=self._generate_text,
                metrics=self._metrics,
                prompt_log=self._prompt_log,
            ),
        )
        gen.workers = chain
        self._worker_sets.append(chain)
        await chain.start()
        return await chain.blocking_results()

    def _main_messages(
        self, gen: _Generation, user_message: str, results: dict[str, JsonValue]
    ) -> list[dict[str, str]]:
        c = self._conversation
        system = main_system(c, self._history, user_message, self._variables, results)
        user = None
        if gen.user_text is not None:
            user = main_user_content(c, self._history, user_message, self._variables, results)
        messages = build_messages(
            system,
            self._history,
            user,
            max_history=self._max_history,
            budget_tokens=self._budget_tokens,
        )
        return continue_answer(messages, gen.resume)

    async def _generate_text(self, request: dict[str, Any]) -> str:
        """A whole (worker) generation's text; cancelling stops the engine."""
        stream = self._new_stream()
        pieces: list[str] = []
        try:
            self._start(request, stream)
            while True:
                event = await stream.next()
                match event:
                    case TextPiece(text=text):
                        pieces.append(text)
                    case Failed(code=code):
                        raise WorkerOutputError(f"llm engine failed: {code}")
                    case StreamClosed():
                        return "".join(pieces)
                    case Finished():
                        pass
        finally:
            stream.stop()

    async def _run(self, gen: _Generation) -> None:
        started = time.monotonic()
        user_message = turn_user_message(self._history, gen.user_text)
        try:
            results = await self._run_workers(gen, user_message)
            messages = await asyncio.to_thread(self._main_messages, gen, user_message, results)
        except PromptTemplateError as exc:
            await self._fail(gen, "template", code=ErrorCode.BAD_REQUEST, message=str(exc))
            return
        request = chat_request(
            messages,
            max_tokens=self._max_tokens,
            temperature=self._temperature,
            slot=self.slot,
            model=self._model,
        )
        if self._prompt_log is not None:
            await self._prompt_log.write(
                PromptRecord(self.sid, gen.turn, "main", self._model, messages)
            )
        stream = self._new_stream()
        gen.stream = stream
        pieces = gen.pieces
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
        await self._complete(gen, gen.resume + "".join(pieces), started, first_token_at, finished)

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
        self._history = record_turn(
            self._history,
            gen.user_text,
            text,
            self._max_history,
            user_item_id=gen.user_item_id,
            assistant_item_id=gen.assistant_item_id,
        )
        ttft_ms = 1000.0 * ((first_token_at or now) - started)
        await self._publish(
            LlmEnd(sid=self.sid, turn=gen.turn, text=text, ttft_ms=ttft_ms, tokens=tokens)
        )

    async def _fail(
        self,
        gen: _Generation,
        reason: str,
        *,
        code: ErrorCode = ErrorCode.ENGINE_FAILED,
        message: str = "",
    ) -> None:
        self._log.warning("turn %d failed (%s)", gen.turn, message or reason)
        gen.settled = True
        self._history = record_turn(
            self._history,
            gen.user_text,
            None,
            self._max_history,
            user_item_id=gen.user_item_id,
        )
        if self._current is gen:
            self._current = None
        self._metrics.turn_finished("failed")
        self._metrics.errors.labels(_SERVICE, code.value).inc()
        await self._publish(
            ServiceError(
                sid=self.sid,
                service=ServiceName.LLM,
                code=code,
                message=message or f"llm engine failed: {reason}",
                turn=gen.turn,
            )
        )

    # ------------------------------------------------------------------ prefill

    async def _prefill(self) -> None:
        started = time.monotonic()
        try:
            system = await asyncio.to_thread(
                main_system, self._conversation, self._history, "", self._variables, {}
            )
        except PromptTemplateError as exc:
            # The first turn reports it; a prefill has nobody to tell.
            self._log.info("no prefill: %s", exc)
            self._prefilled.set()
            return
        messages = build_messages(
            system,
            self._history,
            None,
            max_history=self._max_history,
            budget_tokens=self._budget_tokens,
        )
        # One token is the least the engine generates; the point is the cached prompt.
        request = chat_request(
            messages, max_tokens=1, temperature=0.0, slot=self.slot, model=self._model
        )
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

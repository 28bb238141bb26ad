"""The workers of one turn: started together, reported, cancelled together.

`TurnWorkers` owns one task per worker. Each renders its worker's messages (in a
thread: rendering is bounded but CPU work), runs the request on the engine through the
injected ``generate``, parses the output (`chain.parse_output`) and publishes
``END`` with the result or ``ERROR`` with the reason. ``BEGIN`` for every worker is
published before any of them starts, so the client sees the chain in spec order.

`cancel` is synchronous like the session's own cancel: the tasks are cancelled (the
engine stops at its next token because ``generate`` stops its stream when cancelled)
and the names of the workers that had not finished are returned, for the session to
report as ``CANCELLED``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue

from services.llm.chain import (
    CompiledWorker,
    WorkerOutputError,
    parse_output,
    result_text,
    worker_messages,
)
from services.llm.metrics import LlmMetrics
from services.llm.prompt import chat_request
from services.llm.promptlog import PromptLog, PromptRecord
from services.llm.templates import PromptTemplateError
from shared.logs import SessionLogger
from shared.messages import ChatMessage, LlmWorkerEvent, WorkerStatus
from shared.worker import Publish

log = logging.getLogger(__name__)

Generate = Callable[[dict[str, Any]], Awaitable[str]]
"""Run a request to its end and return the text; `WorkerOutputError` if the engine failed."""


@dataclass(frozen=True)
class TurnInput:
    """What every worker of a turn sees."""

    sid: str
    turn: int
    history: tuple[ChatMessage, ...]
    user_message: str
    variables: dict[str, JsonValue]
    model: str | None  # the main model, for workers that name none


@dataclass(frozen=True)
class TurnWorkerDeps:
    publish: Publish
    generate: Generate
    metrics: LlmMetrics
    prompt_log: PromptLog | None = None


class TurnWorkers:
    """Implements the worker part of one turn."""

    def __init__(
        self, workers: Sequence[CompiledWorker], turn: TurnInput, deps: TurnWorkerDeps
    ) -> None:
        self._workers = tuple(workers)
        self._turn = turn
        self._deps = deps
        self._tasks: dict[str, asyncio.Task[JsonValue | None]] = {}
        self._cancelled: set[str] = set()
        self._log = SessionLogger(log, {"sid": turn.sid})

    @property
    def turn(self) -> int:
        return self._turn.turn

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks.values())

    async def start(self) -> None:
        """Report every worker's ``BEGIN``, then start them all."""
        for worker in self._workers:
            await self._report(worker.name, WorkerStatus.BEGIN)
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            self._tasks[worker.name] = loop.create_task(
                self._run(worker), name=f"llm-{self._turn.sid}-worker-{worker.name}"
            )

    async def blocking_results(self) -> dict[str, JsonValue]:
        """Wait for the blocking workers; the results of those that succeeded."""
        blocking = {w.name: self._tasks[w.name] for w in self._workers if w.spec.blocking}
        if blocking:
            await asyncio.wait(blocking.values())
        results: dict[str, JsonValue] = {}
        for name, task in blocking.items():
            if not task.cancelled() and task.exception() is None:
                value = task.result()
                if value is not None:
                    results[name] = value
        return results

    async def wait(self, timeout_s: float) -> None:
        """Let the running workers finish for up to ``timeout_s`` (a closing session)."""
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    def cancel(self) -> list[str]:
        """Cancel the unfinished workers; their names, for ``CANCELLED`` reports."""
        cancelled = []
        for name, task in self._tasks.items():
            # A cancelled task is not done until it runs again: count each one once.
            if not task.done() and name not in self._cancelled:
                task.cancel()
                self._cancelled.add(name)
                cancelled.append(name)
                self._deps.metrics.worker_finished("cancelled")
        return cancelled

    async def aclose(self) -> None:
        """Cancel and wait for every worker task; idempotent."""
        self.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()))

    # ------------------------------------------------------------------ one worker

    async def _run(self, worker: CompiledWorker) -> JsonValue | None:
        started = time.monotonic()
        t = self._turn
        try:
            messages = await asyncio.to_thread(
                worker_messages, worker, t.history, t.user_message, t.variables
            )
            model = worker.spec.model or t.model
            request = chat_request(
                messages,
                max_tokens=worker.spec.max_tokens,
                temperature=worker.spec.temperature,
                slot=None,
                model=model,
            )
            if self._deps.prompt_log is not None:
                await self._deps.prompt_log.write(
                    PromptRecord(t.sid, t.turn, worker.name, model, messages)
                )
            text = await self._deps.generate(request)
            value = parse_output(worker, text)
        except (PromptTemplateError, WorkerOutputError) as exc:
            self._log.info("turn %d: worker %s failed: %s", t.turn, worker.name, exc)
            self._deps.metrics.worker_finished("error")
            await self._report(worker.name, WorkerStatus.ERROR, message=str(exc))
            return None
        except Exception:  # noqa: BLE001 - logged; the client gets a stable message
            self._log.exception("turn %d: worker %s failed", t.turn, worker.name)
            self._deps.metrics.worker_finished("error")
            await self._report(worker.name, WorkerStatus.ERROR, message="internal error")
            return None
        self._deps.metrics.worker_seconds.labels("llm").observe(time.monotonic() - started)
        self._deps.metrics.worker_finished("completed")
        await self._report(worker.name, WorkerStatus.END, result=result_text(value))
        return value

    async def _report(
        self, name: str, status: WorkerStatus, *, result: str | None = None, message: str = ""
    ) -> None:
        await self._deps.publish(
            LlmWorkerEvent(
                sid=self._turn.sid,
                turn=self._turn.turn,
                variable_name=name,
                status=status,
                result=result,
                message=message,
            )
        )

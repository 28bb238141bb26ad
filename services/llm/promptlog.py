"""An optional record of every prompt a model was given (``LLM_PROMPT_LOG=<path>``).

One JSON line per generation: the session, turn, which model call (``main`` or a
worker's variable name), the model name and the rendered messages. It exists to debug
prompt templates and worker chains; it holds what callers said, so it is off by default
and an operator turns it on knowingly (and rotates the file like any other log).
Lines are appended from a thread, one ``write`` each, so they never interleave.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PromptRecord:
    sid: str
    turn: int
    stage: str  # "main" or a worker's variable name
    model: str | None
    messages: list[dict[str, str]]


class PromptLog:
    """Appends `PromptRecord`s to one file as JSON lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    async def write(self, record: PromptRecord) -> None:
        line = json.dumps(
            {
                "ts": time.time(),
                "sid": record.sid,
                "turn": record.turn,
                "stage": record.stage,
                "model": record.model,
                "messages": record.messages,
            },
            ensure_ascii=False,
        )
        await asyncio.to_thread(self._append, line + "\n")

    def _append(self, line: str) -> None:
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)

"""One call's TTS state: its voice, its current turn, what was cancelled.

Turn rules:

* the first `TtsText` of a turn publishes `TtsBegin` and starts a `TurnSynthesis`;
* text of a newer turn cancels an unfinished older one (the LLM moved on);
* `cancel(turn)` stops every turn up to ``turn`` at once, and text that still arrives
  for those turns is dropped;
* `TtsClose` lets a turn whose final text arrived finish (bounded), then the runtime
  closes the session.

Turn tasks are owned here: `aclose` cancels and awaits every one still running.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.tts.metrics import TtsMetrics
from services.tts.turn import Publish, Synthesize, TurnOptions, TurnSynthesis
from services.tts.voices import Voice, resolve_voice
from shared.logs import SessionLogger
from shared.messages import Message, TtsBegin, TtsClose, TtsText

_log = logging.getLogger(__name__)


class TtsSession:
    """`shared.worker.SessionWorker` for TTS."""

    def __init__(
        self,
        sid: str,
        voice: Voice | None,
        synthesize: Synthesize,
        publish: Publish,
        options: TurnOptions,
        metrics: TtsMetrics,
        *,
        close_drain_s: float = 30.0,
    ) -> None:
        self.sid = sid
        self._voice = voice
        self._synthesize = synthesize
        self._publish = publish
        self._options = options
        self._metrics = metrics
        self._close_drain_s = close_drain_s
        self._log = SessionLogger(_log, {"sid": sid})
        self._turn: TurnSynthesis | None = None
        self._retired: set[TurnSynthesis] = set()  # cancelled turns still unwinding
        self._cancelled_upto = -1

    @property
    def voice(self) -> Voice | None:
        """The voice of the next turn (``None``: chosen by each segment's language)."""
        return self._voice

    def set_voice(self, name: str | None) -> None:
        """Change the voice from the next turn on; raises `UnknownVoiceError`."""
        self._voice = resolve_voice(name)

    @property
    def current_turn(self) -> TurnSynthesis | None:
        return self._turn

    async def handle(self, message: Message) -> None:
        if isinstance(message, TtsText):
            await self._on_text(message)
        elif isinstance(message, TtsClose):
            await self._finish()
        else:
            self._log.debug("ignoring %s", message.type)

    def cancel(self, turn: int) -> None:
        self._cancelled_upto = max(self._cancelled_upto, turn)
        current = self._turn
        if current is not None and current.turn <= turn:
            self._retire(current)
            self._turn = None
            self._log.info("turn %d cancelled", current.turn)

    async def aclose(self) -> None:
        if self._turn is not None:
            self._retire(self._turn)
            self._turn = None
        tasks = [t.task for t in self._retired]
        if tasks:
            await asyncio.wait(tasks)
        self._retired.clear()

    # ------------------------------------------------------------------ internals

    async def _on_text(self, message: TtsText) -> None:
        if message.turn <= self._cancelled_upto:
            return  # the rest of a turn that was cancelled
        current = self._turn
        if current is not None and message.turn < current.turn:
            return  # late text of a turn a newer one replaced
        if current is None or message.turn > current.turn:
            received = time.monotonic()
            if current is not None:
                if not current.finished:
                    self._log.info(
                        "turn %d replaces unfinished turn %d", message.turn, current.turn
                    )
                # Past its TtsEnd a turn publishes nothing more: cancelling it is harmless
                # and keeps its task owned until it is gone.
                self._retire(current)
            current = TurnSynthesis(
                self.sid,
                message.turn,
                self._voice,
                self._synthesize,
                self._publish,
                self._options,
                self._metrics,
                self._log,
                started_at=received,
            )
            self._turn = current
            # Started before TtsBegin goes out so that a cancel arriving during that
            # publish has a task to cancel; the task has no text to speak until below.
            current.start()
            await self._publish(TtsBegin(sid=self.sid, turn=message.turn))
        await current.add_text(message.text, message.final)

    def _retire(self, turn: TurnSynthesis) -> None:
        turn.cancel()
        self._retired = {t for t in self._retired if not t.done}
        self._retired.add(turn)

    async def _finish(self) -> None:
        """Close: speak out a turn whose text is complete, drop one that is not."""
        current = self._turn
        if current is None or current.finished:
            return
        if current.final_received:
            _done, pending = await asyncio.wait([current.task], timeout=self._close_drain_s)
            if not pending:
                return
            self._log.warning("turn %d still speaking at close; cancelled", current.turn)
        self._retire(current)
        self._turn = None

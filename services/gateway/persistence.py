"""Session state written as the call goes, so another gateway replica can resume it.

Nothing but the socket lives in a gateway process: a call's configuration, turn number
and conversation history are in the `SessionStore` (NATS JetStream KV). This module
decides what to write from the call core's actions (`history_writes`, sans-I/O) and
writes it from one task per call (`CallPersistence`), through a bounded queue, so a
slow store never holds up audio. Writes keep their order: one writer per call.

What the history keeps mirrors what the LLM replica keeps (`services.llm.prompt`): the
user's words when a turn starts (`LlmTurn`), the answer when it ends (`LlmEnd`), every
`LlmEdit` the LLM is sent (barge-in truncation to what was heard, client deletions).
A cancelled answer enters as what the user heard of it, or not at all.

Resume: `resumed_options` rebuilds a call's options from its stored configuration and
`with_history` gives the new LLM session the stored conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from websockets.frames import CloseCode

from services.gateway.call import Action, CallOptions, Emit, Publish, TurnCancelled
from shared.errors import BusError, StateConflictError
from shared.logs import SessionLogger
from shared.messages import (
    ChatMessage,
    ErrorCode,
    LlmEdit,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    LlmUpdate,
    TtsUpdate,
)
from shared.state import SessionConfig, SessionRecord, SessionStore

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- sans-I/O


@dataclass(frozen=True)
class Append:
    messages: tuple[ChatMessage, ...]


@dataclass(frozen=True)
class Edit:
    edit: LlmEdit


@dataclass(frozen=True)
class SetTurn:
    turn: int


@dataclass(frozen=True)
class Settings:
    """Mid-call setting changes (``None``: unchanged)."""

    system_prompt: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    voice: str | None = None


Write = Append | Edit | SetTurn | Settings


class HistoryTracker:
    """Turns the core's actions into store writes; remembers which answers were stored."""

    def __init__(self) -> None:
        self._answer_items: dict[int, str] = {}  # turn -> assistant item id, until stored

    def writes(self, actions: Sequence[Action]) -> list[Write]:
        out: list[Write] = []
        for action in actions:
            if isinstance(action, Publish):
                out += self._published(action)
            elif isinstance(action, Emit):
                out += self._emitted(action)
        return out

    def _published(self, action: Publish) -> list[Write]:
        match action.message:
            case LlmTurn() as turn:
                self._answer_items[turn.turn] = turn.assistant_item_id
                # Only the latest turn can still end; older ones were cancelled or failed.
                for old in [t for t in self._answer_items if t < turn.turn]:
                    del self._answer_items[old]
                writes: list[Write] = [SetTurn(turn.turn)]
                if turn.text is not None:
                    user = ChatMessage(role="user", content=turn.text, item_id=turn.user_item_id)
                    writes.insert(0, Append((user,)))
                return writes
            case LlmEdit() as edit:
                return [Edit(edit)]
            case LlmUpdate() as update:
                return [Settings(update.system_prompt, update.temperature, update.max_tokens)]
            case TtsUpdate() as update:
                return [Settings(voice=update.voice)] if update.voice is not None else []
            case _:
                return []

    def _emitted(self, action: Emit) -> list[Write]:
        event = action.event
        if isinstance(event, LlmEnd):
            item = self._answer_items.pop(event.turn, None)
            if item is None or not event.text:
                return []
            return [Append((ChatMessage(role="assistant", content=event.text, item_id=item),))]
        if isinstance(event, TurnCancelled):
            # Cancelled before the LLM finished: nothing of it is stored yet. What the user
            # heard enters (the truncation that follows then finds it); nothing heard, nothing.
            item = self._answer_items.pop(event.turn, None)
            if item is None or not event.heard_text:
                return []
            message = ChatMessage(role="assistant", content=event.heard_text, item_id=item)
            return [Append((message,))]
        return []


def session_config(options: CallOptions) -> SessionConfig:
    """What a replica needs to resume the call with the same settings."""
    return SessionConfig(
        answer=options.answer,
        voice=options.voice,
        language=options.language,
        asr_model=options.asr_model,
        llm_model=options.llm_model,
        tts_model=options.tts_model,
        system_prompt=options.system_prompt,
        prompt=options.prompt,
        variables=dict(options.variables),
        workers=options.workers,
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        client_rate=options.client_rate,
        tts_rate=options.tts_rate,
    )


def resumed_options(options: CallOptions, config: SessionConfig) -> CallOptions:
    """``options`` (what the reconnecting client asked for) with the stored session's
    conversation settings: the persona, voice, models and prompts stay those of the call."""
    return dataclasses.replace(
        options,
        answer=config.answer,
        voice=config.voice,
        language=config.language,
        asr_model=config.asr_model,
        llm_model=config.llm_model,
        tts_model=config.tts_model,
        system_prompt=config.system_prompt,
        prompt=config.prompt,
        variables=dict(config.variables),
        workers=config.workers,
        temperature=config.temperature,
        max_tokens=config.max_tokens,
        tts_rate=config.tts_rate,
    )


def with_history(actions: list[Action], history: tuple[ChatMessage, ...]) -> list[Action]:
    """The core's opening actions, the LLM session opened with ``history``."""
    if not history:
        return actions
    out: list[Action] = []
    for action in actions:
        if isinstance(action, Publish) and isinstance(action.message, LlmOpen):
            action = dataclasses.replace(
                action, message=action.message.model_copy(update={"history": history})
            )
        out.append(action)
    return out


def _with_settings(config: SessionConfig, change: Settings) -> SessionConfig:
    updates: dict[str, object] = {}
    if change.system_prompt is not None:
        updates["system_prompt"] = change.system_prompt
    if change.temperature is not None:
        updates["temperature"] = change.temperature
    if change.max_tokens is not None:
        updates["max_tokens"] = change.max_tokens
    if change.voice is not None:
        updates["voice"] = change.voice
    return config.model_copy(update=updates)


# --------------------------------------------------------------------------- I/O


class CallPersistence:
    """Writes one call's state from its own task; `aclose` flushes and detaches.

    A write that fails (store unreachable, lost ownership) is logged and skipped: the
    call goes on, only a later resume would miss it. A full queue (the store far behind
    the call) drops the write the same way, so audio is never held up.
    """

    def __init__(
        self,
        store: SessionStore,
        sid: str,
        *,
        owner: str,
        logger: SessionLogger,
        queue_size: int = 256,
    ) -> None:
        self.sid = sid
        self._store = store
        self._owner = owner
        self._log = logger
        self._tracker = HistoryTracker()
        self._queue: asyncio.Queue[Write | None] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self.failed_writes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"persist-{self.sid}")

    def observe(self, actions: Sequence[Action]) -> None:
        """Queue what ``actions`` change in the session's state; never blocks."""
        for write in self._tracker.writes(actions):
            try:
                self._queue.put_nowait(write)
            except asyncio.QueueFull:
                self.failed_writes += 1
                self._log.warning(
                    "session store far behind: a %s was dropped", type(write).__name__
                )

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Write what is queued (within ``timeout_s``), then detach the session so it can
        be resumed for the grace period. Safe to call twice."""
        task, self._task = self._task, None
        if task is None:
            return
        try:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            self._log.warning("session state not fully written within %.1f s", timeout_s)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            async with asyncio.timeout(timeout_s):
                if not await self._store.detach(self.sid, owner=self._owner):
                    self._log.info("session already resumed elsewhere: not detached")
        except (TimeoutError, BusError) as exc:
            self._log.warning("could not detach the session: %s", exc)

    async def _run(self) -> None:
        # Between writes, renew the TTLs well before they lapse (a long silence).
        idle_s = self._store.options.live_ttl_s / 3
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    write = await self._queue.get()
            except TimeoutError:
                await self._touch()
                continue
            if write is None:
                return
            try:
                await self._write(write)
            except (BusError, ValueError) as exc:
                self.failed_writes += 1
                self._log.warning("session state write failed: %s", exc)

    async def _touch(self) -> None:
        try:
            if await self._store.touch(self.sid, owner=self._owner) is None:
                self._log.warning("session no longer owned here (resumed elsewhere?)")
        except BusError as exc:
            self._log.warning("session keep-alive failed: %s", exc)

    async def _write(self, write: Write) -> None:
        store, sid = self._store, self.sid
        match write:
            case Append():
                await store.append(sid, *write.messages)
            case Edit():
                # A resumed call's service sessions have an id of their own (`service_sid`).
                await store.apply(write.edit.model_copy(update={"sid": sid}))
            case SetTurn():
                turn = write.turn
                await store.modify(
                    sid, lambda r: r.model_copy(update={"turn": turn}) if r.turn != turn else None
                )
            case Settings():
                change = write
                await store.modify(
                    sid, lambda r: r.model_copy(update={"config": _with_settings(r.config, change)})
                )


async def open_session(
    store: SessionStore,
    options: CallOptions,
    *,
    key_id: str,
    protocol: str,
    owner: str,
) -> None:
    """Record a new call; `StateConflictError` if its session id is taken."""
    record = SessionRecord(
        sid=options.sid,
        key_id=key_id,
        protocol=protocol,
        owner=owner,
        config=session_config(options),
    )
    await store.create(record)


@dataclass(frozen=True)
class Resumed:
    options: CallOptions
    history: tuple[ChatMessage, ...]
    turn: int


async def resume_session(
    store: SessionStore, options: CallOptions, *, key_id: str, owner: str
) -> Resumed | None:
    """Take over session ``options.sid``; ``None`` if it is unknown to ``key_id`` (never
    existed, expired, or another key's: the client cannot tell which)."""
    claimed = await store.claim(options.sid, owner=owner, key_id=key_id)
    if claimed is None:
        return None
    history = await store.history(options.sid)
    return Resumed(
        resumed_options(options, claimed.value.config),
        history.value.items,
        claimed.value.turn,
    )


# --------------------------------------------------------------------------- call start


def service_sid(session: str) -> str:
    """The id a resumed call's ASR/LLM/TTS sessions get: never the one before.

    The replicas of a gateway that died still hold its sessions under the old id until
    their idle timeout, and a worker keeps the first of two opens of one id; a new id
    gives the resumed call fresh sessions, opened with the stored history.
    """
    return f"{session}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class StateOpened:
    options: CallOptions  # a resumed call: with its stored settings
    history: tuple[ChatMessage, ...]  # a resumed call's conversation so far
    persistence: CallPersistence | None  # None: no session store configured


@dataclass(frozen=True)
class StateRefused:
    code: ErrorCode
    message: str
    close_code: int
    reason: str


async def open_state(
    store: SessionStore | None,
    options: CallOptions,
    *,
    resume: bool,
    key_id: str,
    protocol: str,
    owner: str,
    logger: SessionLogger,
) -> StateOpened | StateRefused:
    """At call start: record the new session, or take over the one the client resumes."""
    if store is None:
        if resume:
            return StateRefused(
                ErrorCode.BAD_REQUEST,
                f"unknown session {options.sid!r}: this gateway keeps no session state",
                CloseCode.NORMAL_CLOSURE,
                "unknown session",
            )
        return StateOpened(options, (), None)
    history: tuple[ChatMessage, ...] = ()
    session = options.sid  # the client's session id: the key in the store
    try:
        if resume:
            resumed = await resume_session(store, options, key_id=key_id, owner=owner)
            if resumed is None:
                return StateRefused(
                    ErrorCode.BAD_REQUEST,
                    f"unknown session {options.sid!r} (ended more than the grace period ago?)",
                    CloseCode.NORMAL_CLOSURE,
                    "unknown session",
                )
            options = dataclasses.replace(resumed.options, sid=service_sid(options.sid))
            history = resumed.history
            logger.info("session resumed: %d history item(s), turn %d", len(history), resumed.turn)
        else:
            await open_session(store, options, key_id=key_id, protocol=protocol, owner=owner)
    except ValueError as exc:  # an id the store cannot key (adapters check theirs first)
        return StateRefused(
            ErrorCode.BAD_REQUEST, str(exc), CloseCode.NORMAL_CLOSURE, "invalid session id"
        )
    except StateConflictError:
        return StateRefused(
            ErrorCode.BAD_REQUEST,
            f"session id {options.sid!r} is in use",
            CloseCode.NORMAL_CLOSURE,
            "session id in use",
        )
    except BusError as exc:
        logger.warning("session store unavailable: %s", exc)
        return StateRefused(
            ErrorCode.INTERNAL,
            "the session store is unavailable",
            CloseCode.TRY_AGAIN_LATER,
            "session store unavailable",
        )
    persistence = CallPersistence(store, session, owner=owner, logger=logger)
    persistence.start()
    return StateOpened(options, history, persistence)

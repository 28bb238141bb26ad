"""Session state in NATS JetStream: records and histories, written as the call goes.

Two KV buckets (file storage, so they survive a NATS restart), one key per session in each:

* ``voice_sessions``: the `SessionRecord` (owner, config, turn);
* ``voice_history``: the `History`, a single bounded document per session.

History is a KV document rather than a stream with a subject per session because its
edits are not all appends: a barge-in truncates an entry to what was heard, clients delete
items. On a stream those would be extra messages every reader must replay and a history
could not be bounded without purges; as one document every edit is a read-modify-write
guarded by compare-and-set, a resume reads it with one request, and the bound is enforced
on every write. The cost, rewriting up to ``max_bytes`` per edit, is a few edits per turn.

Every write carries a per-key TTL, so nothing outlives its call even if every gateway
replica dies: ``live_ttl_s`` while a gateway owns the call (its writes, or `touch`,
refresh it), ``grace_s`` once the call is detached (connection lost or call ended), after
which a client can no longer resume it. Resuming (`claim`) on any replica is a
compare-and-set of the owner: the latest claim wins, and a previous owner still writing
learns it from `StateConflictError`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar, assert_never

from nats.aio.client import Client as NatsClient

from shared.errors import StateConflictError
from shared.messages import ChatMessage, HistoryOp, LlmEdit
from shared.state.kv import CasBucket
from shared.state.models import (
    History,
    HistoryLimits,
    SessionRecord,
    StateModel,
    append_items,
    decode_state,
    delete_item,
    encode_state,
    truncate_item,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=StateModel)

_SID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# A record is small; this leaves room for long prompts, workers and variables.
MAX_RECORD_BYTES = 256 * 1024


@dataclass(frozen=True)
class StateOptions:
    """Bucket names, TTLs (whole seconds on the wire) and bounds."""

    sessions_bucket: str = "voice_sessions"
    history_bucket: str = "voice_history"
    grace_s: float = 60.0  # a detached session can be resumed this long
    live_ttl_s: float = 300.0  # an owned session's writes must come at least this often
    marker_ttl_s: float = 60.0  # how long an expired or purged key stays visible as such
    history: HistoryLimits = field(default_factory=HistoryLimits)
    replicas: int = 1  # JetStream replicas of each bucket (3 on a NATS cluster)
    timeout_s: float = 2.0  # per JetStream request
    cas_attempts: int = 8  # read-modify-write attempts before giving up on a contended key


@dataclass(frozen=True)
class Stored(Generic[T]):
    """A document and the revision it was read or written at (0: never written)."""

    value: T
    revision: int


def _check_sid(sid: str) -> str:
    if not _SID.match(sid):
        raise ValueError(f"invalid session id {sid!r}")
    return sid


class SessionStore:
    """Session records and histories of every call; shared by all gateway replicas.

    Coroutines translate NATS failures into `BusError` and lost races into
    `StateConflictError`. Cancelling one is safe: a write either happened or not.
    """

    def __init__(
        self,
        sessions: CasBucket,
        history: CasBucket,
        options: StateOptions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sessions = sessions
        self._history = history
        self.options = options
        self._clock = clock

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        options: StateOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> SessionStore:
        """Create the buckets if needed (idempotent, any replica may do it)."""
        o = options or StateOptions()
        js = nc.jetstream(timeout=o.timeout_s)
        sessions = await CasBucket.open(
            js,
            o.sessions_bucket,
            max_value_bytes=MAX_RECORD_BYTES,
            marker_ttl_s=o.marker_ttl_s,
            replicas=o.replicas,
            description="voice call session records",
        )
        history = await CasBucket.open(
            js,
            o.history_bucket,
            # The encoded bound plus the envelope of the History document itself.
            max_value_bytes=o.history.max_bytes + 1024,
            marker_ttl_s=o.marker_ttl_s,
            replicas=o.replicas,
            description="voice call conversation histories",
        )
        return cls(sessions, history, o, clock)

    def _ttl(self, record: SessionRecord) -> float:
        return self.options.live_ttl_s if record.attached else self.options.grace_s

    # ------------------------------------------------------------------ records

    async def create(self, record: SessionRecord) -> Stored[SessionRecord]:
        """Store a new call's record; `StateConflictError` if the session id is taken."""
        sid = _check_sid(record.sid)
        now = self._clock()
        record = record.model_copy(update={"created_at": now, "updated_at": now})
        revision = await self._sessions.create(sid, encode_state(record), ttl_s=self._ttl(record))
        return Stored(record, revision)

    async def get(self, sid: str) -> Stored[SessionRecord] | None:
        """The record, or ``None`` if there is none (never created, ended or expired)."""
        entry = await self._sessions.get(_check_sid(sid))
        if entry is None:
            return None
        return Stored(decode_state(SessionRecord, entry.value), entry.revision)

    async def update(self, record: SessionRecord, *, last: int) -> Stored[SessionRecord]:
        """Write ``record`` if the stored one is still at revision ``last``.

        The TTL follows the record: live while it has an owner, the grace period once not.
        """
        sid = _check_sid(record.sid)
        record = record.model_copy(update={"updated_at": self._clock()})
        revision = await self._sessions.write(
            sid, encode_state(record), last=last, ttl_s=self._ttl(record)
        )
        return Stored(record, revision)

    async def modify(
        self, sid: str, change: Callable[[SessionRecord], SessionRecord | None]
    ) -> Stored[SessionRecord] | None:
        """Apply ``change`` to the latest record, retrying on conflicts.

        ``change`` returns the new record, or ``None`` to leave it alone (then the current
        one is returned). ``None`` if there is no record.
        """
        for _ in range(self.options.cas_attempts):
            current = await self.get(sid)
            if current is None:
                return None
            changed = change(current.value)
            if changed is None:
                return current
            try:
                return await self.update(changed, last=current.revision)
            except StateConflictError:
                continue
        raise StateConflictError(f"{self._sessions.bucket}/{sid}", -1)

    async def claim(self, sid: str, *, owner: str, key_id: str) -> Stored[SessionRecord] | None:
        """Resume: make ``owner`` the session's gateway and renew its TTLs.

        ``None`` if the session does not exist (any more) or was started with another key
        (the caller says "unknown session" either way: no probing of other keys' ids).
        """
        mismatch = False

        def take(record: SessionRecord) -> SessionRecord | None:
            nonlocal mismatch
            if record.key_id != key_id:
                mismatch = True
                return None
            return record.model_copy(update={"owner": owner, "detached_at": None})

        claimed = await self.modify(sid, take)
        if claimed is None or mismatch:
            return None
        await self._rewrite_history(sid, self.options.live_ttl_s)
        return claimed

    async def touch(self, sid: str, *, owner: str) -> Stored[SessionRecord] | None:
        """Renew an owned session's TTLs (a heartbeat between turns); ``None`` if the
        session is gone or ``owner`` no longer owns it."""
        lost = False

        def renew(record: SessionRecord) -> SessionRecord | None:
            nonlocal lost
            if record.owner != owner:
                lost = True
                return None
            return record

        renewed = await self.modify(sid, renew)
        if renewed is None or lost:
            return None
        await self._rewrite_history(sid, self.options.live_ttl_s)
        return renewed

    async def detach(self, sid: str, *, owner: str) -> bool:
        """The connection is gone: keep the session for the grace period, then let it
        expire. False if ``owner`` had already lost it (another replica resumed it)."""
        lost = False

        def release(record: SessionRecord) -> SessionRecord | None:
            nonlocal lost
            if record.owner != owner:
                lost = True
                return None
            return record.model_copy(update={"owner": None, "detached_at": self._clock()})

        detached = await self.modify(sid, release)
        if detached is None or lost:
            return False
        await self._rewrite_history(sid, self.options.grace_s)
        return True

    async def delete(self, sid: str) -> None:
        """Forget the session and its history now."""
        sid = _check_sid(sid)
        await self._sessions.purge(sid, marker_ttl_s=self.options.marker_ttl_s)
        await self._history.purge(sid, marker_ttl_s=self.options.marker_ttl_s)

    # ------------------------------------------------------------------ history

    async def history(self, sid: str) -> Stored[History]:
        """The conversation so far (empty, revision 0, if none)."""
        entry = await self._history.get(_check_sid(sid))
        if entry is None:
            return Stored(History(), 0)
        return Stored(decode_state(History, entry.value), entry.revision)

    async def append(self, sid: str, *messages: ChatMessage) -> Stored[History]:
        """Add ``messages`` at the end (the oldest items make room beyond the bounds)."""
        limits = self.options.history
        edited = await self._edit_history(sid, lambda h: append_items(h, messages, limits))
        assert edited is not None  # an append always changes the history
        return edited

    async def truncate(self, sid: str, item_id: str, content: str) -> Stored[History] | None:
        """Entry ``item_id`` now reads ``content`` (empty: removed); ``None`` if unknown."""
        return await self._edit_history(sid, lambda h: truncate_item(h, item_id, content))

    async def delete_item(self, sid: str, item_id: str) -> Stored[History] | None:
        """Remove entry ``item_id``; ``None`` if there is no such entry."""
        return await self._edit_history(sid, lambda h: delete_item(h, item_id))

    async def apply(self, edit: LlmEdit) -> Stored[History] | None:
        """Apply the history edit the gateway also sends to the LLM replica."""
        match edit.op:
            case HistoryOp.APPEND:
                if edit.message is None:
                    raise ValueError("an append edit carries a message")
                return await self.append(edit.sid, edit.message)
            case HistoryOp.TRUNCATE:
                return await self.truncate(edit.sid, edit.item_id, edit.content)
            case HistoryOp.DELETE:
                return await self.delete_item(edit.sid, edit.item_id)
            case _:
                assert_never(edit.op)

    async def _edit_history(
        self, sid: str, edit: Callable[[History], History | None]
    ) -> Stored[History] | None:
        _check_sid(sid)
        for _ in range(self.options.cas_attempts):
            current = await self.history(sid)
            changed = edit(current.value)
            if changed is None:
                return None
            data = encode_state(changed)
            try:
                if current.revision == 0:
                    revision = await self._history.create(sid, data, ttl_s=self.options.live_ttl_s)
                else:
                    revision = await self._history.write(
                        sid, data, last=current.revision, ttl_s=self.options.live_ttl_s
                    )
            except StateConflictError:
                continue
            return Stored(changed, revision)
        raise StateConflictError(f"{self._history.bucket}/{sid}", -1)

    async def _rewrite_history(self, sid: str, ttl_s: float) -> None:
        """Give the history the record's TTL (it must never expire before the record)."""
        for _ in range(self.options.cas_attempts):
            entry = await self._history.get(sid)
            if entry is None:
                return
            try:
                await self._history.write(sid, entry.value, last=entry.revision, ttl_s=ttl_s)
                return
            except StateConflictError:
                continue
        raise StateConflictError(f"{self._history.bucket}/{sid}", -1)

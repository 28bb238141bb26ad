"""What a session's state is, and how its conversation history is edited; sans-I/O.

A session is two documents, each a msgpack-encoded pydantic model:

* `SessionRecord`: who owns the call (API key, gateway replica), what it was configured
  with (enough to resume it elsewhere) and its turn number;
* `History`: the conversation as the LLM sees it, bounded in items and bytes. Edits mirror
  `shared.messages.HistoryOp`: append, truncate (an entry now reads what was heard; empty
  text removes it) and delete, by the client protocol's item id.

Edits are pure functions from one `History` to the next, so the store can retry them on a
compare-and-set conflict against whatever the latest revision holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import msgpack
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from shared.errors import DecodeError
from shared.messages import ChatMessage, WorkerSpec


class StateModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SessionConfig(StateModel):
    """The call's configuration, as much as a new gateway replica needs to resume it."""

    answer: bool = True  # False: transcription only
    persona: str | None = None
    voice: str | None = None
    language: str | None = None
    asr_model: str | None = None
    llm_model: str | None = None
    tts_model: str | None = None
    system_prompt: str = ""
    prompt: str | None = None
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    workers: tuple[WorkerSpec, ...] = ()
    temperature: float = 0.7
    max_tokens: int = 256
    client_rate: int = 16000
    tts_rate: int = 24000
    # What one client protocol alone needs back on resume (e.g. its event subscriptions).
    protocol_options: dict[str, JsonValue] = Field(default_factory=dict)


class SessionRecord(StateModel):
    sid: str
    key_id: str  # `services.gateway.auth.key_id` of the key that started the call
    protocol: str  # the client protocol ("bella", "openai", ...)
    owner: str | None = None  # gateway replica holding the connection; None: awaiting resume
    config: SessionConfig = SessionConfig()
    turn: int = Field(default=0, ge=0)
    created_at: float = 0.0
    updated_at: float = 0.0  # wall clock of the last write (set by the store)
    detached_at: float | None = None  # when the connection was lost or the call ended

    @property
    def attached(self) -> bool:
        return self.owner is not None


class History(StateModel):
    items: tuple[ChatMessage, ...] = ()
    dropped: int = Field(default=0, ge=0)  # oldest items dropped to stay within bounds


@dataclass(frozen=True)
class HistoryLimits:
    """Bounds of one session's history; the oldest items go first."""

    max_items: int = 200
    max_bytes: int = 256 * 1024  # encoded; the bucket's max value size is set from this

    def __post_init__(self) -> None:
        if self.max_items < 1 or self.max_bytes < 1024:
            raise ValueError("history limits: at least 1 item and 1 KiB")


# --------------------------------------------------------------------------- encoding


def encode_state(model: StateModel) -> bytes:
    data: bytes = msgpack.packb(model.model_dump(mode="json"), use_bin_type=True)
    return data


M = TypeVar("M", bound=StateModel)


def decode_state(kind: type[M], data: bytes) -> M:
    """Parse a stored document; `DecodeError` if it is not a valid ``kind``."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
        return kind.model_validate(raw)
    except (ValueError, ValidationError) as exc:
        raise DecodeError(f"stored {kind.__name__} is invalid: {exc.__class__.__name__}") from exc


# --------------------------------------------------------------------------- history edits


def _size(message: ChatMessage) -> int:
    return len(encode_state(History(items=(message,)))) - len(encode_state(History()))


def append_items(
    history: History, messages: tuple[ChatMessage, ...], limits: HistoryLimits
) -> History:
    """``history`` with ``messages`` at the end, the oldest items dropped to fit ``limits``.

    Raises `ValueError` for a single message larger than the whole budget: it could only be
    stored by dropping itself.
    """
    for message in messages:
        if _size(message) > limits.max_bytes:
            raise ValueError(
                f"a history item of {_size(message)} bytes exceeds the {limits.max_bytes}-byte limit"
            )
    items = list(history.items) + list(messages)
    sizes = [_size(m) for m in items]
    total = sum(sizes)
    drop = 0
    while len(items) - drop > limits.max_items or total > limits.max_bytes:
        total -= sizes[drop]
        drop += 1
    return History(items=tuple(items[drop:]), dropped=history.dropped + drop)


def truncate_item(history: History, item_id: str, content: str) -> History | None:
    """Entry ``item_id`` now reads ``content`` (empty: removed); ``None`` if there is none."""
    if not content:
        return delete_item(history, item_id)
    found = False
    items: list[ChatMessage] = []
    for item in history.items:
        if item_id and item.item_id == item_id:
            found = True
            item = item.model_copy(update={"content": content})
        items.append(item)
    return history.model_copy(update={"items": tuple(items)}) if found else None


def delete_item(history: History, item_id: str) -> History | None:
    """Without entry ``item_id``; ``None`` if there is none."""
    items = tuple(i for i in history.items if not (item_id and i.item_id == item_id))
    if len(items) == len(history.items):
        return None
    return history.model_copy(update={"items": items})

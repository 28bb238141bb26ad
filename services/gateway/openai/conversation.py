"""The conversation as the client sees it: items, their ids and order.

The adapter names every item (user turns, typed messages, answers) so that the client
can refer to them later (truncate, delete, retrieve) and so that ``previous_item_id``
chains are right. Bounded: the oldest items are forgotten past `MAX_ITEMS`, as the
LLM's own history is capped.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from services.gateway.openai.events import Content, Item, ItemStatus

MAX_ITEMS = 200
Role = Literal["user", "assistant", "system"]


def new_id(prefix: str) -> str:
    """``item_...``, ``resp_...``, ``sess_...``, ``event_...``: OpenAI's id shapes."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


IdFactory = Callable[[str], str]


@dataclass
class StoredItem:
    id: str
    role: Role
    kind: Literal["audio", "text"]  # spoken (input_audio / output_audio) or typed
    status: ItemStatus = "in_progress"
    text: str | None = None  # transcript (audio) or text (typed)
    audio_ms: float = 0.0  # assistant audio sent to the client (for truncation)
    responses: list[str] = field(default_factory=list)


class Conversation:
    def __init__(self) -> None:
        self._items: OrderedDict[str, StoredItem] = OrderedDict()

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._items

    def get(self, item_id: str) -> StoredItem | None:
        return self._items.get(item_id)

    @property
    def last_id(self) -> str | None:
        return next(reversed(self._items), None)

    def add(self, item: StoredItem) -> str | None:
        """Append ``item``; returns the id of the item before it (``previous_item_id``)."""
        previous = self.last_id
        self._items[item.id] = item
        while len(self._items) > MAX_ITEMS:
            self._items.popitem(last=False)
        return previous

    def delete(self, item_id: str) -> bool:
        return self._items.pop(item_id, None) is not None


def render_item(item: StoredItem, *, audio_content: str, text_content: str) -> Item:
    """The item as the protocol shows it (assistant content names differ GA / beta)."""
    if item.role == "user":
        if item.kind == "audio":
            content = Content(type="input_audio", transcript=item.text)
        else:
            content = Content(type="input_text", text=item.text or "")
    elif item.kind == "audio":
        content = Content(type=audio_content, transcript=item.text or "")
    else:
        content = Content(type=text_content, text=item.text or "")
    return Item(id=item.id, status=item.status, role=item.role, content=[content])


class InputItems:
    """Which user item the ASR's results belong to, and the transcript deltas said so far.

    Utterances are transcribed in order: results belong to the oldest committed item
    still awaiting its transcript, else to the item being spoken.
    """

    def __init__(self) -> None:
        self.speech: str | None = None
        self.awaiting: deque[str] = deque()
        self._partial_item: str | None = None
        self._partial = ""

    def speaking(self, item_id: str) -> None:
        self.speech = item_id

    def committed(self, item_id: str) -> None:
        if self.speech == item_id:
            self.speech = None
        if item_id not in self.awaiting:
            self.awaiting.append(item_id)

    def transcribed(self, item_id: str) -> None:
        if item_id in self.awaiting:
            self.awaiting.remove(item_id)
        if self.speech == item_id:
            self.speech = None

    def clear(self) -> None:
        self.speech = None

    @property
    def current(self) -> str | None:
        return self.awaiting[0] if self.awaiting else self.speech

    def delta(self, text: str) -> tuple[str, str] | None:
        """(item, delta) for a partial transcript ``text``; ``None``: nothing to say.

        Deltas must add up to the transcript, so a partial that revises words already
        sent cannot be said as a delta: it waits for the final transcript.
        """
        item = self.current
        if item is None:
            return None
        if item != self._partial_item:
            self._partial_item, self._partial = item, ""
        if not text.startswith(self._partial) or len(text) == len(self._partial):
            return None
        delta, self._partial = text[len(self._partial) :], text
        return item, delta

"""Session-state documents and history edits: pure, no NATS."""

from __future__ import annotations

import pytest

from shared.errors import DecodeError
from shared.messages import ChatMessage, WorkerSpec
from shared.state.models import (
    History,
    HistoryLimits,
    SessionConfig,
    SessionRecord,
    append_items,
    decode_state,
    delete_item,
    encode_state,
    truncate_item,
)


def msg(item_id: str, content: str = "text", role: str = "user") -> ChatMessage:
    return ChatMessage(role=role, content=content, item_id=item_id)  # type: ignore[arg-type]


def ids(history: History | None) -> list[str]:
    assert history is not None
    return [m.item_id for m in history.items]


def test_documents_round_trip_and_garbage_is_refused() -> None:
    record = SessionRecord(
        sid="s1",
        key_id="k-abc",
        protocol="bella",
        owner="gw-1",
        turn=3,
        config=SessionConfig(
            persona="qingqing",
            voice="v",
            variables={"name": "Ada", "n": [1, 2.5, None, {"x": True}]},
            workers=(WorkerSpec(variable_name="mood", json_schema={"type": "object"}),),
            protocol_options={"event_subscriptions": ["a", "b"]},
        ),
    )
    assert decode_state(SessionRecord, encode_state(record)) == record
    history = History(items=(msg("a"), msg("b", "hi", "assistant")), dropped=2)
    assert decode_state(History, encode_state(history)) == history
    for bad in (b"", b"\xc1", encode_state(history)):
        with pytest.raises(DecodeError):
            decode_state(SessionRecord, bad)


def test_append_keeps_within_item_and_byte_bounds() -> None:
    limits = HistoryLimits(max_items=3, max_bytes=4096)
    h = append_items(History(), (msg("1"), msg("2")), limits)
    h = append_items(h, (msg("3"), msg("4"), msg("5")), limits)
    assert ids(h) == ["3", "4", "5"] and h.dropped == 2

    big = HistoryLimits(max_items=100, max_bytes=2048)
    h = append_items(History(), tuple(msg(str(i), "x" * 500) for i in range(3)), big)
    h = append_items(h, (msg("new", "y" * 900),), big)
    assert ids(h)[-1] == "new" and len(encode_state(h)) <= 2048 + 16
    assert h.dropped >= 1
    with pytest.raises(ValueError, match="exceeds"):
        append_items(h, (msg("huge", "z" * 3000),), big)


def test_truncate_and_delete_by_item_id() -> None:
    h = append_items(History(), (msg("u1"), msg("a1", "Hello there", "assistant")), HistoryLimits())
    cut = truncate_item(h, "a1", "Hello")
    assert cut is not None and cut.items[1].content == "Hello" and cut.items[1].role == "assistant"
    assert ids(truncate_item(h, "a1", "")) == ["u1"]  # nothing heard: never said
    assert truncate_item(h, "zz", "x") is None
    assert ids(delete_item(h, "u1")) == ["a1"]
    assert delete_item(h, "zz") is None
    # Entries without an id cannot be addressed, so an empty id matches nothing.
    anon = append_items(History(), (msg(""),), HistoryLimits())
    assert delete_item(anon, "") is None and truncate_item(anon, "", "x") is None


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        HistoryLimits(max_items=0)

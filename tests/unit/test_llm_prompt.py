"""Prompt assembly and history capping (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.llm.prompt import (
    DEFAULT_SYSTEM_PROMPT,
    apply_edit,
    build_messages,
    cap_history,
    chat_request,
    conversation_only,
    effective_system_prompt,
    estimate_tokens,
    fit_history,
    record_turn,
)
from shared.messages import ChatMessage, HistoryOp

BIG = 100_000


def u(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def a(text: str) -> ChatMessage:
    return ChatMessage(role="assistant", content=text)


def test_empty_system_prompt_gets_the_voice_default() -> None:
    assert effective_system_prompt("  ") == DEFAULT_SYSTEM_PROMPT
    assert effective_system_prompt(" Be Qingqing. ") == "Be Qingqing."
    assert "markdown" in DEFAULT_SYSTEM_PROMPT and "language" in DEFAULT_SYSTEM_PROMPT


def test_messages_are_system_then_history_then_user() -> None:
    history = (u("hi"), a("hello"))
    messages = build_messages(
        "Persona.", history, "how are you?", max_history=20, budget_tokens=BIG
    )
    assert messages == [
        {"role": "system", "content": "Persona."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how are you?"},
    ]


def test_prefill_prompt_is_a_prefix_of_the_turn_prompt() -> None:
    history = (u("hi"), a("hello"))
    prefill = build_messages("P", history, None, max_history=20, budget_tokens=BIG)
    turn = build_messages("P", history, "next", max_history=20, budget_tokens=BIG)
    assert turn[: len(prefill)] == prefill
    assert len(turn) == len(prefill) + 1


def test_history_is_capped_to_the_newest_messages_starting_with_a_user() -> None:
    history = (u("1"), a("1a"), u("2"), a("2a"), u("3"), a("3a"))
    assert cap_history(history, 4) == (u("2"), a("2a"), u("3"), a("3a"))
    # An odd cap would start on an answer: that orphan is dropped too.
    assert cap_history(history, 3) == (u("3"), a("3a"))
    assert cap_history(history, 0) == ()
    assert cap_history(history, 100) == history


def test_build_messages_applies_the_cap() -> None:
    history = tuple(m for i in range(15) for m in (u(f"q{i}"), a(f"a{i}")))
    messages = build_messages("P", history, "now", max_history=20, budget_tokens=BIG)
    assert len(messages) == 1 + 20 + 1
    assert messages[1] == {"role": "user", "content": "q5"}


def test_record_turn_appends_the_exchange_and_caps() -> None:
    history = (u("1"), a("1a"))
    assert record_turn(history, "2", "2a", 20) == (u("1"), a("1a"), u("2"), a("2a"))
    assert record_turn(history, "2", "2a", 2) == (u("2"), a("2a"))


def test_history_over_the_cap_is_cut_deeper_so_the_prompt_prefix_stays_put() -> None:
    history: tuple[ChatMessage, ...] = ()
    lengths = []
    for i in range(12):
        history = record_turn(history, str(i), f"{i}a", 8)
        lengths.append(len(history))
    # 8 is the cap; past it the oldest 2 exchanges go at once, then it grows again.
    assert lengths == [2, 4, 6, 8, 6, 8, 6, 8, 6, 8, 6, 8]
    assert history[-2:] == (u("11"), a("11a"))
    assert max(lengths) <= 8


def test_cancelled_answer_is_not_recorded_but_the_user_words_are() -> None:
    history = (u("1"), a("1a"))
    assert record_turn(history, "2", None, 20) == (u("1"), a("1a"), u("2"))
    assert record_turn(history, "2", "", 20) == (u("1"), a("1a"), u("2"))


def test_system_messages_in_a_given_history_are_dropped() -> None:
    history = (ChatMessage(role="system", content="old"), u("1"), a("1a"))
    assert conversation_only(history) == (u("1"), a("1a"))


def test_estimate_counts_cjk_per_character_and_latin_per_three() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdef") == 2
    assert estimate_tokens("北京") == 2
    assert estimate_tokens("北京abc") == 3


def test_oldest_messages_are_dropped_to_fit_the_budget() -> None:
    history = (u("x" * 300), a("y" * 300), u("short"), a("fine"))
    kept = fit_history("P", history, "now", budget_tokens=60)
    assert kept == (u("short"), a("fine"))
    # Nothing fits: the history goes, system and user stay (the engine reports overflow).
    assert fit_history("P" * 900, history, "now", budget_tokens=60) == ()


def test_chat_request_pins_the_slot_and_streams() -> None:
    req = chat_request([{"role": "user", "content": "hi"}], max_tokens=8, temperature=0.2, slot=3)
    assert req["stream"] is True and req["cache_prompt"] is True and req["id_slot"] == 3
    assert chat_request([], max_tokens=1, temperature=0.0, slot=None)["id_slot"] == -1


roles = st.sampled_from(["user", "assistant"])
messages = st.lists(
    st.builds(ChatMessage, role=roles, content=st.text(max_size=40)), max_size=40
).map(tuple)


@given(messages, st.integers(min_value=0, max_value=50))
def test_capped_history_is_a_suffix_that_starts_with_a_user(
    history: tuple[ChatMessage, ...], cap: int
) -> None:
    capped = cap_history(history, cap)
    assert len(capped) <= cap
    assert history[len(history) - len(capped) :] == capped
    assert not capped or capped[0].role == "user"


@given(messages, st.integers(min_value=0, max_value=400))
def test_fitted_history_is_a_suffix_that_fits_once_anything_was_dropped(
    history: tuple[ChatMessage, ...], budget: int
) -> None:
    kept = fit_history("sys", history, "user", budget)
    assert history[len(history) - len(kept) :] == kept
    if len(kept) < len(history):
        assert not kept or kept[0].role == "user"
        cost = sum(estimate_tokens(m.content) + 5 for m in (u("sys"), *kept, u("user")))
        assert not kept or cost <= budget


def _item(role: str, content: str, item_id: str) -> ChatMessage:
    return ChatMessage(role=role, content=content, item_id=item_id)  # type: ignore[arg-type]


def test_record_turn_keeps_item_ids_and_text_none_adds_only_the_answer() -> None:
    history = record_turn((), "hi", "hello", 20, user_item_id="u1", assistant_item_id="a1")
    assert history == (_item("user", "hi", "u1"), _item("assistant", "hello", "a1"))
    after = record_turn(history, None, "more", 20, assistant_item_id="a2")
    assert after[-1] == _item("assistant", "more", "a2") and len(after) == 3


def test_history_edits_by_item_id() -> None:
    history = (_item("user", "hi", "u1"), _item("assistant", "hello there friend", "a1"))
    cut, found = apply_edit(
        history, HistoryOp.TRUNCATE, item_id="a1", content="hello", max_history=20
    )
    assert found and cut[-1].content == "hello" and cut[-1].item_id == "a1"
    gone, found = apply_edit(history, HistoryOp.TRUNCATE, item_id="a1", content="", max_history=20)
    assert found and gone == history[:1]
    deleted, found = apply_edit(history, HistoryOp.DELETE, item_id="u1", max_history=20)
    assert found and deleted == history[1:]
    same, found = apply_edit(history, HistoryOp.DELETE, item_id="nope", max_history=20)
    assert not found and same == history
    added, found = apply_edit(
        history, HistoryOp.APPEND, message=_item("user", "again", "u2"), max_history=2
    )
    assert found and added == (_item("user", "again", "u2"),)  # capped, starting at a user


def test_chat_request_names_the_model_only_when_given() -> None:
    plain = chat_request([], max_tokens=8, temperature=0.1, slot=None)
    assert "model" not in plain and plain["id_slot"] == -1
    assert chat_request([], max_tokens=8, temperature=0.1, slot=2, model="m")["model"] == "m"

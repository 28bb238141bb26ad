"""What the gateway writes to the session store for the call core's actions (sans-I/O)."""

from __future__ import annotations

from services.gateway.call import (
    CallOptions,
    CancelReason,
    Emit,
    Publish,
    TurnCancelled,
)
from services.gateway.persistence import (
    Append,
    Edit,
    HistoryTracker,
    Settings,
    SetTurn,
    resumed_options,
    session_config,
    with_history,
)
from shared.messages import (
    ChatMessage,
    HistoryOp,
    LlmEdit,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    LlmUpdate,
    ServiceName,
    TtsOpen,
    TtsUpdate,
)


def turn(n: int, text: str | None) -> Publish:
    return Publish(
        ServiceName.LLM,
        LlmTurn(sid="s", turn=n, text=text, user_item_id=f"u{n}", assistant_item_id=f"a{n}"),
    )


def test_a_turn_stores_the_words_then_the_answer() -> None:
    tracker = HistoryTracker()
    assert tracker.writes([turn(1, "hi")]) == [
        Append((ChatMessage(role="user", content="hi", item_id="u1"),)),
        SetTurn(1),
    ]
    end = Emit(LlmEnd(sid="s", turn=1, text="Hello.", ttft_ms=1.0))
    assert tracker.writes([end]) == [
        Append((ChatMessage(role="assistant", content="Hello.", item_id="a1"),))
    ]
    assert tracker.writes([end]) == []  # stored once


def test_a_cancelled_answer_is_stored_as_heard_or_not_at_all() -> None:
    tracker = HistoryTracker()
    tracker.writes([turn(1, "tell me a story"), turn(2, None)])
    truncate = Publish(
        ServiceName.LLM, LlmEdit(sid="s", op=HistoryOp.TRUNCATE, item_id="a2", content="Once")
    )
    cancelled = Emit(TurnCancelled(2, CancelReason.TURN_DETECTED, "a2", "Once", 300.0))
    assert tracker.writes([cancelled, truncate]) == [
        Append((ChatMessage(role="assistant", content="Once", item_id="a2"),)),
        Edit(truncate.message),  # type: ignore[arg-type]
    ]
    # Turn 1 was replaced by turn 2: its late end is not stored.
    assert tracker.writes([Emit(LlmEnd(sid="s", turn=1, text="x", ttft_ms=1.0))]) == []
    tracker.writes([turn(3, "again")])
    unheard = Emit(TurnCancelled(3, CancelReason.TURN_DETECTED, "a3", "", 0.0))
    assert tracker.writes([unheard]) == []


def test_setting_changes_are_stored() -> None:
    tracker = HistoryTracker()
    update = Publish(ServiceName.LLM, LlmUpdate(sid="s", temperature=0.1))
    voice = Publish(ServiceName.TTS, TtsUpdate(sid="s", voice="jane"))
    assert tracker.writes([update, voice]) == [
        Settings(temperature=0.1),
        Settings(voice="jane"),
    ]


def test_resume_keeps_the_stored_conversation_settings() -> None:
    stored = session_config(
        CallOptions(sid="s", system_prompt="Be brief.", voice="joe", temperature=0.3)
    )
    asked = CallOptions(sid="s", system_prompt="Other", voice="jane", client_rate=8000)
    resumed = resumed_options(asked, stored)
    assert (resumed.system_prompt, resumed.voice, resumed.temperature) == ("Be brief.", "joe", 0.3)
    assert resumed.client_rate == 8000  # how the client sends audio now is its own


def test_the_llm_session_opens_with_the_history() -> None:
    history = (ChatMessage(role="user", content="hi", item_id="u1"),)
    actions = [
        Publish(ServiceName.LLM, LlmOpen(sid="s")),
        Publish(ServiceName.TTS, TtsOpen(sid="s")),
    ]
    opened = with_history(list(actions), history)
    assert isinstance(opened[0], Publish) and isinstance(opened[0].message, LlmOpen)
    assert opened[0].message.history == history
    assert opened[1] == actions[1]

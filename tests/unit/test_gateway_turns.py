"""The turn state machine: its transition table, input by input."""

from __future__ import annotations

import pytest

from services.gateway.turns import TRANSITIONS, Effect, TurnInput, TurnMachine, TurnState

S, I, E = TurnState, TurnInput, Effect


def machine(state: TurnState) -> TurnMachine:
    m = TurnMachine()
    m.state = state
    return m


@pytest.mark.parametrize(
    ("state", "event", "target", "effects"),
    [
        (S.IDLE, I.USER_TURN, S.ANSWERING, (E.START_TURN,)),
        (S.ANSWERING, I.USER_TURN, S.ANSWERING, (E.CANCEL_TURN, E.START_TURN)),
        (S.SPEAKING, I.USER_TURN, S.ANSWERING, (E.CANCEL_TURN, E.START_TURN)),
        (S.ANSWERING, I.LLM_DONE, S.SPEAKING, (E.END_TEXT,)),
        (S.SPEAKING, I.TTS_DONE, S.IDLE, (E.TURN_DONE,)),
        (S.ANSWERING, I.LLM_FAILED, S.IDLE, (E.CANCEL_TURN,)),
        (S.ANSWERING, I.TTS_FAILED, S.IDLE, (E.CANCEL_TURN,)),
        (S.SPEAKING, I.TTS_FAILED, S.IDLE, ()),
        (S.ANSWERING, I.ABORT, S.IDLE, (E.CANCEL_TURN,)),
        (S.SPEAKING, I.ABORT, S.IDLE, (E.CANCEL_TURN,)),
    ],
)
def test_transitions(
    state: TurnState, event: TurnInput, target: TurnState, effects: tuple[Effect, ...]
) -> None:
    m = machine(state)
    assert m.feed(event) == effects
    assert m.state is target


def test_inputs_missing_from_the_table_change_nothing() -> None:
    for state in TurnState:
        for event in TurnInput:
            if (state, event) in TRANSITIONS:
                continue
            m = machine(state)
            assert m.feed(event) == ()
            assert m.state is state


def test_a_whole_turn() -> None:
    m = TurnMachine()
    assert not m.busy
    m.feed(I.USER_TURN)
    assert m.busy
    m.feed(I.LLM_DONE)
    assert m.busy
    m.feed(I.TTS_DONE)
    assert not m.busy

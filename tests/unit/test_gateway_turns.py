"""The turn state machine: its transition tables, input by input and policy by policy."""

from __future__ import annotations

import itertools

import pytest

from services.gateway.turns import (
    TRANSITIONS,
    Effect,
    TurnInput,
    TurnMachine,
    TurnPolicy,
    TurnState,
    build_table,
)

S, I, E = TurnState, TurnInput, Effect

POLICIES = [
    TurnPolicy(auto_respond=a, interrupt=i, half_duplex=h, resume=r)
    for a, i, h, r in itertools.product([True, False], repeat=4)
]
SPEECH = (I.SPEECH_STARTED, I.SPEECH_CONFIRMED, I.SPEECH_ENDED, I.BACKCHANNEL)


def machine(state: TurnState, policy: TurnPolicy | None = None) -> TurnMachine:
    m = TurnMachine(policy)
    m.state = state
    return m


@pytest.mark.parametrize(
    ("state", "event", "target", "effects"),
    [
        # An answer's own progress.
        (S.IDLE, I.USER_TURN, S.ANSWERING, (E.START_TURN,)),
        (S.IDLE, I.RESPOND, S.ANSWERING, (E.START_TURN,)),
        (S.ANSWERING, I.LLM_DONE, S.SPEAKING, (E.END_TEXT,)),
        (S.SPEAKING, I.TTS_DONE, S.PLAYING, (E.TURN_DONE, E.START_QUEUED)),
        (S.PLAYING, I.PLAYBACK_DONE, S.IDLE, ()),
        (S.PLAYING, I.RESPOND, S.ANSWERING, (E.START_TURN,)),
        # A second answer while one is made is refused.
        (S.ANSWERING, I.RESPOND, S.ANSWERING, (E.REFUSE_RESPOND,)),
        (S.SPEAKING_CONTESTED, I.RESPOND, S.SPEAKING_CONTESTED, (E.REFUSE_RESPOND,)),
        # A final without VAD first (manual commit, a typed turn): cancel and answer anew.
        (S.ANSWERING, I.USER_TURN, S.ANSWERING, (E.CANCEL_TURN, E.START_TURN)),
        (S.SPEAKING, I.USER_TURN, S.ANSWERING, (E.CANCEL_TURN, E.START_TURN)),
        (S.PLAYING, I.USER_TURN, S.ANSWERING, (E.CUT_PLAYBACK, E.START_TURN)),
        # Barge-in: speech contests the answer, confirmation cancels it.
        (S.ANSWERING, I.SPEECH_STARTED, S.ANSWERING_CONTESTED, ()),
        (S.SPEAKING, I.SPEECH_STARTED, S.SPEAKING_CONTESTED, ()),
        (S.PLAYING, I.SPEECH_STARTED, S.PLAYING_CONTESTED, ()),
        (S.ANSWERING_CONTESTED, I.SPEECH_CONFIRMED, S.IDLE, (E.CANCEL_TURN,)),
        (S.SPEAKING_CONTESTED, I.SPEECH_CONFIRMED, S.IDLE, (E.CANCEL_TURN,)),
        (S.PLAYING_CONTESTED, I.SPEECH_CONFIRMED, S.IDLE, (E.CUT_PLAYBACK,)),
        (S.ANSWERING, I.SPEECH_CONFIRMED, S.IDLE, (E.CANCEL_TURN,)),
        (S.SPEAKING_CONTESTED, I.USER_TURN, S.ANSWERING, (E.CANCEL_TURN, E.START_TURN)),
        # Backchannels and noises leave the answer be.
        (S.ANSWERING_CONTESTED, I.BACKCHANNEL, S.ANSWERING, ()),
        (S.SPEAKING_CONTESTED, I.SPEECH_ENDED, S.SPEAKING, ()),
        (S.PLAYING_CONTESTED, I.BACKCHANNEL, S.PLAYING, ()),
        (S.SPEAKING, I.BACKCHANNEL, S.SPEAKING, ()),
        # The answer goes on while the speech is judged.
        (S.ANSWERING_CONTESTED, I.LLM_DONE, S.SPEAKING_CONTESTED, (E.END_TEXT,)),
        (S.SPEAKING_CONTESTED, I.TTS_DONE, S.PLAYING_CONTESTED, (E.TURN_DONE, E.START_QUEUED)),
        (S.PLAYING_CONTESTED, I.PLAYBACK_DONE, S.IDLE, ()),
        # The client cancels; harmless when nothing is made.
        (S.ANSWERING, I.CANCEL, S.IDLE, (E.CANCEL_TURN,)),
        (S.SPEAKING_CONTESTED, I.CANCEL, S.IDLE, (E.CANCEL_TURN,)),
        # Failures and aborts.
        (S.ANSWERING, I.LLM_FAILED, S.IDLE, (E.CANCEL_TURN,)),
        (S.ANSWERING, I.TTS_FAILED, S.IDLE, (E.CANCEL_TURN,)),
        (S.SPEAKING, I.TTS_FAILED, S.IDLE, ()),
        (S.ANSWERING_CONTESTED, I.LLM_FAILED, S.IDLE, (E.CANCEL_TURN,)),
        (S.ANSWERING, I.ABORT, S.IDLE, (E.CANCEL_TURN,)),
        (S.SPEAKING, I.ABORT, S.IDLE, (E.CANCEL_TURN,)),
        (S.PLAYING, I.ABORT, S.IDLE, (E.CUT_PLAYBACK,)),
        (S.SPEAKING_CONTESTED, I.ABORT, S.IDLE, (E.CANCEL_TURN,)),
    ],
)
def test_default_transitions(
    state: TurnState, event: TurnInput, target: TurnState, effects: tuple[Effect, ...]
) -> None:
    m = machine(state)
    assert m.feed(event) == effects
    assert m.state is target


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.IDLE, I.CANCEL),  # response.cancel with nothing active
        (S.PLAYING, I.CANCEL),  # the answer is complete: the client truncates instead
        (S.IDLE, I.SPEECH_STARTED),
        (S.IDLE, I.SPEECH_CONFIRMED),
        (S.IDLE, I.BACKCHANNEL),
        (S.IDLE, I.ABORT),
        (S.ANSWERING, I.TTS_DONE),  # TTS ends only after END_TEXT
        (S.ANSWERING, I.PLAYBACK_DONE),  # audio still comes
    ],
)
def test_harmless_inputs_change_nothing(state: TurnState, event: TurnInput) -> None:
    m = machine(state)
    assert m.feed(event) == ()
    assert m.state is state


def test_inputs_missing_from_the_table_change_nothing() -> None:
    for policy in POLICIES:
        table = build_table(policy)
        for state, event in itertools.product(TurnState, TurnInput):
            if (state, event) in table:
                continue
            m = machine(state, policy)
            assert m.feed(event) == ()
            assert m.state is state


@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_every_policy_keeps_its_promises(policy: TurnPolicy) -> None:
    table = build_table(policy)
    for (state, event), t in table.items():
        cuts = E.CANCEL_TURN in t.effects or E.CUT_PLAYBACK in t.effects
        if event in SPEECH and (policy.half_duplex or not policy.interrupt):
            pytest.fail(f"{state}/{event}: speech changes nothing without interruptions")
        if event in (I.SPEECH_STARTED, I.SPEECH_ENDED, I.BACKCHANNEL):
            assert not cuts, "only confirmed speech or a real turn interrupts"
        if cuts and event is I.USER_TURN:
            assert policy.interrupt and not policy.half_duplex
        if not policy.auto_respond and event is I.USER_TURN:
            assert E.START_TURN not in t.effects, "create_response false: never answer by itself"
        if E.HOLD_AUDIO in t.effects or E.RELEASE_AUDIO in t.effects:
            assert policy.resume
        # A cut leaves nothing of the old answer running.
        if cuts:
            assert t.target in (S.IDLE, S.ANSWERING)


def test_resume_holds_the_answer_and_releases_it_after_a_false_alarm() -> None:
    m = TurnMachine(TurnPolicy(resume=True))
    m.state = S.SPEAKING
    assert m.feed(I.SPEECH_STARTED) == (E.HOLD_AUDIO,)
    assert m.feed(I.BACKCHANNEL) == (E.RELEASE_AUDIO,)
    assert m.state is S.SPEAKING
    m.feed(I.SPEECH_STARTED)
    assert m.feed(I.SPEECH_CONFIRMED) == (E.CANCEL_TURN,)  # held audio goes with the turn


def test_without_interruptions_a_turn_waits_for_the_answer() -> None:
    m = TurnMachine(TurnPolicy(interrupt=False))
    m.feed(I.USER_TURN)
    assert m.feed(I.SPEECH_STARTED) == ()
    assert m.feed(I.USER_TURN) == (E.QUEUE_TURN,)
    m.feed(I.LLM_DONE)
    assert m.feed(I.TTS_DONE) == (E.TURN_DONE, E.START_QUEUED)
    assert m.feed(I.RESPOND) == (E.START_TURN,)  # what START_QUEUED makes the core feed


def test_manual_answers_only_on_request() -> None:
    m = TurnMachine(TurnPolicy(auto_respond=False))
    assert m.feed(I.USER_TURN) == (E.ADD_USER,)
    assert m.state is S.IDLE
    assert m.feed(I.RESPOND) == (E.START_TURN,)
    m.feed(I.SPEECH_STARTED)
    # Interrupting speech still cancels; its words join the history unanswered.
    assert m.feed(I.USER_TURN) == (E.CANCEL_TURN, E.ADD_USER)
    assert m.state is S.IDLE


def test_half_duplex_is_deaf_while_talking() -> None:
    m = TurnMachine(TurnPolicy(half_duplex=True))
    assert not m.deaf
    m.feed(I.USER_TURN)
    assert m.deaf
    assert m.feed(I.USER_TURN) == () and m.feed(I.SPEECH_CONFIRMED) == ()
    m.feed(I.LLM_DONE)
    m.feed(I.TTS_DONE)
    assert m.deaf  # its audio still plays
    m.feed(I.PLAYBACK_DONE)
    assert not m.deaf


def test_a_whole_turn() -> None:
    m = TurnMachine()
    assert m.table == TRANSITIONS
    assert not m.busy and not m.talking
    m.feed(I.USER_TURN)
    assert m.busy and m.talking
    m.feed(I.SPEECH_STARTED)
    assert m.busy and m.contested
    m.feed(I.BACKCHANNEL)
    m.feed(I.LLM_DONE)
    assert m.busy
    m.feed(I.TTS_DONE)
    assert not m.busy and m.talking
    m.feed(I.PLAYBACK_DONE)
    assert not m.talking

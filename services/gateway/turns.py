"""Per-call turn logic: which answer is current and what a new user turn cancels.

A sans-I/O state machine: an enum of states, an enum of inputs and one transition table.
The call core (`services.gateway.call`) feeds it inputs that already belong to the current
turn (stale messages of cancelled turns are filtered before they get here) and carries
out the effects it returns. Barge-in with backchannel handling, half-duplex and the LLM
worker stages will grow this table, not scatter ``if`` tests around the core.

    IDLE --USER_TURN--> ANSWERING --LLM_DONE--> SPEAKING --TTS_DONE--> IDLE
              ^            |  ^                    |
              |            |  +----USER_TURN-------+   (cancel the old answer, start anew)
              +--failure / ABORT-------------------+
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto


class TurnState(Enum):
    IDLE = auto()  # nobody is answering
    ANSWERING = auto()  # the LLM streams the answer; TTS may already be speaking it
    SPEAKING = auto()  # the LLM finished; TTS is still speaking the answer


class TurnInput(Enum):
    USER_TURN = auto()  # a non-empty final transcript: the user said something to answer
    LLM_DONE = auto()  # LlmEnd of the current turn
    LLM_FAILED = auto()  # ServiceError from the LLM for the current turn
    TTS_DONE = auto()  # TtsEnd of the current turn
    TTS_FAILED = auto()  # ServiceError from TTS for the current turn
    ABORT = auto()  # the call ends now (disconnect, drain timeout, fatal error)


class Effect(Enum):
    CANCEL_TURN = auto()  # Cancel to LLM and TTS, drop the turn's queued audio
    START_TURN = auto()  # new turn number, LlmTurn to the LLM
    END_TEXT = auto()  # tell TTS that the answer's text is complete
    TURN_DONE = auto()  # the answer was fully delivered


@dataclass(frozen=True)
class Transition:
    target: TurnState
    effects: tuple[Effect, ...] = ()


S, I, E = TurnState, TurnInput, Effect

# Pairs missing from the table change nothing: e.g. TTS_DONE while the LLM still
# streams cannot happen (TTS ends only after END_TEXT) and is ignored if it does.
TRANSITIONS: dict[tuple[TurnState, TurnInput], Transition] = {
    (S.IDLE, I.USER_TURN): Transition(S.ANSWERING, (E.START_TURN,)),
    (S.ANSWERING, I.USER_TURN): Transition(S.ANSWERING, (E.CANCEL_TURN, E.START_TURN)),
    (S.SPEAKING, I.USER_TURN): Transition(S.ANSWERING, (E.CANCEL_TURN, E.START_TURN)),
    (S.ANSWERING, I.LLM_DONE): Transition(S.SPEAKING, (E.END_TEXT,)),
    (S.SPEAKING, I.TTS_DONE): Transition(S.IDLE, (E.TURN_DONE,)),
    # A failed LLM leaves TTS with half an answer: stop it too.
    (S.ANSWERING, I.LLM_FAILED): Transition(S.IDLE, (E.CANCEL_TURN,)),
    # Without a voice there is nothing left to deliver; stop the LLM as well.
    (S.ANSWERING, I.TTS_FAILED): Transition(S.IDLE, (E.CANCEL_TURN,)),
    (S.SPEAKING, I.TTS_FAILED): Transition(S.IDLE, ()),
    (S.ANSWERING, I.ABORT): Transition(S.IDLE, (E.CANCEL_TURN,)),
    (S.SPEAKING, I.ABORT): Transition(S.IDLE, (E.CANCEL_TURN,)),
}


class TurnMachine:
    """Holds the state; `feed` applies one input and returns the effects to carry out."""

    def __init__(self) -> None:
        self.state = TurnState.IDLE

    @property
    def busy(self) -> bool:
        return self.state is not TurnState.IDLE

    def feed(self, event: TurnInput) -> tuple[Effect, ...]:
        transition = TRANSITIONS.get((self.state, event))
        if transition is None:
            return ()
        self.state = transition.target
        return transition.effects

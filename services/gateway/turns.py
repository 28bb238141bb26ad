"""Per-call turn logic: which answer is current, what interrupts it and what does not.

A sans-I/O state machine: an enum of states, an enum of inputs and one transition table
per turn-taking policy (`TurnPolicy`). The call core (`services.gateway.call`) feeds it
inputs that already belong to the current turn (stale messages of cancelled turns are
filtered before they get here) and carries out the effects it returns. The core only
measures (how long the user has spoken, how many words); what that means for the answer
(barge-in, backchannel, resume, half-duplex deafness) is decided here.

The answer's life, full duplex with interruptions (the default policy)::

    IDLE --USER_TURN/RESPOND--> ANSWERING --LLM_DONE--> SPEAKING --TTS_DONE--> PLAYING
      ^                            |                       |                      |
      +------- PLAYBACK_DONE ------|-----------------------|----------------------+
                                   | SPEECH_STARTED        | SPEECH_STARTED       | SPEECH_STARTED
                                   v                       v                      v
                        ANSWERING_CONTESTED      SPEAKING_CONTESTED      PLAYING_CONTESTED
                                   | SPEECH_CONFIRMED / USER_TURN: cancel (barge-in)
                                   | BACKCHANNEL / SPEECH_ENDED: back where it was (resume)

PLAYING: the services are done, but the gateway still has audio of the answer queued
for the client; an interruption then cuts that audio (no cancel is announced: the turn
was already reported complete) and the history keeps what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto


class TurnState(Enum):
    IDLE = auto()  # nobody is answering and nothing is left to play
    ANSWERING = auto()  # the LLM streams the answer; TTS may already be speaking it
    SPEAKING = auto()  # the LLM finished; TTS is still speaking the answer
    PLAYING = auto()  # every service is done; queued audio still goes to the client
    # The user started to speak over the answer; not yet known to be an interruption.
    ANSWERING_CONTESTED = auto()
    SPEAKING_CONTESTED = auto()
    PLAYING_CONTESTED = auto()


class TurnInput(Enum):
    USER_TURN = auto()  # a final transcript that counts as a turn (not a backchannel)
    BACKCHANNEL = auto()  # a final too short to interrupt while the assistant talks
    RESPOND = auto()  # answer now (response.create, or a queued turn that is due)
    CANCEL = auto()  # the client cancels the answer (response.cancel)
    SPEECH_STARTED = auto()  # VAD onset while the assistant talks
    SPEECH_CONFIRMED = auto()  # the speech is long enough / has enough words to interrupt
    SPEECH_ENDED = auto()  # the onset was rejected by VAD (a noise): no turn follows
    LLM_DONE = auto()  # LlmEnd of the current turn
    LLM_FAILED = auto()  # ServiceError from the LLM for the current turn
    TTS_DONE = auto()  # TtsEnd of the current turn
    TTS_FAILED = auto()  # ServiceError from TTS for the current turn
    PLAYBACK_DONE = auto()  # every queued audio chunk of the turn was written
    ABORT = auto()  # the call ends now (disconnect, drain timeout, fatal error)


class Effect(Enum):
    CANCEL_TURN = auto()  # Cancel to LLM and TTS, drop the turn's audio, truncate history
    CUT_PLAYBACK = auto()  # the answer is complete: drop its queued audio, truncate history
    START_TURN = auto()  # new turn number, LlmTurn to the LLM
    ADD_USER = auto()  # the user's words enter the history without an answer
    QUEUE_TURN = auto()  # ADD_USER, and answer them once the current answer is done
    START_QUEUED = auto()  # start the queued answer, if there is one
    REFUSE_RESPOND = auto()  # an answer is already in progress
    END_TEXT = auto()  # tell TTS that the answer's text is complete
    TURN_DONE = auto()  # every service delivered the answer
    HOLD_AUDIO = auto()  # keep the answer's new audio back until the speech is judged
    RELEASE_AUDIO = auto()  # the speech was no interruption: send what was held back


@dataclass(frozen=True)
class TurnPolicy:
    """How a call takes turns (SPEC section 2; OpenAI ``turn_detection`` options)."""

    auto_respond: bool = True  # a user turn is answered at once (create_response)
    interrupt: bool = True  # the user's speech cancels the answer (interrupt_response)
    half_duplex: bool = False  # the user is not heard while the assistant talks
    resume: bool = False  # hold the answer's audio while speech is judged; resume if false


@dataclass(frozen=True)
class Transition:
    target: TurnState
    effects: tuple[Effect, ...] = ()


S, I, E = TurnState, TurnInput, Effect

_BUSY = (S.ANSWERING, S.SPEAKING)  # the services still work on the answer
_TALKING = (S.ANSWERING, S.SPEAKING, S.PLAYING)
_CONTESTED = {
    S.ANSWERING: S.ANSWERING_CONTESTED,
    S.SPEAKING: S.SPEAKING_CONTESTED,
    S.PLAYING: S.PLAYING_CONTESTED,
}
_UNCONTESTED = {v: k for k, v in _CONTESTED.items()}


def _base() -> dict[tuple[TurnState, TurnInput], Transition]:
    """What every policy shares: the answer's own progress, failures, aborts, cancels."""
    t: dict[tuple[TurnState, TurnInput], Transition] = {
        (S.IDLE, I.RESPOND): Transition(S.ANSWERING, (E.START_TURN,)),
        (S.PLAYING, I.RESPOND): Transition(S.ANSWERING, (E.START_TURN,)),
        (S.ANSWERING, I.LLM_DONE): Transition(S.SPEAKING, (E.END_TEXT,)),
        (S.SPEAKING, I.TTS_DONE): Transition(S.PLAYING, (E.TURN_DONE, E.START_QUEUED)),
        (S.PLAYING, I.PLAYBACK_DONE): Transition(S.IDLE),
        # A failed LLM leaves TTS with half an answer: stop it too.
        (S.ANSWERING, I.LLM_FAILED): Transition(S.IDLE, (E.CANCEL_TURN,)),
        # Without a voice there is nothing left to deliver; stop the LLM as well.
        (S.ANSWERING, I.TTS_FAILED): Transition(S.IDLE, (E.CANCEL_TURN,)),
        (S.SPEAKING, I.TTS_FAILED): Transition(S.IDLE, ()),
    }
    for state in _BUSY:
        t[state, I.ABORT] = Transition(S.IDLE, (E.CANCEL_TURN,))
        t[state, I.CANCEL] = Transition(S.IDLE, (E.CANCEL_TURN,))
        t[state, I.RESPOND] = Transition(state, (E.REFUSE_RESPOND,))
    # Nothing to cancel once the services are done; a client that stops listening
    # truncates the item instead.
    t[S.PLAYING, I.ABORT] = Transition(S.IDLE, (E.CUT_PLAYBACK,))
    return t


def build_table(policy: TurnPolicy) -> dict[tuple[TurnState, TurnInput], Transition]:
    """The transition table of ``policy``; pairs missing from it change nothing."""
    t = _base()
    respond = (E.START_TURN,) if policy.auto_respond else (E.ADD_USER,)
    t[S.IDLE, I.USER_TURN] = Transition(S.ANSWERING if policy.auto_respond else S.IDLE, respond)

    if policy.half_duplex:
        # Deaf while talking: the core feeds silence to ASR, and whatever was still
        # recognised of earlier speech is ignored (its absence from the table).
        return t

    if not policy.interrupt:
        for state in _BUSY:
            queued = (E.QUEUE_TURN,) if policy.auto_respond else (E.ADD_USER,)
            t[state, I.USER_TURN] = Transition(state, queued)
        t[S.PLAYING, I.USER_TURN] = Transition(
            S.ANSWERING if policy.auto_respond else S.PLAYING, respond
        )
        return t

    # Interruptions: speech over the answer contests it; confirmed speech or a real
    # turn cancels it; a backchannel or a noise leaves it be.
    after_cut = S.ANSWERING if policy.auto_respond else S.IDLE
    for state in _TALKING:
        contested = _CONTESTED[state]
        cut = E.CUT_PLAYBACK if state is S.PLAYING else E.CANCEL_TURN
        hold = (E.HOLD_AUDIO,) if policy.resume else ()
        release = (E.RELEASE_AUDIO,) if policy.resume else ()
        t[state, I.SPEECH_STARTED] = Transition(contested, hold)
        t[state, I.SPEECH_CONFIRMED] = Transition(S.IDLE, (cut,))
        t[state, I.USER_TURN] = Transition(after_cut, (cut, *respond))
        t[contested, I.SPEECH_CONFIRMED] = Transition(S.IDLE, (cut,))
        t[contested, I.USER_TURN] = Transition(after_cut, (cut, *respond))
        t[contested, I.BACKCHANNEL] = Transition(state, release)
        t[contested, I.SPEECH_ENDED] = Transition(state, release)
        t[contested, I.ABORT] = Transition(S.IDLE, (cut,))
    for contested in (S.ANSWERING_CONTESTED, S.SPEAKING_CONTESTED):
        t[contested, I.CANCEL] = Transition(S.IDLE, (E.CANCEL_TURN,))
        t[contested, I.RESPOND] = Transition(contested, (E.REFUSE_RESPOND,))
    # The old answer is complete and the client wants a new one: it follows the old audio.
    t[S.PLAYING_CONTESTED, I.RESPOND] = Transition(S.ANSWERING, (E.START_TURN,))
    # The answer goes on while the speech is judged.
    t[S.ANSWERING_CONTESTED, I.LLM_DONE] = Transition(S.SPEAKING_CONTESTED, (E.END_TEXT,))
    t[S.SPEAKING_CONTESTED, I.TTS_DONE] = Transition(
        S.PLAYING_CONTESTED, (E.TURN_DONE, E.START_QUEUED)
    )
    t[S.ANSWERING_CONTESTED, I.LLM_FAILED] = Transition(S.IDLE, (E.CANCEL_TURN,))
    t[S.ANSWERING_CONTESTED, I.TTS_FAILED] = Transition(S.IDLE, (E.CANCEL_TURN,))
    t[S.SPEAKING_CONTESTED, I.TTS_FAILED] = Transition(S.IDLE, ())
    # With audio held back, the core never reports playback done (it is not sent yet).
    t[S.PLAYING_CONTESTED, I.PLAYBACK_DONE] = Transition(S.IDLE)
    return t


TRANSITIONS = build_table(TurnPolicy())


class TurnMachine:
    """Holds the state; `feed` applies one input and returns the effects to carry out."""

    def __init__(self, policy: TurnPolicy | None = None) -> None:
        self.policy = policy or TurnPolicy()
        self.table = build_table(self.policy)
        self.state = TurnState.IDLE

    @property
    def busy(self) -> bool:
        """The services still work on an answer (its messages are expected)."""
        return self.state in (
            S.ANSWERING,
            S.SPEAKING,
            S.ANSWERING_CONTESTED,
            S.SPEAKING_CONTESTED,
        )

    @property
    def talking(self) -> bool:
        """The assistant talks: an answer is made or its audio is still queued."""
        return self.state is not S.IDLE

    @property
    def contested(self) -> bool:
        return self.state in _UNCONTESTED

    @property
    def deaf(self) -> bool:
        """Half duplex while talking: the user's audio must not reach ASR."""
        return self.policy.half_duplex and self.talking

    def feed(self, event: TurnInput) -> tuple[Effect, ...]:
        transition = self.table.get((self.state, event))
        if transition is None:
            return ()
        self.state = transition.target
        return transition.effects

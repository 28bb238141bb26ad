"""Sans-I/O endpointer: speech probabilities per VAD window in, VAD actions out.

No clock and no I/O: time is stream time, counted in windows of ``window_ms``. The
caller feeds one probability per window, in order, and applies the returned actions.

States (`shared.messages.VadState`), one transition table:

    QUIET --speech--> STARTING --speech lasted min_speech_ms--> SPEAKING
      ^                  |                                        |  ^
      |               silence (a blip: rejected)            silence  speech (resume)
      |                  v                                        v  |
      +----------------- QUIET            STOPPING <--silence_duration_ms-- PAUSING
      +------------------------------------- (transient: end of utterance)

Each window is classified with hysteresis (as Silero's own iterator does): SPEECH at or
above ``threshold``, SILENCE below ``threshold - unsure_margin``, UNSURE in between.
UNSURE keeps whatever is going on: it neither starts silence inside speech nor ends it.

`StateChanged` spans (stream ms), so every `VadEvent` says what it refers to:

* STARTING: onset candidate start .. now
* SPEAKING: speech onset .. now (also on resume after a pause)
* PAUSING: last voiced audio .. now (the silence so far)
* STOPPING: speech onset .. last voiced audio (the utterance)
* QUIET: end of what came before .. now
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from shared.messages import VadOptions, VadState

WINDOW_MS = 32  # Silero at 16 kHz: 512-sample windows
NEVER_MS = 10**12


class Voicing(Enum):
    SPEECH = "speech"
    UNSURE = "unsure"
    SILENCE = "silence"


@dataclass(frozen=True)
class EndpointerConfig:
    threshold: float = 0.5
    unsure_margin: float = 0.15
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    min_speech_ms: int = 150
    max_utterance_ms: int = 28_000  # Whisper sees at most 30 s in one window
    window_ms: int = WINDOW_MS

    @classmethod
    def from_options(
        cls,
        options: VadOptions,
        *,
        manual: bool = False,
        max_utterance_ms: int = 28_000,
        unsure_margin: float = 0.15,
    ) -> EndpointerConfig:
        """``manual``: the client ends turns (commit), so silence never ends an utterance."""
        return cls(
            threshold=options.threshold,
            unsure_margin=unsure_margin,
            prefix_padding_ms=options.prefix_padding_ms,
            silence_duration_ms=NEVER_MS if manual else options.silence_duration_ms,
            min_speech_ms=options.min_speech_ms,
            max_utterance_ms=max_utterance_ms,
        )


@dataclass(frozen=True)
class StateChanged:
    state: VadState
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class UtteranceBegan:
    """Speech confirmed. ``audio_begin_ms`` includes the prefix padding."""

    audio_begin_ms: int
    speech_begin_ms: int


@dataclass(frozen=True)
class UtteranceEnded:
    speech_begin_ms: int
    end_ms: int  # end of the last voiced window


Action = StateChanged | UtteranceBegan | UtteranceEnded


class Endpointer:
    """Turn detection for one audio stream."""

    def __init__(self, config: EndpointerConfig) -> None:
        self.config = config
        self.state = VadState.QUIET
        self._now_ms = 0  # end of the last window fed
        self._onset_ms = 0  # start of the current onset candidate / utterance speech
        self._last_voiced_ms = 0  # end of the last non-silent window inside speech
        self._floor_ms = 0  # prefix padding never reaches back into the previous utterance

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def last_voiced_ms(self) -> int:
        return self._last_voiced_ms

    @property
    def in_utterance(self) -> bool:
        return self.state in (VadState.SPEAKING, VadState.PAUSING)

    def classify(self, probability: float) -> Voicing:
        if probability >= self.config.threshold:
            return Voicing.SPEECH
        if probability < self.config.threshold - self.config.unsure_margin:
            return Voicing.SILENCE
        return Voicing.UNSURE

    def process(self, probability: float) -> list[Action]:
        """Feed the speech probability of the next window; return what happened."""
        start = self._now_ms
        self._now_ms += self.config.window_ms
        step = _TABLE[(self.state, self.classify(probability))]
        return step(self, start)

    def end_utterance(self) -> list[Action]:
        """Finish the utterance now (a commit, or a close with flush).

        A confirmed utterance ends at the last voiced audio (PAUSING) or now (SPEAKING);
        an unconfirmed onset is dropped like a blip.
        """
        if self.state is VadState.SPEAKING:
            self._last_voiced_ms = self._now_ms
            return self._stop()
        if self.state is VadState.PAUSING:
            return self._stop()
        if self.state is VadState.STARTING:
            return self._reject(self._now_ms)
        return []

    # ------------------------------------------------------------------ transitions

    def _stay(self, start: int) -> list[Action]:
        return []

    def _onset(self, start: int) -> list[Action]:
        self.state = VadState.STARTING
        self._onset_ms = start
        actions: list[Action] = [StateChanged(VadState.STARTING, start, self._now_ms)]
        return actions + self._confirm_if_long_enough()

    def _grow_onset(self, start: int) -> list[Action]:
        return self._confirm_if_long_enough()

    def _confirm_if_long_enough(self) -> list[Action]:
        if self._now_ms - self._onset_ms < self.config.min_speech_ms:
            return []
        self.state = VadState.SPEAKING
        self._last_voiced_ms = self._now_ms
        audio_begin = max(self._floor_ms, self._onset_ms - self.config.prefix_padding_ms, 0)
        return [
            StateChanged(VadState.SPEAKING, self._onset_ms, self._now_ms),
            UtteranceBegan(audio_begin_ms=audio_begin, speech_begin_ms=self._onset_ms),
        ]

    def _reject(self, start: int) -> list[Action]:
        # Too short to be speech: a click, a cough, a backchannel below min_speech_ms.
        self.state = VadState.QUIET
        return [StateChanged(VadState.QUIET, self._onset_ms, self._now_ms)]

    def _keep_speaking(self, start: int) -> list[Action]:
        self._last_voiced_ms = self._now_ms
        return self._cut_if_too_long()

    def _pause(self, start: int) -> list[Action]:
        self.state = VadState.PAUSING
        actions: list[Action] = [StateChanged(VadState.PAUSING, self._last_voiced_ms, self._now_ms)]
        return actions + self._stop_if_silent_long_enough() + self._cut_if_too_long()

    def _resume(self, start: int) -> list[Action]:
        self.state = VadState.SPEAKING
        self._last_voiced_ms = self._now_ms
        actions: list[Action] = [StateChanged(VadState.SPEAKING, self._onset_ms, self._now_ms)]
        return actions + self._cut_if_too_long()

    def _keep_pausing(self, start: int) -> list[Action]:
        return self._stop_if_silent_long_enough() + self._cut_if_too_long()

    def _stop_if_silent_long_enough(self) -> list[Action]:
        if self.state is not VadState.PAUSING:
            return []
        if self._now_ms - self._last_voiced_ms < self.config.silence_duration_ms:
            return []
        return self._stop()

    def _cut_if_too_long(self) -> list[Action]:
        # Whisper decodes at most 30 s at once; a monologue is cut into utterances.
        if not self.in_utterance:
            return []
        if self._now_ms - self._onset_ms < self.config.max_utterance_ms:
            return []
        if self.state is VadState.SPEAKING:
            self._last_voiced_ms = self._now_ms
        return self._stop()

    def _stop(self) -> list[Action]:
        onset, end = self._onset_ms, self._last_voiced_ms
        self.state = VadState.QUIET
        self._floor_ms = end
        return [
            StateChanged(VadState.STOPPING, onset, end),
            UtteranceEnded(speech_begin_ms=onset, end_ms=end),
            StateChanged(VadState.QUIET, end, self._now_ms),
        ]


_Step = Callable[[Endpointer, int], list[Action]]

_TABLE: dict[tuple[VadState, Voicing], _Step] = {
    (VadState.QUIET, Voicing.SPEECH): Endpointer._onset,
    (VadState.QUIET, Voicing.UNSURE): Endpointer._stay,
    (VadState.QUIET, Voicing.SILENCE): Endpointer._stay,
    (VadState.STARTING, Voicing.SPEECH): Endpointer._grow_onset,
    (VadState.STARTING, Voicing.UNSURE): Endpointer._grow_onset,
    (VadState.STARTING, Voicing.SILENCE): Endpointer._reject,
    (VadState.SPEAKING, Voicing.SPEECH): Endpointer._keep_speaking,
    (VadState.SPEAKING, Voicing.UNSURE): Endpointer._keep_speaking,
    (VadState.SPEAKING, Voicing.SILENCE): Endpointer._pause,
    (VadState.PAUSING, Voicing.SPEECH): Endpointer._resume,
    (VadState.PAUSING, Voicing.UNSURE): Endpointer._keep_pausing,
    (VadState.PAUSING, Voicing.SILENCE): Endpointer._keep_pausing,
}

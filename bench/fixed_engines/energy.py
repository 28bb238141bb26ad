"""Sans-I/O voicing by frame energy, shared by the fixed ASR and the load client.

The fixed ASR decides "voiced" per window of ``window_ms`` from its RMS; the load
client runs the very same decision over the audio it is about to send, so it knows
in advance which frame ends each utterance and which frame completes the silence that
ends the turn (what it subtracts to get the pipeline's own latency).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.asr.endpointer import (
    Action,
    Endpointer,
    EndpointerConfig,
    UtteranceEnded,
)
from shared.messages import VadOptions

SAMPLE_RATE = 16_000
BYTES_PER_SAMPLE = 2


def window_bytes(window_ms: int) -> int:
    return SAMPLE_RATE * window_ms // 1000 * BYTES_PER_SAMPLE


def voiced(pcm: bytes, threshold: float) -> bool:
    """True when the RMS of PCM16 ``pcm`` reaches ``threshold`` (int16 units)."""
    if not pcm:
        return False
    # Integer sum of squares, compared with threshold² · n: the same decision as
    # RMS >= threshold without a float copy, a mean and a square root per window.
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int64)
    return int(np.dot(samples, samples)) >= threshold * threshold * len(samples)


class EnergyEndpointer:
    """PCM16 of any length in, endpointer actions out, one decision per window."""

    def __init__(self, vad: VadOptions, *, threshold: float, window_ms: int) -> None:
        self.threshold = threshold
        self._window = window_bytes(window_ms)
        self._pending = b""
        # Each window is fed as probability 1 or 0, so the VAD threshold and its
        # hysteresis margin play no part; the timing options apply as in the real ASR.
        self.endpointer = Endpointer(
            EndpointerConfig(
                threshold=0.5,
                unsure_margin=0.0,
                prefix_padding_ms=vad.prefix_padding_ms,
                silence_duration_ms=vad.silence_duration_ms,
                min_speech_ms=vad.min_speech_ms,
                window_ms=window_ms,
            )
        )

    def feed(self, pcm: bytes) -> list[Action]:
        data = self._pending + pcm if self._pending else pcm
        actions: list[Action] = []
        whole = len(data) - len(data) % self._window
        for start in range(0, whole, self._window):
            loud = voiced(data[start : start + self._window], self.threshold)
            actions += self.endpointer.process(1.0 if loud else 0.0)
        self._pending = data[whole:]
        return actions


@dataclass(frozen=True)
class TurnMarks:
    """Where one utterance ends in a stream of windows (indices from 0)."""

    last_voiced: int  # the last window the energy decision calls voiced
    endpoint: int  # the window whose arrival completes the silence and ends the turn


def turn_marks(pcm: bytes, vad: VadOptions, *, threshold: float, window_ms: int) -> list[TurnMarks]:
    """Run the fixed ASR's decision over a whole stream; one mark per utterance."""
    ep = EnergyEndpointer(vad, threshold=threshold, window_ms=window_ms)
    step = window_bytes(window_ms)
    marks: list[TurnMarks] = []
    for index, start in enumerate(range(0, len(pcm) - len(pcm) % step, step)):
        for action in ep.feed(pcm[start : start + step]):
            if isinstance(action, UtteranceEnded):
                marks.append(TurnMarks(action.end_ms // window_ms - 1, index))
    return marks

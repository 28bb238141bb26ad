"""The session's recent audio in stream time: prefix padding and the utterance so far."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16_000
SAMPLES_PER_MS = SAMPLE_RATE // 1000

Samples = npt.NDArray[np.float32]


class StreamBuffer:
    """Float32 samples of one stream, addressed by stream milliseconds.

    Sample 0 is the first sample the session received. Old audio is discarded with
    `discard_before`, so memory stays bounded by the utterance plus prefix padding.
    The backing array grows by doubling and is compacted on discard: appending a
    100 ms frame never copies the whole utterance.
    """

    def __init__(self, initial_capacity: int = SAMPLE_RATE * 4) -> None:
        self._data: Samples = np.zeros(initial_capacity, dtype=np.float32)
        self._origin = 0  # stream sample index of self._data[0]
        self._length = 0  # valid samples in self._data

    @property
    def end_sample(self) -> int:
        return self._origin + self._length

    @property
    def end_ms(self) -> int:
        return self.end_sample // SAMPLES_PER_MS

    @property
    def start_ms(self) -> int:
        return -(-self._origin // SAMPLES_PER_MS)

    def append(self, samples: Samples) -> None:
        need = self._length + len(samples)
        if need > len(self._data):
            grown = np.zeros(max(need, 2 * len(self._data)), dtype=np.float32)
            grown[: self._length] = self._data[: self._length]
            self._data = grown
        self._data[self._length : need] = samples
        self._length = need

    def slice(self, begin_ms: int, end_ms: int | None = None) -> Samples:
        """A copy of [begin_ms, end_ms) clipped to what is held (safe to use off-thread)."""
        lo = max(begin_ms * SAMPLES_PER_MS - self._origin, 0)
        hi = self._length if end_ms is None else end_ms * SAMPLES_PER_MS - self._origin
        hi = min(max(hi, lo), self._length)
        return self._data[lo:hi].copy()

    def discard_before(self, ms: int) -> None:
        cut = min(max(ms * SAMPLES_PER_MS - self._origin, 0), self._length)
        if cut == 0:
            return
        remaining = self._length - cut
        self._data[:remaining] = self._data[cut : self._length]
        self._origin += cut
        self._length = remaining

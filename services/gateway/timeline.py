"""Maps stream time (ms of 16 kHz audio sent to ASR) back to when the gateway received it.

Voice-to-voice latency starts when the user stopped speaking. ASR reports that instant in
stream time (`TranscriptFinal.end_ms`); the client's audio containing it arrived at the
gateway at some wall-clock time, which this ring remembers. Bounded: a call keeps the last
``capacity`` chunks (minutes of audio at 100 ms chunks), older instants map to the oldest.
"""

from __future__ import annotations

import bisect
from collections import deque


class AudioTimeline:
    """A bounded ring of (stream end ms, receive time) per received chunk; sans-I/O."""

    def __init__(self, capacity: int = 4096) -> None:
        self._ends: deque[float] = deque(maxlen=capacity)
        self._times: deque[float] = deque(maxlen=capacity)
        self._samples = 0

    @property
    def stream_ms(self) -> float:
        """Stream time at the end of everything recorded so far."""
        return self._samples / 16.0

    def record(self, samples_16k: int, received_at: float) -> None:
        """Note that ``samples_16k`` more samples (16 kHz) came in at ``received_at``."""
        if samples_16k <= 0:
            return
        self._samples += samples_16k
        self._ends.append(self.stream_ms)
        self._times.append(received_at)

    def received_at(self, stream_ms: float) -> float | None:
        """Receive time of the chunk holding ``stream_ms``; ``None`` when nothing was seen."""
        if not self._ends:
            return None
        # deque supports indexing; bisect over it is O(log n) comparisons.
        i = bisect.bisect_left(self._ends, stream_ms)
        if i >= len(self._ends):
            i = len(self._ends) - 1
        return self._times[i]

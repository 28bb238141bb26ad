"""Drop audio frames already seen (a sender replays its ring buffer after a failover)."""

from __future__ import annotations


class SeqFilter:
    """Accepts strictly increasing sequence numbers; anything at or below the last is a replay.

    Core NATS keeps one publisher's order, so an older number can only be a replayed
    frame: counting it twice would shift stream time and duplicate speech.
    """

    def __init__(self) -> None:
        self._last: int | None = None
        self.duplicates = 0

    def accept(self, seq: int) -> bool:
        if self._last is not None and seq <= self._last:
            self.duplicates += 1
            return False
        self._last = seq
        return True

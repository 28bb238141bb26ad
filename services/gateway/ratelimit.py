"""Per-connection message-rate limits: token buckets over frames/s and bytes/s; sans-I/O.

A client that streams audio sends a few dozen frames and up to ~96 KB (48 kHz PCM16) per
second. Uploading a recording faster than real time is legitimate, so each bucket allows a
burst of ``burst_s`` seconds of its rate; a flood at network speed empties it and the
connection is closed (policy violation) instead of being served at the cost of every other
call on the replica. Nothing here reads the clock: every call passes ``now`` (monotonic
seconds), so tests drive time by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    OK = "ok"
    TOO_MANY_FRAMES = "too_many_frames"
    TOO_MANY_BYTES = "too_many_bytes"


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` banked; starts full."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"a token bucket needs a positive rate and burst, not {rate}/{burst}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def available(self, now: float) -> float:
        """Tokens available at ``now`` (refills; a clock that went back refills nothing)."""
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        return self._tokens

    def can_take(self, cost: float, now: float) -> bool:
        return self.available(now) >= cost

    def take(self, cost: float, now: float) -> bool:
        """Spend ``cost`` tokens if there are that many; a refused take spends nothing."""
        if not self.can_take(cost, now):
            return False
        self._tokens -= cost
        return True

    def spend(self, cost: float) -> None:
        """Spend ``cost`` tokens just checked with `available` (no second refill)."""
        self._tokens -= cost


@dataclass(frozen=True)
class RateLimits:
    """What one connection may send. Defaults leave ~10x headroom over 48 kHz audio."""

    frames_per_s: float = 200.0
    bytes_per_s: float = 1024 * 1024
    burst_s: float = 5.0

    def __post_init__(self) -> None:
        if self.frames_per_s <= 0 or self.bytes_per_s <= 0 or self.burst_s <= 0:
            raise ValueError("rate limits must be positive")


class MessageRateLimiter:
    """Admits or refuses each client frame against both budgets at once."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self._frames = TokenBucket(limits.frames_per_s, limits.frames_per_s * limits.burst_s, now)
        self._bytes = TokenBucket(limits.bytes_per_s, limits.bytes_per_s * limits.burst_s, now)

    def admit(self, size: int, now: float) -> Verdict:
        """Charge one frame of ``size`` bytes; a refused frame is charged to neither bucket."""
        # Each bucket refilled once per frame: this runs for every 20 ms of every call.
        if self._frames.available(now) < 1:
            return Verdict.TOO_MANY_FRAMES
        if self._bytes.available(now) < size:
            return Verdict.TOO_MANY_BYTES
        self._frames.spend(1)
        self._bytes.spend(size)
        return Verdict.OK


def frame_size(frame: str | bytes) -> int:
    """What a frame costs: its bytes; a text frame's characters (its UTF-8 size within 4x,
    without encoding it again just to measure it)."""
    return len(frame)


def refusal_reason(verdict: Verdict, limits: RateLimits) -> str:
    """The message a client is told (and the close reason, short enough for a close frame)."""
    if verdict is Verdict.TOO_MANY_FRAMES:
        return f"message rate limit exceeded ({limits.frames_per_s:.0f} frames/s)"
    if verdict is Verdict.TOO_MANY_BYTES:
        return f"data rate limit exceeded ({limits.bytes_per_s / 1024:.0f} KiB/s)"
    raise ValueError("an admitted frame has no refusal reason")

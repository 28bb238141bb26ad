"""Token buckets and the per-connection frame/byte limiter, on a hand-driven clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.ratelimit import (
    MessageRateLimiter,
    RateLimits,
    TokenBucket,
    Verdict,
    frame_size,
    refusal_reason,
)


def test_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert all(bucket.take(1, 0.0) for _ in range(20))
    assert not bucket.take(1, 0.0)
    assert not bucket.take(1, 0.05)  # half a token
    assert bucket.take(1, 0.1)
    assert not bucket.take(1, 0.1)
    assert bucket.available(100.0) == 20  # never more than the burst


def test_refused_take_spends_nothing_and_clock_going_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=5, now=10.0)
    assert not bucket.take(6, 10.0)
    assert bucket.available(10.0) == 5
    assert bucket.take(5, 10.0)
    assert bucket.available(9.0) == 0
    assert bucket.available(11.0) == 1


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)
    with pytest.raises(ValueError):
        RateLimits(frames_per_s=-1)


def test_real_time_audio_passes_and_a_fast_upload_fits_the_burst() -> None:
    limits = RateLimits(frames_per_s=100, bytes_per_s=200_000, burst_s=5)
    limiter = MessageRateLimiter(limits, now=0.0)
    # 10 minutes of 48 kHz PCM16 in 20 ms frames at real-time pace.
    frame = 48_000 * 2 // 50
    for i in range(50 * 600):
        assert limiter.admit(frame, i / 50) is Verdict.OK
    # Then 4 s of audio sent at once (a recorded question): within the 5 s burst.
    limiter = MessageRateLimiter(limits, now=0.0)
    assert all(limiter.admit(frame, 0.0) is Verdict.OK for _ in range(200))


def test_floods_are_refused_by_whichever_budget_runs_out() -> None:
    limits = RateLimits(frames_per_s=10, bytes_per_s=1000, burst_s=1)
    tiny = MessageRateLimiter(limits, now=0.0)
    verdicts = [tiny.admit(1, 0.0) for _ in range(11)]
    assert verdicts[:10] == [Verdict.OK] * 10 and verdicts[10] is Verdict.TOO_MANY_FRAMES
    big = MessageRateLimiter(limits, now=0.0)
    assert big.admit(600, 0.0) is Verdict.OK
    assert big.admit(600, 0.0) is Verdict.TOO_MANY_BYTES
    # The refused frame cost no frame token: nine more small frames still fit.
    assert all(big.admit(1, 0.0) is Verdict.OK for _ in range(9))
    assert big.admit(1, 0.0) is Verdict.TOO_MANY_FRAMES
    assert big.admit(1, 0.1) is Verdict.OK  # refilled


def test_frame_size_and_reasons() -> None:
    assert frame_size(b"\x00" * 7) == 7
    assert frame_size("héllo") == 5
    limits = RateLimits()
    assert "200 frames/s" in refusal_reason(Verdict.TOO_MANY_FRAMES, limits)
    assert "1024 KiB/s" in refusal_reason(Verdict.TOO_MANY_BYTES, limits)
    with pytest.raises(ValueError):
        refusal_reason(Verdict.OK, limits)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 2, allow_nan=False), st.integers(0, 5000)), min_size=1, max_size=200
    )
)
def test_never_admits_more_than_rate_times_time_plus_burst(
    steps: list[tuple[float, int]],
) -> None:
    limits = RateLimits(frames_per_s=20, bytes_per_s=10_000, burst_s=0.5)
    limiter = MessageRateLimiter(limits, now=0.0)
    now, frames, data = 0.0, 0, 0
    for gap, size in steps:
        now += gap
        if limiter.admit(size, now) is Verdict.OK:
            frames += 1
            data += size
        assert frames <= 20 * now + 10 + 1e-6
        assert data <= 10_000 * now + 5_000 + 1e-6

"""PCM16 helpers and resampling (libsoxr through the ``soxr`` package)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

BYTES_PER_SAMPLE = 2


def pcm16_to_float(pcm: bytes) -> npt.NDArray[np.float32]:
    """Little-endian PCM16 bytes -> float32 in [-1, 1)."""
    if len(pcm) % BYTES_PER_SAMPLE:
        raise ValueError("PCM16 data must have an even number of bytes")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(samples: npt.NDArray[np.float32]) -> bytes:
    clipped = np.clip(samples, -1.0, 32767.0 / 32768.0)
    return (clipped * 32768.0).astype("<i2").tobytes()


def duration_ms(pcm: bytes, sample_rate: int) -> float:
    return len(pcm) / BYTES_PER_SAMPLE / sample_rate * 1000.0


def rms_dbfs(pcm: bytes) -> float:
    """Loudness of a PCM16 buffer in dBFS (-inf for digital silence)."""
    if not pcm:
        return float("-inf")
    x = pcm16_to_float(pcm)
    power = float(np.mean(x.astype(np.float64) ** 2))
    return 10.0 * np.log10(power) if power > 0 else float("-inf")


def resample_pcm16(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a whole buffer (one sentence, one file)."""
    if in_rate == out_rate or not pcm:
        return pcm
    y = soxr.resample(np.frombuffer(pcm, dtype="<i2"), in_rate, out_rate, quality="HQ")
    return np.asarray(y, dtype="<i2").tobytes()


class StreamResampler:
    """Resample a stream chunk by chunk without clicks at chunk edges.

    Keeps libsoxr's filter state between chunks; ``flush`` returns the tail the
    filter still holds. One instance per direction of one call.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        )

    def process(self, pcm: bytes) -> bytes:
        if self._stream is None:
            return pcm
        x = np.frombuffer(pcm, dtype="<i2")
        return np.asarray(self._stream.resample_chunk(x), dtype="<i2").tobytes()

    def flush(self) -> bytes:
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream.clear()
        return np.asarray(tail, dtype="<i2").tobytes()

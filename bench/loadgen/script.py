"""What every simulated caller says: one shared cycle of utterances and pauses.

Sans-I/O. The cycle is built once per client process and shared by all its calls (a
call starts at the beginning of a different utterance), so 500 calls cost the memory of
one. The turn marks come from the fixed ASR's own energy decision
(`bench.fixed_engines.energy`), so the client knows beforehand which frame ends each
utterance and which frame completes the silence that ends the turn.
"""

from __future__ import annotations

from pydantic import BaseModel

from bench.fixed_engines.energy import turn_marks, window_bytes
from shared.messages import VadOptions

SAMPLE_RATE = 16_000


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * SAMPLE_RATE) * 2)


class Cycle(BaseModel):
    """Frame indices of one cycle (all calls share it; each wraps around it)."""

    frame_ms: int
    frames: int
    unit_starts: list[int]  # the first frame of each utterance's unit (lead silence first)
    voiced: list[int]  # per turn: the frame holding the last voiced audio
    endpoints: list[int]  # per turn: the frame that completes the end-of-turn silence


def build_cycle(
    clips: list[bytes],
    *,
    gap_s: float,
    lead_s: float,
    frame_ms: int,
    vad: VadOptions,
    threshold: float,
) -> tuple[bytes, Cycle]:
    """Concatenate ``lead silence + clip + gap`` for each clip; return PCM and marks.

    Raises ValueError when a clip does not come out as exactly one turn (a pause in it
    longer than the end-of-turn silence, or no voiced audio): the per-turn accounting
    relies on one answer per utterance.
    """
    step = window_bytes(frame_ms)
    units = []
    starts = []
    offset = 0
    for clip in clips:
        unit = silence(lead_s) + clip + silence(gap_s)
        unit += bytes(-len(unit) % step)  # whole frames, so every unit starts on one
        starts.append(offset // step)
        units.append(unit)
        offset += len(unit)
        marks = turn_marks(unit, vad, threshold=threshold, window_ms=frame_ms)
        if len(marks) != 1:
            raise ValueError(f"a clip makes {len(marks)} turns, not 1: raise the gap or threshold")
    pcm = b"".join(units)
    marks = turn_marks(pcm, vad, threshold=threshold, window_ms=frame_ms)
    cycle = Cycle(
        frame_ms=frame_ms,
        frames=len(pcm) // step,
        unit_starts=starts,
        voiced=[m.last_voiced for m in marks],
        endpoints=[m.endpoint for m in marks],
    )
    return pcm, cycle

"""Checks of the Bella event order of one turn (SPEC 3.1), shared by tests and benchmarks."""

from __future__ import annotations

import itertools

TURN_ORDER = ("SentenceEnd", "LLM_CHAT_BEGIN", "LLM_CHAT_DELTA", "TTS_BEGIN", "TTS_TTFT", "audio")


def order_violations(names: list[str]) -> list[str]:
    """Return what breaks the per-turn order in ``names`` (empty when it holds).

    SentenceBegin -> TranscriptionResultChanged* -> SentenceEnd -> LLM_CHAT_BEGIN ->
    LLM_CHAT_DELTA* -> TTS_BEGIN -> TTS_TTFT -> audio* -> LLM_CHAT_END / TTS_END.
    """
    problems: list[str] = []

    def first(name: str) -> int:
        return names.index(name) if name in names else -1

    positions = [(n, first(n)) for n in TURN_ORDER]
    missing = [n for n, i in positions if i < 0]
    if missing:
        return [f"missing {', '.join(missing)}"]
    for (a, ia), (b, ib) in itertools.pairwise(positions):
        if ia > ib:
            problems.append(f"{a} after {b}")
    sb = first("SentenceBegin")
    if sb < 0 or sb > first("SentenceEnd"):
        problems.append("SentenceBegin missing or after SentenceEnd")
    for partial_at, name in enumerate(names):
        if name == "TranscriptionResultChanged" and not sb <= partial_at < first("SentenceEnd"):
            problems.append("TranscriptionResultChanged outside its sentence")
            break
    tts_end = first("TTS_END")
    if tts_end < 0 or tts_end < max(i for i, n in enumerate(names) if n == "audio"):
        problems.append("TTS_END missing or before the last audio frame")
    if first("LLM_CHAT_END") < first("LLM_CHAT_DELTA"):
        problems.append("LLM_CHAT_END missing or before the deltas")
    return problems

"""Parse the engine's streamed chat-completion chunks: pure, no I/O.

llama.cpp's server streams OpenAI-shaped chunks: a first one with the role, one per
piece of text, a last one with ``finish_reason`` and ``timings``; a failure after the
request was accepted arrives as ``{"error": {...}}`` instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TextPiece:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str
    tokens: int | None = None  # answer tokens, when the engine reported them
    tokens_per_s: float | None = None
    prompt_tokens: int | None = None  # evaluated for this request (not from the cache)
    cached_tokens: int | None = None  # reused from the slot's cache


@dataclass(frozen=True)
class Failed:
    code: str  # the engine's stable error type, e.g. "exceed_context_size_error"


ChunkEvent = TextPiece | Finished | Failed


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_chunk(chunk: Mapping[str, Any]) -> list[ChunkEvent]:
    """The events in one chunk, in order (text before the finish in the same chunk)."""
    error = chunk.get("error")
    if error is not None:
        code = error.get("type") if isinstance(error, Mapping) else None
        return [Failed(code=str(code or "engine_error"))]
    events: list[ChunkEvent] = []
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return events
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, Mapping):
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(TextPiece(content))
    reason = choice.get("finish_reason")
    if reason is not None:
        timings = chunk.get("timings")
        timings = timings if isinstance(timings, Mapping) else {}
        events.append(
            Finished(
                reason=str(reason),
                tokens=_int_or_none(timings.get("predicted_n")),
                tokens_per_s=_float_or_none(timings.get("predicted_per_second")),
                prompt_tokens=_int_or_none(timings.get("prompt_n")),
                cached_tokens=_int_or_none(timings.get("cache_n")),
            )
        )
    return events

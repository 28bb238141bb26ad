"""Parsing the engine's streamed chunks (pure). Shapes are those xllamacpp emits."""

from __future__ import annotations

from services.llm.chunks import Failed, Finished, TextPiece, parse_chunk


def chunk(
    delta: dict[str, object], finish: str | None = None, **extra: object
) -> dict[str, object]:
    return {
        "choices": [{"finish_reason": finish, "index": 0, "delta": delta}],
        "object": "chat.completion.chunk",
        **extra,
    }


def test_role_chunk_carries_no_text() -> None:
    assert parse_chunk(chunk({"role": "assistant", "content": None})) == []


def test_text_chunk() -> None:
    assert parse_chunk(chunk({"content": "Paris"})) == [TextPiece("Paris")]


def test_final_chunk_reports_tokens_and_speed() -> None:
    timings = {"cache_n": 427, "prompt_n": 13, "predicted_n": 18, "predicted_per_second": 29.5}
    assert parse_chunk(chunk({}, "stop", timings=timings)) == [
        Finished(reason="stop", tokens=18, tokens_per_s=29.5, prompt_tokens=13, cached_tokens=427)
    ]


def test_text_and_finish_in_one_chunk_keep_their_order() -> None:
    assert parse_chunk(chunk({"content": "."}, "length")) == [
        TextPiece("."),
        Finished(reason="length"),
    ]


def test_error_chunk() -> None:
    error = {"error": {"code": 400, "message": "too long", "type": "exceed_context_size_error"}}
    assert parse_chunk(error) == [Failed(code="exceed_context_size_error")]
    assert parse_chunk({"error": "boom"}) == [Failed(code="engine_error")]


def test_odd_shapes_yield_nothing() -> None:
    assert parse_chunk({}) == []
    assert parse_chunk({"choices": []}) == []
    assert parse_chunk({"choices": ["x"]}) == []
    assert parse_chunk(chunk({"content": 3})) == []

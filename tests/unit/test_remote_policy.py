"""The sans-I/O parts of the remote backends: retry decisions, Retry-After, request
bodies, and assembling streamed chat chunks."""

from __future__ import annotations

import email.utils

from services.llm.chunks import Failed, Finished, TextPiece
from services.llm.remote import ChunkAssembler, chat_body
from shared.remote import RetryPolicy, is_retryable_status, parse_retry_after
from shared.routing import ChatRoute


def test_only_transient_statuses_are_retried() -> None:
    assert all(is_retryable_status(s) for s in (408, 429, 500, 502, 503, 504))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 422))


def test_retry_policy_backs_off_then_gives_up() -> None:
    policy = RetryPolicy(max_retries=2, backoff_s=0.5, max_retry_after_s=5.0)
    assert policy.delay(0) == 0.5
    assert policy.delay(1) == 1.0
    assert policy.delay(2) is None
    assert policy.delay(0, status=503) == 0.5
    assert policy.delay(0, status=401) is None
    assert policy.delay(0, status=429, retry_after=2.0) == 2.0
    # Longer than a live call can wait: fail now rather than hang the turn.
    assert policy.delay(0, status=429, retry_after=60.0) is None


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    when = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after(when, now=1_000_000.0) == 30.0
    assert parse_retry_after("soon") is None


def test_chat_body_keeps_openai_fields_and_names_the_provider_model() -> None:
    route = ChatRoute(
        backend="openai",
        base_url="http://h/v1",
        model="qwen-flash",
        extra_body={"enable_thinking": False},
    )
    request = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "temperature": 0.2,
        "cache_prompt": True,
        "id_slot": 3,
        "model": "my-name",
        "json_schema": {"type": "object"},
    }
    body = chat_body(request, route)
    assert body["model"] == "qwen-flash"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "id_slot" not in body and "cache_prompt" not in body
    assert body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert body["enable_thinking"] is False


def test_assembler_holds_the_finish_until_usage_arrives() -> None:
    a = ChunkAssembler()
    assert a.feed('{"choices":[{"delta":{"role":"assistant"}}]}') == []
    assert a.feed('{"choices":[{"delta":{"content":"Hi"}}]}') == [TextPiece("Hi")]
    assert a.feed('{"choices":[{"delta":{},"finish_reason":"stop"}]}') == []
    assert a.feed('{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3}}') == []
    assert a.feed("[DONE]") == [] and a.done
    assert a.end() == [Finished(reason="stop", tokens=3, prompt_tokens=12)]


def test_assembler_flags_bad_and_cut_streams() -> None:
    assert ChunkAssembler().feed("{not json") == [Failed(code="bad_chunk")]
    assert ChunkAssembler().feed('["a list"]') == [Failed(code="bad_chunk")]
    errored = ChunkAssembler().feed('{"error":{"type":"server_error","message":"x"}}')
    assert errored == [Failed(code="server_error")]
    cut = ChunkAssembler()
    cut.feed('{"choices":[{"delta":{"content":"Hal"}}]}')
    assert cut.end() == [Failed(code="truncated_stream")]

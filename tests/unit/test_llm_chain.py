"""The worker chain: compile-time checks, output parsing, and one turn's workers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.llm.chain import (
    WorkerSpecError,
    compile_conversation,
    main_user_content,
    parse_output,
    turn_user_message,
    worker_messages,
)
from services.llm.metrics import LlmMetrics
from services.llm.templates import PromptTemplateError
from services.llm.workers import TurnInput, TurnWorkerDeps, TurnWorkers
from shared.messages import ChatMessage, LlmWorkerEvent, VariableType, WorkerSpec, WorkerStatus

INTENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"intent": {"enum": ["weather", "music"]}, "city": {"type": "string"}},
    "required": ["intent"],
}


def spec(name: str, **fields: Any) -> WorkerSpec:
    return WorkerSpec(variable_name=name, **fields)


def json_worker(name: str = "intent", **fields: Any) -> WorkerSpec:
    fields.setdefault("json_schema", INTENT_SCHEMA)
    return spec(name, variable_type=VariableType.JSON, **fields)


# --------------------------------------------------------------------------- compile


def test_worker_results_reach_the_main_prompt_only() -> None:
    conv = compile_conversation(
        "You help {{ name }}.",
        "{{ rewrite | default(user_message) }} ({{ intent.city }})",
        {"name": "Ann"},
        [spec("rewrite"), json_worker()],
    )
    text = main_user_content(
        conv,
        [],
        "wether oslo",
        {"name": "Ann"},
        {"rewrite": "weather in Oslo?", "intent": {"city": "Oslo"}},
    )
    assert text == "weather in Oslo? (Oslo)"
    # A worker's own template cannot read another worker's result.
    with pytest.raises(PromptTemplateError, match="unknown variable rewrite"):
        compile_conversation("", None, {}, [spec("rewrite"), spec("b", prompt="{{ rewrite }}")])


@pytest.mark.parametrize(
    ("variables", "workers", "reason"),
    [
        ({}, [spec("a"), spec("a")], "used twice"),
        ({}, [spec("user_message")], "reserved"),
        ({"variables": 1}, [], "reserved"),
        ({}, [spec("a", json_schema={"type": "object"})], "needs variable_type 'json'"),
        ({}, [json_worker(json_schema={"type": "objekt"})], "json_schema is invalid"),
    ],
)
def test_bad_specs_are_refused(
    variables: dict[str, Any], workers: list[WorkerSpec], reason: str
) -> None:
    with pytest.raises(WorkerSpecError, match=reason):
        compile_conversation("", None, variables, workers)


def test_seed_rewrite_convention_without_a_main_prompt() -> None:
    conv = compile_conversation("sys", None, {}, [spec("rewrite_user_message")])
    results = {"rewrite_user_message": "What is the weather in Shanghai?"}
    assert (
        main_user_content(conv, [], "and shanghai", {}, results) == results["rewrite_user_message"]
    )
    assert main_user_content(conv, [], "and shanghai", {}, {}) == "and shanghai"


def test_worker_messages_and_text_none_turns() -> None:
    history = (
        ChatMessage(role="user", content="first"),
        ChatMessage(role="assistant", content="ok"),
    )
    conv = compile_conversation("", None, {"x": 1}, [spec("w", sys_prompt="S{{ x }}", prompt="")])
    messages = worker_messages(conv.workers[0], history, "now", {"x": 1})
    assert messages == [{"role": "system", "content": "S1"}, {"role": "user", "content": "now"}]
    assert turn_user_message(history, None) == "first"
    assert turn_user_message(history, "said") == "said"


# --------------------------------------------------------------------------- outputs


def test_parse_json_output() -> None:
    worker = compile_conversation("", None, {}, [json_worker()]).workers[0]
    assert parse_output(worker, '```json\n{"intent": "music"}\n```') == {"intent": "music"}
    assert parse_output(worker, 'Here: {"intent": "music"} ok?') == {"intent": "music"}
    with pytest.raises(Exception, match="not valid JSON"):
        parse_output(worker, "sure! here it is")
    with pytest.raises(Exception, match="does not match json_schema at intent"):
        parse_output(worker, '{"intent": "cooking"}')
    text = compile_conversation("", None, {}, [spec("t")]).workers[0]
    assert parse_output(text, "  hello \n") == "hello"
    with pytest.raises(Exception, match="no text"):
        parse_output(text, "  ")


# --------------------------------------------------------------------------- one turn


class Engine:
    """Answers worker requests from a table; ``hold`` keeps a model generating."""

    def __init__(self, answers: dict[str, str], hold: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.answers = answers
        self.hold = hold
        self.requests: list[dict[str, Any]] = []
        self.stopped: list[str] = []

    async def generate(self, request: dict[str, Any]) -> str:
        self.requests.append(request)
        key = request["messages"][0]["content"]
        if key in self.hold:
            try:
                await asyncio.Event().wait()
            finally:
                self.stopped.append(key)
        return self.answers[key]


def turn_workers(
    workers: list[WorkerSpec], engine: Engine, reported: asyncio.Queue[Any] | None = None
) -> tuple[TurnWorkers, list[Any]]:
    events: list[Any] = []

    async def publish(message: Any) -> None:
        events.append(message)
        if reported is not None:
            reported.put_nowait(message)

    conv = compile_conversation("", None, {}, workers)
    deps = TurnWorkerDeps(
        publish=publish, generate=engine.generate, metrics=LlmMetrics(CollectorRegistry())
    )
    turn = TurnInput(sid="s", turn=3, history=(), user_message="hi", variables={}, model="main-m")
    return TurnWorkers(conv.workers, turn, deps), events


def statuses(events: list[Any]) -> list[tuple[str, WorkerStatus]]:
    return [(e.variable_name, e.status) for e in events if isinstance(e, LlmWorkerEvent)]


async def test_blocking_results_and_a_failing_json_worker() -> None:
    engine = Engine({"rw": "Rewritten.", "js": '{"intent": "cooking"}', "bg": "later"})
    workers = [
        spec("rewrite", sys_prompt="rw"),
        json_worker(sys_prompt="js", model="other-m"),
        spec("notes", sys_prompt="bg", blocking=False),
    ]
    chain, events = turn_workers(workers, engine)
    await chain.start()
    results = await asyncio.wait_for(chain.blocking_results(), 5)
    assert results == {"rewrite": "Rewritten."}  # the invalid JSON result is left out
    await asyncio.wait_for(chain.wait(5), 5)
    got = statuses(events)
    assert got[:3] == [(w.variable_name, WorkerStatus.BEGIN) for w in workers]
    assert set(got[3:]) == {
        ("rewrite", WorkerStatus.END),
        ("intent", WorkerStatus.ERROR),
        ("notes", WorkerStatus.END),
    }
    error = next(e for e in events if e.status is WorkerStatus.ERROR)
    assert "does not match json_schema" in error.message and error.turn == 3
    assert {r.get("model") for r in engine.requests} == {"main-m", "other-m"}
    assert all(r["id_slot"] == -1 for r in engine.requests)  # never the session's own cache


async def test_cancel_stops_running_workers() -> None:
    engine = Engine({"slow": "never", "fast": "done"}, hold={"slow"})
    reported: asyncio.Queue[Any] = asyncio.Queue(maxsize=16)
    workers = [spec("a", sys_prompt="slow"), spec("b", sys_prompt="fast")]
    chain, _ = turn_workers(workers, engine, reported)
    await chain.start()
    waiting = asyncio.create_task(chain.blocking_results())
    while True:  # until the fast one has reported its result
        event = await asyncio.wait_for(reported.get(), 5)
        if (event.variable_name, event.status) == ("b", WorkerStatus.END):
            break
    assert chain.cancel() == ["a"]
    assert chain.cancel() == []  # reported once, even before the task has ended
    assert await asyncio.wait_for(waiting, 5) == {"b": "done"}
    await asyncio.wait_for(chain.aclose(), 5)
    assert engine.stopped == ["slow"] and not chain.running

"""``python -m services.llm`` over a real NATS: assignment, streamed answers, history,
Chinese, cancel. One replica process (one model load) serves the whole module."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared import subjects
from shared.bus import BusOptions, NatsBus
from shared.messages import (
    Cancel,
    LlmBegin,
    LlmClose,
    LlmDelta,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    LlmWorkerEvent,
    Message,
    ServiceError,
    ServiceName,
    SessionClosed,
    VariableType,
    WorkerSpec,
    WorkerStatus,
)
from shared.placement import assign_replica

LLM = ServiceName.LLM
CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass
class Replica:
    proc: subprocess.Popen[str]
    replica_id: str
    url: str
    load_s: float
    health_port: int


@pytest.fixture(scope="module")
def prompt_log() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="llm-prompts-") as d:
        yield Path(d) / "prompts.jsonl"


@pytest.fixture(scope="module")
def replica(nats_server: Any, prompt_log: Path) -> Iterator[Replica]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "NATS_"))} | {
        "NATS_URL": nats_server.url,
        "LLM_MAX_SESSIONS": "2",
        "PYTHONUNBUFFERED": "1",
        "LLM_PROMPT_LOG": str(prompt_log),
    }
    with tempfile.TemporaryFile(mode="w+") as log:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.llm"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:  # keeps reading so the child never blocks on a full pipe
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put("")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            while not (line := lines.get(timeout=180)).startswith("READY llm"):
                if not line:
                    log.seek(0)
                    pytest.fail(f"llm replica exited before READY:\n{log.read()[-3000:]}")
            ready = re.search(r"replica=(\S+) health_port=(\d+)", line)
            assert ready is not None, line
            yield Replica(
                proc,
                ready.group(1),
                nats_server.url,
                time.monotonic() - started,
                int(ready.group(2)),
            )
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
            assert proc.stdout is not None
            proc.stdout.close()


class Call:
    """One session as the gateway sees it: assign, open, send turns, read results."""

    def __init__(self, bus: NatsBus, replica: str, sid: str) -> None:
        self.bus, self.replica, self.sid = bus, replica, sid
        self.inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=2000)
        self.received: list[Message] = []

    async def on_message(self, message: Message) -> None:
        self.received.append(message)
        self.inbox.put_nowait(message)

    async def send(self, message: Any) -> None:
        await self.bus.publish(subjects.worker_in(LLM, self.replica), message)

    async def cancel(self, turn: int) -> None:
        await self.bus.publish(
            subjects.worker_ctl(LLM, self.replica), Cancel(sid=self.sid, turn=turn)
        )

    async def next(self, timeout_s: float = 60) -> Message:
        async with asyncio.timeout(timeout_s):
            return await self.inbox.get()

    async def answer(self, turn: int, text: str) -> tuple[list[Message], LlmEnd]:
        await self.send(LlmTurn(sid=self.sid, turn=turn, text=text))
        seen: list[Message] = []
        while True:
            message = await self.next()
            assert not isinstance(message, ServiceError), message
            seen.append(message)
            if isinstance(message, LlmEnd) and message.turn == turn:
                return seen, message


@pytest.fixture
async def call(replica: Replica) -> AsyncIterator[Call]:
    bus = await NatsBus.connect(BusOptions(url=replica.url, name="llm-test"))
    sid = uuid.uuid4().hex[:12]
    try:
        assigned = await assign_replica(bus, LLM, sid)
        assert assigned == replica.replica_id
        c = Call(bus, assigned, sid)
        await bus.subscribe(subjects.session_out(sid), c.on_message)
        await bus.nc.flush()
        await c.send(LlmOpen(sid=sid, temperature=0.0, max_tokens=64))
        yield c
        await c.send(LlmClose(sid=sid))
        while not isinstance(await c.next(), SessionClosed):
            pass
    finally:
        await bus.aclose()


def check_turn(seen: list[Message], end: LlmEnd) -> str:
    turn = [
        m
        for m in seen
        if getattr(m, "turn", None) == end.turn and not isinstance(m, LlmWorkerEvent)
    ]
    assert isinstance(turn[0], LlmBegin)
    deltas = [m for m in turn if isinstance(m, LlmDelta)]
    assert deltas, "no delta streamed"
    assert [d.seq for d in deltas] == list(range(len(deltas)))
    assert "".join(d.text for d in deltas) == end.text
    assert end.tokens >= len(deltas) - 1 and end.ttft_ms > 0
    return end.text


async def test_streams_an_answer_and_remembers_the_conversation(call: Call) -> None:
    seen, end = await call.answer(1, "What is the capital of France? Answer in one word.")
    assert "paris" in check_turn(seen, end).lower()
    seen, end = await call.answer(2, "What did I just ask you about?")
    text = check_turn(seen, end).lower()
    print(f"\n[llm] turn 2 ttft {end.ttft_ms:.0f} ms: {end.text!r}")
    assert "france" in text or "capital" in text or "paris" in text


async def test_answers_chinese_in_chinese(call: Call) -> None:
    seen, end = await call.answer(1, "中国的首都是哪里？请用一句话回答。")
    assert CJK.search(check_turn(seen, end)), end.text


async def test_cancel_after_the_first_delta_stops_the_stream(call: Call) -> None:
    await call.send(
        LlmTurn(sid=call.sid, turn=1, text="Count from one to one hundred in words, slowly.")
    )
    while not isinstance(await call.next(), LlmDelta):
        pass
    await call.cancel(1)
    # The next turn's LlmBegin is published after the cancel was handled: nothing of
    # turn 1 may follow it, and turn 1 never ends.
    seen, end = await call.answer(2, "Say OK.")
    begin2 = next(i for i, m in enumerate(call.received) if isinstance(m, LlmBegin) and m.turn == 2)
    assert not [m for m in call.received[begin2:] if getattr(m, "turn", None) == 1]
    assert not [m for m in call.received if isinstance(m, LlmEnd) and m.turn == 1]
    old = [m for m in call.received if isinstance(m, LlmDelta) and m.turn == 1]
    assert len(old) < 20, "turn 1 kept streaming after its cancel"
    check_turn(seen, end)


async def open_chain(replica: Replica, opened: LlmOpen) -> tuple[NatsBus, Call]:
    bus = await NatsBus.connect(BusOptions(url=replica.url, name="llm-chain-test"))
    c = Call(bus, await assign_replica(bus, LLM, opened.sid), opened.sid)
    await bus.subscribe(subjects.session_out(opened.sid), c.on_message)
    await bus.nc.flush()
    await c.send(opened)
    return bus, c


async def close_chain(bus: NatsBus, c: Call) -> None:
    try:
        await c.send(LlmClose(sid=c.sid))
        while not isinstance(await c.next(), SessionClosed):
            pass
    finally:
        await bus.aclose()


def prompts(path: Path, sid: str) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r["sid"] == sid]


def worker_events(c: Call, turn: int) -> dict[str, list[LlmWorkerEvent]]:
    found: dict[str, list[LlmWorkerEvent]] = {}
    for m in c.received:
        if isinstance(m, LlmWorkerEvent) and m.turn == turn:
            found.setdefault(m.variable_name, []).append(m)
    return found


async def test_worker_chain_feeds_the_main_prompt(replica: Replica, prompt_log: Path) -> None:
    sid = uuid.uuid4().hex[:12]
    workers = (
        # The seed's convention: a blocking rewrite worker replaces the user's words.
        WorkerSpec(
            variable_name="rewrite_user_message",
            max_tokens=16,
            temperature=0.0,
            sys_prompt="Rewrite the user's message as one clear question. Output only it.",
        ),
        WorkerSpec(
            variable_name="info",
            variable_type=VariableType.JSON,
            max_tokens=12,
            temperature=0.0,
            sys_prompt="You output JSON only.",
            json_schema={
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
            prompt='Output exactly this JSON and nothing else: {"city": "Paris"}',
        ),
        # Non-blocking, and its output can never match: an error, and the call goes on.
        WorkerSpec(
            variable_name="never",
            variable_type=VariableType.JSON,
            max_tokens=4,
            blocking=False,
            temperature=0.0,
            json_schema={"required": ["never_there_key"]},
            prompt="Say hello.",
        ),
    )
    opened = LlmOpen(
        sid=sid,
        temperature=0.0,
        max_tokens=8,
        workers=workers,
        system_prompt="You are brief. Caller: {{ caller }} in {{ info.city }}.",
        variables={"caller": "Ann"},
    )
    bus, c = await open_chain(replica, opened)
    try:
        seen, end = await c.answer(1, "um so like capital of france what is it")
        check_turn(seen, end)
        # Worker events come before the answer begins.
        first_begin = next(i for i, m in enumerate(seen) if isinstance(m, LlmBegin))
        assert all(isinstance(m, LlmWorkerEvent) for m in seen[:first_begin])
        while len(worker_events(c, 1).get("never", [])) < 2:
            await c.next()
        events = worker_events(c, 1)
        rewrite, info, never = events["rewrite_user_message"], events["info"], events["never"]
        assert [e.status for e in rewrite] == [WorkerStatus.BEGIN, WorkerStatus.END]
        assert [e.status for e in never] == [WorkerStatus.BEGIN, WorkerStatus.ERROR]
        assert "json" in never[1].message.lower()
        assert info[-1].status is WorkerStatus.END, info[-1].message
        assert json.loads(info[-1].result or "") == {"city": "Paris"}

        main = [r for r in prompts(prompt_log, sid) if r["stage"] == "main"]
        assert len(main) == 1
        messages = main[0]["messages"]
        assert messages[0] == {"role": "system", "content": "You are brief. Caller: Ann in Paris."}
        assert messages[-1] == {"role": "user", "content": rewrite[1].result}
    finally:
        await close_chain(bus, c)


async def test_cancel_reports_running_workers_cancelled(replica: Replica) -> None:
    sid = uuid.uuid4().hex[:12]
    worker = WorkerSpec(
        variable_name="story",
        blocking=True,
        max_tokens=400,
        temperature=0.0,
        prompt="Count from one to two hundred in words.",
    )
    bus, c = await open_chain(replica, LlmOpen(sid=sid, max_tokens=8, workers=(worker,)))
    try:
        await c.send(LlmTurn(sid=sid, turn=1, text="hello"))
        while not isinstance(m := await c.next(), LlmWorkerEvent) or m.status != "begin":
            pass
        await c.cancel(1)
        while not isinstance(m := await c.next(), LlmWorkerEvent) or m.status != "cancelled":
            assert not isinstance(m, LlmBegin | ServiceError), m
        assert m.variable_name == "story" and m.turn == 1
    finally:
        await close_chain(bus, c)


async def test_bad_template_is_refused_at_open(replica: Replica) -> None:
    sid = uuid.uuid4().hex[:12]
    bus, c = await open_chain(
        replica, LlmOpen(sid=sid, system_prompt="{{ ''.__class__.__mro__[1] }}")
    )
    try:
        error = await c.next()
        assert isinstance(error, ServiceError) and error.code == "bad_request", error
        assert "'__mro__' is not allowed" in error.message
    finally:
        await bus.aclose()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


async def test_replica_reports_llm_metrics(replica: Replica) -> None:
    # Runs last in this module, after the turns above.
    print(f"\n[llm] replica start to READY (model load + warm-up): {replica.load_s:.1f} s")
    text = await asyncio.to_thread(scrape, replica.health_port)
    for name in (
        "voice_llm_ttft_seconds_count",
        "voice_llm_tokens_per_second_count",
        "voice_llm_prefill_seconds_count",
        "voice_llm_generated_tokens_total",
    ):
        found = re.search(rf'^{name}{{service="llm"}} (\S+)$', text, re.MULTILINE)
        assert found and float(found.group(1)) > 0, name
    assert 'voice_llm_turns_total{result="cancelled",service="llm"}' in text

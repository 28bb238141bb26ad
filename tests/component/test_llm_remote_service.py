"""``python -m services.llm`` routing to a remote model over a real NATS: a replica with
a routing table (``VOICE_MODELS_FILE``) and no embedded model (``LLM_EMBEDDED=false``)
refuses a call for a model it does not serve (UNKNOWN_MODEL at assignment) and answers
a call for its remote model, served by llama.cpp's HTTP server in another process."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared import subjects
from shared.bus import BusOptions, NatsBus
from shared.errors import UnknownModelError
from shared.messages import (
    LlmBegin,
    LlmClose,
    LlmDelta,
    LlmEnd,
    LlmOpen,
    LlmTurn,
    Message,
    ServiceError,
    ServiceName,
    SessionClosed,
)
from shared.modelfiles import QWEN_05B, ensure_model
from shared.placement import assign_replica
from shared.settings import CommonSettings
from tests.support.servers import listening_server

LLM = ServiceName.LLM


@pytest.fixture(scope="module")
def chat_url() -> Iterator[str]:
    model = ensure_model(QWEN_05B, CommonSettings().model_cache) / QWEN_05B.filename
    with listening_server(["tests.support.chat_server", str(model)]) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def replica(
    nats_server: Any, chat_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    models = tmp_path_factory.mktemp("routing") / "models.toml"
    models.write_text(
        '[defaults]\nllm = "local-qwen"\n\n'
        f'[llm.local-qwen]\nbackend = "openai"\nbase_url = "{chat_url}"\n'
        'model = "qwen2.5-coder-0.5b"\nread_timeout_s = 60\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "NATS_"))} | {
        "NATS_URL": nats_server.url,
        "VOICE_MODELS_FILE": str(models),
        "LLM_EMBEDDED": "false",
        "LLM_MAX_SESSIONS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.llm"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)
            lines.put("")

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            while not (line := lines.get(timeout=120)).startswith("READY llm"):
                if not line:
                    log.seek(0)
                    pytest.fail(f"llm replica exited before READY:\n{log.read()[-3000:]}")
            ready = re.search(r"replica=(\S+) health_port=(\d+)", line)
            assert ready is not None, line
            yield ready.group(1), int(ready.group(2))
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


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


async def test_refuses_unknown_models_and_answers_with_the_remote_one(
    nats_server: Any, replica: tuple[str, int]
) -> None:
    replica_id, health_port = replica
    bus = await NatsBus.connect(BusOptions(url=nats_server.url, name="llm-remote-test"))
    inbox: asyncio.Queue[Message] = asyncio.Queue(maxsize=1000)

    async def on_message(message: Message) -> None:
        inbox.put_nowait(message)

    async def next_message() -> Message:
        async with asyncio.timeout(60):
            return await inbox.get()

    try:
        # Neither a name nobody configured nor the switched-off embedded model.
        for model in ("gpt-imaginary", "qwen2.5-0.5b"):
            with pytest.raises(UnknownModelError, match=model):
                await assign_replica(bus, LLM, uuid.uuid4().hex[:12], models=(model,))

        sid = uuid.uuid4().hex[:12]
        assert await assign_replica(bus, LLM, sid, models=("local-qwen",)) == replica_id
        await bus.subscribe(subjects.session_out(sid), on_message)
        await bus.nc.flush()
        send = subjects.worker_in(LLM, replica_id)
        await bus.publish(
            send, LlmOpen(sid=sid, model="local-qwen", temperature=0.0, max_tokens=32)
        )
        await bus.publish(send, LlmTurn(sid=sid, turn=1, text="Name one colour of the sky."))
        seen: list[Message] = []
        while not isinstance(message := await next_message(), LlmEnd):
            assert not isinstance(message, ServiceError), message
            seen.append(message)
        assert isinstance(seen[0], LlmBegin)
        deltas = [m.text for m in seen if isinstance(m, LlmDelta)]
        assert deltas and "".join(deltas) == message.text and message.tokens > 0
        await bus.publish(send, LlmClose(sid=sid))
        while not isinstance(await next_message(), SessionClosed):
            pass
    finally:
        await bus.aclose()

    metrics = await asyncio.to_thread(scrape, health_port)
    completion = re.search(
        r'voice_remote_tokens_total\{kind="completion",model="local-qwen",service="llm"\} (\S+)',
        metrics,
    )
    assert completion is not None and float(completion.group(1)) == message.tokens
    assert re.search(r'voice_remote_requests_total\{model="local-qwen",result="ok"', metrics)

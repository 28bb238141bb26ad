"""The llama.cpp engine (xllamacpp) behind a small interface we own.

xllamacpp embeds llama.cpp's own server: continuous batching over ``n_parallel``
slots, each with its own KV cache, and prompt caching (a request that starts with
the tokens a slot already holds only evaluates the rest). We pin each session to a
slot (``id_slot``) so its persona and history stay cached across turns.

Calls block in native code, with the GIL released, until the answer is complete;
with ``"stream": true`` the callback runs on the calling thread once per chunk and
returning ``True`` from it stops the generation (documented in the xllamacpp README).

The embedded server also listens on an ephemeral loopback HTTP port that cannot be
turned off; a random API key nobody knows closes it (in-process calls bypass it).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import xllamacpp

from shared.errors import EngineError

log = logging.getLogger(__name__)

OnChunk = Callable[[Any], bool]
"""Called per streamed chunk on the generating thread; ``True`` stops generating."""


class ChatBackend(Protocol):
    """A chat model that streams; blocking calls, safe from several threads at once."""

    def load(self) -> None: ...

    def stream_chat(self, request: Mapping[str, Any], on_chunk: OnChunk) -> None:
        """Run one streamed chat completion; raises `EngineError` if it is refused."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class LlamaOptions:
    model_path: Path
    n_parallel: int
    ctx_per_slot: int
    threads: int = 2
    prompt_cache_mib: int = 256
    verbosity: int = 0


class LlamaCppBackend:
    """`ChatBackend` over ``xllamacpp.Server``."""

    def __init__(self, options: LlamaOptions) -> None:
        self.options = options
        self._server: Any = None

    def load(self) -> None:
        """Load the model (blocking, seconds) and warm it up once; idempotent."""
        if self._server is not None:
            return
        o = self.options
        if not o.model_path.is_file():
            raise EngineError(f"LLM model file not found: {o.model_path}")
        params = xllamacpp.CommonParams()
        params.model.path = str(o.model_path)
        params.n_parallel = o.n_parallel
        # One KV cache per slot (kv_unified off), so n_ctx is split evenly between slots.
        params.n_ctx = o.ctx_per_slot * o.n_parallel
        params.cpuparams.n_threads = o.threads
        params.cpuparams_batch.n_threads = o.threads
        params.cache_prompt = True
        params.cache_ram_mib = o.prompt_cache_mib
        params.warmup = True
        params.verbosity = o.verbosity
        params.ui = False
        params.endpoint_slots = False
        params.n_threads_http = 1
        params.api_keys = [secrets.token_urlsafe(24)]
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:
            raise EngineError(f"cannot load LLM model {o.model_path.name}: {exc}") from exc
        self._warm_up()

    def _warm_up(self) -> None:
        # The first real decode pays for lazily built compute graphs; pay it here, once.
        def on_chunk(chunk: Any) -> bool:
            return False

        self.stream_chat(
            {
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 2,
                "temperature": 0.0,
                "stream": True,
            },
            on_chunk,
        )

    def stream_chat(self, request: Mapping[str, Any], on_chunk: OnChunk) -> None:
        server = self._server
        if server is None:
            raise EngineError("LLM engine is not loaded")
        try:
            server.handle_chat_completions(dict(request), on_chunk)
        except ValueError as exc:  # a request the server refuses before generating
            raise EngineError(f"request refused: {exc}") from exc

    def close(self) -> None:
        # The server's destructor joins its threads and frees the model and KV memory.
        self._server = None

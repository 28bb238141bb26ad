"""The LLM `shared.worker.Engine`: one llama.cpp model shared by every session.

Generation is blocking native code, so each request runs on a thread of the engine's
own pool (the loop's default executor has too few threads for several concurrent
answers plus prefills) and streams back through a `TokenStream`. Each session owns a
slot of the model (its KV cache) for as long as it lives.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.llm.backend import ChatBackend, LlamaCppBackend, LlamaOptions
from services.llm.chunks import Failed, parse_chunk
from services.llm.metrics import LlmMetrics
from services.llm.session import LlmSession, SessionOptions
from services.llm.settings import LlmSettings
from services.llm.stream import TokenStream
from shared.errors import EngineError
from shared.messages import LlmClose, LlmOpen, Message, ServiceName, WireModel
from shared.modelfiles import QWEN_05B, ensure_model
from shared.worker import Publish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    model_cache: Path
    model_path: Path | None = None  # None: the packaged, verified Qwen2.5-Coder 0.5B
    slots: int = 4
    ctx_per_session: int = 4096
    threads: int = 2
    prompt_cache_mib: int = 256
    verbosity: int = 0
    max_tokens_limit: int = 512
    prefill: bool = True

    @classmethod
    def from_settings(cls, settings: LlmSettings) -> EngineOptions:
        return cls(
            model_cache=settings.model_cache,
            model_path=settings.model_path,
            slots=settings.max_sessions,
            ctx_per_session=settings.ctx_per_session,
            threads=settings.threads,
            prompt_cache_mib=settings.prompt_cache_mib,
            verbosity=settings.engine_verbosity,
            max_tokens_limit=settings.max_tokens_limit,
            prefill=settings.prefill,
        )


class LlmEngine:
    """Implements `shared.worker.Engine` for the LLM service."""

    service = ServiceName.LLM
    open_types: tuple[type[WireModel], ...] = (LlmOpen,)
    close_types: tuple[type[WireModel], ...] = (LlmClose,)

    def __init__(self, options: EngineOptions, metrics: LlmMetrics) -> None:
        self.options = options
        self.metrics = metrics
        self._backend: ChatBackend | None = None
        self._free_slots = list(range(options.slots))
        # Per slot: its running answer, one abandoned answer still reaching its next
        # token, and a prefill; more would only queue inside the engine anyway.
        self._executor = ThreadPoolExecutor(
            max_workers=3 * options.slots, thread_name_prefix="llm-gen"
        )

    # ------------------------------------------------------------------ Engine

    # Model names this replica serves (the routing table); the embedded engine's own
    # name is always one of them.
    models: frozenset[str] = frozenset({"qwen2.5-0.5b"})

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in models if m not in self.models)

    def load(self) -> None:
        """Verify and load the model, warm it up; blocking (the runtime runs it in a thread)."""
        if self._backend is not None:
            return
        path = self.options.model_path
        if path is None:
            path = ensure_model(QWEN_05B, self.options.model_cache) / QWEN_05B.filename
        backend = LlamaCppBackend(
            LlamaOptions(
                model_path=path,
                n_parallel=self.options.slots,
                ctx_per_slot=self.options.ctx_per_session,
                threads=self.options.threads,
                prompt_cache_mib=self.options.prompt_cache_mib,
                verbosity=self.options.verbosity,
            )
        )
        backend.load()
        self._backend = backend
        log.info("LLM model %s loaded, %d slots", path, self.options.slots)

    async def open_session(
        self, message: Message, publish: Publish, *, prefill: bool | None = None
    ) -> LlmSession:
        """A session for ``message`` (an `LlmOpen`); its prefill starts at once.

        ``prefill`` overrides the configured default (benchmarks compare both).
        """
        if not isinstance(message, LlmOpen):
            raise TypeError(f"expected llm.open, got {message.type}")
        if self._backend is None:
            raise EngineError("LLM engine is not loaded")
        slot = self._free_slots.pop(0) if self._free_slots else None
        if slot is None:
            # More sessions than slots (a misconfiguration): still served, uncached.
            log.warning("no free LLM slot for session %s; its prompt will not stay cached", message.sid)

        def release() -> None:
            if slot is not None:
                self._free_slots.append(slot)
                self._free_slots.sort()

        session = LlmSession(
            message,
            publish=publish,
            start=self.start_generation,
            metrics=self.metrics,
            options=SessionOptions(
                ctx_per_session=self.options.ctx_per_session,
                max_tokens_limit=self.options.max_tokens_limit,
                prefill=self.options.prefill if prefill is None else prefill,
            ),
            slot=slot,
            release_slot=release,
        )
        session.start_prefill()
        return session

    async def aclose(self) -> None:
        """Wait for the generation threads (each stops at its next token), free the model."""
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # ------------------------------------------------------------------ generation

    def start_generation(self, request: dict[str, Any], stream: TokenStream) -> None:
        """Run ``request`` on a pool thread; its events (then a close) arrive on ``stream``."""
        self._executor.submit(self._generate, request, stream)

    def _generate(self, request: dict[str, Any], stream: TokenStream) -> None:
        backend = self._backend
        if backend is None or stream.stop_requested:
            stream.close()
            return

        def on_chunk(chunk: Any) -> bool:
            # Runs on this thread inside native code: it must never raise.
            try:
                events = parse_chunk(chunk) if isinstance(chunk, dict) else []
                return not stream.offer(events)
            except Exception:
                log.exception("unreadable chunk from the engine")
                stream.offer([Failed(code="bad_chunk")])
                return True

        try:
            backend.stream_chat(request, on_chunk)
        except EngineError as exc:
            log.warning("engine refused a request: %s", exc)
            stream.close([Failed(code="request_refused")])
        except Exception:
            log.exception("engine failed")
            stream.close([Failed(code="engine_error")])
        else:
            stream.close()

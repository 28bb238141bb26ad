"""The LLM `shared.worker.Engine`: the model routing table's chat models, shared by every session.

Each request names its model (``request["model"]``; absent or None: the table's
default, normally the embedded one) and is routed:

* embedded: one llama.cpp model. Generation is blocking native code, so the request
  runs on a thread of the engine's own pool (the loop's default executor has too few
  threads for several concurrent answers plus prefills). Each session owns a slot of
  the model (its KV cache) for as long as it lives.
* openai: a `RemoteChat` task on the event loop, owned by the engine.

Either way the events stream back through the session's `TokenStream`.
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
from services.llm.remote import RemoteChat
from services.llm.session import LlmSession, SessionOptions
from services.llm.settings import LlmSettings
from services.llm.stream import TokenStream
from shared.errors import ConfigError, EngineError
from shared.messages import LlmClose, LlmOpen, Message, ServiceName, WireModel
from shared.modelfiles import QWEN_05B, ensure_model
from shared.remote import RemoteMetrics
from shared.routing import ChatRoute, EmbeddedRoute, RoutingTable, embedded_only
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
    # False: serve only the routing table's remote models, never load the embedded one.
    embedded: bool = True
    prompt_log: Path | None = None  # LLM_PROMPT_LOG: record every rendered prompt

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
            embedded=settings.embedded,
            prompt_log=settings.prompt_log,
        )


class LlmEngine:
    """Implements `shared.worker.Engine` for the LLM service."""

    service = ServiceName.LLM
    open_types: tuple[type[WireModel], ...] = (LlmOpen,)
    close_types: tuple[type[WireModel], ...] = (LlmClose,)

    def __init__(
        self,
        options: EngineOptions,
        metrics: LlmMetrics,
        routing: RoutingTable | None = None,
    ) -> None:
        self.options = options
        self.metrics = metrics
        self.routing = routing if routing is not None else embedded_only()
        # Model names this replica serves: the routing table (the embedded one included,
        # unless it is switched off).
        served = self.routing.models(ServiceName.LLM)
        if not options.embedded:
            embedded_names = {
                name
                for name, route in self.routing.routes(ServiceName.LLM).items()
                if isinstance(route, EmbeddedRoute)
            }
            served -= embedded_names
            if self.routing.default_model(ServiceName.LLM) in embedded_names:
                raise ConfigError(
                    "the embedded LLM is switched off, so the routing table must name "
                    "a remote default model ([defaults] llm = ...)"
                )
        self.models = served
        self._remote_metrics = RemoteMetrics(ServiceName.LLM.value, metrics.registry)
        self._remotes: dict[str, RemoteChat] = {}
        self._remote_tasks: set[asyncio.Task[None]] = set()
        self._backend: ChatBackend | None = None
        self._free_slots = list(range(options.slots))
        # Per slot: its running answer, one abandoned answer still reaching its next
        # token, and a prefill; more would only queue inside the engine anyway.
        self._executor = ThreadPoolExecutor(
            max_workers=3 * options.slots, thread_name_prefix="llm-gen"
        )

    # ------------------------------------------------------------------ Engine

    def unknown_models(self, models: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(m for m in models if m not in self.models)

    def load(self) -> None:
        """Verify and load the model, warm it up, set up the remote models; blocking.

        A remote model whose API key variable is unset fails here (`ConfigError`).
        """
        for name, route in self.routing.routes(ServiceName.LLM).items():
            if isinstance(route, ChatRoute) and name not in self._remotes:
                self._remotes[name] = RemoteChat(name, route, self._remote_metrics)
                log.info("LLM model %s -> %s (%s)", name, route.base_url, route.model)
        if self._backend is not None or not self.options.embedded:
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
        embedded = self._is_embedded(message.model)
        if embedded and self._backend is None:
            raise EngineError("LLM engine is not loaded")
        slot = self._free_slots.pop(0) if self._free_slots and embedded else None
        if slot is None and embedded:
            # More sessions than slots (a misconfiguration): still served, uncached.
            log.warning(
                "no free LLM slot for session %s; its prompt will not stay cached", message.sid
            )

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
                # A remote model caches (and bills) prompts on its own terms.
                prefill=embedded and (self.options.prefill if prefill is None else prefill),
                prompt_log=self.options.prompt_log,
                continues_answers=embedded,
            ),
            slot=slot,
            release_slot=release,
        )
        session.start_prefill()
        return session

    async def aclose(self) -> None:
        """Stop remote answers, wait for the generation threads (each stops at its next
        token), free the model and the HTTP clients."""
        for task in self._remote_tasks:
            task.cancel()
        if self._remote_tasks:
            await asyncio.wait(list(self._remote_tasks))
        for remote in self._remotes.values():
            await remote.aclose()
        self._remotes.clear()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # ------------------------------------------------------------------ generation

    def _is_embedded(self, model: str | None) -> bool:
        try:
            name, route = self.routing.resolve(ServiceName.LLM, model)
        except KeyError:
            return False  # refused per request by start_generation, with a clear code
        return isinstance(route, EmbeddedRoute) and name in self.models

    def start_generation(self, request: dict[str, Any], stream: TokenStream) -> None:
        """Route ``request`` by its ``model``; its events (then a close) arrive on ``stream``.

        Call on the event loop. Embedded requests run on a pool thread, remote ones as
        a task owned by the engine, cancelled when the stream is stopped.
        """
        model = request.get("model")
        try:
            name, route = self.routing.resolve(
                ServiceName.LLM, model if isinstance(model, str) else None
            )
        except KeyError:
            log.warning("no LLM model named %r in the routing table", model)
            stream.close([Failed(code="unknown_model")])
            return
        if name not in self.models:
            log.warning("LLM model %r is switched off in this replica", name)
            stream.close([Failed(code="unknown_model")])
            return
        if isinstance(route, EmbeddedRoute):
            engine_request = {k: v for k, v in request.items() if k != "model"}
            self._executor.submit(self._generate, engine_request, stream)
            return
        remote = self._remotes.get(name)
        if remote is None:
            stream.close([Failed(code="engine_not_loaded")])
            return
        task = asyncio.get_running_loop().create_task(
            remote.generate(request, stream), name=f"llm-remote-{name}"
        )
        self._remote_tasks.add(task)
        task.add_done_callback(self._remote_tasks.discard)
        stream.add_stop_callback(task.cancel)

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

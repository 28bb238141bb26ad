"""A Bella ``StartTranscription`` payload -> the call's `CallOptions`, checked.

Everything the LLM service would refuse later is checked here, so a bad session fails
with ``TaskFailed`` (client error) at once instead of after placement: worker specs,
JSON schemas, the prompt templates themselves (`services.llm.chain.compile_conversation`,
the same code the LLM replica runs), the persona name.

Precedence: the session's ``llm_option.main.sys_prompt`` and ``tts_option.voice`` over
the selected persona's (``payload.persona``, else the deployment's default persona).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import JsonValue, TypeAdapter, ValidationError

from services.gateway.bella.codec import BellaError
from services.gateway.bella.messages import LlmWorker, StartPayload
from services.gateway.call import CallOptions
from services.gateway.conversation import ConversationDefaults
from services.gateway.personas import Persona
from services.llm.chain import WorkerSpecError, compile_conversation
from shared.errors import ProtocolError
from shared.messages import VadOptions, VariableType, WorkerSpec

_TEXT_TYPES = frozenset({"text", "string", "str"})
_JSON_TYPES = frozenset({"json", "object"})
_VARIABLES = TypeAdapter(dict[str, JsonValue])
_AUTO_MODELS = frozenset({"", "auto", "default"})


def _refuse(message: str, kind: str, task_id: str) -> BellaError:
    return BellaError(message, kind=kind, task_id=task_id)


def _variable_type(worker: LlmWorker, where: str, task_id: str) -> VariableType:
    given = (worker.variable_type or "").strip().lower()
    if not given:
        return VariableType.JSON if worker.json_schema is not None else VariableType.TEXT
    if given in _TEXT_TYPES:
        return VariableType.TEXT
    if given in _JSON_TYPES:
        return VariableType.JSON
    raise _refuse(
        f"{where}.variable_type {worker.variable_type!r}: use 'text' or 'json'",
        "bad_worker",
        task_id,
    )


def _json_schema(worker: LlmWorker, where: str, task_id: str) -> dict[str, Any] | None:
    schema = worker.json_schema
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise _refuse(f"{where}.json_schema is not valid JSON: {exc}", "bad_worker", task_id)
        if not isinstance(schema, dict):
            raise _refuse(f"{where}.json_schema must be a JSON object", "bad_worker", task_id)
    return schema


def _model(name: str | None) -> str | None:
    """A model name to route on; ``None`` (the deployment's default) for the usual aliases."""
    if name is None or name.strip().lower() in _AUTO_MODELS:
        return None
    return name.strip()


def worker_specs(workers: list[LlmWorker], task_id: str) -> tuple[WorkerSpec, ...]:
    """The wire specs of ``llm_option.workers``; `BellaError` names the bad field."""
    specs = []
    for i, w in enumerate(workers):
        where = f"llm_option.workers[{i}]"
        if not w.variable_name:
            raise _refuse(f"{where}.variable_name is required", "bad_worker", task_id)
        fields: dict[str, Any] = {
            "model": _model(w.model),
            "blocking": w.blocking,
            "variable_name": w.variable_name,
            "variable_type": _variable_type(w, where, task_id),
            "sys_prompt": w.sys_prompt or "",
            "prompt": w.prompt or "",
            "json_schema": _json_schema(w, where, task_id),
        }
        if w.temperature is not None:
            fields["temperature"] = w.temperature
        if w.max_tokens is not None:
            fields["max_tokens"] = w.max_tokens
        try:
            specs.append(WorkerSpec.model_validate(fields))
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            field = ".".join(str(p) for p in err["loc"])
            raise _refuse(f"{where}.{field}: {err['msg']}", "bad_worker", task_id) from exc
    return tuple(specs)


def _persona(payload: StartPayload, defaults: ConversationDefaults, task_id: str) -> Persona | None:
    if payload.persona is None or not payload.persona.strip():
        return defaults.default_persona
    try:
        return defaults.personas.select(payload.persona)
    except ProtocolError as exc:
        raise _refuse(str(exc), "unknown_persona", task_id) from exc


def _variables(raw: Mapping[str, Any], task_id: str) -> dict[str, JsonValue]:
    try:
        return _VARIABLES.validate_python(dict(raw))
    except ValidationError as exc:
        raise _refuse(f"variables: {exc.errors()[0]['msg']}", "bad_variables", task_id) from exc


def call_options(
    payload: StartPayload,
    *,
    sid: str,
    answer: bool,
    task_id: str,
    defaults: ConversationDefaults,
) -> CallOptions:
    """The options of the call ``payload`` starts; raises `BellaError` (client error)."""
    vad = VadOptions()
    if payload.max_sentence_silence is not None:
        vad = VadOptions(silence_duration_ms=payload.max_sentence_silence)
    llm = payload.llm_option
    main = llm.main if llm and llm.main else None
    tts = payload.tts_option
    options = CallOptions(
        sid=sid,
        answer=answer,
        client_rate=payload.sample_rate,
        partials=payload.enable_intermediate_result,
        vad=vad,
        tts_rate=tts.sample_rate if tts else 24000,
        max_history=defaults.max_history,
    )
    if not answer:
        return options  # transcription only: nothing reaches an LLM or TTS
    persona = _persona(payload, defaults, task_id)
    system_prompt = main.sys_prompt if main and main.sys_prompt else ""
    if not system_prompt and persona is not None:
        system_prompt = persona.system_prompt
    voice = tts.voice if tts and tts.voice else None
    if voice is None and persona is not None:
        voice = persona.voice
    variables = _variables(payload.variables, task_id)
    workers = worker_specs(llm.workers if llm else [], task_id)
    prompt = main.prompt if main and main.prompt else None
    try:
        compile_conversation(system_prompt, prompt, variables, workers)
    except WorkerSpecError as exc:
        raise _refuse(str(exc), "bad_worker", task_id) from exc
    except ProtocolError as exc:
        raise _refuse(str(exc), "bad_template", task_id) from exc
    return CallOptions(
        sid=sid,
        answer=answer,
        client_rate=payload.sample_rate,
        partials=payload.enable_intermediate_result,
        vad=vad,
        llm_model=_model(main.model) if main else None,
        system_prompt=system_prompt,
        prompt=prompt,
        variables=variables,
        workers=workers,
        temperature=main.temperature if main and main.temperature is not None else 0.7,
        max_history=defaults.max_history,
        tts_model=_model(tts.model) if tts else None,
        voice=voice,
        tts_rate=tts.sample_rate if tts else 24000,
    )

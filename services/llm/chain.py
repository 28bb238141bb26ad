"""A conversation's prompt chain, sans-I/O: templates, workers and their results.

`compile_conversation` checks everything a session was opened with (templates, worker
specs, JSON schemas) and raises `PromptTemplateError` / `WorkerSpecError` (both
`ProtocolError`, so the client is told ``bad_request``) before any turn runs. The
gateway calls it too, so a bad ``StartTranscription`` fails at once.

Per turn, every worker sees the same context: the history before the turn, the user's
words and the session's variables. Blocking workers therefore do not depend on each
other and run concurrently; the main model waits for all of them and sees their
results as variables (each under its ``variable_name``, also inside ``variables``).
Non-blocking workers start at the same time, run alongside the main model and only
report. A worker that fails (engine error, template error, output that is not valid
JSON or does not match its ``json_schema``) reports an error; its variable stays
undefined and the turn goes on.

Without a ``prompt`` template of its own, the main model sees the user's words, or,
when a blocking text worker named ``rewrite_user_message`` succeeded, its result: the
Bella documentation's rewrite example works with no main template at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from pydantic import JsonValue

from services.llm.templates import (
    RESERVED_NAMES,
    PromptTemplate,
    TemplateLimits,
    template_context,
)
from shared.errors import ProtocolError
from shared.messages import ChatMessage, VariableType, WorkerSpec

REWRITE_VARIABLE = "rewrite_user_message"
DEFAULT_LIMITS = TemplateLimits()
_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


class WorkerSpecError(ProtocolError):
    """A worker spec that cannot run (duplicate name, reserved name, bad schema)."""


class WorkerOutputError(Exception):
    """A worker's output is unusable; the message says why (sent to the client)."""


@dataclass(frozen=True)
class CompiledWorker:
    spec: WorkerSpec
    system: PromptTemplate | None
    prompt: PromptTemplate | None
    validator: Draft202012Validator | None

    @property
    def name(self) -> str:
        return self.spec.variable_name


@dataclass(frozen=True)
class Conversation:
    """A session's compiled templates and workers."""

    system: PromptTemplate
    prompt: PromptTemplate | None
    workers: tuple[CompiledWorker, ...]

    @property
    def blocking(self) -> tuple[CompiledWorker, ...]:
        return tuple(w for w in self.workers if w.spec.blocking)


def _schema_validator(spec: WorkerSpec) -> Draft202012Validator | None:
    if spec.json_schema is None:
        return None  # text, or any JSON value
    if spec.variable_type is not VariableType.JSON:
        raise WorkerSpecError(
            f"worker {spec.variable_name}: json_schema needs variable_type 'json'"
        )
    try:
        Draft202012Validator.check_schema(spec.json_schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise WorkerSpecError(
            f"worker {spec.variable_name}: json_schema is invalid at {where}: {exc.message}"
        ) from exc
    return Draft202012Validator(spec.json_schema)


def compile_conversation(
    system_prompt: str,
    prompt: str | None,
    variables: Mapping[str, JsonValue],
    workers: Sequence[WorkerSpec],
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> Conversation:
    """Compile and check a session's templates and workers; raise a `ProtocolError`."""
    reserved = sorted(RESERVED_NAMES & set(variables))
    if reserved:
        raise WorkerSpecError(f"variables: {', '.join(reserved)} is a reserved name")
    names = [w.variable_name for w in workers]
    for name in names:
        if name in RESERVED_NAMES:
            raise WorkerSpecError(f"worker {name}: variable_name is a reserved name")
        if names.count(name) > 1:
            raise WorkerSpecError(f"worker {name}: variable_name is used twice")
    session_names = RESERVED_NAMES | set(variables)
    # Results exist only for the main model; a worker sees the session's variables.
    main_names = session_names | set(names)
    compiled = tuple(
        CompiledWorker(
            spec=w,
            system=_optional(f"workers[{i}].sys_prompt", w.sys_prompt, limits, session_names),
            prompt=_optional(f"workers[{i}].prompt", w.prompt, limits, session_names),
            validator=_schema_validator(w),
        )
        for i, w in enumerate(workers)
    )
    return Conversation(
        system=PromptTemplate("sys_prompt", system_prompt, limits, main_names),
        prompt=_optional("prompt", prompt or "", limits, main_names),
        workers=compiled,
    )


def _optional(
    name: str, source: str, limits: TemplateLimits, known: frozenset[str] | set[str]
) -> PromptTemplate | None:
    return PromptTemplate(name, source, limits, known) if source.strip() else None


# --------------------------------------------------------------------------- per turn


def worker_messages(
    worker: CompiledWorker,
    history: Sequence[ChatMessage],
    user_message: str,
    variables: Mapping[str, JsonValue],
) -> list[dict[str, str]]:
    """The chat messages a worker's model gets; raises `PromptTemplateError`.

    Without a ``prompt`` template the worker gets the user's words as they are.
    """
    context = template_context(history, user_message, variables)
    messages: list[dict[str, str]] = []
    if worker.system is not None:
        messages.append({"role": "system", "content": worker.system.render(context)})
    user = worker.prompt.render(context) if worker.prompt is not None else user_message
    messages.append({"role": "user", "content": user})
    return messages


def parse_output(worker: CompiledWorker, text: str) -> JsonValue:
    """The variable value of a worker's raw output; raises `WorkerOutputError`."""
    stripped = text.strip()
    if worker.spec.variable_type is VariableType.TEXT:
        if not stripped:
            raise WorkerOutputError("the worker produced no text")
        return stripped
    value = _first_json(stripped)
    if worker.validator is not None:
        error: ValidationError | None = best_match(worker.validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise WorkerOutputError(
                f"output does not match json_schema at {where}: {error.message}"
            )
    return value


def _first_json(text: str) -> JsonValue:
    """The JSON value of ``text``, or the first one inside it.

    Small models wrap JSON in a code fence or a sentence ("Here it is: {...}"); the
    first object or array in the text is taken, anything after it is ignored.
    """
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value: JsonValue = json.loads(text)
        return value
    except json.JSONDecodeError:
        pass
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if starts:
        try:
            found, _ = json.JSONDecoder().raw_decode(text, min(starts))
            return found  # type: ignore[no-any-return]
        except json.JSONDecodeError:
            pass
    snippet = text if len(text) <= 60 else text[:57] + "..."
    raise WorkerOutputError(f"output is not valid JSON: {snippet!r}")


def result_text(value: JsonValue) -> str:
    """How a result is reported to the client: text as it is, JSON as JSON text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def main_user_content(
    conversation: Conversation,
    history: Sequence[ChatMessage],
    user_message: str,
    variables: Mapping[str, JsonValue],
    results: Mapping[str, JsonValue],
) -> str:
    """The user message the main model sees; raises `PromptTemplateError`."""
    merged = {**variables, **results}
    if conversation.prompt is not None:
        return conversation.prompt.render(template_context(history, user_message, merged))
    rewrite = results.get(REWRITE_VARIABLE)
    if isinstance(rewrite, str) and rewrite:
        return rewrite
    return user_message


def main_system(
    conversation: Conversation,
    history: Sequence[ChatMessage],
    user_message: str,
    variables: Mapping[str, JsonValue],
    results: Mapping[str, JsonValue],
) -> str:
    """The rendered system prompt; raises `PromptTemplateError`."""
    merged = {**variables, **results}
    return conversation.system.render(template_context(history, user_message, merged))


def turn_user_message(history: Sequence[ChatMessage], text: str | None) -> str:
    """``user_message`` of a turn: its words, or (``text=None``) the last user entry."""
    if text is not None:
        return text
    for message in reversed(history):
        if message.role == "user":
            return message.content
    return ""

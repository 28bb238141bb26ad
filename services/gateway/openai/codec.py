"""Sans-I/O parsing of client frames; every refusal is a `RealtimeError`.

`parse_event` turns one text frame into a typed client event or raises `RealtimeError`
with a stable ``code`` (metric label and the ``error.code`` the client sees), the
offending ``param`` where one is known and the client's ``event_id``. Nothing else
escapes: malformed JSON, deep nesting, wrong types, unknown events, oversized or
undecodable audio all end as a `RealtimeError`, and the connection stays usable.
"""

from __future__ import annotations

import binascii
import json
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from services.gateway.openai.messages import (
    BETA_SESSION,
    CLIENT_EVENT,
    CLIENT_EVENT_TYPES,
    GA_SESSION,
    MAX_AUDIO_B64_CHARS,
    MAX_ID_CHARS,
    BetaSession,
    ClientEvent,
    GaSession,
)
from shared.errors import ProtocolError


class ErrorCode(StrEnum):
    """``error.code`` values of refused client events (stable: clients may match them)."""

    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"  # not an object, or no string ``type``
    UNKNOWN_EVENT = "unknown_event"
    INVALID_VALUE = "invalid_value"  # a field failed validation
    INVALID_AUDIO = "invalid_audio"  # not base64
    AUDIO_TOO_LARGE = "audio_too_large"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    UNSUPPORTED = "unsupported_feature"  # valid OpenAI, but not something we do
    SESSION_LOCKED = "session_setting_locked"  # cannot change once the call runs
    COMMIT_EMPTY = "input_audio_buffer_commit_empty"
    ACTIVE_RESPONSE = "conversation_already_has_active_response"
    ITEM_NOT_FOUND = "item_not_found"
    INVALID_STATE = "invalid_state"


class ErrorType(StrEnum):
    INVALID_REQUEST = "invalid_request_error"
    SERVER = "server_error"


class RealtimeError(ProtocolError):
    """A client event we refuse; rendered as an ``error`` server event."""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode,
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code.value)
        self.error_code = code
        self.param = param
        self.event_id = event_id


def _first_error(exc: ValidationError, prefix: str = "") -> tuple[str, str]:
    """(param, message) of a validation error, in the client's terms."""
    err = exc.errors(include_url=False)[0]
    # Discriminated unions put the tag in the location: drop it, it is the event type.
    loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and "." in p)]
    param = ".".join(filter(None, [prefix, *loc])) or "event"
    return param, str(err["msg"]).removeprefix("Value error, ")


def _event_id(raw: dict[str, Any]) -> str | None:
    value = raw.get("event_id")
    if isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS:
        return value
    return None


def parse_event(text: str) -> ClientEvent:
    """One client text frame -> a client event (``session`` still raw for updates)."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RealtimeError(
            f"the frame is not valid JSON ({exc.__class__.__name__})", code=ErrorCode.INVALID_JSON
        ) from exc
    if not isinstance(raw, dict):
        raise RealtimeError("an event must be a JSON object", code=ErrorCode.INVALID_EVENT)
    event_id = _event_id(raw)
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise RealtimeError(
            "an event needs a string 'type'",
            code=ErrorCode.INVALID_EVENT,
            param="type",
            event_id=event_id,
        )
    if kind not in CLIENT_EVENT_TYPES:
        raise RealtimeError(
            f"unknown or unsupported event type {kind[:64]!r}",
            code=ErrorCode.UNKNOWN_EVENT,
            param="type",
            event_id=event_id,
        )
    audio = raw.get("audio")
    # Checked before validation so an oversized frame gets its own code.
    too_big = isinstance(audio, str) and len(audio) > MAX_AUDIO_B64_CHARS
    if kind == "input_audio_buffer.append" and too_big:
        raise RealtimeError(
            f"audio is over {MAX_AUDIO_B64_CHARS} base64 characters; send smaller appends",
            code=ErrorCode.AUDIO_TOO_LARGE,
            param="audio",
            event_id=event_id,
        )
    try:
        return CLIENT_EVENT.validate_python(raw)
    except (ValidationError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            param, message = "event", "too deeply nested"
        else:
            param, message = _first_error(exc)
        raise RealtimeError(
            f"invalid {kind}: {param}: {message}",
            code=ErrorCode.INVALID_VALUE,
            param=param,
            event_id=event_id,
        ) from exc


def parse_session(
    raw: dict[str, Any], *, beta: bool, event_id: str | None
) -> GaSession | BetaSession:
    """The ``session`` object of a ``session.update`` in the shape the client speaks."""
    try:
        if beta:
            return BETA_SESSION.validate_python(raw)
        return GA_SESSION.validate_python(raw)
    except (ValidationError, RecursionError) as exc:
        if isinstance(exc, RecursionError):
            param, message = "session", "too deeply nested"
        else:
            param, message = _first_error(exc, "session")
        raise RealtimeError(
            f"invalid session: {param}: {message}",
            code=ErrorCode.INVALID_VALUE,
            param=param,
            event_id=event_id,
        ) from exc


def decode_audio(data: str, *, event_id: str | None) -> bytes:
    """The base64 ``audio`` of an append, strictly decoded."""
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise RealtimeError(
            "audio is not valid base64",
            code=ErrorCode.INVALID_AUDIO,
            param="audio",
            event_id=event_id,
        ) from exc

"""Sans-I/O Coze codec: text frames -> typed client events, server events -> text frames.

`parse_event` raises `CozeError` for anything the client must be told about with an
``error`` event (``data: {code, msg}``); the connection stays usable afterwards.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from enum import IntEnum
from typing import Any

from pydantic import JsonValue, ValidationError

from services.gateway.coze.messages import EVENT_MODELS, ClientEvent
from shared.errors import ProtocolError


class CozeErrorCode(IntEnum):
    """Stable numeric codes of ``error`` events (4xxx: the client's fault)."""

    INVALID_REQUEST = 4000  # not JSON, no envelope, a field of the wrong type
    UNKNOWN_EVENT = 4001
    UNSUPPORTED = 4002  # a format or mode this server does not offer
    INVALID_STATE = 4003  # e.g. a setting that cannot change once the call runs
    INVALID_AUDIO = 4004
    SERVER_ERROR = 5000
    OVERLOADED = 5003


class CozeError(ProtocolError):
    """A client frame the protocol does not allow; ``kind`` is a fixed metric label."""

    def __init__(
        self, message: str, *, kind: str, code: CozeErrorCode = CozeErrorCode.INVALID_REQUEST
    ) -> None:
        super().__init__(message, code=kind)
        self.kind = kind
        self.error_code = code


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "event"
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


def parse_event(text: str) -> ClientEvent:
    """Parse one client text frame."""
    try:
        raw = json.loads(text)
    # ValueError, not only JSONDecodeError: CPython's int-digit limit raises a plain one.
    except (ValueError, RecursionError) as exc:
        raise CozeError(f"malformed JSON: {exc.__class__.__name__}", kind="malformed_json") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("event_type"), str):
        raise CozeError('expected a JSON object {"id", "event_type", "data"}', kind="bad_envelope")
    name = raw["event_type"]
    model = EVENT_MODELS.get(name)
    if model is None:
        raise CozeError(
            f"unknown event_type {name[:64]!r}: expected one of {', '.join(EVENT_MODELS)}",
            kind="unknown_event",
            code=CozeErrorCode.UNKNOWN_EVENT,
        )
    body: dict[str, Any] = dict(raw)
    if body.get("data") is None:
        body.pop("data", None)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise CozeError(f"invalid {name}: {_first_error(exc)}", kind="invalid_event") from exc


def decode_base64(delta: str) -> bytes:
    try:
        return base64.b64decode(delta, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CozeError(
            "data.delta is not valid base64", kind="bad_base64", code=CozeErrorCode.INVALID_AUDIO
        ) from exc


def new_event_id() -> str:
    return uuid.uuid4().hex


def event_frame(event_type: str, data: JsonValue, event_id: str) -> str:
    """One server event as the JSON text frame the client receives."""
    return json.dumps({"id": event_id, "event_type": event_type, "data": data}, ensure_ascii=False)


def error_data(code: int, message: str) -> dict[str, JsonValue]:
    return {"code": code, "msg": message}
